// OwnedFd: the one owner of a file descriptor in the addon. Closes it once (reset or destruction), moves and
// never copies, so an fd has exactly one owner at a time and an early throw cannot leak it.
#pragma once

#include <fcntl.h>
#include <unistd.h>

namespace mesh {

class OwnedFd {
 public:
  OwnedFd() = default;
  explicit OwnedFd(int fd) : fd_(fd) {}
  OwnedFd(OwnedFd&& o) noexcept : fd_(o.release()) {}
  OwnedFd& operator=(OwnedFd&& o) noexcept {
    if (this != &o) reset(o.release());
    return *this;
  }
  OwnedFd(const OwnedFd&) = delete;
  OwnedFd& operator=(const OwnedFd&) = delete;
  ~OwnedFd() { reset(); }

  // A duplicate above stdio, close-on-exec; invalid (errno set) when the fd table is full.
  static OwnedFd Dup(int fd) { return OwnedFd(fcntl(fd, F_DUPFD_CLOEXEC, 3)); }

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Gives the fd up without closing it.
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  // Closes the fd held (if any), then holds fd.
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

}  // namespace mesh
