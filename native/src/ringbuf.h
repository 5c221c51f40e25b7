// RingBufferHandle: consumes a BPF ring buffer for JS, in one of two ways.
// - From the libuv event loop: libbpf's epoll fd is watched by a uv_poll_t; when it is readable, every available
//   record is copied out and handed to JS in batches. Nothing blocks JS and nothing spins.
// - From a native thread (queueBytes > 0): the thread waits on the ring and copies records into a bounded queue
//   as soon as they arrive, so a starved event loop does not let the kernel's ring overflow; a uv_async_t wakes
//   the loop, which hands the queue to JS in batches. A record the full queue has no room for is dropped and
//   counted, as the kernel counts a record its ring has no room for. Packed (thread mode only): records are laid
//   end to end, each after its length (u32, host order), and JS gets one Buffer per batch instead of one per record;
//   with reuse, a view of one Buffer kept across batches, valid only during the callback.
#pragma once

#include <bpf/libbpf.h>
#include <napi.h>
#include <uv.h>

#include <atomic>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "addon.h"
#include "fd.h"

namespace mesh {

class RingBufferHandle : public Napi::ObjectWrap<RingBufferHandle>, public Closable {
 public:
  static Napi::Function Init(Napi::Env env);
  explicit RingBufferHandle(const Napi::CallbackInfo& info);
  ~RingBufferHandle() override;

 private:
  static void OnPoll(uv_poll_t* handle, int status, int events);
  static void OnAsync(uv_async_t* handle);
  static int OnSample(void* ctx, void* data, size_t size);
  // Event-loop mode: drains the ring into batch_ and delivers it; returns the number of records.
  size_t Drain(Napi::Env env, bool from_loop);
  // Thread mode: delivers up to `limit` queued records in batches; returns the number delivered.
  size_t DrainQueue(Napi::Env env, bool from_loop, size_t limit);
  // Thread mode, with ring_mu_ held: consumes the kernel ring into the queue.
  int ConsumeToQueue();
  void FlushPending();
  // Returns the records delivered (a packed batch's entries hold many).
  size_t Deliver(Napi::Env env, bool from_loop, std::vector<std::string>& batch);
  // Packed: appends one record to pending_'s last chunk.
  void Pack(const void* data, size_t size);
  void StartThread(Napi::Env env);
  void ThreadMain();

  Napi::Value Consume(const Napi::CallbackInfo& info);
  Napi::Value Ref(const Napi::CallbackInfo& info);
  Napi::Value Unref(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  Napi::Value JsClose(const Napi::CallbackInfo& info);
  void Release() override;
  uv_handle_t* LoopHandle() const;

  struct ring_buffer* rb_ = nullptr;
  uv_poll_t* poll_ = nullptr;    // event-loop mode; freed in the uv close callback
  uv_async_t* async_ = nullptr;  // thread mode; freed in the uv close callback
  Napi::FunctionReference callback_;
  Napi::ObjectReference self_;  // keeps the JS object alive while polling
  std::vector<std::string> batch_;
  size_t max_batch_;
  uint64_t delivered_ = 0, batches_ = 0;
  std::string name_;

  // Thread mode.
  size_t queue_bytes_ = 0;  // the queue's capacity in record bytes; 0: event-loop mode
  int nice_ = 0;             // the thread's nice value; 0 leaves it as inherited
  int poll_ms_ = 0;          // > 0: the thread also drains every poll_ms_ ms, woken or not
  std::thread thread_;
  OwnedFd epoll_, stop_;       // the thread waits on both: the ring's epoll fd and an eventfd that ends it
  std::mutex ring_mu_;         // ring_buffer__consume and pending_: the thread and consume() take turns
  std::vector<std::string> pending_;  // records read from the ring, not yet in the queue (packed: one chunk)
  bool packed_ = false;
  // Packed with reuse: batches are copied into lent_ (lent_bytes_ long) and handed over as a view of it; lending_
  // while the callback reads one. Chunks the event loop copied go back to the thread through spare_ (queue_mu_).
  bool reuse_ = false, lending_ = false;
  Napi::Reference<Napi::Buffer<uint8_t>> lent_;
  size_t lent_bytes_ = 0;
  std::vector<std::string> spare_;
  size_t pending_records_ = 0;        // packed: records in pending_'s chunk
  std::mutex queue_mu_;
  std::deque<std::string> queue_;
  size_t queued_ = 0;          // bytes of the records in queue_
  std::atomic<uint64_t> dropped_{0};
};

}  // namespace mesh
