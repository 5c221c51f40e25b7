// Errors thrown to JS: instances of the TS BpfError / NotSupportedError classes, built from an errno,
// the operation that failed and what it failed on.
#pragma once

#include <napi.h>

#include <string>

namespace mesh {

// `err` is a positive errno. `libbpf_log` is what libbpf printed during the operation; the verifier's log is
// extracted from it when present.
Napi::Error BpfError(Napi::Env env, const char* op, const std::string& subject, int err,
                     const std::string& libbpf_log = "");
[[noreturn]] void ThrowBpf(Napi::Env env, const char* op, const std::string& subject, int err,
                           const std::string& libbpf_log = "");
[[noreturn]] void ThrowNotSupported(Napi::Env env, const std::string& feature, const std::string& why);

// libbpf prints through one global callback; while a LogCapture is alive on this thread, output is
// collected here instead of printed.
class LogCapture {
 public:
  LogCapture();
  ~LogCapture();
  std::string Take();
  // The text between libbpf's "-- BEGIN PROG LOAD LOG --" / "-- END PROG LOAD LOG --" markers, if any.
  static std::string VerifierLog(const std::string& all);

 private:
  std::string* prev_;
  std::string buf_;
};

void InstallLibbpfPrint();

// Helpers for reading arguments.
std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* name);
uint32_t ArgU32(const Napi::CallbackInfo& info, size_t i, const char* name);
int64_t ArgI64(const Napi::CallbackInfo& info, size_t i, const char* name);
Napi::Buffer<uint8_t> ArgBuffer(const Napi::CallbackInfo& info, size_t i, const char* name);

}  // namespace mesh
