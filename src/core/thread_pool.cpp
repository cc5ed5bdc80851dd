#include "quarry/core/thread_pool.hpp"

#include <algorithm>
#include <cstdlib>
#include <string>

namespace quarry {

namespace {
// The pool whose task this thread is running, if any: a nested parall_for on it runs inline.
thread_local const ThreadPool* t_current_pool = nullptr;
}  // namespace

ThreadPool::ThreadPool(unsigned num_threads) {
  if (num_threads == 0) num_threads = std::max(1u, std::thread::hardware_concurrency());
  workers_.reserve(num_threads - 1);
  for (unsigned i = 0; i + 1 < num_threads; ++i) workers_.emplace_back([this] { worker_loop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
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

void ThreadPool::worker_loop() {
  std::uint64_t seen = 0;
  for (;;) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
    }
    run_chunks();
    {
      std::lock_guard lock(mutex_);
      if (--busy_ == 0) done_.notify_one();
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
    std::lock_guard lock(mutex_);
    job_ = &fn;
    job_end_ = end;
    job_chunk_ = std::max(grain, target);
    next_.store(begin, std::memory_order_relaxed);
    error_ = nullptr;
    busy_ = static_cast<unsigned>(workers_.size());
    ++generation_;
  }
  wake_.notify_all();
  run_chunks();
  std::exception_ptr err;
  {
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return busy_ == 0; });
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
