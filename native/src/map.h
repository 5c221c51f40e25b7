// MapHandle: one fd of a BPF map. Keys and values cross as Buffers already encoded by the TS codecs,
// whose sizes the TS layer checks against the kernel's (a wrong size never reaches a syscall).
#pragma once

#include <bpf/bpf.h>
#include <napi.h>

#include <string>

#include "addon.h"
#include "fd.h"

namespace mesh {

class MapHandle : public Napi::ObjectWrap<MapHandle>, public Closable {
 public:
  static Napi::Function Init(Napi::Env env);
  // Wraps fd; with dup, the handle owns a duplicate and the caller keeps fd.
  static Napi::Object FromFd(Napi::Env env, int fd, bool dup);
  explicit MapHandle(const Napi::CallbackInfo& info);
  ~MapHandle() override;
  int Fd(Napi::Env env) const;
  const std::string& name() const { return name_; }

 private:
  static Napi::Value Create(const Napi::CallbackInfo& info);
  static Napi::Value OpenPinned(const Napi::CallbackInfo& info);
  static Napi::Value OpenById(const Napi::CallbackInfo& info);

  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value GetFd(const Napi::CallbackInfo& info);
  Napi::Value BindScratch(const Napi::CallbackInfo& info);
  Napi::Value LookupScratch(const Napi::CallbackInfo& info);
  Napi::Value UpdateScratch(const Napi::CallbackInfo& info);
  Napi::Value DeleteScratch(const Napi::CallbackInfo& info);
  Napi::Value Lookup(const Napi::CallbackInfo& info);
  Napi::Value LookupAndDelete(const Napi::CallbackInfo& info);
  Napi::Value Update(const Napi::CallbackInfo& info);
  Napi::Value Delete(const Napi::CallbackInfo& info);
  Napi::Value NextKey(const Napi::CallbackInfo& info);
  Napi::Value CountKeys(const Napi::CallbackInfo& info);
  Napi::Value LookupBatch(const Napi::CallbackInfo& info);
  Napi::Value UpdateBatch(const Napi::CallbackInfo& info);
  Napi::Value DeleteBatch(const Napi::CallbackInfo& info);
  Napi::Value Pin(const Napi::CallbackInfo& info);
  Napi::Value Freeze(const Napi::CallbackInfo& info);
  Napi::Value JsClose(const Napi::CallbackInfo& info);
  void Release() override;

  // Bytes one value occupies in a syscall buffer (all CPUs' slots for per-CPU maps).
  size_t ValueBytes() const;
  // Throws RangeError unless buf holds `count` elements of `elem` bytes.
  void CheckSize(Napi::Env env, const Napi::Buffer<uint8_t>& buf, size_t elem, size_t count, const char* what) const;
  std::string Subject() const;
  void* KeyOrNull(Napi::Env env, const Napi::Value& v) const;
  Napi::Value DoLookup(Napi::Env env, void* key, void* value, uint64_t flags);
  void DoUpdate(Napi::Env env, void* key, void* value, uint64_t flags);
  Napi::Value DoDelete(Napi::Env env, void* key);

  OwnedFd fd_;
  std::string name_;
  struct bpf_map_info info_ = {};
  // Key and value buffers bound once by the TS handle, so single-element calls cross N-API with no
  // arguments to convert (the syscall is most of the cost; argument marshalling was a fifth of it).
  // Their memory is looked up at each call, never kept: JS can detach an ArrayBuffer (transfer it), and a
  // pointer kept from bind time would then point at memory the buffer no longer owns.
  Napi::Reference<Napi::Buffer<uint8_t>> scratch_key_, scratch_value_;
  bool bound_ = false;
  struct Scratch {
    uint8_t* key;
    uint8_t* value;
  };
  Scratch BoundScratch(Napi::Env env);
};

}  // namespace mesh
