// Decode attention over a paged K/V cache on a CUDA device: the CPU function's contract
// (quarry/kv/paged_attention.hpp: page layout, CSR page table, GQA, sliding window) with the
// pages, queries and output in device memory. Part of quarry::cuda; no CUDA header included.
//
//   auto table = CudaPageTable::upload(host_table, num_pages, page_size).value();  // checked once
//   paged_decode_attention(q, k_pages, v_pages, table, out);                       // q, out [batch, n_heads, head_dim]
//
// The kernel (src/cuda/paged_attention_kernels.cu) is split-K "flash decoding": one block per
// (sequence, kv head, chunk of chunk_tokens tokens) reads that chunk's keys and values once for
// all the query heads of the group, in 16-byte loads along head_dim, in tiles of up to 64 tokens
// whose loads are all in flight before the arithmetic, keeps an online softmax in f32 folded once
// per tile, and a second kernel merges the chunks by log-sum-exp (one chunk: written directly).
// head_dim must be 64, 128 or 256; K/V f16, bf16, f32, INT8 (a scale per token and head) or
// INT4 (group scales, groups of a multiple of 8 elements), widened to f32; scores, softmax and
// sums in f32. Results equal the CPU's to float rounding (other summation order); for INT8 and
// INT4 pages the query is put on the int8 grid as the CPU kernels do (kv/detail/kv_kernels.hpp), and
// the weights of V stay f32, so the two differ by the rounding of the CPU's 8-bit weights (per
// token for INT8, per token and group for INT4) at most.
//
// Calls run on the legacy default stream of the tensors' device and, by default, return when
// the kernels have finished. Errors throw quarry::error naming the shapes (shape_mismatch,
// invalid_argument, unsupported for another head_dim); CUDA errors are device_error.
#pragma once

#include <cstdint>

#include "quarry/core/cuda_tensor.hpp"
#include "quarry/core/float16.hpp"
#include "quarry/core/status.hpp"
#include "quarry/kv/paged_attention.hpp"

namespace quarry {

/// A batch's page table in device memory, checked on the host (check_page_table) when uploaded:
/// a kernel can then trust every page number and length in it.
class CudaPageTable {
 public:
  CudaPageTable() = default;
  /// Checks `table` against `num_pages` pages of `page_size` tokens and copies it to `device`
  /// (-1: the current one). Errors: check_page_table's, a sequence with no tokens, CUDA's.
  static result<CudaPageTable> upload(const PageTableCsr& table, std::int64_t num_pages, std::int64_t page_size, int device = -1);

  std::int64_t batch() const noexcept { return batch_; }           ///< sequences in the table
  std::int64_t num_pages() const noexcept { return num_pages_; }   ///< the page count it was checked for
  std::int64_t page_size() const noexcept { return page_size_; }   ///< tokens per page
  std::int64_t max_length() const noexcept { return max_length_; }  ///< tokens of the longest sequence
  int device() const noexcept { return indptr_.device(); }        ///< the device holding it
  /// The CSR arrays in device memory (PageTableCsr's fields).
  ///@{
  const Tensor<std::int32_t, cuda>& indptr() const noexcept { return indptr_; }
  const Tensor<std::int32_t, cuda>& indices() const noexcept { return indices_; }
  const Tensor<std::int32_t, cuda>& last_page_len() const noexcept { return last_page_len_; }
  ///@}

 private:
  std::int64_t batch_ = 0, num_pages_ = 0, page_size_ = 0, max_length_ = 0;
  Tensor<std::int32_t, cuda> indptr_, indices_, last_page_len_;
};

/// INT8 pages in device memory, as Int8KvPages: values [num_pages, n_kv_heads, page_size,
/// head_dim] and one f32 scale per token and head [num_pages, n_kv_heads, page_size].
struct CudaInt8KvPages {
  const Tensor<std::int8_t, cuda>& values;  ///< [num_pages, n_kv_heads, page_size, head_dim]
  const Tensor<float, cuda>& scales;        ///< [num_pages, n_kv_heads, page_size]
};

/// INT4 pages in device memory, as Int4KvPages: packed values (low nibble first) and scales
/// [num_pages, n_kv_heads, page_size, G]; on the device a group (head_dim / G) must be a
/// multiple of 8 elements.
struct CudaInt4KvPages {
  const Tensor<int4, cuda>& values;  ///< [num_pages, n_kv_heads, page_size, head_dim], packed
  const Tensor<float, cuda>& scales;  ///< [num_pages, n_kv_heads, page_size, G]
};

/// Options of the device call.
struct CudaAttentionOptions {
  bool wait = true;  ///< return when the kernels have finished (else only queued)
};

/// out [batch, n_heads, head_dim] = decode attention of q over k_pages / v_pages
/// [num_pages, n_kv_heads, page_size, head_dim] (one overload per K/V type); see the top of
/// this header and quarry/kv/paged_attention.hpp.
///@{
void paged_decode_attention(const Tensor<float, cuda>& q, const Tensor<f16, cuda>& k_pages, const Tensor<f16, cuda>& v_pages,
                            const CudaPageTable& table, Tensor<float, cuda>& out, const DecodeAttentionParams& params = {},
                            const CudaAttentionOptions& options = {});
void paged_decode_attention(const Tensor<float, cuda>& q, const Tensor<bf16, cuda>& k_pages, const Tensor<bf16, cuda>& v_pages,
                            const CudaPageTable& table, Tensor<float, cuda>& out, const DecodeAttentionParams& params = {},
                            const CudaAttentionOptions& options = {});
void paged_decode_attention(const Tensor<float, cuda>& q, const Tensor<float, cuda>& k_pages, const Tensor<float, cuda>& v_pages,
                            const CudaPageTable& table, Tensor<float, cuda>& out, const DecodeAttentionParams& params = {},
                            const CudaAttentionOptions& options = {});
void paged_decode_attention(const Tensor<float, cuda>& q, const CudaInt8KvPages& k_pages, const CudaInt8KvPages& v_pages,
                            const CudaPageTable& table, Tensor<float, cuda>& out, const DecodeAttentionParams& params = {},
                            const CudaAttentionOptions& options = {});
void paged_decode_attention(const Tensor<float, cuda>& q, const CudaInt4KvPages& k_pages, const CudaInt4KvPages& v_pages,
                            const CudaPageTable& table, Tensor<float, cuda>& out, const DecodeAttentionParams& params = {},
                            const CudaAttentionOptions& options = {});
///@}

}  // namespace quarry
