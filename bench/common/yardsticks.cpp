#include "common/yardsticks.hpp"

#include <quarry/core/cpu_features.hpp>

#include <algorithm>
#include <barrier>
#include <chrono>
#include <cstring>
#include <ctime>
#include <new>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "common/detail/peak_kernels.hpp"
#include "common/detail/splitmix64.hpp"
#include "common/machine.hpp"

namespace quarry::bench {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kMiB = std::size_t{1} << 20;
constexpr std::size_t kGiB = std::size_t{1} << 30;
// Huge-page size on x86-64 and most AArch64 kernels; also the buffer's alignment.
constexpr std::size_t kBufferAlignment = 2 * kMiB;

enum class Kernel { portable, avx2, avx512 };

// The probe files are compiled with quarry's own per-ISA flags (QUARRY_ISA_<ISA>_FLAGS), so a
// probe may run exactly where quarry's kernel set of that ISA may: isa_supported(), which
// ignores QUARRY_FORCE_ISA (the yardsticks measure the machine, not the forced level).
Kernel pick_kernel() noexcept {
#if QUARRY_BENCH_HAS_AVX512
  if (isa_supported(Isa::avx512)) return Kernel::avx512;
#endif
#if QUARRY_BENCH_HAS_AVX2
  if (isa_supported(Isa::avx2)) return Kernel::avx2;
#endif
  return Kernel::portable;
}

// The read loops of one ISA: a buffer in order, and blocks of it in a given order.
struct ReadKernels {
  std::uint64_t (*sum)(const std::byte*, std::size_t) noexcept;
  std::uint64_t (*blocks)(const std::byte*, const std::uint32_t*, std::size_t, std::size_t, std::size_t) noexcept;
};

ReadKernels read_kernels() noexcept {
  switch (pick_kernel()) {
#if QUARRY_BENCH_HAS_AVX512
    case Kernel::avx512: return {&detail::read_sum_avx512, &detail::read_blocks_avx512};
#endif
#if QUARRY_BENCH_HAS_AVX2
    case Kernel::avx2: return {&detail::read_sum_avx2, &detail::read_blocks_avx2};
#endif
    default: return {&detail::read_sum_portable, &detail::read_blocks_portable};
  }
}

// Repetitions of a DRAM read (each reads the whole working set, ~50-100 ms with Effort::full).
int dram_repetitions(Effort effort) noexcept { return effort == Effort::full ? 8 : 4; }

// Peak loops run many short repetitions rather than a few long ones: on a shared machine the
// best of many 10 ms windows is likely to contain one the scheduler left alone.
int peak_repetitions(Effort effort) noexcept { return effort == Effort::full ? 30 : 10; }
double peak_seconds_per_repetition(Effort effort) noexcept { return effort == Effort::full ? 0.010 : 0.005; }

// Keeps a kernel's result observable so the compiler cannot drop the work.
volatile double g_result_sink = 0;
template <class T>
void keep(T value) noexcept {
  g_result_sink = g_result_sink + static_cast<double>(value);
}

// The byte range [begin, end) of `size` that thread `t` of `threads` owns; 4 KiB-aligned cuts.
struct Slice {
  std::size_t begin, end;
};
Slice slice_of(std::size_t size, unsigned threads, unsigned t) noexcept {
  const std::size_t pages = size / 4096;
  const std::size_t first = pages * t / threads;
  const std::size_t last = pages * (t + 1) / threads;
  return {first * 4096, t + 1 == threads ? size : last * 4096};
}

// CPU time the calling thread has used, in seconds; 0 where the platform has no per-thread clock.
double thread_cpu_seconds() noexcept {
#if defined(CLOCK_THREAD_CPUTIME_ID)
  timespec ts{};
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0) return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
#endif
  return 0;
}

// The fastest repetition of a parallel run.
struct Timing {
  double seconds = 0;    // wall time
  double cpu_share = 1;  // CPU time the threads got / (wall time x threads); 1 where unknown
};

// Runs work(t) on threads t = 0..threads-1 at once, `reps` times, and returns the fastest
// repetition: wall time from the release of all threads (a barrier) to the moment the last one
// finishes (the next barrier). The calling thread is thread 0.
template <class Work>
Timing fastest_parallel_run(unsigned threads, int reps, Work&& work) {
  const auto nreps = static_cast<std::size_t>(reps);
  std::vector<Clock::time_point> stamps(2 * nreps);
  std::vector<double> cpu(threads * nreps);  // cpu[t * reps + r]: thread t's CPU seconds in rep r
  std::size_t phase = 0;
  // The barrier's completion step runs once per phase, after every thread arrived and before any
  // leaves: a timestamp there is the start (even phases) or the end (odd phases) of a rep.
  auto stamp = [&stamps, &phase]() noexcept { stamps[phase++] = Clock::now(); };
  std::barrier sync(static_cast<std::ptrdiff_t>(threads), stamp);
  auto body = [&](unsigned t) {
    for (std::size_t r = 0; r < nreps; ++r) {
      sync.arrive_and_wait();
      const double c0 = thread_cpu_seconds();
      work(t);
      cpu[t * nreps + r] = thread_cpu_seconds() - c0;
      sync.arrive_and_wait();
    }
  };
  {
    std::vector<std::jthread> team;
    team.reserve(threads - 1);
    for (unsigned t = 1; t < threads; ++t) team.emplace_back(body, t);
    body(0);
  }  // joins the team
  Timing best{1e300, 1};
  for (std::size_t r = 0; r < nreps; ++r) {
    const double wall = std::chrono::duration<double>(stamps[2 * r + 1] - stamps[2 * r]).count();
    if (wall >= best.seconds) continue;
    double used = 0;
    for (unsigned t = 0; t < threads; ++t) used += cpu[t * nreps + r];
    best = {wall, used > 0 ? std::min(1.0, used / (wall * threads)) : 1.0};
  }
  return best;
}

// A figure and the CPU share its fastest repetition got.
struct Measured {
  double value = 0;
  double cpu_share = 1;
};

// An iteration count for which one call of `kernel` takes about `seconds` on one thread.
template <class R>
std::uint64_t calibrated_iterations(R (*kernel)(std::uint64_t) noexcept, double seconds) {
  std::uint64_t n = 1024;
  for (;;) {
    const auto t0 = Clock::now();
    keep(kernel(n));
    const double took = std::chrono::duration<double>(Clock::now() - t0).count();
    if (took >= seconds / 8 || n >= (std::uint64_t{1} << 40)) {
      const double scaled = static_cast<double>(n) * seconds / std::max(took, 1e-9);
      return std::max<std::uint64_t>(1, static_cast<std::uint64_t>(scaled));
    }
    n *= 4;
  }
}

// Operations per second, in units of 1e9, of `kernel` (ops_per_iteration each round) run on
// `threads` threads at once; best of the effort's repetitions.
template <class R>
Measured measure_peak(R (*kernel)(std::uint64_t) noexcept, std::uint64_t ops_per_iteration, unsigned threads,
                    Effort effort) {
  threads = std::max(1u, threads);
  const std::uint64_t n = calibrated_iterations(kernel, peak_seconds_per_repetition(effort));
  std::vector<R> results(threads);
  const Timing best = fastest_parallel_run(threads, peak_repetitions(effort), [&](unsigned t) { results[t] = kernel(n); });
  for (R r : results) keep(r);
  return {static_cast<double>(n) * static_cast<double>(ops_per_iteration) * threads / best.seconds / 1e9,
          best.cpu_share};
}

std::size_t dram_working_set_bytes(Effort effort) {
  const std::size_t floor = effort == Effort::full ? kGiB : 256 * kMiB;
  std::size_t bytes = std::max(floor, 8 * last_level_cache_bytes());
  if (const std::size_t physical = physical_memory_bytes(); physical != 0)
    bytes = std::min(bytes, std::max(physical / 4, 64 * kMiB));
  return (bytes + kBufferAlignment - 1) / kBufferAlignment * kBufferAlignment;
}

}  // namespace

// ---- DramReadBuffer ---------------------------------------------------------------------------

void DramReadBuffer::Free::operator()(std::byte* p) const noexcept {
  ::operator delete(p, std::align_val_t{kBufferAlignment});
}

DramReadBuffer::DramReadBuffer(Effort effort, unsigned threads) {
  threads = std::max(1u, threads);
  size_ = dram_working_set_bytes(effort);
  data_.reset(static_cast<std::byte*>(::operator new(size_, std::align_val_t{kBufferAlignment})));
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  // Fewer TLB misses, as a tuned stream benchmark would have; harmless when THP is off.
  (void)madvise(data_.get(), size_, MADV_HUGEPAGE);
#endif
  std::byte* base = data_.get();
  const std::size_t size = size_;
  fastest_parallel_run(threads, 1, [&](unsigned t) {
    const Slice s = slice_of(size, threads, t);
    std::memset(base + s.begin, 1, s.end - s.begin);
  });
}

DramReadBuffer::~DramReadBuffer() = default;

// ---- Measurements -----------------------------------------------------------------------------

std::string_view yardstick_kernel() noexcept {
  switch (pick_kernel()) {
    case Kernel::avx512: return "avx512";
    case Kernel::avx2: return "avx2";
    case Kernel::portable: return "portable";
  }
  return "portable";
}

namespace {

Measured dram_read(const DramReadBuffer& buffer, unsigned threads, Effort effort) {
  threads = std::max(1u, threads);
  const auto read = read_kernels().sum;
  const std::byte* base = buffer.data();
  const std::size_t size = buffer.size();
  std::vector<std::uint64_t> sums(threads);
  const Timing best = fastest_parallel_run(threads, dram_repetitions(effort), [&](unsigned t) {
    const Slice s = slice_of(size, threads, t);
    sums[t] = read(base + s.begin, s.end - s.begin);
  });
  for (std::uint64_t s : sums) keep(s);
  return {static_cast<double>(size) / best.seconds / 1e9, best.cpu_share};
}

Measured regions_read(std::span<const std::span<const std::byte>> regions, unsigned threads, Effort effort) {
  threads = std::max(1u, threads);
  const auto read = read_kernels().sum;
  // Thread t reads about bytes [total / threads * t, total / threads * (t + 1)) of the regions
  // laid end to end, cut at multiples of 64 bytes within a region (the read kernel's alignment).
  std::size_t total = 0;
  for (const auto& r : regions) total += r.size();
  std::vector<std::vector<std::span<const std::byte>>> parts(threads);
  unsigned owner = 0;
  std::size_t pos = 0;  // bytes given to threads so far
  for (const auto& r : regions) {
    std::size_t done = 0;
    while (done < r.size()) {
      const std::size_t share_end = owner + 1 == threads ? total : total / threads * (owner + 1);
      std::size_t end = r.size();
      if (pos + (end - done) > share_end) end = std::max((done + share_end - pos) / 64 * 64, done);
      if (end > done) {
        parts[owner].push_back(r.subspan(done, end - done));
        pos += end - done;
        done = end;
      }
      if (done < r.size()) ++owner;  // this thread's share is full
    }
  }
  std::vector<std::uint64_t> sums(threads);
  const Timing best = fastest_parallel_run(threads, dram_repetitions(effort), [&](unsigned t) {
    std::uint64_t sum = 0;
    for (const auto& p : parts[t]) sum += read(p.data(), p.size());
    sums[t] = sum;
  });
  for (std::uint64_t s : sums) keep(s);
  return {static_cast<double>(total) / best.seconds / 1e9, best.cpu_share};
}

Measured scattered_read(const DramReadBuffer& buffer, std::size_t block_bytes, unsigned threads, Effort effort) {
  threads = std::max(1u, threads);
  block_bytes = std::max<std::size_t>(512, block_bytes / 512 * 512);
  const auto read = read_kernels().blocks;
  const std::size_t ahead = std::max<std::size_t>(1, (32 * 1024 + block_bytes - 1) / block_bytes);
  // Each thread's blocks: those of its slice, shuffled (Fisher-Yates, SplitMix64, fixed seed).
  std::vector<std::vector<std::uint32_t>> order(threads);
  std::size_t total = 0;
  for (unsigned t = 0; t < threads; ++t) {
    const Slice s = slice_of(buffer.size(), threads, t);
    const std::size_t first = (s.begin + block_bytes - 1) / block_bytes, last = s.end / block_bytes;
    std::vector<std::uint32_t>& o = order[t];
    for (std::size_t b = first; b < last; ++b) o.push_back(static_cast<std::uint32_t>(b));
    detail::SplitMix64 rng(7, t, 0);
    for (std::size_t i = o.size(); i > 1; --i) std::swap(o[i - 1], o[rng.next() % i]);
    total += o.size() * block_bytes;
  }
  std::vector<std::uint64_t> sums(threads);
  const Timing best = fastest_parallel_run(threads, dram_repetitions(effort), [&](unsigned t) {
    sums[t] = read(buffer.data(), order[t].data(), order[t].size(), block_bytes, ahead);
  });
  for (std::uint64_t s : sums) keep(s);
  return {static_cast<double>(total) / best.seconds / 1e9, best.cpu_share};
}

Measured fma_peak(unsigned threads, Effort effort) {
  switch (pick_kernel()) {
#if QUARRY_BENCH_HAS_AVX512
    case Kernel::avx512:
      return measure_peak(&detail::fma_chains_avx512, detail::kFmaAvx512FlopsPerIteration, threads, effort);
#endif
#if QUARRY_BENCH_HAS_AVX2
    case Kernel::avx2:
      return measure_peak(&detail::fma_chains_avx2, detail::kFmaAvx2FlopsPerIteration, threads, effort);
#endif
    default:
      return measure_peak(&detail::fma_chains_portable, detail::kFmaPortableFlopsPerIteration, threads, effort);
  }
}

std::optional<Measured> vnni_peak([[maybe_unused]] unsigned threads, [[maybe_unused]] Effort effort) {
#if QUARRY_BENCH_HAS_AVX512VNNI
  if (isa_supported(Isa::avx512) && cpu_features().avx512vnni)
    return measure_peak(&detail::vnni_chains_avx512, detail::kVnniAvx512OpsPerIteration, threads, effort);
#endif
  return std::nullopt;
}

}  // namespace

double measure_dram_read_gbps(const DramReadBuffer& buffer, unsigned threads, Effort effort) {
  return dram_read(buffer, threads, effort).value;
}

double measure_dram_read_gbps(unsigned threads, Effort effort) {
  const DramReadBuffer buffer(effort, threads);
  return measure_dram_read_gbps(buffer, threads, effort);
}

double measure_scattered_read_gbps(const DramReadBuffer& buffer, std::size_t block_bytes, unsigned threads, Effort effort) {
  return scattered_read(buffer, block_bytes, threads, effort).value;
}

double measure_regions_read_gbps(std::span<const std::span<const std::byte>> regions, unsigned threads, Effort effort) {
  return regions_read(regions, threads, effort).value;
}

double measure_fma_peak_gflops(unsigned threads, Effort effort) { return fma_peak(threads, effort).value; }

std::optional<double> measure_vnni_peak_gops(unsigned threads, Effort effort) {
  if (const std::optional<Measured> m = vnni_peak(threads, effort)) return m->value;
  return std::nullopt;
}

Yardsticks measure_yardsticks(unsigned threads, Effort effort, std::size_t scattered_block_bytes) {
  Yardsticks y;
  y.threads = threads ? threads : default_threads();
  const bool parallel = y.threads > 1;
  auto record = [&y](const Measured& m) {
    y.cpu_share = std::min(y.cpu_share, m.cpu_share);
    return m.value;
  };
  {
    const DramReadBuffer buffer(effort, y.threads);
    y.dram_bytes = buffer.size();
    y.dram_gbps_1thread = record(dram_read(buffer, 1, effort));
    y.dram_gbps = parallel ? record(dram_read(buffer, y.threads, effort)) : y.dram_gbps_1thread;
    if (scattered_block_bytes > 0) {
      y.scattered_block_bytes = scattered_block_bytes;
      y.scattered_gbps_1thread = record(scattered_read(buffer, scattered_block_bytes, 1, effort));
      y.scattered_gbps = parallel ? record(scattered_read(buffer, scattered_block_bytes, y.threads, effort)) : y.scattered_gbps_1thread;
    }
  }
  y.fma_gflops_1thread = record(fma_peak(1, effort));
  y.fma_gflops = parallel ? record(fma_peak(y.threads, effort)) : y.fma_gflops_1thread;
  if (const auto one = vnni_peak(1, effort)) {
    y.vnni_gops_1thread = record(*one);
    y.vnni_gops = parallel ? record(*vnni_peak(y.threads, effort)) : *y.vnni_gops_1thread;
  }
  return y;
}

}  // namespace quarry::bench
