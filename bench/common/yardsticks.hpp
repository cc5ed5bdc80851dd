// The yardsticks every benchmark divides by: this machine's DRAM read bandwidth and its f32 FMA
// and int8 VNNI peaks, measured in the same process run as the figures they judge.
//
// Counting conventions (every benchmark uses the same):
//   - bandwidth in GB/s = 1e9 bytes per second, bytes read once each;
//   - f32 GFLOP/s counts 2 flops per FMA lane (a multiply and an add);
//   - int8 GOP/s counts 2 ops per 8-bit multiply-add, so one vpdpbusd on zmm (16 int32 lanes,
//     4 u8 x s8 multiply-adds each) is 128 ops.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string_view>

namespace quarry::bench {

/// How long a measurement runs: `full` for figures to publish (well under a minute for all
/// yardsticks), `quick` for a smoke run of a few seconds (smaller working set, fewer repetitions).
enum class Effort { full, quick };

/// A working set far larger than the last-level cache for the DRAM read yardstick: 1 GiB or 8x
/// the LLC, whichever is larger (quick: 256 MiB or 8x the LLC), capped at a quarter of physical
/// memory. Allocated 2 MiB-aligned (transparent huge pages where the OS allows), and written once
/// so every page is mapped before anything is timed.
class DramReadBuffer {
 public:
  /// Allocates and first-touches the buffer, each of `threads` threads writing the slice it
  /// will later read (so pages land on that thread's NUMA node). Throws std::bad_alloc.
  explicit DramReadBuffer(Effort effort = Effort::full, unsigned threads = 1);
  ~DramReadBuffer();
  DramReadBuffer(const DramReadBuffer&) = delete;
  DramReadBuffer& operator=(const DramReadBuffer&) = delete;

  /// The first byte (2 MiB aligned).
  const std::byte* data() const noexcept { return data_.get(); }
  /// Its size in bytes: a multiple of 2 MiB.
  std::size_t size() const noexcept { return size_; }

 private:
  struct Free {
    void operator()(std::byte* p) const noexcept;
  };
  std::unique_ptr<std::byte, Free> data_;
  std::size_t size_ = 0;
};

/// The SIMD kernel the yardsticks use on this CPU for loads and f32 FMA: "avx512", "avx2" or
/// "portable": the best that quarry::isa_supported() allows, independent of QUARRY_FORCE_ISA.
std::string_view yardstick_kernel() noexcept;

/// DRAM read bandwidth in GB/s: `threads` threads each sum their slice of `buffer` with SIMD
/// loads; the best of several repetitions (wall time of the slowest thread).
double measure_dram_read_gbps(const DramReadBuffer& buffer, unsigned threads, Effort effort = Effort::full);
/// Same, allocating (and first touching) a DramReadBuffer for this one measurement.
double measure_dram_read_gbps(unsigned threads, Effort effort = Effort::full);

/// DRAM read bandwidth of scattered pages, in GB/s: `threads` threads each read their slice of
/// `buffer` as blocks of `block_bytes` (a multiple of 512) in a random order (fixed seed), two at
/// a time side by side, asking for blocks about 32 KiB ahead into L2 as they read, as quarry's kv
/// decode kernels do: the ceiling for a kernel that reads pages scattered over a pool (the
/// hardware prefetchers stop at each block). Best of several repetitions.
double measure_scattered_read_gbps(const DramReadBuffer& buffer, std::size_t block_bytes, unsigned threads, Effort effort = Effort::full);

/// Read bandwidth in GB/s of the given memory (each region 64-byte aligned), by the plain SIMD
/// sum of the DRAM yardstick: `threads` threads each read an equal share of the regions laid end
/// to end; the best of several repetitions. For a kernel's own operands (a model's weight
/// matrices, say) when they are far larger than the caches: where a buffer lands in DRAM can
/// change its read rate, so a separate buffer's figure may not be theirs.
double measure_regions_read_gbps(std::span<const std::span<const std::byte>> regions, unsigned threads, Effort effort = Effort::full);

/// Peak f32 GFLOP/s on `threads` threads: chains of independent FMAs on the widest registers the
/// CPU has (zmm with AVX-512, ymm with AVX2), 2 flops per lane. Best of several repetitions.
double measure_fma_peak_gflops(unsigned threads, Effort effort = Effort::full);

/// Peak int8 GOP/s on `threads` threads: chains of independent vpdpbusd on zmm, 2 ops per
/// multiply-add. nullopt when the CPU lacks AVX-512 VNNI (nothing is run then).
std::optional<double> measure_vnni_peak_gops(unsigned threads, Effort effort = Effort::full);

/// All yardsticks, on 1 thread and on `threads` threads, measured in one call.
struct Yardsticks {
  unsigned threads = 1;                     ///< the thread count of the multi-threaded figures
  std::size_t dram_bytes = 0;               ///< size of the working set the DRAM figures read
  double dram_gbps_1thread = 0;             ///< DRAM read GB/s, 1 thread
  double dram_gbps = 0;                     ///< DRAM read GB/s, `threads` threads
  double fma_gflops_1thread = 0;            ///< f32 FMA peak GFLOP/s, 1 thread
  double fma_gflops = 0;                    ///< f32 FMA peak GFLOP/s, `threads` threads
  std::optional<double> vnni_gops_1thread;  ///< int8 VNNI peak GOP/s, 1 thread (nullopt: no VNNI)
  std::optional<double> vnni_gops;          ///< int8 VNNI peak GOP/s, `threads` threads
  /// With measure_yardsticks(..., scattered_block_bytes > 0): that block size and the read rate
  /// of such blocks scattered over the DRAM buffer (measure_scattered_read_gbps), 1 / `threads`
  /// threads; else 0.
  std::size_t scattered_block_bytes = 0;
  double scattered_gbps_1thread = 0;
  double scattered_gbps = 0;
  /// The lowest share of CPU time the probe threads got during the repetitions the figures come
  /// from (their CPU time / (wall time x threads)). Well below 1 (under 0.9, say), other
  /// processes took CPU time from the probes and the figures understate the machine.
  double cpu_share = 1;

  /// The bandwidth a row run on `row_threads` threads is divided by for its bw_ratio: the
  /// 1-thread figure for 1 thread, the all-threads figure otherwise.
  double dram_gbps_for(unsigned row_threads) const noexcept {
    return row_threads <= 1 ? dram_gbps_1thread : dram_gbps;
  }
  /// The int8 peak a row run on `row_threads` threads is divided by for its peak_ratio.
  std::optional<double> vnni_gops_for(unsigned row_threads) const noexcept {
    return row_threads <= 1 ? vnni_gops_1thread : vnni_gops;
  }
  /// The scattered-block read rate for a row run on `row_threads` threads.
  double scattered_gbps_for(unsigned row_threads) const noexcept {
    return row_threads <= 1 ? scattered_gbps_1thread : scattered_gbps;
  }
  /// The f32 peak a row run on `row_threads` threads is divided by for its peak_ratio.
  double fma_gflops_for(unsigned row_threads) const noexcept {
    return row_threads <= 1 ? fma_gflops_1thread : fma_gflops;
  }
};

/// Measures every yardstick on 1 and on `threads` threads (0: default_threads()), sharing one
/// DramReadBuffer; with scattered_block_bytes > 0 also the read rate of blocks of that size in
/// random order on the same buffer. About 8 s with Effort::full (most of it mapping the 1 GiB
/// buffer), under 2 s with Effort::quick.
Yardsticks measure_yardsticks(unsigned threads = 0, Effort effort = Effort::full, std::size_t scattered_block_bytes = 0);

}  // namespace quarry::bench
