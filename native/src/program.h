// ProgramHandle: one fd of a loaded BPF program: test runs (BPF_PROG_TEST_RUN), info and stats, pinning.
#pragma once

#include <bpf/bpf.h>
#include <napi.h>

#include <string>

#include "addon.h"
#include "fd.h"

namespace mesh {

class ProgramHandle : public Napi::ObjectWrap<ProgramHandle>, public Closable {
 public:
  static Napi::Function Init(Napi::Env env);
  // expected_attach_type is what libbpf derived from the section name; -1 when unknown (pinned, by id).
  static Napi::Object FromFd(Napi::Env env, int fd, bool dup, int expected_attach_type = -1);
  explicit ProgramHandle(const Napi::CallbackInfo& info);
  ~ProgramHandle() override;
  int Fd(Napi::Env env) const;
  const std::string& name() const { return name_; }
  uint32_t type() const { return type_; }

 private:
  static Napi::Value OpenPinned(const Napi::CallbackInfo& info);
  static Napi::Value OpenById(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value GetFd(const Napi::CallbackInfo& info);
  Napi::Value TestRun(const Napi::CallbackInfo& info);
  Napi::Value Pin(const Napi::CallbackInfo& info);
  Napi::Value JsClose(const Napi::CallbackInfo& info);
  void Release() override;

  OwnedFd fd_;
  std::string name_;
  uint32_t type_ = 0;
  int expected_attach_type_ = -1;
};

}  // namespace mesh
