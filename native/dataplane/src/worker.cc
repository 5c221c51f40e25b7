#include "worker.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <system_error>

namespace mesh {

namespace {
// Every worker, made by the main thread before any starts; read-only afterwards.
std::vector<Worker*> all;

// Epoll tags of the listeners in a worker's epoll: never a Conn's address (those are heap pointers), nor the
// eventfd's 0.
constexpr uint64_t kListenOutbound = 2;
constexpr uint64_t kListenTunnel = 4;
// Accepts per listener event, so that a burst is shared with the other workers (the listener stays readable).
constexpr int kAcceptBatch = 16;

std::mutex reserveMu;
int reserveFd = -1;  // /dev/null, held for the moment the process runs out of fds
}  // namespace

int acceptShedding(int lfd, Addr* peer) {
  Addr scratch;
  Addr& p = peer ? *peer : scratch;
  p.len = sizeof p.ss;
  int fd = accept4(lfd, reinterpret_cast<sockaddr*>(&p.ss), &p.len, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd >= 0 || (errno != EMFILE && errno != ENFILE)) return fd;
  std::lock_guard<std::mutex> lock(reserveMu);
  // Lost to a race below earlier: fds may have been freed since.
  if (reserveFd < 0) reserveFd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (reserveFd < 0) return kNoFd;
  close(reserveFd);
  // Another thread may take the fd just freed before this accept does (its accept or connect is not under the
  // lock): then this accept fails too, the re-open below as well, and the reserve is gone until fds free up.
  fd = accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
  int acceptErrno = errno;
  if (fd >= 0) {
    linger l{1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close(fd);
  }
  reserveFd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) return kShed;
  return acceptErrno == EMFILE || acceptErrno == ENFILE ? kNoFd : -1;
}

Listener::Listener(int epfd, int fd, uint64_t tag, uint32_t events) : epfd_(epfd), fd_(fd), tag_(tag), events_(events) {
  epoll_event ev{};
  ev.events = events_;
  ev.data.u64 = tag_;
  if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd_, &ev) != 0)
    throw std::system_error(errno, std::generic_category(), "epoll: listener");
}

void Listener::pause() {
  if (paused_ || fd_ < 0) return;
  // EPOLLEXCLUSIVE entries cannot be modified, only removed and added again.
  epoll_ctl(epfd_, EPOLL_CTL_DEL, fd_, nullptr);
  paused_ = true;
  due_ = std::chrono::steady_clock::now() + kBackoff;
  stats.acceptPauses++;
}

int Listener::timeoutMs(int otherwise) const {
  if (!paused_) return otherwise;
  auto left = std::chrono::ceil<std::chrono::milliseconds>(due_ - std::chrono::steady_clock::now()).count();
  int ms = left < 0 ? 0 : int(left);
  return otherwise < 0 || ms < otherwise ? ms : otherwise;
}

void Listener::resumeIfDue() {
  if (!paused_ || std::chrono::steady_clock::now() < due_) return;
  epoll_event ev{};
  ev.events = events_;
  ev.data.u64 = tag_;
  // Failing here would leave the listener out for good: try again after another back-off.
  if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd_, &ev) != 0) {
    due_ = std::chrono::steady_clock::now() + kBackoff;
    return;
  }
  paused_ = false;
}

Worker* Worker::byEpoll(int epfd) {
  for (Worker* w : all)
    if (w->epfd_ == epfd) return w;
  return nullptr;
}

Worker::Worker() {
  {
    std::lock_guard<std::mutex> lock(reserveMu);
    if (reserveFd < 0) reserveFd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  all.push_back(this);
  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  eventfd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (epfd_ < 0 || eventfd_ < 0) throw std::system_error(errno, std::generic_category(), "worker epoll/eventfd");
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.u64 = 0;  // 0 marks the eventfd; every other entry is a Conn (Conn::fromEvent)
  epoll_ctl(epfd_, EPOLL_CTL_ADD, eventfd_, &ev);
}

Worker::~Worker() {
  for (Conn* c : conns_) delete c;
}

void Worker::listen(int fd, Role role) {
  // Exclusive: a connection wakes one of the workers waiting, not all of them.
  (role == Role::Outbound ? outbound_ : tunnel_) =
      Listener(epfd_, fd, role == Role::Outbound ? kListenOutbound : kListenTunnel, EPOLLIN | EPOLLEXCLUSIVE);
}

void Worker::accepted(Listener& listener, Role role) {
  Addr peer;
  for (int i = 0; i < kAcceptBatch; i++) {
    int fd = acceptShedding(listener.fd(), &peer);
    if (fd == -1) return;
    if (fd == kNoFd) {
      listener.pause();
      return;
    }
    if (fd == kShed) {
      stats.errors[int(role)][int(ConnError::FdLimit)]++;
      continue;
    }
    auto config = currentConfig();
    if (role == Role::Outbound) {
      adopt(role, fd, std::move(config), false);
      continue;
    }
    // A tunnel from this process's own outbound side goes to the worker that holds its other end.
    Worker* owner = byEpoll(localTunnels::find(localTunnels::key(peer)));
    if (owner && owner != this) owner->post(role, fd, std::move(config));
    else adopt(role, fd, std::move(config), !owner);
  }
}

void Worker::start() { thread_ = std::thread([this] { run(); }); thread_.detach(); }

void Worker::post(Role role, int fd, std::shared_ptr<const Config> config, bool recheck) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back({role, fd, std::move(config), recheck});
  }
  uint64_t one = 1;
  (void)!write(eventfd_, &one, sizeof one);
}

void Worker::takePosted() {
  uint64_t n;
  (void)!read(eventfd_, &n, sizeof n);
  std::vector<Posted> q;
  {
    std::lock_guard<std::mutex> lock(mu_);
    q.swap(queue_);
  }
  for (auto& p : q) adopt(p.role, p.fd, std::move(p.config), p.recheck);
}

void Worker::adopt(Role role, int fd, std::shared_ptr<const Config> config, bool recheck) {
  bool movable = false;
  if (recheck) {
    // The tunnel's client end is noted right after its connect returns, before its ClientHello is written: once
    // a byte is here the note is too, if the tunnel is ours. Before, the connection waits for its first bytes
    // here and may move then (run()).
    char b;
    bool data = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
    Worker* owner = ownerOf(fd);
    if (owner && owner != this) {
      owner->post(role, fd, std::move(config));
      return;
    }
    movable = !owner && !data;
  }
  auto* c = new Conn(role, fd, std::move(config), epfd_, &pool_);
  if (movable) {
    // Not driven: OpenSSL must not read its first bytes here before run() has looked for the owner again.
    c->mayMove();
    conns_.insert(c);
    return;
  }
  c->drive();
  if (c->closed()) delete c;
  else conns_.insert(c);
}

Worker* Worker::ownerOf(int fd) {
  auto peer = peerOf(fd);
  return peer ? byEpoll(localTunnels::find(localTunnels::key(*peer))) : nullptr;
}

void Worker::sweep() {
  auto now = Conn::Clock::now();
  for (auto it = conns_.begin(); it != conns_.end();) {
    (*it)->checkDeadline(now);
    if ((*it)->closed()) {
      delete *it;
      it = conns_.erase(it);
    } else {
      ++it;
    }
  }
}

void Worker::run() {
  epoll_event events[128];
  auto nextSweep = Conn::Clock::now() + std::chrono::seconds(1);
  while (true) {
    int n = epoll_wait(epfd_, events, 128, outbound_.timeoutMs(tunnel_.timeoutMs(500)));
    for (int i = 0; i < n; i++) {
      uint64_t tag = events[i].data.u64;
      if (tag == kListenOutbound || tag == kListenTunnel) {
        accepted(tag == kListenOutbound ? outbound_ : tunnel_, tag == kListenOutbound ? Role::Outbound : Role::Inbound);
        continue;
      }
      auto* c = Conn::fromEvent(tag);
      if (!c) {
        takePosted();
        continue;
      }
      // A connection closed earlier in this batch was deleted below only after the batch.
      if (c->closed()) continue;
      if (c->movable()) {
        // Bytes first, then the owner: once the ClientHello is here the dialling side's note is too.
        char b;
        bool data = recv(c->tlsFd(), &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
        Worker* owner = ownerOf(c->tlsFd());
        if (owner && owner != this) {
          std::shared_ptr<const Config> config;
          int fd = c->detach(config);
          owner->post(Role::Inbound, fd, std::move(config));
          continue;  // closed: deleted after the batch
        }
        // Nothing to do before its first bytes (their arrival is an event of its own), unless the peer gave up.
        if (!owner && !data && !(events[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))) continue;
        c->settle();
      }
      c->onEvent(events[i].events, events[i].data.u64);
    }
    // Delete closed connections after the batch: a later event of the same batch may still point at one.
    for (int i = 0; i < n; i++) {
      uint64_t tag = events[i].data.u64;
      if (tag == kListenOutbound || tag == kListenTunnel) continue;
      auto* c = Conn::fromEvent(tag);
      if (c && conns_.count(c) && c->closed()) {
        conns_.erase(c);
        delete c;
      }
    }
    outbound_.resumeIfDue();
    tunnel_.resumeIfDue();
    auto now = Conn::Clock::now();
    if (now >= nextSweep) {
      sweep();
      nextSweep = now + std::chrono::seconds(1);
    }
  }
}

}  // namespace mesh
