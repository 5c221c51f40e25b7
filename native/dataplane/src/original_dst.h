// How the outbound side learns where an accepted application connection was headed.
//
// With a map configured ("originalDst": {"map": PATH}): the kernel's capture programs (bpf/mtls/mtls.bpf.c)
// recorded the original destination in a pinned BPF map keyed by the client's local address, which is the
// accepted socket's *peer* address here; `lookup` reads it with bpf(2) (BPF_OBJ_GET, BPF_MAP_LOOKUP_ELEM), and
// no byte of the stream is consumed.
//
// Without one: the connecting client (standing in for the kernel redirect) sends a PROXY protocol v1 line first,
// "PROXY TCP4 <src ip> <dst ip> <src port> <dst port>\r\n" (TCP6 likewise), and the data plane strips it.
#pragma once
#include <cstddef>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "addr.h"

namespace mesh {

enum class LookupResult { Found, NeedMore, Failed };

// The pinned map mtls_orig: struct mtls_addr (20 bytes) → struct mtls_orig (40 bytes), bpf/include/mtls.h.
class OrigDstMap {
 public:
  // Opens and checks the pinned map; throws std::runtime_error naming the path and what is wrong.
  static std::shared_ptr<const OrigDstMap> open(const std::string& path);
  ~OrigDstMap();
  OrigDstMap(const OrigDstMap&) = delete;
  OrigDstMap& operator=(const OrigDstMap&) = delete;

  // The destination recorded for a client whose local address is `peer`, if any.
  std::optional<Addr> find(const Addr& peer) const;
  const std::string& path() const { return path_; }

 private:
  OrigDstMap(int fd, std::string path) : fd_(fd), path_(std::move(path)) {}
  int fd_;
  std::string path_;
};

struct OriginalDst {
  // The map lookups use from now on; nullptr: the PROXY v1 preamble. Set when a config is loaded.
  static void useMap(std::shared_ptr<const OrigDstMap> map);

  // `in`/`inLen`: bytes received so far on the accepted connection. On Found, `dst` is set and `consumed` bytes
  // of `in` belong to the preamble (0 for a kernel-map lookup); everything after is application data.
  static LookupResult lookup(int fd, const Addr& peer, const char* in, size_t inLen, Addr& dst, size_t& consumed);
};

// Longest PROXY v1 line (the protocol's own bound, CRLF included).
constexpr size_t kPreambleMax = 107;

}  // namespace mesh
