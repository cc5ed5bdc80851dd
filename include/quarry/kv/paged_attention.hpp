// Decode attention over a paged K/V cache: one query token per sequence, a batch of sequences
// of different lengths, multi-head with grouped-query attention, reading K and V where they
// lie in their pages (quarry's kv module; issue 5).
//
// Page layout (one layer, K and V alike): pages[p] holds [n_kv_heads][page_size][head_dim]
// elements, so one head's keys of one page are page_size * head_dim contiguous elements, read
// with unit stride. A tensor of pages is [num_pages, n_kv_heads, page_size, head_dim].
//
// The batch's page table is CSR-shaped, as FlashInfer's (and usable as is by a GPU kernel):
// sequence b owns pages indices[indptr[b] .. indptr[b + 1]) in token order, every page full
// except the last, which holds last_page_len[b] tokens (1..page_size). Its length is
// (pages - 1) * page_size + last_page_len[b].
//
// What is computed, for sequence b and query head h (kv head h / (n_heads / n_kv_heads)):
//   out[b, h] = sum_t softmax_t(scale * q[b, h] . k[t]) v[t]
// over the sequence's tokens t (the query is its last position, so causality allows every
// cached token), or over the last `sliding_window` of them when that is > 0. Long contexts are
// processed in chunks whose partial results (running max, sum of exponentials, weighted sum of
// V) are merged by log-sum-exp, as a split GPU kernel merges its blocks; a sequence with no
// tokens is an error.
//
// Element types of K/V: f32, f16, bf16 (widened to f32 on the fly), and INT8 with one f32 scale
// per (page, head, token): x = q * scale, dequantized on the fly (Int8KvPages); INT4 (packed,
// two per byte, low nibble first) with one f32 scale per group of head_dim elements of a token
// and head: x = q * scale[group] (Int4KvPages). The pages come from a BlockPool
// (quarry/kv/block_pool.hpp) or any storage with this layout.
//
// Work is split into (sequence, kv head, chunk) units run on params.pool when set; the query
// heads of one GQA group are computed together, so each K/V row is read once per group. The
// kernels are dispatched per ISA (scalar reference, AVX2, AVX-512); results agree within float
// summation error across ISAs and thread counts, and are independent of the thread count.
#pragma once

#include <cmath>
#include <cstdint>
#include <span>

#include "quarry/core/float16.hpp"
#include "quarry/core/status.hpp"
#include "quarry/core/tensor.hpp"

namespace quarry {

class ThreadPool;

/// The page table of a batch, in CSR form (the spans are read, not owned).
struct PageTableCsr {
  std::span<const std::int32_t> indptr;         ///< [batch + 1], non-decreasing, indptr[0] == 0
  std::span<const std::int32_t> indices;        ///< [indptr[batch]] page numbers
  std::span<const std::int32_t> last_page_len;  ///< [batch], 1..page_size for a sequence with pages

  /// Sequences in the table.
  std::int64_t batch() const noexcept { return indptr.empty() ? 0 : static_cast<std::int64_t>(indptr.size()) - 1; }
  /// Tokens of sequence b (no checks).
  std::int64_t length(std::int64_t b, std::int64_t page_size) const noexcept {
    const std::int64_t pages = indptr[static_cast<std::size_t>(b) + 1] - indptr[static_cast<std::size_t>(b)];
    return pages == 0 ? 0 : (pages - 1) * page_size + last_page_len[static_cast<std::size_t>(b)];
  }
};

/// Parameters of decode attention.
struct DecodeAttentionParams {
  /// Multiplies q . k before the softmax; 0 means 1 / sqrt(head_dim).
  float scale = 0.f;
  /// > 0: attend to the last sliding_window tokens only.
  std::int64_t sliding_window = 0;
  /// Tokens per chunk whose partial results are merged by log-sum-exp (the CPU's unit of work,
  /// a GPU block's on the device); 0: 256, or more for sequences over 4,096 tokens so that one
  /// has at most about 16 chunks, up to 4,096 tokens a chunk (on the CPU: a rule of the length
  /// alone, never of the thread count; the CUDA kernel picks its own default from the device).
  std::int64_t chunk_tokens = 0;
  /// Runs (sequence, kv head, chunk) units in parallel when set and the call reads at least
  /// 2^18 K/V elements (smaller calls run on the caller's thread: waking the pool would cost
  /// more); null: the caller's thread.
  ThreadPool* pool = nullptr;
};

/// The softmax scale a call uses: `scale` when non-zero, else 1 / sqrt(head_dim).
inline float attention_scale(float scale, std::int64_t head_dim) noexcept {
  return scale != 0.f ? scale : 1.f / std::sqrt(static_cast<float>(head_dim));
}

/// INT8 pages: values [num_pages, n_kv_heads, page_size, head_dim] and one scale per token and
/// head, scales [num_pages, n_kv_heads, page_size]; element = value * scale. Scales are >= 0, as
/// BlockPool writes them: decode attention rounds its weights of V to unsigned 8-bit integers
/// (quarry/kv/detail/kv_kernels.hpp), where a token whose V scale is negative or NaN weighs 0.
struct Int8KvPages {
  TensorView<const std::int8_t> values;  ///< [num_pages, n_kv_heads, page_size, head_dim]
  TensorView<const float> scales;        ///< [num_pages, n_kv_heads, page_size]
};

/// INT4 pages: values [num_pages, n_kv_heads, page_size, head_dim] packed int4 (-8..7, two per
/// byte, low nibble first; head_dim even) and one scale per group of `group` consecutive
/// elements of a token and head, scales [num_pages, n_kv_heads, page_size, head_dim / group];
/// element i = value[i] * scale[i / group]. The group size is head_dim / scales.dim(3).
struct Int4KvPages {
  TensorView<const int4> values;   ///< [num_pages, n_kv_heads, page_size, head_dim], packed
  TensorView<const float> scales;  ///< [num_pages, n_kv_heads, page_size, head_dim / group]
};

/// Checks a page table against the page count and page size: indptr's size, monotonicity and
/// end, every page number in [0, num_pages), every last_page_len of a non-empty sequence in
/// [1, page_size]. The message names the sequence and the field.
status check_page_table(const PageTableCsr& table, std::int64_t num_pages, std::int64_t page_size);

/// Checks the shapes of a decode-attention call for a batch of `batch` sequences: q and out
/// [batch, n_heads, head_dim], k_pages and v_pages [num_pages, n_kv_heads, page_size, head_dim]
/// alike, n_heads a multiple of n_kv_heads, page_size and head_dim >= 1. Names the shapes.
status check_decode_attention_shapes(const Shape& q, const Shape& k_pages, const Shape& v_pages, const Shape& out, std::int64_t batch);

/// Checks the scales of INT8 pages against their values (shape [num_pages, n_kv_heads,
/// page_size]); the values' own shapes are check_decode_attention_shapes's.
status check_int8_pages(const Int8KvPages& k_pages, const Int8KvPages& v_pages);
/// Checks INT4 pages: head_dim even, scales [num_pages, n_kv_heads, page_size, G] with G
/// dividing head_dim, K's and V's scales alike.
status check_int4_pages(const Int4KvPages& k_pages, const Int4KvPages& v_pages);

/// out [batch, n_heads, head_dim] = decode attention of q [batch, n_heads, head_dim] over the
/// pages of k_pages and v_pages [num_pages, n_kv_heads, page_size, head_dim] named by `table`.
/// Errors (nothing written): shapes that disagree (named), n_heads not a multiple of n_kv_heads,
/// a bad page table (check_page_table), a sequence with no tokens. The views must be contiguous.
/// One overload per K/V element type: f32, f16, bf16.
///@{
status paged_decode_attention(TensorView<const float> q, TensorView<const float> k_pages, TensorView<const float> v_pages,
                              const PageTableCsr& table, TensorView<float> out, const DecodeAttentionParams& params = {});
status paged_decode_attention(TensorView<const float> q, TensorView<const f16> k_pages, TensorView<const f16> v_pages,
                              const PageTableCsr& table, TensorView<float> out, const DecodeAttentionParams& params = {});
status paged_decode_attention(TensorView<const float> q, TensorView<const bf16> k_pages, TensorView<const bf16> v_pages,
                              const PageTableCsr& table, TensorView<float> out, const DecodeAttentionParams& params = {});
///@}
/// The same over INT8 pages; also an error: scales not [num_pages, n_kv_heads, page_size].
status paged_decode_attention(TensorView<const float> q, const Int8KvPages& k_pages, const Int8KvPages& v_pages,
                              const PageTableCsr& table, TensorView<float> out, const DecodeAttentionParams& params = {});
/// The same over INT4 pages; also errors: head_dim odd, scales not [num_pages, n_kv_heads,
/// page_size, G] with G dividing head_dim.
status paged_decode_attention(TensorView<const float> q, const Int4KvPages& k_pages, const Int4KvPages& v_pages,
                              const PageTableCsr& table, TensorView<float> out, const DecodeAttentionParams& params = {});

}  // namespace quarry
