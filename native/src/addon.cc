// The addon's entry point: registers the handle classes and functions, and the environment cleanup hook.
#include <bpf/libbpf.h>
#include <napi.h>

#include <vector>

#include "addon.h"
#include "errors.h"
#include "link.h"
#include "map.h"
#include "object.h"
#include "probe.h"
#include "program.h"
#include "ringbuf.h"
#include "sys.h"

namespace mesh {

const napi_type_tag kMapTag = {0x6d657368'6d617000ULL, 0x1b2c3d4e5f607182ULL};
const napi_type_tag kProgramTag = {0x6d657368'70726f67ULL, 0x2b3c4d5e6f708192ULL};
const napi_type_tag kObjectTag = {0x6d657368'6f626a00ULL, 0x3b4c5d6e7f8091a2ULL};
const napi_type_tag kLinkTag = {0x6d657368'6c696e6bULL, 0x4b5c6d7e8f90a1b2ULL};

AddonData* Data(Napi::Env env) { return env.GetInstanceData<AddonData>(); }

void Closable::Track(napi_env env) {
  env_ = env;
  Data(Napi::Env(env))->live.insert(this);
}

void Closable::Close() {
  if (!env_) return;
  napi_env env = env_;
  env_ = nullptr;
  Release();
  AddonData* d = Data(Napi::Env(env));
  if (d) d->live.erase(this);
}

// setErrorClasses(BpfError, NotSupportedError): errors thrown by native code are instances of the TS classes.
static Napi::Value SetErrorClasses(const Napi::CallbackInfo& info) {
  AddonData* d = Data(info.Env());
  if (!info[0].IsFunction() || !info[1].IsFunction())
    throw Napi::TypeError::New(info.Env(), "setErrorClasses(BpfError, NotSupportedError)");
  d->bpf_error = Napi::Persistent(info[0].As<Napi::Function>());
  d->not_supported_error = Napi::Persistent(info[1].As<Napi::Function>());
  return info.Env().Undefined();
}

// liveHandles() → how many native handles are open (for leak checks).
static Napi::Value LiveHandles(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), (double)Data(info.Env())->live.size());
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  InstallLibbpfPrint();
  auto* data = new AddonData();
  env.SetInstanceData<AddonData>(data);
  // At environment teardown every handle still open is closed, so no fd or attachment outlives it by accident.
  env.AddCleanupHook([data]() {
    std::vector<Closable*> open(data->live.begin(), data->live.end());
    for (Closable* c : open) c->Close();
    data->live.clear();
  });

  Napi::Function object = ObjectHandle::Init(env);
  Napi::Function map = MapHandle::Init(env);
  Napi::Function program = ProgramHandle::Init(env);
  Napi::Function link = LinkHandle::Init(env);
  Napi::Function ringbuf = RingBufferHandle::Init(env);
  data->object_ctor = Napi::Persistent(object);
  data->map_ctor = Napi::Persistent(map);
  data->program_ctor = Napi::Persistent(program);
  data->link_ctor = Napi::Persistent(link);
  data->ringbuf_ctor = Napi::Persistent(ringbuf);
  exports.Set("ObjectHandle", object);
  exports.Set("MapHandle", map);
  exports.Set("ProgramHandle", program);
  exports.Set("LinkHandle", link);
  exports.Set("RingBufferHandle", ringbuf);
  exports.Set("embeddedObjects", Napi::Function::New<EmbeddedObjects>(env, "embeddedObjects"));
  exports.Set("setErrorClasses", Napi::Function::New<SetErrorClasses>(env, "setErrorClasses"));
  exports.Set("liveHandles", Napi::Function::New<LiveHandles>(env, "liveHandles"));
  exports.Set("libbpfVersion", Napi::String::New(env, std::to_string(libbpf_major_version()) + "." +
                                                          std::to_string(libbpf_minor_version())));
  InitSys(env, exports);
  InitProbe(env, exports);
  InitAttach(env, exports);
  return exports;
}

}  // namespace mesh

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return mesh::Init(env, exports); }

NODE_API_MODULE(mesh_bpf, InitModule)
