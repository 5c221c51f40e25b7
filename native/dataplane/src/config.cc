#include "config.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include <atomic>
#include <cmath>
#include <fstream>
#include <sstream>

#include "json.h"
#include "ktls.h"

namespace mesh {

const Workload* Config::workloadByIp(const std::string& ip) const {
  for (auto& w : workloads)
    if (w->address == ip) return w.get();
  return nullptr;
}

bool Config::pooled() const { return pool ? *pool : !(ktls && ktlsAvailable()); }

const char* Config::tunnelChoice() const {
  if (pool) return "config";
  if (!ktls) return "auto: \"ktls\": false";
  return ktlsAvailable() ? "auto: kTLS available" : "auto: kTLS unavailable";
}

const Destination* Config::destination(const Addr& dst) const {
  auto it = destinations.find(dst.str());
  return it == destinations.end() ? nullptr : &it->second;
}

namespace {

[[noreturn]] void fail(const std::string& field, const std::string& what) { throw ConfigError(field + ": " + what); }

const Json& need(const Json& obj, const std::string& key, Json::Type type, const std::string& where) {
  const Json* v = obj.get(key);
  if (!v) fail(where + "." + key, "missing");
  if (v->type != type)
    fail(where + "." + key, std::string("expected ") + Json::typeName(type) + ", got " + Json::typeName(v->type));
  return *v;
}

const Json* optional(const Json& obj, const std::string& key, Json::Type type, const std::string& where) {
  const Json* v = obj.get(key);
  if (v && v->type != type)
    fail(where + "." + key, std::string("expected ") + Json::typeName(type) + ", got " + Json::typeName(v->type));
  return v;
}

void onlyKeys(const Json& obj, std::set<std::string> known, const std::string& where) {
  for (auto& [k, _] : obj.obj)
    if (!known.count(k)) fail(where + "." + k, "unknown field");
}

Addr addrField(const Json& v, const std::string& field) {
  auto a = Addr::parse(v.str);
  if (!a) fail(field, "expected \"ip:port\" (IPv6 as \"[ip]:port\"), got \"" + v.str + "\"");
  return *a;
}

std::string ipField(const Json& v, const std::string& field) {
  auto a = Addr::fromIpPort(v.str, 0);
  if (!a) fail(field, "expected an IP address, got \"" + v.str + "\"");
  return a->ip();
}

int intField(const Json& v, const std::string& field, int min, int max) {
  if (v.num != std::floor(v.num) || v.num < min || v.num > max)
    fail(field, "expected an integer from " + std::to_string(min) + " to " + std::to_string(max));
  return int(v.num);
}

std::unique_ptr<Workload> loadWorkload(const Json& j, const std::string& where) {
  if (!j.isObject()) fail(where, "expected an object");
  onlyKeys(j, {"address", "spiffeId", "cert", "key", "bundle", "policies"}, where);
  auto w = std::make_unique<Workload>();
  w->address = ipField(need(j, "address", Json::Type::String, where), where + ".address");
  std::string cert = need(j, "cert", Json::Type::String, where).str;
  std::string key = need(j, "key", Json::Type::String, where).str;
  std::string bundle = need(j, "bundle", Json::Type::String, where).str;
  if (const Json* p = j.get("policies")) w->policies = parsePolicies(*p, where + ".policies");

  w->ctx = newContext(false);
  if (!w->ctx) fail(where, "cannot create a TLS context: " + sslErrors());
  if (SSL_CTX_use_certificate_chain_file(w->ctx.get(), cert.c_str()) != 1)
    fail(where + ".cert", "cannot load \"" + cert + "\": " + sslErrors());
  if (SSL_CTX_use_PrivateKey_file(w->ctx.get(), key.c_str(), SSL_FILETYPE_PEM) != 1)
    fail(where + ".key", "cannot load \"" + key + "\": " + sslErrors());
  if (SSL_CTX_check_private_key(w->ctx.get()) != 1)
    fail(where + ".key", "\"" + key + "\" does not match the certificate \"" + cert + "\"");
  EVP_PKEY* pkey = SSL_CTX_get0_privatekey(w->ctx.get());
  char group[64] = "";
  size_t glen = 0;
  if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_EC ||
      EVP_PKEY_get_utf8_string_param(pkey, "group", group, sizeof group, &glen) != 1 ||
      std::string(group) != "prime256v1")
    fail(where + ".key", "\"" + key + "\" is not an ECDSA P-256 key (SVIDs are P-256)");

  X509* leaf = SSL_CTX_get0_certificate(w->ctx.get());
  auto id = spiffeIdOf(leaf);
  if (!id) fail(where + ".cert", "\"" + cert + "\" has not exactly one URI SAN with a valid spiffe:// ID");
  if (const Json* want = optional(j, "spiffeId", Json::Type::String, where); want && want->str != *id)
    fail(where + ".spiffeId", "\"" + want->str + "\" but the certificate says \"" + *id + "\"");
  w->spiffeId = *id;
  w->trustDomain = trustDomainOf(*id);

  w->bundle.reset(X509_STORE_new());
  if (!w->bundle || X509_STORE_load_file(w->bundle.get(), bundle.c_str()) != 1)
    fail(where + ".bundle", "cannot load \"" + bundle + "\": " + sslErrors());
  STACK_OF(X509_OBJECT)* objs = X509_STORE_get0_objects(w->bundle.get());
  if (sk_X509_OBJECT_num(objs) == 0) fail(where + ".bundle", "\"" + bundle + "\" holds no certificate");
  return w;
}

}  // namespace

std::shared_ptr<const Config> loadConfig(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot read");
  std::stringstream ss;
  ss << in.rdbuf();
  Json root;
  try {
    root = parseJson(ss.str());
  } catch (const JsonError& e) {
    throw ConfigError(path + ": " + e.what());
  }
  if (!root.isObject()) throw ConfigError(path + ": expected a JSON object");
  onlyKeys(root,
           {"outbound", "tunnel", "stats", "workers", "handshakeTimeoutMs", "ktls", "pool", "poolIdleMs", "workloads",
            "destinations", "originalDst", "inboundSource"},
           "config");

  auto cfg = std::make_shared<Config>();
  if (auto* v = optional(root, "outbound", Json::Type::String, "config")) cfg->outbound = addrField(*v, "config.outbound");
  if (auto* v = optional(root, "tunnel", Json::Type::String, "config")) cfg->tunnel = addrField(*v, "config.tunnel");
  if (auto* v = optional(root, "stats", Json::Type::String, "config")) cfg->stats = addrField(*v, "config.stats");
  if (!cfg->outbound && !cfg->tunnel) fail("config", "neither \"outbound\" nor \"tunnel\" is set: nothing to listen on");
  if (auto* v = optional(root, "workers", Json::Type::Number, "config")) cfg->workers = intField(*v, "config.workers", 1, 64);
  if (auto* v = optional(root, "handshakeTimeoutMs", Json::Type::Number, "config"))
    cfg->handshakeTimeoutMs = intField(*v, "config.handshakeTimeoutMs", 100, 600000);
  if (auto* v = optional(root, "ktls", Json::Type::Bool, "config")) cfg->ktls = v->b;
  if (auto* v = optional(root, "pool", Json::Type::Bool, "config")) cfg->pool = v->b;
  if (auto* v = optional(root, "poolIdleMs", Json::Type::Number, "config"))
    cfg->poolIdleMs = intField(*v, "config.poolIdleMs", 100, 600000);
  if (cfg->pool.value_or(false) && cfg->ktls)
    fail("config.pool", "needs \"ktls\": false (a pooled tunnel frames its streams in user space)");

  const Json& workloads = need(root, "workloads", Json::Type::Array, "config");
  for (size_t i = 0; i < workloads.arr.size(); i++) {
    std::string where = "config.workloads[" + std::to_string(i) + "]";
    auto w = loadWorkload(workloads.arr[i], where);
    if (cfg->workloadByIp(w->address)) fail(where + ".address", "\"" + w->address + "\" appears twice");
    cfg->workloads.push_back(std::move(w));
  }

  if (auto* dests = optional(root, "destinations", Json::Type::Array, "config")) {
    for (size_t i = 0; i < dests->arr.size(); i++) {
      std::string where = "config.destinations[" + std::to_string(i) + "]";
      const Json& d = dests->arr[i];
      if (!d.isObject()) fail(where, "expected an object");
      onlyKeys(d, {"address", "tunnel", "spiffeId"}, where);
      Addr dst = addrField(need(d, "address", Json::Type::String, where), where + ".address");
      Destination dest{addrField(need(d, "tunnel", Json::Type::String, where), where + ".tunnel"),
                       need(d, "spiffeId", Json::Type::String, where).str};
      if (!validSpiffeId(dest.spiffeId)) fail(where + ".spiffeId", "\"" + dest.spiffeId + "\" is not a valid SPIFFE ID");
      if (!cfg->destinations.emplace(dst.str(), dest).second) fail(where + ".address", "\"" + dst.str() + "\" appears twice");
    }
  }

  if (auto* od = optional(root, "originalDst", Json::Type::Object, "config")) {
    onlyKeys(*od, {"map"}, "config.originalDst");
    try {
      cfg->originalDst = OrigDstMap::open(need(*od, "map", Json::Type::String, "config.originalDst").str);
    } catch (const std::runtime_error& e) {
      if (dynamic_cast<const ConfigError*>(&e)) throw;
      fail("config.originalDst.map", e.what());
    }
  }

  if (auto* src = optional(root, "inboundSource", Json::Type::Object, "config")) {
    onlyKeys(*src, {"ipv4", "ipv6"}, "config.inboundSource");
    if (auto* v = optional(*src, "ipv4", Json::Type::String, "config.inboundSource")) {
      cfg->inboundSource4 = Addr::fromIpPort(ipField(*v, "config.inboundSource.ipv4"), 0);
      if (cfg->inboundSource4->family() != AF_INET) fail("config.inboundSource.ipv4", "expected an IPv4 address, got \"" + v->str + "\"");
    }
    if (auto* v = optional(*src, "ipv6", Json::Type::String, "config.inboundSource")) {
      cfg->inboundSource6 = Addr::fromIpPort(ipField(*v, "config.inboundSource.ipv6"), 0);
      if (cfg->inboundSource6->family() != AF_INET6) fail("config.inboundSource.ipv6", "expected an IPv6 address, got \"" + v->str + "\"");
    }
  }

  cfg->inboundBase = newContext(true);
  if (!cfg->inboundBase) fail("config", "cannot create the inbound TLS context: " + sslErrors());
  OriginalDst::useMap(cfg->originalDst);  // only a config loaded whole switches how destinations are found
  return cfg;
}

}  // namespace mesh

namespace mesh {

namespace {
std::shared_ptr<const Config> current;
}

void setCurrentConfig(std::shared_ptr<const Config> config) { std::atomic_store(&current, std::move(config)); }
std::shared_ptr<const Config> currentConfig() { return std::atomic_load(&current); }

}  // namespace mesh
