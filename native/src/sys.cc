#include "sys.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <net/if.h>
#include <sched.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "errors.h"

#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

namespace mesh {

NetnsGuard::NetnsGuard(Napi::Env env, const std::string& path) {
  if (path.empty()) return;
  int target = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (target < 0) ThrowBpf(env, "netns_enter", path, errno);
  orig_ = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (orig_ < 0 || setns(target, CLONE_NEWNET)) {
    int err = errno;
    close(target);
    if (orig_ >= 0) close(orig_);
    orig_ = -1;
    ThrowBpf(env, "netns_enter", path, err);
  }
  close(target);
}

NetnsGuard::~NetnsGuard() {
  if (orig_ < 0) return;
  // Failing to return would leave the JS thread in another namespace: nothing sane can continue.
  if (setns(orig_, CLONE_NEWNET)) abort();
  close(orig_);
}

int OpenCgroup(Napi::Env env, const std::string& path, const char* op) {
  int fd = open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) ThrowBpf(env, op, "cgroup " + path, errno);
  struct statfs st;
  if (fstatfs(fd, &st) == 0 && st.f_type != CGROUP2_SUPER_MAGIC) {
    close(fd);
    ThrowBpf(env, op, path + " is not a cgroup v2 directory", ENOTDIR);
  }
  return fd;
}

static Napi::Value NumPossibleCpus(const Napi::CallbackInfo& info) {
  int n = libbpf_num_possible_cpus();
  if (n < 0) ThrowBpf(info.Env(), "num_possible_cpus", "/sys/devices/system/cpu/possible", -n);
  return Napi::Number::New(info.Env(), n);
}

// socketCookie(fd) → bigint, the cookie BPF programs see for that socket (bpf_get_socket_cookie).
static Napi::Value SocketCookie(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t fd = ArgU32(info, 0, "fd");
  uint64_t cookie = 0;
  socklen_t len = sizeof cookie;
  if (getsockopt((int)fd, SOL_SOCKET, SO_COOKIE, &cookie, &len)) ThrowBpf(env, "socket_cookie", "fd " + std::to_string(fd), errno);
  return Napi::BigInt::New(env, cookie);
}

// ifNameToIndex(name, netns?) → ifindex
static Napi::Value IfNameToIndex(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = ArgString(info, 0, "interface");
  std::string netns = info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
  unsigned idx;
  {
    NetnsGuard ns(env, netns);
    idx = if_nametoindex(name.c_str());
  }
  if (!idx) ThrowBpf(env, "if_nametoindex", name + (netns.empty() ? "" : " in " + netns), errno ? errno : ENODEV);
  return Napi::Number::New(env, idx);
}

// cgroupId(path) → bigint, the id BPF programs see (bpf_get_current_cgroup_id, bpf_skb_cgroup_id).
static Napi::Value CgroupId(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "cgroup");
  struct {
    struct file_handle fh;
    uint64_t id;
  } h;
  h.fh.handle_bytes = sizeof(uint64_t);
  int mount_id;
  if (name_to_handle_at(AT_FDCWD, path.c_str(), &h.fh, &mount_id, 0)) ThrowBpf(env, "cgroup_id", path, errno);
  uint64_t id;
  memcpy(&id, h.fh.f_handle, sizeof id);
  return Napi::BigInt::New(env, id);
}

// dirInodes(dir) → [name, inode][] of the subdirectories of `dir`, from getdents (d_ino) alone: on cgroupfs an
// entry's d_ino is its kernfs id, which is the cgroup id, read without the path lookup and inode a stat() of each
// child would make (20,000 workload cgroups: ~30 ms instead of ~0.5-2 s).
static Napi::Value DirInodes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "dir");
  DIR* d = opendir(path.c_str());
  if (!d) ThrowBpf(env, "opendir", path, errno);
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  errno = 0;
  while (struct dirent* e = readdir(d)) {
    if (e->d_type != DT_DIR || strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    Napi::Array pair = Napi::Array::New(env, 2);
    pair.Set(0u, Napi::String::New(env, e->d_name));
    pair.Set(1u, Napi::BigInt::New(env, (uint64_t)e->d_ino));
    out.Set(n++, pair);
  }
  int err = errno;
  closedir(d);
  if (err) ThrowBpf(env, "readdir", path, err);
  return out;
}

// enableStats() → fd; run counts and run time are collected while any such fd is open.
static Napi::Value EnableStats(const Napi::CallbackInfo& info) {
  int fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
  if (fd < 0) ThrowBpf(info.Env(), "enable_stats", "run_time", errno);
  return Napi::Number::New(info.Env(), fd);
}

static Napi::Value CloseFd(const Napi::CallbackInfo& info) {
  close((int)ArgU32(info, 0, "fd"));
  return info.Env().Undefined();
}

static Napi::Value IsBpffs(const Napi::CallbackInfo& info) {
  std::string path = ArgString(info, 0, "path");
  struct statfs st;
  if (statfs(path.c_str(), &st)) return Napi::Boolean::New(info.Env(), false);
  return Napi::Boolean::New(info.Env(), st.f_type == BPF_FS_MAGIC);
}

static Napi::Value MountBpffs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "path");
  mkdir(path.c_str(), 0700);
  if (mount("bpf", path.c_str(), "bpf", 0, "mode=0700")) ThrowBpf(env, "mount_bpffs", path, errno);
  return env.Undefined();
}

// tryLockExclusive(fd) → true when flock(LOCK_EX) was taken, false when another open file holds it.
static Napi::Value TryLockExclusive(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = (int)ArgU32(info, 0, "fd");
  if (flock(fd, LOCK_EX | LOCK_NB) == 0) return Napi::Boolean::New(env, true);
  if (errno == EWOULDBLOCK) return Napi::Boolean::New(env, false);
  ThrowBpf(env, "flock", "fd " + std::to_string(fd), errno);
}

// listenTcp(ip, port, backlog) → fd of a listening TCP socket (SO_REUSEADDR), for a child process to accept on
// while the caller keeps it open: connects queue in the kernel while no child runs.
static Napi::Value ListenTcp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string ip = ArgString(info, 0, "ip");
  uint32_t port = ArgU32(info, 1, "port");
  uint32_t backlog = ArgU32(info, 2, "backlog");
  sockaddr_storage ss{};
  socklen_t len;
  if (auto* a4 = reinterpret_cast<sockaddr_in*>(&ss); inet_pton(AF_INET, ip.c_str(), &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons(port);
    len = sizeof *a4;
  } else if (auto* a6 = reinterpret_cast<sockaddr_in6*>(&ss); inet_pton(AF_INET6, ip.c_str(), &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(port);
    len = sizeof *a6;
  } else {
    ThrowBpf(env, "listen", ip + " is not an IP address", EINVAL);
  }
  std::string subject = (ss.ss_family == AF_INET6 ? "[" + ip + "]" : ip) + ":" + std::to_string(port);
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) || bind(fd, (sockaddr*)&ss, len) ||
      listen(fd, (int)backlog)) {
    int err = errno;
    if (fd >= 0) close(fd);
    ThrowBpf(env, "listen", subject, err);
  }
  return Napi::Number::New(env, fd);
}

// socketListening(fd) → { address, port } of a listening TCP socket, or null when fd is anything else.
static Napi::Value SocketListening(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = (int)ArgU32(info, 0, "fd");
  int v = 0;
  socklen_t vl = sizeof v;
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &vl) || !v) return env.Null();
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &vl) || v != SOCK_STREAM) return env.Null();
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getsockname(fd, (sockaddr*)&ss, &len)) return env.Null();
  char buf[INET6_ADDRSTRLEN] = "";
  int port;
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
    port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
    port = ntohs(a->sin6_port);
  } else {
    return env.Null();
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("address", buf);
  o.Set("port", port);
  return o;
}

// pidfdGetfd(pid, fd) → a duplicate, in this process, of another process's fd (pidfd_open + pidfd_getfd; needs
// ptrace rights over it, as root has).
static Napi::Value PidfdGetfd(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t pid = ArgU32(info, 0, "pid");
  uint32_t target = ArgU32(info, 1, "fd");
  std::string subject = "fd " + std::to_string(target) + " of pid " + std::to_string(pid);
  int pidfd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
  if (pidfd < 0) ThrowBpf(env, "pidfd_open", subject, errno);
  int fd = (int)syscall(SYS_pidfd_getfd, pidfd, (int)target, 0);  // the new fd is close-on-exec
  int err = errno;
  close(pidfd);
  if (fd < 0) ThrowBpf(env, "pidfd_getfd", subject, err);
  return Napi::Number::New(env, fd);
}

// makeDirs(paths) → Promise<string[]>: makes each directory with its missing parents (mkdir -p), one after the
// other on one thread of the pool; resolves with the directories it made, parents before children. The kernel
// makes cgroups one at a time (~0.1 ms each): 20,000 workload cgroups cost the event loop this one call, where a
// promise per mkdir cost it ~25 µs each (~0.5 s). The first failure rejects (BpfError, op "mkdir", the path asked
// for).
class MakeDirsWorker : public Napi::AsyncWorker {
 public:
  MakeDirsWorker(Napi::Env env, std::vector<std::string> paths)
      : Napi::AsyncWorker(env, "mesh:makeDirs"), paths_(std::move(paths)), deferred_(Napi::Promise::Deferred::New(env)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override {
    for (const std::string& p : paths_)
      if (!Make(p)) return;
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (err_) return deferred_.Reject(BpfError(env, "mkdir", failed_, err_).Value());
    Napi::Array out = Napi::Array::New(env, made_.size());
    for (uint32_t i = 0; i < made_.size(); i++) out.Set(i, Napi::String::New(env, made_[i]));
    deferred_.Resolve(out);
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  static bool IsDir(const std::string& path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  }

  // mkdir -p of one path; false, with the failure recorded, when a directory cannot be made.
  bool Make(const std::string& path) {
    std::vector<std::string> missing;  // deepest first
    std::string cur = path;
    for (;;) {
      if (mkdir(cur.c_str(), 0777) == 0) {
        made_.push_back(cur);
        break;
      }
      int e = errno;
      if (e == EEXIST) {
        if (IsDir(cur)) break;
        return Fail(path, cur == path ? EEXIST : ENOTDIR);
      }
      size_t slash = cur.find_last_of('/');
      if (e != ENOENT || slash == std::string::npos || slash == 0) return Fail(path, e);
      missing.push_back(cur);
      cur.resize(slash);
    }
    for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
      if (mkdir(it->c_str(), 0777) == 0) made_.push_back(*it);
      else if (errno != EEXIST || !IsDir(*it)) return Fail(path, errno);
    }
    return true;
  }

  // Names the path asked for (as mkdir -p does), whichever of its parents failed.
  bool Fail(const std::string& path, int err) {
    failed_ = path;
    err_ = err;
    return false;
  }

  std::vector<std::string> paths_;
  std::vector<std::string> made_;
  Napi::Promise::Deferred deferred_;
  std::string failed_;
  int err_ = 0;
};

static Napi::Value MakeDirs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) throw Napi::TypeError::New(env, "paths must be an array of strings");
  Napi::Array arr = info[0].As<Napi::Array>();
  std::vector<std::string> paths;
  paths.reserve(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsString()) throw Napi::TypeError::New(env, "paths must be an array of strings");
    paths.push_back(v.As<Napi::String>().Utf8Value());
  }
  auto* w = new MakeDirsWorker(env, std::move(paths));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// A grace period for BPF programs: returns once every program run that began before the call has ended. The
// kernel waits for running programs (synchronize_rcu; cgroup, tc and socket programs run inside
// rcu_read_lock) after every update of a map-in-map element, so that user space knows the old inner map is out
// of use (kernel/bpf/syscall.c, maybe_wait_bpf_programs: on every update since 4.17, on every successful one
// since 6.8). A one-element ARRAY_OF_MAPS is made, updated once and closed: nothing is kept between calls.
// 0, or the errno of the step that failed (its name in *op).
static int WaitForPrograms(const char** op) {
  LIBBPF_OPTS(bpf_map_create_opts, opts);
  int inner = bpf_map_create(BPF_MAP_TYPE_ARRAY, "mesh_grace_in", 4, 4, 1, nullptr);
  if (inner < 0) {
    *op = "map_create";
    return errno;
  }
  opts.inner_map_fd = inner;
  int outer = bpf_map_create(BPF_MAP_TYPE_ARRAY_OF_MAPS, "mesh_grace", 4, 4, 1, &opts);
  int err = 0;
  if (outer < 0) {
    *op = "map_create";
    err = errno;
  } else {
    uint32_t key = 0;
    uint32_t value = (uint32_t)inner;
    if (bpf_map_update_elem(outer, &key, &value, BPF_ANY)) {
      *op = "map_update";
      err = errno;
    }
    close(outer);
  }
  close(inner);
  return err;
}

// waitForPrograms() → Promise<void>: the grace period above, waited for on a thread of the pool (a few ms, more
// under load), so the event loop runs meanwhile.
class WaitForProgramsWorker : public Napi::AsyncWorker {
 public:
  explicit WaitForProgramsWorker(Napi::Env env)
      : Napi::AsyncWorker(env, "mesh:waitForPrograms"), deferred_(Napi::Promise::Deferred::New(env)) {}

  Napi::Promise Promise() { return deferred_.Promise(); }

  void Execute() override { err_ = mesh::WaitForPrograms(&op_); }

  void OnOK() override {
    Napi::Env env = Env();
    if (err_) return deferred_.Reject(BpfError(env, op_, "mesh_grace", err_).Value());
    deferred_.Resolve(env.Undefined());
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  const char* op_ = "";
  int err_ = 0;
};

static Napi::Value WaitForProgramsAsync(const Napi::CallbackInfo& info) {
  auto* w = new WaitForProgramsWorker(info.Env());
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// waitForProgramsSync(): the same, blocking the calling thread.
static Napi::Value WaitForProgramsSync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* op = "";
  int err = WaitForPrograms(&op);
  if (err) ThrowBpf(env, op, "mesh_grace", err);
  return env.Undefined();
}

Napi::Object InitSys(Napi::Env env, Napi::Object exports) {
  exports.Set("numPossibleCpus", Napi::Function::New<NumPossibleCpus>(env, "numPossibleCpus"));
  exports.Set("socketCookie", Napi::Function::New<SocketCookie>(env, "socketCookie"));
  exports.Set("ifNameToIndex", Napi::Function::New<IfNameToIndex>(env, "ifNameToIndex"));
  exports.Set("cgroupId", Napi::Function::New<CgroupId>(env, "cgroupId"));
  exports.Set("dirInodes", Napi::Function::New<DirInodes>(env, "dirInodes"));
  exports.Set("makeDirs", Napi::Function::New<MakeDirs>(env, "makeDirs"));
  exports.Set("enableStats", Napi::Function::New<EnableStats>(env, "enableStats"));
  exports.Set("closeFd", Napi::Function::New<CloseFd>(env, "closeFd"));
  exports.Set("isBpffs", Napi::Function::New<IsBpffs>(env, "isBpffs"));
  exports.Set("mountBpffs", Napi::Function::New<MountBpffs>(env, "mountBpffs"));
  exports.Set("listenTcp", Napi::Function::New<ListenTcp>(env, "listenTcp"));
  exports.Set("socketListening", Napi::Function::New<SocketListening>(env, "socketListening"));
  exports.Set("pidfdGetfd", Napi::Function::New<PidfdGetfd>(env, "pidfdGetfd"));
  exports.Set("tryLockExclusive", Napi::Function::New<TryLockExclusive>(env, "tryLockExclusive"));
  exports.Set("waitForPrograms", Napi::Function::New<WaitForProgramsAsync>(env, "waitForPrograms"));
  exports.Set("waitForProgramsSync", Napi::Function::New<WaitForProgramsSync>(env, "waitForProgramsSync"));
  return exports;
}

}  // namespace mesh
