// loadgen: the HTTP/1.1 load generator of bench:mesh. One thread, epoll, C keep-alive connections, one request
// in flight per connection (no pipelining). Two loads:
//   -r RATE  fixed rate: connection i sends at t0 + i/RATE + k*C/RATE (k = 0, 1, …), so the whole run is one
//            evenly spaced stream of RATE requests per second; a connection still waiting for a response when its
//            turn comes sends as soon as the response is in (counted in late_sends, never skipped);
//   -r 0     closed loop: every connection sends its next request as soon as the previous response is in.
// With -n every request goes on a connection of its own ("Connection: close"; the next request of that slot dials
// anew, a blocking connect): the load of clients that do not keep connections alive (new connections per second).
// Latency of a request: from the write() of the request to the read() that completes the response, in ns
// (CLOCK_MONOTONIC). Every response is checked: status 200, Content-Length equal to -b, a body of 'x' bytes.
// With several targets, -g CG1,CG2,… puts each target's sockets in a cgroup of its own (the process joins the
// target's cgroup before it creates the socket; a socket stays in the cgroup it was created in), so one process
// can load several arms of a benchmark with their requests interleaved one by one; -T writes the target's index
// before each latency in -o's file (the summary's percentiles are over all targets).
// The first -w seconds warm up (not recorded); then it prints "START <pid>" on stdout, measures for -d seconds,
// prints "END", and a JSON summary. -o FILE writes every measured latency (ns, one a line). With -s it waits for
// a line on stdin after "END" (the caller reads its CPU time first).
//
// Why not hey: its per-request output (-o csv) has 100 µs resolution, coarser than the differences measured here.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXCONN 256
#define MAXTARGET 64
#define RBUF 65536

struct conn {
  int fd;
  int target;
  int busy;           // a request is in flight
  uint64_t sent;      // when it was written
  uint64_t due;       // fixed rate: when the next request is due
  size_t rlen;        // bytes in rbuf
  char rbuf[RBUF];
};

static struct sockaddr_in targets[MAXTARGET];
static int ntargets;
static char *cgroups[MAXTARGET];
static int ncgroups, current_cgroup = -1, per_target;
static struct conn conns[MAXCONN];
static int nconns = 16, epfd;
static double rate = 0, duration = 10, warmup = 1;
static int sync_end, conn_per_request;
static long body_bytes = 1024;
static const char *host = "bench", *path = "/", *outfile;
static char request[512];
static size_t request_len;
static char *expected_body;

/* A growing array of samples (ns): request latencies, and at a fixed rate how late each send was. */
struct samples {
  uint64_t *v;
  size_t n, cap;
};
static struct samples lat, lat_target, lateness;
static uint64_t t_start, t_measure, t_end;
static unsigned long long requests_all, errors, bad_status, bad_body, io_errors, reconnects, connects, late_sends;
static uint64_t max_late;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
  exit(2);
}

static void push(struct samples *s, uint64_t v) {
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 65536;
    s->v = realloc(s->v, s->cap * sizeof *s->v);
    if (!s->v) die("realloc");
  }
  s->v[s->n++] = v;
}

// Moves this process into the cgroup of target t (-g), so the socket it creates next belongs there.
static void join_cgroup(int t) {
  if (!ncgroups || current_cgroup == t) return;
  char path[4096];
  snprintf(path, sizeof path, "%s/cgroup.procs", cgroups[t]);
  FILE *f = fopen(path, "w");
  if (!f || fprintf(f, "%d\n", getpid()) < 0 || fclose(f) != 0) die(path);
  current_cgroup = t;
}

static void open_conn(struct conn *c) {
  join_cgroup(c->target);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) die("socket");
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  // Blocking connect (before the measured window, or on a rare reconnect), then non-blocking I/O.
  if (connect(fd, (struct sockaddr *)&targets[c->target], sizeof targets[c->target]) < 0) {
    char a[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &targets[c->target].sin_addr, a, sizeof a);
    fprintf(stderr, "loadgen: connect %s:%d: %s\n", a, ntohs(targets[c->target].sin_port), strerror(errno));
    exit(3);
  }
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
  c->fd = fd;
  c->busy = 0;
  c->rlen = 0;
  connects++;
}

static void reopen(struct conn *c) {
  epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  reconnects++;
  open_conn(c);
}

static void send_req(struct conn *c, uint64_t now) {
  ssize_t n = write(c->fd, request, request_len);
  if (n != (ssize_t)request_len) {
    io_errors++;
    errors++;
    reopen(c);
    n = write(c->fd, request, request_len);
    if (n != (ssize_t)request_len) die("write");
  }
  c->sent = now;
  c->busy = 1;
  requests_all++;
}

// Parses a complete response at the head of rbuf. Returns its length, 0 if incomplete, -1 if malformed.
static long parse(struct conn *c, int *status, long *clen, int *close_after) {
  char *end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4);
  if (!end) return c->rlen >= RBUF ? -1 : 0;
  size_t hlen = (size_t)(end - c->rbuf) + 4;
  if (c->rlen < 12 || memcmp(c->rbuf, "HTTP/1.", 7) != 0) return -1;
  *status = atoi(c->rbuf + 9);
  *clen = -1;
  *close_after = 0;
  for (char *p = c->rbuf; p < end;) {
    char *eol = memmem(p, (size_t)(end - p) + 2, "\r\n", 2);
    if (!eol) break;
    if (eol - p > 15 && strncasecmp(p, "content-length:", 15) == 0) *clen = strtol(p + 15, NULL, 10);
    if (eol - p > 11 && strncasecmp(p, "connection:", 11) == 0 && memmem(p, (size_t)(eol - p), "close", 5)) *close_after = 1;
    p = eol + 2;
  }
  if (*clen < 0) return -1;  // chunked or no length: not what the servers here send
  if (c->rlen < hlen + (size_t)*clen) return 0;
  return (long)(hlen + (size_t)*clen);
}

static void on_readable(struct conn *c) {
  for (;;) {
    ssize_t n = read(c->fd, c->rbuf + c->rlen, RBUF - c->rlen);
    if (n < 0 && errno == EAGAIN) return;
    if (n <= 0) {
      // The peer closed (or reset). While idle it is a keep-alive close: reconnect; mid-request it is an error.
      if (c->busy) {
        io_errors++;
        errors++;
      }
      reopen(c);
      return;
    }
    c->rlen += (size_t)n;
    int status, close_after;
    long clen;
    long len = parse(c, &status, &clen, &close_after);
    if (len == 0) continue;
    uint64_t t = now_ns();
    if (len < 0 || !c->busy) {
      bad_body++;
      errors++;
      reopen(c);
      return;
    }
    size_t hlen = (size_t)len - (size_t)clen;
    if (status != 200) {
      bad_status++;
      errors++;
    } else if (clen != body_bytes || memcmp(c->rbuf + hlen, expected_body, (size_t)clen) != 0) {
      bad_body++;
      errors++;
    } else if (c->sent >= t_measure && t <= t_end) {
      push(&lat, t - c->sent);
      push(&lat_target, (uint64_t)c->target);
    }
    c->busy = 0;
    size_t rest = c->rlen - (size_t)len;
    if (rest) {  // nothing may follow a response: one request in flight
      bad_body++;
      errors++;
      reopen(c);
      return;
    }
    c->rlen = 0;
    if (conn_per_request) {
      epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
      close(c->fd);
      open_conn(c);
    } else if (close_after) {
      reopen(c);
    }
    return;  // the main loop sends the next request
  }
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static double pct_of(const struct samples *s, double p) {
  size_t n = s->n;
  if (!n) return 0;
  size_t i = (size_t)(p * (double)n + 0.999999);  // nearest rank
  if (i < 1) i = 1;
  if (i > n) i = n;
  return (double)s->v[i - 1] / 1000.0;
}
static double pct(double p) { return pct_of(&lat, p); }

static void usage(void) {
  fprintf(stderr,
          "usage: loadgen -t ADDR:PORT[,ADDR:PORT...] [-c CONNS] [-d SECONDS] [-w WARMUP_S] [-r RATE|0] [-b BODY_BYTES]\n"
          "               [-H HOST] [-P PATH] [-o LATENCY_FILE [-T]] [-g CGROUP[,CGROUP...]] [-s] [-n]\n"
          "connection i dials target i %% (number of targets); -g: target i's sockets in cgroup i\n");
  exit(1);
}

static void parse_cgroups(char *s) {
  for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
    if (ncgroups == MAXTARGET) usage();
    cgroups[ncgroups++] = tok;
  }
}

static void parse_targets(char *s) {
  for (char *tok = strtok(s, ","); tok; tok = strtok(NULL, ",")) {
    char *colon = strrchr(tok, ':');
    if (!colon || ntargets == MAXTARGET) usage();
    *colon = 0;
    struct sockaddr_in *a = &targets[ntargets++];
    a->sin_family = AF_INET;
    a->sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, tok, &a->sin_addr) != 1) usage();
  }
}

int main(int argc, char **argv) {
  int opt;
  while ((opt = getopt(argc, argv, "t:c:d:w:r:b:H:P:o:sg:Tn")) != -1) {
    switch (opt) {
      case 't': parse_targets(optarg); break;
      case 'c': nconns = atoi(optarg); break;
      case 'd': duration = atof(optarg); break;
      case 'w': warmup = atof(optarg); break;
      case 'r': rate = atof(optarg); break;
      case 'b': body_bytes = atol(optarg); break;
      case 'H': host = optarg; break;
      case 'P': path = optarg; break;
      case 'o': outfile = optarg; break;
      case 's': sync_end = 1; break;
      case 'g': parse_cgroups(optarg); break;
      case 'T': per_target = 1; break;
      case 'n': conn_per_request = 1; break;
      default: usage();
    }
  }
  if (!ntargets || nconns < 1 || nconns > MAXCONN || duration <= 0 || rate < 0 || body_bytes < 0) usage();
  if (ncgroups && ncgroups != ntargets) usage();
  request_len = (size_t)snprintf(request, sizeof request, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: mesh-bench-loadgen\r\nAccept: */*\r\n%s\r\n", path, host,
                                 conn_per_request ? "Connection: close\r\n" : "");
  expected_body = malloc((size_t)body_bytes + 1);
  memset(expected_body, 'x', (size_t)body_bytes);
  prctl(PR_SET_TIMERSLACK, 1UL);  // wake up at the due time, not up to 50 µs later

  epfd = epoll_create1(0);
  if (epfd < 0) die("epoll_create1");
  for (int i = 0; i < nconns; i++) {
    conns[i].target = i % ntargets;
    open_conn(&conns[i]);
  }

  t_start = now_ns();
  t_measure = t_start + (uint64_t)(warmup * 1e9);
  t_end = t_measure + (uint64_t)(duration * 1e9);
  if (rate > 0)
    for (int i = 0; i < nconns; i++) conns[i].due = t_start + (uint64_t)(1e9 * i / rate);

  int started = 0;
  struct epoll_event evs[MAXCONN];
  for (;;) {
    uint64_t now = now_ns();
    if (!started && now >= t_measure) {
      printf("START %d\n", getpid());
      fflush(stdout);
      started = 1;
    }
    if (now >= t_end) break;
    uint64_t wake = started ? t_end : t_measure;
    for (int i = 0; i < nconns; i++) {
      struct conn *c = &conns[i];
      if (c->busy) continue;
      if (rate == 0) {
        send_req(c, now_ns());
        continue;
      }
      if (c->due <= now) {
        uint64_t late = now - c->due;
        if (late > 1000000) late_sends++;
        if (late > max_late) max_late = late;
        // Fixed rate: how late a measured send was against its schedule (the machine's scheduling noise, as
        // the load generator sees it).
        if (now >= t_measure) push(&lateness, late);
        c->due += (uint64_t)(1e9 * nconns / rate);
        send_req(c, now_ns());
      } else if (c->due < wake) {
        wake = c->due;
      }
    }
    now = now_ns();
    uint64_t wait = wake > now ? wake - now : 0;
    struct timespec ts = {.tv_sec = (time_t)(wait / 1000000000ull), .tv_nsec = (long)(wait % 1000000000ull)};
    int n = epoll_pwait2(epfd, evs, MAXCONN, &ts, NULL);
    if (n < 0) {
      if (errno == EINTR) continue;
      die("epoll_pwait2");
    }
    for (int i = 0; i < n; i++) on_readable(evs[i].data.ptr);
  }
  printf("END\n");
  fflush(stdout);
  if (sync_end) {
    char b[16];
    if (read(0, b, sizeof b) < 0) die("read stdin");
  }

  if (outfile) {
    FILE *f = fopen(outfile, "w");
    if (!f) die(outfile);
    for (size_t i = 0; i < lat.n; i++) {
      if (per_target) fprintf(f, "%llu ", (unsigned long long)lat_target.v[i]);
      fprintf(f, "%llu\n", (unsigned long long)lat.v[i]);
    }
    fclose(f);
  }
  qsort(lat.v, lat.n, sizeof *lat.v, cmp_u64);
  qsort(lateness.v, lateness.n, sizeof *lateness.v, cmp_u64);
  double sum = 0;
  for (size_t i = 0; i < lat.n; i++) sum += (double)lat.v[i];
  printf("{\"requests\":%zu,\"duration_s\":%.3f,\"rps\":%.1f,\"mean_us\":%.2f,\"p50_us\":%.2f,\"p90_us\":%.2f,\"p99_us\":%.2f,"
         "\"p999_us\":%.2f,\"max_us\":%.2f,\"requests_all\":%llu,\"errors\":%llu,\"bad_status\":%llu,\"bad_body\":%llu,"
         "\"io_errors\":%llu,\"connects\":%llu,\"reconnects\":%llu,\"late_sends\":%llu,\"max_late_us\":%.1f,"
         "\"late_p50_us\":%.1f,\"late_p99_us\":%.1f,\"late_p999_us\":%.1f}\n",
         lat.n, duration, (double)lat.n / duration, lat.n ? sum / (double)lat.n / 1000.0 : 0, pct(0.50), pct(0.90), pct(0.99), pct(0.999),
         lat.n ? (double)lat.v[lat.n - 1] / 1000.0 : 0, requests_all, errors, bad_status, bad_body, io_errors, connects, reconnects,
         late_sends, (double)max_late / 1000.0, pct_of(&lateness, 0.5), pct_of(&lateness, 0.99), pct_of(&lateness, 0.999));
  return errors ? 4 : 0;
}
