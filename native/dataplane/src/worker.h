// A worker thread: one epoll, the connections it accepted or was handed, a sweep for setup deadlines. Every
// worker accepts from the outbound and tunnel listeners itself (each listener in every worker's epoll, one
// worker woken per connection), so a new connection wakes one thread; another worker hands it sockets through a
// locked queue and an eventfd (a tunnel whose other end it holds). After that a connection never changes thread.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "config.h"
#include "conn.h"

namespace mesh {

constexpr int kShed = -2;
constexpr int kNoFd = -3;
// accept4 (non-blocking, close-on-exec) of one pending connection on `lfd`, its peer in `*peer` if given; -1 when
// none is pending (or a transient error). Out of fds, the pending connection is accepted with a reserve fd and
// reset (kShed), so that a level-triggered listener does not keep its threads spinning. kNoFd: out of fds with no
// reserve to shed with (another thread took the fd the reserve freed); the connection stays pending and the caller
// sets the listener aside (Listener::pause). Thread-safe.
int acceptShedding(int lfd, Addr* peer);

// A listening socket in one thread's epoll set. Out of fds with nothing to shed with, it is taken out of the set
// for a back-off, since a level-triggered listener left in would wake its thread for ever, and put back when due.
class Listener {
 public:
  Listener() = default;
  // Adds `fd` to `epfd` with `events`, tagged `tag`; throws when epoll refuses.
  Listener(int epfd, int fd, uint64_t tag, uint32_t events);
  int fd() const { return fd_; }
  // Out of the epoll set for the back-off (counted in stats.acceptPauses).
  void pause();
  // epoll_wait's timeout: `otherwise` (-1: none), or less when a paused listener is due back sooner.
  int timeoutMs(int otherwise) const;
  // Back into the epoll set if paused and due.
  void resumeIfDue();

 private:
  static constexpr std::chrono::milliseconds kBackoff{50};
  int epfd_ = -1;
  int fd_ = -1;
  uint64_t tag_ = 0;
  uint32_t events_ = 0;
  bool paused_ = false;
  std::chrono::steady_clock::time_point due_{};
};

class Worker {
 public:
  Worker();
  ~Worker();
  // Before start(): accept connections of `role` from the listening socket `fd` (shared by every worker).
  void listen(int fd, Role role);
  void start();
  // Thread-safe: the worker takes ownership of `fd`. `recheck`: an accepted tunnel whose other end was not (yet)
  // known to be this process's; the worker looks again and passes it to the owner (localTunnels).
  void post(Role role, int fd, std::shared_ptr<const Config> config, bool recheck = false);
  // The worker whose epoll is `epfd` (localTunnels), or nullptr.
  static Worker* byEpoll(int epfd);

 private:
  void run();
  void takePosted();
  void accepted(Listener& listener, Role role);
  void adopt(Role role, int fd, std::shared_ptr<const Config> config, bool recheck);
  void sweep();
  // The worker that dialled the tunnel accepted as `fd` (localTunnels), or nullptr.
  static Worker* ownerOf(int fd);

  int epfd_;
  int eventfd_;
  Listener outbound_;
  Listener tunnel_;
  std::mutex mu_;
  struct Posted {
    Role role;
    int fd;
    std::shared_ptr<const Config> config;
    bool recheck;
  };
  std::vector<Posted> queue_;
  std::unordered_set<Conn*> conns_;
  Pool pool_;
  std::thread thread_;
};

}  // namespace mesh
