#include "original_dst.h"

#include <arpa/inet.h>
#include <linux/bpf.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <sstream>

namespace mesh {

namespace {

// bpf/include/mtls.h, struct mtls_addr and struct mtls_orig.
struct MtlsAddr {
  uint32_t addr[4];
  uint16_t port;  // network order
  uint8_t family;
  uint8_t pad;
};
struct MtlsOrig {
  MtlsAddr dst;
  MtlsAddr dialled;
};
static_assert(sizeof(MtlsAddr) == 20, "struct mtls_addr");
static_assert(sizeof(MtlsOrig) == 40, "struct mtls_orig");

long sysBpf(int cmd, bpf_attr& attr) { return syscall(SYS_bpf, cmd, &attr, sizeof(attr)); }

std::mutex mapMutex;
std::shared_ptr<const OrigDstMap> currentMap;

std::shared_ptr<const OrigDstMap> mapInUse() {
  std::lock_guard<std::mutex> lock(mapMutex);
  return currentMap;
}

LookupResult fromPreamble(const char* in, size_t inLen, Addr& dst, size_t& consumed) {
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

}  // namespace

std::shared_ptr<const OrigDstMap> OrigDstMap::open(const std::string& path) {
  bpf_attr attr{};
  attr.pathname = reinterpret_cast<uint64_t>(path.c_str());
  int fd = int(sysBpf(BPF_OBJ_GET, attr));
  if (fd < 0) throw std::runtime_error("cannot open pinned map \"" + path + "\": " + std::strerror(errno));
  bpf_map_info info{};
  bpf_attr q{};
  q.info.bpf_fd = uint32_t(fd);
  q.info.info_len = sizeof(info);
  q.info.info = reinterpret_cast<uint64_t>(&info);
  if (sysBpf(BPF_OBJ_GET_INFO_BY_FD, q) < 0) {
    int err = errno;
    close(fd);
    throw std::runtime_error("\"" + path + "\" is no BPF map: " + std::strerror(err));
  }
  if (info.key_size != sizeof(MtlsAddr) || info.value_size != sizeof(MtlsOrig)) {
    close(fd);
    throw std::runtime_error("\"" + path + "\" is not an original-destination map (key " + std::to_string(info.key_size) +
                             " bytes, value " + std::to_string(info.value_size) + "; expected 20 and 40)");
  }
  return std::shared_ptr<const OrigDstMap>(new OrigDstMap(fd, path));
}

OrigDstMap::~OrigDstMap() { close(fd_); }

std::optional<Addr> OrigDstMap::find(const Addr& peer) const {
  MtlsAddr key{};
  std::string ip = peer.ipBytes();
  static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  // A dual-stack listener sees an IPv4 client as ::ffff:a.b.c.d; the programs keep it as IPv4.
  if (peer.family() == AF_INET6 && std::memcmp(ip.data(), mapped, 12) == 0) ip = ip.substr(12);
  key.family = ip.size() == 4 ? AF_INET : AF_INET6;
  std::memcpy(key.addr, ip.data(), ip.size());
  key.port = htons(peer.port());
  MtlsOrig value{};
  bpf_attr attr{};
  attr.map_fd = uint32_t(fd_);
  attr.key = reinterpret_cast<uint64_t>(&key);
  attr.value = reinterpret_cast<uint64_t>(&value);
  if (sysBpf(BPF_MAP_LOOKUP_ELEM, attr) < 0) return std::nullopt;
  const MtlsAddr& d = value.dst;
  if (d.family != AF_INET && d.family != AF_INET6) return std::nullopt;
  return Addr::fromBytes(d.family, reinterpret_cast<const uint8_t*>(d.addr), ntohs(d.port));
}

void OriginalDst::useMap(std::shared_ptr<const OrigDstMap> map) {
  std::lock_guard<std::mutex> lock(mapMutex);
  currentMap = std::move(map);
}

LookupResult OriginalDst::lookup(int, const Addr& peer, const char* in, size_t inLen, Addr& dst, size_t& consumed) {
  auto map = mapInUse();
  if (!map) return fromPreamble(in, inLen, dst, consumed);
  auto found = map->find(peer);
  if (!found) return LookupResult::Failed;
  dst = *found;
  consumed = 0;
  return LookupResult::Found;
}

}  // namespace mesh
