#include "policy.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <set>

#include "config.h"
#include "tls.h"

namespace mesh {

bool Pattern::matches(const std::string& v) const {
  switch (kind) {
    case Kind::Any: return true;
    case Kind::Exact: return v == text;
    case Kind::Prefix: return v.compare(0, text.size(), text) == 0;
    case Kind::Suffix: return v.size() >= text.size() && v.compare(v.size() - text.size(), text.size(), text) == 0;
  }
  return false;
}

const char* authzReasonName(AuthzReason r) { return r == AuthzReason::DenyMatch ? "deny_match" : "no_allow_match"; }

std::string namespaceOfId(const std::string& id) {
  const std::string scheme = "spiffe://";
  if (id.compare(0, scheme.size(), scheme) != 0) return "";
  size_t slash = id.find('/', scheme.size());
  if (slash == std::string::npos || id.compare(slash, 4, "/ns/") != 0) return "";
  size_t start = slash + 4, end = id.find('/', start);
  return id.substr(start, end == std::string::npos ? std::string::npos : end - start);
}

namespace {

bool anyOf(const std::vector<Pattern>& ps, const std::string& v) {
  return std::any_of(ps.begin(), ps.end(), [&](const Pattern& p) { return p.matches(v); });
}

bool sourceMatches(const SourceMatch& s, const std::string& principal, const std::string& ns) {
  if (s.principals && !anyOf(*s.principals, principal)) return false;
  if (s.notPrincipals && anyOf(*s.notPrincipals, principal)) return false;
  // A peer without a namespace matches no namespace list (and so passes every notNamespaces).
  if (s.namespaces && (ns.empty() || !anyOf(*s.namespaces, ns))) return false;
  if (s.notNamespaces && !ns.empty() && anyOf(*s.notNamespaces, ns)) return false;
  return true;
}

bool operationMatches(const OperationMatch& o, uint16_t port) {
  if (o.ports && std::find(o.ports->begin(), o.ports->end(), port) == o.ports->end()) return false;
  if (o.notPorts && std::find(o.notPorts->begin(), o.notPorts->end(), port) != o.notPorts->end()) return false;
  return true;
}

bool ruleMatches(const Rule& r, const std::string& principal, const std::string& ns, uint16_t port) {
  if (r.from && std::none_of(r.from->begin(), r.from->end(), [&](const SourceMatch& s) { return sourceMatches(s, principal, ns); }))
    return false;
  if (r.to && std::none_of(r.to->begin(), r.to->end(), [&](const OperationMatch& o) { return operationMatches(o, port); }))
    return false;
  return true;
}

bool policyMatches(const Policy& p, const std::string& principal, const std::string& ns, uint16_t port) {
  return std::any_of(p.rules.begin(), p.rules.end(), [&](const Rule& r) { return ruleMatches(r, principal, ns, port); });
}

[[noreturn]] void fail(const std::string& field, const std::string& what) { throw ConfigError(field + ": " + what); }

void onlyKeys(const Json& obj, const std::set<std::string>& known, const std::string& where) {
  for (auto& [k, _] : obj.obj)
    if (!known.count(k)) fail(where + "." + k, "unknown field");
}

const Json& object(const Json& j, const std::string& where) {
  if (!j.isObject()) fail(where, "expected an object");
  return j;
}

// A list field: absent is "any"; present must hold at least one element, so an empty list can never be read
// two ways.
const Json* list(const Json& obj, const std::string& key, const std::string& where) {
  const Json* v = obj.get(key);
  if (!v) return nullptr;
  if (!v->isArray()) fail(where + "." + key, "expected a list");
  if (v->arr.empty()) fail(where + "." + key, "must not be empty (omit it instead)");
  return v;
}

std::optional<std::vector<Pattern>> patterns(const Json& obj, const std::string& key, const std::string& where, bool principal) {
  const Json* v = list(obj, key, where);
  if (!v) return std::nullopt;
  std::vector<Pattern> out;
  for (size_t i = 0; i < v->arr.size(); i++) {
    std::string at = where + "." + key + "[" + std::to_string(i) + "]";
    const Json& e = v->arr[i];
    if (!e.isString() || e.str.empty()) fail(at, "expected a non-empty string");
    const std::string& s = e.str;
    size_t stars = std::count(s.begin(), s.end(), '*');
    Pattern p;
    if (s == "*") {
      p.kind = Pattern::Kind::Any;
    } else if (stars == 1 && s.front() == '*') {
      p = {Pattern::Kind::Suffix, s.substr(1)};
    } else if (stars == 1 && s.back() == '*') {
      p = {Pattern::Kind::Prefix, s.substr(0, s.size() - 1)};
      if (principal && p.text.compare(0, 9, "spiffe://") != 0) fail(at, "\"" + s + "\": a principal prefix starts with spiffe://");
    } else if (stars == 0) {
      p = {Pattern::Kind::Exact, s};
      if (principal && !validSpiffeId(s)) fail(at, "\"" + s + "\" is not a valid SPIFFE ID");
    } else {
      fail(at, "\"" + s + "\": \"*\" only alone, at the start or at the end");
    }
    if (!principal && s.find('/') != std::string::npos) fail(at, "\"" + s + "\": a namespace has no \"/\"");
    out.push_back(std::move(p));
  }
  return out;
}

std::optional<std::vector<uint16_t>> ports(const Json& obj, const std::string& key, const std::string& where) {
  const Json* v = list(obj, key, where);
  if (!v) return std::nullopt;
  std::vector<uint16_t> out;
  for (size_t i = 0; i < v->arr.size(); i++) {
    const Json& e = v->arr[i];
    if (!e.isNumber() || e.num != std::floor(e.num) || e.num < 1 || e.num > 65535)
      fail(where + "." + key + "[" + std::to_string(i) + "]", "expected a port from 1 to 65535");
    out.push_back(uint16_t(e.num));
  }
  return out;
}

bool validPolicyName(const std::string& n) {
  // "<namespace>/<name>": Kubernetes names, so the label needs no escaping.
  size_t slash = n.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == n.size() || n.find('/', slash + 1) != std::string::npos) return false;
  return std::all_of(n.begin(), n.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_' || c == '/'; });
}

Policy parsePolicy(const Json& j, const std::string& where) {
  object(j, where);
  onlyKeys(j, {"name", "rules"}, where);
  Policy p;
  const Json* name = j.get("name");
  if (!name || !name->isString() || !validPolicyName(name->str)) fail(where + ".name", "expected \"<namespace>/<name>\"");
  p.name = name->str;
  const Json* rules = j.get("rules");
  if (!rules || !rules->isArray()) fail(where + ".rules", "expected a list (empty: the policy matches nothing)");
  for (size_t i = 0; i < rules->arr.size(); i++) {
    std::string rw = where + ".rules[" + std::to_string(i) + "]";
    const Json& r = object(rules->arr[i], rw);
    onlyKeys(r, {"from", "to"}, rw);
    Rule rule;
    if (const Json* from = list(r, "from", rw)) {
      rule.from.emplace();
      for (size_t k = 0; k < from->arr.size(); k++) {
        std::string sw = rw + ".from[" + std::to_string(k) + "]";
        const Json& s = object(from->arr[k], sw);
        onlyKeys(s, {"principals", "notPrincipals", "namespaces", "notNamespaces"}, sw);
        if (s.obj.empty()) fail(sw, "must not be empty");
        rule.from->push_back({patterns(s, "principals", sw, true), patterns(s, "notPrincipals", sw, true),
                              patterns(s, "namespaces", sw, false), patterns(s, "notNamespaces", sw, false)});
      }
    }
    if (const Json* to = list(r, "to", rw)) {
      rule.to.emplace();
      for (size_t k = 0; k < to->arr.size(); k++) {
        std::string ow = rw + ".to[" + std::to_string(k) + "]";
        const Json& o = object(to->arr[k], ow);
        onlyKeys(o, {"ports", "notPorts"}, ow);
        if (o.obj.empty()) fail(ow, "must not be empty");
        rule.to->push_back({ports(o, "ports", ow), ports(o, "notPorts", ow)});
      }
    }
    p.rules.push_back(std::move(rule));
  }
  return p;
}

}  // namespace

Decision Policies::evaluate(const std::string& principal, uint16_t port) const {
  std::string ns = namespaceOfId(principal);
  for (auto& p : deny)
    if (policyMatches(p, principal, ns, port)) return {false, AuthzReason::DenyMatch, &p.name};
  if (allow.empty()) return {};
  for (auto& p : allow)
    if (policyMatches(p, principal, ns, port)) return {};
  return {false, AuthzReason::NoAllowMatch, &allowLabel};
}

Policies parsePolicies(const Json& j, const std::string& where) {
  object(j, where);
  onlyKeys(j, {"deny", "allow"}, where);
  Policies out;
  for (auto [key, into] : {std::pair{"deny", &out.deny}, std::pair{"allow", &out.allow}}) {
    const Json* v = j.get(key);
    if (!v) continue;
    if (!v->isArray()) fail(where + "." + key, "expected a list");
    std::set<std::string> names;
    for (size_t i = 0; i < v->arr.size(); i++) {
      std::string pw = where + "." + key + "[" + std::to_string(i) + "]";
      Policy p = parsePolicy(v->arr[i], pw);
      if (!names.insert(p.name).second) fail(pw + ".name", "\"" + p.name + "\" appears twice");
      into->push_back(std::move(p));
    }
  }
  for (auto& p : out.allow) out.allowLabel += (out.allowLabel.empty() ? "" : ",") + p.name;
  return out;
}

}  // namespace mesh
