#include "header.h"

#include <cstring>

namespace mesh {

std::string encodeHeader(const Addr& destination) {
  std::string h(kHeaderSize, '\0');
  std::memcpy(&h[0], "MSH1", 4);
  h[4] = destination.family() == AF_INET6 ? 6 : 4;
  uint16_t port = destination.port();
  h[6] = char(port >> 8);
  h[7] = char(port & 0xff);
  std::string ip = destination.ipBytes();
  std::memcpy(&h[8], ip.data(), ip.size());
  return h;
}

std::optional<Addr> decodeHeader(const uint8_t* p) {
  if (std::memcmp(p, "MSH1", 4) != 0 || p[5] != 0) return std::nullopt;
  uint16_t port = uint16_t(p[6] << 8 | p[7]);
  if (p[4] == 4) {
    for (int i = 12; i < 24; i++)
      if (p[i] != 0) return std::nullopt;
    return Addr::fromBytes(AF_INET, p + 8, port);
  }
  if (p[4] == 6) return Addr::fromBytes(AF_INET6, p + 8, port);
  return std::nullopt;
}

}  // namespace mesh
