// pingpong: the load of bench:dataplane, server and client in one program.
//   pingpong server IP PORT
//       accepts connections (a thread each); the first byte picks the mode: 'P' echo, 'S' sink (read to EOF,
//       then answer the byte count as 8 bytes little-endian).
//   pingpong rtt IP PORT [-p PREAMBLE] -n ROUNDS -m SIZE
//       one connection; ROUNDS round trips of SIZE bytes; prints each round trip's ns, one a line.
//   pingpong bulk IP PORT [-p PREAMBLE] -b BYTES
//       one connection; writes BYTES, shuts its write side, waits for the count; prints "BYTES NS".
// PREAMBLE (e.g. the PROXY v1 line the data plane's outbound side expects) is sent first, verbatim plus CRLF.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void die(const char *what) {
  perror(what);
  exit(1);
}

static int full_write(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int full_read(int fd, void *buf, size_t n) {
  char *p = buf;
  while (n > 0) {
    ssize_t r = read(fd, p, n);
    if (r <= 0) return -1;
    p += r;
    n -= (size_t)r;
  }
  return 0;
}

static void *serve(void *arg) {
  int fd = (int)(intptr_t)arg;
  char mode;
  static __thread char buf[1 << 16];
  if (read(fd, &mode, 1) == 1) {
    if (mode == 'P') {
      ssize_t r;
      while ((r = read(fd, buf, sizeof buf)) > 0)
        if (full_write(fd, buf, (size_t)r) != 0) break;
    } else if (mode == 'S') {
      uint64_t total = 0;
      ssize_t r;
      while ((r = read(fd, buf, sizeof buf)) > 0) total += (uint64_t)r;
      full_write(fd, &total, sizeof total);
    }
  }
  close(fd);
  return NULL;
}

static int dial(const char *ip, int port, const char *preamble) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) die("inet_pton");
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  // The data plane picks the source workload by the client's address: bind it when one is given.
  const char *from = getenv("PINGPONG_FROM");
  if (from) {
    struct sockaddr_in l = {.sin_family = AF_INET};
    inet_pton(AF_INET, from, &l.sin_addr);
    if (bind(fd, (struct sockaddr *)&l, sizeof l) != 0) die("bind");
  }
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) die("connect");
  if (preamble) {
    char line[256];
    int n = snprintf(line, sizeof line, "%s\r\n", preamble);
    if (full_write(fd, line, (size_t)n) != 0) die("write preamble");
  }
  return fd;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: pingpong server|rtt|bulk IP PORT [-p PREAMBLE] [-n ROUNDS] [-m SIZE] [-b BYTES]\n");
    return 2;
  }
  const char *mode = argv[1], *ip = argv[2];
  int port = atoi(argv[3]);
  const char *preamble = NULL;
  long rounds = 1000, size = 64;
  long long bytes = 64ll << 20;
  for (int i = 4; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "-p")) preamble = argv[i + 1];
    else if (!strcmp(argv[i], "-n")) rounds = atol(argv[i + 1]);
    else if (!strcmp(argv[i], "-m")) size = atol(argv[i + 1]);
    else if (!strcmp(argv[i], "-b")) bytes = atoll(argv[i + 1]);
  }
  if (!strcmp(mode, "server")) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (struct sockaddr *)&a, sizeof a) != 0 || listen(l, 128) != 0) die("listen");
    socklen_t len = sizeof a;
    getsockname(l, (struct sockaddr *)&a, &len);
    printf("listening %d\n", ntohs(a.sin_port));
    fflush(stdout);
    for (;;) {
      int fd = accept(l, NULL, NULL);
      if (fd < 0) continue;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      pthread_t t;
      pthread_create(&t, NULL, serve, (void *)(intptr_t)fd);
      pthread_detach(t);
    }
  }
  int fd = dial(ip, port, preamble);
  if (!strcmp(mode, "rtt")) {
    char *buf = malloc((size_t)size + 1);
    memset(buf, 'x', (size_t)size);
    if (full_write(fd, "P", 1) != 0) die("write");
    for (long i = 0; i < rounds; i++) {
      uint64_t t0 = now_ns();
      if (full_write(fd, buf, (size_t)size) != 0 || full_read(fd, buf, (size_t)size) != 0) die("round trip");
      printf("%llu\n", (unsigned long long)(now_ns() - t0));
    }
  } else if (!strcmp(mode, "bulk")) {
    static char buf[1 << 16];
    memset(buf, 'y', sizeof buf);
    uint64_t t0 = now_ns();
    if (full_write(fd, "S", 1) != 0) die("write");
    for (long long left = bytes; left > 0;) {
      size_t n = left < (long long)sizeof buf ? (size_t)left : sizeof buf;
      if (full_write(fd, buf, n) != 0) die("bulk write");
      left -= (long long)n;
    }
    shutdown(fd, SHUT_WR);
    uint64_t got = 0;
    if (full_read(fd, &got, sizeof got) != 0) die("bulk count");
    if (got != (uint64_t)bytes) {
      fprintf(stderr, "sink counted %llu of %lld bytes\n", (unsigned long long)got, bytes);
      return 1;
    }
    printf("%lld %llu\n", bytes, (unsigned long long)(now_ns() - t0));
  }
  close(fd);
  return 0;
}
