#include "ringbuf.h"

#include <errno.h>

#include "errors.h"
#include "map.h"

namespace mesh {

namespace {
constexpr int kBatchFull = -ECANCELED;
}

Napi::Function RingBufferHandle::Init(Napi::Env env) {
  return DefineClass(env, "RingBufferHandle",
                     {
                         InstanceMethod<&RingBufferHandle::Consume>("consume"),
                         InstanceMethod<&RingBufferHandle::Ref>("ref"),
                         InstanceMethod<&RingBufferHandle::Unref>("unref"),
                         InstanceMethod<&RingBufferHandle::Stats>("stats"),
                         InstanceMethod<&RingBufferHandle::JsClose>("close"),
                     });
}

// new RingBufferHandle(map, callback(batch: Buffer[]), maxBatch)
RingBufferHandle::RingBufferHandle(const Napi::CallbackInfo& info) : Napi::ObjectWrap<RingBufferHandle>(info) {
  Napi::Env env = info.Env();
  MapHandle* m = UnwrapTagged<MapHandle>(info[0], kMapTag, "map");
  if (!info[1].IsFunction()) throw Napi::TypeError::New(env, "callback must be a function");
  max_batch_ = info[2].IsNumber() ? info[2].As<Napi::Number>().Uint32Value() : 4096;
  if (max_batch_ == 0) max_batch_ = 4096;
  name_ = m->name();
  rb_ = ring_buffer__new(m->Fd(env), OnSample, this, nullptr);
  if (!rb_) ThrowBpf(env, "ringbuf_open", name_, errno);
  callback_ = Napi::Persistent(info[1].As<Napi::Function>());
  poll_ = new uv_poll_t;
  poll_->data = this;
  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env, &loop);
  int err = uv_poll_init(loop, poll_, ring_buffer__epoll_fd(rb_));
  if (!err) err = uv_poll_start(poll_, UV_READABLE, OnPoll);
  if (err) {
    delete poll_;
    poll_ = nullptr;
    ring_buffer__free(rb_);
    rb_ = nullptr;
    ThrowBpf(env, "ringbuf_poll", name_, -err);
  }
  self_ = Napi::Persistent(Value());
  Track(env);
}

RingBufferHandle::~RingBufferHandle() { Close(); }

// libbpf's ring_buffer owns its epoll fd and mappings; the map's fd stays the MapHandle's.
void RingBufferHandle::Release() {
  if (poll_) {
    uv_poll_stop(poll_);
    uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    poll_ = nullptr;
  }
  ring_buffer__free(rb_);
  rb_ = nullptr;
  callback_.Reset();
  if (!self_.IsEmpty()) self_.Reset();
}

int RingBufferHandle::OnSample(void* ctx, void* data, size_t size) {
  auto* self = static_cast<RingBufferHandle*>(ctx);
  self->batch_.emplace_back(static_cast<const char*>(data), size);
  // A negative return stops ring_buffer__consume after this record (already consumed), so one JS call never
  // carries more than max_batch_ records.
  return self->batch_.size() >= self->max_batch_ ? kBatchFull : 0;
}

size_t RingBufferHandle::Drain(Napi::Env env, bool from_loop) {
  size_t total = 0;
  while (rb_) {
    batch_.clear();
    int n = ring_buffer__consume(rb_);
    if (n < 0 && n != kBatchFull) {
      if (!from_loop) ThrowBpf(env, "ringbuf_consume", name_, -n);
      break;
    }
    if (batch_.empty()) break;
    Napi::HandleScope scope(env);
    Napi::Array arr = Napi::Array::New(env, batch_.size());
    for (size_t i = 0; i < batch_.size(); i++)
      arr.Set(i, Napi::Buffer<uint8_t>::Copy(env, (const uint8_t*)batch_[i].data(), batch_[i].size()));
    total += batch_.size();
    delivered_ += batch_.size();
    batches_++;
    bool full = batch_.size() >= max_batch_;
    batch_.clear();
    if (from_loop) {
      // MakeCallback runs microtasks and reports a throwing callback as an uncaught exception.
      callback_.MakeCallback(Value(), {arr});
    } else {
      callback_.Call(Value(), {arr});
    }
    if (!full) break;
  }
  return total;
}

void RingBufferHandle::OnPoll(uv_poll_t* handle, int status, int events) {
  auto* self = static_cast<RingBufferHandle*>(handle->data);
  if (!self || !self->rb_) return;
  Napi::Env env = self->Env();
  Napi::HandleScope scope(env);
  try {
    self->Drain(env, true);
  } catch (const Napi::Error& e) {
    // A throwing JS callback becomes an uncaught exception, as for any event-loop callback.
    napi_fatal_exception(env, e.Value());
  }
}

// consume(): synchronously drain what is there now (callback invoked), returns the record count.
Napi::Value RingBufferHandle::Consume(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!rb_) throw Napi::TypeError::New(env, "ring buffer " + name_ + " is closed");
  return Napi::Number::New(env, (double)Drain(env, false));
}

Napi::Value RingBufferHandle::Ref(const Napi::CallbackInfo& info) {
  if (poll_) uv_ref(reinterpret_cast<uv_handle_t*>(poll_));
  return info.Env().Undefined();
}

Napi::Value RingBufferHandle::Unref(const Napi::CallbackInfo& info) {
  if (poll_) uv_unref(reinterpret_cast<uv_handle_t*>(poll_));
  return info.Env().Undefined();
}

Napi::Value RingBufferHandle::Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("records", Napi::Number::New(env, (double)delivered_));
  o.Set("batches", Napi::Number::New(env, (double)batches_));
  return o;
}

Napi::Value RingBufferHandle::JsClose(const Napi::CallbackInfo& info) {
  Close();
  return info.Env().Undefined();
}

}  // namespace mesh
