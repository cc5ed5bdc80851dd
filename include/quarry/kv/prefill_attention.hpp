// Prefill attention over a paged K/V cache: many query tokens per sequence, causal, for filling
// the cache from a prompt (quarry's kv module; issue 5). The pages and page table are those of
// decode attention (quarry/kv/paged_attention.hpp): the K/V of the prompt's tokens are written
// to the pages first, then every query token attends to the tokens up to its own position.
//
// What is computed: sequence b of the batch has len_b = table.length(b) tokens in its pages and
// n_b = qo_indptr[b + 1] - qo_indptr[b] query rows (1 <= n_b <= len_b), which are its last n_b
// tokens: query row qo_indptr[b] + i sits at position p = len_b - n_b + i and, for query head h
// (kv head h / (n_heads / n_kv_heads)),
//   out[row, h] = sum_{t <= p} softmax_t(scale * q[row, h] . k[t]) v[t]
// over t in [0, p], or over t in [p - sliding_window + 1, p] when sliding_window > 0. With
// n_b == 1 this is decode attention. A prompt continued after cached pages (the prefix cache)
// is the case n_b < len_b.
#pragma once

#include <cstdint>
#include <span>

#include "quarry/core/float16.hpp"
#include "quarry/core/status.hpp"
#include "quarry/core/tensor.hpp"
#include "quarry/kv/paged_attention.hpp"

namespace quarry {

/// Parameters of prefill attention.
struct PrefillAttentionParams {
  /// Multiplies q . k before the softmax; 0 means 1 / sqrt(head_dim).
  float scale = 0.f;
  /// > 0: each query attends to the last sliding_window tokens up to its position only.
  std::int64_t sliding_window = 0;
  /// Runs units of work (sequence, kv head, block of query rows) in parallel when set; null: the
  /// caller's thread.
  ThreadPool* pool = nullptr;
};

/// out [total_q, n_heads, head_dim] = causal attention of q [total_q, n_heads, head_dim] (rows
/// grouped by sequence through qo_indptr [batch + 1], qo_indptr[0] == 0, qo_indptr[batch] ==
/// total_q) over the pages of k_pages and v_pages [num_pages, n_kv_heads, page_size, head_dim]
/// named by `table` (batch sequences). Errors (nothing written): shapes that disagree (named),
/// n_heads not a multiple of n_kv_heads, a bad page table (check_page_table), a bad qo_indptr
/// (size, monotonicity, end), a sequence with fewer tokens than query rows or no query rows.
/// The views must be contiguous. One overload per K/V element type: f32, f16, bf16, INT8, INT4.
///@{
status paged_prefill_attention(TensorView<const float> q, std::span<const std::int32_t> qo_indptr, TensorView<const float> k_pages,
                               TensorView<const float> v_pages, const PageTableCsr& table, TensorView<float> out,
                               const PrefillAttentionParams& params = {});
status paged_prefill_attention(TensorView<const float> q, std::span<const std::int32_t> qo_indptr, TensorView<const f16> k_pages,
                               TensorView<const f16> v_pages, const PageTableCsr& table, TensorView<float> out,
                               const PrefillAttentionParams& params = {});
status paged_prefill_attention(TensorView<const float> q, std::span<const std::int32_t> qo_indptr, TensorView<const bf16> k_pages,
                               TensorView<const bf16> v_pages, const PageTableCsr& table, TensorView<float> out,
                               const PrefillAttentionParams& params = {});
status paged_prefill_attention(TensorView<const float> q, std::span<const std::int32_t> qo_indptr, const Int8KvPages& k_pages,
                               const Int8KvPages& v_pages, const PageTableCsr& table, TensorView<float> out,
                               const PrefillAttentionParams& params = {});
status paged_prefill_attention(TensorView<const float> q, std::span<const std::int32_t> qo_indptr, const Int4KvPages& k_pages,
                               const Int4KvPages& v_pages, const PageTableCsr& table, TensorView<float> out,
                               const PrefillAttentionParams& params = {});
///@}

}  // namespace quarry
