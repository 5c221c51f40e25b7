#include "conn.h"

#include <fcntl.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <linux/sockios.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "header.h"
#include "original_dst.h"

namespace mesh {

namespace {

bool wouldBlock() { return errno == EAGAIN || errno == EWOULDBLOCK; }

void setNoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// An abrupt end on one side is shown abruptly on the other: RST rather than FIN.
void resetOnClose(int fd) {
  linger l{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

}  // namespace

// Free blocks of the thread's buffers (a connection never changes thread). A few are kept for the next
// exchange; past that they go back to malloc, so what is cached stays bounded whatever the peak was.
namespace {
constexpr size_t kKeptBlocks = 64;
thread_local std::vector<std::unique_ptr<char[]>> freeBlocks;
}  // namespace

char* Buffer::writePtr() {
  if (!data_) {
    if (freeBlocks.empty()) {
      data_ = new char[kSize];  // not zeroed: only what a read writes is ever read
    } else {
      data_ = freeBlocks.back().release();
      freeBlocks.pop_back();
    }
  } else if (head_ > 0 && tail_ == kSize) {
    std::memmove(data_, data_ + head_, tail_ - head_);
    tail_ -= head_;
    head_ = 0;
  }
  return data_ + tail_;
}

void Buffer::consume(size_t n) {
  head_ += n;
  if (head_ == tail_) release();
}

void Buffer::release() {
  head_ = tail_ = 0;
  if (!data_) return;
  if (freeBlocks.size() < kKeptBlocks) freeBlocks.emplace_back(data_);
  else delete[] data_;
  data_ = nullptr;
}

bool Buffer::prepend(const char* p, size_t n) {
  if (size() + n > kSize) return false;
  if (head_ >= n) {
    head_ -= n;
  } else {
    writePtr();  // storage, if it had none
    std::memmove(data_ + n, data_ + head_, size());
    tail_ = size() + n;
    head_ = 0;
  }
  std::memcpy(data_ + head_, p, n);
  return true;
}

namespace localTunnels {
namespace {
std::mutex mu;
std::unordered_map<std::string, int> owners;
std::atomic<size_t> count{0};
}  // namespace

std::string key(const Addr& a) {
  uint16_t port = a.port();
  return a.ipBytes() + char(port >> 8) + char(port & 0xff);
}

void add(const std::string& key, int epfd) {
  std::lock_guard<std::mutex> lock(mu);
  owners[key] = epfd;
  count = owners.size();
}

void remove(const std::string& key) {
  std::lock_guard<std::mutex> lock(mu);
  owners.erase(key);
  count = owners.size();
}

int find(const std::string& key) {
  if (count.load(std::memory_order_relaxed) == 0) return -1;
  std::lock_guard<std::mutex> lock(mu);
  auto it = owners.find(key);
  return it == owners.end() ? -1 : it->second;
}
}  // namespace localTunnels

Conn::Conn(Role role, int fd, std::shared_ptr<const Config> config, int epfd, Pool* pool)
    : role_(role),
      state_(role == Role::Outbound ? State::ReadPreamble : State::Handshaking),
      config_(std::move(config)),
      epfd_(epfd),
      pool_(pool) {
  stats.accepted[int(role_)]++;
  stats.active[int(role_)]++;
  deadline_ = Clock::now() + std::chrono::milliseconds(config_->handshakeTimeoutMs);
  check_.role = role_;
  check_.config = config_.get();
  if (role_ == Role::Outbound) {
    plain_ = fd;
    setNoDelay(plain_);
    if (!addFd(plain_)) fail(ConnError::Reset);
    return;
  }
  tls_ = fd;
  setNoDelay(tls_);
  ssl_ = SSL_new(config_->inboundBase.get());
  if (!ssl_ || !SSL_set_fd(ssl_, tls_) || !addFd(tls_)) {
    ERR_clear_error();
    fail(ConnError::Reset);
    return;
  }
  attachPeerCheck(ssl_, &check_);
  watchTlsReads();
  prepareKtls();
  SSL_set_accept_state(ssl_);
}

Conn::~Conn() {
  if (state_ != State::Closed) finish(true);
}

bool Conn::addFd(int fd) {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.u64 = tagEvent(fd);
  return epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) == 0;
}

void Conn::drive() {
  plainReadable_ = tlsReadable_ = true;
  run();
}

void Conn::onEvent(uint32_t events, uint64_t data) {
  // An event that only says writable leaves what is known of reads as it was.
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) (data & 1 ? tlsReadable_ : plainReadable_) = true;
  if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) (data & 1 ? tlsHup_ : plainHup_) = true;
  run();
}

void Conn::run() {
  // Each step either makes progress or finds every way forward blocked (EAGAIN, a full buffer).
  while (state_ != State::Closed && step()) {
  }
  // Blocked: an empty buffer keeps no storage while the connection waits.
  up_.trim();
  down_.trim();
}

void Conn::checkDeadline(Clock::time_point now) {
  if (draining_ != ConnError::Count && state_ != State::Closed) {
    // Waiting for the application to take the last bytes (drainDown); one that never reads is reset anyway.
    if (now >= deadline_) fail(draining_);
    else drive();
    return;
  }
  if (state_ == State::Streaming || state_ == State::Closed || now < deadline_) return;
  if (state_ == State::Idle || (state_ == State::ReadHeader && idleWait_))
    finish(false);  // a pooled connection idle for too long: closed cleanly
  else if (state_ == State::Connecting)
    fail(role_ == Role::Outbound ? ConnError::TunnelConnectFailed : ConnError::BackendConnectFailed);
  else if (state_ == State::ReadPreamble)
    fail(ConnError::NoOriginalDestination);
  else if (state_ == State::ReadHeader)
    fail(ConnError::BadHeader);
  else
    failHandshake(HandshakeFailure::Timeout);
}

bool Conn::step() {
  switch (state_) {
    case State::ReadPreamble: return readPreamble();
    case State::Connecting: return finishConnect(role_ == Role::Outbound ? tls_ : plain_);
    case State::Handshaking: return handshake();
    case State::ReadHeader: return readHeader();
    case State::Streaming: return pump();
    case State::Idle: return idleStep();
    case State::Closed: return false;
  }
  return false;
}

bool Conn::readPreamble() {
  // The kernel's map knows the destination at accept, before any byte: nothing is read first (where the server
  // speaks first the client sends none, and the tunnel is set up while the client writes). The PROXY preamble
  // stand-in needs its line.
  auto peer = peerOf(plain_);
  size_t consumed = 0;
  LookupResult r = peer ? OriginalDst::lookup(plain_, *peer, up_.empty() ? "" : up_.readPtr(), up_.size(), dst_, consumed)
                        : LookupResult::Failed;
  if (r == LookupResult::NeedMore) {
    if (up_.space() == 0) {
      fail(ConnError::NoOriginalDestination);
      return false;
    }
    ssize_t n = read(plain_, up_.writePtr(), up_.space());
    if (n < 0 && wouldBlock()) return false;
    if (n <= 0) {
      fail(n == 0 ? ConnError::NoOriginalDestination : ConnError::Reset);
      return false;
    }
    up_.produced(size_t(n));
    return true;
  }
  if (r == LookupResult::Failed) {
    fail(ConnError::NoOriginalDestination);
    return false;
  }
  up_.consume(consumed);
  stats.bytes[int(role_)][0] += up_.size();
  const Workload* source = config_->workloadByIp(peer->ip());
  if (!source) {
    fail(ConnError::UnknownSource);
    return false;
  }
  const Destination* dest = config_->destination(dst_);
  if (!dest) {
    fail(ConnError::UnknownDestination);
    return false;
  }
  check_.local = source;
  check_.expectedId = dest->spiffeId;
  if (pool_ && config_->pooled()) {
    // A stream of a pooled tunnel: its header, then what the application sent early as a DATA frame.
    framed_ = true;
    std::string pre = encodeHeader(dst_, true);
    if (!up_.empty()) {
      char fh[kFrameHeaderSize];
      encodeFrameHeader(fh, kFrameData, up_.size());
      pre.append(fh, sizeof fh);
    }
    up_.prepend(pre.data(), pre.size());
    // Pooled per source identity and destination (the server checks each stream against the workload its SNI
    // named), per tunnel, and per config (a reload's new SVIDs and policies get connections of their own).
    poolKey_ = source->spiffeId + '|' + dst_.ip() + '|' + dest->tunnel.str() + '|' + dest->spiffeId + '|' +
               std::to_string(reinterpret_cast<uintptr_t>(config_.get()));
    if (Conn* idle = pool_->take(poolKey_)) {
      adopt(idle);
      stats.tunnelStreams[0][2]++;
      stats.established[int(role_)]++;
      state_ = State::Streaming;
      return true;
    }
    stats.tunnelStreams[0][1]++;
  } else {
    stats.tunnelStreams[0][0]++;
    std::string header = encodeHeader(dst_);
    up_.prepend(header.data(), header.size());
  }
  return startTunnelConnect(dest->tunnel);
}

bool Conn::startTunnelConnect(const Addr& tunnelAddr) {
  tls_ = socket(tunnelAddr.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (tls_ < 0) {
    fail(ConnError::TunnelConnectFailed);
    return false;
  }
  setNoDelay(tls_);
  if (connect(tls_, tunnelAddr.sa(), tunnelAddr.len) != 0 && errno != EINPROGRESS) {
    fail(ConnError::TunnelConnectFailed);
    return false;
  }
  if (!addFd(tls_)) {
    fail(ConnError::Reset);
    return false;
  }
  if (auto local = localOf(tls_)) {
    localTunnel_ = localTunnels::key(*local);
    localTunnels::add(localTunnel_, epfd_);
  }
  state_ = State::Connecting;
  return true;
}

bool Conn::finishConnect(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err != 0) {
    fail(role_ == Role::Outbound ? ConnError::TunnelConnectFailed : ConnError::BackendConnectFailed);
    return false;
  }
  if (!peerOf(fd)) return false;  // still in progress
  if (role_ == Role::Inbound) {
    stats.established[int(role_)]++;
    state_ = State::Streaming;
    return true;
  }
  ssl_ = SSL_new(check_.local->ctx.get());
  if (!ssl_ || !SSL_set_fd(ssl_, tls_)) {
    ERR_clear_error();
    fail(ConnError::Reset);
    return false;
  }
  attachPeerCheck(ssl_, &check_);
  watchTlsReads();
  if (framed_) {
    // Framed streams stay in user space here; the ALPN tells a server with kTLS to keep them there too.
    SSL_set_alpn_protos(ssl_, reinterpret_cast<const unsigned char*>(kPooledAlpn), sizeof kPooledAlpn - 1);
  } else {
    prepareKtls();
  }
  SSL_set_tlsext_host_name(ssl_, sniFor(dst_).c_str());
  SSL_set_connect_state(ssl_);
  state_ = State::Handshaking;
  return true;
}

bool Conn::handshake() {
  ERR_clear_error();
  int r = SSL_do_handshake(ssl_);
  if (r == 1) {
    // Before any application record in either direction: the outbound header goes through the new record layer.
    if (!handOver()) return false;
    if (role_ == Role::Outbound) {
      stats.established[int(role_)]++;
      state_ = State::Streaming;
    } else {
      state_ = State::ReadHeader;
    }
    return true;
  }
  int e = SSL_get_error(ssl_, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return false;
  failHandshake(classifyHandshakeError(ssl_, e, check_));
  return false;
}

bool Conn::readHeader() {
  // Not a byte past the header: with kTLS what follows is the application's and goes by splice; on a pooled
  // connection it is the stream's frames.
  bool progress = tlsRead(kHeaderSize - down_.size());
  if (state_ == State::Closed) return false;
  if (down_.size() < kHeaderSize) {
    // The client closed a pooled connection between streams: its normal end.
    if (tlsEof_ && idleWait_ && down_.empty()) finish(false);
    else if (tlsEof_) fail(ConnError::BadHeader);
    return progress;
  }
  bool framed = false;
  auto dst = decodeHeader(reinterpret_cast<const uint8_t*>(down_.readPtr()), &framed);
  if (!dst || (idleWait_ && !framed) || (framed && ktls_)) {
    fail(ConnError::BadHeader);
    return false;
  }
  down_.consume(kHeaderSize);
  dst_ = *dst;
  framed_ = framed;
  stats.tunnelStreams[1][framed ? 1 : 0]++;
  if (idleWait_) {
    // A later stream of a pooled connection: a new application connection, checked as the first one was, against
    // the config in force now.
    idleWait_ = false;
    stats.accepted[int(role_)]++;
    if (!checkStreamAgainstCurrentConfig()) return false;
  }
  // The client asked (SNI) for one workload's identity; it may only reach that workload.
  if (dst_.ip() != check_.local->address) {
    fail(ConnError::DestinationMismatch);
    return false;
  }
  if (Decision d = check_.local->policies.evaluate(check_.peerId, dst_.port()); !d.allowed) {
    stats.authzDenied(*d.policy, d.reason);
    fail(ConnError::NotAllowed);
    return false;
  }
  stats.authorized(check_.peerId, check_.local->spiffeId);
  plain_ = socket(dst_.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  // From the inbound source address: what lets the connection past a STRICT port (docs/capture.md).
  const std::optional<Addr>& src = dst_.family() == AF_INET ? config_->inboundSource4 : config_->inboundSource6;
  if (plain_ >= 0 && src) {
    int one = 1;
    setsockopt(plain_, SOL_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(plain_, src->sa(), src->len) != 0) {
      fail(ConnError::BackendConnectFailed);
      return false;
    }
  }
  if (plain_ < 0 || (connect(plain_, dst_.sa(), dst_.len) != 0 && errno != EINPROGRESS)) {
    fail(ConnError::BackendConnectFailed);
    return false;
  }
  setNoDelay(plain_);
  plainReadable_ = true;
  plainHup_ = false;
  if (!addFd(plain_)) {
    fail(ConnError::Reset);
    return false;
  }
  state_ = State::Connecting;
  deadline_ = Clock::now() + std::chrono::milliseconds(config_->handshakeTimeoutMs);
  return true;
}

void Conn::watchTlsReads() {
  BIO* b = SSL_get_rbio(ssl_);
  BIO_set_callback_arg(b, reinterpret_cast<char*>(this));
  BIO_set_callback_ex(b, onTlsRead);
}

long Conn::onTlsRead(BIO* b, int oper, const char*, size_t len, int, long, int ret, size_t* processed) {
  if (oper == (BIO_CB_READ | BIO_CB_RETURN) && ret > 0 && processed) {
    auto* c = reinterpret_cast<Conn*>(BIO_get_callback_arg(b));
    if (c && *processed > 0) c->mayMove_ = false;  // OpenSSL holds bytes of it now
    // Short: the socket had no more. An EOF queued behind the bytes brings no event of its own, so not after one.
    if (c && *processed < len && !c->tlsHup_) c->tlsReadable_ = false;
  }
  return ret;
}

int Conn::detach(std::shared_ptr<const Config>& config) {
  epoll_ctl(epfd_, EPOLL_CTL_DEL, tls_, nullptr);
  SSL_free(ssl_);
  ssl_ = nullptr;
  int fd = tls_;
  tls_ = -1;
  stats.accepted[int(role_)]--;
  stats.active[int(role_)]--;
  state_ = State::Closed;
  config = config_;
  return fd;
}

// SSL_read into down_; false when blocked. Sets tlsEof_ on close_notify; fails the connection on a truncation.
bool Conn::tlsRead(size_t limit) {
  if (tlsEof_ || draining_ != ConnError::Count || down_.space() == 0 || limit == 0) return false;
  if (ktls_) return ktlsRead(limit);
  if (!tlsReadable()) return false;
  ERR_clear_error();
  int n = SSL_read(ssl_, down_.writePtr(), int(std::min(down_.space(), limit)));
  if (n > 0) {
    down_.produced(size_t(n));
    return true;
  }
  int e = SSL_get_error(ssl_, n);
  if (e == SSL_ERROR_WANT_READ) tlsReadable_ = false;
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return false;
  if (e == SSL_ERROR_ZERO_RETURN) {
    tlsEof_ = true;
    return true;
  }
  // OpenSSL files a received fatal alert under reason SSL_AD_REASON_OFFSET + its description.
  unsigned long err = ERR_peek_error();
  bool alert = ERR_GET_LIB(err) == ERR_LIB_SSL && ERR_GET_REASON(err) >= SSL_AD_REASON_OFFSET;
  ERR_clear_error();
  failAfterDelivery(alert ? ConnError::PeerAlert : ConnError::Reset);
  return state_ != State::Closed;
}

void Conn::failAfterDelivery(ConnError e) {
  if (state_ != State::Streaming) {
    fail(e);
    return;
  }
  draining_ = e;
  deadline_ = Clock::now() + std::chrono::milliseconds(config_->handshakeTimeoutMs);
}

// Queued bytes (the pipe first, then down_) to the application; once the kernel has handed them all over (the
// send queue is empty: a reset would drop what is still in it), the reset.
bool Conn::drainDown() {
  bool progress = false;
  if (downQueued_ > 0) {
    ssize_t n = splice(downPipe_[0], nullptr, plain_, nullptr, downQueued_, SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
    if (n > 0) {
      downQueued_ -= size_t(n);
      stats.bytes[int(role_)][1] += uint64_t(n);
      progress = true;
    } else if (n < 0 && !wouldBlock()) {
      fail(draining_);
      return false;
    }
  }
  if (downQueued_ == 0 && !down_.empty()) {
    ssize_t n = send(plain_, down_.readPtr(), down_.size(), MSG_NOSIGNAL);
    if (n > 0) {
      down_.consume(size_t(n));
      stats.bytes[int(role_)][1] += uint64_t(n);
      progress = true;
    } else if (n < 0 && !wouldBlock()) {
      fail(draining_);
      return false;
    }
  }
  int unsent = 0;
  if (downQueued_ == 0 && down_.empty() && (ioctl(plain_, SIOCOUTQ, &unsent) != 0 || unsent == 0)) {
    fail(draining_);
    return false;
  }
  return progress;
}

// Both directions between the plaintext socket and TLS, as far as they go now. Dedicated: the bytes as they are,
// the half-close as close_notify then FIN. Framed (a pooled stream): a DATA frame per read, the half-close as a
// FIN frame, and the end of both directions leaves the TLS connection for the next stream.
bool Conn::pump() {
  if (draining_ != ConnError::Count) return drainDown();
  if (ktls_) return splicePump();
  bool progress = false;
  // Plaintext → TLS. Framed: one frame per read, its header written in front of the bytes. Bytes read behind
  // what is still queued (a new stream's header, say) go out with it: one record and one segment, not two.
  const size_t frame = framed_ ? kFrameHeaderSize : 0;
  if (!plainEof_ && plainReadable_ && up_.space() > frame) {
    char* p = up_.writePtr();
    size_t want = up_.space() - frame;
    ssize_t n = read(plain_, p + frame, want);
    if (n > 0) {
      if (framed_) encodeFrameHeader(p, kFrameData, size_t(n));
      up_.produced(frame + size_t(n));
      stats.bytes[int(role_)][0] += uint64_t(n);
      // Short: the socket had no more (what arrives later comes with an event; an EOF already queued does not).
      if (size_t(n) < want && !plainHup_) plainReadable_ = false;
      // Framed, the peer's FIN already reported and nothing more to read: the FIN frame goes in the same record
      // as the last bytes (a request or reply and its close cost one record and one segment through the tunnel).
      char b;
      if (framed_ && size_t(n) < want && plainHup_ && recv(plain_, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0) plainEof_ = true;
      progress = true;
    } else if (n == 0) {
      plainEof_ = true;
      progress = true;
    } else if (wouldBlock()) {
      plainReadable_ = false;
    } else {
      fail(ConnError::Reset);
      return false;
    }
  }
  if (framed_ && plainEof_ && !finSent_ && (up_.empty() || up_.space() >= kFrameHeaderSize)) {
    encodeFrameHeader(up_.writePtr(), kFrameFin, 0);
    up_.produced(kFrameHeaderSize);
    finSent_ = true;
    progress = true;
  }
  if (!up_.empty() && !tlsShut_) {
    ERR_clear_error();
    int n = SSL_write(ssl_, up_.readPtr(), int(up_.size()));
    if (n > 0) {
      up_.consume(size_t(n));
      progress = true;
    } else {
      int e = SSL_get_error(ssl_, n);
      if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ) {
        ERR_clear_error();
        fail(ConnError::Reset);
        return false;
      }
    }
  }
  if (!framed_ && plainEof_ && up_.empty() && !tlsShut_) {
    // close_notify, then FIN; TLS 1.3 lets the peer keep sending after it (half-close).
    ERR_clear_error();
    int r = SSL_shutdown(ssl_);
    if (r >= 0) {
      shutdown(tls_, SHUT_WR);
      tlsShut_ = true;
      progress = true;
    } else {
      int e = SSL_get_error(ssl_, r);
      if (e != SSL_ERROR_WANT_WRITE && e != SSL_ERROR_WANT_READ) {
        ERR_clear_error();
        fail(ConnError::Reset);
        return false;
      }
    }
  }
  // TLS → plaintext.
  if (framed_ ? framedRead() : tlsRead()) progress = true;
  if (state_ == State::Closed) return false;
  if (!down_.empty() && !plainShut_) {
    ssize_t n = send(plain_, down_.readPtr(), down_.size(), MSG_NOSIGNAL);
    if (n > 0) {
      down_.consume(size_t(n));
      stats.bytes[int(role_)][1] += uint64_t(n);
      progress = true;
    } else if (n < 0 && !wouldBlock()) {
      fail(ConnError::Reset);
      return false;
    }
  }
  bool ended = halfCloseTail(framed_ ? finRecv_ : tlsEof_, framed_ ? finSent_ : tlsShut_);
  return state_ != State::Closed && (ended || progress);
}

// The end of every pump's pass (this one and the splice pump): the peer's direction over (`downEnded`: its end
// and every byte before it arrived) and delivered, so the plaintext socket's write side shuts; both directions
// over (`upEnded`: ours said so), so the connection (framed: the stream) ends. True when that made progress.
bool Conn::halfCloseTail(bool downEnded, bool upEnded) {
  bool progress = false;
  bool over = plainEof_ && upEnded && downEnded && up_.empty() && down_.empty();
  if (downEnded && down_.empty() && !plainShut_) {
    // When both directions end here, the close just below sends the FIN (the EOF was read: nothing is left
    // unread to turn it into a reset), so no shutdown of its own.
    if (!over) shutdown(plain_, SHUT_WR);
    plainShut_ = true;
    progress = true;
  }
  if (over) {
    if (framed_) return streamDone();
    finish(false);
  }
  return progress;
}

void Conn::fail(ConnError e) {
  stats.errors[int(role_)][int(e)]++;
  finish(true);
}

void Conn::failHandshake(HandshakeFailure f) {
  stats.handshakeFailures[int(role_)][int(f)]++;
  finish(true);
}

void Conn::finish(bool abort) {
  if (state_ == State::Closed) return;
  bool idle = state_ == State::Idle || (state_ == State::ReadHeader && idleWait_);
  if (state_ == State::Idle && pool_) pool_->remove(poolKey_, this);
  state_ = State::Closed;
  stats.active[int(role_)]--;
  if (ssl_) {
    // A pooled connection closed between streams says so (close_notify), so the peer sees a clean end.
    if (idle && !abort) {
      ERR_clear_error();
      SSL_shutdown(ssl_);
      ERR_clear_error();
    }
    // A clean end already sent close_notify; an abort sends nothing more over TLS.
    SSL_set_quiet_shutdown(ssl_, 1);
    SSL_free(ssl_);
    ssl_ = nullptr;
  }
  closePipes();
  if (!localTunnel_.empty()) {
    localTunnels::remove(localTunnel_);
    localTunnel_.clear();
  }
  for (int* fd : {&plain_, &tls_}) {
    if (*fd < 0) continue;
    if (abort) resetOnClose(*fd);
    close(*fd);  // leaves the epoll with it (no fd is duplicated), so no EPOLL_CTL_DEL first
    *fd = -1;
  }
}


// --- the pooled tunnel: framed streams, one at a time per TLS connection ---------------------------------------

Conn* Pool::take(const std::string& key) {
  auto it = idle.find(key);
  if (it == idle.end()) return nullptr;
  Conn* c = it->second;
  idle.erase(it);
  return c;
}

void Pool::remove(const std::string& key, Conn* c) {
  auto range = idle.equal_range(key);
  for (auto it = range.first; it != range.second; ++it) {
    if (it->second == c) {
      idle.erase(it);
      return;
    }
  }
}

// Takes over an idle pooled connection's TLS socket and session; the idle Conn ends without touching them.
void Conn::adopt(Conn* idle) {
  ssl_ = idle->ssl_;
  tls_ = idle->tls_;
  idle->ssl_ = nullptr;
  idle->tls_ = -1;
  localTunnel_ = std::move(idle->localTunnel_);  // the same socket, in the same worker
  idle->localTunnel_.clear();
  idle->state_ = State::Streaming;  // not Idle any more: finish() neither looks in the pool nor says goodbye
  check_.peerId = idle->check_.peerId;
  tlsHup_ = idle->tlsHup_;
  attachPeerCheck(ssl_, &check_);
  watchTlsReads();
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.u64 = tagEvent(tls_);
  epoll_ctl(epfd_, EPOLL_CTL_MOD, tls_, &ev);
  tlsReadable_ = true;
  idle->finish(false);
}

// After an SSL_read that returned n <= 0: true when it only has to wait; else the tunnel is gone (mid-stream,
// so the stream fails) and the connection is ended.
bool Conn::sslReadBlocked(int n) {
  int e = SSL_get_error(ssl_, n);
  if (e == SSL_ERROR_WANT_READ) tlsReadable_ = false;
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return true;
  ERR_clear_error();
  fail(ConnError::Reset);
  return false;
}

// TLS → down_, frame by frame: DATA payloads into down_, FIN sets finRecv_. Reads no further than the stream's
// FIN (what follows belongs to the next stream).
bool Conn::framedRead() {
  bool progress = false;
  while (!finRecv_ && tlsReadable()) {
    if (frameLeft_ == 0) {
      ERR_clear_error();
      int n = SSL_read(ssl_, fh_ + fhLen_, int(kFrameHeaderSize - fhLen_));
      if (n <= 0) return sslReadBlocked(n) && progress;
      progress = true;
      fhLen_ += size_t(n);
      if (fhLen_ < kFrameHeaderSize) continue;
      fhLen_ = 0;
      size_t len = size_t(fh_[1]) << 16 | size_t(fh_[2]) << 8 | size_t(fh_[3]);
      if (fh_[0] == kFrameFin && len == 0) {
        finRecv_ = true;
        break;
      }
      if (fh_[0] != kFrameData || len == 0) {
        fail(ConnError::BadHeader);
        return false;
      }
      frameLeft_ = len;
    }
    if (down_.space() == 0) break;
    ERR_clear_error();
    int n = SSL_read(ssl_, down_.writePtr(), int(std::min(down_.space(), frameLeft_)));
    if (n <= 0) return sslReadBlocked(n) && progress;
    down_.produced(size_t(n));
    frameLeft_ -= size_t(n);
    progress = true;
  }
  return progress;
}

// Both directions of the stream are done: the plaintext socket closes, the TLS connection waits for the next
// stream (outbound: idle in the worker's pool; inbound: for the next header).
bool Conn::streamDone() {
  close(plain_);  // leaves the epoll with it
  plain_ = -1;
  plainEof_ = plainShut_ = finSent_ = finRecv_ = false;
  frameLeft_ = fhLen_ = 0;
  deadline_ = Clock::now() + std::chrono::milliseconds(role_ == Role::Outbound ? config_->poolIdleMs : 6 * config_->poolIdleMs);
  if (role_ == Role::Outbound) {
    state_ = State::Idle;
    pool_->idle.emplace(poolKey_, this);
    return true;  // idleStep() sees whatever OpenSSL already holds
  }
  idleWait_ = true;
  state_ = State::ReadHeader;
  return true;
}

// An idle pooled connection: the server sends nothing between streams; anything (its close, an error) ends it.
bool Conn::idleStep() {
  char b;
  ERR_clear_error();
  int n = SSL_read(ssl_, &b, 1);
  if (n > 0) {
    fail(ConnError::BadHeader);
    return false;
  }
  int e = SSL_get_error(ssl_, n);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return false;
  ERR_clear_error();
  pool_->remove(poolKey_, this);
  state_ = State::Streaming;  // out of the pool; no goodbye on a connection the peer ended
  finish(e != SSL_ERROR_ZERO_RETURN);
  return false;
}

// A later stream of a pooled inbound connection: the destination must still be a workload of this node with the
// identity this connection presented, and is authorized by the policies in force now.
bool Conn::checkStreamAgainstCurrentConfig() {
  auto now = currentConfig();
  if (!now || now.get() == config_.get()) return true;
  const Workload* w = now->workloadByIp(dst_.ip());
  if (!w || w->spiffeId != check_.local->spiffeId) {
    fail(ConnError::DestinationMismatch);
    return false;
  }
  config_ = now;
  check_.config = config_.get();
  check_.local = w;
  return true;
}

}  // namespace mesh
