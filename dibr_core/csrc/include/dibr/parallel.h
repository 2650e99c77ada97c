// Parallel loops of the CPU kernels on dibr's own thread pool (thread_pool.h): a loop is split
// into many small chunks that the calling thread and the pool's workers take dynamically, so
// uneven tiles do not leave a core idle and a thread preempted by another process delays only
// the chunk it holds. Each chunk writes only its own outputs, so results do not depend on the
// number of threads or on which thread runs which chunk.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "dibr/thread_pool.h"

namespace dibr {

// Per-thread scratch object of type S (tag N separates users of the same type), kept between
// calls so that large buffers keep their capacity. Only the calling thread resizes it; worker
// threads of a parallel region may write distinct elements of it.
template <typename S, int N>
S& scratch() {
  thread_local S value;
  return value;
}

// Threads the kernels use: set_kernel_threads(n) with n > 0 chooses them for all threads of the
// process; 0 (the default) follows torch's intra-op count of the calling thread
// (torch.get_num_threads()). Setting them apart lets torch's own small ops run on one thread
// (no OpenMP fork-join per op) while the kernels use the pool.
inline std::atomic<int>& kernel_threads_setting() {
  static std::atomic<int> value{0};
  return value;
}
inline void set_kernel_threads(int n) { kernel_threads_setting().store(std::max(n, 0), std::memory_order_relaxed); }
inline int kernel_threads() {
  const int n = kernel_threads_setting().load(std::memory_order_relaxed);
  return n > 0 ? n : at::get_num_threads();
}

// Chunks per thread of a loop: enough that a preempted thread holds up little of the work and
// uneven chunks even out, few enough that taking a chunk (one atomic operation) costs nothing
// measurable.
constexpr int64_t kChunksPerThread = 16;

// Calls fn(b, e) on consecutive sub-ranges [b, e) covering [begin, end), each of at least
// `grain` items (except maybe the last), possibly on several threads at once.
template <typename Fn>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const Fn& fn) {
  const int64_t n = end - begin;
  if (n <= 0) return;
  const int threads = kernel_threads();
  grain = std::max<int64_t>(grain, 1);
  int64_t chunks = std::min<int64_t>((n + grain - 1) / grain, threads * kChunksPerThread);
  if (threads <= 1 || chunks <= 1) {
    fn(begin, end);
    return;
  }
  const int64_t size = (n + chunks - 1) / chunks;
  chunks = (n + size - 1) / size;
  struct Range {
    const Fn* fn;
    int64_t begin, end, size;
  };
  const Range range{&fn, begin, end, size};
  ThreadPool::instance().run(
      chunks, threads,
      [](const void* ctx, int64_t c) {
        const Range& r = *static_cast<const Range*>(ctx);
        const int64_t b = r.begin + c * r.size;
        (*r.fn)(b, std::min(r.end, b + r.size));
      },
      &range);
}

// Calls fn(i) for every i in [0, n), possibly on several threads at once.
template <typename Fn>
void parallel_items(int64_t n, const Fn& fn) {
  parallel_for(0, n, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) fn(i);
  });
}

}  // namespace dibr
