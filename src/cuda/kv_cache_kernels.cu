// CudaKvCache's row writes (vLLM's reshape_and_cache): one block per token, its threads over
// the token's n_kv_heads * head_dim values, each converted with quarry's bit-exact f16 / bf16
// rounding (quarry/core/detail/float16_bits.hpp) so the pages equal a host BlockPool's.
#include "kv_cache_kernels.h"

#include <cuda_runtime.h>

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

}  // namespace

cudaError_t launch_kv_write(void* k_pages, void* v_pages, KvStoreType type, const std::int64_t* slots, const float* k, const float* v,
                            std::int64_t tokens, std::int64_t n_kv_heads, std::int64_t page_size, std::int64_t head_dim) noexcept {
  if (tokens <= 0) return cudaSuccess;
  if (tokens > 0x7fffffff) return cudaErrorInvalidValue;
  (void)cudaGetLastError();
  const dim3 grid(static_cast<unsigned>(tokens));
  switch (type) {
    case KvStoreType::f32: kv_write_kernel<KvStoreType::f32><<<grid, kThreads>>>(k_pages, v_pages, slots, k, v, n_kv_heads, page_size, head_dim); break;
    case KvStoreType::f16: kv_write_kernel<KvStoreType::f16><<<grid, kThreads>>>(k_pages, v_pages, slots, k, v, n_kv_heads, page_size, head_dim); break;
    case KvStoreType::bf16: kv_write_kernel<KvStoreType::bf16><<<grid, kThreads>>>(k_pages, v_pages, slots, k, v, n_kv_heads, page_size, head_dim); break;
  }
  return cudaGetLastError();
}

}  // namespace quarry::cuda_kernels
