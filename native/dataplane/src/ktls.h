// The kernel's TLS record layer (kTLS): after OpenSSL's handshake, the connection's keys go to the socket (TLS_TX,
// TLS_RX) and the data plane moves bytes with splice(2), never reading them. TLS 1.3 only, tickets off, so the
// first record after the handshake has sequence 0 in both directions.
#pragma once
#include <openssl/ssl.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace mesh {

// Once, before the workers start: whether the `tls` ULP can be set on a connected TCP socket here (a loopback
// pair; when the ULP or the AEAD is unknown, `modprobe` of tls and the AEAD modules, AES-NI first, is tried once).
// `why` says what failed.
bool ktlsProbe(std::string& why);
// The probe's result (false before it ran).
bool ktlsAvailable();

// The TLS 1.3 application traffic secrets of one connection, as OpenSSL's keylog callback reports them.
struct TrafficSecrets {
  std::string client;  // CLIENT_TRAFFIC_SECRET_0, raw bytes
  std::string server;  // SERVER_TRAFFIC_SECRET_0
};

// Installed on every context: stores the secrets of connections that asked with ktlsTrack (others: ignored).
void ktlsKeylog(const SSL* ssl, const char* line);
// Collect `ssl`'s traffic secrets into `out` (which must outlive the handshake).
void ktlsTrack(SSL* ssl, TrafficSecrets* out);

enum class KtlsInstall {
  Installed,  // TLS_TX and TLS_RX set: OpenSSL must not touch the socket again
  Declined,   // nothing changed on the socket: the user-space record layer goes on (`why` says why)
  Broken,     // the socket is half-configured: the connection must end
};
// Hand `fd`'s record layer to the kernel. Call right after the handshake, before any application record in
// either direction, with nothing buffered in OpenSSL (checked: SSL_has_pending).
KtlsInstall ktlsInstall(SSL* ssl, int fd, bool client, const TrafficSecrets& secrets, std::string& why);

// TLS record content types (RFC 8446 5.1).
constexpr uint8_t kRecordAlert = 21;
constexpr uint8_t kRecordHandshake = 22;
constexpr uint8_t kRecordData = 23;

// recvmsg on a kTLS socket with room for the record type: one record's bytes (or part of a data record) and
// its type. Returns what recvmsg returns (-1 with errno).
ssize_t ktlsRecv(int fd, char* buf, size_t len, uint8_t& type);
// A close_notify alert through the kernel's record layer. -1 with errno (EAGAIN: try again later).
int ktlsSendCloseNotify(int fd);

// A bound on the records sealed with one key, below AES-GCM's limit of 2^24.5 (RFC 8446 5.5). The kernel cannot
// rekey before 6.14, so a connection that reaches it ends. MESH_DATAPLANE_KTLS_RECORD_LIMIT lowers it (tests).
uint64_t ktlsRecordLimit();

}  // namespace mesh
