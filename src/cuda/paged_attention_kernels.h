// The launch function of paged decode attention (paged_attention_kernels.cu): plain pointers and
// sizes across the CUDA C++17 / C++20 seam, as quant_kernels.h. The caller (paged_attention.cpp)
// has checked shapes and the page table; kernels run on the legacy default stream.
#pragma once

#include <cstddef>
#include <cstdint>

#include <driver_types.h>  // cudaError_t

namespace quarry::cuda_kernels {

/// i8: one f32 scale per token and head; i4: packed two per byte (low nibble first), `groups`
/// f32 scales per token and head, each group a multiple of 8 elements.
enum class KvType : int { f32 = 0, f16 = 1, bf16 = 2, i8 = 3, i4 = 4 };

struct PagedDecodeArgs {
  const float* q = nullptr;             ///< [batch, n_heads, head_dim]
  const void* k = nullptr;              ///< [num_pages, n_kv_heads, page_size, head_dim] of kv_type
  const void* v = nullptr;              ///< same shape and type
  KvType kv_type = KvType::f16;
  const float* k_scales = nullptr;      ///< i8: [num_pages, n_kv_heads, page_size]; i4: [..., groups]
  const float* v_scales = nullptr;
  std::int64_t groups = 1;              ///< i4: scales per token and head
  const std::int32_t* indptr = nullptr;         ///< [batch + 1]
  const std::int32_t* indices = nullptr;        ///< page numbers
  const std::int32_t* last_page_len = nullptr;  ///< [batch]
  std::int64_t batch = 0, n_heads = 0, n_kv_heads = 0, page_size = 0, head_dim = 0;
  float scale = 1.f;
  std::int64_t sliding_window = 0;  ///< > 0: the last sliding_window tokens only
  std::int64_t chunk = 256;         ///< tokens per block
  std::int64_t chunks = 1;          ///< ceil(longest sequence / chunk): blocks per (sequence, kv head)
  float* out = nullptr;             ///< [batch, n_heads, head_dim]
  float* partial = nullptr;         ///< workspace when chunks > 1: paged_decode_workspace_floats floats
};

/// Tokens a block of the decode kernel takes per tile for this head_dim (64, 128 or 256), query
/// heads per kv head and K/V type (16 to 64): a chunk shorter than this leaves warps idle.
int paged_decode_tile_tokens(std::int64_t head_dim, std::int64_t group, KvType kv_type) noexcept;

/// Floats of workspace a call with `chunks` > 1 needs (0 for one chunk).
std::size_t paged_decode_workspace_floats(const PagedDecodeArgs& a) noexcept;

/// Runs decode attention; cudaErrorInvalidValue for a head_dim other than 64, 128, 256, a
/// group (n_heads / n_kv_heads) above 8, or INT4 groups that are not a multiple of 8 elements.
cudaError_t launch_paged_decode(const PagedDecodeArgs& a) noexcept;

}  // namespace quarry::cuda_kernels
