#include "errors.h"

#include <bpf/libbpf.h>
#include <string.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>

#include "addon.h"

namespace mesh {

static thread_local std::string* capture = nullptr;

static int PrintFn(enum libbpf_print_level level, const char* fmt, va_list args) {
  // libbpf prints a whole verifier log in one call: size the text first, never truncate it.
  va_list copy;
  va_copy(copy, args);
  int n = vsnprintf(nullptr, 0, fmt, copy);
  va_end(copy);
  if (n < 0) return 0;
  std::string text(n + 1, '\0');
  vsnprintf(text.data(), text.size(), fmt, args);
  text.resize(n);
  if (capture) {
    capture->append(text);
    return n;
  }
  // Outside a capture, libbpf's warnings are noise for a library; MESH_BPF_DEBUG shows them.
  static const bool debug = getenv("MESH_BPF_DEBUG") != nullptr;
  if (debug || (level == LIBBPF_WARN && getenv("MESH_BPF_WARN"))) fputs(text.c_str(), stderr);
  return n;
}

void InstallLibbpfPrint() { libbpf_set_print(PrintFn); }

LogCapture::LogCapture() : prev_(capture) { capture = &buf_; }
LogCapture::~LogCapture() { capture = prev_; }
std::string LogCapture::Take() { return std::move(buf_); }

std::string LogCapture::VerifierLog(const std::string& all) {
  static const std::string begin = "-- BEGIN PROG LOAD LOG --";
  static const std::string end = "-- END PROG LOAD LOG --";
  auto b = all.find(begin);
  if (b == std::string::npos) return "";
  b = all.find('\n', b);
  if (b == std::string::npos) return "";
  auto e = all.find(end, b);
  std::string log = all.substr(b + 1, (e == std::string::npos ? all.size() : e) - b - 1);
  // libbpf prefixes the END marker line with "libbpf: prog 'x': "; drop that trailing fragment.
  auto last_nl = log.rfind('\n');
  if (last_nl != std::string::npos && log.find("libbpf:", last_nl) != std::string::npos) log.resize(last_nl + 1);
  return log;
}

static Napi::Value VerifierLogOrUndefined(Napi::Env env, const std::string& libbpf_log) {
  std::string v = LogCapture::VerifierLog(libbpf_log);
  return v.empty() ? env.Undefined() : Napi::String::New(env, v);
}

static std::string ErrnoName(int err) {
  const char* name = strerrorname_np(err);
  return name ? name : "E" + std::to_string(err);
}

Napi::Error BpfError(Napi::Env env, const char* op, const std::string& subject, int err, const std::string& libbpf_log) {
  if (err < 0) err = -err;
  AddonData* data = Data(env);
  if (data->bpf_error.IsEmpty()) {
    return Napi::Error::New(env, std::string(op) + " " + subject + ": " + strerror(err));
  }
  Napi::Object e = data->bpf_error.New({
      Napi::String::New(env, op),
      Napi::String::New(env, subject),
      Napi::Number::New(env, err),
      Napi::String::New(env, ErrnoName(err)),
      Napi::String::New(env, strerror(err)),
      VerifierLogOrUndefined(env, libbpf_log),
      libbpf_log.empty() ? env.Undefined() : Napi::String::New(env, libbpf_log),
  });
  return Napi::Error(env, e);
}

void ThrowBpf(Napi::Env env, const char* op, const std::string& subject, int err, const std::string& libbpf_log) {
  throw BpfError(env, op, subject, err, libbpf_log);
}

void ThrowNotSupported(Napi::Env env, const std::string& feature, const std::string& why) {
  AddonData* data = Data(env);
  if (data->not_supported_error.IsEmpty()) throw Napi::Error::New(env, feature + ": " + why);
  Napi::Object e = data->not_supported_error.New({Napi::String::New(env, feature), Napi::String::New(env, why)});
  throw Napi::Error(env, e);
}

std::string ArgString(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsString()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

uint32_t ArgU32(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a number");
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= 4294967295.0) || d != (double)(uint32_t)d)
    throw Napi::RangeError::New(info.Env(), std::string(name) + " must be an integer in [0, 2^32)");
  return (uint32_t)d;
}

int64_t ArgI64(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a number");
  return info[i].As<Napi::Number>().Int64Value();
}

Napi::Buffer<uint8_t> ArgBuffer(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsBuffer()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a Buffer");
  return info[i].As<Napi::Buffer<uint8_t>>();
}

}  // namespace mesh
