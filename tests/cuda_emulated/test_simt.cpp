// The host SIMT emulator itself (simt.cpp): built-in variables, shuffles and votes against a
// model of CUDA's rules, the tensor-core product against a matrix product, __syncthreads and shared memory, dynamic shared memory, the failures it
// must report (lanes that diverge at a collective, a __syncthreads some threads never reach, a
// shuffle from outside its mask, launches CUDA refuses), the runtime's memory checks, the
// reverse order, launches from two host threads at once; and what the GPU benchmarks call
// (events, occupancy, the global timer, cuBLAS's f16 GEMM).
#include <doctest/doctest.h>

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <bit>
#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "launch.cuh"
#include "quarry/core/float16.hpp"
#include "test_util.hpp"

namespace {

// Device memory of n T's, freed at the end of the scope.
template <class T>
struct DeviceArray {
  explicit DeviceArray(std::size_t n) : size(n) { REQUIRE(cudaMalloc(reinterpret_cast<void**>(&data), n * sizeof(T)) == cudaSuccess); }
  ~DeviceArray() { (void)cudaFree(data); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  std::vector<T> host() const {
    std::vector<T> h(size);
    REQUIRE(cudaMemcpy(h.data(), data, size * sizeof(T), cudaMemcpyDeviceToHost) == cudaSuccess);
    return h;
  }
  T* data = nullptr;
  std::size_t size;
};

using quarry::testing::contains;

// ---- Kernels ----

__global__ void coordinates_kernel(unsigned* out) {
  const unsigned bx = blockIdx.x + gridDim.x * blockIdx.y, t = threadIdx.x + blockDim.x * threadIdx.y;
  const unsigned i = bx * blockDim.x * blockDim.y + t;
  out[4 * i] = blockIdx.x, out[4 * i + 1] = blockIdx.y, out[4 * i + 2] = threadIdx.x, out[4 * i + 3] = threadIdx.y;
}

constexpr int kShuffles = 9;
__global__ void shuffle_kernel(int* out) {
  const int t = static_cast<int>(threadIdx.x), lane = t % 32;
  const int v = 1000 * t + 7;
  int* o = out + t * kShuffles;
  o[0] = __shfl_xor_sync(0xffffffffu, v, 5);
  o[1] = __shfl_sync(0xffffffffu, v, 3);
  o[2] = __shfl_sync(0xffffffffu, v, 11, 8);  // lane 3 of each group of 8
  o[3] = __shfl_up_sync(0xffffffffu, v, 2);
  o[4] = __shfl_down_sync(0xffffffffu, v, 2, 16);
  o[5] = __shfl_xor_sync(0xffffffffu, v, 8, 8);  // a later group gives the lane's own value
  o[6] = __all_sync(0xffffffffu, lane < 31);
  o[7] = __any_sync(0xffffffffu, lane == 17);
  o[8] = static_cast<int>(__ballot_sync(0xffffffffu, lane % 3 == 0));
}

// Two 64-bit values through one shuffle each, and a reduction over half a warp (mask 0xffff).
__global__ void wide_shuffle_kernel(double* d, long long* w) {
  const int lane = static_cast<int>(threadIdx.x);
  d[lane] = __shfl_xor_sync(0xffffffffu, 0.5 * lane, 1);
  long long x = (1LL << 40) + lane;
  if (lane < 16)
    for (int off = 8; off > 0; off /= 2) x += __shfl_xor_sync(0x0000ffffu, x, off);
  w[lane] = x;
}

__global__ void shared_kernel(int* out) {
  __shared__ int s[256];
  const int t = static_cast<int>(threadIdx.x);
  s[t] = t * t;
  __syncthreads();
  out[blockIdx.x * 256 + t] = s[255 - t] + static_cast<int>(blockIdx.x);
}

__global__ void dynamic_shared_kernel(int* out, int n) {
  QUARRY_DYNAMIC_SHARED(int, buf);
  const int t = static_cast<int>(threadIdx.x);
  if (t == 0) out[n] = buf[0];  // not yet written: the 0xff fill
  __syncthreads();
  for (int i = t; i < n; i += static_cast<int>(blockDim.x)) buf[i] = 3 * i;
  __syncthreads();
  for (int i = t; i < n; i += static_cast<int>(blockDim.x)) out[i] = buf[n - 1 - i];
}

// Block 0 writes the static shared array, the others do not; every block reads it (what a
// kernel that misses a write for some blocks does).
__global__ void unwritten_shared_kernel(float* out) {
  __shared__ float s[32];
  const int t = static_cast<int>(threadIdx.x);
  if (blockIdx.x == 0) s[t] = static_cast<float>(t);
  __syncthreads();
  out[blockIdx.x * 32 + t] = s[t];
}

// Each thread reads its neighbour's slot without a __syncthreads in between: a race.
__global__ void racy_kernel(int* out) {
  __shared__ int s[64];
  const int t = static_cast<int>(threadIdx.x);
  s[t] = t + 1;
  out[t] = s[(t + 1) % 64];
}

// Lanes 0-15 shuffle, 16-31 do not: they diverge.
__global__ void divergent_kernel(int* out) {
  const int lane = static_cast<int>(threadIdx.x);
  int v = lane;
  if (lane < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);
  out[lane] = v;
}

// Lanes 0-15 at a shuffle, 16-31 at a vote.
__global__ void mixed_collectives_kernel(int* out) {
  const int lane = static_cast<int>(threadIdx.x);
  out[lane] = lane < 16 ? __shfl_xor_sync(0xffffffffu, lane, 1) : __all_sync(0xffffffffu, 1);
}

// Threads 32-63 return before the __syncthreads the others wait at.
__global__ void early_exit_kernel(int* out) {
  const int t = static_cast<int>(threadIdx.x);
  if (t >= 32) return;
  __syncthreads();
  out[t] = t;
}

// A shuffle of mask 0xffff that reads lane 20, outside the mask.
__global__ void outside_mask_kernel(int* out) {
  const int lane = static_cast<int>(threadIdx.x);
  if (lane < 16) out[lane] = __shfl_sync(0x0000ffffu, lane, 20);
}

// One m16n8k16 product of small integers as f16 (exact), fragments loaded as PTX lays them out.
__global__ void mma_kernel(const unsigned short* a, const unsigned short* b, const float* c, float* d) {
  const int lane = static_cast<int>(threadIdx.x), g = lane / 4, t = lane % 4;
  auto pair = [](unsigned short lo, unsigned short hi) { return static_cast<unsigned>(lo) | static_cast<unsigned>(hi) << 16; };
  auto A = [&](int r, int k) { return pair(a[r * 16 + k], a[r * 16 + k + 1]); };
  const unsigned b0 = pair(b[(2 * t) * 8 + g], b[(2 * t + 1) * 8 + g]), b1 = pair(b[(2 * t + 8) * 8 + g], b[(2 * t + 9) * 8 + g]);
  float acc[4] = {c[g * 8 + 2 * t], c[g * 8 + 2 * t + 1], c[(g + 8) * 8 + 2 * t], c[(g + 8) * 8 + 2 * t + 1]};
  quarry::simt::mma_m16n8k16_f16_f32(acc, A(g, 2 * t), A(g + 8, 2 * t), A(g, 2 * t + 8), A(g + 8, 2 * t + 8), b0, b1);
  d[g * 8 + 2 * t] = acc[0], d[g * 8 + 2 * t + 1] = acc[1], d[(g + 8) * 8 + 2 * t] = acc[2], d[(g + 8) * 8 + 2 * t + 1] = acc[3];
}

__global__ void add_kernel(int* out, int n, int add) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) out[i] += add;
}

// CUDA's shuffle rules, written out once more: the source lane of `lane` for a shuffle of
// `kind` (0 xor, 1 idx, 2 up, 3 down) with argument a and width w.
int source_lane(int kind, int lane, int a, int w) {
  const int seg = lane / w * w;
  switch (kind) {
    case 0: return (lane ^ a) < seg + w ? lane ^ a : lane;
    case 1: return seg + a % w;
    case 2: return lane - a >= seg ? lane - a : lane;
    default: return lane + a < seg + w ? lane + a : lane;
  }
}

// Spins one thread until the global timer has advanced by ns (bench/cuda/hbm_yardstick.cu's).
__global__ void spin_kernel(unsigned long long ns) {
  const unsigned long long t0 = ::quarry::simt::global_timer_ns();
  while (::quarry::simt::global_timer_ns() - t0 < ns) {
  }
}

}  // namespace

TEST_CASE("simt: blockIdx, threadIdx, blockDim and gridDim over a 2-D grid of 2-D blocks") {
  const dim3 grid(3, 2), block(8, 5);
  DeviceArray<unsigned> out(6 * 40 * 4);
  QUARRY_LAUNCH(grid, block, 0, coordinates_kernel)(out.data);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  const std::vector<unsigned> h = out.host();
  for (unsigned by = 0; by < 2; ++by)
    for (unsigned bx = 0; bx < 3; ++bx)
      for (unsigned ty = 0; ty < 5; ++ty)
        for (unsigned tx = 0; tx < 8; ++tx) {
          const std::size_t i = ((by * 3 + bx) * 40 + ty * 8 + tx) * 4;
          CHECK(h[i] == bx);
          CHECK(h[i + 1] == by);
          CHECK(h[i + 2] == tx);
          CHECK(h[i + 3] == ty);
        }
}

TEST_CASE("simt: shuffles and votes follow CUDA's rules (widths, segments, later groups)") {
  DeviceArray<int> out(64 * kShuffles);
  QUARRY_LAUNCH(1, 64, 0, shuffle_kernel)(out.data);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  const std::vector<int> h = out.host();
  auto value = [](int warp, int lane) { return 1000 * (32 * warp + lane) + 7; };
  for (int t = 0; t < 64; ++t) {
    CAPTURE(t);
    const int warp = t / 32, lane = t % 32;
    const int* o = h.data() + t * kShuffles;
    CHECK(o[0] == value(warp, source_lane(0, lane, 5, 32)));
    CHECK(o[1] == value(warp, 3));
    CHECK(o[2] == value(warp, source_lane(1, lane, 11, 8)));
    CHECK(o[3] == value(warp, source_lane(2, lane, 2, 32)));
    CHECK(o[4] == value(warp, source_lane(3, lane, 2, 16)));
    CHECK(o[5] == value(warp, source_lane(0, lane, 8, 8)));
    CHECK(o[6] == 0);
    CHECK(o[7] == 1);
    CHECK(static_cast<unsigned>(o[8]) == 0x49249249u);
  }
  CHECK(source_lane(0, 3, 8, 8) == 3);    // lanes 0-7 xor 8: a later group, their own value
  CHECK(source_lane(0, 11, 8, 8) == 3);   // lanes 8-15 xor 8: an earlier group, read
}

TEST_CASE("simt: 64-bit shuffles, and a reduction over half a warp under its mask") {
  DeviceArray<double> d(32);
  DeviceArray<long long> w(32);
  QUARRY_LAUNCH(1, 32, 0, wide_shuffle_kernel)(d.data, w.data);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  const std::vector<double> hd = d.host();
  const std::vector<long long> hw = w.host();
  for (int lane = 0; lane < 32; ++lane) {
    CHECK(hd[static_cast<std::size_t>(lane)] == 0.5 * (lane ^ 1));
    CHECK(hw[static_cast<std::size_t>(lane)] == (lane < 16 ? 16 * (1LL << 40) + 120 : (1LL << 40) + lane));
  }
}

TEST_CASE("simt: __syncthreads orders shared memory; static and dynamic shared memory start each block as 0xff bytes") {
  DeviceArray<int> out(4 * 256);
  QUARRY_LAUNCH(4, 256, 0, shared_kernel)(out.data);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  const std::vector<int> h = out.host();
  for (int b = 0; b < 4; ++b)
    for (int t = 0; t < 256; ++t) CHECK(h[static_cast<std::size_t>(b * 256 + t)] == (255 - t) * (255 - t) + b);

  const int n = 1000;
  DeviceArray<int> dyn(n + 1);
  QUARRY_LAUNCH(1, 96, n * sizeof(int), dynamic_shared_kernel)(dyn.data, n);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  const std::vector<int> hd = dyn.host();
  for (int i = 0; i < n; ++i) CHECK(hd[static_cast<std::size_t>(i)] == 3 * (n - 1 - i));
  CHECK(static_cast<unsigned>(hd[n]) == 0xffffffffu);

  // Static shared memory is refilled too: block 1 does not see what block 0 wrote.
  DeviceArray<float> st(2 * 32);
  QUARRY_LAUNCH(2, 32, 0, unwritten_shared_kernel)(st.data);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  const std::vector<float> hs = st.host();
  for (int t = 0; t < 32; ++t) {
    CHECK(hs[static_cast<std::size_t>(t)] == static_cast<float>(t));
    CHECK(std::bit_cast<std::uint32_t>(hs[static_cast<std::size_t>(32 + t)]) == 0xffffffffu);
  }
}

TEST_CASE("simt: the m16n8k16 tensor-core product (qgemm's mma.sync) with PTX's fragment layout") {
  std::vector<unsigned short> a(16 * 16), b(16 * 8);
  std::vector<float> c(16 * 8);
  auto f16 = [](int v) { return static_cast<unsigned short>(quarry::f16(static_cast<float>(v)).bits); };
  for (int i = 0; i < 16 * 16; ++i) a[static_cast<std::size_t>(i)] = f16((i * 7) % 11 - 5);
  for (int i = 0; i < 16 * 8; ++i) b[static_cast<std::size_t>(i)] = f16((i * 5) % 9 - 4);
  for (int i = 0; i < 16 * 8; ++i) c[static_cast<std::size_t>(i)] = static_cast<float>(i % 13);
  DeviceArray<unsigned short> da(a.size()), db(b.size());
  DeviceArray<float> dc(c.size()), dd(c.size());
  REQUIRE(cudaMemcpy(da.data, a.data(), a.size() * 2, cudaMemcpyHostToDevice) == cudaSuccess);
  REQUIRE(cudaMemcpy(db.data, b.data(), b.size() * 2, cudaMemcpyHostToDevice) == cudaSuccess);
  REQUIRE(cudaMemcpy(dc.data, c.data(), c.size() * 4, cudaMemcpyHostToDevice) == cudaSuccess);
  QUARRY_LAUNCH(1, 32, 0, mma_kernel)(da.data, db.data, dc.data, dd.data);
  REQUIRE(cudaGetLastError() == cudaSuccess);
  const std::vector<float> d = dd.host();
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 8; ++n) {
      int want = r * 8 + n;
      want = want % 13;
      for (int k = 0; k < 16; ++k) want += ((r * 16 + k) * 7 % 11 - 5) * ((k * 8 + n) * 5 % 9 - 4);
      CHECK(d[static_cast<std::size_t>(r * 8 + n)] == static_cast<float>(want));
    }
}

// Under ThreadSanitizer the emulator reports this race as such (test_simt_racecheck): for the other builds.
TEST_CASE("simt: a race shows as results that change with the threads' order" * doctest::skip(quarry::testing::kThreadSanitized)) {
  DeviceArray<int> out(64);
  std::vector<int> by_order[2];
  for (const auto order : {quarry::simt::Order::forward, quarry::simt::Order::reverse}) {
    quarry::simt::set_thread_order(order);
    REQUIRE(cudaMemset(out.data, 0, 64 * sizeof(int)) == cudaSuccess);
    QUARRY_LAUNCH(1, 64, 0, racy_kernel)(out.data);
    REQUIRE(cudaGetLastError() == cudaSuccess);
    by_order[order == quarry::simt::Order::reverse] = out.host();
  }
  quarry::simt::set_thread_order(quarry::simt::Order::forward);
  CHECK(by_order[0] != by_order[1]);
  // Forward: each thread runs to its end before the next (there is no collective), so thread 63
  // alone reads a slot written in this launch (thread 0's); reverse: every thread but 63 does.
  CHECK(by_order[0][63] == 1);
  CHECK(by_order[1][0] == 2);  // reverse: thread 1 wrote before thread 0 read
}

TEST_CASE("simt: lanes that do not meet at a collective, or threads at a __syncthreads others never reach, fail the launch, saying why") {
  quarry::simt::set_failure_printing(false);
  DeviceArray<int> out(64);
  QUARRY_LAUNCH(1, 32, 0, divergent_kernel)(out.data);
  CHECK(cudaGetLastError() == cudaErrorLaunchFailure);
  CHECK(contains(quarry::simt::last_failure(), "divergent_kernel"));
  CHECK(contains(quarry::simt::last_failure(), "has exited: the lanes diverged"));

  QUARRY_LAUNCH(1, 32, 0, mixed_collectives_kernel)(out.data);
  CHECK(cudaGetLastError() == cudaErrorLaunchFailure);
  CHECK(contains(quarry::simt::last_failure(), "waits at __shfl_xor_sync"));
  CHECK(contains(quarry::simt::last_failure(), "waits at __all_sync"));

  QUARRY_LAUNCH(1, 64, 0, early_exit_kernel)(out.data);
  CHECK(cudaGetLastError() == cudaErrorLaunchFailure);
  CHECK(contains(quarry::simt::last_failure(), "32 wait at __syncthreads"));
  CHECK(contains(quarry::simt::last_failure(), "32 exited"));

  QUARRY_LAUNCH(1, 32, 0, outside_mask_kernel)(out.data);
  CHECK(cudaGetLastError() == cudaErrorLaunchFailure);
  CHECK(contains(quarry::simt::last_failure(), "reads lane 20, which is not in its mask"));

  // A host pointer given to a kernel.
  std::vector<int> host(64);
  QUARRY_LAUNCH(1, 32, 0, add_kernel)(host.data(), 64, 1);
  CHECK(cudaGetLastError() == cudaErrorIllegalAddress);
  CHECK(contains(quarry::simt::last_failure(), "argument 1 is not device memory"));
  CHECK(host[0] == 0);

  // Launches CUDA refuses.
  QUARRY_LAUNCH(1, 0, 0, add_kernel)(out.data, 64, 1);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  QUARRY_LAUNCH(1, 2048, 0, add_kernel)(out.data, 64, 1);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  QUARRY_LAUNCH(dim3(1, 70000), 32, 0, add_kernel)(out.data, 64, 1);
  CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration);
  QUARRY_LAUNCH(1, 32, 300 * 1024, add_kernel)(out.data, 64, 1);
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);
  CHECK(contains(quarry::simt::last_failure(), "dynamic shared memory"));
  quarry::simt::set_failure_printing(true);

  // The emulator goes on after a failure: the next launch runs, and the error was reported once.
  REQUIRE(cudaMemset(out.data, 0, 64 * sizeof(int)) == cudaSuccess);
  QUARRY_LAUNCH(2, 40, 0, add_kernel)(out.data, 64, 5);
  CHECK(cudaGetLastError() == cudaSuccess);
  CHECK(quarry::simt::last_failure().empty());
  for (const int x : out.host()) CHECK(x == 5);
}

TEST_CASE("simt: device memory is tracked: copies, sets and frees of anything else are errors") {
  const std::size_t before = quarry::simt::live_allocations();
  void* p = nullptr;
  REQUIRE(cudaMalloc(&p, 1000) == cudaSuccess);
  CHECK(reinterpret_cast<std::uintptr_t>(p) % 256 == 0);
  CHECK(quarry::simt::live_allocations() == before + 1);
  std::vector<unsigned char> host(1000, 1);
  REQUIRE(cudaMemcpy(host.data(), p, 1000, cudaMemcpyDeviceToHost) == cudaSuccess);
  CHECK(host[0] == 0xff);  // never written: 0xff bytes
  CHECK(host[999] == 0xff);

  quarry::simt::set_failure_printing(false);
  CHECK(cudaMemcpy(host.data(), p, 1001, cudaMemcpyDeviceToHost) == cudaErrorInvalidValue);     // past the allocation's end
  CHECK(cudaMemcpy(host.data(), host.data() + 10, 10, cudaMemcpyHostToDevice) == cudaErrorInvalidValue);  // host as the device side
  CHECK(cudaMemcpy(p, host.data(), 10, cudaMemcpyDeviceToHost) == cudaErrorInvalidValue);       // the direction reversed
  CHECK(cudaMemset(host.data(), 0, 10) == cudaErrorInvalidValue);
  CHECK(cudaMemcpy(static_cast<char*>(p) + 500, host.data(), 500, cudaMemcpyHostToDevice) == cudaSuccess);
  CHECK(cudaMemcpy(static_cast<char*>(p) + 500, host.data(), 500, cudaMemcpyDefault) == cudaSuccess);
  (void)cudaGetLastError();
  REQUIRE(cudaFree(p) == cudaSuccess);
  CHECK(cudaFree(p) == cudaErrorInvalidValue);  // freed already
  quarry::simt::set_failure_printing(true);
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);
  CHECK(cudaGetLastError() == cudaSuccess);
  CHECK(quarry::simt::live_allocations() == before);
}

TEST_CASE("simt: two host threads launch at once (their launches take turns), each with its own blocks") {
  constexpr int kBlocks = 40;
  DeviceArray<int> a(kBlocks * 256), b(kBlocks * 256);
  auto run = [](int* out) {
    for (int i = 0; i < 5; ++i) QUARRY_LAUNCH(kBlocks, 256, 0, shared_kernel)(out);
  };
  std::thread ta(run, a.data), tb(run, b.data);
  ta.join();
  tb.join();
  const std::vector<int> ha = a.host(), hb = b.host();
  CHECK(ha == hb);
  for (int t = 0; t < 256; ++t) CHECK(ha[static_cast<std::size_t>((kBlocks - 1) * 256 + t)] == (255 - t) * (255 - t) + kBlocks - 1);
}

TEST_CASE("simt: events time the work queued between them (the host's), and the rest the GPU benchmarks ask") {
  cudaEvent_t start = nullptr, stop = nullptr;
  REQUIRE(cudaEventCreate(&start) == cudaSuccess);
  REQUIRE(cudaEventCreate(&stop) == cudaSuccess);
  float ms = -1;
  quarry::simt::set_failure_printing(false);
  CHECK(cudaEventElapsedTime(&ms, start, stop) == cudaErrorInvalidResourceHandle);  // never recorded
  CHECK(cudaGetLastError() == cudaErrorInvalidResourceHandle);
  REQUIRE(cudaEventRecord(start, nullptr) == cudaSuccess);
  QUARRY_LAUNCH(1, 1, 0, spin_kernel)(20'000'000ull);  // 20 ms
  REQUIRE(cudaGetLastError() == cudaSuccess);
  REQUIRE(cudaEventRecord(stop) == cudaSuccess);
  CHECK(cudaEventQuery(start) == cudaSuccess);  // the work is done when it is queued: complete at once
  REQUIRE(cudaEventSynchronize(stop) == cudaSuccess);
  REQUIRE(cudaEventElapsedTime(&ms, start, stop) == cudaSuccess);
  CHECK(ms >= 20.f);
  CHECK(ms < 20000.f);
  CHECK(cudaEventDestroy(start) == cudaSuccess);
  CHECK(cudaEventDestroy(stop) == cudaSuccess);
  CHECK(cudaEventDestroy(stop) == cudaErrorInvalidResourceHandle);  // destroyed already
  CHECK(cudaEventRecord(stop) == cudaErrorInvalidResourceHandle);
  quarry::simt::set_failure_printing(true);
  (void)cudaGetLastError();

  int blocks = 0, value = 0;
  CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, spin_kernel, 256, 0) == cudaSuccess);
  CHECK(blocks == 8);  // 2,048 threads per SM
  CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, spin_kernel, 32, 0) == cudaSuccess);
  CHECK(blocks == 32);  // 32 blocks per SM at most
  CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, spin_kernel, 128, 100 * 1024) == cudaSuccess);
  CHECK(blocks == 2);  // 228 KiB of shared memory per SM
  CHECK(cudaDeviceGetAttribute(&value, cudaDevAttrMaxThreadsPerMultiProcessor, 0) == cudaSuccess);
  CHECK(value == 2048);
  CHECK(cudaDeviceGetAttribute(&value, cudaDevAttrL2CacheSize, 0) == cudaSuccess);
  CHECK(value == 50 * 1024 * 1024);
  CHECK(cudaDeviceGetAttribute(&value, cudaDevAttrMemoryClockRate, 0) == cudaErrorInvalidValue);  // no HBM here
  CHECK(cudaGetLastError() == cudaErrorInvalidValue);
}

TEST_CASE("simt: cuBLAS's f16 GEMM (f32 out) against a direct product, both operands either way round") {
  constexpr int m = 5, n = 7, k = 33;
  std::vector<std::uint16_t> a(m * k), b(k * n);  // f16 bits of small integers and halves: exact products
  for (int i = 0; i < m * k; ++i) a[static_cast<std::size_t>(i)] = quarry::f16(0.5f * static_cast<float>(i % 9 - 4)).bits;
  for (int i = 0; i < k * n; ++i) b[static_cast<std::size_t>(i)] = quarry::f16(static_cast<float>(i % 7 - 3)).bits;
  auto value = [](std::uint16_t h) { return static_cast<float>(quarry::f16::from_bits(h)); };
  DeviceArray<std::uint16_t> da(a.size()), db(b.size());
  DeviceArray<float> dc(static_cast<std::size_t>(m * n));
  REQUIRE(cudaMemcpy(da.data, a.data(), a.size() * 2, cudaMemcpyHostToDevice) == cudaSuccess);
  REQUIRE(cudaMemcpy(db.data, b.data(), b.size() * 2, cudaMemcpyHostToDevice) == cudaSuccess);
  cublasHandle_t h = nullptr;
  REQUIRE(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS);
  int version = -1;
  CHECK(cublasGetVersion(h, &version) == CUBLAS_STATUS_SUCCESS);
  CHECK(version == 0);
  const float alpha = 2.f, beta = 0.f;
  // The same host arrays read as op(A) [m, k] and op(B) [k, n], column-major: A as given (lda m)
  // or transposed (lda k); B likewise (ldb k, or n transposed).
  for (const cublasOperation_t ta : {CUBLAS_OP_N, CUBLAS_OP_T})
    for (const cublasOperation_t tb : {CUBLAS_OP_N, CUBLAS_OP_T}) {
      CAPTURE(ta);
      CAPTURE(tb);
      const int lda = ta == CUBLAS_OP_N ? m : k, ldb = tb == CUBLAS_OP_N ? k : n;
      REQUIRE(cublasGemmEx(h, ta, tb, m, n, k, &alpha, da.data, CUDA_R_16F, lda, db.data, CUDA_R_16F, ldb, &beta, dc.data, CUDA_R_32F, m,
                           CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS);
      const std::vector<float> c = dc.host();
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) {
          double want = 0;
          for (int p = 0; p < k; ++p) {
            const float x = value(a[static_cast<std::size_t>(ta == CUBLAS_OP_N ? i + p * m : p + i * k)]);
            const float y = value(b[static_cast<std::size_t>(tb == CUBLAS_OP_N ? p + j * k : j + p * n)]);
            want += static_cast<double>(x) * y;
          }
          CHECK(c[static_cast<std::size_t>(i + j * m)] == static_cast<float>(2 * want));
        }
    }
  // Mixed types, and a host pointer, are refused.
  CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, da.data, CUDA_R_16F, m, db.data, CUDA_R_8I, k, &beta, dc.data, CUDA_R_32F, m,
                     CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_NOT_SUPPORTED);
  CHECK(cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, a.data(), CUDA_R_16F, m, db.data, CUDA_R_16F, k, &beta, dc.data, CUDA_R_32F,
                     m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_INVALID_VALUE);
  CHECK(std::string(cublasGetStatusName(CUBLAS_STATUS_NOT_SUPPORTED)) == "CUBLAS_STATUS_NOT_SUPPORTED");
  CHECK(cublasDestroy(h) == CUBLAS_STATUS_SUCCESS);
}
