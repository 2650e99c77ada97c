// A small process-wide thread pool for the CPU kernels' parallel loops, made to degrade
// gracefully when other processes compete for the cores (an artist's machine, CI, a training
// run next door):
//  - a loop is split into many chunks that threads take one at a time from a shared counter;
//    the calling thread takes chunks too, so a worker that the OS has not scheduled yet simply
//    takes none, and a preempted worker delays only the chunk it holds;
//  - a call returns as soon as all chunks are done, never waiting for workers to "join";
//  - idle workers sleep on a condition variable (a futex): no spin-waiting that would steal the
//    time slices of the threads doing the work; the caller spins only a few microseconds for
//    the last chunks before it sleeps too;
//  - workers persist between calls (no thread creation per op) and are created lazily;
//  - fork-safe: a child process starts with no pool and makes its own on first use (the
//    parent's workers do not exist there); interpreter exit does not wait for the workers.
// Which thread runs which chunk never changes the results as long as each chunk writes only
// its own outputs, which is how the kernels use it (see parallel.h).
#pragma once

#if !defined(_WIN32)
#include <pthread.h>  // pthread_atfork (there is no fork() on Windows)
#endif

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#define DIBR_CPU_RELAX() _mm_pause()
#else
#define DIBR_CPU_RELAX() std::this_thread::yield()
#endif

namespace dibr {

class ThreadPool {
 public:
  using ChunkFn = void (*)(const void* ctx, int64_t chunk);

  // The process's pool (created on first use; a new one in a forked child).
  static ThreadPool& instance() {
    ThreadPool* p = global().load(std::memory_order_acquire);
    if (p != nullptr) return *p;
#if !defined(_WIN32)
    static std::once_flag atfork_once;
    std::call_once(atfork_once, [] { pthread_atfork(nullptr, nullptr, &ThreadPool::after_fork_in_child); });
#endif
    ThreadPool* fresh = new ThreadPool();
    if (global().compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) return *fresh;
    delete fresh;  // another thread installed one first (no workers were started in ours)
    return *p;
  }

  // Runs fn(ctx, c) for every c in [0, n_chunks) on the calling thread and at most
  // max_threads - 1 workers, and returns once all of them are done. Runs serially when called
  // from inside a chunk (nested loops) or while another thread is using the pool. The first
  // exception thrown by a chunk is rethrown here after all chunks have finished.
  void run(int64_t n_chunks, int max_threads, ChunkFn fn, const void* ctx) {
    if (n_chunks <= 0) return;
    const int helpers = static_cast<int>(std::min<int64_t>(std::max(max_threads, 1) - 1, n_chunks - 1));
    if (helpers <= 0 || in_chunk() || busy_.exchange(true, std::memory_order_acquire)) {
      for (int64_t c = 0; c < n_chunks; ++c) fn(ctx, c);
      return;
    }
    uint32_t tag;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      while (static_cast<int>(workers_) < helpers) {
        try {
          std::thread(&ThreadPool::worker_main, this, static_cast<int>(workers_), epoch_).detach();
        } catch (const std::system_error&) {
          break;  // no more threads allowed: the caller and the existing workers do the work
        }
        ++workers_;
      }
      ++epoch_;
      tag = static_cast<uint32_t>(epoch_);
      fn_ = fn;
      ctx_ = ctx;
      n_chunks_ = n_chunks;
      helpers_ = helpers;
      error_ = nullptr;
      done_.store(0, std::memory_order_relaxed);
      next_.store(static_cast<uint64_t>(tag) << 32, std::memory_order_release);
    }
    if (sleeping_.load(std::memory_order_acquire) > 0) work_cv_.notify_all();
    in_chunk() = true;
    work(tag, fn, ctx, n_chunks);
    in_chunk() = false;
    // The remaining chunks are held by workers: spin briefly, then sleep until the last is done.
    for (int spin = 0; spin < kCallerSpin && done_.load(std::memory_order_acquire) != n_chunks; ++spin)
      DIBR_CPU_RELAX();
    std::exception_ptr error;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      done_cv_.wait(lock, [&] { return done_.load(std::memory_order_acquire) == n_chunks; });
      error = error_;
      error_ = nullptr;
    }
    busy_.store(false, std::memory_order_release);
    if (error) std::rethrow_exception(error);
  }

  // True on a pool worker and on a caller while it runs chunks.
  static bool& in_chunk() {
    thread_local bool value = false;
    return value;
  }

 private:
  // Pause iterations (about 30-150 cycles each) that a caller waits for the workers' last
  // chunks before sleeping.
  static constexpr int kCallerSpin = 256;

  ThreadPool() = default;

  static std::atomic<ThreadPool*>& global() {
    static std::atomic<ThreadPool*> pool{nullptr};
    return pool;
  }

  // In a forked child only the forking thread exists: forget the parent's pool (its workers
  // are gone and its mutex may be held) and let the next call create a fresh one. The old
  // object is leaked on purpose: destroying a possibly locked mutex is undefined.
  static void after_fork_in_child() { global().store(nullptr, std::memory_order_release); }

  // Takes the next chunk of the job tagged `tag`, or -1 when none is left or that job is over.
  int64_t claim(uint32_t tag, int64_t n_chunks) {
    uint64_t v = next_.load(std::memory_order_acquire);
    for (;;) {
      if (static_cast<uint32_t>(v >> 32) != tag) return -1;
      const int64_t c = static_cast<int64_t>(v & 0xffffffffu);
      if (c >= n_chunks) return -1;
      if (next_.compare_exchange_weak(v, v + 1, std::memory_order_acq_rel, std::memory_order_acquire)) return c;
    }
  }

  void work(uint32_t tag, ChunkFn fn, const void* ctx, int64_t n_chunks) {
    for (int64_t c = claim(tag, n_chunks); c >= 0; c = claim(tag, n_chunks)) {
      try {
        fn(ctx, c);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
      }
      if (done_.fetch_add(1, std::memory_order_acq_rel) + 1 == n_chunks) {
        // Taking the lock orders this wake-up after the caller's check in done_cv_.wait.
        std::lock_guard<std::mutex> lock(mutex_);
        done_cv_.notify_one();
      }
    }
  }

  void worker_main(int id, uint64_t seen) {
    in_chunk() = true;  // loops started from inside a chunk run serially
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      if (epoch_ == seen) {
        sleeping_.fetch_add(1, std::memory_order_acq_rel);
        work_cv_.wait(lock, [&] { return epoch_ != seen; });
        sleeping_.fetch_sub(1, std::memory_order_acq_rel);
      }
      seen = epoch_;
      if (id >= helpers_) continue;
      const ChunkFn fn = fn_;
      const void* ctx = ctx_;
      const int64_t n_chunks = n_chunks_;
      lock.unlock();
      work(static_cast<uint32_t>(seen), fn, ctx, n_chunks);
      lock.lock();
    }
  }

  std::mutex mutex_;
  std::condition_variable work_cv_;  // workers wait here for a new job (epoch_ changes)
  std::condition_variable done_cv_;  // the caller waits here for done_ == n_chunks_
  std::atomic<bool> busy_{false};    // a caller owns the pool
  std::atomic<int> sleeping_{0};     // workers waiting on work_cv_
  // The current job; guarded by mutex_ (workers copy it under the lock).
  uint64_t epoch_ = 0;
  ChunkFn fn_ = nullptr;
  const void* ctx_ = nullptr;
  int64_t n_chunks_ = 0;
  int helpers_ = 0;  // workers with id < helpers_ take part
  unsigned workers_ = 0;
  std::exception_ptr error_;
  // (epoch & 0xffffffff) << 32 | next chunk: a worker that wakes up late for a finished job
  // cannot take a chunk of the next one.
  alignas(64) std::atomic<uint64_t> next_{0};
  alignas(64) std::atomic<int64_t> done_{0};
};

}  // namespace dibr
