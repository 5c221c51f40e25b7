// Process-wide counters, rendered in Prometheus text format by the stats endpoint. Updated with relaxed atomics
// from every worker; a scrape reads them without locks.
#pragma once
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "policy.h"

namespace mesh {

enum class Role : int { Outbound = 0, Inbound = 1 };
constexpr int kRoles = 2;
const char* roleName(Role r);

// Why a mutual TLS handshake failed, as seen by the side that counts it.
enum class HandshakeFailure : int {
  UntrustedChain = 0,   // the chain does not lead to a root of the trust domain's bundle
  Expired,              // a certificate of the chain is past notAfter
  NotYetValid,          // ... or before notBefore
  BadSpiffeId,          // not exactly one URI SAN holding a valid spiffe:// ID
  UnknownTrustDomain,   // the peer's trust domain is not the local workload's
  WrongIdentity,        // outbound: the server is not the destination's expected SPIFFE ID
  NoPeerCertificate,    // the peer sent no certificate
  UnknownDestination,   // inbound: the client named (SNI) no workload of this node
  PeerAlert,            // the peer refused us (its alert ends our handshake)
  Protocol,             // anything else OpenSSL rejects (version, cipher, malformed record)
  Closed,               // the peer closed or reset during the handshake
  Timeout,              // no completed handshake within the deadline
  Count
};
const char* handshakeFailureName(HandshakeFailure f);

// Why a connection was refused or ended outside the handshake.
enum class ConnError : int {
  NoOriginalDestination = 0,  // outbound: the original destination could not be learnt
  UnknownDestination,         // outbound: no config entry for the original destination
  UnknownSource,              // outbound: the accepting peer is no workload of this node
  TunnelConnectFailed,        // outbound: the peer node's tunnel port did not answer
  BadHeader,                  // inbound: the tunnel header is malformed
  DestinationMismatch,        // inbound: the header names another workload than the SNI did
  NotAllowed,                 // inbound: refused by the destination's policies (see authzDenied)
  BackendConnectFailed,       // inbound: the destination workload did not answer
  Reset,                      // a side reset or failed mid-stream
  FdLimit,                    // accepted and closed at once: the process is out of file descriptors
  RecordLimit,                // kTLS: the key sealed as many records as is safe; the kernel cannot rekey (< 6.14)
  KeyUpdate,                  // kTLS: the peer rekeyed; the kernel cannot follow (< 6.14)
  PeerAlert,                  // the peer ended the stream with a fatal alert (bytes before it were delivered)
  Count
};
const char* connErrorName(ConnError e);

struct Stats {
  std::atomic<uint64_t> accepted[kRoles]{};
  std::atomic<int64_t> active[kRoles]{};
  std::atomic<uint64_t> established[kRoles]{};
  std::atomic<uint64_t> handshakeFailures[kRoles][int(HandshakeFailure::Count)]{};
  std::atomic<uint64_t> errors[kRoles][int(ConnError::Count)]{};
  // [role][0] plaintext side to TLS side, [role][1] TLS side to plaintext side.
  std::atomic<uint64_t> bytes[kRoles][2]{};
  // Connections whose handshake completed, by record layer: [role][0] OpenSSL in user space, [role][1] the kernel's (kTLS).
  std::atomic<uint64_t> recordLayer[kRoles][2]{};
  // Application bytes copied through the data plane's buffers on connections handed to kTLS, after the hand-over
  // (records the splice path cannot carry: none in normal operation).
  std::atomic<uint64_t> userBytes[kRoles]{};
  std::atomic<uint64_t> ktlsAvailable{0};
  // Why the start-up probe found no kTLS (empty when it did); written once before any thread reads it.
  std::string ktlsReason;
  // Outbound connections by tunnel: [0] dedicated (a TLS connection of their own), [1] pooled on a new TLS
  // connection (a handshake), [2] pooled on a reused one (no handshake). Inbound: [role 1][0] dedicated, [1] pooled.
  std::atomic<uint64_t> tunnelStreams[kRoles][3]{};
  // How outbound connections of the config in force go (Config::pooled, tunnelChoice); set by the main thread.
  std::atomic<bool> tunnelPooled{false};
  std::atomic<const char*> tunnelChoice{""};
  // Times a listener was set aside for a back-off: out of fds, with no reserve fd to refuse a connection with.
  std::atomic<uint64_t> acceptPauses{0};
  std::atomic<uint64_t> reloadsOk{0};
  std::atomic<uint64_t> reloadsFailed{0};
  std::atomic<uint64_t> generation{0};

  // Inbound connections refused by policy, by the policy's label and reason. The labels come from the config,
  // so these series live in a locked map; refusals are rare next to the byte counts.
  void authzSeries(const std::string& policy, AuthzReason reason);  // present from now on, at 0 if new
  void authzDenied(const std::string& policy, AuthzReason reason);

  // Inbound connections that passed mTLS and policy, by the client's verified SPIFFE ID and the workload's (what
  // the server side reports of its peers). Bounded by the identities the mesh issues.
  void authorized(const std::string& source, const std::string& destination);

  std::string prometheus() const;

 private:
  mutable std::mutex authzMu_;
  std::map<std::pair<std::string, int>, uint64_t> authz_;
  std::map<std::pair<std::string, std::string>, uint64_t> authorized_;
};

extern Stats stats;

}  // namespace mesh
