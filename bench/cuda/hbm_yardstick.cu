// The GPU yardsticks of bench_cuda_qgemm: HBM read bandwidth, cudaMemcpy D2D bandwidth, and a
// spin kernel (hbm_yardstick.h). CUDA C++17; sees no quarry header, only plain types. Also
// compiled by the host compiler for the SIMT emulator (QUARRY_SIMT_EMULATED, tests/cuda_emulated),
// where the benchmarks run at --tiny sizes in the test suite.
#include "hbm_yardstick.h"

#include <cuda_runtime.h>

#include "launch.cuh"  // src/cuda: QUARRY_LAUNCH

#include <algorithm>
#include <cstdint>
#include <vector>

namespace {

constexpr int kReadThreads = 256;
constexpr int kLoadsInFlight = 4;  // independent 16-byte loads per thread per iteration

// Sums the buffer `p` of `n` uint4 into *out. Thread t of the grid reads p[t], p[t + stride], ...
// (consecutive threads, consecutive 16 bytes: every warp load is 512 contiguous bytes), with
// kLoadsInFlight loads issued before any is used. The sum is written, so no load can be dropped.
__global__ void __launch_bounds__(kReadThreads)
    hbm_read_kernel(const uint4* __restrict__ p, std::size_t n, unsigned long long* __restrict__ out) {
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  unsigned a = 0, b = 0, c = 0, d = 0;
  for (; i + (kLoadsInFlight - 1) * stride < n; i += kLoadsInFlight * stride) {
    uint4 v[kLoadsInFlight];
#pragma unroll
    for (int u = 0; u < kLoadsInFlight; ++u) v[u] = __ldcs(p + i + u * stride);  // streaming: evict first
#pragma unroll
    for (int u = 0; u < kLoadsInFlight; ++u) {
      a += v[u].x;
      b += v[u].y;
      c += v[u].z;
      d += v[u].w;
    }
  }
  for (; i < n; i += stride) {
    const uint4 v = __ldcs(p + i);
    a += v.x;
    b += v.y;
    c += v.z;
    d += v.w;
  }
  unsigned long long s = static_cast<unsigned long long>(a) + b + c + d;
  for (int offset = 16; offset > 0; offset >>= 1) s += __shfl_xor_sync(0xffffffffu, s, offset);
  if ((threadIdx.x & 31) == 0) atomicAdd(out, s);
}

// The device's global nanosecond timer.
__device__ __forceinline__ unsigned long long global_timer_ns() {
#if defined(QUARRY_SIMT_EMULATED)
  return ::quarry::simt::global_timer_ns();
#else
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
#endif
}

// Spins one thread until the device's global nanosecond timer has advanced by `ns`.
__global__ void spin_kernel(unsigned long long ns) {
  const unsigned long long t0 = global_timer_ns();
  while (global_timer_ns() - t0 < ns) {
  }
}

// Device memory, events: released on every path.
struct Resources {
  void* buffer = nullptr;
  unsigned long long* sum = nullptr;
  cudaEvent_t start = nullptr;
  cudaEvent_t stop = nullptr;
  ~Resources() {
    if (stop) (void)cudaEventDestroy(stop);
    if (start) (void)cudaEventDestroy(start);
    if (sum) (void)cudaFree(sum);
    if (buffer) (void)cudaFree(buffer);
  }
};

double median_of(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

}  // namespace

#define QB_CHECK(call)                       \
  do {                                       \
    const cudaError_t qb_e_ = (call);        \
    if (qb_e_ != cudaSuccess) return qb_e_;  \
  } while (0)

extern "C" cudaError_t quarry_bench_hbm_measure(std::size_t bytes, int passes, quarry_bench_hbm_result* out) {
  if (out == nullptr) return cudaErrorInvalidValue;
  *out = quarry_bench_hbm_result{};
  constexpr std::size_t kGranule = std::size_t{64} << 10;
  bytes = std::max<std::size_t>(bytes, std::size_t{64} << 20) / kGranule * kGranule;
  passes = std::max(passes, 1);

  int device = 0, sms = 0, threads_per_sm = 0;
  QB_CHECK(cudaGetDevice(&device));
  QB_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  QB_CHECK(cudaDeviceGetAttribute(&threads_per_sm, cudaDevAttrMaxThreadsPerMultiProcessor, device));
  int blocks_per_sm = 0;
  QB_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks_per_sm, hbm_read_kernel, kReadThreads, 0));
  blocks_per_sm = std::max(1, std::min(blocks_per_sm, threads_per_sm / kReadThreads));
  const int blocks = sms * blocks_per_sm;

  Resources r;
  QB_CHECK(cudaMalloc(&r.buffer, bytes));
  QB_CHECK(cudaMalloc(&r.sum, sizeof(unsigned long long)));
  QB_CHECK(cudaMemset(r.buffer, 0x5a, bytes));  // every page written before anything is timed
  QB_CHECK(cudaMemset(r.sum, 0, sizeof(unsigned long long)));
  QB_CHECK(cudaEventCreate(&r.start));
  QB_CHECK(cudaEventCreate(&r.stop));
  QB_CHECK(cudaDeviceSynchronize());

  out->read_bytes = bytes;
  out->passes = passes;
  out->blocks = blocks;
  out->threads_per_block = kReadThreads;

  // Read kernel: one warm-up pass, then `passes` timed ones.
  const std::size_t n = bytes / sizeof(uint4);
  std::vector<double> read_ms;
  for (int pass = -1; pass < passes; ++pass) {
    QB_CHECK(cudaEventRecord(r.start, 0));
    QUARRY_LAUNCH(blocks, kReadThreads, 0, hbm_read_kernel)(static_cast<const uint4*>(r.buffer), n, r.sum);
    QB_CHECK(cudaGetLastError());
    QB_CHECK(cudaEventRecord(r.stop, 0));
    QB_CHECK(cudaEventSynchronize(r.stop));
    float ms = 0;
    QB_CHECK(cudaEventElapsedTime(&ms, r.start, r.stop));
    if (pass >= 0) read_ms.push_back(ms);
  }
  QB_CHECK(cudaMemcpy(&out->checksum, r.sum, sizeof(unsigned long long), cudaMemcpyDeviceToHost));
  const double best_read = *std::min_element(read_ms.begin(), read_ms.end());
  out->read_ms = best_read;
  out->read_gbps = static_cast<double>(bytes) / (best_read * 1e-3) / 1e9;
  out->read_gbps_median = static_cast<double>(bytes) / (median_of(read_ms) * 1e-3) / 1e9;

  // cudaMemcpy device to device: the first half onto the second half.
  const std::size_t half = bytes / 2;
  out->copy_bytes = half;
  double best_copy = 1e300;
  for (int pass = -1; pass < passes; ++pass) {
    QB_CHECK(cudaEventRecord(r.start, 0));
    QB_CHECK(cudaMemcpyAsync(static_cast<char*>(r.buffer) + half, r.buffer, half, cudaMemcpyDeviceToDevice, 0));
    QB_CHECK(cudaEventRecord(r.stop, 0));
    QB_CHECK(cudaEventSynchronize(r.stop));
    float ms = 0;
    QB_CHECK(cudaEventElapsedTime(&ms, r.start, r.stop));
    if (pass >= 0) best_copy = std::min(best_copy, static_cast<double>(ms));
  }
  out->copy_ms = best_copy;
  out->copy_gbps = 2.0 * static_cast<double>(half) / (best_copy * 1e-3) / 1e9;
  return cudaSuccess;
}

extern "C" cudaError_t quarry_bench_spin(unsigned long long nanoseconds) {
  nanoseconds = std::min<unsigned long long>(nanoseconds, 2000000000ull);
  QUARRY_LAUNCH(1, 1, 0, spin_kernel)(nanoseconds);
  return cudaGetLastError();
}
