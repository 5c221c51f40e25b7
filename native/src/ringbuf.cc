#include "ringbuf.h"

#include <errno.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/syscall.h>

#include <cstring>

#include "errors.h"
#include "map.h"

namespace mesh {

namespace {
constexpr int kBatchFull = -ECANCELED;
// Records the thread moves into the queue at a time while a long consume runs, so JS can start on them.
constexpr size_t kFlushEvery = 256;
constexpr uint32_t kRingReady = 0, kStop = 1;
// Reuse: the kept Buffer starts at kLentMin bytes and doubles to fit a batch, up to kLentMax; a larger batch gets
// a Buffer of its own. Chunks go back to the thread for its next records, up to kSpareChunks of up to kSpareMax.
constexpr size_t kLentMin = 64 << 10, kLentMax = 4 << 20;
constexpr size_t kSpareChunks = 8, kSpareMax = 1 << 20;
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

// new RingBufferHandle(map, callback(batch: Buffer[]), maxBatch, queueBytes, nice, pollMs, packed, reuse):
// queueBytes > 0 drains from a thread, at nice value `nice` when not 0, and also every pollMs ms when pollMs > 0
// (for producers that submit without waking the consumer); packed (thread mode) hands over one Buffer of records
// per batch, and with reuse that Buffer is a view of memory kept from batch to batch (valid during the call).
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
  double queue_bytes = info[3].IsNumber() ? info[3].As<Napi::Number>().DoubleValue() : 0;
  if (queue_bytes > 0) {
    queue_bytes_ = (size_t)queue_bytes;
    nice_ = info[4].IsNumber() ? info[4].As<Napi::Number>().Int32Value() : 0;
    poll_ms_ = info[5].IsNumber() ? info[5].As<Napi::Number>().Int32Value() : 0;
    packed_ = info[6].IsBoolean() && info[6].As<Napi::Boolean>().Value();
    reuse_ = packed_ && info[7].IsBoolean() && info[7].As<Napi::Boolean>().Value();
    StartThread(env);
    self_ = Napi::Persistent(Value());
    Track(env);
    return;
  }
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

void RingBufferHandle::StartThread(Napi::Env env) {
  uv_loop_t* loop = nullptr;
  napi_get_uv_event_loop(env, &loop);
  const char* op = "ringbuf_thread";
  int err = 0;
  async_ = new uv_async_t;
  async_->data = this;
  if ((err = uv_async_init(loop, async_, OnAsync))) {
    delete async_;
    async_ = nullptr;
    Release();
    ThrowBpf(env, op, name_, -err);
  }
  epoll_.reset(epoll_create1(EPOLL_CLOEXEC));
  stop_.reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  struct epoll_event ring_ev = {}, stop_ev = {};
  ring_ev.events = stop_ev.events = EPOLLIN;
  ring_ev.data.u32 = kRingReady;
  stop_ev.data.u32 = kStop;
  if (!epoll_.valid() || !stop_.valid() ||
      epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, ring_buffer__epoll_fd(rb_), &ring_ev) ||
      epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, stop_.get(), &stop_ev)) {
    err = errno;
    Release();
    ThrowBpf(env, op, name_, err);
  }
  try {
    thread_ = std::thread(&RingBufferHandle::ThreadMain, this);
  } catch (const std::system_error& e) {
    Release();
    ThrowBpf(env, op, name_, e.code().value());
  }
  pthread_setname_np(thread_.native_handle(), "ringbuf");
}

// The thread: wait for records or the stop signal; move records into the queue and wake the event loop.
void RingBufferHandle::ThreadMain() {
  // On Linux a nice value is per thread. Without CAP_SYS_NICE a raise is refused and the thread keeps the
  // process's value: it still drains, with less head start on a loaded machine.
  if (nice_) setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice_);
  struct epoll_event ev[2];
  for (;;) {
    int n = epoll_wait(epoll_.get(), ev, 2, poll_ms_ > 0 ? poll_ms_ : -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return;
    }
    // A timeout: records submitted without a wake-up may be waiting.
    bool ready = n == 0;
    for (int i = 0; i < n; i++) {
      if (ev[i].data.u32 == kStop) return;
      ready = true;
    }
    if (!ready) continue;
    std::lock_guard<std::mutex> g(ring_mu_);
    // An error here (the ring's positions corrupt) repeats on every call: consume() reports it to JS.
    if (ConsumeToQueue() < 0) return;
  }
}

int RingBufferHandle::ConsumeToQueue() {
  int n = ring_buffer__consume(rb_);
  FlushPending();
  return n;
}

// Moves pending_ into the queue (ring_mu_ held); what does not fit is dropped and counted.
void RingBufferHandle::FlushPending() {
  if (pending_.empty()) return;
  size_t dropped = 0;
  if (packed_) {
    std::string& chunk = pending_.back();
    std::lock_guard<std::mutex> g(queue_mu_);
    if (queued_ + chunk.size() > queue_bytes_) {
      // The records that fit, in order; the rest are dropped (a gap the consumer sees, as with a full ring).
      size_t keep = 0;
      while (keep < chunk.size()) {
        uint32_t len;
        memcpy(&len, chunk.data() + keep, sizeof(len));
        if (queued_ + keep + sizeof(len) + len > queue_bytes_) break;
        keep += sizeof(len) + len;
      }
      for (size_t at = keep; at < chunk.size(); dropped++) {
        uint32_t len;
        memcpy(&len, chunk.data() + at, sizeof(len));
        at += sizeof(len) + len;
      }
      chunk.resize(keep);
    }
    if (!chunk.empty()) {
      queued_ += chunk.size();
      queue_.push_back(std::move(chunk));
    }
    pending_records_ = 0;
  } else {
    std::lock_guard<std::mutex> g(queue_mu_);
    for (std::string& r : pending_) {
      if (queued_ + r.size() > queue_bytes_) {
        dropped++;
        continue;
      }
      queued_ += r.size();
      queue_.push_back(std::move(r));
    }
  }
  if (dropped) dropped_ += dropped;
  pending_.clear();
  uv_async_send(async_);
}

void RingBufferHandle::OnAsync(uv_async_t* handle) {
  auto* self = static_cast<RingBufferHandle*>(handle->data);
  if (!self || !self->async_) return;
  Napi::Env env = self->Env();
  Napi::HandleScope scope(env);
  size_t queued;
  {
    std::lock_guard<std::mutex> g(self->queue_mu_);
    queued = self->queue_.size();
  }
  try {
    // What is queued now, no more: records arriving meanwhile wait for the next turn, so other I/O runs.
    self->DrainQueue(env, true, queued);
  } catch (const Napi::Error& e) {
    napi_fatal_exception(env, e.Value());
  }
  if (!self->async_) return;
  std::lock_guard<std::mutex> g(self->queue_mu_);
  if (!self->queue_.empty()) uv_async_send(self->async_);
}

size_t RingBufferHandle::DrainQueue(Napi::Env env, bool from_loop, size_t limit) {
  size_t total = 0, records = 0;
  std::vector<std::string> batch;
  while (async_ && total < limit) {
    batch.clear();
    {
      std::lock_guard<std::mutex> g(queue_mu_);
      while (!queue_.empty() && batch.size() < max_batch_ && total + batch.size() < limit) {
        queued_ -= queue_.front().size();
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    if (batch.empty()) break;
    total += batch.size();
    records += Deliver(env, from_loop, batch);
  }
  return records;
}

size_t RingBufferHandle::Deliver(Napi::Env env, bool from_loop, std::vector<std::string>& batch) {
  Napi::HandleScope scope(env);
  Napi::Array arr;
  size_t records = batch.size();
  bool lending = false;
  if (packed_) {
    // The chunks end to end in one Buffer: one allocation and one JS object per batch. With reuse, the same memory
    // every batch: a new Buffer per batch of ~200 KiB cost the event loop more than reading the records (its pages
    // faulted in on the copy, and malloc grew and trimmed the heap each time: a quarter of its samples under h2load).
    // Not while a lent batch is being read (a callback that calls consume()).
    size_t bytes = 0;
    for (const std::string& c : batch) bytes += c.size();
    lending = reuse_ && !lending_ && bytes <= kLentMax;
    Napi::Buffer<uint8_t> buf;
    if (lending) {
      if (lent_.IsEmpty() || lent_bytes_ < bytes) {
        size_t n = kLentMin;
        while (n < bytes) n *= 2;
        lent_.Reset();
        lent_ = Napi::Persistent(Napi::Buffer<uint8_t>::New(env, n));
        lent_bytes_ = n;
      }
      buf = lent_.Value();
    } else {
      buf = Napi::Buffer<uint8_t>::New(env, bytes);
    }
    records = 0;
    size_t at = 0;
    for (const std::string& c : batch) {
      memcpy(buf.Data() + at, c.data(), c.size());
      at += c.size();
      for (size_t i = 0; i < c.size(); records++) {
        uint32_t len;
        memcpy(&len, c.data() + i, sizeof(len));
        i += sizeof(len) + len;
      }
    }
    if (reuse_) {
      // The chunks' memory back to the thread, for its next records (a fresh one grows by reallocation).
      std::lock_guard<std::mutex> g(queue_mu_);
      for (std::string& c : batch) {
        if (spare_.size() >= kSpareChunks || c.capacity() > kSpareMax) continue;
        c.clear();
        spare_.push_back(std::move(c));
      }
    }
    arr = Napi::Array::New(env, 1);
    if (lending) {
      Napi::Value view = buf.Get("subarray").As<Napi::Function>().Call(buf, {Napi::Number::New(env, 0), Napi::Number::New(env, (double)bytes)});
      arr.Set(0u, view);
    } else {
      arr.Set(0u, buf);
    }
  } else {
    arr = Napi::Array::New(env, batch.size());
    for (size_t i = 0; i < batch.size(); i++)
      arr.Set(i, Napi::Buffer<uint8_t>::Copy(env, (const uint8_t*)batch[i].data(), batch[i].size()));
  }
  delivered_ += records;
  batches_++;
  batch.clear();
  // Cleared however the callback ends (a throw propagates as a C++ exception).
  struct Lend {
    bool& flag;
    bool on;
    ~Lend() {
      if (on) flag = false;
    }
  } lend{lending_, lending};
  if (lending) lending_ = true;
  if (from_loop) {
    // MakeCallback runs microtasks and reports a throwing callback as an uncaught exception.
    callback_.MakeCallback(Value(), {arr});
  } else {
    callback_.Call(Value(), {arr});
  }
  return records;
}

uv_handle_t* RingBufferHandle::LoopHandle() const {
  return poll_ ? reinterpret_cast<uv_handle_t*>(poll_) : reinterpret_cast<uv_handle_t*>(async_);
}

// libbpf's ring_buffer owns its epoll fd and mappings; the map's fd stays the MapHandle's.
void RingBufferHandle::Release() {
  if (poll_) {
    uv_poll_stop(poll_);
    uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); });
    poll_ = nullptr;
  }
  // The thread is joined before anything it uses goes.
  if (thread_.joinable()) {
    uint64_t one = 1;
    // An eventfd write fails only when its counter would overflow, which one write cannot do.
    (void)!write(stop_.get(), &one, sizeof(one));
    thread_.join();
  }
  epoll_.reset();
  stop_.reset();
  if (async_) {
    uv_close(reinterpret_cast<uv_handle_t*>(async_), [](uv_handle_t* h) { delete reinterpret_cast<uv_async_t*>(h); });
    async_ = nullptr;
  }
  {
    std::lock_guard<std::mutex> g(queue_mu_);
    queue_.clear();
    queued_ = 0;
  }
  pending_.clear();
  pending_records_ = 0;
  {
    std::lock_guard<std::mutex> g(queue_mu_);
    spare_.clear();
  }
  lent_.Reset();
  ring_buffer__free(rb_);
  rb_ = nullptr;
  callback_.Reset();
  if (!self_.IsEmpty()) self_.Reset();
}

int RingBufferHandle::OnSample(void* ctx, void* data, size_t size) {
  auto* self = static_cast<RingBufferHandle*>(ctx);
  if (self->packed_) {
    self->Pack(data, size);
    if (self->pending_records_ >= kFlushEvery) self->FlushPending();
    return 0;
  }
  if (self->queue_bytes_) {
    self->pending_.emplace_back(static_cast<const char*>(data), size);
    if (self->pending_.size() >= kFlushEvery) self->FlushPending();
    return 0;
  }
  self->batch_.emplace_back(static_cast<const char*>(data), size);
  // A negative return stops ring_buffer__consume after this record (already consumed), so one JS call never
  // carries more than max_batch_ records.
  return self->batch_.size() >= self->max_batch_ ? kBatchFull : 0;
}

void RingBufferHandle::Pack(const void* data, size_t size) {
  if (pending_.empty()) {
    std::string spare;
    if (reuse_) {
      std::lock_guard<std::mutex> g(queue_mu_);
      if (!spare_.empty()) {
        spare = std::move(spare_.back());
        spare_.pop_back();
      }
    }
    pending_.push_back(std::move(spare));
  }
  std::string& chunk = pending_.back();
  if (chunk.capacity() == 0) chunk.reserve(16384);
  uint32_t len = (uint32_t)size;
  chunk.append(reinterpret_cast<const char*>(&len), sizeof(len));
  chunk.append(static_cast<const char*>(data), size);
  pending_records_++;
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
    total += batch_.size();
    bool full = batch_.size() >= max_batch_;
    Deliver(env, from_loop, batch_);
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
  if (!queue_bytes_) return Napi::Number::New(env, (double)Drain(env, false));
  size_t queued;
  {
    std::lock_guard<std::mutex> g(ring_mu_);
    int n = ConsumeToQueue();
    if (n < 0) ThrowBpf(env, "ringbuf_consume", name_, -n);
    std::lock_guard<std::mutex> q(queue_mu_);
    queued = queue_.size();
  }
  return Napi::Number::New(env, (double)DrainQueue(env, false, queued));
}

Napi::Value RingBufferHandle::Ref(const Napi::CallbackInfo& info) {
  if (LoopHandle()) uv_ref(LoopHandle());
  return info.Env().Undefined();
}

Napi::Value RingBufferHandle::Unref(const Napi::CallbackInfo& info) {
  if (LoopHandle()) uv_unref(LoopHandle());
  return info.Env().Undefined();
}

Napi::Value RingBufferHandle::Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("records", Napi::Number::New(env, (double)delivered_));
  o.Set("batches", Napi::Number::New(env, (double)batches_));
  if (queue_bytes_) {
    o.Set("dropped", Napi::Number::New(env, (double)dropped_.load()));
    std::lock_guard<std::mutex> g(queue_mu_);
    o.Set("queuedBytes", Napi::Number::New(env, (double)queued_));
  }
  return o;
}

Napi::Value RingBufferHandle::JsClose(const Napi::CallbackInfo& info) {
  Close();
  return info.Env().Undefined();
}

}  // namespace mesh
