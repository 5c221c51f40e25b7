// CPU of one mutual TLS 1.3 handshake pair (client and server in this one thread, over a socketpair) with P-256
// certificates, as the data plane makes them: full, and resumed from a session ticket (psk_dhe_ke: a fresh
// ECDHE, no certificates, no signatures). What decides whether resumption alone can amortise handshakes.
// usage: resumption CA.pem CLIENT.pem CLIENT.key SERVER.pem SERVER.key N
#define _GNU_SOURCE
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

static double cpu_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}
static SSL_CTX *ctx(int server, const char *ca, const char *cert, const char *key) {
  SSL_CTX *c = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION);
  SSL_CTX_set1_groups_list(c, "P-256");
  SSL_CTX_set1_sigalgs_list(c, "ECDSA+SHA256");
  if (SSL_CTX_use_certificate_file(c, cert, SSL_FILETYPE_PEM) != 1 || SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_load_verify_locations(c, ca, NULL) != 1) {
    ERR_print_errors_fp(stderr);
    exit(2);
  }
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
  if (server) SSL_CTX_set_num_tickets(c, 1);
  // Without a session ID context a server that verifies client certificates refuses every resumption.
  if (server) SSL_CTX_set_session_id_context(c, (const unsigned char *)"mesh", 4);
  SSL_CTX_set_session_cache_mode(c, server ? SSL_SESS_CACHE_SERVER : SSL_SESS_CACHE_CLIENT);
  return c;
}
// One handshake pair; returns the client's new session (ticket) when asked.
static SSL_SESSION *pair(SSL_CTX *cc, SSL_CTX *sc, SSL_SESSION *resume, int *reused) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) exit(3);
  for (int i = 0; i < 2; i++) fcntl(sv[i], F_SETFL, O_NONBLOCK);
  SSL *c = SSL_new(cc), *s = SSL_new(sc);
  SSL_set_fd(c, sv[0]);
  SSL_set_fd(s, sv[1]);
  if (resume) SSL_set_session(c, resume);
  SSL_set_connect_state(c);
  SSL_set_accept_state(s);
  int cd = 0, sd = 0;
  for (int k = 0; k < 100 && !(cd && sd); k++) {
    if (!cd) {
      int r = SSL_do_handshake(c);
      if (r == 1) cd = 1;
      else if (SSL_get_error(c, r) != SSL_ERROR_WANT_READ) { ERR_print_errors_fp(stderr); exit(4); }
    }
    if (!sd) {
      int r = SSL_do_handshake(s);
      if (r == 1) sd = 1;
      else if (SSL_get_error(s, r) != SSL_ERROR_WANT_READ) { ERR_print_errors_fp(stderr); exit(5); }
    }
  }
  char b[1];
  SSL_read(c, b, 1);  // takes the ticket in
  *reused = SSL_session_reused(c) && SSL_session_reused(s);
  SSL_SESSION *sess = SSL_get1_session(c);
  // A connection freed without a shutdown marks its session not resumable.
  SSL_set_shutdown(c, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  SSL_set_shutdown(s, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
  SSL_free(c);
  SSL_free(s);
  close(sv[0]);
  close(sv[1]);
  return sess;
}
int main(int argc, char **argv) {
  if (argc != 7) return 1;
  SSL_CTX *cc = ctx(0, argv[1], argv[2], argv[3]), *sc = ctx(1, argv[1], argv[4], argv[5]);
  int n = atoi(argv[6]), reused, nreused = 0;
  double t0 = cpu_ms();
  SSL_SESSION *sess = NULL;
  for (int i = 0; i < n; i++) {
    if (sess) SSL_SESSION_free(sess);
    sess = pair(cc, sc, NULL, &reused);
  }
  double full = (cpu_ms() - t0) / n;
  t0 = cpu_ms();
  for (int i = 0; i < n; i++) {
    // Each resumption takes the ticket the previous one left (TLS 1.3 tickets are meant for one use).
    SSL_SESSION *next = pair(cc, sc, sess, &reused);
    nreused += reused;
    SSL_SESSION_free(sess);
    sess = next;
  }
  double resumed = (cpu_ms() - t0) / n;
  printf("{\"pairs\":%d,\"full_ms\":%.3f,\"resumed_ms\":%.3f,\"resumed\":%d}\n", n, full, resumed, nreused);
  return 0;
}
