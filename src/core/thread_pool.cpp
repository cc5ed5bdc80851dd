#include "quarry/core/thread_pool.hpp"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <string>

namespace quarry {

namespace {
// The pool whose task this thread is running, if any: a nested parall_for on it runs inline.
thread_local const ThreadPool* t_current_pool = nullptr;

// How long a thread polls for what it waits on (new work; the workers' end) before it sleeps on a
// condition variable. Waking a sleeping thread takes tens of microseconds (more in a VM), as long
// as a whole matrix-vector product of a small model's layer: a decode step makes hundreds of
// parallel_for calls, so the workers stay awake between them. Bounded, so an idle pool sleeps.
constexpr auto kSpin = std::chrono::microseconds(100);

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Polls done() for up to kSpin; true once it holds.
template <class Done>
bool spin_until(Done&& done) noexcept {
  const auto until = std::chrono::steady_clock::now() + kSpin;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= until) return done();
  }
}
}  // namespace

ThreadPool::ThreadPool(unsigned num_threads) {
  if (num_threads == 0) num_threads = std::max(1u, std::thread::hardware_concurrency());
  workers_.reserve(num_threads - 1);
  for (unsigned i = 0; i + 1 < num_threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stop_.store(true, std::memory_order_release);
  }
  wake_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::run_chunks() noexcept {
  const ThreadPool* outer = t_current_pool;
  t_current_pool = this;
  for (;;) {
    const std::int64_t lo = next_.fetch_add(job_chunk_, std::memory_order_relaxed);
    if (lo >= job_end_) break;
    const std::int64_t hi = std::min(job_end_, lo + job_chunk_);
    try {
      (*job_)(lo, hi);
    } catch (...) {
      std::lock_guard lock(mutex_);
      if (!error_) error_ = std::current_exception();
      next_.store(job_end_, std::memory_order_relaxed);  // stop handing out chunks
    }
  }
  t_current_pool = outer;
}

bool ThreadPool::join(std::uint64_t generation) noexcept {
  std::uint64_t w = job_word_.load(std::memory_order_acquire);
  for (;;) {
    if ((w >> kGenShift) != generation || (w & kClosed) != 0) return false;
    // Acquire: the job's fields, written before its generation was published.
    if (job_word_.compare_exchange_weak(w, w + 1, std::memory_order_acquire, std::memory_order_acquire)) return true;
  }
}

void ThreadPool::leave() noexcept {
  // Release: the chunks' writes, for the caller's acquire of count 0.
  const std::uint64_t w = job_word_.fetch_sub(1, std::memory_order_release) - 1;
  if ((w & kCountMask) == 0 && (w & kClosed) != 0) {
    std::lock_guard lock(mutex_);  // the caller checks the count and sleeps under mutex_
    done_.notify_one();
  }
}

void ThreadPool::worker_loop() {
  std::uint64_t seen = 0;  // the generation of the last job this worker looked at
  const auto ready = [&] {
    return stop_.load(std::memory_order_acquire) || (job_word_.load(std::memory_order_acquire) >> kGenShift) != seen;
  };
  for (;;) {
    if (!spin_until(ready)) {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, ready);
    }
    if (stop_.load(std::memory_order_acquire)) return;
    seen = job_word_.load(std::memory_order_acquire) >> kGenShift;
    if (join(seen)) {
      run_chunks();
      leave();
    }
  }
}

void ThreadPool::parallel_for(std::int64_t begin, std::int64_t end, FunctionRef<void(std::int64_t, std::int64_t)> fn,
                              std::int64_t grain) {
  if (begin >= end) return;
  grain = std::max<std::int64_t>(grain, 1);
  const std::int64_t n = end - begin;
  if (workers_.empty() || n <= grain || t_current_pool == this) {
    fn(begin, end);
    return;
  }
  std::lock_guard call_lock(call_mutex_);
  // About four chunks per thread balances uneven work without much contention.
  const std::int64_t target = std::max<std::int64_t>(1, n / (static_cast<std::int64_t>(size()) * 4));
  {
    // Under mutex_, so that a worker going to sleep either sees the new generation or is woken.
    std::lock_guard lock(mutex_);
    job_ = &fn;
    job_end_ = end;
    job_chunk_ = std::max(grain, target);
    next_.store(begin, std::memory_order_relaxed);
    error_ = nullptr;
    const std::uint64_t generation = (job_word_.load(std::memory_order_relaxed) >> kGenShift) + 1;
    job_word_.store(generation << kGenShift, std::memory_order_release);  // open, count 0
  }
  wake_.notify_all();
  run_chunks();
  // Every chunk is taken: close the job and wait for the workers still in it, only them.
  if ((job_word_.fetch_or(kClosed, std::memory_order_acq_rel) & kCountMask) != 0) {
    const auto done = [&] { return (job_word_.load(std::memory_order_acquire) & kCountMask) == 0; };
    if (!spin_until(done)) {
      std::unique_lock lock(mutex_);
      done_.wait(lock, done);
    }
  }
  std::exception_ptr err;
  {
    std::lock_guard lock(mutex_);
    job_ = nullptr;
    err = std::exchange(error_, nullptr);
  }
  if (err) std::rethrow_exception(err);
}

ThreadPool& default_thread_pool() {
  static ThreadPool pool([] {
    const char* env = std::getenv("QUARRY_NUM_THREADS");
    if (env == nullptr) return 0u;
    char* end = nullptr;
    const unsigned long v = std::strtoul(env, &end, 10);
    return (end != env && *end == '\0' && v > 0 && v <= 4096) ? static_cast<unsigned>(v) : 0u;
  }());
  return pool;
}

}  // namespace quarry
