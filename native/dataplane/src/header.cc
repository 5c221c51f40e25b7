#include "header.h"

#include <cstring>

namespace mesh {

std::string encodeHeader(const Addr& destination, bool framed) {
  std::string h(kHeaderSize, '\0');
  std::memcpy(&h[0], framed ? "MSH2" : "MSH1", 4);
  h[4] = destination.family() == AF_INET6 ? 6 : 4;
  uint16_t port = destination.port();
  h[6] = char(port >> 8);
  h[7] = char(port & 0xff);
  std::string ip = destination.ipBytes();
  std::memcpy(&h[8], ip.data(), ip.size());
  return h;
}

void encodeFrameHeader(char* p, FrameType type, size_t length) {
  p[0] = char(type);
  p[1] = char((length >> 16) & 0xff);
  p[2] = char((length >> 8) & 0xff);
  p[3] = char(length & 0xff);
}

std::optional<Addr> decodeHeader(const uint8_t* p, bool* framed) {
  bool two = std::memcmp(p, "MSH2", 4) == 0;
  if ((!two && std::memcmp(p, "MSH1", 4) != 0) || p[5] != 0) return std::nullopt;
  if (framed) *framed = two;
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
