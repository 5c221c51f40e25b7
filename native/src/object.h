// ObjectHandle: one libbpf bpf_object, from an ELF image in memory (an embedded skeleton or a Buffer) or a file.
// Before load() it is a spec (constants, map sizes, pin paths, autoload can be changed); after, it holds the
// loaded programs and maps, from which Program and Map handles are opened with their own fds.
#pragma once

#include <bpf/libbpf.h>
#include <napi.h>

#include <string>
#include <vector>

#include "addon.h"

namespace mesh {

class ObjectHandle : public Napi::ObjectWrap<ObjectHandle>, public Closable {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit ObjectHandle(const Napi::CallbackInfo& info);
  ~ObjectHandle() override;

 private:
  struct bpf_object* Obj(Napi::Env env, const char* op) const;
  struct bpf_map* FindMap(Napi::Env env, const std::string& name, const char* op) const;
  struct bpf_program* FindProgram(Napi::Env env, const std::string& name, const char* op) const;
  void RequireNotLoaded(Napi::Env env, const char* op) const;

  Napi::Value Name(const Napi::CallbackInfo& info);
  Napi::Value Loaded(const Napi::CallbackInfo& info);
  Napi::Value Maps(const Napi::CallbackInfo& info);
  Napi::Value Programs(const Napi::CallbackInfo& info);
  Napi::Value Constants(const Napi::CallbackInfo& info);
  Napi::Value SetConstant(const Napi::CallbackInfo& info);
  Napi::Value SetMaxEntries(const Napi::CallbackInfo& info);
  Napi::Value SetPinPath(const Napi::CallbackInfo& info);
  Napi::Value SetAutoload(const Napi::CallbackInfo& info);
  Napi::Value Load(const Napi::CallbackInfo& info);
  Napi::Value OpenMap(const Napi::CallbackInfo& info);
  Napi::Value OpenProgram(const Napi::CallbackInfo& info);
  Napi::Value JsClose(const Napi::CallbackInfo& info);
  void Release() override;

  struct bpf_object* obj_ = nullptr;
  std::vector<uint8_t> elf_;  // libbpf reads the image in place until load, so it lives as long as the object
  std::string name_;
  bool loaded_ = false;
};

// The embedded skeletons: name → ELF bytes.
Napi::Value EmbeddedObjects(const Napi::CallbackInfo& info);

}  // namespace mesh
