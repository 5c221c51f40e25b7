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
  // Thread-safe: the worker takes ownership of `fd`.
  void post(Role role, int fd, std::shared_ptr<const Config> config);

 private:
  void run();
  void takePosted();
  void sweep();

  int epfd_;
  int eventfd_;
  std::mutex mu_;
  struct Posted {
    Role role;
    int fd;
    std::shared_ptr<const Config> config;
  };
  std::vector<Posted> queue_;
  std::unordered_set<Conn*> conns_;
  Pool pool_;
  std::thread thread_;
};

}  // namespace mesh
