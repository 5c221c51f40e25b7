// RingBufferHandle: consumes a BPF ring buffer from the libuv event loop. libbpf's epoll fd is watched by a
// uv_poll_t; when it is readable, every available record is copied out and handed to JS in one batch call.
// JS is never blocked and nothing spins: with no data, nothing runs.
#pragma once

#include <bpf/libbpf.h>
#include <napi.h>
#include <uv.h>

#include <string>
#include <vector>

#include "addon.h"

namespace mesh {

class RingBufferHandle : public Napi::ObjectWrap<RingBufferHandle>, public Closable {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit RingBufferHandle(const Napi::CallbackInfo& info);
  ~RingBufferHandle() override;

 private:
  static void OnPoll(uv_poll_t* handle, int status, int events);
  static int OnSample(void* ctx, void* data, size_t size);
  // Drains the ring into batch_ and delivers it; returns the number of records.
  size_t Drain(Napi::Env env, bool from_loop);

  Napi::Value Consume(const Napi::CallbackInfo& info);
  Napi::Value Ref(const Napi::CallbackInfo& info);
  Napi::Value Unref(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value JsClose(const Napi::CallbackInfo& info);
  void Release() override;

  struct ring_buffer* rb_ = nullptr;
  uv_poll_t* poll_ = nullptr;  // freed in the uv close callback
  Napi::FunctionReference callback_;
  Napi::ObjectReference self_;  // keeps the JS object alive while polling
  std::vector<std::string> batch_;
  size_t max_batch_;
  uint64_t delivered_ = 0, batches_ = 0;
  std::string name_;
};

}  // namespace mesh
