// The data plane's config: a JSON file named on the command line, loaded whole (certificates and keys included)
// or not at all, on start and on SIGHUP. A connection keeps the Config it started with.
#pragma once
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "addr.h"
#include "original_dst.h"
#include "policy.h"
#include "tls.h"

namespace mesh {

// A workload of this node: its address (the source of its outbound connections and the destination of inbound
// ones) and its X.509-SVID with the trust bundle of its trust domain.
struct Workload {
  std::string address;  // IP, no port
  std::string spiffeId;
  std::string trustDomain;
  SslCtxPtr ctx;          // presents the SVID; used for both roles
  X509StorePtr bundle;    // roots of the trust domain
  Policies policies;      // who may connect to it (none: any peer of the trust domain)
};

// Where an original destination lives: the node tunnel to dial and the identity the server must present.
struct Destination {
  Addr tunnel;
  std::string spiffeId;
};

struct Config {
  std::optional<Addr> outbound;
  std::optional<Addr> tunnel;
  std::optional<Addr> stats;
  int workers = 2;
  int handshakeTimeoutMs = 10000;
  bool ktls = true;  // hand the record layer to the kernel when it has kTLS ("ktls": false keeps user space)
  // "pool": outbound connections go as streams over pooled tunnel connections, one stream at a time per
  // connection, reused (docs/mtls.md, "Pooled tunnel"); true needs "ktls": false (framed streams are user
  // space). Absent: pooled unless the connection can hand its record layer to the kernel (pooled()).
  std::optional<bool> pool;
  int poolIdleMs = 5000;  // an idle pooled connection is closed after this (the server waits 6 times longer)
  std::vector<std::unique_ptr<Workload>> workloads;
  std::map<std::string, Destination> destinations;                // key: "ip:port"
  SslCtxPtr inboundBase;  // no certificate: the SNI callback switches to the workload's context
  std::shared_ptr<const OrigDstMap> originalDst;  // "originalDst": {"map": PATH}; absent: the PROXY v1 preamble
  // "inboundSource": {"ipv4", "ipv6"}: the source address of connections to workloads, per family (the only
  // source a STRICT port accepts, docs/capture.md); absent: the kernel's choice.
  std::optional<Addr> inboundSource4;
  std::optional<Addr> inboundSource6;

  // Whether outbound connections go pooled: as "pool" says, else wherever kTLS would not be used — kTLS needs
  // one TLS connection per application connection, and without it the pool saves a handshake per connection.
  bool pooled() const;
  // Why, for the stats and `meshctl status`: "config" ("pool" given), or "auto: …".
  const char* tunnelChoice() const;

  const Workload* workloadByIp(const std::string& ip) const;
  const Destination* destination(const Addr& dst) const;
};

struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Reads and checks everything (files, keys, SPIFFE IDs); throws ConfigError naming the field and the problem.
std::shared_ptr<const Config> loadConfig(const std::string& path);

// The config in force (the latest loaded): a pooled tunnel's later streams are checked against it, not against
// the config its connection started with.
void setCurrentConfig(std::shared_ptr<const Config> config);
std::shared_ptr<const Config> currentConfig();

}  // namespace mesh
