#include "link.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "errors.h"
#include "map.h"
#include "program.h"
#include "sys.h"

namespace mesh {

namespace {
// Newer than the uapi headers of the build machine (linux-libc-dev 6.1).
constexpr uint32_t kTcxIngress = 46;
constexpr uint32_t kTcxEgress = 47;
constexpr uint32_t kLinkTypeCgroup = 3;
constexpr uint32_t kLinkTypeTcx = 11;
constexpr uint32_t kLinkTypeSockmap = 14;

bool LinkInfoOf(int fd, struct bpf_link_info* out) {
  __u32 len = sizeof(*out);
  memset(out, 0, sizeof(*out));
  return bpf_obj_get_info_by_fd(fd, out, &len) == 0;
}

OwnedFd Dup(Napi::Env env, int fd, const char* op) {
  OwnedFd d = OwnedFd::Dup(fd);
  if (!d.valid()) ThrowBpf(env, op, "dup", errno);
  return d;
}
}  // namespace

Napi::Function LinkHandle::Init(Napi::Env env) {
  return DefineClass(env, "LinkHandle",
                     {
                         StaticMethod<&LinkHandle::OpenPinned>("openPinned"),
                         InstanceAccessor<&LinkHandle::Kind>("kind"),
                         InstanceMethod<&LinkHandle::Info>("info"),
                         InstanceMethod<&LinkHandle::Pin>("pin"),
                         InstanceMethod<&LinkHandle::Update>("update"),
                         InstanceMethod<&LinkHandle::Detach>("detach"),
                         InstanceMethod<&LinkHandle::Disconnect>("disconnect"),
                         InstanceMethod<&LinkHandle::JsClose>("close"),
                     });
}

Napi::Object LinkHandle::New(Napi::Env env, LinkInit& init) {
  return Data(env)->link_ctor.New({Napi::External<LinkInit>::New(env, &init)});
}

LinkHandle::LinkHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<LinkHandle>(info) {
  Napi::Env env = info.Env();
  if (!info[0].IsExternal()) throw Napi::TypeError::New(env, "LinkHandle is created by the library, not by new");
  s_ = std::move(*info[0].As<Napi::External<LinkInit>>().Data());
  Value().TypeTag(&kLinkTag);
  Track(env);
}

LinkHandle::~LinkHandle() { Close(); }

void LinkHandle::DetachTc(bool quiet) {
  try {
    NetnsGuard ns(Env(), s_.netns);
    DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = s_.ifindex, .attach_point = (enum bpf_tc_attach_point)s_.attach_point);
    DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .handle = s_.handle, .priority = s_.priority);
    int err = bpf_tc_detach(&hook, &opts);
    // ENOENT: the filter or the interface is already gone (namespace deleted); nothing is left attached.
    if (err && err != -ENOENT && err != -ENODEV && !quiet) ThrowBpf(Env(), "link_detach", s_.description, -err);
  } catch (const Napi::Error&) {
    if (!quiet) throw;
  }
}

void LinkHandle::Release() {
  switch (s_.kind) {
    case LinkKind::kLink:
      break;
    case LinkKind::kTc:
      if (!disconnected_) DetachTc(true);
      break;
    case LinkKind::kAttach:
      if (!disconnected_) bpf_prog_detach2(s_.prog_fd.get(), s_.target_fd.get(), (enum bpf_attach_type)s_.attach_type);
      break;
  }
  s_.fd.reset();
  s_.prog_fd.reset();
  s_.target_fd.reset();
}

void LinkHandle::RequireOpen(Napi::Env env, const char* op) const {
  if (!IsOpen()) throw Napi::TypeError::New(env, std::string(op) + ": link " + s_.description + " is closed");
}

Napi::Value LinkHandle::JsClose(const Napi::CallbackInfo& info) {
  Close();
  return info.Env().Undefined();
}

Napi::Value LinkHandle::Kind(const Napi::CallbackInfo& info) {
  const char* k = s_.kind == LinkKind::kLink ? "link" : s_.kind == LinkKind::kTc ? "tc" : "attach";
  return Napi::String::New(info.Env(), k);
}

Napi::Value LinkHandle::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireOpen(env, "link_info");
  Napi::Object o = Napi::Object::New(env);
  o.Set("description", s_.description);
  if (s_.kind == LinkKind::kLink) {
    struct bpf_link_info li;
    if (!LinkInfoOf(s_.fd.get(), &li)) ThrowBpf(env, "link_info", s_.description, errno);
    o.Set("linkType", li.type);
    o.Set("id", li.id);
    o.Set("programId", li.prog_id);
    // The union after prog_id; TCX and sockmap members are newer than the build's headers.
    const uint32_t* u = reinterpret_cast<const uint32_t*>(&li.cgroup);
    if (li.type == kLinkTypeCgroup) {
      o.Set("cgroupId", Napi::BigInt::New(env, (uint64_t)li.cgroup.cgroup_id));
      o.Set("attachType", li.cgroup.attach_type);
    } else if (li.type == kLinkTypeTcx) {
      o.Set("ifindex", u[0]);
      o.Set("attachType", u[1]);
    } else if (li.type == kLinkTypeSockmap) {
      o.Set("mapId", u[0]);
      o.Set("attachType", u[1]);
    }
  } else if (s_.kind == LinkKind::kTc) {
    NetnsGuard ns(env, s_.netns);
    DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = s_.ifindex, .attach_point = (enum bpf_tc_attach_point)s_.attach_point);
    DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .handle = s_.handle, .priority = s_.priority);
    int err = bpf_tc_query(&hook, &opts);
    if (err) ThrowBpf(env, "link_info", s_.description, -err);
    o.Set("programId", opts.prog_id);
    o.Set("ifindex", s_.ifindex);
    o.Set("handle", s_.handle);
    o.Set("priority", s_.priority);
    o.Set("direction", s_.attach_point == BPF_TC_INGRESS ? "ingress" : "egress");
  } else {
    struct bpf_prog_info pi;
    __u32 len = sizeof(pi);
    memset(&pi, 0, sizeof pi);
    if (bpf_obj_get_info_by_fd(s_.prog_fd.get(), &pi, &len)) ThrowBpf(env, "link_info", s_.description, errno);
    o.Set("programId", pi.id);
    o.Set("attachType", s_.attach_type);
  }
  return o;
}

Napi::Value LinkHandle::Pin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "path");
  RequireOpen(env, "link_pin");
  if (s_.kind != LinkKind::kLink)
    ThrowNotSupported(env, "link_pin", s_.description + " is not a bpf_link (netlink tc or prog_attach); "
                                                         "use disconnect() to leave it attached, or TCX / a newer kernel");
  if (bpf_obj_pin(s_.fd.get(), path.c_str())) ThrowBpf(env, "link_pin", s_.description + " at " + path, errno);
  return env.Undefined();
}

// update(newProgram, oldProgram?) replaces the program without a moment of detachment.
Napi::Value LinkHandle::Update(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireOpen(env, "link_update");
  ProgramHandle* np = UnwrapTagged<ProgramHandle>(info[0], kProgramTag, "program");
  ProgramHandle* op = info[1].IsObject() ? UnwrapTagged<ProgramHandle>(info[1], kProgramTag, "program") : nullptr;
  int new_fd = np->Fd(env);
  switch (s_.kind) {
    case LinkKind::kLink: {
      LIBBPF_OPTS(bpf_link_update_opts, opts);
      if (op) {
        opts.old_prog_fd = op->Fd(env);
        opts.flags = BPF_F_REPLACE;
      }
      if (bpf_link_update(s_.fd.get(), new_fd, &opts)) ThrowBpf(env, "link_update", s_.description, errno);
      break;
    }
    case LinkKind::kTc: {
      NetnsGuard ns(env, s_.netns);
      DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = s_.ifindex, .attach_point = (enum bpf_tc_attach_point)s_.attach_point);
      DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = new_fd, .flags = BPF_TC_F_REPLACE, .handle = s_.handle,
                          .priority = s_.priority);
      int err = bpf_tc_attach(&hook, &opts);
      if (err) ThrowBpf(env, "link_update", s_.description, -err);
      break;
    }
    case LinkKind::kAttach: {
      // The handle's duplicate of the new program first: a failed dup changes nothing, in the kernel or here.
      OwnedFd dup = Dup(env, new_fd, "link_update");
      int err;
      const bool sockmap = s_.attach_type == BPF_SK_MSG_VERDICT || s_.attach_type == BPF_SK_SKB_STREAM_PARSER ||
                           s_.attach_type == BPF_SK_SKB_STREAM_VERDICT || s_.attach_type == BPF_SK_SKB_VERDICT;
      if (!sockmap && (s_.attach_flags & BPF_F_ALLOW_MULTI)) {
        // Among several programs on the cgroup, replace exactly ours.
        LIBBPF_OPTS(bpf_prog_attach_opts, opts, .flags = BPF_F_ALLOW_MULTI | BPF_F_REPLACE, .replace_prog_fd = s_.prog_fd.get());
        err = bpf_prog_attach_opts(new_fd, s_.target_fd.get(), (enum bpf_attach_type)s_.attach_type, &opts);
      } else {
        // One program per hook (a sockmap, or a cgroup attachment without ALLOW_MULTI): attaching another with
        // the same flags replaces it in place.
        err = bpf_prog_attach(new_fd, s_.target_fd.get(), (enum bpf_attach_type)s_.attach_type, s_.attach_flags);
      }
      if (err) ThrowBpf(env, "link_update", s_.description, errno);
      s_.prog_fd = std::move(dup);
      break;
    }
  }
  return env.Undefined();
}

// detach() removes the attachment now, pinned or not.
Napi::Value LinkHandle::Detach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireOpen(env, "link_detach");
  if (s_.kind == LinkKind::kLink) {
    if (bpf_link_detach(s_.fd.get())) ThrowBpf(env, "link_detach", s_.description, errno);
  } else if (s_.kind == LinkKind::kTc) {
    DetachTc(false);
    disconnected_ = true;
  } else {
    if (bpf_prog_detach2(s_.prog_fd.get(), s_.target_fd.get(), (enum bpf_attach_type)s_.attach_type))
      ThrowBpf(env, "link_detach", s_.description, errno);
    disconnected_ = true;
  }
  Close();
  return env.Undefined();
}

// disconnect(): close() will leave the attachment in place (the kernel keeps it until detached).
Napi::Value LinkHandle::Disconnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  RequireOpen(env, "link_disconnect");
  if (s_.kind == LinkKind::kLink)
    throw Napi::TypeError::New(env, "link_disconnect: " + s_.description +
                                        " is a bpf_link; pin() it to keep it attached after close()");
  disconnected_ = true;
  return env.Undefined();
}

Napi::Value LinkHandle::OpenPinned(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "path");
  OwnedFd fd(bpf_obj_get(path.c_str()));
  if (!fd.valid()) ThrowBpf(env, "link_open_pinned", path, errno);
  struct bpf_link_info li;
  if (!LinkInfoOf(fd.get(), &li)) ThrowBpf(env, "link_open_pinned", path + " (not a link)", EINVAL);
  LinkInit init;
  init.kind = LinkKind::kLink;
  init.fd = std::move(fd);
  init.description = path;
  return New(env, init);
}

// ---- attach functions ----

// attachCgroup(program, cgroupPath, attachType, legacyFlags | -1): -1 makes a bpf_link.
static Napi::Value AttachCgroup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ProgramHandle* p = UnwrapTagged<ProgramHandle>(info[0], kProgramTag, "program");
  std::string path = ArgString(info, 1, "cgroup");
  uint32_t type = ArgU32(info, 2, "attachType");
  int64_t legacy_flags = ArgI64(info, 3, "flags");
  OwnedFd cg(OpenCgroup(env, path, "link_attach_cgroup"));
  LinkInit init;
  init.attach_type = type;
  init.description = p->name() + " on cgroup " + path;
  if (legacy_flags < 0) {
    init.fd.reset(bpf_link_create(p->Fd(env), cg.get(), (enum bpf_attach_type)type, nullptr));
    if (!init.fd.valid()) ThrowBpf(env, "link_attach_cgroup", init.description, errno);
    init.kind = LinkKind::kLink;
  } else {
    // The fds the handle keeps for detaching come first: an attachment is made only when a handle can hold it.
    OwnedFd prog = Dup(env, p->Fd(env), "link_attach_cgroup");
    if (bpf_prog_attach(p->Fd(env), cg.get(), (enum bpf_attach_type)type, (unsigned)legacy_flags))
      ThrowBpf(env, "link_attach_cgroup", init.description, errno);
    init.kind = LinkKind::kAttach;
    init.attach_flags = (uint32_t)legacy_flags;
    init.prog_fd = std::move(prog);
    init.target_fd = std::move(cg);
  }
  return LinkHandle::New(env, init);
}

// attachTcx(program, ifindex, egress: bool, netns)
static Napi::Value AttachTcx(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ProgramHandle* p = UnwrapTagged<ProgramHandle>(info[0], kProgramTag, "program");
  uint32_t ifindex = ArgU32(info, 1, "ifindex");
  bool egress = info[2].ToBoolean();
  std::string netns = info[3].IsString() ? info[3].As<Napi::String>().Utf8Value() : "";
  LinkInit init;
  init.kind = LinkKind::kLink;
  init.attach_type = egress ? kTcxEgress : kTcxIngress;
  init.description = p->name() + " on tcx/" + (egress ? "egress" : "ingress") + " ifindex " + std::to_string(ifindex) +
                     (netns.empty() ? "" : " in " + netns);
  {
    NetnsGuard ns(env, netns);
    init.fd.reset(bpf_link_create(p->Fd(env), ifindex, (enum bpf_attach_type)init.attach_type, nullptr));
  }
  if (!init.fd.valid()) ThrowBpf(env, "link_attach_tcx", init.description, errno);
  return LinkHandle::New(env, init);
}

// attachClsact(program, ifindex, egress: bool, priority, handle, netns)
static Napi::Value AttachClsact(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ProgramHandle* p = UnwrapTagged<ProgramHandle>(info[0], kProgramTag, "program");
  uint32_t ifindex = ArgU32(info, 1, "ifindex");
  bool egress = info[2].ToBoolean();
  uint32_t priority = ArgU32(info, 3, "priority");
  uint32_t handle = ArgU32(info, 4, "handle");
  std::string netns = info[5].IsString() ? info[5].As<Napi::String>().Utf8Value() : "";
  LinkInit init;
  init.kind = LinkKind::kTc;
  init.ifindex = ifindex;
  init.attach_point = egress ? BPF_TC_EGRESS : BPF_TC_INGRESS;
  init.netns = netns;
  init.description = p->name() + " on tc/" + (egress ? "egress" : "ingress") + " ifindex " + std::to_string(ifindex) +
                     (netns.empty() ? "" : " in " + netns);
  NetnsGuard ns(env, netns);
  DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = (int)ifindex, .attach_point = (enum bpf_tc_attach_point)init.attach_point);
  int err = bpf_tc_hook_create(&hook);
  if (err && err != -EEXIST) ThrowBpf(env, "link_attach_tc", init.description + " (clsact qdisc)", -err);
  DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = p->Fd(env), .handle = handle, .priority = priority);
  err = bpf_tc_attach(&hook, &opts);
  if (err) ThrowBpf(env, "link_attach_tc", init.description, -err);
  init.handle = opts.handle;
  init.priority = opts.priority;
  return LinkHandle::New(env, init);
}

// attachSockmap(program, map, attachType, preferLink): a sockmap bpf_link where the kernel has them (≥ 6.10).
static Napi::Value AttachSockmap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ProgramHandle* p = UnwrapTagged<ProgramHandle>(info[0], kProgramTag, "program");
  MapHandle* m = UnwrapTagged<MapHandle>(info[1], kMapTag, "map");
  uint32_t type = ArgU32(info, 2, "attachType");
  bool prefer_link = info[3].ToBoolean();
  LinkInit init;
  init.attach_type = type;
  init.description = p->name() + " on map " + m->name();
  if (prefer_link) {
    init.fd.reset(bpf_link_create(p->Fd(env), m->Fd(env), (enum bpf_attach_type)type, nullptr));
    if (init.fd.valid()) {
      init.kind = LinkKind::kLink;
      return LinkHandle::New(env, init);
    }
    if (errno != EINVAL && errno != EOPNOTSUPP) ThrowBpf(env, "link_attach_sockmap", init.description, errno);
  }
  // As for cgroups: the handle's fds first, then the attachment.
  OwnedFd prog = Dup(env, p->Fd(env), "link_attach_sockmap");
  OwnedFd target = Dup(env, m->Fd(env), "link_attach_sockmap");
  if (bpf_prog_attach(p->Fd(env), m->Fd(env), (enum bpf_attach_type)type, 0))
    ThrowBpf(env, "link_attach_sockmap", init.description, errno);
  init.kind = LinkKind::kAttach;
  init.prog_fd = std::move(prog);
  init.target_fd = std::move(target);
  return LinkHandle::New(env, init);
}

// queryCgroup(path, attachType) → program ids attached there (the kernel's own view).
static Napi::Value QueryCgroup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "cgroup");
  uint32_t type = ArgU32(info, 1, "attachType");
  OwnedFd cg(OpenCgroup(env, path, "prog_query"));
  __u32 ids[256];
  __u32 cnt = 256, attach_flags = 0;
  if (bpf_prog_query(cg.get(), (enum bpf_attach_type)type, 0, &attach_flags, ids, &cnt))
    ThrowBpf(env, "prog_query", path, errno);
  Napi::Array out = Napi::Array::New(env, cnt);
  for (__u32 i = 0; i < cnt; i++) out.Set(i, ids[i]);
  return out;
}

Napi::Object InitAttach(Napi::Env env, Napi::Object exports) {
  exports.Set("attachCgroup", Napi::Function::New<AttachCgroup>(env, "attachCgroup"));
  exports.Set("attachTcx", Napi::Function::New<AttachTcx>(env, "attachTcx"));
  exports.Set("attachClsact", Napi::Function::New<AttachClsact>(env, "attachClsact"));
  exports.Set("attachSockmap", Napi::Function::New<AttachSockmap>(env, "attachSockmap"));
  exports.Set("queryCgroup", Napi::Function::New<QueryCgroup>(env, "queryCgroup"));
  return exports;
}

}  // namespace mesh
