// A small JSON reader for the config file (RFC 8259 values; numbers as double). No JSON library in Debian's
// base image, and the config is small and read on start and on SIGHUP only.
#pragma once
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace mesh {

struct Json {
  enum class Type { Null, Bool, Number, String, Array, Object };
  Type type = Type::Null;
  bool b = false;
  double num = 0;
  std::string str;
  std::vector<Json> arr;
  std::map<std::string, Json> obj;

  bool isObject() const { return type == Type::Object; }
  bool isArray() const { return type == Type::Array; }
  bool isString() const { return type == Type::String; }
  bool isNumber() const { return type == Type::Number; }
  const Json* get(const std::string& key) const;
  static const char* typeName(Type t);
};

struct JsonError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Throws JsonError naming the byte offset of the first problem.
Json parseJson(const std::string& text);

}  // namespace mesh
