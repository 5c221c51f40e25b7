// The C baseline of bench/bpf/bench.mjs: the same map (hash, __u32 key, __u64 value) and the same syscalls as
// the JS arms, timed in a plain loop. Prints one JSON object with ops/s (elements/s for the batch arms).
//   maploop <entries> <batch> <single_ops> <batch_elems> <max_ms>
// Each arm stops after its count or after max_ms, whichever comes first, and reports what it did.
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct result {
  unsigned long long ops;
  double seconds;
};

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char* op, int err) {
  fprintf(stderr, "maploop: %s: %s\n", op, strerror(err));
  exit(1);
}

static unsigned long long arg(char** argv, int i) {
  char* end;
  unsigned long long v = strtoull(argv[i], &end, 10);
  if (*end || v == 0) {
    fprintf(stderr, "maploop: argument %d must be a positive integer, got %s\n", i, argv[i]);
    exit(2);
  }
  return v;
}

static __u32 entries, batch;
static double max_s;

// The clock is read every 1024 operations, so a slow machine still stops near max_s.
#define TIMED_LOOP(total, step, body)                                   \
  do {                                                                  \
    double t0 = now(), t = t0;                                          \
    unsigned long long done = 0, next_check = 1024;                     \
    while (done < (total)) {                                            \
      body;                                                             \
      done += (step);                                                   \
      if (done >= next_check) {                                         \
        next_check = done + 1024;                                       \
        if ((t = now()) - t0 > max_s) break;                            \
      }                                                                 \
    }                                                                   \
    t = now();                                                          \
    r.ops = done;                                                       \
    r.seconds = t - t0;                                                 \
  } while (0)

static struct result run_update(int fd, unsigned long long n) {
  struct result r;
  TIMED_LOOP(n, 1, {
    __u32 k = done % entries;
    __u64 v = done;
    if (bpf_map_update_elem(fd, &k, &v, BPF_ANY)) die("bpf_map_update_elem", errno);
  });
  return r;
}

static struct result run_lookup(int fd, unsigned long long n) {
  struct result r;
  volatile __u64 sink = 0;
  TIMED_LOOP(n, 1, {
    __u32 k = done % entries;
    __u64 v;
    if (bpf_map_lookup_elem(fd, &k, &v)) die("bpf_map_lookup_elem", errno);
    sink += v;
  });
  (void)sink;
  return r;
}

// Writes the keys in chunks of `batch`, as JS setBatch() does with one chunk per call.
static struct result run_update_batch(int fd, unsigned long long n, const __u32* keys, const __u64* vals) {
  struct result r;
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  TIMED_LOOP(n, batch, {
    __u32 off = (done / batch * batch) % entries;
    __u32 count = batch;
    if (bpf_map_update_batch(fd, keys + off, vals + off, &count, &opts)) die("bpf_map_update_batch", errno);
  });
  return r;
}

// Walks the whole map, `batch` per syscall, as JS getBatch() does; counts the elements read.
static struct result run_lookup_batch(int fd, unsigned long long n, __u32* keys, __u64* vals) {
  struct result r;
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  __u64 in_tok, out_tok;  // a bucket index for hash maps
  double t0 = now();
  unsigned long long done = 0;
  while (done < n && now() - t0 <= max_s) {
    void* in = NULL;
    for (;;) {
      __u32 count = batch;
      int err = bpf_map_lookup_batch(fd, in, &out_tok, keys, vals, &count, &opts);
      done += count;
      if (err) {
        if (errno == ENOENT) break;
        die("bpf_map_lookup_batch", errno);
      }
      in_tok = out_tok;
      in = &in_tok;
    }
  }
  r.ops = done;
  r.seconds = now() - t0;
  return r;
}

static void print(const char* name, struct result r, int last) {
  printf("  \"%s\": {\"ops\": %llu, \"seconds\": %.6f, \"opsPerSec\": %.1f}%s\n", name, r.ops, r.seconds,
         r.ops / r.seconds, last ? "" : ",");
}

int main(int argc, char** argv) {
  if (argc != 6) {
    fprintf(stderr, "usage: maploop <entries> <batch> <single_ops> <batch_elems> <max_ms>\n");
    return 2;
  }
  entries = arg(argv, 1);
  batch = arg(argv, 2);
  unsigned long long single_ops = arg(argv, 3), batch_elems = arg(argv, 4);
  max_s = arg(argv, 5) / 1000.0;
  if (entries % batch) {
    fprintf(stderr, "maploop: entries must be a multiple of batch\n");
    return 2;
  }

  int fd = bpf_map_create(BPF_MAP_TYPE_HASH, "bench_c", sizeof(__u32), sizeof(__u64), entries, NULL);
  if (fd < 0) die("bpf_map_create", errno);
  __u32* keys = malloc(entries * sizeof(*keys));
  __u64* vals = malloc(entries * sizeof(*vals));
  __u32* keys_out = malloc(batch * sizeof(*keys_out));
  __u64* vals_out = malloc(batch * sizeof(*vals_out));
  if (!keys || !vals || !keys_out || !vals_out) die("malloc", ENOMEM);
  for (__u32 i = 0; i < entries; i++) {
    keys[i] = i;
    vals[i] = i;
  }
  // Full from the start, so every lookup hits and every update replaces.
  LIBBPF_OPTS(bpf_map_batch_opts, opts);
  __u32 count = entries;
  if (bpf_map_update_batch(fd, keys, vals, &count, &opts)) die("bpf_map_update_batch", errno);

  // Warm-up: every path once, briefly.
  max_s = 0.02;
  run_update(fd, entries);
  run_lookup(fd, entries);
  run_update_batch(fd, entries, keys, vals);
  run_lookup_batch(fd, entries, keys_out, vals_out);
  max_s = arg(argv, 5) / 1000.0;

  struct result set = run_update(fd, single_ops);
  struct result get = run_lookup(fd, single_ops);
  struct result set_batch = run_update_batch(fd, batch_elems, keys, vals);
  struct result get_batch = run_lookup_batch(fd, batch_elems, keys_out, vals_out);

  printf("{\n  \"libbpf\": \"%s\",\n", libbpf_version_string());
  print("set", set, 0);
  print("get", get, 0);
  print("setBatch", set_batch, 0);
  print("getBatch", get_batch, 1);
  printf("}\n");
  return 0;
}
