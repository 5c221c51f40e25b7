// One tunnelled application connection: a plaintext socket (the application's, or the workload's on the inbound
// side), a TLS socket (to or from the peer node's tunnel), and a bounded buffer per direction. It belongs to one
// worker thread for its whole life; its two fds are in that worker's epoll, edge-triggered, both pointing here.
#pragma once
#include <openssl/ssl.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "addr.h"
#include "config.h"
#include "ktls.h"
#include "stats.h"
#include "tls.h"

namespace mesh {

// A bounded byte queue (kSize); when full, the side that fills it stops reading (backpressure reaches the
// sender through TCP's window). Its storage is taken from the thread's free blocks when bytes are to be written
// and given back as soon as it is empty, so an idle connection holds none and a new one zeroes nothing.
class Buffer {
 public:
  static constexpr size_t kSize = 64 * 1024;
  Buffer() = default;
  ~Buffer() { release(); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  size_t size() const { return tail_ - head_; }
  bool empty() const { return head_ == tail_; }
  size_t space() const { return kSize - tail_; }
  char* readPtr() { return data_ + head_; }
  char* writePtr();
  void produced(size_t n) { tail_ += n; }
  void consume(size_t n);
  // Put `n` bytes in front of what is queued (the tunnel header in front of early application bytes).
  bool prepend(const char* p, size_t n);
  // Gives the storage back when nothing is queued (after a read that found nothing, say).
  void trim() {
    if (empty()) release();
  }

 private:
  void release();
  char* data_ = nullptr;
  size_t head_ = 0;
  size_t tail_ = 0;
};

class Conn;

// Tunnels between two workloads of this node end in this process at both ends. Each outbound tunnel socket's
// local address is noted with the epoll of the worker that owns it, so the accepted end of that tunnel is given
// to the same worker: an exchange then wakes one thread, not two (each hop through the tunnel was a cross-thread
// wake-up). Thread-safe.
namespace localTunnels {
std::string key(const Addr& a);
void add(const std::string& key, int epfd);
void remove(const std::string& key);
// The owning worker's epoll, or -1.
int find(const std::string& key);
}  // namespace localTunnels

// A worker's idle pooled tunnel connections (outbound), by key: source SPIFFE ID, destination, tunnel and the
// config they were made with. Only the worker's thread touches it.
struct Pool {
  std::unordered_multimap<std::string, Conn*> idle;
  Conn* take(const std::string& key);
  void remove(const std::string& key, Conn* c);
};

class Conn {
 public:
  // Idle: a pooled outbound TLS connection between streams, waiting in the worker's Pool.
  enum class State { ReadPreamble, Connecting, Handshaking, ReadHeader, Streaming, Idle, Closed };
  using Clock = std::chrono::steady_clock;

  // Outbound: `fd` is the accepted application socket. Inbound: the accepted tunnel socket.
  Conn(Role role, int fd, std::shared_ptr<const Config> config, int epfd, Pool* pool = nullptr);
  ~Conn();
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  // Make all the progress possible now, trying both sockets.
  void drive();
  // An epoll event: `data` is what the entry carries (tagEvent), `events` what epoll reported.
  void onEvent(uint32_t events, uint64_t data);
  // Epoll entries carry the Conn with the low bit set for its TLS socket (a Conn is at least 8-byte aligned).
  static Conn* fromEvent(uint64_t data) { return reinterpret_cast<Conn*>(data & ~uint64_t(1)); }
  // Called by the worker's sweep: ends a connection still setting up past its deadline.
  void checkDeadline(Clock::time_point now);
  bool closed() const { return state_ == State::Closed; }
  // An accepted tunnel whose client end may be this process's, not yet seen in localTunnels: it may still move to
  // the worker that dialled it, until its first bytes (the ClientHello, written only after the dialling side has
  // noted its socket) reach OpenSSL.
  void mayMove() { mayMove_ = true; }
  void settle() { mayMove_ = false; }
  bool movable() const { return mayMove_ && state_ == State::Handshaking; }
  int tlsFd() const { return tls_; }
  // Undoes the constructor of a movable connection and hands back its socket (not closed) and config.
  int detach(std::shared_ptr<const Config>& config);

 private:
  bool step();
  void run();
  uint64_t tagEvent(int fd) const { return reinterpret_cast<uintptr_t>(this) | (fd == tls_ ? 1 : 0); }
  bool pump();
  bool halfCloseTail(bool downEnded, bool upEnded);
  bool readPreamble();
  bool startTunnelConnect(const Addr& tunnelAddr);
  bool finishConnect(int fd);
  bool handshake();
  bool readHeader();
  bool tlsRead(size_t limit = SIZE_MAX);
  // OpenSSL reads the TLS socket itself; this sees each read so a short one says the socket ran dry, as the
  // pumps' own reads do (without it every record cost an extra read that could only say EAGAIN).
  void watchTlsReads();
  static long onTlsRead(BIO* b, int oper, const char* argp, size_t len, int argi, long argl, int ret,
                        size_t* processed);
  bool tlsReadable() const { return tlsReadable_ || SSL_has_pending(ssl_); }
  // The pooled tunnel (framed streams, one at a time).
  void adopt(Conn* idle);
  bool framedRead();
  bool sslReadBlocked(int n);
  bool streamDone();
  bool idleStep();
  bool checkStreamAgainstCurrentConfig();
  // The kTLS path (conn_splice.cc).
  void prepareKtls();
  bool handOver();
  bool ktlsRead(size_t limit);
  bool splicePump();
  bool sealed(size_t bytes);
  void closePipes();
  bool addFd(int fd);
  // The TLS side ended abnormally mid-stream (a fatal alert, a record that fails authentication, a truncation):
  // the bytes authenticated before it still reach the application, then the reset.
  void failAfterDelivery(ConnError e);
  bool drainDown();
  void fail(ConnError e);
  void failHandshake(HandshakeFailure f);
  void finish(bool abort);

  Role role_;
  State state_;
  std::shared_ptr<const Config> config_;
  int epfd_;
  int plain_ = -1;
  int tls_ = -1;
  SSL* ssl_ = nullptr;
  PeerCheck check_;
  Addr dst_;
  Buffer up_;    // plaintext side → TLS side
  Buffer down_;  // TLS side → plaintext side
  bool plainEof_ = false;  // the plaintext peer shut its write side
  bool tlsEof_ = false;    // close_notify received
  bool plainShut_ = false; // we shut the plaintext socket's write side
  bool tlsShut_ = false;   // close_notify sent and the TLS socket's write side shut
  // Whether a read of the socket may return bytes: cleared when one came back empty (EAGAIN) or short, set again
  // by an event that says readable. Edge-triggered epoll reports every arrival after that, so the pumps skip
  // reads that could only say EAGAIN (most of what an exchange of small messages cost).
  bool plainReadable_ = true;
  bool tlsReadable_ = true;
  // The plaintext peer's FIN (or an error) was reported: a short read no longer means an empty socket, since the
  // EOF after the bytes comes with no event of its own.
  bool plainHup_ = false;
  bool tlsHup_ = false;    // the same for the TLS socket
  bool mayMove_ = false;   // see mayMove()
  Clock::time_point deadline_;
  ConnError draining_ = ConnError::Count;  // set by failAfterDelivery: the reason the reset will carry
  // kTLS: wanted (the kernel has it and the config allows it) until the hand-over decides; then the record layer
  // is the kernel's and bytes move through one pipe per direction.
  bool wantKtls_ = false;
  bool ktls_ = false;
  TrafficSecrets secrets_;
  int upPipe_[2] = {-1, -1};
  int downPipe_[2] = {-1, -1};
  size_t upQueued_ = 0;    // bytes in upPipe_
  size_t downQueued_ = 0;  // bytes in downPipe_
  size_t pipeBytes_ = 0;   // what each pipe holds (the kernel's grant)
  uint64_t txRecords_ = 0; // an upper bound on the records the kernel sealed for us
  // Pooled tunnel: framed streams; finSent_/finRecv_ are the stream's half-closes (FIN frames); frameLeft_ the
  // payload bytes of the DATA frame being read; fh_ a frame header read in part.
  Pool* pool_ = nullptr;
  std::string localTunnel_;  // outbound: this tunnel socket's entry in localTunnels
  std::string poolKey_;
  bool framed_ = false;
  bool finSent_ = false;
  bool finRecv_ = false;
  bool idleWait_ = false;  // inbound: between streams of a pooled connection
  size_t frameLeft_ = 0;
  uint8_t fh_[4] = {};
  size_t fhLen_ = 0;
};

}  // namespace mesh
