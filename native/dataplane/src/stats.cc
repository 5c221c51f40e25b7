#include "stats.h"

namespace mesh {

Stats stats;

const char* roleName(Role r) { return r == Role::Outbound ? "outbound" : "inbound"; }

const char* handshakeFailureName(HandshakeFailure f) {
  switch (f) {
    case HandshakeFailure::UntrustedChain: return "untrusted_chain";
    case HandshakeFailure::Expired: return "expired";
    case HandshakeFailure::NotYetValid: return "not_yet_valid";
    case HandshakeFailure::BadSpiffeId: return "bad_spiffe_id";
    case HandshakeFailure::UnknownTrustDomain: return "unknown_trust_domain";
    case HandshakeFailure::WrongIdentity: return "wrong_identity";
    case HandshakeFailure::NoPeerCertificate: return "no_peer_certificate";
    case HandshakeFailure::UnknownDestination: return "unknown_destination";
    case HandshakeFailure::PeerAlert: return "peer_alert";
    case HandshakeFailure::Protocol: return "protocol";
    case HandshakeFailure::Closed: return "closed";
    case HandshakeFailure::Timeout: return "timeout";
    case HandshakeFailure::Count: break;
  }
  return "?";
}

const char* connErrorName(ConnError e) {
  switch (e) {
    case ConnError::NoOriginalDestination: return "no_original_destination";
    case ConnError::UnknownDestination: return "unknown_destination";
    case ConnError::UnknownSource: return "unknown_source";
    case ConnError::TunnelConnectFailed: return "tunnel_connect_failed";
    case ConnError::BadHeader: return "bad_header";
    case ConnError::DestinationMismatch: return "destination_mismatch";
    case ConnError::NotAllowed: return "not_allowed";
    case ConnError::BackendConnectFailed: return "backend_connect_failed";
    case ConnError::Reset: return "reset";
    case ConnError::FdLimit: return "fd_limit";
    case ConnError::RecordLimit: return "record_limit";
    case ConnError::KeyUpdate: return "key_update";
    case ConnError::PeerAlert: return "peer_alert";
    case ConnError::Count: break;
  }
  return "?";
}

void Stats::authzSeries(const std::string& policy, AuthzReason reason) {
  std::lock_guard<std::mutex> lock(authzMu_);
  authz_.emplace(std::make_pair(policy, int(reason)), 0);
}

void Stats::authzDenied(const std::string& policy, AuthzReason reason) {
  std::lock_guard<std::mutex> lock(authzMu_);
  authz_[std::make_pair(policy, int(reason))]++;
}

void Stats::authorized(const std::string& source, const std::string& destination) {
  std::lock_guard<std::mutex> lock(authzMu_);
  authorized_[std::make_pair(source, destination)]++;
}

std::string Stats::prometheus() const {
  std::string out;
  auto line = [&out](const std::string& name, const std::string& labels, uint64_t v) {
    out += name;
    if (!labels.empty()) out += "{" + labels + "}";
    out += " " + std::to_string(v) + "\n";
  };
  auto help = [&out](const char* name, const char* type, const char* text) {
    out += std::string("# HELP ") + name + " " + text + "\n# TYPE " + name + " " + type + "\n";
  };
  auto role = [](int r) { return std::string("role=\"") + roleName(Role(r)) + "\""; };

  help("mesh_dataplane_connections_total", "counter", "Connections accepted, by role.");
  for (int r = 0; r < kRoles; r++) line("mesh_dataplane_connections_total", role(r), accepted[r].load());
  help("mesh_dataplane_connections_established_total", "counter", "Connections that completed mutual TLS and began forwarding.");
  for (int r = 0; r < kRoles; r++) line("mesh_dataplane_connections_established_total", role(r), established[r].load());
  help("mesh_dataplane_connections_active", "gauge", "Connections open now, by role.");
  for (int r = 0; r < kRoles; r++) line("mesh_dataplane_connections_active", role(r), uint64_t(active[r].load()));
  help("mesh_dataplane_handshake_failures_total", "counter", "Mutual TLS handshakes that failed, by role and reason.");
  for (int r = 0; r < kRoles; r++)
    for (int f = 0; f < int(HandshakeFailure::Count); f++)
      line("mesh_dataplane_handshake_failures_total",
           role(r) + ",reason=\"" + handshakeFailureName(HandshakeFailure(f)) + "\"", handshakeFailures[r][f].load());
  help("mesh_dataplane_connection_errors_total", "counter", "Connections refused or ended outside the handshake, by role and reason.");
  for (int r = 0; r < kRoles; r++)
    for (int e = 0; e < int(ConnError::Count); e++)
      line("mesh_dataplane_connection_errors_total", role(r) + ",reason=\"" + connErrorName(ConnError(e)) + "\"",
           errors[r][e].load());
  help("mesh_dataplane_bytes_total", "counter",
       "Application bytes forwarded, by role and direction (plain_to_tls: from the plaintext socket into TLS).");
  for (int r = 0; r < kRoles; r++) {
    line("mesh_dataplane_bytes_total", role(r) + ",direction=\"plain_to_tls\"", bytes[r][0].load());
    line("mesh_dataplane_bytes_total", role(r) + ",direction=\"tls_to_plain\"", bytes[r][1].load());
  }
  help("mesh_dataplane_tunnel_streams_total", "counter",
       "Tunnelled connections by tunnel: dedicated (one TLS connection each) or pooled (streams over pooled TLS "
       "connections); handshake new (this connection made one) or reused (none: an idle pooled connection carried it).");
  line("mesh_dataplane_tunnel_streams_total", role(0) + ",tunnel=\"dedicated\",handshake=\"new\"", tunnelStreams[0][0].load());
  line("mesh_dataplane_tunnel_streams_total", role(0) + ",tunnel=\"pooled\",handshake=\"new\"", tunnelStreams[0][1].load());
  line("mesh_dataplane_tunnel_streams_total", role(0) + ",tunnel=\"pooled\",handshake=\"reused\"", tunnelStreams[0][2].load());
  line("mesh_dataplane_tunnel_streams_total", role(1) + ",tunnel=\"dedicated\"", tunnelStreams[1][0].load());
  line("mesh_dataplane_tunnel_streams_total", role(1) + ",tunnel=\"pooled\"", tunnelStreams[1][1].load());
  help("mesh_dataplane_record_layer_total", "counter",
       "Connections whose TLS handshake completed, by record layer: path ktls (the kernel's, bytes spliced) or user (OpenSSL).");
  for (int r = 0; r < kRoles; r++) {
    line("mesh_dataplane_record_layer_total", role(r) + ",path=\"user\"", recordLayer[r][0].load());
    line("mesh_dataplane_record_layer_total", role(r) + ",path=\"ktls\"", recordLayer[r][1].load());
  }
  help("mesh_dataplane_user_bytes_total", "counter",
       "Application bytes copied through user space on kTLS connections after the hand-over, by role.");
  for (int r = 0; r < kRoles; r++) line("mesh_dataplane_user_bytes_total", role(r), userBytes[r].load());
  help("mesh_dataplane_ktls_available", "gauge", "1 when the kernel's TLS ULP was usable at start, else 0.");
  line("mesh_dataplane_ktls_available", "", ktlsAvailable.load());
  // A label value escapes backslash, double quote and newline (Prometheus text format).
  auto label = [](const std::string& v) {
    std::string out;
    for (char c : v) {
      if (c == '\\' || c == '"') out += '\\';
      if (c == '\n') out += "\\n";
      else out += c;
    }
    return out;
  };
  help("mesh_dataplane_ktls_info", "gauge", "Always 1; reason: why the start-up probe found no kTLS (empty when it did).");
  line("mesh_dataplane_ktls_info", "reason=\"" + label(ktlsReason) + "\"", 1);
  help("mesh_dataplane_outbound_tunnel_info", "gauge",
       "Always 1; tunnel: how new outbound connections go under the config in force, pooled or dedicated; choice: "
       "config (its \"pool\") or auto (pooled unless the record layer can go to the kernel, and why).");
  line("mesh_dataplane_outbound_tunnel_info",
       std::string("tunnel=\"") + (tunnelPooled.load() ? "pooled" : "dedicated") + "\",choice=\"" + label(tunnelChoice.load()) + "\"", 1);
  help("mesh_dataplane_authz_denied_total", "counter",
       "Inbound connections refused by policy: reason deny_match with the DENY policy (<namespace>/<name>), or "
       "no_allow_match with the workload's ALLOW policies (joined by \",\").");
  {
    std::lock_guard<std::mutex> lock(authzMu_);
    for (auto& [key, v] : authz_)
      line("mesh_dataplane_authz_denied_total",
           "policy=\"" + key.first + "\",reason=\"" + authzReasonName(AuthzReason(key.second)) + "\"", v);
  }
  help("mesh_dataplane_inbound_authorized_total", "counter",
       "Inbound connections that passed mutual TLS and policy, by the client's verified SPIFFE ID and the workload's.");
  {
    std::lock_guard<std::mutex> lock(authzMu_);
    for (auto& [key, v] : authorized_)
      line("mesh_dataplane_inbound_authorized_total",
           "source_principal=\"" + key.first + "\",destination_principal=\"" + key.second + "\"", v);
  }
  help("mesh_dataplane_accept_pauses_total", "counter",
       "Times a listener was set aside for 50 ms: out of file descriptors, with none in reserve to refuse a connection with (the connection waits in the backlog).");
  line("mesh_dataplane_accept_pauses_total", "", acceptPauses.load());
  help("mesh_dataplane_config_reloads_total", "counter", "SIGHUP reloads, by result (a failed reload keeps the previous config whole).");
  line("mesh_dataplane_config_reloads_total", "result=\"ok\"", reloadsOk.load());
  line("mesh_dataplane_config_reloads_total", "result=\"error\"", reloadsFailed.load());
  help("mesh_dataplane_config_generation", "gauge", "Config generation in force: 1 at start, +1 per successful reload.");
  line("mesh_dataplane_config_generation", "", generation.load());
  return out;
}

}  // namespace mesh
