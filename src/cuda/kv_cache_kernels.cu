// CudaKvCache's row writes (vLLM's reshape_and_cache): f32 / f16 / bf16 pages with one block per
// token, its threads over the token's n_kv_heads * head_dim values, each converted with quarry's
// bit-exact f16 / bf16 rounding (quarry/core/detail/float16_bits.hpp); INT8 / INT4 pages with one
// warp per (token, head) row, quantized as BlockPool's host store does. So the pages equal a
// host BlockPool's given the same rows.
#include "kv_cache_kernels.h"

#include <cuda_runtime.h>

#include "launch.cuh"
#include "quarry/core/detail/float16_bits.hpp"

namespace quarry::cuda_kernels {
namespace {

constexpr int kThreads = 256;

template <KvStoreType kT>
__device__ __forceinline__ void store(void* pages, std::int64_t at, float x) {
  if constexpr (kT == KvStoreType::f32) {
    static_cast<float*>(pages)[at] = x;
  } else if constexpr (kT == KvStoreType::f16) {
    static_cast<std::uint16_t*>(pages)[at] = ::quarry::detail::f32_bits_to_f16_bits(__float_as_uint(x));
  } else {
    static_cast<std::uint16_t*>(pages)[at] = ::quarry::detail::f32_bits_to_bf16_bits(__float_as_uint(x));
  }
}

template <KvStoreType kT>
__global__ void __launch_bounds__(kThreads) kv_write_kernel(void* k_pages, void* v_pages, const std::int64_t* slots, const float* k,
                                                             const float* v, std::int64_t n_kv_heads, std::int64_t page_size,
                                                             std::int64_t head_dim) {
  const std::int64_t t = blockIdx.x;
  const std::int64_t slot = slots[t];
  const std::int64_t page = slot / page_size, offset = slot - page * page_size;
  const std::int64_t n = n_kv_heads * head_dim;
  for (std::int64_t e = threadIdx.x; e < n; e += kThreads) {
    const std::int64_t h = e / head_dim, d = e - h * head_dim;
    const std::int64_t at = ((page * n_kv_heads + h) * page_size + offset) * head_dim + d;
    store<kT>(k_pages, at, k[t * n + e]);
    store<kT>(v_pages, at, v[t * n + e]);
  }
}

// One warp per (token, head) row, quantized per group (INT8: the whole row) into shared memory,
// then stored (INT4: packed in pairs, so groups of an odd size may share a byte).
template <bool kInt4>
__global__ void __launch_bounds__(32) kv_write_quantized_kernel(void* k_values, float* k_scales, void* v_values, float* v_scales,
                                                                 const std::int64_t* slots, const float* k, const float* v,
                                                                 std::int64_t n_kv_heads, std::int64_t page_size, std::int64_t head_dim,
                                                                 std::int64_t group) {
  QUARRY_DYNAMIC_SHARED(signed char, q);  // head_dim
  const std::int64_t t = blockIdx.x, h = blockIdx.y;
  const int lane = static_cast<int>(threadIdx.x);
  const std::int64_t slot = slots[t];
  const std::int64_t page = slot / page_size, offset = slot - page * page_size;
  const std::int64_t row = (page * n_kv_heads + h) * page_size + offset;
  const std::int64_t groups = head_dim / group;
  constexpr float qmax = kInt4 ? 7.f : 127.f, qmin = kInt4 ? -8.f : -127.f;
  for (int which = 0; which < 2; ++which) {
    const float* src = (which == 0 ? k : v) + (t * n_kv_heads + h) * head_dim;
    float* scales = which == 0 ? k_scales : v_scales;
    for (std::int64_t g = 0; g < groups; ++g) {
      const float* x = src + g * group;
      float amax = 0.f;
      bool finite = true;
      for (std::int64_t e = lane; e < group; e += 32) {
        finite = finite && isfinite(x[e]);
        amax = fmaxf(amax, fabsf(x[e]));
      }
      finite = __all_sync(0xffffffffu, finite);
#pragma unroll
      for (int off = 16; off > 0; off /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
      const float inv = finite ? qmax / amax : 0.f;
      const bool ok = finite && isfinite(inv);
      for (std::int64_t e = lane; e < group; e += 32)
        q[g * group + e] = ok ? static_cast<signed char>(static_cast<int>(fminf(fmaxf(rintf(x[e] * inv), qmin), qmax))) : 0;
      if (lane == 0) scales[row * groups + g] = ok ? amax / qmax : (finite ? 0.f : __int_as_float(0x7fc00000));
    }
    __syncwarp();
    if constexpr (kInt4) {
      unsigned char* out = static_cast<unsigned char*>(which == 0 ? k_values : v_values) + row * (head_dim / 2);
      for (std::int64_t b = lane; b < head_dim / 2; b += 32)
        out[b] = static_cast<unsigned char>((q[2 * b] & 0xf) | ((q[2 * b + 1] & 0xf) << 4));
    } else {
      signed char* out = static_cast<signed char*>(which == 0 ? k_values : v_values) + row * head_dim;
      for (std::int64_t e = lane; e < head_dim; e += 32) out[e] = q[e];
    }
    __syncwarp();
  }
}

}  // namespace

cudaError_t launch_kv_write_quantized(void* k_values, float* k_scales, void* v_values, float* v_scales, bool int4, const std::int64_t* slots,
                                      const float* k, const float* v, std::int64_t tokens, std::int64_t n_kv_heads, std::int64_t page_size,
                                      std::int64_t head_dim, std::int64_t group) noexcept {
  if (tokens <= 0) return cudaSuccess;
  if (tokens > 0x7fffffff || n_kv_heads > 65535 || head_dim > 48 * 1024 || group < 1 || head_dim % group != 0) return cudaErrorInvalidValue;
  (void)cudaGetLastError();
  const dim3 grid(static_cast<unsigned>(tokens), static_cast<unsigned>(n_kv_heads));
  const std::size_t shared = static_cast<std::size_t>(head_dim);
  if (int4)
    QUARRY_LAUNCH(grid, 32, shared, kv_write_quantized_kernel<true>)(k_values, k_scales, v_values, v_scales, slots, k, v, n_kv_heads, page_size, head_dim, group);
  else
    QUARRY_LAUNCH(grid, 32, shared, kv_write_quantized_kernel<false>)(k_values, k_scales, v_values, v_scales, slots, k, v, n_kv_heads, page_size, head_dim, head_dim);
  return cudaGetLastError();
}

cudaError_t launch_kv_write(void* k_pages, void* v_pages, KvStoreType type, const std::int64_t* slots, const float* k, const float* v,
                            std::int64_t tokens, std::int64_t n_kv_heads, std::int64_t page_size, std::int64_t head_dim) noexcept {
  if (tokens <= 0) return cudaSuccess;
  if (tokens > 0x7fffffff) return cudaErrorInvalidValue;
  (void)cudaGetLastError();
  const dim3 grid(static_cast<unsigned>(tokens));
  switch (type) {
    case KvStoreType::f32: QUARRY_LAUNCH(grid, kThreads, 0, kv_write_kernel<KvStoreType::f32>)(k_pages, v_pages, slots, k, v, n_kv_heads, page_size, head_dim); break;
    case KvStoreType::f16: QUARRY_LAUNCH(grid, kThreads, 0, kv_write_kernel<KvStoreType::f16>)(k_pages, v_pages, slots, k, v, n_kv_heads, page_size, head_dim); break;
    case KvStoreType::bf16: QUARRY_LAUNCH(grid, kThreads, 0, kv_write_kernel<KvStoreType::bf16>)(k_pages, v_pages, slots, k, v, n_kv_heads, page_size, head_dim); break;
  }
  return cudaGetLastError();
}

}  // namespace quarry::cuda_kernels
