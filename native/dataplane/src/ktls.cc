#include "ktls.h"

#include <arpa/inet.h>
#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#ifndef TCP_ULP
#define TCP_ULP 31
#endif
#ifndef SOL_TLS
#define SOL_TLS 282
#endif

extern char** environ;

namespace mesh {

namespace {

std::atomic<bool> available{false};
int secretsIndex() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

int setUlp(int fd) { return setsockopt(fd, SOL_TCP, TCP_ULP, "tls", sizeof "tls"); }

// A connected loopback TCP socket (and its peer), or false.
bool loopbackPair(int& a, int& b) {
  a = b = -1;
  int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  bool ok = l >= 0 && bind(l, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 && listen(l, 1) == 0 &&
            getsockname(l, reinterpret_cast<sockaddr*>(&sa), &len) == 0;
  if (ok) {
    a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ok = a >= 0 && connect(a, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
    if (ok) b = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
    ok = ok && b >= 0;
  }
  if (l >= 0) close(l);
  return ok;
}

bool probeOnce(std::string& why) {
  int a, b;
  if (!loopbackPair(a, b)) {
    why = std::string("no loopback TCP pair: ") + std::strerror(errno);
  } else if (setUlp(a) != 0) {
    why = std::string("setsockopt TCP_ULP \"tls\": ") + std::strerror(errno);
  } else {
    // The cipher too: the ULP loads without the AEAD (gcm(aes)) the kernel must find for TLS_TX.
    tls12_crypto_info_aes_gcm_128 info{};
    info.info.version = TLS_1_3_VERSION;
    info.info.cipher_type = TLS_CIPHER_AES_GCM_128;
    if (setsockopt(a, SOL_TLS, TLS_TX, &info, sizeof info) != 0)
      why = std::string("TLS_TX AES-128-GCM: ") + std::strerror(errno);
    else
      why.clear();
  }
  if (a >= 0) close(a);
  if (b >= 0) close(b);
  return why.empty();
}

// The ULP and the AEADs its keys ask the crypto API for. A normal system autoloads them (and udev loads aesni_intel
// at boot on a CPU with AES-NI); where the kernel's module loader cannot reach the modules (a chroot, the test
// guest) the ULP is unknown and TLS_TX fails with ENOENT. The accelerated ones first: each socket's key gets the
// highest priority implementation registered at the time (aesni_intel's gcm(aes): 400, the C gcm(aes-generic):
// 100), and aesni_intel and ghash_clmulni_intel refuse to load on a CPU without AES-NI/PCLMULQDQ (or are absent:
// not x86), which -q keeps quiet.
void modprobeKtls() {
  pid_t pid;
  char arg0[] = "modprobe", arg1[] = "-q", arg2[] = "-a", m0[] = "tls", m1[] = "aesni_intel",
       m2[] = "ghash_clmulni_intel", m3[] = "gcm", m4[] = "ctr", m5[] = "ghash_generic", m6[] = "chacha20poly1305";
  char* argv[] = {arg0, arg1, arg2, m0, m1, m2, m3, m4, m5, m6, nullptr};
  if (posix_spawnp(&pid, "modprobe", nullptr, nullptr, argv, environ) != 0) return;
  int status;
  waitpid(pid, &status, 0);
}

// HKDF-Expand-Label(secret, label, "", len) of RFC 8446 7.1, for len no longer than the hash (one HMAC block).
bool expandLabel(const EVP_MD* md, const std::string& secret, const char* label, unsigned char* out, size_t len) {
  std::string full = std::string("tls13 ") + label;
  std::string info;
  info += char(len >> 8);
  info += char(len & 0xff);
  info += char(full.size());
  info += full;
  info += char(0);  // empty context
  info += char(1);  // HKDF-Expand's block counter
  unsigned char block[EVP_MAX_MD_SIZE];
  unsigned int blockLen = 0;
  if (len > size_t(EVP_MD_get_size(md)) ||
      !HMAC(md, secret.data(), int(secret.size()), reinterpret_cast<const unsigned char*>(info.data()), info.size(),
            block, &blockLen))
    return false;
  std::memcpy(out, block, len);
  OPENSSL_cleanse(block, sizeof block);
  return true;
}

bool fromHex(const char* p, size_t n, std::string& out) {
  if (n % 2) return false;
  out.clear();
  for (size_t i = 0; i < n; i += 2) {
    auto nib = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    int hi = nib(p[i]), lo = nib(p[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out += char(hi << 4 | lo);
  }
  return true;
}

// The kernel's crypto_info for one direction; `size` is what setsockopt takes.
union CryptoInfo {
  tls_crypto_info base;
  tls12_crypto_info_aes_gcm_128 gcm128;
  tls12_crypto_info_aes_gcm_256 gcm256;
  tls12_crypto_info_chacha20_poly1305 chacha;
};

bool cryptoInfo(uint32_t suite, const EVP_MD* md, const std::string& secret, CryptoInfo& ci, socklen_t& size) {
  std::memset(&ci, 0, sizeof ci);
  unsigned char key[32], iv[12];
  size_t keyLen = suite == 0x03001301 ? 16 : 32;
  if (!expandLabel(md, secret, "key", key, keyLen) || !expandLabel(md, secret, "iv", iv, sizeof iv)) return false;
  ci.base.version = TLS_1_3_VERSION;
  // rec_seq stays 0: no record of either direction was sealed with these keys yet (tickets are off).
  switch (suite) {
    case 0x03001301:  // TLS_AES_128_GCM_SHA256
      ci.base.cipher_type = TLS_CIPHER_AES_GCM_128;
      std::memcpy(ci.gcm128.key, key, 16);
      std::memcpy(ci.gcm128.salt, iv, 4);
      std::memcpy(ci.gcm128.iv, iv + 4, 8);
      size = sizeof ci.gcm128;
      break;
    case 0x03001302:  // TLS_AES_256_GCM_SHA384
      ci.base.cipher_type = TLS_CIPHER_AES_GCM_256;
      std::memcpy(ci.gcm256.key, key, 32);
      std::memcpy(ci.gcm256.salt, iv, 4);
      std::memcpy(ci.gcm256.iv, iv + 4, 8);
      size = sizeof ci.gcm256;
      break;
    case 0x03001303:  // TLS_CHACHA20_POLY1305_SHA256: the whole 12-byte IV, no salt
      ci.base.cipher_type = TLS_CIPHER_CHACHA20_POLY1305;
      std::memcpy(ci.chacha.key, key, 32);
      std::memcpy(ci.chacha.iv, iv, 12);
      size = sizeof ci.chacha;
      break;
    default:
      return false;
  }
  OPENSSL_cleanse(key, sizeof key);
  OPENSSL_cleanse(iv, sizeof iv);
  return true;
}

}  // namespace

bool ktlsProbe(std::string& why) {
  bool ok = probeOnce(why);
  if (!ok && why.find(std::strerror(ENOENT)) != std::string::npos) {
    // The ULP or the AEAD is unknown until its module is loaded; the kernel's autoload does not cover every setup.
    modprobeKtls();
    ok = probeOnce(why);
  }
  available = ok;
  return ok;
}

bool ktlsAvailable() { return available.load(std::memory_order_relaxed); }

void ktlsKeylog(const SSL* ssl, const char* line) {
  auto* out = static_cast<TrafficSecrets*>(SSL_get_ex_data(ssl, secretsIndex()));
  if (!out) return;
  // "<LABEL> <client_random hex> <secret hex>"
  const char* sp1 = std::strchr(line, ' ');
  const char* sp2 = sp1 ? std::strchr(sp1 + 1, ' ') : nullptr;
  if (!sp2) return;
  std::string label(line, size_t(sp1 - line));
  std::string* dst = label == "CLIENT_TRAFFIC_SECRET_0" ? &out->client
                     : label == "SERVER_TRAFFIC_SECRET_0" ? &out->server
                                                          : nullptr;
  if (dst && !fromHex(sp2 + 1, std::strlen(sp2 + 1), *dst)) dst->clear();
}

void ktlsTrack(SSL* ssl, TrafficSecrets* out) { SSL_set_ex_data(ssl, secretsIndex(), out); }

KtlsInstall ktlsInstall(SSL* ssl, int fd, bool client, const TrafficSecrets& secrets, std::string& why) {
  const SSL_CIPHER* cipher = SSL_get_current_cipher(ssl);
  const EVP_MD* md = cipher ? SSL_CIPHER_get_handshake_digest(cipher) : nullptr;
  if (SSL_version(ssl) != TLS1_3_VERSION || !md) {
    why = "not TLS 1.3";
    return KtlsInstall::Declined;
  }
  if (SSL_has_pending(ssl)) {
    // Bytes past the handshake are in OpenSSL's buffer: the kernel would never see them.
    why = "bytes buffered in OpenSSL";
    return KtlsInstall::Declined;
  }
  if (secrets.client.empty() || secrets.server.empty()) {
    why = "no traffic secrets";
    return KtlsInstall::Declined;
  }
  uint32_t suite = SSL_CIPHER_get_id(cipher);
  CryptoInfo tx, rx;
  socklen_t txSize = 0, rxSize = 0;
  if (!cryptoInfo(suite, md, client ? secrets.client : secrets.server, tx, txSize) ||
      !cryptoInfo(suite, md, client ? secrets.server : secrets.client, rx, rxSize)) {
    why = std::string("cipher suite ") + SSL_CIPHER_get_name(cipher);
    return KtlsInstall::Declined;
  }
  if (setUlp(fd) != 0) {
    why = std::string("TCP_ULP: ") + std::strerror(errno);
    return KtlsInstall::Declined;
  }
  KtlsInstall r = KtlsInstall::Installed;
  if (setsockopt(fd, SOL_TLS, TLS_TX, &tx, txSize) != 0) {
    // The ULP without keys passes bytes to TCP unchanged: OpenSSL can go on over this socket.
    why = std::string("TLS_TX ") + SSL_CIPHER_get_name(cipher) + ": " + std::strerror(errno);
    r = KtlsInstall::Declined;
  } else if (setsockopt(fd, SOL_TLS, TLS_RX, &rx, rxSize) != 0) {
    why = std::string("TLS_RX ") + SSL_CIPHER_get_name(cipher) + ": " + std::strerror(errno);
    r = KtlsInstall::Broken;
  }
  OPENSSL_cleanse(&tx, sizeof tx);
  OPENSSL_cleanse(&rx, sizeof rx);
  return r;
}

ssize_t ktlsRecv(int fd, char* buf, size_t len, uint8_t& type) {
  char control[CMSG_SPACE(sizeof(uint8_t))];
  iovec iov{buf, len};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n = recvmsg(fd, &msg, 0);
  type = kRecordData;
  if (n < 0) return n;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
    if (c->cmsg_level == SOL_TLS && c->cmsg_type == TLS_GET_RECORD_TYPE) type = *CMSG_DATA(c);
  return n;
}

int ktlsSendCloseNotify(int fd) {
  char alert[2] = {1, 0};  // warning, close_notify
  char control[CMSG_SPACE(sizeof(uint8_t))]{};
  iovec iov{alert, sizeof alert};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_TLS;
  c->cmsg_type = TLS_SET_RECORD_TYPE;
  c->cmsg_len = CMSG_LEN(sizeof(uint8_t));
  *CMSG_DATA(c) = kRecordAlert;
  return sendmsg(fd, &msg, MSG_NOSIGNAL) == ssize_t(sizeof alert) ? 0 : -1;
}

uint64_t ktlsRecordLimit() {
  static const uint64_t limit = [] {
    uint64_t l = uint64_t(1) << 24;  // 2^24.5 is the limit; stop well before it
    if (const char* v = std::getenv("MESH_DATAPLANE_KTLS_RECORD_LIMIT")) {
      char* end;
      unsigned long long x = std::strtoull(v, &end, 10);
      if (*end == '\0' && x > 0 && x < l) l = x;
    }
    return l;
  }();
  return limit;
}

}  // namespace mesh
