#include "worker.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <system_error>

namespace mesh {

namespace {
// Every worker, made by the main thread before any starts; read-only afterwards.
std::vector<Worker*> all;
}  // namespace

Worker* Worker::byEpoll(int epfd) {
  for (Worker* w : all)
    if (w->epfd_ == epfd) return w;
  return nullptr;
}

Worker::Worker() {
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
  for (auto& p : q) {
    bool movable = false;
    if (p.recheck) {
      // The tunnel's client end is noted right after its connect returns, before its ClientHello is written: once
      // a byte is here the note is too, if the tunnel is ours. Before, the connection waits for its first bytes
      // here and may move then (run()).
      char b;
      bool data = recv(p.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
      Worker* owner = ownerOf(p.fd);
      if (owner && owner != this) {
        owner->post(p.role, p.fd, std::move(p.config));
        continue;
      }
      movable = !owner && !data;
    }
    auto* c = new Conn(p.role, p.fd, std::move(p.config), epfd_, &pool_);
    if (movable) {
      // Not driven: OpenSSL must not read its first bytes here before run() has looked for the owner again.
      c->mayMove();
      conns_.insert(c);
      continue;
    }
    c->drive();
    if (c->closed()) delete c;
    else conns_.insert(c);
  }
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
    int n = epoll_wait(epfd_, events, 128, 500);
    for (int i = 0; i < n; i++) {
      auto* c = Conn::fromEvent(events[i].data.u64);
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
      auto* c = Conn::fromEvent(events[i].data.u64);
      if (c && conns_.count(c) && c->closed()) {
        conns_.erase(c);
        delete c;
      }
    }
    auto now = Conn::Clock::now();
    if (now >= nextSweep) {
      sweep();
      nextSweep = now + std::chrono::seconds(1);
    }
  }
}

}  // namespace mesh
