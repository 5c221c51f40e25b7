// mesh-dataplane: the per-node mutual-TLS data plane. A fixed set of worker threads accept (outbound, tunnel),
// run the handshakes and pump bytes; the main thread serves the stats and handles SIGHUP/SIGTERM.
//
//   mesh-dataplane --config FILE [--check] [--listen-fd outbound|tunnel=FD]... [--nice N]
//
// A listener given by fd (inherited from the agent, as systemd's socket activation hands them) is used as it is
// and never closed: the agent keeps it open across this process's death, so connects made meanwhile wait in its
// queue for the next data plane instead of being refused.
//
// --nice N: every thread runs at nice N, and so does the autogroup of its session where the kernel schedules by
// autogroup (each session then weighs as much as one task: a data plane in a session of its own, as the agent
// starts it, would get 1/(busy sessions) of the CPUs, and every tunnelled connection of the node waits on it).
#include <pthread.h>
#include <sys/resource.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "config.h"
#include "ktls.h"
#include "stats.h"
#include "tls.h"
#include "worker.h"

using namespace mesh;

namespace {

int listenOn(const Addr& a, std::string& err) {
  int fd = socket(a.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 || bind(fd, a.sa(), a.len) != 0 ||
      listen(fd, 1024) != 0) {
    err = "cannot listen on " + a.str() + ": " + std::strerror(errno);
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

// Takes over an inherited listening socket after checking that it is one and is bound where the config says.
int adoptListener(int fd, const char* name, const std::optional<Addr>& want, std::string& err) {
  int v = 0;
  socklen_t vl = sizeof v;
  if (fcntl(fd, F_GETFD) < 0) {
    err = std::string("--listen-fd ") + name + "=" + std::to_string(fd) + ": not an open fd";
    return -1;
  }
  if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &vl) != 0 || !v) {
    err = std::string("--listen-fd ") + name + "=" + std::to_string(fd) + ": not a listening socket";
    return -1;
  }
  if (!want) {
    err = std::string("--listen-fd ") + name + "=" + std::to_string(fd) + ": the config has no \"" + name + "\" address";
    return -1;
  }
  auto bound = localOf(fd);
  if (!bound || bound->ip() != want->ip() || (want->port() != 0 && want->port() != bound->port())) {
    err = std::string("--listen-fd ") + name + "=" + std::to_string(fd) + ": bound to " + (bound ? bound->str() : "?") +
          ", the config says " + want->str();
    return -1;
  }
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  return fd;
}

// Whether a reloaded listen address names the socket already bound (port 0 matches the port the kernel chose).
bool sameListener(const std::optional<Addr>& want, int fd) {
  if (!want) return fd < 0;
  if (fd < 0) return false;
  auto bound = localOf(fd);
  return bound && bound->ip() == want->ip() && (want->port() == 0 || want->port() == bound->port());
}

// epoll tags for the main thread's fds.
enum Tag : uint64_t { kStatsListen = 1, kSignal, kStatsClient = 1000 };

// Every policy a connection can be refused by has its series from the moment its config is in force.
void addPolicySeries(const Config& config) {
  for (auto& w : config.workloads) {
    for (auto& p : w->policies.deny) stats.authzSeries(p.name, AuthzReason::DenyMatch);
    if (!w->policies.allow.empty()) stats.authzSeries(w->policies.allowLabel, AuthzReason::NoAllowMatch);
  }
}

// How the config's outbound connections go (after the kTLS probe, which an automatic choice follows); said on
// stdout when it changes.
void noteTunnel(const Config& config) {
  bool pooled = config.pooled();
  const char* choice = config.tunnelChoice();
  bool was = stats.tunnelPooled.exchange(pooled);
  const char* before = stats.tunnelChoice.exchange(choice);
  if (was != pooled || std::strcmp(before, choice) != 0)
    std::printf("mesh-dataplane: outbound tunnel %s (%s)\n", pooled ? "pooled" : "dedicated", choice);
}

}  // namespace

int main(int argc, char** argv) {
  std::string configPath;
  bool checkOnly = false;
  int givenOutbound = -1, givenTunnel = -1;
  std::optional<int> nice;
  const char* usage = "usage: mesh-dataplane --config FILE [--check] [--listen-fd outbound|tunnel=FD]... [--nice N]\n";
  for (int i = 1; i < argc; i++) {
    std::string arg = argv[i];
    if (arg == "--config" && i + 1 < argc) configPath = argv[++i];
    else if (arg == "--check") checkOnly = true;
    else if (arg == "--nice" && i + 1 < argc) {
      std::string v = argv[++i];
      char* end = nullptr;
      long n = std::strtol(v.c_str(), &end, 10);
      if (v.empty() || !end || *end || n < -20 || n > 19) {
        std::fprintf(stderr, "mesh-dataplane: --nice \"%s\": expected an integer from -20 to 19\n%s", v.c_str(), usage);
        return 2;
      }
      nice = int(n);
    }
    else if (arg == "--listen-fd" && i + 1 < argc) {
      std::string v = argv[++i];
      auto eq = v.find('=');
      std::string name = v.substr(0, eq == std::string::npos ? 0 : eq);
      char* end = nullptr;
      long fd = eq == std::string::npos ? -1 : std::strtol(v.c_str() + eq + 1, &end, 10);
      int* slot = name == "outbound" ? &givenOutbound : name == "tunnel" ? &givenTunnel : nullptr;
      if (!slot || fd < 0 || fd > 65535 || !end || *end || end == v.c_str() + eq + 1) {
        std::fprintf(stderr, "mesh-dataplane: --listen-fd \"%s\": expected outbound=FD or tunnel=FD\n%s", v.c_str(), usage);
        return 2;
      }
      *slot = int(fd);
    } else {
      std::fprintf(stderr, "mesh-dataplane: unknown argument \"%s\"\n%s", argv[i], usage);
      return 2;
    }
  }
  if (configPath.empty()) {
    std::fprintf(stderr, "%s", usage);
    return 2;
  }
  tlsInit();
  std::shared_ptr<const Config> config;
  try {
    config = loadConfig(configPath);
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "mesh-dataplane: config error: %s\n", e.what());
    return 1;
  }
  if (checkOnly) {
    std::printf("mesh-dataplane: config ok\n");
    return 0;
  }
  stats.generation = 1;
  setCurrentConfig(config);
  addPolicySeries(*config);
  {
    // Probed whatever the config says ("ktls" may change on reload); one line tells which path connections take.
    std::string why;
    bool ktls = ktlsProbe(why);
    stats.ktlsAvailable = ktls ? 1 : 0;
    if (!ktls) stats.ktlsReason = why;
    std::printf("mesh-dataplane: ktls %s%s\n", ktls ? "available" : "unavailable: ", why.c_str());
  }
  noteTunnel(*config);

  if (nice) {
    // Before the workers start: threads inherit the creating thread's nice value (setpriority sets one thread's).
    if (setpriority(PRIO_PROCESS, 0, *nice) != 0)
      std::printf("mesh-dataplane: cannot set nice %d: %s\n", *nice, std::strerror(errno));
    if (FILE* f = std::fopen("/proc/self/autogroup", "w")) {
      bool written = std::fprintf(f, "%d", *nice) >= 0;
      if (std::fclose(f) != 0 || !written)
        std::printf("mesh-dataplane: cannot set the autogroup's nice %d: %s\n", *nice, std::strerror(errno));
    }
  }

  // Writes to a reset peer report EPIPE instead of killing the process.
  signal(SIGPIPE, SIG_IGN);
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGHUP);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGINT);
  // Blocked before the workers start, so they inherit the mask and only the signalfd sees these.
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  int sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);

  std::string err;
  int outboundFd = -1, tunnelFd = -1, statsFd = -1;
  if (givenOutbound >= 0 ? (outboundFd = adoptListener(givenOutbound, "outbound", config->outbound, err)) < 0
                         : config->outbound && (outboundFd = listenOn(*config->outbound, err)) < 0) {
    std::fprintf(stderr, "mesh-dataplane: %s\n", err.c_str());
    return 1;
  }
  if (givenTunnel >= 0 ? (tunnelFd = adoptListener(givenTunnel, "tunnel", config->tunnel, err)) < 0
                       : config->tunnel && (tunnelFd = listenOn(*config->tunnel, err)) < 0) {
    std::fprintf(stderr, "mesh-dataplane: %s\n", err.c_str());
    return 1;
  }
  if (config->stats && (statsFd = listenOn(*config->stats, err)) < 0) {
    std::fprintf(stderr, "mesh-dataplane: %s\n", err.c_str());
    return 1;
  }

  // Each worker accepts from both listeners itself: a new connection wakes the thread that will carry it.
  std::vector<std::unique_ptr<Worker>> workers;
  for (int i = 0; i < config->workers; i++) {
    workers.push_back(std::make_unique<Worker>());
    if (outboundFd >= 0) workers.back()->listen(outboundFd, Role::Outbound);
    if (tunnelFd >= 0) workers.back()->listen(tunnelFd, Role::Inbound);
    workers.back()->start();
  }

  int ep = epoll_create1(EPOLL_CLOEXEC);
  auto watch = [ep](int fd, uint64_t tag) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = tag;
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  };
  Listener statsListener;
  if (statsFd >= 0) statsListener = Listener(ep, statsFd, kStatsListen, EPOLLIN);
  watch(sigfd, kSignal);

  auto bound = [](int fd) { return fd < 0 ? std::string("-") : localOf(fd)->str(); };
  std::string inherited = givenOutbound >= 0 && givenTunnel >= 0 ? "outbound,tunnel"
                          : givenOutbound >= 0                   ? "outbound"
                          : givenTunnel >= 0                     ? "tunnel"
                                                                 : "-";
  std::printf("mesh-dataplane: listening outbound=%s tunnel=%s stats=%s workers=%d inherited=%s\n",
              bound(outboundFd).c_str(), bound(tunnelFd).c_str(), bound(statsFd).c_str(), config->workers,
              inherited.c_str());
  std::fflush(stdout);

  epoll_event events[64];
  while (true) {
    int n = epoll_wait(ep, events, 64, statsListener.timeoutMs(-1));
    for (int i = 0; i < n; i++) {
      uint64_t tag = events[i].data.u64;
      if (tag == kStatsListen) {
        // One response per connection, then FIN; the client's close ends it (no read timeout to manage).
        for (int fd; (fd = acceptShedding(statsFd, nullptr)) != -1;) {
          if (fd == kNoFd) {
            statsListener.pause();
            break;
          }
          if (fd == kShed) continue;
          std::string body = stats.prometheus();
          std::string resp = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: " +
                             std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
          (void)!send(fd, resp.data(), resp.size(), MSG_NOSIGNAL);
          shutdown(fd, SHUT_WR);
          watch(fd, kStatsClient + uint64_t(fd));
        }
      } else if (tag >= kStatsClient) {
        int fd = int(tag - kStatsClient);
        char buf[4096];
        ssize_t r;
        while ((r = read(fd, buf, sizeof buf)) > 0) {
        }
        if (r == 0 || (r < 0 && errno != EAGAIN)) {
          epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr);
          close(fd);
        }
      } else if (tag == kSignal) {
        signalfd_siginfo si;
        while (read(sigfd, &si, sizeof si) == sizeof si) {
          if (si.ssi_signo != SIGHUP) {
            std::printf("mesh-dataplane: signal %u, exiting\n", si.ssi_signo);
            std::fflush(stdout);
            _exit(0);
          }
          try {
            auto fresh = loadConfig(configPath);
            if (!sameListener(fresh->outbound, outboundFd) || !sameListener(fresh->tunnel, tunnelFd) ||
                !sameListener(fresh->stats, statsFd) || fresh->workers != config->workers)
              throw ConfigError("config: listen addresses and workers cannot change on reload; restart instead");
            config = fresh;
            setCurrentConfig(config);
            addPolicySeries(*config);
            noteTunnel(*config);
            stats.reloadsOk++;
            stats.generation++;
            std::printf("mesh-dataplane: config generation %llu loaded\n", (unsigned long long)stats.generation.load());
          } catch (const ConfigError& e) {
            stats.reloadsFailed++;
            std::printf("mesh-dataplane: reload failed, keeping generation %llu: %s\n",
                        (unsigned long long)stats.generation.load(), e.what());
          }
          std::fflush(stdout);
        }
      }
    }
    statsListener.resumeIfDue();
  }
}
