// Authorization of inbound connections: the DENY and ALLOW policies of one local workload, compiled by
// @mesh/mtls from Istio's AuthorizationPolicy, evaluated on the client's verified SPIFFE ID and the destination
// port before the data plane connects to the workload.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "json.h"

namespace mesh {

// "*" anything; "*x" ends with x; "x*" starts with x; otherwise equal.
struct Pattern {
  enum class Kind { Any, Exact, Prefix, Suffix } kind = Kind::Exact;
  std::string text;
  bool matches(const std::string& value) const;
};

// Every field given must match; an absent field matches anything.
struct SourceMatch {
  std::optional<std::vector<Pattern>> principals, notPrincipals, namespaces, notNamespaces;
};

struct OperationMatch {
  std::optional<std::vector<uint16_t>> ports, notPorts;
};

// Matches when one of `from` (or no `from`) and one of `to` (or no `to`) match.
struct Rule {
  std::optional<std::vector<SourceMatch>> from;
  std::optional<std::vector<OperationMatch>> to;
};

struct Policy {
  std::string name;  // "<namespace>/<name>": the label its denials are counted under
  std::vector<Rule> rules;
};

enum class AuthzReason : int { DenyMatch = 0, NoAllowMatch };
const char* authzReasonName(AuthzReason r);

struct Decision {
  bool allowed = true;
  AuthzReason reason = AuthzReason::DenyMatch;
  const std::string* policy = nullptr;  // the label of a refusal; points into the Policies
};

struct Policies {
  std::vector<Policy> deny;
  std::vector<Policy> allow;
  std::string allowLabel;  // the ALLOW policies' names joined by ",": the label of a connection none matches

  // Istio's order: a matching DENY policy refuses; then, when ALLOW policies exist, one of them must match.
  Decision evaluate(const std::string& principal, uint16_t port) const;
};

// The `<ns>` of "spiffe://<td>/ns/<ns>/…", or "" (which no namespace pattern but "*" matches).
std::string namespaceOfId(const std::string& spiffeId);

// Parses a workload's "policies" object; throws ConfigError naming the field (`where` is its path).
Policies parsePolicies(const Json& j, const std::string& where);

}  // namespace mesh
