// Dynamic work distribution over independent items for the CPU kernels: threads take items
// from a shared counter, so uneven tiles do not leave a core idle. Each item writes only its
// own outputs, so results do not depend on the number of threads or the schedule.
#pragma once

#include <ATen/Parallel.h>

#include <atomic>
#include <cstdint>

namespace dibr {

// Per-thread scratch object of type S (tag N separates users of the same type), kept between
// calls so that large buffers keep their capacity. Only the calling thread resizes it; worker
// threads of a parallel region may write distinct elements of it.
template <typename S, int N>
S& scratch() {
  thread_local S value;
  return value;
}

template <typename Fn>
void parallel_items(int64_t n, const Fn& fn) {
  if (n <= 0) return;
  const int64_t threads = std::min<int64_t>(at::get_num_threads(), n);
  if (threads <= 1) {
    for (int64_t i = 0; i < n; ++i) fn(i);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) fn(i);
  });
}

}  // namespace dibr
