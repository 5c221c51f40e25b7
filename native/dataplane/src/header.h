// The tunnel header: the first 24 bytes the outbound side writes inside TLS, naming the final destination.
//
//   offset 0  4 bytes  magic "MSH1"
//          4  1 byte   address family: 4 or 6
//          5  1 byte   reserved, 0
//          6  2 bytes  destination port, big-endian
//          8  16 bytes destination address: IPv4 in the first 4 bytes (rest 0), or IPv6
//
// Application bytes follow directly. Fixed size, so the inbound side reads it without scanning.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "addr.h"

namespace mesh {

constexpr size_t kHeaderSize = 24;

std::string encodeHeader(const Addr& destination);
// nullopt when the magic, family or reserved byte is wrong.
std::optional<Addr> decodeHeader(const uint8_t* p);

}  // namespace mesh
