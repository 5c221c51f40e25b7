// How the outbound side learns where an accepted application connection was headed.
//
// Today: the connecting client (standing in for the kernel redirect) sends a PROXY protocol v1 line first,
// "PROXY TCP4 <src ip> <dst ip> <src port> <dst port>\r\n" (TCP6 likewise), and the data plane strips it.
//
// Later (the connect4-capture issue): the cgroup/connect4 program records the original destination in a BPF map
// keyed by the socket's cookie or by its local address — which is the accepted socket's *peer* address here —
// and `lookup` below becomes a map lookup with that key. Its signature already carries what that needs: the
// accepted fd (for SO_COOKIE) and its peer address; `in` (bytes read so far) is what the preamble needs.
#pragma once
#include <cstddef>
#include <optional>
#include <string>

#include "addr.h"

namespace mesh {

enum class LookupResult { Found, NeedMore, Failed };

struct OriginalDst {
  // `in`/`inLen`: bytes received so far on the accepted connection. On Found, `dst` is set and `consumed` bytes
  // of `in` belong to the preamble (0 for a kernel-map lookup); everything after is application data.
  static LookupResult lookup(int fd, const Addr& peer, const char* in, size_t inLen, Addr& dst, size_t& consumed);
};

// Longest PROXY v1 line (the protocol's own bound, CRLF included).
constexpr size_t kPreambleMax = 107;

}  // namespace mesh
