// connect()+close() cost on loopback, for bench:split.
//   connloop serve HOST            accept and close connections forever; prints the port it listens on
//   connloop dial HOST PORT N      N sequential connect()+close(); prints {"n":N,"ns_per_conn":X,"failed":F}
//                                  for every line read on stdin, until end of input
// The dialling process is the one placed in (or out of) the mesh's cgroup; the server stays outside. One
// process per arm stays up for the whole run, so a block of connections costs no process start.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int serve(const char *host)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof a;
	int one = 1, s = socket(AF_INET, SOCK_STREAM, 0);

	if (s < 0 || inet_pton(AF_INET, host, &a.sin_addr) != 1)
		return perror("socket"), 1;
	setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 4096) || getsockname(s, (struct sockaddr *)&a, &len))
		return perror("bind/listen"), 1;
	printf("%d\n", ntohs(a.sin_port));
	fflush(stdout);
	for (;;) {
		int c = accept(s, NULL, NULL);
		if (c >= 0)
			close(c);
	}
}

static int block(const struct sockaddr_in *a, long n)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	struct timespec t0, t1;
	long failed = 0;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (long i = 0; i < n; i++) {
		int s = socket(AF_INET, SOCK_STREAM, 0);
		if (s < 0)
			return perror("socket"), 1;
		if (connect(s, (const struct sockaddr *)a, sizeof *a))
			failed++;
		/* RST on close: no TIME_WAIT pile-up over tens of thousands of connections. */
		setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
		close(s);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double ns = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec);
	printf("{\"n\":%ld,\"ns_per_conn\":%.1f,\"failed\":%ld}\n", n, ns / n, failed);
	fflush(stdout);
	return 0;
}

static int dial(const char *host, int port, long n)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
	char line[64];

	if (inet_pton(AF_INET, host, &a.sin_addr) != 1)
		return fprintf(stderr, "bad address %s\n", host), 1;
	while (fgets(line, sizeof line, stdin))
		if (block(&a, n))
			return 1;
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "serve"))
		return serve(argv[2]);
	if (argc == 5 && !strcmp(argv[1], "dial"))
		return dial(argv[2], atoi(argv[3]), atol(argv[4]));
	fprintf(stderr, "usage: connloop serve HOST | connloop dial HOST PORT N\n");
	return 2;
}
