#include "probe.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "errors.h"

namespace mesh {

namespace {
constexpr uint32_t kTcxIngress = 46;

// Loads "r0 = ret; exit" as a program of the given type; -errno on failure.
int LoadTrivial(enum bpf_prog_type type, enum bpf_attach_type expected, int32_t ret = 0) {
  struct bpf_insn insns[] = {
      {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .src_reg = 0, .off = 0, .imm = ret},
      {.code = BPF_JMP | BPF_EXIT, .dst_reg = 0, .src_reg = 0, .off = 0, .imm = 0},
  };
  LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = expected);
  int fd = bpf_prog_load(type, "mesh_probe", "GPL", insns, 2, &opts);
  return fd < 0 ? -errno : fd;
}

// Asks link_create for an attachment that cannot succeed: the error tells whether the kernel knows the
// attach mode (a lookup error for the bad target) or not (EINVAL), with no side effect either way.
Napi::Value ProbeLink(Napi::Env env, enum bpf_prog_type type, enum bpf_attach_type attach, int bad_target,
                      int known_errno) {
  int prog = LoadTrivial(type, attach);
  if (prog < 0) {
    if (prog == -EPERM) ThrowBpf(env, "probe", "load a probe program", EPERM);
    return Napi::Boolean::New(env, false);
  }
  int fd = bpf_link_create(prog, bad_target, attach, nullptr);
  int err = fd < 0 ? errno : 0;
  if (fd >= 0) close(fd);
  close(prog);
  return Napi::Boolean::New(env, fd >= 0 || err == known_errno);
}
}  // namespace

// programType(type) / mapType(type) → 1 supported, 0 not, negative errno when libbpf cannot tell.
static Napi::Value ProbeProgType(const Napi::CallbackInfo& info) {
  int r = libbpf_probe_bpf_prog_type((enum bpf_prog_type)ArgU32(info, 0, "type"), nullptr);
  return Napi::Number::New(info.Env(), r);
}

static Napi::Value ProbeMapType(const Napi::CallbackInfo& info) {
  int r = libbpf_probe_bpf_map_type((enum bpf_map_type)ArgU32(info, 0, "type"), nullptr);
  return Napi::Number::New(info.Env(), r);
}

// Loads "call helper; exit" and reads the verifier's verdict. libbpf 1.1's own helper probe misses the wording
// newer kernels use ("program of this type cannot use helper"), so the check lives here.
static Napi::Value ProbeHelper(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto type = (enum bpf_prog_type)ArgU32(info, 0, "programType");
  int32_t helper = (int32_t)ArgU32(info, 1, "helper");
  struct bpf_insn insns[] = {
      {.code = BPF_JMP | BPF_CALL, .dst_reg = 0, .src_reg = 0, .off = 0, .imm = helper},
      {.code = BPF_JMP | BPF_EXIT, .dst_reg = 0, .src_reg = 0, .off = 0, .imm = 0},
  };
  enum bpf_attach_type expected = (enum bpf_attach_type)0;
  if (type == BPF_PROG_TYPE_CGROUP_SOCK_ADDR) expected = BPF_CGROUP_INET4_CONNECT;
  if (type == BPF_PROG_TYPE_CGROUP_SOCKOPT) expected = BPF_CGROUP_GETSOCKOPT;
  if (type == BPF_PROG_TYPE_SK_LOOKUP) expected = BPF_SK_LOOKUP;
  // A helper may be offered to some attach types of a program type only (bpf_set_retval and sock_addr hooks).
  if (info.Length() > 2 && info[2].IsNumber()) expected = (enum bpf_attach_type)ArgU32(info, 2, "attachType");
  char log[4096] = "";
  LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = expected, .log_level = 1, .log_size = sizeof log,
              .log_buf = log);
  int fd = bpf_prog_load(type, "mesh_probe", "GPL", insns, 2, &opts);
  int err = fd < 0 ? errno : 0;
  if (fd >= 0) {
    close(fd);
    return Napi::Number::New(env, 1);
  }
  if (err == EPERM) ThrowBpf(env, "probe", "helper " + std::to_string(helper), EPERM);
  if (strstr(log, "invalid func ") || strstr(log, "unknown func ") || strstr(log, "cannot use helper"))
    return Napi::Number::New(env, 0);
  // The program type itself is unknown to this kernel.
  if (err == EINVAL && log[0] == '\0') return Napi::Number::New(env, 0);
  // Any other complaint is about arguments: the helper exists for this type.
  return Napi::Number::New(env, 1);
}

// attachType(programType, attachType) → whether a program of that type loads for that expected attach type:
// the kernel refuses an attach type it does not know (EINVAL) at load, before any attach.
static Napi::Value ProbeAttachType(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  // 1: a verdict every hook accepts (getpeername and recvmsg hooks must return 1).
  int fd = LoadTrivial((enum bpf_prog_type)ArgU32(info, 0, "programType"), (enum bpf_attach_type)ArgU32(info, 1, "attachType"), 1);
  if (fd == -EPERM) ThrowBpf(env, "probe", "load a probe program", EPERM);
  if (fd >= 0) close(fd);
  return Napi::Boolean::New(env, fd >= 0);
}

// attachModes() → { tcx, sockmapLink, cgroupLink, stats }
static Napi::Value ProbeAttach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("tcx", ProbeLink(env, BPF_PROG_TYPE_SCHED_CLS, (enum bpf_attach_type)kTcxIngress, 0x7fffffff, ENODEV));
  o.Set("sockmapLink", ProbeLink(env, BPF_PROG_TYPE_SK_MSG, BPF_SK_MSG_VERDICT, -1, EBADF));
  o.Set("cgroupLink", ProbeLink(env, BPF_PROG_TYPE_CGROUP_SKB, BPF_CGROUP_INET_INGRESS, -1, EBADF));
  int fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
  o.Set("stats", Napi::Boolean::New(env, fd >= 0));
  if (fd >= 0) close(fd);
  return o;
}

Napi::Object InitProbe(Napi::Env env, Napi::Object exports) {
  exports.Set("probeProgramType", Napi::Function::New<ProbeProgType>(env, "probeProgramType"));
  exports.Set("probeMapType", Napi::Function::New<ProbeMapType>(env, "probeMapType"));
  exports.Set("probeHelper", Napi::Function::New<ProbeHelper>(env, "probeHelper"));
  exports.Set("probeAttach", Napi::Function::New<ProbeAttach>(env, "probeAttach"));
  exports.Set("probeAttachType", Napi::Function::New<ProbeAttachType>(env, "probeAttachType"));
  return exports;
}

}  // namespace mesh
