#include "object.h"

#include <bpf/btf.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <regex>
#include <vector>

#include "embedded.h"
#include "errors.h"
#include "map.h"
#include "program.h"

namespace mesh {

namespace {

struct Embedded {
  const char* name;
  const void* (*bytes)(size_t*);
};

#define MESH_EMBED_ENTRY(stem) {#stem, stem##__elf_bytes},
const Embedded kEmbedded[] = {MESH_EMBEDDED_OBJECTS(MESH_EMBED_ENTRY)};
#undef MESH_EMBED_ENTRY

}  // namespace

Napi::Value EmbeddedObjects(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  for (const auto& e : kEmbedded) {
    size_t sz = 0;
    const void* p = e.bytes(&sz);
    // External buffer over static skeleton data: no copy, never freed.
    out.Set(e.name, Napi::Buffer<uint8_t>::New(env, (uint8_t*)p, sz));
  }
  return out;
}

Napi::Function ObjectHandle::Init(Napi::Env env) {
  return DefineClass(env, "ObjectHandle",
                     {
                         InstanceAccessor<&ObjectHandle::Name>("name"),
                         InstanceAccessor<&ObjectHandle::Loaded>("loaded"),
                         InstanceMethod<&ObjectHandle::Maps>("maps"),
                         InstanceMethod<&ObjectHandle::Programs>("programs"),
                         InstanceMethod<&ObjectHandle::Constants>("constants"),
                         InstanceMethod<&ObjectHandle::SetConstant>("setConstant"),
                         InstanceMethod<&ObjectHandle::SetMaxEntries>("setMaxEntries"),
                         InstanceMethod<&ObjectHandle::SetPinPath>("setPinPath"),
                         InstanceMethod<&ObjectHandle::SetAutoload>("setAutoload"),
                         InstanceMethod<&ObjectHandle::Load>("load"),
                         InstanceMethod<&ObjectHandle::OpenMap>("openMap"),
                         InstanceMethod<&ObjectHandle::OpenProgram>("openProgram"),
                         InstanceMethod<&ObjectHandle::JsClose>("close"),
                     });
}

// new ObjectHandle('mem', buffer, name) | new ObjectHandle('file', path)
ObjectHandle::ObjectHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ObjectHandle>(info) {
  Napi::Env env = info.Env();
  Value().TypeTag(&kObjectTag);
  std::string kind = ArgString(info, 0, "kind");
  LogCapture cap;
  if (kind == "mem") {
    auto buf = ArgBuffer(info, 1, "image");
    name_ = ArgString(info, 2, "name");
    elf_.assign(buf.Data(), buf.Data() + buf.Length());
    LIBBPF_OPTS(bpf_object_open_opts, opts, .object_name = name_.c_str());
    obj_ = bpf_object__open_mem(elf_.data(), elf_.size(), &opts);
  } else if (kind == "file") {
    std::string path = ArgString(info, 1, "path");
    name_ = path;
    obj_ = bpf_object__open_file(path.c_str(), nullptr);
  } else {
    throw Napi::TypeError::New(env, "kind must be 'mem' or 'file'");
  }
  if (!obj_) {
    int err = errno;
    ThrowBpf(env, "object_open", name_, err ? err : EINVAL, cap.Take());
  }
  name_ = bpf_object__name(obj_);
  Track(env);
}

ObjectHandle::~ObjectHandle() { Close(); }

// libbpf owns the object's fds (its programs' and maps'); handles opened from it hold duplicates (OwnedFd).
void ObjectHandle::Release() {
  bpf_object__close(obj_);
  obj_ = nullptr;
  elf_.clear();
  elf_.shrink_to_fit();
}

Napi::Value ObjectHandle::JsClose(const Napi::CallbackInfo& info) {
  Close();
  return info.Env().Undefined();
}

struct bpf_object* ObjectHandle::Obj(Napi::Env env, const char* op) const {
  if (!obj_) throw Napi::TypeError::New(env, std::string(op) + ": object is closed");
  return obj_;
}

void ObjectHandle::RequireNotLoaded(Napi::Env env, const char* op) const {
  if (loaded_) throw Napi::TypeError::New(env, std::string(op) + ": object " + name_ + " is already loaded");
}

struct bpf_map* ObjectHandle::FindMap(Napi::Env env, const std::string& name, const char* op) const {
  struct bpf_map* m = bpf_object__find_map_by_name(Obj(env, op), name.c_str());
  if (!m) ThrowBpf(env, op, name_ + "/" + name, ENOENT);
  return m;
}

struct bpf_program* ObjectHandle::FindProgram(Napi::Env env, const std::string& name, const char* op) const {
  struct bpf_program* p = bpf_object__find_program_by_name(Obj(env, op), name.c_str());
  if (!p) ThrowBpf(env, op, name_ + "/" + name, ENOENT);
  return p;
}

Napi::Value ObjectHandle::Name(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), name_); }
Napi::Value ObjectHandle::Loaded(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), loaded_); }

Napi::Value ObjectHandle::Maps(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct bpf_object* obj = Obj(env, "object_maps");
  Napi::Array out = Napi::Array::New(env);
  struct bpf_map* m;
  uint32_t i = 0;
  bpf_object__for_each_map(m, obj) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", bpf_map__name(m));
    o.Set("type", (uint32_t)bpf_map__type(m));
    o.Set("keySize", bpf_map__key_size(m));
    o.Set("valueSize", bpf_map__value_size(m));
    o.Set("maxEntries", bpf_map__max_entries(m));
    o.Set("flags", bpf_map__map_flags(m));
    o.Set("internal", bpf_map__is_internal(m));
    const char* pin = bpf_map__pin_path(m);
    o.Set("pinPath", pin ? Napi::Value(Napi::String::New(env, pin)) : env.Null());
    out.Set(i++, o);
  }
  return out;
}

Napi::Value ObjectHandle::Programs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct bpf_object* obj = Obj(env, "object_programs");
  Napi::Array out = Napi::Array::New(env);
  struct bpf_program* p;
  uint32_t i = 0;
  bpf_object__for_each_program(p, obj) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", bpf_program__name(p));
    o.Set("section", bpf_program__section_name(p));
    o.Set("type", (uint32_t)bpf_program__type(p));
    o.Set("expectedAttachType", (uint32_t)bpf_program__expected_attach_type(p));
    o.Set("autoload", bpf_program__autoload(p));
    // Helpers the program calls (BPF_CALL with src_reg 0; 1 is a call of a subprogram, 2 a kfunc), in order of
    // first call: what the kernel must offer its program type. Calls a CO-RE check guards are listed too.
    std::vector<uint32_t> helpers;
    const struct bpf_insn* insns = bpf_program__insns(p);
    for (size_t k = 0; insns && k < bpf_program__insn_cnt(p); k++) {
      const struct bpf_insn& in = insns[k];
      if (in.code != (BPF_JMP | BPF_CALL) || in.src_reg != 0) continue;
      if (std::find(helpers.begin(), helpers.end(), (uint32_t)in.imm) == helpers.end()) helpers.push_back(in.imm);
    }
    Napi::Array h = Napi::Array::New(env, helpers.size());
    for (size_t k = 0; k < helpers.size(); k++) h.Set(k, helpers[k]);
    o.Set("helpers", h);
    out.Set(i++, o);
  }
  return out;
}

// Global variables of .rodata/.data/.bss, found through the object's BTF datasecs.
namespace {
struct VarLoc {
  struct bpf_map* map;
  uint32_t offset;
  uint32_t size;
  std::string section;
};

template <typename F>
void ForEachVar(struct bpf_object* obj, F&& fn) {
  struct btf* btf = bpf_object__btf(obj);
  if (!btf) return;
  struct bpf_map* m;
  bpf_object__for_each_map(m, obj) {
    if (!bpf_map__is_internal(m)) continue;
    std::string mname = bpf_map__name(m);
    auto dot = mname.rfind('.');
    if (dot == std::string::npos) continue;
    std::string sec = mname.substr(dot);  // ".rodata", ".data", ".bss"
    if (sec != ".rodata" && sec != ".data" && sec != ".bss") continue;
    int id = btf__find_by_name_kind(btf, sec.c_str(), BTF_KIND_DATASEC);
    if (id < 0) continue;
    const struct btf_type* t = btf__type_by_id(btf, id);
    const struct btf_var_secinfo* vs = btf_var_secinfos(t);
    for (int i = 0; i < btf_vlen(t); i++, vs++) {
      const struct btf_type* var = btf__type_by_id(btf, vs->type);
      const char* vname = btf__name_by_offset(btf, var->name_off);
      fn(std::string(vname), VarLoc{m, vs->offset, vs->size, sec});
    }
  }
}
}  // namespace

Napi::Value ObjectHandle::Constants(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env);
  uint32_t i = 0;
  ForEachVar(Obj(env, "object_constants"), [&](const std::string& name, const VarLoc& loc) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", name);
    o.Set("size", loc.size);
    o.Set("section", loc.section);
    out.Set(i++, o);
  });
  return out;
}

// setConstant(name, bytes): bytes.length must equal the variable's size (checked here, sized in TS).
Napi::Value ObjectHandle::SetConstant(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = ArgString(info, 0, "name");
  auto bytes = ArgBuffer(info, 1, "value");
  RequireNotLoaded(env, "object_set_constant");
  bool found = false;
  ForEachVar(Obj(env, "object_set_constant"), [&](const std::string& vname, const VarLoc& loc) {
    if (found || vname != name) return;
    found = true;
    if (bytes.Length() != loc.size)
      throw Napi::RangeError::New(env, "constant " + name + " is " + std::to_string(loc.size) + " bytes, got " +
                                           std::to_string(bytes.Length()));
    size_t sz = 0;
    // Writable until load: libbpf 1.1 declares it const, but the memory is the map's initial image.
    void* data = const_cast<void*>(bpf_map__initial_value(loc.map, &sz));
    if (!data || loc.offset + loc.size > sz) ThrowBpf(env, "object_set_constant", name_ + "/" + name, EINVAL);
    memcpy((uint8_t*)data + loc.offset, bytes.Data(), loc.size);
  });
  if (!found) ThrowBpf(env, "object_set_constant", name_ + "/" + name, ENOENT);
  return env.Undefined();
}

Napi::Value ObjectHandle::SetMaxEntries(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = ArgString(info, 0, "map");
  uint32_t n = ArgU32(info, 1, "maxEntries");
  RequireNotLoaded(env, "map_set_max_entries");
  int err = bpf_map__set_max_entries(FindMap(env, name, "map_set_max_entries"), n);
  if (err) ThrowBpf(env, "map_set_max_entries", name_ + "/" + name, -err);
  return env.Undefined();
}

Napi::Value ObjectHandle::SetPinPath(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = ArgString(info, 0, "map");
  RequireNotLoaded(env, "map_set_pin_path");
  struct bpf_map* m = FindMap(env, name, "map_set_pin_path");
  int err = info[1].IsNull() ? bpf_map__set_pin_path(m, nullptr)
                             : bpf_map__set_pin_path(m, ArgString(info, 1, "path").c_str());
  if (err) ThrowBpf(env, "map_set_pin_path", name_ + "/" + name, -err);
  return env.Undefined();
}

Napi::Value ObjectHandle::SetAutoload(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = ArgString(info, 0, "program");
  RequireNotLoaded(env, "program_set_autoload");
  int err = bpf_program__set_autoload(FindProgram(env, name, "program_set_autoload"), info[1].ToBoolean());
  if (err) ThrowBpf(env, "program_set_autoload", name_ + "/" + name, -err);
  return env.Undefined();
}

namespace {
// The verifier gives up with EAGAIN when a signal is pending for the loading thread, and libbpf retries a few
// times only: a thread signalled often (a sampling profiler's SIGPROF every 0.2-1 ms, a timer) never loaded a
// large program. Asynchronous signals are held for the thread while the object loads and delivered after it;
// the synchronous ones (a fault in this thread) stay unblocked. Other threads still take process-wide signals.
class HoldSignals {
 public:
  HoldSignals() {
    sigset_t all;
    sigfillset(&all);
    for (int s : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT, SIGSYS}) sigdelset(&all, s);
    held_ = pthread_sigmask(SIG_BLOCK, &all, &old_) == 0;
  }
  ~HoldSignals() {
    if (held_) pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  HoldSignals(const HoldSignals&) = delete;
  HoldSignals& operator=(const HoldSignals&) = delete;

 private:
  sigset_t old_;
  bool held_;
};
}  // namespace

Napi::Value ObjectHandle::Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct bpf_object* obj = Obj(env, "object_load");
  RequireNotLoaded(env, "object_load");
  LogCapture cap;
  int err;
  {
    HoldSignals hold;
    err = bpf_object__load(obj);
  }
  if (err) {
    std::string all = cap.Take();
    std::string subject = name_;
    static const std::regex failed_prog("prog '([^']+)': (?:BPF program load failed|failed to load)");
    static const std::regex failed_map("map '([^']+)': (?:failed|can't)");
    std::smatch m;
    if (std::regex_search(all, m, failed_prog) || std::regex_search(all, m, failed_map)) subject += "/" + m[1].str();
    ThrowBpf(env, "object_load", subject, -err, all);
  }
  loaded_ = true;
  return env.Undefined();
}

Napi::Value ObjectHandle::OpenMap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = ArgString(info, 0, "map");
  struct bpf_map* m = FindMap(env, name, "map_open");
  int fd = bpf_map__fd(m);
  if (fd < 0) ThrowBpf(env, "map_open", name_ + "/" + name + " (object not loaded)", EBADF);
  return MapHandle::FromFd(env, fd, true);
}

Napi::Value ObjectHandle::OpenProgram(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = ArgString(info, 0, "program");
  struct bpf_program* p = FindProgram(env, name, "program_open");
  int fd = bpf_program__fd(p);
  if (fd < 0) ThrowBpf(env, "program_open", name_ + "/" + name + " (object not loaded or autoload off)", EBADF);
  return ProgramHandle::FromFd(env, fd, true, (int)bpf_program__expected_attach_type(p));
}

}  // namespace mesh
