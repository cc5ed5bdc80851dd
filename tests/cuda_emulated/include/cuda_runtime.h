// CUDA C++ as the host compiler reads it, for the SIMT emulator (tests/cuda_emulated): the
// runtime API (cuda_runtime_api.h), the vector types, the function and memory qualifiers, the
// built-in variables, and the device intrinsics quarry's kernels use. Kernels are compiled with
// QUARRY_SIMT_EMULATED, so that src/cuda/launch.cuh launches them through quarry::simt::launch.
//
// What the emulation means: every thread of a block is a fiber on the launching thread; the
// block's threads run in turn, each until it reaches a warp collective (__shfl*_sync,
// __all_sync, __syncwarp ...) or __syncthreads, which completes once every thread it waits for
// has reached the same one (lanes that diverge there, exit early or wait forever are reported
// as a launch failure); blocks run one after another. Static __shared__ variables are statics in
// one section of the program (quarry_simt_shared), which the emulator refills with 0xff bytes
// at the start of every block, as it does dynamic shared memory: a kernel that reads shared
// memory before writing it sees NaN (and -1), not the last block's values. So one launch runs at
// a time: launches from several host threads take turns. Device memory is the host's.
#pragma once

#include <math.h>

#include <bit>
#include <cmath>
#include <cstdint>

#include "cuda_runtime_api.h"
#include "quarry_simt.hpp"
#include "vector_types.h"

// cuda_runtime.h's typed overload of cudaMalloc.
template <class T>
cudaError_t cudaMalloc(T** ptr, std::size_t bytes) {
  return cudaMalloc(reinterpret_cast<void**>(ptr), bytes);
}

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __launch_bounds__(...)
#define __shared__ static __attribute__((section("quarry_simt_shared")))
#define __constant__ static
#define __align__(n) alignas(n)

#define threadIdx (::quarry::simt::thread_idx())
#define blockIdx (::quarry::simt::block_idx())
#define blockDim (::quarry::simt::block_dim())
#define gridDim (::quarry::simt::grid_dim())
#define warpSize 32

inline void __syncthreads() { ::quarry::simt::sync_threads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) { (void)::quarry::simt::warp_collective(::quarry::simt::WarpOp::sync, mask, 0, 0, 32); }

template <class T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
  return ::quarry::simt::shuffle(::quarry::simt::WarpOp::shfl, mask, v, src_lane, width);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  return ::quarry::simt::shuffle(::quarry::simt::WarpOp::shfl_xor, mask, v, lane_mask, width);
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::quarry::simt::shuffle(::quarry::simt::WarpOp::shfl_up, mask, v, static_cast<int>(delta), width);
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return ::quarry::simt::shuffle(::quarry::simt::WarpOp::shfl_down, mask, v, static_cast<int>(delta), width);
}
inline int __all_sync(unsigned mask, int pred) {
  return static_cast<int>(::quarry::simt::warp_collective(::quarry::simt::WarpOp::all, mask, pred != 0, 0, 32));
}
inline int __any_sync(unsigned mask, int pred) {
  return static_cast<int>(::quarry::simt::warp_collective(::quarry::simt::WarpOp::any, mask, pred != 0, 0, 32));
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  return static_cast<unsigned>(::quarry::simt::warp_collective(::quarry::simt::WarpOp::ballot, mask, pred != 0, 0, 32));
}

// Atomics: a block's threads never run at once here, but two host threads' launches may, so they
// are the compiler's atomic operations (relaxed, as CUDA's). Integers only: add others with the
// kernel that needs them.
template <class T>
T atomicAdd(T* p, T v) {
  return __atomic_fetch_add(p, v, __ATOMIC_RELAXED);
}

// Loads through the read-only and streaming caches: plain loads here.
template <class T>
T __ldg(const T* p) {
  return *p;
}
template <class T>
T __ldcs(const T* p) {
  return *p;
}

inline float __uint_as_float(unsigned u) { return std::bit_cast<float>(u); }
inline unsigned __float_as_uint(float f) { return std::bit_cast<unsigned>(f); }
inline float __int_as_float(int i) { return std::bit_cast<float>(i); }
inline int __float_as_int(float f) { return std::bit_cast<int>(f); }
inline float __int2float_rn(int i) { return static_cast<float>(i); }  // round to nearest, as the host's conversion
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }

// The fast-math intrinsics as the host's correctly rounded functions (the device's __expf is
// within 2 ulp of these), and the rounding-mode arithmetic as plain (round to nearest) operations.
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }

// Bytes of {y, x} (x the low four) chosen by the selector's low three bits of each nibble (CUDA's
// __byte_perm, the upper 16 bits of s unused).
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
  const unsigned long long v = (static_cast<unsigned long long>(y) << 32) | x;
  unsigned r = 0;
  for (int i = 0; i < 4; ++i) r |= static_cast<unsigned>((v >> (8 * ((s >> (4 * i)) & 7u))) & 0xffu) << (8 * i);
  return r;
}

// The byte-wise dot product of two packed 4 x int8 words plus c.
inline int __dp4a(int a, int b, int c) {
  for (int i = 0; i < 4; ++i) c += static_cast<signed char>(a >> (8 * i)) * static_cast<signed char>(b >> (8 * i));
  return c;
}
