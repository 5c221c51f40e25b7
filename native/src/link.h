// LinkHandle: one attachment of a program. Three kinds, one interface:
//  - "link": a kernel bpf_link (cgroup, TCX, sockmap on ≥ 6.10): detaches when its last fd closes unless pinned.
//  - "tc": a clsact filter made through netlink; removed on close unless disconnected.
//  - "attach": a BPF_PROG_ATTACH attachment (sockmap/cgroup on older kernels); removed on close unless disconnected.
#pragma once

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <napi.h>

#include <string>

#include "addon.h"
#include "fd.h"

namespace mesh {

enum class LinkKind { kLink, kTc, kAttach };

struct LinkInit {
  LinkKind kind;
  OwnedFd fd;         // kLink
  OwnedFd prog_fd;    // kAttach: a duplicate, for detach
  OwnedFd target_fd;  // kAttach: the cgroup dir or a duplicate of the map's
  uint32_t attach_type = 0;
  uint32_t attach_flags = 0;  // kAttach: the BPF_PROG_ATTACH flags, which a replacement must repeat
  // kTc
  int ifindex = 0;
  int attach_point = 0;  // BPF_TC_INGRESS / BPF_TC_EGRESS
  uint32_t handle = 0, priority = 0;
  std::string netns;
  std::string description;
};

class LinkHandle : public Napi::ObjectWrap<LinkHandle>, public Closable {
 public:
  static Napi::Function Init(Napi::Env env);
  // Takes init's fds when the handle is made; if that fails they stay in init (closed with it).
  static Napi::Object New(Napi::Env env, LinkInit& init);
  explicit LinkHandle(const Napi::CallbackInfo& info);
  ~LinkHandle() override;

 private:
  static Napi::Value OpenPinned(const Napi::CallbackInfo& info);
  Napi::Value Kind(const Napi::CallbackInfo& info);
  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value Pin(const Napi::CallbackInfo& info);
  Napi::Value Update(const Napi::CallbackInfo& info);
  Napi::Value Detach(const Napi::CallbackInfo& info);
  Napi::Value Disconnect(const Napi::CallbackInfo& info);
  Napi::Value JsClose(const Napi::CallbackInfo& info);
  void Release() override;
  void RequireOpen(Napi::Env env, const char* op) const;
  void DetachTc(bool quiet);

  LinkInit s_;
  bool disconnected_ = false;
};

Napi::Object InitAttach(Napi::Env env, Napi::Object exports);

}  // namespace mesh
