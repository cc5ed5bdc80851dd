// Who runs a benchmark: the CPU, the SIMD level quarry's kernels run at, the thread count, and
// the cache sizes the yardsticks size their working sets by.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace quarry::bench {

/// The identity of the machine a benchmark runs on (the part of the JSON "machine" object that
/// is read, not measured).
struct MachineIdentity {
  std::string cpu;      ///< the CPU's marketing name, from CPUID
  std::string isa;      ///< the SIMD level quarry's kernels run at: "scalar", "avx2", "avx512", "neon"
  std::string features; ///< the CPU flags quarry detected, e.g. "avx2 fma ... avx512vnni"
  unsigned threads = 1; ///< the thread count the benchmark's multi-threaded rows use
};

/// The machine this process runs on, with `threads` as its thread count (0: default_threads()).
MachineIdentity identify_machine(unsigned threads = 0);

/// The thread count benchmarks use when not told: QUARRY_NUM_THREADS when set to a positive
/// number (as quarry::default_thread_pool() reads it), else the hardware's thread count.
unsigned default_threads();

/// The thread counts a benchmark's rows are measured on: 1, and `threads` when it is more than 1.
std::vector<unsigned> row_thread_counts(unsigned threads);

/// The size of the largest CPU cache in bytes (the last-level cache), or 0 when it cannot be
/// read. On Linux it comes from /sys (sysconf's figure is wrong on some virtual machines).
std::size_t last_level_cache_bytes();

/// Physical memory in bytes, or 0 when it cannot be read.
std::size_t physical_memory_bytes();

}  // namespace quarry::bench
