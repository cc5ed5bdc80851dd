// The kernel table of the kv module: one chunk of decode attention (a run of tokens of one
// sequence, one kv head, all the query heads of its GQA group) over pages of any K/V element
// type, and the tile products of prefill attention. Front-end in quarry/kv/paged_attention.hpp (it splits a batch into chunks, runs them on
// threads and merges their partial results by log-sum-exp); bodies in src/cpu/kernels/kv.hpp,
// whose scalar bodies are the reference.
#pragma once

#include <cstddef>
#include <cstdint>

#include "quarry/core/detail/dispatch.hpp"

namespace quarry::detail {

/// The element type of K/V pages as the kernels see it.
enum class KvElem : std::uint8_t { f32, f16, bf16, i8, i4 };

/// One tensor of pages [num_pages, n_kv, page_size, dim]: values (float, uint16 bits of f16 or
/// bf16, int8, or packed int4 bytes, low nibble first) and, for i8, one scale per row ([num_pages,
/// n_kv, page_size]), for i4 `groups` scales per row ([..., groups], group = dim / groups).
struct KvPagesRef {
  const void* values = nullptr;
  const float* scales = nullptr;
};

/// Operands of one decode-attention chunk: tokens [t0, t1) of one sequence, kv heads [kv_head,
/// kv_head + kv_heads) (several heads per call let a kernel read a page's heads, which lie side by
/// side, in one sweep). Row of token t in kv head h: (pages[t / page_size] * n_kv + h) *
/// page_size + t % page_size. Heads are independent: a head's results do not depend on which
/// others share its call.
struct DecodeChunkArgs {
  KvElem elem = KvElem::f32;
  KvPagesRef k, v;
  std::int64_t n_kv = 1, page_size = 1, dim = 0;
  std::int64_t groups = 1;              ///< i4: scales per row (dividing dim)
  const std::int32_t* pages = nullptr;  ///< the sequence's pages in token order
  std::int64_t kv_head = 0;
  std::int64_t kv_heads = 1;
  std::int64_t t0 = 0, t1 = 0;          ///< t0 < t1
  const float* q = nullptr;             ///< [kv_heads * group, dim]: the query heads, consecutive
  std::int64_t group = 1;               ///< query heads per kv head
  float scale = 1.f;                    ///< multiplies q . k
  /// Scratch of at least decode_chunk_scratch(kv_heads * group, t1 - t0, dim) floats.
  float* scratch = nullptr;
  /// Results per query head g of the call (0 .. kv_heads * group): out[g * (dim + 2)] = max
  /// score m, [+1] = sum_t exp(s_t - m), [+2 .. +2 + dim) = sum_t exp(s_t - m) v_t.
  float* out = nullptr;
  /// The chunk the caller runs next on this thread (over the same pages), or null: a hint that
  /// lets a kernel ask for that chunk's first K rows while it reads its own last V rows. Results
  /// do not depend on it.
  const DecodeChunkArgs* then = nullptr;
};

/// Floats of scratch a chunk of `heads` query heads needs: the scores, one converted tile of K or V
/// rows, the query heads as the fused kernel reads them and, for INT8 / INT4 pages, the quantized
/// query and what the integer kernels keep (kv_i8_scratch in src/cpu/kernels/kv.hpp).
constexpr std::size_t decode_chunk_scratch(std::int64_t heads, std::int64_t tokens, std::int64_t dim) noexcept {
  return static_cast<std::size_t>(heads * tokens + 16 * dim + 16 + 2 * heads * dim + 32 * heads + heads * dim / 2 + 16 + heads * dim);
}

/// Operands of a small dense product C (+)= A B, all row-major with leading dimensions in
/// floats: A [m, k], B [k, n], C [m, n]. Prefill attention's two tile products: scores =
/// (scale Q) K^T (B is K's tile transposed) and acc += P V.
struct TileGemmArgs {
  std::int64_t m = 0, n = 0, k = 0;
  const float* a = nullptr;
  std::int64_t lda = 0;
  const float* b = nullptr;
  std::int64_t ldb = 0;
  float* c = nullptr;
  std::int64_t ldc = 0;
  bool accumulate = false;  ///< false: C = A B; true: C += A B
};

/// Operands of prefill attention's online-softmax step for one key tile: row r of the score tile
/// S [m, n] (row stride lds) sees columns [lo[r / group], hi[r / group]) (lo / hi null: all n).
/// A row that sees none becomes zeros and keeps its state. Otherwise, with m' = max(row_max[r],
/// the visible scores) and alpha = exp(row_max[r] - m'): the visible scores become exp(s - m'),
/// the others 0; row_sum[r] = row_sum[r] * alpha + the sum of the row; row_max[r] = m'; and,
/// where alpha != 1, row r of the output accumulator [m, dim] (row stride ld_acc) is scaled by it.
struct TileSoftmaxArgs {
  std::int64_t m = 0, n = 0;
  float* s = nullptr;
  std::int64_t lds = 0;
  const std::int64_t* lo = nullptr;  ///< [m / group]: first visible column of each query row
  const std::int64_t* hi = nullptr;  ///< [m / group]: one past the last
  std::int64_t group = 1;            ///< tile rows per query row
  float* row_max = nullptr;          ///< [m], updated
  float* row_sum = nullptr;          ///< [m], updated
  float* acc = nullptr;              ///< [m, dim], rescaled
  std::int64_t ld_acc = 0, dim = 0;
};

/// Kv kernels for one ISA. Noexcept, allocation-free. Results agree with the scalar reference
/// within float summation error (exp and the order of sums differ by ISA).
///
/// INT8 pages (KvElem::i8) quantize the other operand of each product too, so that a kernel can
/// multiply in integers (AVX-512 VNNI) and every kernel computes the same thing:
/// - each query head is quantized to int8, symmetric: qi = round(q * 127 / max|q|), so the score
///   is (qi . ki) * (max|q| / 127) * (K's row scale) * scale;
/// - each head's softmax numerators times V's row scales, w_t = max(p_t * s_t, 0) (a negative
///   scale counts as 0; the pool never writes one), are quantized to 8 bits, unsigned, per run, a
///   run being the chunk's tokens in one page, 16 at most, taken in order from t0:
///   wq_t = round(w_t * 255 / max_run w), and the output sums wq_t * (max_run w / 255) * vi_t.
///   (The sum of exps, out[g * (dim + 2) + 1], is unquantized.)
/// INT4 pages (KvElem::i4) quantize the query the same way, and their weights of V per token and
/// group of V's elements: w_{t,c} = max(p_t * s_{t,c}, 0) (s_{t,c}: V's scale of group c of token
/// t) quantized to 8 bits, unsigned, per run and group: wq_{t,c} = round(w_{t,c} * 255 / max_run
/// w_{.,c}); element i of group c of the output sums wq_{t,c} * (max_run w_{.,c} / 255) * vi_t[i]
/// (vi: the nibbles' values, -8 .. 7). So AVX-512 VNNI computes both their products in integers.
/// Rounding is to nearest even; NaN becomes 0. The query's quantization costs about as much
/// accuracy as K's, the weights' at most about half as much as V's. (15-bit weights, used until
/// 2026-11, took vpdpwssd at two products per lane where vpdpbusd does four; on the stories260K
/// model's real activations the attention error per layer stayed within 1% of theirs, and the
/// NLL increase of INT8 K/V moved from 0.0032 to 0.0035 nats per token.)
struct KvKernels {
  void (*decode_chunk)(const DecodeChunkArgs& args) noexcept;
  /// C (+)= A B; each C element sums its k products in order (with FMA on SIMD ISAs), so ISAs
  /// differ only by the FMA's single rounding.
  void (*tile_gemm)(const TileGemmArgs& args) noexcept;
  /// Prefill attention's softmax step over a score tile (TileSoftmaxArgs); exp differs by ISA by
  /// its rounding.
  void (*tile_softmax)(const TileSoftmaxArgs& args) noexcept;
};

QUARRY_DECLARE_KERNEL_TABLES(KvKernels)

}  // namespace quarry::detail
