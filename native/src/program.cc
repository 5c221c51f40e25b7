#include "program.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "errors.h"

namespace mesh {

namespace {
bool ProgInfo(int fd, struct bpf_prog_info* out) {
  __u32 len = sizeof(*out);
  memset(out, 0, sizeof(*out));
  return bpf_obj_get_info_by_fd(fd, out, &len) == 0;
}

struct ProgInit {
  OwnedFd fd;
  int expected_attach_type;
};
}  // namespace

Napi::Function ProgramHandle::Init(Napi::Env env) {
  return DefineClass(env, "ProgramHandle",
                     {
                         StaticMethod<&ProgramHandle::OpenPinned>("openPinned"),
                         StaticMethod<&ProgramHandle::OpenById>("openById"),
                         InstanceMethod<&ProgramHandle::Info>("info"),
                         InstanceAccessor<&ProgramHandle::GetFd>("fd"),
                         InstanceMethod<&ProgramHandle::TestRun>("testRun"),
                         InstanceMethod<&ProgramHandle::Pin>("pin"),
                         InstanceMethod<&ProgramHandle::JsClose>("close"),
                     });
}

Napi::Object ProgramHandle::FromFd(Napi::Env env, int fd, bool dup, int expected_attach_type) {
  OwnedFd own = dup ? OwnedFd::Dup(fd) : OwnedFd(fd);
  if (!own.valid()) ThrowBpf(env, "program_open", "fd " + std::to_string(fd), errno);
  ProgInit init{std::move(own), expected_attach_type};
  return Data(env)->program_ctor.New({Napi::External<ProgInit>::New(env, &init)});
}

ProgramHandle::ProgramHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ProgramHandle>(info) {
  Napi::Env env = info.Env();
  if (!info[0].IsExternal()) throw Napi::TypeError::New(env, "ProgramHandle is created by the library, not by new");
  ProgInit& init = *info[0].As<Napi::External<ProgInit>>().Data();
  fd_ = std::move(init.fd);
  Value().TypeTag(&kProgramTag);
  struct bpf_prog_info pi;
  if (!ProgInfo(fd_.get(), &pi)) {
    int err = errno;
    ThrowBpf(env, "program_info", "fd " + std::to_string(fd_.get()), err == EINVAL ? EBADF : err);
  }
  name_ = pi.name;
  type_ = pi.type;
  expected_attach_type_ = init.expected_attach_type;
  Track(env);
}

ProgramHandle::~ProgramHandle() { Close(); }

void ProgramHandle::Release() { fd_.reset(); }

int ProgramHandle::Fd(Napi::Env env) const {
  if (!fd_.valid()) throw Napi::TypeError::New(env, "program " + name_ + " is closed");
  return fd_.get();
}

Napi::Value ProgramHandle::JsClose(const Napi::CallbackInfo& info) {
  Close();
  return info.Env().Undefined();
}

Napi::Value ProgramHandle::GetFd(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), fd_.get()); }

Napi::Value ProgramHandle::OpenPinned(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "path");
  OwnedFd fd(bpf_obj_get(path.c_str()));
  if (!fd.valid()) ThrowBpf(env, "program_open_pinned", path, errno);
  struct bpf_prog_info pi;
  if (!ProgInfo(fd.get(), &pi)) ThrowBpf(env, "program_open_pinned", path + " (not a program)", EINVAL);
  return FromFd(env, fd.release(), false);
}

Napi::Value ProgramHandle::OpenById(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t id = ArgU32(info, 0, "id");
  int fd = bpf_prog_get_fd_by_id(id);
  if (fd < 0) ThrowBpf(env, "program_open_by_id", "id " + std::to_string(id), errno);
  return FromFd(env, fd, false);
}

Napi::Value ProgramHandle::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct bpf_prog_info pi;
  if (!ProgInfo(Fd(env), &pi)) ThrowBpf(env, "program_info", name_, errno);
  char tag[2 * BPF_TAG_SIZE + 1];
  for (int i = 0; i < BPF_TAG_SIZE; i++) snprintf(tag + 2 * i, 3, "%02x", pi.tag[i]);
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", name_);
  o.Set("type", pi.type);
  o.Set("id", pi.id);
  o.Set("tag", std::string(tag));
  o.Set("expectedAttachType", expected_attach_type_);
  o.Set("runCount", Napi::BigInt::New(env, (uint64_t)pi.run_cnt));
  o.Set("runTimeNs", Napi::BigInt::New(env, (uint64_t)pi.run_time_ns));
  o.Set("verifiedInstructions", pi.verified_insns);
  o.Set("loadTimeNs", Napi::BigInt::New(env, (uint64_t)pi.load_time));
  // A second call fills the ids of the maps the program uses (the first one only counts them).
  std::vector<__u32> map_ids(pi.nr_map_ids);
  if (!map_ids.empty()) {
    struct bpf_prog_info ids;
    memset(&ids, 0, sizeof ids);
    ids.nr_map_ids = map_ids.size();
    ids.map_ids = (__u64)(uintptr_t)map_ids.data();
    __u32 len = sizeof ids;
    if (bpf_obj_get_info_by_fd(Fd(env), &ids, &len)) ThrowBpf(env, "program_info", name_, errno);
    map_ids.resize(std::min<size_t>(ids.nr_map_ids, map_ids.size()));
  }
  Napi::Array maps = Napi::Array::New(env, map_ids.size());
  for (size_t i = 0; i < map_ids.size(); i++) maps.Set(i, map_ids[i]);
  o.Set("mapIds", maps);
  return o;
}

// testRun(data | null, dataOutSize, ctx | null, ctxOutSize, repeat, flags, cpu)
//   → { retval, durationNs, data?: Buffer, ctx?: Buffer }
Napi::Value ProgramHandle::TestRun(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = Fd(env);
  LIBBPF_OPTS(bpf_test_run_opts, opts);
  std::vector<uint8_t> data_out, ctx_out;
  if (info[0].IsBuffer()) {
    auto in = info[0].As<Napi::Buffer<uint8_t>>();
    opts.data_in = in.Data();
    opts.data_size_in = in.Length();
  }
  uint32_t data_out_size = info[1].As<Napi::Number>().Uint32Value();
  if (data_out_size) {
    data_out.resize(data_out_size);
    opts.data_out = data_out.data();
    opts.data_size_out = data_out_size;
  }
  if (info[2].IsBuffer()) {
    auto in = info[2].As<Napi::Buffer<uint8_t>>();
    opts.ctx_in = in.Data();
    opts.ctx_size_in = in.Length();
  }
  uint32_t ctx_out_size = info[3].As<Napi::Number>().Uint32Value();
  if (ctx_out_size) {
    ctx_out.resize(ctx_out_size);
    opts.ctx_out = ctx_out.data();
    opts.ctx_size_out = ctx_out_size;
  }
  opts.repeat = info[4].As<Napi::Number>().Uint32Value();
  opts.flags = info[5].As<Napi::Number>().Uint32Value();
  opts.cpu = info[6].As<Napi::Number>().Uint32Value();
  if (bpf_prog_test_run_opts(fd, &opts)) {
    int err = errno;
    // ENOSPC: the output buffer was too small; the kernel still reports the size it needed.
    if (err == ENOSPC)
      ThrowBpf(env, "program_test_run",
               name_ + " (output needs " + std::to_string(opts.data_size_out) + " bytes)", err);
    ThrowBpf(env, "program_test_run", name_, err);
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("retval", Napi::Number::New(env, (int32_t)opts.retval));
  o.Set("durationNs", opts.duration);
  if (data_out_size)
    o.Set("data", Napi::Buffer<uint8_t>::Copy(env, data_out.data(), std::min(opts.data_size_out, data_out_size)));
  if (ctx_out_size)
    o.Set("ctx", Napi::Buffer<uint8_t>::Copy(env, ctx_out.data(), std::min(opts.ctx_size_out, ctx_out_size)));
  return o;
}

Napi::Value ProgramHandle::Pin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "path");
  if (bpf_obj_pin(Fd(env), path.c_str())) ThrowBpf(env, "program_pin", name_ + " at " + path, errno);
  return env.Undefined();
}

}  // namespace mesh
