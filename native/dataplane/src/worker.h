// A worker thread: one epoll, the connections handed to it, a sweep for setup deadlines. The acceptor hands
// new sockets over through a locked queue and an eventfd; after that a connection never changes thread.
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
  void start();
  // Thread-safe: the worker takes ownership of `fd`. `recheck`: an accepted tunnel whose other end was not (yet)
  // known to be this process's; the worker looks again and passes it to the owner (localTunnels).
  void post(Role role, int fd, std::shared_ptr<const Config> config, bool recheck = false);
  // The worker whose epoll is `epfd` (localTunnels), or nullptr.
  static Worker* byEpoll(int epfd);

 private:
  void run();
  void takePosted();
  void sweep();
  // The worker that dialled the tunnel accepted as `fd` (localTunnels), or nullptr.
  static Worker* ownerOf(int fd);

  int epfd_;
  int eventfd_;
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
