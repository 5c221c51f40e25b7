// The tunnel header: the first 24 bytes the outbound side writes inside TLS, naming the final destination.
//
//   offset 0  4 bytes  magic "MSH1"
//          4  1 byte   address family: 4 or 6
//          5  1 byte   reserved, 0
//          6  2 bytes  destination port, big-endian
//          8  16 bytes destination address: IPv4 in the first 4 bytes (rest 0), or IPv6
//
// Application bytes follow directly. Fixed size, so the inbound side reads it without scanning.
//
// A pooled tunnel connection ("pool" in the config) opens each stream with the same header, magic "MSH2"; the
// stream's bytes then go in frames, each way: 1 byte type, 3 bytes length (big-endian), the payload.
//   DATA (0)  length 1 … 2^24 − 1: application bytes
//   FIN  (1)  length 0: this direction of the stream is done (half-close)
// When both directions are done, the connection carries the next stream's header. One stream at a time per
// connection (the client pools idle connections per source identity, destination and tunnel); an error ends the
// connection and with it only the stream it carried.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "addr.h"

namespace mesh {

constexpr size_t kHeaderSize = 24;
constexpr size_t kFrameHeaderSize = 4;
enum FrameType : uint8_t { kFrameData = 0, kFrameFin = 1 };

std::string encodeHeader(const Addr& destination, bool framed = false);
// nullopt when the magic, family or reserved byte is wrong; `framed` says which magic it was.
std::optional<Addr> decodeHeader(const uint8_t* p, bool* framed = nullptr);
void encodeFrameHeader(char* p, FrameType type, size_t length);

}  // namespace mesh
