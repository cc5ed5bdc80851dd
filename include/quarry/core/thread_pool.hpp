// ThreadPool: a fixed set of worker threads and parallel_for over an index range.
//
// No thread is started behind the caller's back: a pool exists because the caller made one, or
// because the caller asked for default_thread_pool(). parallel_for blocks until every chunk is
// done; the calling thread works too. Calls from several threads at once are safe (they take
// turns); a parallel_for nested inside a task of the same pool runs inline on that worker.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace quarry {

/// A non-owning reference to a callable, like C++26 std::function_ref: no allocation.
template <class Signature>
class FunctionRef;
/// FunctionRef of a callable taking Args... and returning R.
template <class R, class... Args>
class FunctionRef<R(Args...)> {
 public:
  /// Refers to `f`, which must outlive every call through this reference.
  template <class F>
    requires(!std::is_same_v<std::remove_cvref_t<F>, FunctionRef> && std::is_invocable_r_v<R, F&, Args...>)
  FunctionRef(F&& f) noexcept  // NOLINT: implicit, like std::function_ref
      : obj_(const_cast<void*>(static_cast<const void*>(std::addressof(f)))),
        call_([](void* o, Args... args) -> R { return (*static_cast<std::remove_reference_t<F>*>(o))(std::forward<Args>(args)...); }) {}
  /// Calls the callable.
  R operator()(Args... args) const { return call_(obj_, std::forward<Args>(args)...); }

 private:
  void* obj_;
  R (*call_)(void*, Args...);
};

/// A fixed-size pool of worker threads.
class ThreadPool {
 public:
  /// A pool that runs work on `num_threads` threads in all, the caller's included (so it starts
  /// num_threads - 1 workers). 0 means std::thread::hardware_concurrency().
  explicit ThreadPool(unsigned num_threads = 0);
  /// Joins the workers. Must not run while a parallel_for on this pool is in progress.
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  /// Threads that run work, the caller's included.
  unsigned size() const noexcept { return static_cast<unsigned>(workers_.size()) + 1; }

  /// Calls fn(lo, hi) on disjoint chunks [lo, hi) covering [begin, end), each at least `grain`
  /// long (but the last), on all threads of the pool. Returns when all are done. If calls throw,
  /// the first exception is rethrown here after the others finish.
  void parallel_for(std::int64_t begin, std::int64_t end, FunctionRef<void(std::int64_t, std::int64_t)> fn,
                    std::int64_t grain = 1);

 private:
  void worker_loop();
  void run_chunks() noexcept;
  bool join(std::uint64_t generation) noexcept;
  void leave() noexcept;

  // The job word: generation << kGenShift | closed << kCountBits | count. A new job takes the
  // next generation; a worker joins it by raising count while its generation is the job's and it
  // is open, and lowers count when it runs out of chunks; the caller, done with its own chunks,
  // closes the job (no one joins after) and waits for count to reach 0. So a worker that wakes
  // late (its CPU taken by other work) is never waited for: it finds the job closed or gone.
  static constexpr int kCountBits = 23;
  static constexpr int kGenShift = kCountBits + 1;
  static constexpr std::uint64_t kClosed = std::uint64_t{1} << kCountBits;
  static constexpr std::uint64_t kCountMask = kClosed - 1;

  std::vector<std::thread> workers_;
  std::mutex call_mutex_;  // one parallel_for at a time
  std::mutex mutex_;       // the condition variables' mutex; guards error_
  std::condition_variable wake_;
  std::condition_variable done_;
  std::atomic<std::uint64_t> job_word_{0};
  std::atomic<bool> stop_{false};
  // The current job: written before its generation is published, read only by the caller and
  // by workers that joined it (the caller does not return while one is in it).
  FunctionRef<void(std::int64_t, std::int64_t)>* job_ = nullptr;
  std::int64_t job_end_ = 0;
  std::int64_t job_chunk_ = 1;
  std::atomic<std::int64_t> next_{0};
  std::exception_ptr error_;
};

/// The process-wide pool, created on the first call with QUARRY_NUM_THREADS threads (or the
/// hardware's count when unset). Nothing creates it but a call to this function.
ThreadPool& default_thread_pool();

/// Runs fn(lo, hi) over [begin, end) on `pool`, or serially on the calling thread when
/// `pool` is null.
inline void parallel_for(ThreadPool* pool, std::int64_t begin, std::int64_t end,
                         FunctionRef<void(std::int64_t, std::int64_t)> fn, std::int64_t grain = 1) {
  if (pool == nullptr) {
    if (begin < end) fn(begin, end);
    return;
  }
  pool->parallel_for(begin, end, fn, grain);
}

}  // namespace quarry
