// The emulator as CUDA's racecheck (a -fsanitize=thread build; see the top of simt.cpp): one
// kernel per case, named on the command line. The racy cases must make ThreadSanitizer report a
// data race in their kernel; the others, the same accesses ordered by the barrier CUDA requires,
// must run clean. Registered in tests/cuda_emulated/CMakeLists.txt (the tsan preset only), one
// ctest test per case: test_simt_racecheck.<case>.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "launch.cuh"

// In the kernels' namespace, as src/cuda's: tests/cuda_emulated/shared_section.ld gathers the
// __shared__ variables of kernel templates from there.
namespace quarry::cuda_kernels {
namespace {

constexpr int kThreads = 64;  // two warps
constexpr int kRounds = 4;
constexpr int kBlocks = 64;  // the cases between blocks

// Each thread writes its slot and reads the one of the thread 32 places on (the other warp).
__global__ void shared_race_kernel(int* out) {
  __shared__ int s[kThreads];
  const int t = static_cast<int>(threadIdx.x);
  s[t] = t + 1;
  out[t] = s[(t + 32) % kThreads];
}

__global__ void shared_syncthreads_kernel(int* out) {
  __shared__ int s[kThreads];
  const int t = static_cast<int>(threadIdx.x);
  s[t] = t + 1;
  __syncthreads();
  out[t] = s[(t + 32) % kThreads];
}

// The same through global memory.
__global__ void global_race_kernel(int* buf, int* out) {
  const int t = static_cast<int>(threadIdx.x);
  buf[t] = t + 1;
  out[t] = buf[(t + 32) % kThreads];
}

__global__ void global_syncthreads_kernel(int* buf, int* out) {
  const int t = static_cast<int>(threadIdx.x);
  buf[t] = t + 1;
  __syncthreads();
  out[t] = buf[(t + 32) % kThreads];
}

// A lane reads its neighbour's slot after a shuffle: a shuffle exchanges registers, it orders no
// memory, so this is a race.
__global__ void shuffle_race_kernel(int* out) {
  __shared__ int s[32];
  const int lane = static_cast<int>(threadIdx.x);
  s[lane] = lane + 1;
  const int v = __shfl_xor_sync(0xffffffffu, lane, 1);
  out[lane] = s[lane ^ 1] + v;
}

__global__ void syncwarp_kernel(int* out) {
  __shared__ int s[32];
  const int lane = static_cast<int>(threadIdx.x);
  s[lane] = lane + 1;
  __syncwarp();
  out[lane] = s[lane ^ 1];
}

// __syncwarp orders the lanes of one warp, not two warps.
__global__ void syncwarp_race_kernel(int* out) {
  __shared__ int s[kThreads];
  const int t = static_cast<int>(threadIdx.x);
  s[t] = t + 1;
  __syncwarp();
  out[t] = s[(t + 32) % kThreads];
}

// Each half of the warp meets at its own __syncwarp (mask of its 16 lanes); reading within the
// half is ordered, reading the other half is not.
template <bool kOtherHalf>
__global__ void half_syncwarp_kernel(int* out) {
  __shared__ int s[32];
  const int lane = static_cast<int>(threadIdx.x);
  s[lane] = lane + 1;
  __syncwarp(lane < 16 ? 0x0000ffffu : 0xffff0000u);
  out[lane] = s[kOtherHalf ? (lane + 16) % 32 : lane ^ 1];
}

// Rounds of write, barrier, read the other warp's slot, barrier. Without the second barrier a
// thread's next write meets the other warp's read of the last round (the emulator runs warp 0 on
// to the next barrier before warp 1 leaves the last one, which the check must not take for order).
template <bool kSecondBarrier>
__global__ void rounds_kernel(int* out) {
  __shared__ int s[kThreads];
  const int t = static_cast<int>(threadIdx.x);
  int sum = 0;
  for (int round = 0; round < kRounds; ++round) {
    s[t] = t + round;
    __syncthreads();
    sum += s[(t + 32) % kThreads];
    if (kSecondBarrier) __syncthreads();
  }
  out[t] = sum;
}

// The same within a warp, with __syncwarp.
template <bool kSecondBarrier>
__global__ void warp_rounds_kernel(int* out) {
  __shared__ int s[32];
  const int lane = static_cast<int>(threadIdx.x);
  int sum = 0;
  for (int round = 0; round < kRounds; ++round) {
    s[lane] = lane + round;
    __syncwarp();
    sum += s[lane ^ 1];
    if (kSecondBarrier) __syncwarp();
  }
  out[lane] = sum;
}

// Every thread adds to one counter with atomicAdd (atomics do not race); after the barrier each
// reads it.
__global__ void atomics_kernel(int* counter, int* out) {
  const int t = static_cast<int>(threadIdx.x);
  atomicAdd(counter, t);
  __syncthreads();
  out[t] = atomicAdd(counter, 0);
}

// Between blocks, which a GPU runs at once and the emulator one after another.
// Every block writes the same words of out.
__global__ void blocks_race_kernel(int* out) { out[threadIdx.x] = static_cast<int>(blockIdx.x); }

// Blocks 16 apart write the same words (a stride: the sets blocks run in must not all follow it).
__global__ void strided_blocks_race_kernel(int* out) { out[(blockIdx.x % 16) * kThreads + threadIdx.x] = static_cast<int>(blockIdx.x); }

// Each block reads in (as every other block) and writes its own words of out; its static and
// dynamic shared memory, at the same addresses in every block, are its own.
__global__ void blocks_kernel(const int* in, int* out) {
  __shared__ int s[kThreads];
  QUARRY_DYNAMIC_SHARED(int, d);
  const int t = static_cast<int>(threadIdx.x), b = static_cast<int>(blockIdx.x);
  s[t] = in[t] + b;
  d[t] = in[(t + 1) % kThreads] + b;
  __syncthreads();
  out[b * kThreads + t] = s[(t + 32) % kThreads] + d[(t + 32) % kThreads];
}

// A second launch reads what every block of the first wrote: launches on one stream are ordered.
__global__ void read_back_kernel(const int* in, int* out) {
  const int t = static_cast<int>(threadIdx.x);
  int sum = 0;
  for (int b = 0; b < kBlocks; ++b) sum += in[b * kThreads + t];
  out[t] = sum;
}

}  // namespace
}  // namespace quarry::cuda_kernels

using namespace quarry::cuda_kernels;

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: test_simt_racecheck <case>\n");
    return 2;
  }
  const char* name = argv[1];
  int *buf = nullptr, *out = nullptr;
  if (cudaMalloc(reinterpret_cast<void**>(&buf), kBlocks * kThreads * sizeof(int)) != cudaSuccess ||
      cudaMalloc(reinterpret_cast<void**>(&out), kBlocks * kThreads * sizeof(int)) != cudaSuccess ||
      cudaMemset(buf, 0, kThreads * sizeof(int)) != cudaSuccess) {
    std::fprintf(stderr, "cudaMalloc failed\n");
    return 1;
  }
  const auto is = [&](const char* c) { return std::strcmp(name, c) == 0; };
  if (is("shared_race")) QUARRY_LAUNCH(1, kThreads, 0, shared_race_kernel)(out);
  else if (is("shared_syncthreads")) QUARRY_LAUNCH(1, kThreads, 0, shared_syncthreads_kernel)(out);
  else if (is("global_race")) QUARRY_LAUNCH(1, kThreads, 0, global_race_kernel)(buf, out);
  else if (is("global_syncthreads")) QUARRY_LAUNCH(1, kThreads, 0, global_syncthreads_kernel)(buf, out);
  else if (is("shuffle_race")) QUARRY_LAUNCH(1, 32, 0, shuffle_race_kernel)(out);
  else if (is("syncwarp")) QUARRY_LAUNCH(1, 32, 0, syncwarp_kernel)(out);
  else if (is("syncwarp_race")) QUARRY_LAUNCH(1, kThreads, 0, syncwarp_race_kernel)(out);
  else if (is("half_syncwarp")) QUARRY_LAUNCH(1, 32, 0, half_syncwarp_kernel<false>)(out);
  else if (is("half_syncwarp_race")) QUARRY_LAUNCH(1, 32, 0, half_syncwarp_kernel<true>)(out);
  else if (is("rounds")) QUARRY_LAUNCH(1, kThreads, 0, rounds_kernel<true>)(out);
  else if (is("rounds_race")) QUARRY_LAUNCH(1, kThreads, 0, rounds_kernel<false>)(out);
  else if (is("warp_rounds")) QUARRY_LAUNCH(1, 32, 0, warp_rounds_kernel<true>)(out);
  else if (is("warp_rounds_race")) QUARRY_LAUNCH(1, 32, 0, warp_rounds_kernel<false>)(out);
  else if (is("atomics")) QUARRY_LAUNCH(1, kThreads, 0, atomics_kernel)(buf, out);
  else if (is("blocks_race")) QUARRY_LAUNCH(4, kThreads, 0, blocks_race_kernel)(out);
  else if (is("strided_blocks_race")) QUARRY_LAUNCH(kBlocks, kThreads, 0, strided_blocks_race_kernel)(out);
  else if (is("blocks")) QUARRY_LAUNCH(kBlocks, kThreads, kThreads * sizeof(int), blocks_kernel)(buf, out);
  else if (is("launches")) {
    QUARRY_LAUNCH(kBlocks, kThreads, kThreads * sizeof(int), blocks_kernel)(buf, out);
    if (cudaGetLastError() == cudaSuccess) QUARRY_LAUNCH(1, kThreads, 0, read_back_kernel)(out, buf);
  }
  else {
    std::fprintf(stderr, "test_simt_racecheck: no case %s\n", name);
    return 2;
  }
  if (cudaGetLastError() != cudaSuccess) {
    std::fprintf(stderr, "test_simt_racecheck: the launch of %s failed\n", name);
    return 1;
  }
  std::vector<int> host(kThreads);
  if (cudaMemcpy(host.data(), out, kThreads * sizeof(int), cudaMemcpyDeviceToHost) != cudaSuccess) return 1;
  std::printf("ran %s: out[0] = %d\n", name, host[0]);
  (void)cudaFree(buf);
  (void)cudaFree(out);
  return 0;
}
