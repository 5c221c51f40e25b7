#include "map.h"

#include <bpf/libbpf.h>

#include <algorithm>
#include <vector>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "errors.h"

namespace mesh {

namespace {
// Reads the kernel's description of a map fd; fails when the fd is not a map.
bool MapInfo(int fd, struct bpf_map_info* out) {
  __u32 len = sizeof(*out);
  memset(out, 0, sizeof(*out));
  return bpf_obj_get_info_by_fd(fd, out, &len) == 0;
}
}  // namespace

Napi::Function MapHandle::Init(Napi::Env env) {
  return DefineClass(env, "MapHandle",
                     {
                         StaticMethod<&MapHandle::Create>("create"),
                         StaticMethod<&MapHandle::OpenPinned>("openPinned"),
                         StaticMethod<&MapHandle::OpenById>("openById"),
                         InstanceMethod<&MapHandle::Info>("info"),
                         InstanceAccessor<&MapHandle::GetFd>("fd"),
                         InstanceMethod<&MapHandle::BindScratch>("bindScratch"),
                         InstanceMethod<&MapHandle::LookupScratch>("lookupScratch"),
                         InstanceMethod<&MapHandle::UpdateScratch>("updateScratch"),
                         InstanceMethod<&MapHandle::DeleteScratch>("deleteScratch"),
                         InstanceMethod<&MapHandle::Lookup>("lookup"),
                         InstanceMethod<&MapHandle::LookupAndDelete>("lookupAndDelete"),
                         InstanceMethod<&MapHandle::Update>("update"),
                         InstanceMethod<&MapHandle::Delete>("delete"),
                         InstanceMethod<&MapHandle::NextKey>("nextKey"),
                         InstanceMethod<&MapHandle::CountKeys>("countKeys"),
                         InstanceMethod<&MapHandle::LookupBatch>("lookupBatch"),
                         InstanceMethod<&MapHandle::UpdateBatch>("updateBatch"),
                         InstanceMethod<&MapHandle::DeleteBatch>("deleteBatch"),
                         InstanceMethod<&MapHandle::Pin>("pin"),
                         InstanceMethod<&MapHandle::Freeze>("freeze"),
                         InstanceMethod<&MapHandle::JsClose>("close"),
                     });
}

size_t MapHandle::ValueBytes() const {
  switch (info_.type) {
    case BPF_MAP_TYPE_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_ARRAY:
    case BPF_MAP_TYPE_LRU_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE: {
      int cpus = libbpf_num_possible_cpus();
      return ((info_.value_size + 7) / 8 * 8) * (cpus > 0 ? cpus : 1);
    }
    default:
      return info_.value_size;
  }
}

// The kernel reads and writes these buffers by the map's sizes: a short one would be overrun.
void MapHandle::CheckSize(Napi::Env env, const Napi::Buffer<uint8_t>& buf, size_t elem, size_t count,
                          const char* what) const {
  if (buf.Length() < elem * count)
    throw Napi::RangeError::New(env, "map " + Subject() + ": " + what + " buffer has " + std::to_string(buf.Length()) +
                                         " bytes, needs " + std::to_string(elem * count));
}

std::string MapHandle::Subject() const { return name_.empty() ? "(unnamed, id " + std::to_string(info_.id) + ")" : name_; }

Napi::Object MapHandle::FromFd(Napi::Env env, int fd, bool dup) {
  OwnedFd own = dup ? OwnedFd::Dup(fd) : OwnedFd(fd);
  if (!own.valid()) ThrowBpf(env, "map_open", "fd " + std::to_string(fd), errno);
  return Data(env)->map_ctor.New({Napi::External<OwnedFd>::New(env, &own)});
}

// Constructed only through FromFd (an External carrying an owned fd), so JS cannot forge a handle.
MapHandle::MapHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<MapHandle>(info) {
  Napi::Env env = info.Env();
  if (!info[0].IsExternal()) throw Napi::TypeError::New(env, "MapHandle is created by the library, not by new");
  fd_ = std::move(*info[0].As<Napi::External<OwnedFd>>().Data());
  Value().TypeTag(&kMapTag);
  if (!MapInfo(fd_.get(), &info_)) {
    int err = errno;
    ThrowBpf(env, "map_info", "fd " + std::to_string(fd_.get()), err == EINVAL ? EBADF : err);
  }
  name_ = info_.name;
  Track(env);
}

MapHandle::~MapHandle() { Close(); }

void MapHandle::Release() {
  fd_.reset();
  bound_ = false;
  if (!scratch_key_.IsEmpty()) scratch_key_.Reset();
  if (!scratch_value_.IsEmpty()) scratch_value_.Reset();
}

int MapHandle::Fd(Napi::Env env) const {
  if (!fd_.valid()) throw Napi::TypeError::New(env, "map " + name_ + " is closed");
  return fd_.get();
}

Napi::Value MapHandle::JsClose(const Napi::CallbackInfo& info) {
  Close();
  return info.Env().Undefined();
}

Napi::Value MapHandle::GetFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fd_.get()); }

// create({type, keySize, valueSize, maxEntries, flags, name, innerMapFd, numaNode})
Napi::Value MapHandle::Create(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsObject()) throw Napi::TypeError::New(env, "create options must be an object");
  Napi::Object o = info[0].As<Napi::Object>();
  auto u32 = [&](const char* k, uint32_t def) -> uint32_t {
    Napi::Value v = o.Get(k);
    return v.IsUndefined() ? def : v.As<Napi::Number>().Uint32Value();
  };
  std::string name = o.Get("name").IsString() ? o.Get("name").As<Napi::String>().Utf8Value() : "";
  LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = u32("flags", 0));
  Napi::Value inner = o.Get("innerMapFd");
  if (inner.IsNumber()) opts.inner_map_fd = inner.As<Napi::Number>().Uint32Value();
  int fd = bpf_map_create((enum bpf_map_type)u32("type", 0), name.empty() ? nullptr : name.c_str(),
                          u32("keySize", 0), u32("valueSize", 0), u32("maxEntries", 0), &opts);
  if (fd < 0) ThrowBpf(env, "map_create", name.empty() ? "(unnamed)" : name, errno);
  return FromFd(env, fd, false);
}

Napi::Value MapHandle::OpenPinned(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "path");
  OwnedFd fd(bpf_obj_get(path.c_str()));
  if (!fd.valid()) ThrowBpf(env, "map_open_pinned", path, errno);
  struct bpf_map_info mi;
  if (!MapInfo(fd.get(), &mi)) ThrowBpf(env, "map_open_pinned", path + " (not a map)", EINVAL);
  return FromFd(env, fd.release(), false);
}

Napi::Value MapHandle::OpenById(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t id = ArgU32(info, 0, "id");
  int fd = bpf_map_get_fd_by_id(id);
  if (fd < 0) ThrowBpf(env, "map_open_by_id", "id " + std::to_string(id), errno);
  return FromFd(env, fd, false);
}

Napi::Value MapHandle::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Fd(env);
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", name_);
  o.Set("type", info_.type);
  o.Set("id", info_.id);
  o.Set("keySize", info_.key_size);
  o.Set("valueSize", info_.value_size);
  o.Set("maxEntries", info_.max_entries);
  o.Set("flags", info_.map_flags);
  return o;
}

// A key argument that may be absent only for maps without keys (queues, stacks): its data, or nullptr.
void* MapHandle::KeyOrNull(Napi::Env env, const Napi::Value& v) const {
  if (v.IsBuffer()) {
    auto k = v.As<Napi::Buffer<uint8_t>>();
    CheckSize(env, k, info_.key_size, 1, "key");
    return k.Data();
  }
  if (info_.key_size) throw Napi::TypeError::New(env, "map " + Subject() + ": key must be a Buffer");
  return nullptr;
}

// The three single-element syscalls, shared by the argument-taking and the bound-buffer entry points:
// an absent key is `false`, any other failure a BpfError.
Napi::Value MapHandle::DoLookup(Napi::Env env, void* key, void* value, uint64_t flags) {
  int fd = Fd(env);
  int err = flags ? bpf_map_lookup_elem_flags(fd, key, value, flags) : bpf_map_lookup_elem(fd, key, value);
  if (err) {
    if (errno == ENOENT) return Napi::Boolean::New(env, false);
    ThrowBpf(env, "map_lookup", Subject(), errno);
  }
  return Napi::Boolean::New(env, true);
}

void MapHandle::DoUpdate(Napi::Env env, void* key, void* value, uint64_t flags) {
  if (bpf_map_update_elem(Fd(env), info_.key_size ? key : nullptr, value, flags)) ThrowBpf(env, "map_update", Subject(), errno);
}

Napi::Value MapHandle::DoDelete(Napi::Env env, void* key) {
  if (bpf_map_delete_elem(Fd(env), key)) {
    if (errno == ENOENT) return Napi::Boolean::New(env, false);
    ThrowBpf(env, "map_delete", Subject(), errno);
  }
  return Napi::Boolean::New(env, true);
}

// bindScratch(key, value): the buffers the *Scratch calls read keys from and write values to. Sizes are
// checked against the map's here, once; the references keep the buffers alive while bound.
Napi::Value MapHandle::BindScratch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Fd(env);
  auto key = ArgBuffer(info, 0, "key");
  auto value = ArgBuffer(info, 1, "value");
  CheckSize(env, key, info_.key_size, 1, "key");
  CheckSize(env, value, ValueBytes(), 1, "value");
  scratch_key_ = Napi::Persistent(key);
  scratch_value_ = Napi::Persistent(value);
  bound_ = true;
  return env.Undefined();
}

MapHandle::Scratch MapHandle::BoundScratch(Napi::Env env) {
  Fd(env);
  if (!bound_) throw Napi::TypeError::New(env, "no scratch buffers bound");
  Napi::Buffer<uint8_t> key = scratch_key_.Value();
  Napi::Buffer<uint8_t> value = scratch_value_.Value();
  // A detached buffer has length 0.
  if (key.Length() < info_.key_size || value.Length() < ValueBytes())
    throw Napi::TypeError::New(env, "map " + name_ + ": a scratch buffer was detached (its ArrayBuffer transferred)");
  return {key.Data(), value.Data()};
}

// lookupScratch() → true (value written to the bound value buffer) or false when the key is absent.
Napi::Value MapHandle::LookupScratch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Scratch s = BoundScratch(env);
  return DoLookup(env, s.key, s.value, 0);
}

// updateScratch(flags): writes the bound key → the bound value.
Napi::Value MapHandle::UpdateScratch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Scratch s = BoundScratch(env);
  DoUpdate(env, s.key, s.value, info[0].IsNumber() ? info[0].As<Napi::Number>().Int64Value() : 0);
  return env.Undefined();
}

// deleteScratch() → false when the bound key was absent.
Napi::Value MapHandle::DeleteScratch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return DoDelete(env, BoundScratch(env).key);
}

// lookup(key, out, flags) → true, or false when the key is absent.
Napi::Value MapHandle::Lookup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto key = ArgBuffer(info, 0, "key");
  auto out = ArgBuffer(info, 1, "value");
  CheckSize(env, key, info_.key_size, 1, "key");
  CheckSize(env, out, ValueBytes(), 1, "value");
  return DoLookup(env, key.Data(), out.Data(), info[2].IsNumber() ? info[2].As<Napi::Number>().Int64Value() : 0);
}

Napi::Value MapHandle::LookupAndDelete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Fd(env);
  void* key = KeyOrNull(env, info[0]);
  auto out = ArgBuffer(info, 1, "value");
  CheckSize(env, out, ValueBytes(), 1, "value");
  if (bpf_map_lookup_and_delete_elem(fd, key, out.Data())) {
    if (errno == ENOENT) return Napi::Boolean::New(env, false);
    ThrowBpf(env, "map_lookup_and_delete", Subject(), errno);
  }
  return Napi::Boolean::New(env, true);
}

Napi::Value MapHandle::Update(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  void* key = KeyOrNull(env, info[0]);
  auto value = ArgBuffer(info, 1, "value");
  CheckSize(env, value, ValueBytes(), 1, "value");
  DoUpdate(env, key, value.Data(), info[2].IsNumber() ? info[2].As<Napi::Number>().Int64Value() : 0);
  return env.Undefined();
}

Napi::Value MapHandle::Delete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto key = ArgBuffer(info, 0, "key");
  CheckSize(env, key, info_.key_size, 1, "key");
  return DoDelete(env, key.Data());
}

// nextKey(key | null, out) → false after the last key.
Napi::Value MapHandle::NextKey(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Fd(env);
  void* key = nullptr;
  if (info[0].IsBuffer()) {
    auto k = info[0].As<Napi::Buffer<uint8_t>>();
    CheckSize(env, k, info_.key_size, 1, "key");
    key = k.Data();
  }
  auto out = ArgBuffer(info, 1, "next key");
  CheckSize(env, out, info_.key_size, 1, "next key");
  if (bpf_map_get_next_key(fd, key, out.Data())) {
    if (errno == ENOENT) return Napi::Boolean::New(env, false);
    ThrowBpf(env, "map_next_key", Subject(), errno);
  }
  return Napi::Boolean::New(env, true);
}

// countKeys() → keys in the map, walked here rather than one JS call per key. Bounded by max_entries: a key
// deleted under the walk restarts it from the first key, which must not loop forever.
Napi::Value MapHandle::CountKeys(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Fd(env);
  const size_t size = std::max<size_t>(info_.key_size, 1);
  std::vector<uint8_t> cur(size), next(size);
  void* prev = nullptr;
  uint32_t n = 0;
  while (n < info_.max_entries) {
    if (bpf_map_get_next_key(fd, prev, next.data())) {
      if (errno == ENOENT) break;
      ThrowBpf(env, "map_next_key", Subject(), errno);
    }
    cur.swap(next);
    prev = cur.data();
    n++;
  }
  return Napi::Number::New(env, n);
}

// lookupBatch(inToken | null, outToken, keys, values, count, elemFlags, andDelete) → [count, done]
Napi::Value MapHandle::LookupBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Fd(env);
  // The resume token is a key (arrays) or a bucket index (hashes): at least max(key size, 8) bytes.
  const size_t token = std::max<size_t>(info_.key_size, 8);
  void* in = nullptr;
  if (info[0].IsBuffer()) {
    auto t = info[0].As<Napi::Buffer<uint8_t>>();
    CheckSize(env, t, token, 1, "batch token");
    in = t.Data();
  }
  auto outTok = ArgBuffer(info, 1, "batch token");
  auto keysBuf = ArgBuffer(info, 2, "keys");
  auto valuesBuf = ArgBuffer(info, 3, "values");
  __u32 count = ArgU32(info, 4, "count");
  CheckSize(env, outTok, token, 1, "batch token");
  CheckSize(env, keysBuf, info_.key_size, count, "keys");
  CheckSize(env, valuesBuf, ValueBytes(), count, "values");
  void* out = outTok.Data();
  void* keys = keysBuf.Data();
  void* values = valuesBuf.Data();
  LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = (__u64)info[5].As<Napi::Number>().Int64Value());
  bool and_delete = info[6].ToBoolean();
  int err = and_delete ? bpf_map_lookup_and_delete_batch(fd, in, out, keys, values, &count, &opts)
                       : bpf_map_lookup_batch(fd, in, out, keys, values, &count, &opts);
  bool done = false;
  if (err) {
    if (errno != ENOENT) ThrowBpf(env, and_delete ? "map_lookup_and_delete_batch" : "map_lookup_batch", Subject(), errno);
    done = true;
  }
  Napi::Array r = Napi::Array::New(env, 2);
  r.Set(0u, count);
  r.Set(1u, done);
  return r;
}

// updateBatch(keys, values, count, elemFlags) → count written
Napi::Value MapHandle::UpdateBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Fd(env);
  auto keysBuf = ArgBuffer(info, 0, "keys");
  auto valuesBuf = ArgBuffer(info, 1, "values");
  __u32 count = ArgU32(info, 2, "count");
  CheckSize(env, keysBuf, info_.key_size, count, "keys");
  CheckSize(env, valuesBuf, ValueBytes(), count, "values");
  LIBBPF_OPTS(bpf_map_batch_opts, opts, .elem_flags = (__u64)info[3].As<Napi::Number>().Int64Value());
  if (bpf_map_update_batch(fd, keysBuf.Data(), valuesBuf.Data(), &count, &opts))
    ThrowBpf(env, "map_update_batch", Subject() + " (after " + std::to_string(count) + " elements)", errno);
  return Napi::Number::New(env, count);
}

// deleteBatch(keys, count) → count deleted; a missing key stops the batch with ENOENT.
Napi::Value MapHandle::DeleteBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Fd(env);
  auto keysBuf = ArgBuffer(info, 0, "keys");
  __u32 count = ArgU32(info, 1, "count");
  CheckSize(env, keysBuf, info_.key_size, count, "keys");
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  if (bpf_map_delete_batch(fd, keysBuf.Data(), &count, &opts))
    ThrowBpf(env, "map_delete_batch", Subject() + " (after " + std::to_string(count) + " elements)", errno);
  return Napi::Number::New(env, count);
}

Napi::Value MapHandle::Pin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "path");
  if (bpf_obj_pin(Fd(env), path.c_str())) ThrowBpf(env, "map_pin", Subject() + " at " + path, errno);
  return env.Undefined();
}

Napi::Value MapHandle::Freeze(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (bpf_map_freeze(Fd(env))) ThrowBpf(env, "map_freeze", Subject(), errno);
  return env.Undefined();
}

}  // namespace mesh
