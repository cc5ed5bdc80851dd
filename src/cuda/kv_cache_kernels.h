// Launch functions of CudaKvCache (kv_cache_kernels.cu): plain pointers and sizes across the
// CUDA C++17 / C++20 seam, as paged_attention_kernels.h. The caller (kv_cache.cpp) has checked
// shapes, slots and page numbers; kernels run on the legacy default stream.
#pragma once

#include <cstdint>

#include <driver_types.h>  // cudaError_t

namespace quarry::cuda_kernels {

/// Element type of the pages being written: 0 f32, 1 f16, 2 bf16.
enum class KvStoreType : int { f32 = 0, f16 = 1, bf16 = 2 };

/// Rows of `tokens` tokens into one layer's K and V pages [num_pages, n_kv_heads, page_size,
/// head_dim]: token t's head h (k[(t * n_kv_heads + h) * head_dim ...], f32) goes to the row
/// (slot / page_size * n_kv_heads + h) * page_size + slot % page_size, converted (f16 / bf16:
/// round to nearest even, as the CPU's conversions).
cudaError_t launch_kv_write(void* k_pages, void* v_pages, KvStoreType type, const std::int64_t* slots, const float* k, const float* v,
                            std::int64_t tokens, std::int64_t n_kv_heads, std::int64_t page_size, std::int64_t head_dim) noexcept;

/// The same rows into INT8 (groups = 1, group = head_dim) or INT4 (groups = head_dim / group)
/// pages: per token and head (INT8) or group (INT4), symmetric, as BlockPool's host store:
/// amax = max |x|, q = clamp(rint(x * qmax / amax), qmin, qmax) with (qmin, qmax) = (-127, 127)
/// or (-8, 7), scale = amax / qmax; all zeros (or a qmax / amax that overflows) give zeros and
/// scale 0, a NaN or infinity gives zeros and scale NaN. INT8 values are one byte each, INT4
/// two per byte, low nibble first; scales [rows, groups] f32.
cudaError_t launch_kv_write_quantized(void* k_values, float* k_scales, void* v_values, float* v_scales, bool int4, const std::int64_t* slots,
                                      const float* k, const float* v, std::int64_t tokens, std::int64_t n_kv_heads, std::int64_t page_size,
                                      std::int64_t head_dim, std::int64_t group) noexcept;

}  // namespace quarry::cuda_kernels
