// Socket addresses as the data plane uses them: one IPv4 or IPv6 address and port.
#pragma once
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>

namespace mesh {

struct Addr {
  sockaddr_storage ss{};
  socklen_t len = 0;

  int family() const { return ss.ss_family; }
  uint16_t port() const;
  // "ip:port", IPv6 as "[ip]:port".
  std::string str() const;
  // The address without the port.
  std::string ip() const;
  // Raw address bytes: 4 for IPv4, 16 for IPv6.
  std::string ipBytes() const;
  const sockaddr* sa() const { return reinterpret_cast<const sockaddr*>(&ss); }

  static std::optional<Addr> fromIpPort(const std::string& ip, uint16_t port);
  // "1.2.3.4:80" or "[::1]:80".
  static std::optional<Addr> parse(const std::string& text);
  static std::optional<Addr> fromBytes(int family, const uint8_t* bytes, uint16_t port);
};

// The peer (or local) address of a socket.
std::optional<Addr> peerOf(int fd);
std::optional<Addr> localOf(int fd);

}  // namespace mesh
