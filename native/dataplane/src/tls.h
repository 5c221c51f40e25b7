// Mutual TLS 1.3 with SPIFFE identities: context settings shared by both roles, the X.509-SVID checks and the
// per-connection verification state OpenSSL's callbacks read.
#pragma once
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <memory>
#include <optional>
#include <string>

#include "addr.h"
#include "stats.h"

namespace mesh {

struct Config;
struct Workload;

struct SslCtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
struct X509StoreFree {
  void operator()(X509_STORE* s) const { X509_STORE_free(s); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;
using X509StorePtr = std::unique_ptr<X509_STORE, X509StoreFree>;

// What the verify and SNI callbacks of one connection need; lives in the connection, found via SSL ex_data.
struct PeerCheck {
  Role role = Role::Outbound;
  const Config* config = nullptr;
  // Outbound: the source workload. Inbound: the destination workload the client named (SNI).
  const Workload* local = nullptr;
  // Outbound: the SPIFFE ID the destination must present.
  std::string expectedId;
  // Set by a callback that refused the peer; read when the handshake fails.
  std::optional<HandshakeFailure> failure;
  // The peer's SPIFFE ID once verified.
  std::string peerId;
  // Inbound: the client offered ALPN kPooledAlpn — it frames streams in user space, so no kTLS hand-over.
  bool pooledPeer = false;
};

// The ALPN protocol a pooled tunnel's client offers (wire: length-prefixed), so that a server whose kernel has
// kTLS keeps that connection's record layer in user space.
constexpr char kPooledAlpn[] = "\x04msh2";

// One process-wide init; registers the ex_data index.
void tlsInit();

// A TLS 1.3-only, P-256, ticket-less context with mutual authentication through our verify callback.
// Without certificate for the inbound base context (the SNI callback switches to the workload's).
SslCtxPtr newContext(bool serverBase);

// Attach `check` to `ssl` for the callbacks.
void attachPeerCheck(SSL* ssl, PeerCheck* check);

// The SPIFFE ID of a certificate: exactly one URI SAN, and it must be a valid spiffe:// ID. Else nullopt.
std::optional<std::string> spiffeIdOf(X509* cert);
// Whether `id` is a valid SPIFFE ID (spiffe://trust-domain/path), per the SPIFFE-ID spec.
bool validSpiffeId(const std::string& id);
// "cluster.local" of "spiffe://cluster.local/ns/x/sa/y".
std::string trustDomainOf(const std::string& id);

// The server name an outbound connection sends so the tunnel picks the destination workload's SVID:
// the destination IP's bytes in hex, then ".dst.mesh" (a valid DNS name for IPv4 and IPv6 alike).
std::string sniFor(const Addr& destination);
std::optional<Addr> addrFromSni(const std::string& name);

// Reason for a failed handshake: from the callbacks first, else from OpenSSL's error queue (then cleared).
HandshakeFailure classifyHandshakeError(SSL* ssl, int sslError, const PeerCheck& check);

// OpenSSL's error queue as one line, then cleared.
std::string sslErrors();

}  // namespace mesh
