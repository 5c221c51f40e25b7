// A worker thread: one epoll, the connections it accepted or was handed, a sweep for setup deadlines. Every
// worker accepts from the outbound and tunnel listeners itself (each listener in every worker's epoll, one
// worker woken per connection), so a new connection wakes one thread; another worker hands it sockets through a
// locked queue and an eventfd (a tunnel whose other end it holds). After that a connection never changes thread.
#pragma once
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "config.h"
#include "conn.h"

namespace mesh {

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
  void accepted(int lfd, Role role);
  void adopt(Role role, int fd, std::shared_ptr<const Config> config, bool recheck);
  void sweep();
  // The worker that dialled the tunnel accepted as `fd` (localTunnels), or nullptr.
  static Worker* ownerOf(int fd);

  int epfd_;
  int eventfd_;
  int listenOutbound_ = -1;
  int listenTunnel_ = -1;
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

constexpr int kShed = -2;
// accept4 (non-blocking, close-on-exec) of one pending connection on `lfd`, its peer in `*peer` if given; -1 when
// none is pending (or a transient error). Out of fds, the pending connection is accepted with a reserve fd and
// reset (kShed), so that a level-triggered listener does not keep its threads spinning. Thread-safe.
int acceptShedding(int lfd, Addr* peer);

}  // namespace mesh
