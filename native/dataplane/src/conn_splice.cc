// The kTLS half of Conn: the hand-over after the handshake and the splice(2) pump. Bytes move socket → pipe →
// socket inside the kernel; only records splice cannot carry (alerts, post-handshake messages) are read here.
#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <mutex>
#include <set>
#include <string>

#include "conn.h"

namespace mesh {

namespace {

// What each pipe is asked to hold: 16 records, so one splice into the kTLS socket seals up to 16 full records
// and one splice to the application passes on every record read since (the default, 64 KiB, is 16 pages). The
// kernel may grant less (fs.pipe-max-size, pipe-user-pages-soft): pipeBytes_ is what it gave. The pump tracks
// what each pipe holds itself, since a full pipe and an empty socket both answer EAGAIN.
constexpr int kPipeBytesWanted = 256 * 1024;
constexpr unsigned kSpliceFlags = SPLICE_F_NONBLOCK | SPLICE_F_MOVE;
constexpr uint8_t kHandshakeKeyUpdate = 24;

bool wouldBlock() { return errno == EAGAIN || errno == EWOULDBLOCK; }

// Says once per reason why a connection kept (or lost) its record layer in user space on a kTLS kernel.
void noteDeclined(const std::string& why) {
  static std::mutex mu;
  static std::set<std::string> seen;
  std::lock_guard<std::mutex> lock(mu);
  if (!seen.insert(why).second) return;
  std::printf("mesh-dataplane: ktls hand-over refused: %s\n", why.c_str());
  std::fflush(stdout);
}

}  // namespace

void Conn::prepareKtls() {
  if (!config_->ktls || !ktlsAvailable()) return;
  wantKtls_ = true;
  // Without read-ahead OpenSSL reads exactly the records of the handshake, so nothing past it is left in user
  // space at the hand-over (ktlsInstall still checks).
  SSL_set_read_ahead(ssl_, 0);
  ktlsTrack(ssl_, &secrets_);
}

bool Conn::handOver() {
  if (!wantKtls_) {
    stats.recordLayer[int(role_)][0]++;
    return true;
  }
  std::string why = "the client's pooled tunnel frames its streams in user space";
  KtlsInstall r = check_.pooledPeer ? KtlsInstall::Declined : ktlsInstall(ssl_, tls_, role_ == Role::Outbound, secrets_, why);
  OPENSSL_cleanse(secrets_.client.data(), secrets_.client.size());
  OPENSSL_cleanse(secrets_.server.data(), secrets_.server.size());
  if (r != KtlsInstall::Installed) noteDeclined(why);
  if (r == KtlsInstall::Declined) {
    SSL_set_read_ahead(ssl_, 1);  // prepareKtls turned it off for the hand-over that did not happen
    stats.recordLayer[int(role_)][0]++;
    return true;
  }
  if (r == KtlsInstall::Broken || pipe2(upPipe_, O_NONBLOCK | O_CLOEXEC) != 0 ||
      pipe2(downPipe_, O_NONBLOCK | O_CLOEXEC) != 0) {
    fail(ConnError::Reset);
    return false;
  }
  long granted = kPipeBytesWanted;
  for (int fd : {upPipe_[1], downPipe_[1]}) {
    fcntl(fd, F_SETPIPE_SZ, kPipeBytesWanted);  // refused: the default size stays
    granted = std::min(granted, long(fcntl(fd, F_GETPIPE_SZ)));
  }
  pipeBytes_ = granted > 0 ? size_t(granted) : 4096;
  // What was known of the sockets' readability was about OpenSSL's reads: start over.
  plainReadable_ = tlsReadable_ = true;
  ktls_ = true;
  stats.recordLayer[int(role_)][1]++;
  return true;
}

void Conn::closePipes() {
  for (int* fd : {&upPipe_[0], &upPipe_[1], &downPipe_[0], &downPipe_[1]}) {
    if (*fd >= 0) close(*fd);
    *fd = -1;
  }
}

// One record (or part of a data record, at most `limit` bytes) from the kTLS socket into down_. Data: queued.
// close_notify: the peer's direction ended. Any other alert, a KeyUpdate, a record that fails authentication, an
// EOF without close_notify: what came before reaches the application, then a reset, so no byte the kernel could
// not vouch for does and a truncation never looks like an end.
bool Conn::ktlsRead(size_t limit) {
  size_t want = std::min(down_.space(), limit);
  uint8_t type;
  ssize_t n = ktlsRecv(tls_, down_.writePtr(), want, type);
  if (n < 0 && wouldBlock()) return false;
  if (n <= 0) {
    failAfterDelivery(ConnError::Reset);
    return true;
  }
  const auto* p = reinterpret_cast<const uint8_t*>(down_.writePtr());
  switch (type) {
    case kRecordData:
      down_.produced(size_t(n));
      if (state_ == State::Streaming) stats.userBytes[int(role_)] += uint64_t(n);
      return true;
    case kRecordAlert:
      if (n >= 2 && p[1] == 0) {  // close_notify
        tlsEof_ = true;
        return true;
      }
      failAfterDelivery(ConnError::PeerAlert);
      return true;
    case kRecordHandshake:
      // The records after a KeyUpdate use keys the kernel cannot install before 6.14.
      failAfterDelivery(p[0] == kHandshakeKeyUpdate ? ConnError::KeyUpdate : ConnError::Reset);
      return true;
    default:
      failAfterDelivery(ConnError::Reset);
      return true;
  }
}

// Counts the records `bytes` sealed at most (one per 16 KiB, none spans two writes); false past the limit.
bool Conn::sealed(size_t bytes) {
  txRecords_ += (bytes + 16383) / 16384;
  if (txRecords_ < ktlsRecordLimit()) return true;
  fail(ConnError::RecordLimit);
  return false;
}

bool Conn::splicePump() {
  bool progress = false;
  // Plaintext → kTLS. up_ holds what came before the hand-over (the outbound header and early bytes): first.
  if (!up_.empty() && !tlsShut_) {
    ssize_t n = send(tls_, up_.readPtr(), up_.size(), MSG_NOSIGNAL);
    if (n > 0) {
      up_.consume(size_t(n));
      if (!sealed(size_t(n))) return false;
      progress = true;
    } else if (n < 0 && !wouldBlock()) {
      fail(ConnError::Reset);
      return false;
    }
  }
  if (up_.empty()) {
    if (!plainEof_ && plainReadable_ && upQueued_ < pipeBytes_) {
      ssize_t n = splice(plain_, nullptr, upPipe_[1], nullptr, pipeBytes_ - upQueued_, kSpliceFlags);
      if (n > 0) {
        upQueued_ += size_t(n);
        stats.bytes[int(role_)][0] += uint64_t(n);
        progress = true;
      } else if (n == 0) {
        plainEof_ = true;
        progress = true;
      } else if (wouldBlock()) {
        // Into an empty pipe EAGAIN means an empty socket: skip it until epoll says readable (a pipe short of
        // slots answers EAGAIN too, so only then).
        if (upQueued_ == 0) plainReadable_ = false;
      } else {
        fail(ConnError::Reset);
        return false;
      }
    }
    if (upQueued_ > 0 && !tlsShut_) {
      ssize_t n = splice(upPipe_[0], nullptr, tls_, nullptr, upQueued_, kSpliceFlags);
      if (n > 0) {
        upQueued_ -= size_t(n);
        if (!sealed(size_t(n))) return false;
        progress = true;
      } else if (n < 0 && !wouldBlock()) {
        fail(ConnError::Reset);
        return false;
      }
    }
  }
  if (plainEof_ && up_.empty() && upQueued_ == 0 && !tlsShut_) {
    // close_notify, then FIN; the other direction keeps flowing.
    if (ktlsSendCloseNotify(tls_) == 0) {
      shutdown(tls_, SHUT_WR);
      tlsShut_ = true;
      progress = true;
    } else if (!wouldBlock()) {
      fail(ConnError::Reset);
      return false;
    }
  }

  // kTLS → plaintext. Oldest first: the pipe, then down_ (filled only when splice met a record it cannot carry).
  if (downQueued_ > 0 && !plainShut_) {
    ssize_t n = splice(downPipe_[0], nullptr, plain_, nullptr, downQueued_, kSpliceFlags);
    if (n > 0) {
      downQueued_ -= size_t(n);
      stats.bytes[int(role_)][1] += uint64_t(n);
      progress = true;
    } else if (n < 0 && !wouldBlock()) {
      fail(ConnError::Reset);
      return false;
    }
  }
  if (downQueued_ == 0 && !down_.empty() && !plainShut_) {
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
  // A splice from a kTLS socket carries one record (tls_sw_splice_read): take every record ready while the pipe
  // has room, so that one splice to the application passes them all on.
  while (down_.empty() && !tlsEof_ && tlsReadable_ && downQueued_ < pipeBytes_) {
    ssize_t n = splice(tls_, nullptr, downPipe_[1], nullptr, pipeBytes_ - downQueued_, kSpliceFlags);
    if (n > 0) {
      downQueued_ += size_t(n);
      progress = true;
    } else if (n == 0) {
      failAfterDelivery(ConnError::Reset);  // FIN without close_notify: a truncation must not look like an end
      return true;
    } else if (errno == EINVAL || errno == EIO) {
      // The next record is not application data (splice carries data records only).
      if (ktlsRead(SIZE_MAX)) progress = true;
      if (state_ == State::Closed || draining_ != ConnError::Count) return state_ != State::Closed;
      break;
    } else if (wouldBlock()) {
      // As above: only EAGAIN into an empty pipe says that no record is ready.
      if (downQueued_ == 0) tlsReadable_ = false;
      break;
    } else {
      failAfterDelivery(ConnError::Reset);  // e.g. EBADMSG: a record that fails authentication
      return true;
    }
  }
  bool ended = halfCloseTail(tlsEof_ && downQueued_ == 0, tlsShut_ && upQueued_ == 0);
  return state_ != State::Closed && (ended || progress);
}

}  // namespace mesh
