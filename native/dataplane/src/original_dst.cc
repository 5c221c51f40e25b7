#include "original_dst.h"

#include <cstring>
#include <sstream>

namespace mesh {

LookupResult OriginalDst::lookup(int, const Addr&, const char* in, size_t inLen, Addr& dst, size_t& consumed) {
  const char* end = static_cast<const char*>(std::memchr(in, '\n', inLen < kPreambleMax ? inLen : kPreambleMax));
  if (!end) return inLen >= kPreambleMax ? LookupResult::Failed : LookupResult::NeedMore;
  if (end == in || end[-1] != '\r') return LookupResult::Failed;
  std::string line(in, end - 1);
  std::istringstream words(line);
  std::string proxy, proto, srcIp, dstIp, srcPort, dstPort, extra;
  if (!(words >> proxy >> proto >> srcIp >> dstIp >> srcPort >> dstPort) || (words >> extra)) return LookupResult::Failed;
  if (proxy != "PROXY" || (proto != "TCP4" && proto != "TCP6")) return LookupResult::Failed;
  if (dstPort.empty() || dstPort.size() > 5 || dstPort.find_first_not_of("0123456789") != std::string::npos)
    return LookupResult::Failed;
  unsigned long port = std::stoul(dstPort);
  if (port == 0 || port > 65535) return LookupResult::Failed;
  auto a = Addr::fromIpPort(dstIp, uint16_t(port));
  if (!a || (a->family() == AF_INET6) != (proto == "TCP6")) return LookupResult::Failed;
  dst = *a;
  consumed = size_t(end - in) + 1;
  return LookupResult::Found;
}

}  // namespace mesh
