// Per-environment state of the addon: error constructors registered from TS, and every live handle,
// so an environment that shuts down (a worker thread, process exit) releases kernel objects it still holds.
#pragma once

#include <napi.h>

#include <unordered_set>

namespace mesh {

// A native handle that owns kernel resources (fds as OwnedFd members). Close() is the one close logic: it
// releases once, untracks, and does nothing after; a handle is open from Track() until then. Subclasses call
// Close() from their destructor (Release() is virtual: it cannot run from ~Closable).
class Closable {
 public:
  virtual ~Closable() = default;
  void Close();
  bool IsOpen() const { return env_ != nullptr; }

 protected:
  // Registers the handle as live; called once construction can no longer fail.
  void Track(napi_env env);
  // Frees what the handle holds.
  virtual void Release() = 0;

 private:
  napi_env env_ = nullptr;
};

struct AddonData {
  Napi::FunctionReference bpf_error;          // class BpfError (TS)
  Napi::FunctionReference not_supported_error;  // class NotSupportedError (TS)
  std::unordered_set<Closable*> live;
  Napi::FunctionReference object_ctor, map_ctor, program_ctor, link_ctor, ringbuf_ctor;
};

AddonData* Data(Napi::Env env);

// Type tags guard ObjectWrap::Unwrap against objects of another class (napi_type_tag).
extern const napi_type_tag kMapTag;
extern const napi_type_tag kProgramTag;
extern const napi_type_tag kObjectTag;
extern const napi_type_tag kLinkTag;

template <typename T>
T* UnwrapTagged(const Napi::Value& v, const napi_type_tag& tag, const char* what) {
  if (!v.IsObject() || !v.As<Napi::Object>().CheckTypeTag(&tag)) {
    throw Napi::TypeError::New(v.Env(), std::string("expected a native ") + what + " handle");
  }
  return T::Unwrap(v.As<Napi::Object>());
}

}  // namespace mesh
