// Small system facilities the binding needs: network namespace switching, cgroup and socket lookups.
#pragma once

#include <napi.h>

#include <string>

namespace mesh {

// Moves the calling thread into the network namespace at `path` (e.g. /run/netns/x) for its lifetime.
// Interface indexes and netlink sockets are per namespace, so tc attachment inside a namespace needs this.
class NetnsGuard {
 public:
  NetnsGuard(Napi::Env env, const std::string& path);  // empty path: no switch
  ~NetnsGuard();
  NetnsGuard(const NetnsGuard&) = delete;
  NetnsGuard& operator=(const NetnsGuard&) = delete;

 private:
  int orig_ = -1;
};

// Opens a cgroup v2 directory (O_RDONLY|O_DIRECTORY); throws BpfError naming the path.
int OpenCgroup(Napi::Env env, const std::string& path, const char* op);

Napi::Object InitSys(Napi::Env env, Napi::Object exports);

}  // namespace mesh
