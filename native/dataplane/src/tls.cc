#include "tls.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <cstring>

#include "config.h"
#include "ktls.h"

namespace mesh {

namespace {

int peerCheckIndex = -1;

PeerCheck* checkOf(SSL* ssl) { return static_cast<PeerCheck*>(SSL_get_ex_data(ssl, peerCheckIndex)); }

HandshakeFailure failureOfVerifyError(int err) {
  switch (err) {
    case X509_V_ERR_CERT_HAS_EXPIRED: return HandshakeFailure::Expired;
    case X509_V_ERR_CERT_NOT_YET_VALID: return HandshakeFailure::NotYetValid;
    default: return HandshakeFailure::UntrustedChain;
  }
}

// Replaces OpenSSL's chain verification: the peer's SPIFFE ID first (it names the trust domain), then the chain
// against that trust domain's bundle, then (outbound) the identity the destination must have.
int verifyPeer(X509_STORE_CTX* x, void*) {
  auto* ssl = static_cast<SSL*>(X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx()));
  PeerCheck* check = ssl ? checkOf(ssl) : nullptr;
  auto refuse = [&](HandshakeFailure f, int err) {
    if (check) check->failure = f;
    X509_STORE_CTX_set_error(x, err);
    return 0;
  };
  if (!check || !check->local) return refuse(HandshakeFailure::UnknownDestination, X509_V_ERR_APPLICATION_VERIFICATION);
  X509* leaf = X509_STORE_CTX_get0_cert(x);
  if (!leaf) return refuse(HandshakeFailure::NoPeerCertificate, X509_V_ERR_APPLICATION_VERIFICATION);
  auto id = spiffeIdOf(leaf);
  if (!id) return refuse(HandshakeFailure::BadSpiffeId, X509_V_ERR_APPLICATION_VERIFICATION);
  if (trustDomainOf(*id) != check->local->trustDomain)
    return refuse(HandshakeFailure::UnknownTrustDomain, X509_V_ERR_APPLICATION_VERIFICATION);

  X509_STORE_CTX* v = X509_STORE_CTX_new();
  if (!v || !X509_STORE_CTX_init(v, check->local->bundle.get(), leaf, X509_STORE_CTX_get0_untrusted(x))) {
    X509_STORE_CTX_free(v);
    return refuse(HandshakeFailure::Protocol, X509_V_ERR_OUT_OF_MEM);
  }
  X509_STORE_CTX_set_purpose(v, check->role == Role::Inbound ? X509_PURPOSE_SSL_CLIENT : X509_PURPOSE_SSL_SERVER);
  int ok = X509_verify_cert(v);
  int err = X509_STORE_CTX_get_error(v);
  X509_STORE_CTX_free(v);
  if (ok <= 0) return refuse(failureOfVerifyError(err), err);

  if (check->role == Role::Outbound && *id != check->expectedId)
    return refuse(HandshakeFailure::WrongIdentity, X509_V_ERR_APPLICATION_VERIFICATION);
  check->peerId = *id;
  X509_STORE_CTX_set_error(x, X509_V_OK);
  return 1;
}

// Inbound: the client names the destination workload; present that workload's SVID and check against its bundle.
int selectWorkload(SSL* ssl, int* alert, void*) {
  PeerCheck* check = checkOf(ssl);
  const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  const Workload* w = nullptr;
  if (check && name) {
    if (auto dst = addrFromSni(name)) w = check->config->workloadByIp(dst->ip());
  }
  if (!w) {
    if (check) check->failure = HandshakeFailure::UnknownDestination;
    *alert = SSL_AD_UNRECOGNIZED_NAME;
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  check->local = w;
  SSL_set_SSL_CTX(ssl, w->ctx.get());
  return SSL_TLSEXT_ERR_OK;
}

// Inbound: notes a client that offered the pooled tunnel's protocol and selects it; any other offer is left
// unanswered (a dedicated tunnel's client offers none).
int selectAlpn(SSL* ssl, const unsigned char** out, unsigned char* outlen, const unsigned char* in, unsigned inlen, void*) {
  const auto* want = reinterpret_cast<const unsigned char*>(kPooledAlpn);
  for (unsigned i = 0; i < inlen && i + 1 + in[i] <= inlen; i += 1 + in[i]) {
    if (in[i] != want[0] || std::memcmp(in + i + 1, want + 1, want[0]) != 0) continue;
    if (PeerCheck* check = checkOf(ssl)) check->pooledPeer = true;
    *out = in + i + 1;
    *outlen = in[i];
    return SSL_TLSEXT_ERR_OK;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

bool dnsChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
}

}  // namespace

void tlsInit() {
  OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, nullptr);
  peerCheckIndex = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
}

SslCtxPtr newContext(bool serverBase) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_method()));
  if (!ctx) return nullptr;
  SSL_CTX* c = ctx.get();
  bool ok = SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION) && SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION) &&
            SSL_CTX_set1_groups_list(c, "P-256") && SSL_CTX_set1_sigalgs_list(c, "ECDSA+SHA256") &&
            // The suites the kernel's kTLS offers, so a later hand-over works whichever is negotiated.
            SSL_CTX_set_ciphersuites(c, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256");
  if (!ok) return nullptr;
  // No tickets: the first data record in each direction has sequence 0 (what a kTLS hand-over needs); the
  // option alone does not stop TLS 1.3 tickets, num_tickets does.
  SSL_CTX_set_num_tickets(c, 0);
  SSL_CTX_set_options(c, SSL_OP_NO_TICKET);
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // Read as much as the socket has into OpenSSL's buffer (one read per batch of records, not two per record);
  // the pump keeps calling SSL_read while its buffer has room, so nothing waits in OpenSSL for an epoll edge.
  SSL_CTX_set_read_ahead(c, 1);
  SSL_CTX_set_default_read_buffer_len(c, 64 * 1024);
  // Hands the traffic secrets to connections that will move their record layer to the kernel (ktls.h).
  SSL_CTX_set_keylog_callback(c, ktlsKeylog);
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  SSL_CTX_set_cert_verify_callback(c, verifyPeer, nullptr);
  if (serverBase) SSL_CTX_set_tlsext_servername_callback(c, selectWorkload);
  // On every context: the SNI callback switches the connection to its workload's before ALPN is decided.
  SSL_CTX_set_alpn_select_cb(c, selectAlpn, nullptr);
  return ctx;
}

void attachPeerCheck(SSL* ssl, PeerCheck* check) { SSL_set_ex_data(ssl, peerCheckIndex, check); }

bool validSpiffeId(const std::string& id) {
  static const std::string scheme = "spiffe://";
  if (id.size() > 2048 || id.compare(0, scheme.size(), scheme) != 0) return false;
  size_t slash = id.find('/', scheme.size());
  std::string td = id.substr(scheme.size(), slash == std::string::npos ? std::string::npos : slash - scheme.size());
  if (td.empty() || td.size() > 255) return false;
  for (char c : td)
    if (!dnsChar(c)) return false;
  if (slash == std::string::npos) return false;  // a workload's SVID names a workload, not the trust domain
  // Path: non-empty segments of [A-Za-z0-9._-], none "." or "..", no trailing slash.
  std::string path = id.substr(slash);
  size_t i = 0;
  while (i < path.size()) {
    size_t next = path.find('/', i + 1);
    std::string seg = path.substr(i + 1, next == std::string::npos ? std::string::npos : next - i - 1);
    if (seg.empty() || seg == "." || seg == "..") return false;
    for (char c : seg)
      if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
            c == '_'))
        return false;
    if (next == std::string::npos) break;
    i = next;
  }
  return true;
}

std::string trustDomainOf(const std::string& id) {
  size_t start = std::strlen("spiffe://");
  size_t slash = id.find('/', start);
  return id.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
}

std::optional<std::string> spiffeIdOf(X509* cert) {
  auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (!names) return std::nullopt;
  std::optional<std::string> uri;
  int uris = 0;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
    GENERAL_NAME* n = sk_GENERAL_NAME_value(names, i);
    if (n->type != GEN_URI) continue;
    uris++;
    const ASN1_IA5STRING* s = n->d.uniformResourceIdentifier;
    uri = std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), ASN1_STRING_length(s));
  }
  GENERAL_NAMES_free(names);
  if (uris != 1 || !validSpiffeId(*uri)) return std::nullopt;
  return uri;
}

std::string sniFor(const Addr& destination) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned char b : destination.ipBytes()) {
    out += hex[b >> 4];
    out += hex[b & 15];
  }
  return out + ".dst.mesh";
}

std::optional<Addr> addrFromSni(const std::string& name) {
  static const std::string suffix = ".dst.mesh";
  if (name.size() <= suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0)
    return std::nullopt;
  std::string h = name.substr(0, name.size() - suffix.size());
  if (h.size() != 8 && h.size() != 32) return std::nullopt;
  uint8_t bytes[16];
  for (size_t i = 0; i < h.size() / 2; i++) {
    unsigned v;
    if (std::sscanf(h.c_str() + 2 * i, "%2x", &v) != 1) return std::nullopt;
    bytes[i] = uint8_t(v);
  }
  return Addr::fromBytes(h.size() == 8 ? AF_INET : AF_INET6, bytes, 0);
}

HandshakeFailure classifyHandshakeError(SSL* ssl, int sslError, const PeerCheck& check) {
  if (check.failure) {
    ERR_clear_error();
    return *check.failure;
  }
  HandshakeFailure f = HandshakeFailure::Protocol;
  if (sslError == SSL_ERROR_SYSCALL || sslError == SSL_ERROR_ZERO_RETURN) f = HandshakeFailure::Closed;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    int reason = ERR_GET_REASON(e);
    if (reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) f = HandshakeFailure::NoPeerCertificate;
    else if (reason == SSL_R_UNEXPECTED_EOF_WHILE_READING) f = HandshakeFailure::Closed;
    // Received alerts are reported as reasons from SSL_AD_REASON_OFFSET on.
    else if (reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256) f = HandshakeFailure::PeerAlert;
  }
  return f;
}

std::string sslErrors() {
  std::string out;
  unsigned long e;
  char buf[256];
  while ((e = ERR_get_error()) != 0) {
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "no OpenSSL error" : out;
}

}  // namespace mesh
