// Bodies of the kv kernels (KvKernels in quarry/kv/detail/kv_kernels.hpp), templates on the arch
// tag; included only by src/cpu/<isa>.cpp (the rule of src/cpu/kernels/core.hpp holds).
//
// Decode chunk, SIMD: the chunk is walked in runs of at most 16 tokens that lie in one page (a
// run's rows of one head are contiguous), and K is read once per GQA group, not once per head.
// Two passes over the chunk (scores, then V) keep the softmax exact without rescaling: the
// chunk's maximum is known before any exp. On AVX2 / AVX-512 the fused kernel widens K and V in
// registers as they are used (decode_chunk_fused); elsewhere, and for shapes it does not take,
// each run is widened into an f32 tile first (decode_chunk_tiled_one_head).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "cpu/kernels/core.hpp"
#include "quarry/kv/detail/kv_kernels.hpp"

namespace quarry::detail::cpu_kernels {

// ---- Scalar reference: token by token, each row widened to f32 and used for every head. ----

// The value of element i of packed INT4 bytes p (low nibble first), -8 .. 7.
QUARRY_ALWAYS_INLINE int nibble_value(const std::uint8_t* p, std::int64_t i) noexcept {
  const int nibble = (i % 2 == 0) ? (p[i / 2] & 0xf) : (p[i / 2] >> 4);
  return (nibble ^ 8) - 8;
}

template <class Arch>
void ref_kv_row(KvElem elem, const KvPagesRef& pages, std::int64_t row, std::int64_t dim, std::int64_t groups, float* out) noexcept {
  switch (elem) {
    case KvElem::f32: {
      const float* p = static_cast<const float*>(pages.values) + row * dim;
      for (std::int64_t i = 0; i < dim; ++i) out[i] = p[i];
      break;
    }
    case KvElem::f16:
      ref_f16_to_f32<Arch>(static_cast<const std::uint16_t*>(pages.values) + row * dim, out, static_cast<std::size_t>(dim));
      break;
    case KvElem::bf16:
      ref_bf16_to_f32<Arch>(static_cast<const std::uint16_t*>(pages.values) + row * dim, out, static_cast<std::size_t>(dim));
      break;
    case KvElem::i8: {
      const std::int8_t* p = static_cast<const std::int8_t*>(pages.values) + row * dim;
      const float s = pages.scales[row];
      for (std::int64_t i = 0; i < dim; ++i) out[i] = static_cast<float>(p[i]) * s;
      break;
    }
    case KvElem::i4: {
      const std::uint8_t* p = static_cast<const std::uint8_t*>(pages.values) + row * dim / 2;
      const float* s = pages.scales != nullptr ? pages.scales + row * groups : nullptr;  // null: the integers
      const std::int64_t group = dim / groups;
      for (std::int64_t i = 0; i < dim; ++i) out[i] = static_cast<float>(nibble_value(p, i)) * (s != nullptr ? s[i / group] : 1.f);
      break;
    }
  }
}

// ---- INT8 pages: the quantized query and weights of the contract (kv_kernels.hpp), shared by
// every kernel, so that all compute the same integers. ----

// Where a chunk's scratch holds what INT8 pages need (within decode_chunk_scratch(heads, n, dim)).
struct KvI8Scratch {
  float* scores;         // [heads][n]
  float* tile;           // [16 * dim + 16]
  float* qf;             // [heads][dim]: the dequantized query (float kernels)
  std::int8_t* qarr;     // VNNI: the query heads arranged for vpdpbusd (aliases qf)
  std::int8_t* qi;       // [dim] int8: one quantized head at a time
  float* lanes;          // VNNI: [32] per (kv head, set of 4 heads): 16 int32 corrections, 16 scales
                         // (sets <= heads, so at most [32 * heads])
  std::int32_t* corr;    // INT4 VNNI: [16] per (kv head, set, group) (at most [heads * dim / 2])
  float* qp;             // fused kernel: [heads][dim], the query heads arranged by pack_queries
};

inline KvI8Scratch kv_i8_scratch(const DecodeChunkArgs& a) noexcept {
  const std::int64_t heads = a.kv_heads * a.group, n = a.t1 - a.t0;
  KvI8Scratch s{};
  float* p = a.scratch;
  s.scores = p;
  p += heads * n;
  s.tile = p;
  p += 16 * a.dim + 16;
  s.qf = p;
  s.qarr = reinterpret_cast<std::int8_t*>(p);
  s.qi = reinterpret_cast<std::int8_t*>(p + heads * a.dim);
  p += 2 * heads * a.dim;
  s.lanes = p;
  p += 32 * heads;
  s.corr = reinterpret_cast<std::int32_t*>(p);
  p += heads * a.dim / 2 + 16;
  s.qp = p;
  return s;
}

// round(x) clamped to [-lim, lim], NaN to 0 (a defined integer for any float).
QUARRY_ALWAYS_INLINE int quantize_clamped(float x, float lim) noexcept {
  x = x == x ? std::clamp(x, -lim, lim) : 0.f;
  return static_cast<int>(std::nearbyint(x));
}

// The SIMD bodies below compute exactly what the scalar ones do (max is exact in any order,
// rounding is to nearest even in both), so that every ISA gets the same integers.

// max(m, |x[i]|) over i < n (NaN ignored).
template <class Arch>
QUARRY_ALWAYS_INLINE float abs_max(const float* x, std::int64_t n, float m) noexcept {
  std::int64_t i = 0;
  if constexpr (!simd::is_scalar<Arch>) {
    using B = xsimd::batch<float, Arch>;
    constexpr std::int64_t W = static_cast<std::int64_t>(B::size);
    if (n >= W) {
      B vm(m);
      for (; i + W <= n; i += W) {
        const B a = xsimd::abs(B::load_unaligned(x + i));
        vm = xsimd::select(a > vm, a, vm);
      }
      alignas(64) float lanes[W];
      vm.store_aligned(lanes);
      for (std::int64_t l = 0; l < W; ++l) m = std::max(m, lanes[l]);
    }
  }
  for (; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

// out[i] = quantize_clamped(x[i] * inv, lim) for i < n; if back is not null, back[i] = out[i] * step.
template <class Arch, class I>
QUARRY_ALWAYS_INLINE void quantize_scaled(const float* x, std::int64_t n, float inv, float lim, I* out, float* back, float step) noexcept {
  std::int64_t i = 0;
  if constexpr (!simd::is_scalar<Arch>) {
    using B = xsimd::batch<float, Arch>;
    constexpr std::int64_t W = static_cast<std::int64_t>(B::size);
    const B vinv(inv), hi(lim), lo(-lim), zero(0.f), vstep(step);
    for (; i + W <= n; i += W) {
      B v = B::load_unaligned(x + i) * vinv;
      v = xsimd::select(v == v, xsimd::min(xsimd::max(v, lo), hi), zero);
      const auto k = xsimd::nearbyint_as_int(v);
      bool stored = false;
#if defined(__x86_64__) || defined(_M_X64)
      if constexpr (simd::is_avx512<Arch> && sizeof(I) == 1) {  // int8, or uint8 of 0 .. 255
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm512_cvtepi32_epi8(k));
        stored = true;
      }
#endif
      if (!stored) {
        alignas(64) std::int32_t ints[W];
        k.store_aligned(ints);
        for (std::int64_t l = 0; l < W; ++l) out[i + l] = static_cast<I>(ints[l]);
      }
      if (back != nullptr) (xsimd::to_float(k) * vstep).store_unaligned(back + i);
    }
  }
  for (; i < n; ++i) {
    const int k = quantize_clamped(x[i] * inv, lim);
    out[i] = static_cast<I>(k);
    if (back != nullptr) back[i] = static_cast<float>(k) * step;
  }
}

// One query head to int8: out[i] = round(q[i] * 127 / max|q|); returns the step max|q| / 127.
template <class Arch>
float quantize_query_i8(const float* q, std::int64_t dim, std::int8_t* out) noexcept {
  const float amax = abs_max<Arch>(q, dim, 0.f);
  const float inv = amax > 0.f && amax <= std::numeric_limits<float>::max() ? 127.f / amax : 0.f;
  quantize_scaled<Arch>(q, dim, inv, 127.f, out, nullptr, 0.f);
  return inv > 0.f ? amax / 127.f : 0.f;
}

// The call's query heads, quantized and dequantized: qf[g * dim + i] = qi * step.
template <class Arch>
void dequantized_queries_i8(const DecodeChunkArgs& a, const KvI8Scratch& s) noexcept {
  for (std::int64_t g = 0; g < a.kv_heads * a.group; ++g) {
    const float step = quantize_query_i8<Arch>(a.q + g * a.dim, a.dim, s.qi);
    for (std::int64_t i = 0; i < a.dim; ++i) s.qf[g * a.dim + i] = static_cast<float>(s.qi[i]) * step;
  }
}

// The weights of one run of `rows` (<= 16) tokens of one head: w = max(p * sv, 0) (p: softmax
// numerators, sv: V's row scales; NaN counts as 0), quantized to 8 bits (unsigned) over the run:
// wq[r] = round(w[r] * 255 / max w). Writes wq (wq[rows..16) = 0) and, if back is not null, the
// dequantized weights to back; returns the step max w / 255.
template <class Arch>
QUARRY_ALWAYS_INLINE float run_weights_i8(const float* p, const float* sv, std::int64_t rows, std::uint8_t* wq, float* back) noexcept {
  alignas(64) float w[16];
  std::int64_t r = 0;
  if constexpr (!simd::is_scalar<Arch>) {
    using B = xsimd::batch<float, Arch>;
    constexpr std::int64_t W = static_cast<std::int64_t>(B::size);
    for (; r + W <= rows; r += W) {
      const B x = B::load_unaligned(p + r) * B::load_unaligned(sv + r);
      xsimd::select(x > B(0.f), x, B(0.f)).store_aligned(w + r);  // NaN and < 0 (a negative V scale): 0
    }
  }
  for (; r < rows; ++r) {
    const float x = p[r] * sv[r];
    w[r] = x > 0.f ? x : 0.f;
  }
  const float m = abs_max<Arch>(w, rows, 0.f);
  const float inv = m > 0.f && m <= std::numeric_limits<float>::max() ? 255.f / m : 0.f;
  const float step = inv > 0.f ? m / 255.f : 0.f;
  quantize_scaled<Arch>(w, rows, inv, 255.f, wq, back, step);
  for (r = rows; r < 16; ++r) wq[r] = 0;
  return step;
}

// The INT4 weights of one run of `rows` (<= 16) tokens of one head for group c of V's elements
// (the contract): run_weights_i8 with V's scales of that group, sv[r * groups + c].
template <class Arch>
QUARRY_ALWAYS_INLINE float run_weights_i4(const float* p, const float* sv, std::int64_t groups, std::int64_t c, std::int64_t rows,
                                          std::uint8_t* wq, float* back) noexcept {
  alignas(64) float col[16];
  for (std::int64_t r = 0; r < rows; ++r) col[r] = sv[r * groups + c];
  return run_weights_i8<Arch>(p, col, rows, wq, back);
}

// acc[i] += sum_r w[r] * v[r * dim + i] for i in [from, to): a register of columns at a time
// (each sums its rows in order, with FMA), then scalars.
template <class Arch>
QUARRY_ALWAYS_INLINE void add_weighted_rows(float* acc, std::int64_t from, std::int64_t to, const float* w, const float* v, std::int64_t rows,
                                            std::int64_t dim) noexcept {
  std::int64_t i = from;
  if constexpr (!simd::is_scalar<Arch>) {
    using B = xsimd::batch<float, Arch>;
    constexpr std::int64_t W = static_cast<std::int64_t>(B::size);
    for (; i + W <= to; i += W) {
      B x = B::load_unaligned(acc + i);
      for (std::int64_t r = 0; r < rows; ++r) x = xsimd::fma(B(w[r]), B::load_unaligned(v + r * dim + i), x);
      x.store_unaligned(acc + i);
    }
  }
  for (; i < to; ++i)
    for (std::int64_t r = 0; r < rows; ++r) acc[i] += w[r] * v[r * dim + i];
}

// The weighted V of one run of `rows` tokens of INT4 pages for the query heads of one kv head
// (a.group): out[g * (dim + 2) + 2 + i] += sum_r w_g[r] vi[r * dim + i], w_g the dequantized
// weights of head g for the group of element i (run_weights_i4 of its numerators p[g * n + r] and
// V's scales sv), vi the run's integers as floats.
template <class Arch>
void run_values_i4(const DecodeChunkArgs& a, const float* p, std::int64_t n, const float* sv, std::int64_t rows, const float* vi,
                   float* out) noexcept {
  const std::int64_t dim = a.dim, size = dim / a.groups;
  for (std::int64_t g = 0; g < a.group; ++g) {
    float* acc = out + g * (dim + 2) + 2;
    for (std::int64_t c = 0; c < a.groups; ++c) {
      alignas(64) float w[16];
      std::uint8_t wq[16];
      run_weights_i4<Arch>(p + g * n, sv, a.groups, c, rows, wq, w);
      add_weighted_rows<Arch>(acc, c * size, (c + 1) * size, w, vi, rows, dim);
    }
  }
}

// Calls f(first token, rows) for each run of the chunk: the tokens in one page, at most 16 at a
// time (the runs over which INT8 weights are quantized; every kernel walks these runs).
template <class F>
QUARRY_ALWAYS_INLINE void for_each_kv_run(const DecodeChunkArgs& a, F&& f) {
  for (std::int64_t t = a.t0; t < a.t1;) {
    const std::int64_t rows = std::min({std::int64_t{16}, a.page_size - t % a.page_size, a.t1 - t});
    f(t, rows);
    t += rows;
  }
}

// After the softmax: each head's numerators p (scores [heads][n]) become its dequantized INT8
// weights, run by run (run_weights_i8).
template <class Arch>
void quantize_weights_i8(const DecodeChunkArgs& a, float* p) noexcept {
  const std::int64_t n = a.t1 - a.t0;
  for_each_kv_run(a, [&](std::int64_t t, std::int64_t rows) {
    for (std::int64_t h = 0; h < a.kv_heads; ++h) {
      const float* sv = a.v.scales + (a.pages[t / a.page_size] * a.n_kv + a.kv_head + h) * a.page_size + t % a.page_size;
      for (std::int64_t g = h * a.group; g < (h + 1) * a.group; ++g) {
        float* pg = p + g * n + (t - a.t0);
        std::uint8_t wq[16];
        run_weights_i8<Arch>(pg, sv, rows, wq, pg);
      }
    }
  });
}

template <class Arch>
void ref_decode_chunk_one_head(const DecodeChunkArgs& a) noexcept {
  const std::int64_t n = a.t1 - a.t0, dim = a.dim;
  const KvI8Scratch i8 = kv_i8_scratch(a);
  const bool is_i8 = a.elem == KvElem::i8;
  float* scores = i8.scores;  // [group][n]
  float* row = i8.tile;       // [dim]
  const float* q = a.q;
  if (is_i8 || a.elem == KvElem::i4) {  // the int8 query of the contract
    dequantized_queries_i8<Arch>(a, i8);
    q = i8.qf;
  }
  auto row_of = [&](std::int64_t t) { return (a.pages[t / a.page_size] * a.n_kv + a.kv_head) * a.page_size + t % a.page_size; };
  for (std::int64_t t = a.t0; t < a.t1; ++t) {
    ref_kv_row<Arch>(a.elem, a.k, row_of(t), dim, a.groups, row);
    for (std::int64_t g = 0; g < a.group; ++g) {
      float dot = 0.f;
      for (std::int64_t i = 0; i < dim; ++i) dot += q[g * dim + i] * row[i];
      scores[g * n + (t - a.t0)] = dot * a.scale;
    }
  }
  for (std::int64_t g = 0; g < a.group; ++g) {
    float* o = a.out + g * (dim + 2);
    float m = -std::numeric_limits<float>::infinity();
    for (std::int64_t j = 0; j < n; ++j) m = std::max(m, scores[g * n + j]);
    float sum = 0.f;
    for (std::int64_t j = 0; j < n; ++j) {
      scores[g * n + j] = std::exp(scores[g * n + j] - m);
      sum += scores[g * n + j];
    }
    o[0] = m;
    o[1] = sum;
    for (std::int64_t i = 0; i < dim; ++i) o[2 + i] = 0.f;
  }
  if (a.elem == KvElem::i4) {  // per run: the integers of V's rows, times weights per group
    for_each_kv_run(a, [&](std::int64_t t, std::int64_t rows) {
      const std::int64_t r0 = row_of(t);
      for (std::int64_t r = 0; r < rows; ++r) ref_kv_row<Arch>(KvElem::i4, KvPagesRef{a.v.values, nullptr}, r0 + r, dim, a.groups, i8.tile + r * dim);
      run_values_i4<Arch>(a, scores + (t - a.t0), n, a.v.scales + r0 * a.groups, rows, i8.tile, a.out);
    });
    return;
  }
  if (is_i8) quantize_weights_i8<Arch>(a, scores);  // the weights now hold V's scales
  for (std::int64_t t = a.t0; t < a.t1; ++t) {
    if (is_i8) {
      const std::int8_t* vi = static_cast<const std::int8_t*>(a.v.values) + row_of(t) * dim;
      for (std::int64_t i = 0; i < dim; ++i) row[i] = static_cast<float>(vi[i]);
    } else {
      ref_kv_row<Arch>(a.elem, a.v, row_of(t), dim, a.groups, row);
    }
    for (std::int64_t g = 0; g < a.group; ++g) {
      const float p = scores[g * n + (t - a.t0)];
      float* acc = a.out + g * (dim + 2) + 2;
      for (std::int64_t i = 0; i < dim; ++i) acc[i] += p * row[i];
    }
  }
}

// Calls chunk(args) once per kv head of `a` (heads are independent).
template <class F>
QUARRY_ALWAYS_INLINE void per_kv_head(const DecodeChunkArgs& a, F&& chunk) noexcept {
  for (std::int64_t h = 0; h < a.kv_heads; ++h) {
    DecodeChunkArgs one = a;
    one.kv_head = a.kv_head + h;
    one.kv_heads = 1;
    one.q = a.q + h * a.group * a.dim;
    one.out = a.out + h * a.group * (a.dim + 2);
    chunk(one);
  }
}

template <class Arch>
void ref_decode_chunk(const DecodeChunkArgs& a) noexcept {
  per_kv_head(a, [](const DecodeChunkArgs& one) { ref_decode_chunk_one_head<Arch>(one); });
}

// ---- SIMD bodies. ----

// Widens `rows` consecutive rows starting at `row` to f32 in `tile` ([rows][dim]); returns the
// rows' f32 address (f32 pages in place, the tile otherwise).
template <class Arch>
const float* kv_rows_f32(KvElem elem, const KvPagesRef& pages, std::int64_t row, std::int64_t rows, std::int64_t dim,
                         std::int64_t groups, float* tile) noexcept {
  const std::size_t count = static_cast<std::size_t>(rows * dim);
  switch (elem) {
    case KvElem::f32: return static_cast<const float*>(pages.values) + row * dim;
    case KvElem::f16: f16_to_f32<Arch>(static_cast<const std::uint16_t*>(pages.values) + row * dim, tile, count); return tile;
    case KvElem::bf16: bf16_to_f32<Arch>(static_cast<const std::uint16_t*>(pages.values) + row * dim, tile, count); return tile;
    case KvElem::i8: {
      const std::int8_t* p = static_cast<const std::int8_t*>(pages.values) + row * dim;
      for (std::int64_t r = 0; r < rows; ++r) {
        const float s = pages.scales != nullptr ? pages.scales[row + r] : 1.f;  // null: the integers
        const std::int8_t* pr = p + r * dim;
        float* out = tile + r * dim;
        std::int64_t i = 0;
#if defined(__x86_64__) || defined(_M_X64)
        if constexpr (simd::is_avx512<Arch>) {
          const __m512 vs = _mm512_set1_ps(s);
          for (; i + 16 <= dim; i += 16)
            _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(pr + i)))), vs));
        } else if constexpr (simd::is_avx2<Arch>) {
          const __m256 vs = _mm256_set1_ps(s);
          for (; i + 8 <= dim; i += 8)
            _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(pr + i)))), vs));
        }
#endif
        for (; i < dim; ++i) out[i] = static_cast<float>(pr[i]) * s;
      }
      return tile;
    }
    case KvElem::i4: {
      const std::uint8_t* p = static_cast<const std::uint8_t*>(pages.values) + row * dim / 2;
      const std::int64_t group = dim / groups;
      for (std::int64_t r = 0; r < rows; ++r) {
        const std::uint8_t* pr = p + r * dim / 2;
        const float* s = pages.scales != nullptr ? pages.scales + (row + r) * groups : nullptr;
        auto scale = [&](std::int64_t i) { return s != nullptr ? s[i / group] : 1.f; };  // null scales: the integers
        float* out = tile + r * dim;
        std::int64_t i = 0;
#if defined(__x86_64__) || defined(_M_X64)
        // Bytes b -> nibbles in order (b & 15, b >> 4, ...) by one unpack, sign-extended by
        // (x ^ 8) - 8, widened to int32 and float, times the group's scale.
        const __m128i low = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
        auto nibbles = [&](__m128i b) {
          const __m128i lo = _mm_and_si128(b, low), hi = _mm_and_si128(_mm_srli_epi16(b, 4), low);
          return _mm_sub_epi8(_mm_xor_si128(_mm_unpacklo_epi8(lo, hi), eight), eight);
        };
        if constexpr (simd::is_avx512<Arch>) {
          if (group % 16 == 0)
            for (; i + 16 <= dim; i += 16) {
              const __m128i x = nibbles(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(pr + i / 2)));
              _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(x)), _mm512_set1_ps(scale(i))));
            }
        } else if constexpr (simd::is_avx2<Arch>) {
          if (group % 8 == 0)
            for (; i + 8 <= dim; i += 8) {
              std::int32_t four;
              __builtin_memcpy(&four, pr + i / 2, 4);
              const __m128i x = nibbles(_mm_cvtsi32_si128(four));
              _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(x)), _mm256_set1_ps(scale(i))));
            }
        }
#endif
        for (; i < dim; ++i) out[i] = static_cast<float>(nibble_value(pr, i)) * scale(i);
      }
      return tile;
    }
  }
  return tile;
}

// max(m0, x[0], ..., x[n - 1]).
template <class Arch>
QUARRY_ALWAYS_INLINE float max_from(const float* x, std::int64_t n, float m0) noexcept {
  using B = xsimd::batch<float, Arch>;
  constexpr std::int64_t W = static_cast<std::int64_t>(B::size);
  B vmax(m0);
  std::int64_t j = 0;
  for (; j + W <= n; j += W) vmax = xsimd::max(vmax, B::load_unaligned(x + j));
  float lanes[W];
  vmax.store_unaligned(lanes);
  float m = lanes[0];
  for (std::int64_t l = 1; l < W; ++l) m = std::max(m, lanes[l]);
  for (; j < n; ++j) m = std::max(m, x[j]);
  return m;
}

// x[j] = exp(x[j] - m) for j < n; returns their sum.
template <class Arch>
QUARRY_ALWAYS_INLINE float exp_minus_sum(float* x, std::int64_t n, float m) noexcept {
  using B = xsimd::batch<float, Arch>;
  constexpr std::int64_t W = static_cast<std::int64_t>(B::size);
  const B bm(m);
  B vsum(0.f);
  std::int64_t j = 0;
  for (; j + W <= n; j += W) {
    const B e = xsimd::exp(B::load_unaligned(x + j) - bm);
    e.store_unaligned(x + j);
    vsum += e;
  }
  float sum = simd::reduce_add(vsum);
  for (; j < n; ++j) {
    x[j] = std::exp(x[j] - m);
    sum += x[j];
  }
  return sum;
}

// The softmax numerators of each head's n scores (in place, max subtracted) and, per head, the
// chunk's partial result header: out[g * (dim + 2)] = max, [+1] = sum of exps, then dim zeros.
template <class Arch>
QUARRY_ALWAYS_INLINE void chunk_softmax(float* scores, std::int64_t n, std::int64_t heads, float* out, std::int64_t dim) noexcept {
  for (std::int64_t g = 0; g < heads; ++g) {
    float* s = scores + g * n;
    const float m = max_from<Arch>(s, n, -std::numeric_limits<float>::infinity());
    const float sum = exp_minus_sum<Arch>(s, n, m);
    float* o = out + g * (dim + 2);
    o[0] = m;
    o[1] = sum;
    std::fill(o + 2, o + 2 + dim, 0.f);
  }
}

// The general SIMD chunk: runs widened into an f32 tile, then products from the tile (any dim,
// any INT4 group, NEON too).
template <class Arch>
void decode_chunk_tiled_one_head(const DecodeChunkArgs& a) noexcept {
  using B = xsimd::batch<float, Arch>;
  constexpr std::int64_t W = static_cast<std::int64_t>(B::size);
  const std::int64_t n = a.t1 - a.t0, dim = a.dim;
  const KvI8Scratch i8 = kv_i8_scratch(a);
  float* scores = i8.scores;  // [group][n]
  float* tile = i8.tile;      // [16][dim]
  constexpr std::int64_t kRun = 16;
  const float* q = a.q;
  if (a.elem == KvElem::i8 || a.elem == KvElem::i4) {  // the int8 query of the contract
    dequantized_queries_i8<Arch>(a, i8);
    q = i8.qf;
  }

  // Calls f(first token, first row, rows, f32 rows) for each run of tokens in one page.
  auto for_each_run = [&](const KvPagesRef& pages, auto&& f) {
    for (std::int64_t t = a.t0; t < a.t1;) {
      const std::int64_t slot = t % a.page_size;
      const std::int64_t rows = std::min({kRun, a.page_size - slot, a.t1 - t});
      const std::int64_t row = (a.pages[t / a.page_size] * a.n_kv + a.kv_head) * a.page_size + slot;
      f(t, row, rows, kv_rows_f32<Arch>(a.elem, pages, row, rows, dim, a.groups, tile));
      t += rows;
    }
  };

  // Pass 1: scores, K read once for the group.
  for_each_run(a.k, [&](std::int64_t t, std::int64_t, std::int64_t rows, const float* k) {
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t g = 0; g < a.group; ++g)
        scores[g * n + (t - a.t0) + r] = dot_f32<Arch>(q + g * dim, k + r * dim, static_cast<std::size_t>(dim)) * a.scale;
  });

  chunk_softmax<Arch>(scores, n, a.group, a.out, dim);
  KvPagesRef v_pages = a.v;
  if (a.elem == KvElem::i8) quantize_weights_i8<Arch>(a, scores);  // the weights now hold V's row scales
  if (a.elem == KvElem::i8 || a.elem == KvElem::i4) v_pages.scales = nullptr;  // the tile holds V's integers

  // Pass 2: acc[g] += p[g][t] v[t], V read once for the group; 4 registers of acc at a time.
  for_each_run(v_pages, [&](std::int64_t t, std::int64_t row, std::int64_t rows, const float* v) {
    if (a.elem == KvElem::i4) return run_values_i4<Arch>(a, scores + (t - a.t0), n, a.v.scales + row * a.groups, rows, v, a.out);
    for (std::int64_t g = 0; g < a.group; ++g) {
      const float* p = scores + g * n + (t - a.t0);
      float* acc = a.out + g * (dim + 2) + 2;
      std::int64_t i = 0;
      for (; i + 4 * W <= dim; i += 4 * W) {
        B c0 = B::load_unaligned(acc + i), c1 = B::load_unaligned(acc + i + W);
        B c2 = B::load_unaligned(acc + i + 2 * W), c3 = B::load_unaligned(acc + i + 3 * W);
        for (std::int64_t r = 0; r < rows; ++r) {
          const B pr(p[r]);
          const float* vr = v + r * dim + i;
          c0 = xsimd::fma(pr, B::load_unaligned(vr), c0);
          c1 = xsimd::fma(pr, B::load_unaligned(vr + W), c1);
          c2 = xsimd::fma(pr, B::load_unaligned(vr + 2 * W), c2);
          c3 = xsimd::fma(pr, B::load_unaligned(vr + 3 * W), c3);
        }
        c0.store_unaligned(acc + i);
        c1.store_unaligned(acc + i + W);
        c2.store_unaligned(acc + i + 2 * W);
        c3.store_unaligned(acc + i + 3 * W);
      }
      add_weighted_rows<Arch>(acc, i, dim, p, v, rows, dim);
    }
  });
}

template <class Arch>
void ref_tile_gemm(const TileGemmArgs& g) noexcept {
  for (std::int64_t i = 0; i < g.m; ++i)
    for (std::int64_t j = 0; j < g.n; ++j) {
      float s = g.accumulate ? g.c[i * g.ldc + j] : 0.f;
      for (std::int64_t t = 0; t < g.k; ++t) s += g.a[i * g.lda + t] * g.b[t * g.ldb + j];
      g.c[i * g.ldc + j] = s;
    }
}

// The visible columns [lo, hi) of tile row r (all n without lo / hi).
inline void tile_softmax_range(const TileSoftmaxArgs& g, std::int64_t r, std::int64_t& lo, std::int64_t& hi) noexcept {
  lo = g.lo != nullptr ? g.lo[r / g.group] : 0;
  hi = g.hi != nullptr ? g.hi[r / g.group] : g.n;
}

// The tile's softmax step: kRef, scalar loops in order (the reference); else SIMD.
template <class Arch, bool kRef>
void tile_softmax_rows(const TileSoftmaxArgs& g) noexcept {
  for (std::int64_t r = 0; r < g.m; ++r) {
    float* sr = g.s + r * g.lds;
    std::int64_t lo = 0, hi = 0;
    tile_softmax_range(g, r, lo, hi);
    if (lo >= hi) {
      std::fill(sr, sr + g.n, 0.f);
      continue;
    }
    float m = g.row_max[r], sum = 0.f;
    if constexpr (kRef) {
      for (std::int64_t j = lo; j < hi; ++j) m = std::max(m, sr[j]);
      for (std::int64_t j = lo; j < hi; ++j) {
        sr[j] = std::exp(sr[j] - m);
        sum += sr[j];
      }
    } else {
      m = max_from<Arch>(sr + lo, hi - lo, m);
      sum = exp_minus_sum<Arch>(sr + lo, hi - lo, m);
    }
    const float alpha = std::exp(g.row_max[r] - m);
    std::fill(sr, sr + lo, 0.f);
    std::fill(sr + hi, sr + g.n, 0.f);
    g.row_sum[r] = g.row_sum[r] * alpha + sum;
    g.row_max[r] = m;
    if (alpha == 1.f) continue;
    float* a = g.acc + r * g.ld_acc;
    std::int64_t d = 0;
    if constexpr (!kRef) {
      using B = xsimd::batch<float, Arch>;
      for (const B ba(alpha); d + static_cast<std::int64_t>(B::size) <= g.dim; d += static_cast<std::int64_t>(B::size))
        (B::load_unaligned(a + d) * ba).store_unaligned(a + d);
    }
    for (; d < g.dim; ++d) a[d] *= alpha;
  }
}

template <class Arch>
void ref_tile_softmax(const TileSoftmaxArgs& g) noexcept {
  tile_softmax_rows<Arch, true>(g);
}

template <class Arch>
void tile_softmax(const TileSoftmaxArgs& g) noexcept {
  tile_softmax_rows<Arch, false>(g);
}

// R rows of C from row i: blocks of 4 registers of columns (R x 4 accumulators), then single
// registers, then scalars; each accumulator runs over k in order.
template <class Arch, int R>
QUARRY_ALWAYS_INLINE void tile_gemm_rows(const TileGemmArgs& g, std::int64_t i) noexcept {
  using B = xsimd::batch<float, Arch>;
  constexpr std::int64_t W = static_cast<std::int64_t>(B::size);
  const float* a = g.a + i * g.lda;
  float* c = g.c + i * g.ldc;
  std::int64_t j = 0;
  for (; j + 4 * W <= g.n; j += 4 * W) {
    B acc[R][4];
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < 4; ++v) acc[r][v] = g.accumulate ? B::load_unaligned(c + r * g.ldc + j + v * W) : B(0.f);
    for (std::int64_t t = 0; t < g.k; ++t) {
      const float* bt = g.b + t * g.ldb + j;
      const B b0 = B::load_unaligned(bt), b1 = B::load_unaligned(bt + W), b2 = B::load_unaligned(bt + 2 * W),
              b3 = B::load_unaligned(bt + 3 * W);
      for (int r = 0; r < R; ++r) {
        const B x(a[r * g.lda + t]);
        acc[r][0] = xsimd::fma(x, b0, acc[r][0]);
        acc[r][1] = xsimd::fma(x, b1, acc[r][1]);
        acc[r][2] = xsimd::fma(x, b2, acc[r][2]);
        acc[r][3] = xsimd::fma(x, b3, acc[r][3]);
      }
    }
    for (int r = 0; r < R; ++r)
      for (int v = 0; v < 4; ++v) acc[r][v].store_unaligned(c + r * g.ldc + j + v * W);
  }
  for (; j + W <= g.n; j += W) {
    B acc[R];
    for (int r = 0; r < R; ++r) acc[r] = g.accumulate ? B::load_unaligned(c + r * g.ldc + j) : B(0.f);
    for (std::int64_t t = 0; t < g.k; ++t) {
      const B bt = B::load_unaligned(g.b + t * g.ldb + j);
      for (int r = 0; r < R; ++r) acc[r] = xsimd::fma(B(a[r * g.lda + t]), bt, acc[r]);
    }
    for (int r = 0; r < R; ++r) acc[r].store_unaligned(c + r * g.ldc + j);
  }
  for (; j < g.n; ++j)
    for (int r = 0; r < R; ++r) {
      float s = g.accumulate ? c[r * g.ldc + j] : 0.f;
      for (std::int64_t t = 0; t < g.k; ++t) s = std::fma(a[r * g.lda + t], g.b[t * g.ldb + j], s);
      c[r * g.ldc + j] = s;
    }
}

template <class Arch>
void tile_gemm(const TileGemmArgs& g) noexcept {
  std::int64_t i = 0;
  for (; i + 4 <= g.m; i += 4) tile_gemm_rows<Arch, 4>(g, i);
  for (; i < g.m; ++i) tile_gemm_rows<Arch, 1>(g, i);
}

#if defined(__x86_64__) || defined(_M_X64)
// ---- The fused x86 chunk: K and V widened in registers as they are used, never stored. ----
//
// Scores: for four tokens at a time, one accumulator per (head, token) runs over the head's
// dimension blocks (a widened block of K is used by every head of the sub-group), and the
// per-token accumulators of up to W tokens are reduced together (one transpose-add for W sums,
// folded as the tokens come). INT8 rows' scales multiply the sums (a scale per token); INT4 group
// scales multiply the widened block. Weighted V: blocks of 2 registers of the output per head,
// over the run's tokens, with p (times the INT8 row scale) broadcast. Needs dim % W == 0 and, for
// INT4, group % W == 0.

// W values of row `row` from element i, widened to f32 (INT4 times its group's scale, or not:
// kScaled false).
template <class Arch, KvElem E, bool kScaled = true>
QUARRY_ALWAYS_INLINE xsimd::batch<float, Arch> kv_block(const KvPagesRef& pages, std::int64_t row, std::int64_t dim, std::int64_t i,
                                                       std::int64_t groups, std::int64_t group_shift) noexcept {
  using B = xsimd::batch<float, Arch>;
  if constexpr (E == KvElem::f32) {
    return B::load_unaligned(static_cast<const float*>(pages.values) + row * dim + i);
  } else if constexpr (E == KvElem::f16) {
    const std::uint16_t* p = static_cast<const std::uint16_t*>(pages.values) + row * dim + i;
    if constexpr (simd::is_avx512<Arch>) return B(_mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
    else return B(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  } else if constexpr (E == KvElem::bf16) {
    const std::uint16_t* p = static_cast<const std::uint16_t*>(pages.values) + row * dim + i;
    if constexpr (simd::is_avx512<Arch>)
      return B(_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16)));
    else
      return B(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16)));
  } else if constexpr (E == KvElem::i8) {
    const std::int8_t* p = static_cast<const std::int8_t*>(pages.values) + row * dim + i;
    if constexpr (simd::is_avx512<Arch>) return B(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)))));
    else return B(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)))));
  } else {
    const std::uint8_t* p = static_cast<const std::uint8_t*>(pages.values) + (row * dim + i) / 2;
    const float s = kScaled ? pages.scales[row * groups + (i >> group_shift)] : 1.f;
    if constexpr (simd::is_avx512<Arch>) {
      // Byte e of x holds element e in its low nibble (the high one is noise: b >> 4 in 16-bit
      // lanes pulls in the next byte's bits), which is all vpermps reads of an index: the
      // nibbles' values (two's complement, -8..7) come from a table, with no masking or conversion.
      const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
      const __m128i x = _mm_unpacklo_epi8(b, _mm_srli_epi16(b, 4));
      const __m512 table = _mm512_setr_ps(0.f, 1.f, 2.f, 3.f, 4.f, 5.f, 6.f, 7.f, -8.f, -7.f, -6.f, -5.f, -4.f, -3.f, -2.f, -1.f);
      const __m512 v = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(x), table);
      return B(kScaled ? _mm512_mul_ps(v, _mm512_set1_ps(s)) : v);
    } else {
      const __m128i low = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
      std::int32_t four;
      __builtin_memcpy(&four, p, 4);
      const __m128i b = _mm_cvtsi32_si128(four);
      const __m128i x = _mm_sub_epi8(_mm_xor_si128(_mm_unpacklo_epi8(_mm_and_si128(b, low), _mm_and_si128(_mm_srli_epi16(b, 4), low)), eight), eight);
      const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(x));
      return B(kScaled ? _mm256_mul_ps(v, _mm256_set1_ps(s)) : v);
    }
  }
}

// op (add or max, associative and commutative) over the lanes of each of 16 registers, in one
// register (element j: v[j]'s). A transpose-reduce tree of single-operation shuffles (about 45
// operations where vhaddps trees take some 75 micro-ops), in three steps that a kernel may also
// take as its inputs come: fold_pair, two inputs folded to 256 bits each; fold_quad, two pairs to
// four inputs folded to 128 bits (128-bit lane i: v[4k + i]'s); fold_finish, four quads within
// the lanes, leaving element 4i + p v[4p + i]'s, and a last permute puts them in input order.
template <class Op>
QUARRY_ALWAYS_INLINE __m512 fold_pair(__m512 x, __m512 y, Op op) noexcept {
  return op(_mm512_shuffle_f32x4(x, y, 0x44), _mm512_shuffle_f32x4(x, y, 0xEE));
}
template <class Op>
QUARRY_ALWAYS_INLINE __m512 fold_quad(__m512 x, __m512 y, Op op) noexcept {
  return op(_mm512_shuffle_f32x4(x, y, 0x88), _mm512_shuffle_f32x4(x, y, 0xDD));
}
template <class Op>
QUARRY_ALWAYS_INLINE __m512 fold_finish(const __m512* b, Op op) noexcept {
  const __m512 c0 = op(_mm512_unpacklo_ps(b[0], b[1]), _mm512_unpackhi_ps(b[0], b[1]));
  const __m512 c1 = op(_mm512_unpacklo_ps(b[2], b[3]), _mm512_unpackhi_ps(b[2], b[3]));
  const __m512d c0d = _mm512_castps_pd(c0), c1d = _mm512_castps_pd(c1);
  const __m512 d = op(_mm512_castpd_ps(_mm512_unpacklo_pd(c0d, c1d)), _mm512_castpd_ps(_mm512_unpackhi_pd(c0d, c1d)));
  return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), d);
}
template <class Op>
QUARRY_ALWAYS_INLINE __m512 reduce16(const __m512* v, Op op) noexcept {
  __m512 b[4];
  for (int k = 0; k < 4; ++k) b[k] = fold_quad(fold_pair(v[4 * k], v[4 * k + 1], op), fold_pair(v[4 * k + 2], v[4 * k + 3], op), op);
  return fold_finish(b, op);
}

// The 4 x 4 transpose of 128-bit lanes: lane k of y[L] is lane L of x[k].
QUARRY_ALWAYS_INLINE void transpose_lanes4(const __m512 (&x)[4], __m512 (&y)[4]) noexcept {
  const __m512 t0 = _mm512_shuffle_f32x4(x[0], x[1], 0x44), t1 = _mm512_shuffle_f32x4(x[2], x[3], 0x44);  // lanes 0, 1
  const __m512 t2 = _mm512_shuffle_f32x4(x[0], x[1], 0xEE), t3 = _mm512_shuffle_f32x4(x[2], x[3], 0xEE);  // lanes 2, 3
  y[0] = _mm512_shuffle_f32x4(t0, t1, 0x88);
  y[1] = _mm512_shuffle_f32x4(t0, t1, 0xDD);
  y[2] = _mm512_shuffle_f32x4(t2, t3, 0x88);
  y[3] = _mm512_shuffle_f32x4(t2, t3, 0xDD);
}

// Horizontal sums of registers in the steps of reduce16 (AVX-512; quarry's own: xsimd 8.1's
// AVX-512 haddp gives wrong sums) or of vhaddps (AVX2): pair_sums folds two registers' sums into
// one (the pairs' halves), quad_sums two pair_sums of four registers into one (their quarters),
// sums_of_quads the W / 4 quad_sums of W registers into one register, element j v[j]'s sum.
template <class Arch>
QUARRY_ALWAYS_INLINE xsimd::batch<float, Arch> pair_sums(xsimd::batch<float, Arch> x, xsimd::batch<float, Arch> y) noexcept {
  if constexpr (simd::is_avx512<Arch>) return fold_pair(x, y, [](__m512 p, __m512 q) { return _mm512_add_ps(p, q); });
  else return _mm256_hadd_ps(x, y);
}
template <class Arch>
QUARRY_ALWAYS_INLINE xsimd::batch<float, Arch> quad_sums(xsimd::batch<float, Arch> x, xsimd::batch<float, Arch> y) noexcept {
  if constexpr (simd::is_avx512<Arch>) return fold_quad(x, y, [](__m512 p, __m512 q) { return _mm512_add_ps(p, q); });
  else return _mm256_hadd_ps(x, y);
}
template <class Arch>
QUARRY_ALWAYS_INLINE xsimd::batch<float, Arch> sums_of_quads(const xsimd::batch<float, Arch>* b) noexcept {
  if constexpr (simd::is_avx512<Arch>) {
    const __m512 x[4] = {b[0], b[1], b[2], b[3]};
    return fold_finish(x, [](__m512 p, __m512 q) { return _mm512_add_ps(p, q); });
  } else {
    // b[0] = [v0..v3 low-half sums | v0..v3 high-half sums], b[1] the same for v4..v7.
    return _mm256_add_ps(_mm256_permute2f128_ps(b[0], b[1], 0x20), _mm256_permute2f128_ps(b[0], b[1], 0x31));
  }
}

// What a kernel working on one head's run asks to be fetched meanwhile: the rows of a block
// about 32 KiB further on in its pass (values and, for INT8 / INT4, their scales), in `parts`
// slices spread over its work, so that the requests go out at the rate the data is used rather
// than in bursts that fill the core's miss buffers, and into L2 (prefetcht1: into L1 they evict
// what is in use). Runs of scattered pages are 4 KiB islands the hardware prefetchers do not
// cross, so without this each would start with DRAM misses. Measured on Zen 4 (16k tokens, f16,
// 1 thread, shuffled pages): 7.3 GB/s with whole runs asked for into L1 two runs ahead, 12.9
// with this; the same scheme on a plain sum of shuffled 32 KiB blocks reaches 18.5 GB/s, the
// core's ceiling for such reads (23-25 in order).
struct Ahead {
  const char* values = nullptr;
  std::int64_t value_bytes = 0;
  const char* scales = nullptr;
  std::int64_t scale_bytes = 0;
};

// How far ahead, in bytes of the pass's values.
constexpr std::int64_t kAheadBytes = 32 * 1024;

QUARRY_ALWAYS_INLINE void prefetch_lines(const char* p, std::int64_t lo, std::int64_t hi) noexcept {
  if (p == nullptr || lo >= hi) return;
  const std::uintptr_t first = (reinterpret_cast<std::uintptr_t>(p) + static_cast<std::uintptr_t>(lo)) & ~std::uintptr_t{63};
  const std::uintptr_t end = reinterpret_cast<std::uintptr_t>(p) + static_cast<std::uintptr_t>(hi);
  for (std::uintptr_t x = first; x < end; x += 64) _mm_prefetch(reinterpret_cast<const char*>(x), _MM_HINT_T1);
}

// The block ahead cut into `parts` slices of whole cache lines (the last may be short or empty);
// slice(k) asks for the k-th, and the first also for the scales.
class AheadSlices {
 public:
  QUARRY_ALWAYS_INLINE AheadSlices(const Ahead& ah, std::int64_t parts) noexcept
      : ah_(ah), step_(((ah.value_bytes + parts - 1) / parts + 63) & ~std::int64_t{63}) {}
  QUARRY_ALWAYS_INLINE void slice(std::int64_t k) const noexcept {
    const std::int64_t lo = k * step_;
    prefetch_lines(ah_.values, lo, std::min(lo + step_, ah_.value_bytes));
    if (k == 0) prefetch_lines(ah_.scales, 0, ah_.scale_bytes);
  }

 private:
  Ahead ah_;
  std::int64_t step_;
};

// x, held in a register: with constant offsets GCC folds a load used by several FMAs into each
// of them, and Zen 4 issues one 512-bit load per cycle, no more than FMAs (f16, ctx 512 in
// cache: 136-142 us a call with the loads folded, 127-130 without).
template <class B>
QUARRY_ALWAYS_INLINE B in_register(B x) noexcept {
#if defined(__GNUC__)
  typename B::register_type r = x;
  __asm__("" : "+v"(r));
  return B(r);
#else
  return x;
#endif
}

// The call's query heads arranged for fused_scores: those of kv head h as [dim / W][group][W]
// (block i / W of head g at qp + h * group * dim + (i / W) * group * W + g * W), so that one
// pointer and constant offsets reach a sub-group's blocks.
template <class Arch>
QUARRY_ALWAYS_INLINE void pack_queries(const DecodeChunkArgs& a, std::int64_t heads, float* qp) noexcept {
  using B = xsimd::batch<float, Arch>;
  constexpr std::int64_t W = static_cast<std::int64_t>(B::size);
  for (std::int64_t g = 0; g < heads; ++g) {
    const std::int64_t h = g / a.group;
    float* dst = qp + h * a.group * a.dim + (g - h * a.group) * W;
    for (std::int64_t i = 0; i < a.dim; i += W) B::load_unaligned(a.q + g * a.dim + i).store_unaligned(dst + (i / W) * a.group * W);
  }
}

// Output registers per step of fused_values. (4 on AVX-512, whose 32 registers hold 4 x 4
// accumulators, read 8-10% slower from DRAM at 16k-64k tokens on Zen 4, and no faster in cache.)
constexpr int kFusedBlock = 2;

// Scores of heads [g0, g0 + S) for the run of `rows` tokens whose first row is `row`, written to
// scores[g * n + j0 + r]. Four tokens at a time (in steps of R: S x R accumulators, R widened
// blocks and a query block in registers), whose per-head sums are folded at once to one register
// (pair_sums, quad_sums): the registers stored per token are a quarter of the accumulators.
template <class Arch, KvElem E, int S>
QUARRY_ALWAYS_INLINE void fused_scores(const DecodeChunkArgs& a, std::int64_t g0, std::int64_t row, std::int64_t rows, std::int64_t j0,
                                       std::int64_t n, std::int64_t shift, float* scores, const float* qp, const Ahead& ahead) noexcept {
  using B = xsimd::batch<float, Arch>;
  constexpr std::int64_t W = static_cast<std::int64_t>(B::size);
  constexpr int R = simd::is_avx512<Arch> ? 4 : 2;  // AVX2's 16 registers hold S x 2 accumulators
  // Block i / W of head g0 + s at q + (i / W) * qstep + s * W (pack_queries).
  const std::int64_t h = g0 / a.group, qstep = a.group * W;
  const float* const q = qp + h * a.group * a.dim + (g0 - h * a.group) * W;
  B quads[S][4];  // quads[s][k]: quad_sums of head s's accumulators of tokens 4k .. 4k + 3
  const AheadSlices fetch(ahead, (rows + 3) / 4);
  std::int64_t r = 0;
  for (; r + 4 <= rows; r += 4) {
    fetch.slice(r / 4);
    B pairs[S][2];
    for (int t0 = 0; t0 < 4; t0 += R) {
      B acc[S][R];
      for (int s = 0; s < S; ++s)
        for (int t = 0; t < R; ++t) acc[s][t] = B(0.f);
      const float* qi = q;
      for (std::int64_t i = 0; i < a.dim; i += W, qi += qstep) {
        B k[R];
        for (int t = 0; t < R; ++t) k[t] = kv_block<Arch, E>(a.k, row + r + t0 + t, a.dim, i, a.groups, shift);
        for (int s = 0; s < S; ++s) {
          const B qb = in_register(B::load_unaligned(qi + s * W));
          for (int t = 0; t < R; ++t) acc[s][t] = xsimd::fma(qb, k[t], acc[s][t]);
        }
      }
      for (int s = 0; s < S; ++s)
        for (int t = 0; t < R; t += 2) pairs[s][(t0 + t) / 2] = pair_sums<Arch>(acc[s][t], acc[s][t + 1]);
    }
    for (int s = 0; s < S; ++s) quads[s][r / 4] = quad_sums<Arch>(pairs[s][0], pairs[s][1]);
  }
  if (r < rows) {  // the last 1-3 tokens, one at a time (the others' sums are 0, not stored)
    fetch.slice(r / 4);
    B acc[S][4];
    for (int s = 0; s < S; ++s)
      for (int t = 0; t < 4; ++t) acc[s][t] = B(0.f);
    for (std::int64_t t = 0; r + t < rows; ++t) {
      const float* qi = q;
      for (std::int64_t i = 0; i < a.dim; i += W, qi += qstep) {
        const B k0 = kv_block<Arch, E>(a.k, row + r + t, a.dim, i, a.groups, shift);
        for (int s = 0; s < S; ++s) acc[s][t] = xsimd::fma(B::load_unaligned(qi + s * W), k0, acc[s][t]);
      }
    }
    for (int s = 0; s < S; ++s)
      quads[s][r / 4] = quad_sums<Arch>(pair_sums<Arch>(acc[s][0], acc[s][1]), pair_sums<Arch>(acc[s][2], acc[s][3]));
  }
  // Quads past the run that sums_of_quads reads (in the last W tokens' register) fill only lanes
  // that are not stored; zeros keep them defined.
  const std::int64_t live = (rows + 3) / 4, used = std::min<std::int64_t>(4, (live + W / 4 - 1) / (W / 4) * (W / 4));
  for (int s = 0; s < S; ++s)
    for (std::int64_t k = live; k < used; ++k) quads[s][k] = B(0.f);
  for (std::int64_t c = 0; c < rows; c += W) {
    const std::int64_t m = std::min(W, rows - c);
    B scale(a.scale);
    if constexpr (E == KvElem::i8) {
      alignas(64) float row_scale[16];
      for (std::int64_t j = 0; j < W; ++j) row_scale[j] = j < m ? a.k.scales[row + c + j] * a.scale : 0.f;
      scale = B::load_aligned(row_scale);
    }
    for (int s = 0; s < S; ++s) {
      const B sums = sums_of_quads<Arch>(&quads[s][c / 4]) * scale;
      if (m == W) {
        sums.store_unaligned(scores + (g0 + s) * n + j0 + c);
      } else {
        alignas(64) float out[16];
        sums.store_aligned(out);
        for (std::int64_t j = 0; j < m; ++j) scores[(g0 + s) * n + j0 + c + j] = out[j];
      }
    }
  }
}

// acc[g] += p[g][j0 + r] v[row + r] for heads [g0, g0 + S). INT8: the weights hold V's row
// scales; INT4: V's integers times the weights per group (run_weights_i4), put in wbuf
// ([S][groups][16] floats).
template <class Arch, KvElem E, int S>
QUARRY_ALWAYS_INLINE void fused_values(const DecodeChunkArgs& a, std::int64_t g0, std::int64_t row, std::int64_t rows, std::int64_t j0,
                                       std::int64_t n, std::int64_t shift, const float* probs, float* wbuf, const Ahead& ahead) noexcept {
  using B = xsimd::batch<float, Arch>;
  constexpr std::int64_t W = static_cast<std::int64_t>(B::size);
  const AheadSlices fetch(ahead, a.dim / W);
  // The weights p[copy][s][r]; on AVX-512 once per output register of a step, so that each FMA
  // broadcasts its own copy, which the compiler folds into the FMA as its memory operand
  // (vfmadd231ps m32{1to16}). One broadcast shared by several FMAs is a separate vbroadcastss,
  // which on Zen 4 takes an FP pipe slot: the loop of 8 FMAs and 4 broadcasts per token ran at
  // 0.75 of the FMA peak in L1, 1.0 with the copies (f16, 16k tokens, 1 thread: 4.3 -> 4.0 ms).
  constexpr int kCopies = simd::is_avx512<Arch> ? kFusedBlock : 1;
  float p[kCopies][S][16];
  for (int s = 0; s < S; ++s) {
    if constexpr (E == KvElem::i4) {
      for (std::int64_t c = 0; c < a.groups; ++c) {
        std::uint8_t wq[16];
        run_weights_i4<Arch>(probs + (g0 + s) * n + j0, a.v.scales + row * a.groups, a.groups, c, rows, wq, wbuf + (s * a.groups + c) * 16);
      }
    } else {
      const float* src = probs + (g0 + s) * n + j0;
      if constexpr (simd::is_avx512<Arch>) {
        const __m512 x = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << rows) - 1), src);
        for (int c = 0; c < kCopies; ++c) _mm512_storeu_ps(p[c][s], x);
      } else {
        for (std::int64_t r = 0; r < rows; ++r) p[0][s][r] = src[r];
      }
    }
  }
  // acc[s][c] += (weight of head s, token r for the block at column i) * v[c].
  auto add = [&](B (&acc)[S][kFusedBlock], const B* v, int count, std::int64_t i, std::int64_t r) {
    for (int s = 0; s < S; ++s) {
      if constexpr (E == KvElem::i4) {
        for (int c = 0; c < count; ++c) acc[s][c] = xsimd::fma(B(wbuf[(s * a.groups + ((i + c * W) >> shift)) * 16 + r]), v[c], acc[s][c]);
      } else {
        for (int c = 0; c < count; ++c) acc[s][c] = xsimd::fma(B(p[kCopies > 1 ? c : 0][s][r]), v[c], acc[s][c]);
      }
    }
  };
  constexpr bool kScaled = E != KvElem::i4;
  float* o[S];  // head s's output
  for (int s = 0; s < S; ++s) o[s] = a.out + (g0 + s) * (a.dim + 2) + 2;
  // Output blocks at a time: S x C accumulators, C widened blocks and a weight in registers.
  constexpr int C = kFusedBlock;
  std::int64_t i = 0;
  for (; i + C * W <= a.dim; i += C * W) {
    for (int c = 0; c < C; ++c) fetch.slice(i / W + c);
    B acc[S][C];
    for (int s = 0; s < S; ++s)
      for (int c = 0; c < C; ++c) acc[s][c] = B::load_unaligned(o[s] + i + c * W);
    for (std::int64_t r = 0; r < rows; ++r) {
      B v[C];
      for (int c = 0; c < C; ++c) v[c] = kv_block<Arch, E, kScaled>(a.v, row + r, a.dim, i + c * W, a.groups, shift);
      add(acc, v, C, i, r);
    }
    for (int s = 0; s < S; ++s)
      for (int c = 0; c < C; ++c) acc[s][c].store_unaligned(o[s] + i + c * W);
  }
  for (; i < a.dim; i += W) {
    fetch.slice(i / W);
    B acc[S][C];
    for (int s = 0; s < S; ++s) acc[s][0] = B::load_unaligned(o[s] + i);
    for (std::int64_t r = 0; r < rows; ++r) {
      const B v0 = kv_block<Arch, E, kScaled>(a.v, row + r, a.dim, i, a.groups, shift);
      add(acc, &v0, 1, i, r);
    }
    for (int s = 0; s < S; ++s) acc[s][0].store_unaligned(o[s] + i);
  }
}

// Calls f(integral_constant<int, S>, g0) over the heads in sub-groups of 4, 2 and 1.
template <class F>
QUARRY_ALWAYS_INLINE void for_each_subgroup(std::int64_t group, F&& f) {
  std::int64_t g0 = 0;
  for (; g0 + 4 <= group; g0 += 4) f(std::integral_constant<int, 4>{}, g0);
  if (g0 + 2 <= group) {
    f(std::integral_constant<int, 2>{}, g0);
    g0 += 2;
  }
  if (g0 < group) f(std::integral_constant<int, 1>{}, g0);
}

// Runs of pages read side by side by fused_runs: two pages' reads in flight at once instead of
// one after the other. Measured on Zen 4 (16 sequences x 16k tokens, shuffled pages, A/B in one
// process): 1-7% faster than one at a time for f16, INT8 and INT4, 1 and 2 threads, in cache
// too; a plain sum of shuffled 16 KiB blocks read two at a time is 16-23% faster. Four at a time:
// within 2% of two, either way.
constexpr std::int64_t kFusedWays = 2;

// Calls f(h, row, rows, j, ahead) for kv head h of each run of <= 16 tokens in one page: row
// its first row (the call's heads lie side by side in a page, head h at + h * page_size), j its
// first index in the chunk, ahead what the work asks to be fetched meanwhile: the block (run,
// head) kAheadBytes further on in the pass (blocks counted as full runs of 16 rows) and, past
// the pass's last run, in the first runs of `next` (the V pass after the K pass) or, without
// next, of the K pass of a.then (the chunk the caller runs next), so that no pass starts with
// misses (16k tokens in chunks of 512, INT8, 1 thread on Zen 4: about 2% of the time).
// Runs go kFusedWays at a time, their heads interleaved (head 0 of each, then head 1, ...); each
// head still sees its runs in order, so the result is that of one run at a time.
// row_bytes: bytes of one row's values; scale_row_bytes: of its scales (0: none).
template <class F>
QUARRY_ALWAYS_INLINE void fused_runs(const DecodeChunkArgs& a, const KvPagesRef& pages, std::int64_t row_bytes, std::int64_t scale_row_bytes,
                                     const KvPagesRef* next, F&& f) noexcept {
  struct Run {
    std::int64_t row = 0, rows = 0, t = 0;
    const KvPagesRef* pages = nullptr;  // null: past the end
  };
  // The runs of the pass (chunk a, pages), then those of the pass after it: the same tokens in
  // next's pages, or a.then's tokens in its K pages (a chunk of the same heads' shape).
  const DecodeChunkArgs* after = next != nullptr ? &a : a.then != nullptr && a.then->kv_heads == a.kv_heads ? a.then : nullptr;
  const KvPagesRef* after_pages = next != nullptr ? next : after != nullptr ? &after->k : nullptr;
  const DecodeChunkArgs* gen_a = &a;
  const KvPagesRef* gen_pages = &pages;
  std::int64_t gen_t = a.t0;
  auto generate = [&]() {
    Run r;
    if (gen_pages == nullptr) return r;
    const DecodeChunkArgs& g = *gen_a;
    const std::int64_t slot = gen_t % g.page_size;
    r.rows = std::min({std::int64_t{16}, g.page_size - slot, g.t1 - gen_t});
    r.row = (g.pages[gen_t / g.page_size] * g.n_kv + g.kv_head) * g.page_size + slot;
    r.t = gen_t;
    r.pages = gen_pages;
    gen_t += r.rows;
    if (gen_t >= g.t1) {
      const bool first = gen_pages == &pages;
      gen_pages = first ? after_pages : nullptr;
      if (first && after != nullptr) {
        gen_a = after;
        gen_t = after->t0;
      }
    }
    return r;
  };
  // ring[j % kRing] is run j; runs j .. j + span + W - 1 are held (the W in work and what their
  // look-ahead reaches). The look-ahead is at least W runs, past those in work.
  constexpr std::int64_t W = kFusedWays, kRing = 16;
  const std::int64_t H = a.kv_heads;
  const std::int64_t blocks_ahead = std::max((kAheadBytes + 16 * row_bytes - 1) / (16 * row_bytes), W * H);
  const std::int64_t dist = std::min(blocks_ahead, (kRing - W) * H - (H - 1));
  const std::int64_t span = (H - 1 + dist) / H;  // runs ahead needed
  Run ring[kRing];
  for (std::int64_t i = 0; i < span + W; ++i) ring[i] = generate();
  auto ahead = [&](std::int64_t j, std::int64_t h) {
    Ahead ah;
    const std::int64_t blk = h + dist;
    const Run& r = ring[(j + blk / H) % kRing];
    if (r.pages == nullptr) return ah;
    const std::int64_t row = r.row + (blk % H) * a.page_size;
    ah.values = static_cast<const char*>(r.pages->values) + row * row_bytes;
    ah.value_bytes = r.rows * row_bytes;
    if (scale_row_bytes > 0) {
      ah.scales = reinterpret_cast<const char*>(r.pages->scales) + row * scale_row_bytes;
      ah.scale_bytes = r.rows * scale_row_bytes;
    }
    return ah;
  };
  for (std::int64_t j = 0;; j += W) {
    Run cur[W];
    std::int64_t live = 0;
    for (; live < W && ring[(j + live) % kRing].pages == &pages; ++live) cur[live] = ring[(j + live) % kRing];
    if (live == 0) break;
    for (std::int64_t h = 0; h < H; ++h)
      for (std::int64_t w = 0; w < live; ++w) f(h, cur[w].row + h * a.page_size, cur[w].rows, cur[w].t - a.t0, ahead(j + w, h));
    for (std::int64_t w = 0; w < W; ++w) ring[(j + span + W + w) % kRing] = generate();
  }
}

// The weighted-V pass of the fused kernel: acc += p v for every run and kv head of the chunk,
// p the numerators in scores ([heads][n]); shift: log2 of the INT4 group size.
template <class Arch, KvElem E>
void fused_values_pass(const DecodeChunkArgs& a, std::int64_t row_bytes, std::int64_t scale_row_bytes, std::int64_t shift,
                       const float* scores) noexcept {
  const std::int64_t n = a.t1 - a.t0;
  const Ahead none;
  float* wbuf = kv_i8_scratch(a).tile;  // INT4's weights: 4 * groups * 16 <= 8 * dim floats (group % W == 0)
  fused_runs(a, a.v, row_bytes, scale_row_bytes, nullptr, [&](std::int64_t h, std::int64_t r, std::int64_t rows, std::int64_t j0, const Ahead& ah) {
    for_each_subgroup(a.group, [&](auto sub, std::int64_t g0) {
      fused_values<Arch, E, decltype(sub)::value>(a, h * a.group + g0, r, rows, j0, n, shift, scores, wbuf, g0 == 0 ? ah : none);
    });
  });
}

// log2 of a power of two.
inline std::int64_t log2_exact(std::int64_t x) noexcept {
  std::int64_t shift = 0;
  while ((std::int64_t{1} << shift) < x) ++shift;
  return shift;
}

template <class Arch, KvElem E>
void decode_chunk_fused(const DecodeChunkArgs& args) noexcept {
  const std::int64_t n = args.t1 - args.t0;
  const std::int64_t heads = args.kv_heads * args.group;  // query heads of the call
  const KvI8Scratch i8 = kv_i8_scratch(args);
  float* scores = i8.scores;  // [heads][n]
  DecodeChunkArgs a = args;
  if constexpr (E == KvElem::i8 || E == KvElem::i4) {  // the int8 query of the contract
    dequantized_queries_i8<Arch>(args, i8);
    a.q = i8.qf;
  }
  pack_queries<Arch>(a, heads, i8.qp);
  const std::int64_t shift = E == KvElem::i4 ? log2_exact(a.dim / a.groups) : 0;  // INT4: a power of two here
  // Bytes of one row (values only; scales are few and close together).
  constexpr std::int64_t kElemBits = E == KvElem::f32 ? 32 : (E == KvElem::f16 || E == KvElem::bf16) ? 16 : E == KvElem::i8 ? 8 : 4;
  const std::int64_t row_bytes = a.dim * kElemBits / 8;
  // Each run is swept across the call's kv heads (a page's heads lie side by side).
  const std::int64_t scale_row_bytes = E == KvElem::i8 ? 4 : E == KvElem::i4 ? 4 * a.groups : 0;
  const Ahead none;
  fused_runs(a, a.k, row_bytes, scale_row_bytes, &a.v, [&](std::int64_t h, std::int64_t r, std::int64_t rows, std::int64_t j0, const Ahead& ah) {
    for_each_subgroup(a.group, [&](auto sub, std::int64_t g0) {
      fused_scores<Arch, E, decltype(sub)::value>(a, h * a.group + g0, r, rows, j0, n, shift, scores, i8.qp, g0 == 0 ? ah : none);
    });
  });
  chunk_softmax<Arch>(scores, n, heads, a.out, a.dim);
  if constexpr (E == KvElem::i8) quantize_weights_i8<Arch>(a, scores);
  fused_values_pass<Arch, E>(a, row_bytes, scale_row_bytes, shift, scores);
}

// ---- INT8 pages on AVX-512 VNNI: the products in integers. ----
//
// Scores: the quantized query heads of a kv head sit 4 to a register, one 128-bit lane each (16
// of its int8 elements); 16 elements of a K row, broadcast to the 4 lanes and made unsigned by
// k ^ 0x80 (the 128 * sum(qi) this adds is taken off after), meet them in vpdpbusd, which leaves
// each head 4 partial sums per token. Four tokens are reduced together into one register (head
// per lane, token per element); with one or two query heads per kv head, four tokens take the
// lanes instead (vnni_scores_tokens). Weighted V: four tokens' rows interleaved byte by byte
// meet the four tokens' u8 weights in vpdpbusd (vnni_values); a run's int32 sums (at most
// 16 * 255 * 128, no overflow) are scaled into the f32 output. Needs dim % 32 == 0.

// Calls f(r, kr, mask) for a run's tokens four at a time from token r: kr their K rows (rows
// past the run repeat the last; their scores are not stored), mask the live ones; asks for the
// block ahead in step with the quads.
template <class T, class F>
QUARRY_ALWAYS_INLINE void for_each_quad(const T* base, std::int64_t row_elems, std::int64_t rows, const Ahead& ahead, F&& f) noexcept {
  const AheadSlices fetch(ahead, (rows + 3) / 4);
  for (std::int64_t r = 0; r < rows; r += 4) {
    fetch.slice(r / 4);
    const T* kr[4];
    for (int i = 0; i < 4; ++i) kr[i] = base + std::min<std::int64_t>(r + i, rows - 1) * row_elems;
    f(r, kr, static_cast<__mmask8>((1u << std::min<std::int64_t>(4, rows - r)) - 1));
  }
}

// 16 bytes at `offset` of each of four rows kr, row i in 128-bit lane i.
template <class T>
QUARRY_ALWAYS_INLINE __m512i four_rows_lanes(const T* const* kr, std::int64_t offset) noexcept {
  static_assert(sizeof(T) == 1);
  __m512i k = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kr[0] + offset)));
  k = _mm512_inserti32x4(k, _mm_loadu_si128(reinterpret_cast<const __m128i*>(kr[1] + offset)), 1);
  k = _mm512_inserti32x4(k, _mm_loadu_si128(reinterpret_cast<const __m128i*>(kr[2] + offset)), 2);
  return _mm512_inserti32x4(k, _mm_loadu_si128(reinterpret_cast<const __m128i*>(kr[3] + offset)), 3);
}

// The offsets of a run's rows for the weighted V, four per quad: rows past the run (weight 0)
// repeat its last, as any valid row will do.
QUARRY_ALWAYS_INLINE void quad_row_offsets(std::int64_t rows, std::int64_t row_bytes, std::int64_t (&at)[16]) noexcept {
  for (std::int64_t r = 0; r < 4 * ((rows + 3) / 4); ++r) at[r] = std::min(r, rows - 1) * row_bytes;
}

// Four rows' 64-byte blocks interleaved byte by byte (the unpacks work within 128-bit lanes):
// int32 element j of lane L of v[k] holds byte 16 L + 4 k + j of the four rows, row i in its
// byte i, ready for vpdpbusd against the four rows' u8 weights.
QUARRY_ALWAYS_INLINE void interleave_rows4(__m512i x0, __m512i x1, __m512i x2, __m512i x3, __m512i (&v)[4]) noexcept {
  const __m512i lo01 = _mm512_unpacklo_epi8(x0, x1), hi01 = _mm512_unpackhi_epi8(x0, x1);
  const __m512i lo23 = _mm512_unpacklo_epi8(x2, x3), hi23 = _mm512_unpackhi_epi8(x2, x3);
  v[0] = _mm512_unpacklo_epi16(lo01, lo23);
  v[1] = _mm512_unpackhi_epi16(lo01, lo23);
  v[2] = _mm512_unpacklo_epi16(hi01, hi23);
  v[3] = _mm512_unpackhi_epi16(hi01, hi23);
}

// Stores the scores of set t of kv head h, v (head per 128-bit lane, token per element), at
// index j of the chunk for the live tokens of `mask`; lanes past the group are not stored.
QUARRY_ALWAYS_INLINE void store_lane_scores(const DecodeChunkArgs& a, const KvI8Scratch& s, std::int64_t h, int t, std::int64_t j,
                                            std::int64_t n, __mmask8 mask, __m512 v) noexcept {
  alignas(64) float out[16];
  _mm512_store_ps(out, v);
  for (int l = 0; l < 4; ++l) {
    const std::int64_t g = t * 4 + l;
    if (g < a.group) _mm_mask_storeu_ps(s.scores + (h * a.group + g) * n + j, mask, _mm_load_ps(out + l * 4));
  }
}

// Scores of the `rows` tokens from `row` for kv head h of the call, SETS sets of 4 query heads.
template <class Arch, int SETS>
QUARRY_ALWAYS_INLINE void vnni_scores(const DecodeChunkArgs& a, const KvI8Scratch& s, std::int64_t h, std::int64_t row, std::int64_t rows,
                                      std::int64_t j0, std::int64_t n, const Ahead& ahead) noexcept {
  const std::int64_t steps = a.dim / 16;
  const std::int8_t* kbase = static_cast<const std::int8_t*>(a.k.values) + row * a.dim;
  const float* ksc = a.k.scales + row;
  const std::int8_t* qh = s.qarr + h * SETS * steps * 64;
  const float* lanes = s.lanes + h * SETS * 32;
  const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
  for_each_quad(kbase, a.dim, rows, ahead, [&](std::int64_t r, const std::int8_t* const* kr, __mmask8 mask) {
    __m512i acc[SETS][4];
    QUARRY_UNROLL
    for (int t = 0; t < SETS; ++t)
      for (int i = 0; i < 4; ++i) acc[t][i] = _mm512_setzero_si512();
#pragma GCC unroll 2
    for (std::int64_t st = 0; st < steps; ++st) {
      __m512i kb[4];
      QUARRY_UNROLL
      for (int i = 0; i < 4; ++i)
        kb[i] = _mm512_xor_si512(_mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kr[i] + st * 16))), bias);
      QUARRY_UNROLL
      for (int t = 0; t < SETS; ++t) {
        const __m512i qv = _mm512_loadu_si512(qh + (t * steps + st) * 64);
        QUARRY_UNROLL
        for (int i = 0; i < 4; ++i) acc[t][i] = dpbusd_inplace(acc[t][i], kb[i], qv);
      }
    }
    const __m512 skb = _mm512_broadcast_f32x4(_mm_maskz_loadu_ps(mask, ksc + r));
    for (int t = 0; t < SETS; ++t) {
      const __m512i z = _mm512_sub_epi32(lane_sums4_epi32<Arch>(acc[t][0], acc[t][1], acc[t][2], acc[t][3]),
                                         _mm512_loadu_si512(lanes + t * 32));
      store_lane_scores(a, s, h, t, j0 + r, n, mask, _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(z), _mm512_loadu_ps(lanes + t * 32 + 16)), skb));
    }
  });
}

// run_weights_i8 for CNT heads (scores p + c * n) at once, the same integers: wq[c], step[c].
template <int CNT>
QUARRY_ALWAYS_INLINE void vnni_run_weights(const float* p, std::int64_t n, const float* sv, std::int64_t rows, std::uint8_t (*wq)[16],
                                           float* step) noexcept {
  const __mmask16 live = static_cast<__mmask16>((1u << rows) - 1);
  const __m512 s = _mm512_maskz_loadu_ps(live, sv), zero = _mm512_setzero_ps(), top = _mm512_set1_ps(255.f);
  QUARRY_UNROLL
  for (int c = 0; c < CNT; ++c) {
    const __m512 w = _mm512_max_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(live, p + c * n), s), zero);  // NaN, < 0: 0
    const float m = _mm512_reduce_max_ps(w);
    const float inv = m > 0.f && m <= std::numeric_limits<float>::max() ? 255.f / m : 0.f;
    step[c] = inv > 0.f ? m / 255.f : 0.f;
    // min(255, x) keeps a NaN (inf * 0), which max(x, 0) makes 0.
    const __m512 x = _mm512_max_ps(_mm512_min_ps(top, _mm512_mul_ps(w, _mm512_set1_ps(inv))), zero);
    _mm_store_si128(reinterpret_cast<__m128i*>(wq[c]), _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(x)));
  }
}

// acc[g] += (INT8 weight of g at t) * v[t] for the run of `rows` tokens from `row`, kv head h,
// CNT query heads from g0 (of the call); the weights are quantized here (vnni_run_weights).
// Blocks of 64 columns (the last may be 32): four rows at a time interleaved byte by byte, so
// that each int32 lane holds one column of four tokens, and vpdpbusd multiplies them by the four
// tokens' u8 weights. The unpacks work within 128-bit lanes: accumulator k's lane L, element j
// holds column 16 L + 4 k + j of the block, and is added to the output there permuted (column
// 16 k + 4 L + j; a 32-column block: 8 k + 4 L + j) until unpermute_values_i8 ends the chunk.
template <class Arch, int CNT>
QUARRY_ALWAYS_INLINE void vnni_values(const DecodeChunkArgs& a, const KvI8Scratch& s, std::int64_t g0, std::int64_t row, std::int64_t rows,
                                      std::int64_t j0, std::int64_t n, const Ahead& ahead) noexcept {
  const std::int8_t* vbase = static_cast<const std::int8_t*>(a.v.values) + row * a.dim;
  const std::int64_t quads = (rows + 3) / 4;
  // Per head, the u8 weights of the run; as int32, element p is the quad of tokens 4p .. 4p + 3.
  alignas(64) std::uint8_t wq[CNT][16];
  float step[CNT];
  vnni_run_weights<CNT>(s.scores + g0 * n + j0, n, a.v.scales + row, rows, wq, step);
  std::int64_t at[16];  // row r of quad qd
  quad_row_offsets(rows, a.dim, at);
  const AheadSlices fetch(ahead, (a.dim + 63) / 64 * quads);
  for (std::int64_t b = 0; b < a.dim; b += 64) {
    const bool full = a.dim - b >= 64;
    const __mmask64 cols = full ? ~__mmask64{0} : ~__mmask64{0} >> 32;  // dim % 32 == 0
    const std::int8_t* vb = vbase + b;
    __m512i acc[CNT * 4];
    QUARRY_UNROLL
    for (int i = 0; i < CNT * 4; ++i) acc[i] = _mm512_setzero_si512();
    for (std::int64_t qd = 0; qd < quads; ++qd) {
      fetch.slice(b / 64 * quads + qd);
      const __m512i x0 = _mm512_maskz_loadu_epi8(cols, vb + at[4 * qd]), x1 = _mm512_maskz_loadu_epi8(cols, vb + at[4 * qd + 1]);
      const __m512i x2 = _mm512_maskz_loadu_epi8(cols, vb + at[4 * qd + 2]), x3 = _mm512_maskz_loadu_epi8(cols, vb + at[4 * qd + 3]);
      __m512i v[4];
      interleave_rows4(x0, x1, x2, x3, v);
      QUARRY_UNROLL
      for (int c = 0; c < CNT; ++c) {
        std::int32_t quad;
        std::memcpy(&quad, &wq[c][4 * qd], sizeof quad);
        const __m512i w = _mm512_set1_epi32(quad);
        QUARRY_UNROLL
        for (int k = 0; k < 4; ++k) acc[4 * c + k] = dpbusd_inplace(acc[4 * c + k], w, v[k]);
      }
    }
    QUARRY_UNROLL
    for (int c = 0; c < CNT; ++c) {
      float* o = a.out + (g0 + c) * (a.dim + 2) + 2 + b;
      const __m512 st = _mm512_set1_ps(step[c]);
      if (full) {
        QUARRY_UNROLL
        for (int k = 0; k < 4; ++k)
          _mm512_storeu_ps(o + 16 * k, _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[4 * c + k]), st, _mm512_loadu_ps(o + 16 * k)));
      } else {
        for (int k = 0; k < 4; ++k) {
          const __m256 f = _mm512_castps512_ps256(_mm512_cvtepi32_ps(acc[4 * c + k]));
          _mm256_storeu_ps(o + 8 * k, _mm256_fmadd_ps(f, _mm512_castps512_ps256(st), _mm256_loadu_ps(o + 8 * k)));
        }
      }
    }
  }
}

// Puts the output columns of `heads` query heads back in order (vnni_values adds them permuted).
inline void unpermute_values_i8(float* out, std::int64_t heads, std::int64_t dim) noexcept {
  for (std::int64_t g = 0; g < heads; ++g) {
    float* o = out + g * (dim + 2) + 2;
    std::int64_t b = 0;
    for (; b + 64 <= dim; b += 64) {
      // acc k's 128-bit lane L sits at o[16 k + 4 L]; column block L wants lanes L of acc 0..3.
      const __m512 x[4] = {_mm512_loadu_ps(o + b), _mm512_loadu_ps(o + b + 16), _mm512_loadu_ps(o + b + 32), _mm512_loadu_ps(o + b + 48)};
      __m512 y[4];
      transpose_lanes4(x, y);
      for (int k = 0; k < 4; ++k) _mm512_storeu_ps(o + b + 16 * k, y[k]);
    }
    if (b < dim) {  // 32 columns: column 16 L + 4 k + j sits at 8 k + 4 L + j
      alignas(64) float tmp[32];
      std::memcpy(tmp, o + b, sizeof tmp);
      for (int L = 0; L < 2; ++L)
        for (int k = 0; k < 4; ++k)
          for (int j = 0; j < 4; ++j) o[b + 16 * L + 4 * k + j] = tmp[8 * k + 4 * L + j];
    }
  }
}

// An INT8 VNNI chunk once its query is laid out: scores(kv head h, first row, rows, index in the
// chunk, ahead) for each run and kv head, then the softmax, the weighted V (vnni_values) and the
// columns back in order.
template <class Arch, class Scores>
void vnni_chunk_i8(const DecodeChunkArgs& a, const KvI8Scratch& s, Scores&& scores) noexcept {
  const std::int64_t n = a.t1 - a.t0, heads = a.kv_heads * a.group;
  fused_runs(a, a.k, a.dim, 4, &a.v, scores);
  chunk_softmax<Arch>(s.scores, n, heads, a.out, a.dim);
  const Ahead none;
  fused_runs(a, a.v, a.dim, 4, nullptr, [&](std::int64_t h, std::int64_t r, std::int64_t rows, std::int64_t j0, const Ahead& ah) {
    std::int64_t g = h * a.group;
    const std::int64_t end = g + a.group;
    for (; g + 4 <= end; g += 4) vnni_values<Arch, 4>(a, s, g, r, rows, j0, n, g == h * a.group ? ah : none);
    const Ahead& rest = g == h * a.group ? ah : none;
    switch (end - g) {
      case 3: vnni_values<Arch, 3>(a, s, g, r, rows, j0, n, rest); break;
      case 2: vnni_values<Arch, 2>(a, s, g, r, rows, j0, n, rest); break;
      case 1: vnni_values<Arch, 1>(a, s, g, r, rows, j0, n, rest); break;
      default: break;
    }
  });
  unpermute_values_i8(a.out, heads, a.dim);
}

// Calls f(h, set, lane, step) for each query-head slot of the VNNI kernels (kv head h of the call,
// `sets` sets of 4 lanes) with s.qi holding that query head quantized to int8 and `step` its
// step (quantize_query_i8); slots past the group get zeros and step 0.
template <class Arch, class F>
QUARRY_ALWAYS_INLINE void for_each_query_slot(const DecodeChunkArgs& a, const KvI8Scratch& s, std::int64_t sets, F&& f) noexcept {
  for (std::int64_t h = 0; h < a.kv_heads; ++h)
    for (std::int64_t g = 0; g < sets * 4; ++g) {
      float step = 0.f;
      if (g < a.group) step = quantize_query_i8<Arch>(a.q + (h * a.group + g) * a.dim, a.dim, s.qi);
      else std::fill(s.qi, s.qi + a.dim, std::int8_t{0});
      f(h, g / 4, g % 4, step);
    }
}

template <class Arch, int SETS>
void decode_chunk_vnni_i8(const DecodeChunkArgs& a) noexcept {
  const std::int64_t n = a.t1 - a.t0, steps = a.dim / 16;
  const KvI8Scratch s = kv_i8_scratch(a);
  // The query heads: int8, arranged per (kv head, set, step) as 4 lanes of 16 bytes; per lane,
  // the correction 128 * sum(qi) and the factor step * scale.
  for_each_query_slot<Arch>(a, s, SETS, [&](std::int64_t h, std::int64_t set, std::int64_t lane, float step) {
    std::int32_t sum = 0;
    for (std::int64_t i = 0; i < a.dim; ++i) sum += s.qi[i];
    for (std::int64_t st = 0; st < steps; ++st)
      std::copy(s.qi + st * 16, s.qi + st * 16 + 16, s.qarr + ((h * SETS + set) * steps + st) * 64 + lane * 16);
    float* lanes = s.lanes + (h * SETS + set) * 32;
    const std::int32_t corr = 128 * sum;
    for (int e = 0; e < 4; ++e) {
      std::memcpy(lanes + lane * 4 + e, &corr, sizeof corr);
      lanes[16 + lane * 4 + e] = step * a.scale;
    }
  });
  vnni_chunk_i8<Arch>(a, s, [&](std::int64_t h, std::int64_t row, std::int64_t rows, std::int64_t j0, const Ahead& ahead) {
    vnni_scores<Arch, SETS>(a, s, h, row, rows, j0, n, ahead);
  });
}

// Scores for one or two query heads per kv head (G), where a register of four head lanes would
// be mostly empty: four tokens' 16 elements in the four lanes (one load and three inserts),
// the query's 16 broadcast, so each vpdpbusd serves four tokens; two accumulators per head
// (even and odd steps) keep two chains of products in flight.
template <class Arch, int G>
QUARRY_ALWAYS_INLINE void vnni_scores_tokens(const DecodeChunkArgs& a, const KvI8Scratch& s, std::int64_t h, std::int64_t row, std::int64_t rows,
                                             std::int64_t j0, std::int64_t n, const Ahead& ahead) noexcept {
  const std::int64_t steps = a.dim / 16;  // even: dim % 32 == 0
  const std::int8_t* kbase = static_cast<const std::int8_t*>(a.k.values) + row * a.dim;
  const float* ksc = a.k.scales + row;
  const std::int8_t* qh = s.qarr + h * G * a.dim;  // G int8 heads in order
  const float* lanes = s.lanes + h * G * 2;        // per head: the int32 correction, the factor
  const __m512i bias = _mm512_set1_epi8(static_cast<char>(0x80));
  const __m512i firsts = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  for_each_quad(kbase, a.dim, rows, ahead, [&](std::int64_t r, const std::int8_t* const* kr, __mmask8 mask) {
    __m512i even[G], odd[G];
    QUARRY_UNROLL
    for (int g = 0; g < G; ++g) even[g] = odd[g] = _mm512_setzero_si512();
    auto tokens = [&](std::int64_t st) { return _mm512_xor_si512(four_rows_lanes(kr, st * 16), bias); };
    auto query = [&](int g, std::int64_t st) {
      return _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qh + g * a.dim + st * 16)));
    };
    for (std::int64_t st = 0; st < steps; st += 2) {
      const __m512i k0 = tokens(st), k1 = tokens(st + 1);
      QUARRY_UNROLL
      for (int g = 0; g < G; ++g) {
        even[g] = dpbusd_inplace(even[g], k0, query(g, st));
        odd[g] = dpbusd_inplace(odd[g], k1, query(g, st + 1));
      }
    }
    const __m128 skb = _mm_maskz_loadu_ps(mask, ksc + r);
    QUARRY_UNROLL
    for (int g = 0; g < G; ++g) {
      // Lane L's four sums, added within the lane; its first element to element L.
      __m512i x = _mm512_add_epi32(even[g], odd[g]);
      x = _mm512_add_epi32(x, _mm512_shuffle_epi32(x, _MM_PERM_BADC));
      x = _mm512_add_epi32(x, _mm512_shuffle_epi32(x, _MM_PERM_CDAB));
      std::int32_t corr;
      std::memcpy(&corr, lanes + 2 * g, sizeof corr);
      const __m128i z = _mm_sub_epi32(_mm512_castsi512_si128(_mm512_permutexvar_epi32(firsts, x)), _mm_set1_epi32(corr));
      const __m128 sc = _mm_mul_ps(_mm_mul_ps(_mm_cvtepi32_ps(z), _mm_set1_ps(lanes[2 * g + 1])), skb);
      _mm_mask_storeu_ps(s.scores + (h * G + g) * n + j0 + r, mask, sc);
    }
  });
}

template <class Arch, int G>
void decode_chunk_vnni_i8_tokens(const DecodeChunkArgs& a) noexcept {
  const std::int64_t n = a.t1 - a.t0;
  const KvI8Scratch s = kv_i8_scratch(a);
  // The query heads: int8 in order; per head, the correction 128 * sum(qi) and step * scale.
  for (std::int64_t g = 0; g < a.kv_heads * G; ++g) {
    std::int8_t* qi = s.qarr + g * a.dim;
    const float step = quantize_query_i8<Arch>(a.q + g * a.dim, a.dim, qi);
    std::int32_t sum = 0;
    for (std::int64_t i = 0; i < a.dim; ++i) sum += qi[i];
    const std::int32_t corr = 128 * sum;
    std::memcpy(s.lanes + 2 * g, &corr, sizeof corr);
    s.lanes[2 * g + 1] = step * a.scale;
  }
  vnni_chunk_i8<Arch>(a, s, [&](std::int64_t h, std::int64_t row, std::int64_t rows, std::int64_t j0, const Ahead& ahead) {
    vnni_scores_tokens<Arch, G>(a, s, h, row, rows, j0, n, ahead);
  });
}

// ---- INT4 pages on AVX-512 VNNI: the products in integers. ----
//
// As INT8's scores, 32 elements a step: the 16 bytes of a K row that hold them, broadcast to the
// 4 lanes and made unsigned by x ^ 0x88 (nibble n becomes n ^ 8 = its value + 8: 8 * the group's
// sum of qi is taken off after), split into low nibbles (even elements) and high ones (odd), meet
// the query heads' even and odd elements in two vpdpbusd. Each group's integer sums of 4 tokens
// (reduced as INT8's) are converted and multiplied by the tokens' scales of that group. Weighted
// V: the 8-bit weights per token and group of the contract meet the nibbles in vpdpbusd
// (vnni_values_i4). Needs dim % 32 == 0 and a group size of a power of two from 32.

// The scales of a run of `rows` (<= 16) INT4 rows, sv [rows][groups], put one group per 16 floats
// in cols ([groups][16], zeros past the run).
QUARRY_ALWAYS_INLINE void transpose_run_scales(const float* sv, std::int64_t groups, std::int64_t rows, float* cols) noexcept {
  const __mmask16 live = static_cast<__mmask16>((1u << rows) - 1);
  const __m512 zero = _mm512_setzero_ps();
  // 16 rows of 1, 2 or 4 scales in 1, 2 or 4 registers (masked past the run), transposed by
  // permutes; more groups (or 3) by a gather per group (some 4 times the cost).
  __m512 x[4];
  if (groups == 1 || groups == 2 || groups == 4) {
    const std::int64_t count = rows * groups;
    for (std::int64_t k = 0; k < groups; ++k) {
      const std::int64_t left = std::clamp<std::int64_t>(count - 16 * k, 0, 16);
      x[k] = _mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << left) - 1), sv + 16 * k);
    }
  }
  if (groups == 1) {
    _mm512_storeu_ps(cols, x[0]);
  } else if (groups == 2) {  // row r, group c at element 2 r + c of x[0] x[1]
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    _mm512_storeu_ps(cols, _mm512_permutex2var_ps(x[0], even, x[1]));
    _mm512_storeu_ps(cols + 16, _mm512_permutex2var_ps(x[0], _mm512_add_epi32(even, _mm512_set1_epi32(1)), x[1]));
  } else if (groups == 4) {  // row r, group c at element 4 r + c of x[0] x[1] (rows 0-7), x[2] x[3] (8-15)
    // Groups 0 and 1 of 8 rows (256-bit halves), then 2 and 3; the halves of rows 0-7 and 8-15 joined.
    const __m512i i01 = _mm512_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29);
    const __m512i i23 = _mm512_add_epi32(i01, _mm512_set1_epi32(2));
    const __m512 a01 = _mm512_permutex2var_ps(x[0], i01, x[1]), b01 = _mm512_permutex2var_ps(x[2], i01, x[3]);
    const __m512 a23 = _mm512_permutex2var_ps(x[0], i23, x[1]), b23 = _mm512_permutex2var_ps(x[2], i23, x[3]);
    _mm512_storeu_ps(cols, _mm512_shuffle_f32x4(a01, b01, 0x44));
    _mm512_storeu_ps(cols + 16, _mm512_shuffle_f32x4(a01, b01, 0xEE));
    _mm512_storeu_ps(cols + 32, _mm512_shuffle_f32x4(a23, b23, 0x44));
    _mm512_storeu_ps(cols + 48, _mm512_shuffle_f32x4(a23, b23, 0xEE));
  } else {
    const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                           _mm512_set1_epi32(static_cast<int>(groups)));
    for (std::int64_t c = 0; c < groups; ++c) _mm512_storeu_ps(cols + c * 16, _mm512_mask_i32gather_ps(zero, live, idx, sv + c, 4));
  }
}

// Scores of the `rows` tokens from `row` for kv head h of the call, SETS sets of 4 query heads.
template <class Arch, int SETS>
QUARRY_ALWAYS_INLINE void vnni_scores_i4(const DecodeChunkArgs& a, const KvI8Scratch& s, std::int64_t h, std::int64_t row, std::int64_t rows,
                                         std::int64_t j0, std::int64_t n, const Ahead& ahead) noexcept {
  const std::int64_t steps = a.dim / 32, gsteps = steps / a.groups, row_bytes = a.dim / 2;
  const std::uint8_t* kbase = static_cast<const std::uint8_t*>(a.k.values) + row * row_bytes;
  const float* ksc = a.k.scales + row * a.groups;
  const std::int8_t* qh = s.qarr + h * SETS * steps * 128;  // per (set, step): 64 bytes even, 64 odd
  const float* lanes = s.lanes + h * SETS * 32;
  const std::int32_t* corr = s.corr + h * SETS * a.groups * 16;
  const __m512i eight = _mm512_set1_epi8(0x08), low = _mm512_set1_epi8(0x0f);
  float* kcols = s.tile;  // K's scales of the run, one group per 16 floats
  transpose_run_scales(ksc, a.groups, rows, kcols);
  for_each_quad(kbase, row_bytes, rows, ahead, [&](std::int64_t r, const std::uint8_t* const* kr, __mmask8 mask) {
    __m512 tot[SETS];
    QUARRY_UNROLL
    for (int t = 0; t < SETS; ++t) tot[t] = _mm512_setzero_ps();
    for (std::int64_t g = 0; g < a.groups; ++g) {
      __m512i acc[SETS][4];
      QUARRY_UNROLL
      for (int t = 0; t < SETS; ++t)
        for (int i = 0; i < 4; ++i) acc[t][i] = _mm512_setzero_si512();
      for (std::int64_t st = g * gsteps; st < (g + 1) * gsteps; ++st) {
        __m512i lo[4], hi[4];
        QUARRY_UNROLL
        for (int i = 0; i < 4; ++i) {
          // (x ^ 8) & 15 of each nibble, one vpternlogd each (0x28: (a ^ b) & c).
          const __m512i x = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kr[i] + st * 16)));
          lo[i] = _mm512_ternarylogic_epi32(x, eight, low, 0x28);
          hi[i] = _mm512_ternarylogic_epi32(_mm512_srli_epi16(x, 4), eight, low, 0x28);
        }
        QUARRY_UNROLL
        for (int t = 0; t < SETS; ++t) {
          const __m512i qe = _mm512_loadu_si512(qh + (t * steps + st) * 128), qo = _mm512_loadu_si512(qh + (t * steps + st) * 128 + 64);
          QUARRY_UNROLL
          for (int i = 0; i < 4; ++i) acc[t][i] = dpbusd_inplace(dpbusd_inplace(acc[t][i], lo[i], qe), hi[i], qo);
        }
      }
      // The 4 tokens' scales of group g, token per element, in every lane.
      const __m512 sg = _mm512_broadcast_f32x4(_mm_loadu_ps(kcols + g * 16 + r));
      QUARRY_UNROLL
      for (int t = 0; t < SETS; ++t) {
        const __m512i z = _mm512_sub_epi32(lane_sums4_epi32<Arch>(acc[t][0], acc[t][1], acc[t][2], acc[t][3]),
                                           _mm512_loadu_si512(corr + (t * a.groups + g) * 16));
        tot[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(z), sg, tot[t]);
      }
    }
    for (int t = 0; t < SETS; ++t) store_lane_scores(a, s, h, t, j0 + r, n, mask, _mm512_mul_ps(tot[t], _mm512_loadu_ps(lanes + t * 32 + 16)));
  });
}

// The INT4 weights of a run (the contract) for the query heads of a kv head (a.group, numerators
// p + g * n) and each group c of V: wq[(g * groups + c) * 16 + r] and step[g * groups + c]; V's
// scales of the run (sv, [rows][groups]) are put one group per 16 floats in cols. The weights
// of 16 (head, group) pairs are quantized at once, their maxima by one transpose-max tree.
template <class Arch>
QUARRY_ALWAYS_INLINE void vnni_run_weights_i4(const DecodeChunkArgs& a, const float* p, std::int64_t n, const float* sv, std::int64_t rows,
                                              float* cols, std::uint8_t* wq, float* step) noexcept {
  const __mmask16 live = static_cast<__mmask16>((1u << rows) - 1);
  const __m512 zero = _mm512_setzero_ps(), top = _mm512_set1_ps(255.f);
  transpose_run_scales(sv, a.groups, rows, cols);
  const std::int64_t pairs = a.group * a.groups;
  for (std::int64_t first = 0; first < pairs; first += 16) {
    const std::int64_t count = std::min<std::int64_t>(16, pairs - first);
    __m512 w[16];
    std::int64_t g = first / a.groups, c = first % a.groups;  // pair first + i: head g, group c
    QUARRY_UNROLL
    for (int i = 0; i < 16; ++i) {
      w[i] = i < count ? _mm512_max_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(live, p + g * n), _mm512_loadu_ps(cols + c * 16)), zero)  // NaN, < 0: 0
                       : zero;
      if (++c == a.groups) {
        c = 0;
        ++g;
      }
    }
    const __m512 m = reduce16(w, [](__m512 x, __m512 y) { return _mm512_max_ps(x, y); });
    // As run_weights_i8: inv = 255 / m where 0 < m <= FLT_MAX, else 0; the step m / 255 where inv > 0.
    const __mmask16 ok = _mm512_cmp_ps_mask(m, zero, _CMP_GT_OQ) & _mm512_cmp_ps_mask(m, _mm512_set1_ps(std::numeric_limits<float>::max()), _CMP_LE_OQ);
    const __m512 inv = _mm512_maskz_div_ps(ok, top, m);  // > 0 exactly where ok (255 / FLT_MAX is normal)
    _mm512_mask_storeu_ps(step + first, static_cast<__mmask16>((1u << count) - 1), _mm512_maskz_div_ps(ok, m, top));
    alignas(64) float invs[16];
    _mm512_store_ps(invs, inv);
    // Four pairs at a time: min(255, w * inv) (a NaN, inf * 0, stays NaN and converts to INT_MIN),
    // to int32, then to u8 by unsigned saturation (INT_MIN: 0), 16 bytes per pair in order.
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    for (std::int64_t i = 0; i < count; i += 4) {
      __m512i c[4];
      QUARRY_UNROLL
      for (int k = 0; k < 4; ++k) c[k] = _mm512_cvtps_epi32(_mm512_min_ps(top, _mm512_mul_ps(w[i + k], _mm512_set1_ps(invs[i + k]))));
      // Lane L of the packs: elements 4 L .. 4 L + 3 of c[0], then of c[1], c[2], c[3].
      const __m512i bytes = _mm512_packus_epi16(_mm512_packus_epi32(c[0], c[1]), _mm512_packus_epi32(c[2], c[3]));
      const std::int64_t left = std::min<std::int64_t>(4, count - i);
      _mm512_mask_storeu_epi8(wq + (first + i) * 16, ~__mmask64{0} >> (64 - 16 * left), _mm512_permutexvar_epi32(order, bytes));
    }
  }
}

// acc[g] += the INT4 weighted V of the run of `rows` tokens from `row`, for the query heads of kv
// head h of the call (weights wq, step: vnni_run_weights_i4; shift: log2 of the group size).
// Blocks of 64 bytes (128 elements; the last may be 16, 32 or 48): four rows interleaved byte by
// byte as INT8's (int32 lane j of 128-bit lane L of register k: byte 16 L + 4 k + j of the four
// tokens), split into low nibbles (element 2 x) and high ones (2 x + 1), sign-extended by a table
// (vpshufb) and kept for all the heads. A head's weights sit one group per 128-bit lane (lane L
// holds elements 32 L .. 32 L + 31 of the block, within one group as groups are powers of two
// from 32), the quad's 4 bytes broadcast within the lane (vpshufd). Each run's sums, times the
// lanes' steps, are added to the output permuted: accumulator m = 2 k + h (h: high nibbles) of a
// block of nl lanes at 4 nl m, its lane L element j being element 32 L + 8 k + 2 j + h of the
// block, until unpermute_values_i4 ends the chunk.
template <class Arch>
QUARRY_ALWAYS_INLINE void vnni_values_i4(const DecodeChunkArgs& a, std::int64_t h, std::int64_t row, std::int64_t rows, const std::uint8_t* wq,
                                         const float* step, std::int64_t shift, const Ahead& ahead) noexcept {
  const std::int64_t row_bytes = a.dim / 2, quads = (rows + 3) / 4;
  const std::uint8_t* vbase = static_cast<const std::uint8_t*>(a.v.values) + row * row_bytes;
  std::int64_t at[16];  // row r of quad qd
  quad_row_offsets(rows, row_bytes, at);
  const __m512i low = _mm512_set1_epi8(0x0f);
  const __m512i table = _mm512_broadcast_i32x4(_mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1));
  const AheadSlices fetch(ahead, (row_bytes + 63) / 64);
  alignas(64) __m512i vals[4][8];
  for (std::int64_t b = 0; b < row_bytes; b += 64) {
    fetch.slice(b / 64);
    const std::int64_t bytes = std::min<std::int64_t>(64, row_bytes - b), nl = bytes / 16;  // dim % 32 == 0
    const __mmask64 cols = bytes == 64 ? ~__mmask64{0} : (__mmask64{1} << bytes) - 1;
    const std::uint8_t* vb = vbase + b;
    for (std::int64_t qd = 0; qd < quads; ++qd) {
      const __m512i x0 = _mm512_maskz_loadu_epi8(cols, vb + at[4 * qd]), x1 = _mm512_maskz_loadu_epi8(cols, vb + at[4 * qd + 1]);
      const __m512i x2 = _mm512_maskz_loadu_epi8(cols, vb + at[4 * qd + 2]), x3 = _mm512_maskz_loadu_epi8(cols, vb + at[4 * qd + 3]);
      __m512i v[4];
      interleave_rows4(x0, x1, x2, x3, v);
      QUARRY_UNROLL
      for (int k = 0; k < 4; ++k) {
        vals[qd][2 * k] = _mm512_shuffle_epi8(table, _mm512_and_si512(v[k], low));
        vals[qd][2 * k + 1] = _mm512_shuffle_epi8(table, _mm512_and_si512(_mm512_srli_epi16(v[k], 4), low));
      }
    }
    std::int64_t lane_group[4];  // lanes past the block repeat its last group (their values are 0)
    for (std::int64_t L = 0; L < 4; ++L) lane_group[L] = (2 * b + 32 * std::min(L, nl - 1)) >> shift;
    const __mmask16 part = static_cast<__mmask16>((1u << (4 * nl)) - 1);
    const bool consecutive = lane_group[3] == lane_group[0] + 3;  // groups of 32, a full block: one load
    // CNT query heads from g of the kv head.
    auto heads = [&](auto cnt, std::int64_t g) {
      constexpr int CNT = decltype(cnt)::value;
      __m512i wr[CNT], acc[CNT][8];
      QUARRY_UNROLL
      for (int c = 0; c < CNT; ++c) {
        const std::uint8_t* w = wq + (g + c) * a.groups * 16;
        if (consecutive) {
          wr[c] = _mm512_loadu_si512(w + lane_group[0] * 16);
        } else {
          __m512i x = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + lane_group[0] * 16)));
          x = _mm512_inserti32x4(x, _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + lane_group[1] * 16)), 1);
          x = _mm512_inserti32x4(x, _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + lane_group[2] * 16)), 2);
          wr[c] = _mm512_inserti32x4(x, _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + lane_group[3] * 16)), 3);
        }
        for (int m = 0; m < 8; ++m) acc[c][m] = _mm512_setzero_si512();
      }
      auto quad = [&](auto qc) {
        constexpr int qd = decltype(qc)::value;
        if (qd >= quads) return;
        QUARRY_UNROLL
        for (int c = 0; c < CNT; ++c) {
          const __m512i w = _mm512_shuffle_epi32(wr[c], static_cast<_MM_PERM_ENUM>(qd * 0x55));
          QUARRY_UNROLL
          for (int m = 0; m < 8; ++m) acc[c][m] = dpbusd_inplace(acc[c][m], w, vals[qd][m]);
        }
      };
      quad(std::integral_constant<int, 0>{});
      quad(std::integral_constant<int, 1>{});
      quad(std::integral_constant<int, 2>{});
      quad(std::integral_constant<int, 3>{});
      QUARRY_UNROLL
      for (int c = 0; c < CNT; ++c) {
        const float* sg = step + (g + c) * a.groups;
        const __m128 st4 = consecutive ? _mm_loadu_ps(sg + lane_group[0]) : _mm_setr_ps(sg[lane_group[0]], sg[lane_group[1]], sg[lane_group[2]], sg[lane_group[3]]);
        const __m512 st = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3), _mm512_castps128_ps512(st4));
        float* o = a.out + (h * a.group + g + c) * (a.dim + 2) + 2 + 2 * b;
        QUARRY_UNROLL
        for (int m = 0; m < 8; ++m) {
          float* om = o + 4 * nl * m;
          _mm512_mask_storeu_ps(om, part, _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[c][m]), st, _mm512_maskz_loadu_ps(part, om)));
        }
      }
    };
    std::int64_t g = 0;
    for (; g + 2 <= a.group; g += 2) heads(std::integral_constant<int, 2>{}, g);
    if (g < a.group) heads(std::integral_constant<int, 1>{}, g);
  }
}

// Puts the output elements of `heads` query heads back in order (vnni_values_i4 adds them permuted).
inline void unpermute_values_i4(float* out, std::int64_t heads, std::int64_t dim) noexcept {
  for (std::int64_t g = 0; g < heads; ++g) {
    float* o = out + g * (dim + 2) + 2;
    for (std::int64_t e0 = 0; e0 < dim; e0 += 128) {
      float* ob = o + e0;
      const std::int64_t nl = std::min<std::int64_t>(128, dim - e0) / 32;
      if (nl == 4) {
        // Interleaving accumulators 2 k and 2 k + 1 leaves p[q] lane L = elements 32 L + 4 q + (0 .. 3);
        // output register 2 L + u, lane v, is p[4 u + v] lane L.
        __m512 p[8];
        for (int k = 0; k < 4; ++k) {
          const __m512 lo = _mm512_loadu_ps(ob + 32 * k), hi = _mm512_loadu_ps(ob + 32 * k + 16);
          p[2 * k] = _mm512_unpacklo_ps(lo, hi);
          p[2 * k + 1] = _mm512_unpackhi_ps(lo, hi);
        }
        for (int u = 0; u < 2; ++u) {
          const __m512 x[4] = {p[4 * u], p[4 * u + 1], p[4 * u + 2], p[4 * u + 3]};
          __m512 y[4];
          transpose_lanes4(x, y);
          for (int L = 0; L < 4; ++L) _mm512_storeu_ps(ob + 16 * (2 * L + u), y[L]);
        }
      } else {
        alignas(64) float tmp[96];
        std::memcpy(tmp, ob, static_cast<std::size_t>(32 * nl) * sizeof(float));
        for (std::int64_t L = 0; L < nl; ++L)
          for (int k = 0; k < 4; ++k)
            for (int j = 0; j < 4; ++j)
              for (int hh = 0; hh < 2; ++hh) ob[32 * L + 8 * k + 2 * j + hh] = tmp[4 * nl * (2 * k + hh) + 4 * L + j];
      }
    }
  }
}

// An INT4 VNNI chunk once its query is laid out: scores(kv head h, first row, rows, index in the
// chunk, ahead) for each run and kv head, then the softmax and the weighted V (per run and kv
// head, the weights, in the tile: V's scales by group, then wq and the steps, 3 * dim floats at
// most; then the products), the elements back in order at the end. (Computing the next run's
// weights before this run's products, to overlap their chain of dependent steps, gained 2%:
// noise.)
template <class Arch, class Scores>
void vnni_chunk_i4(const DecodeChunkArgs& a, const KvI8Scratch& s, Scores&& scores) noexcept {
  const std::int64_t n = a.t1 - a.t0, heads = a.kv_heads * a.group;
  const std::int64_t row_bytes = a.dim / 2, scale_row_bytes = 4 * a.groups;
  fused_runs(a, a.k, row_bytes, scale_row_bytes, &a.v, scores);
  chunk_softmax<Arch>(s.scores, n, heads, a.out, a.dim);
  float* cols = s.tile;
  std::uint8_t* wq = reinterpret_cast<std::uint8_t*>(s.tile + a.groups * 16);
  float* step = s.tile + a.groups * 16 + a.group * a.groups * 4;
  const std::int64_t shift = log2_exact(a.dim / a.groups);
  fused_runs(a, a.v, row_bytes, scale_row_bytes, nullptr, [&](std::int64_t h, std::int64_t r, std::int64_t rows, std::int64_t j0, const Ahead& ah) {
    vnni_run_weights_i4<Arch>(a, s.scores + h * a.group * n + j0, n, a.v.scales + r * a.groups, rows, cols, wq, step);
    vnni_values_i4<Arch>(a, h, r, rows, wq, step, shift, ah);
  });
  unpermute_values_i4(a.out, heads, a.dim);
}

// 8 * the sum of the int8 query qi over each group of V's elements, to out[grp * stride].
QUARRY_ALWAYS_INLINE void group_sums_i4(const std::int8_t* qi, std::int64_t dim, std::int64_t groups, std::int32_t* out, std::int64_t stride) noexcept {
  const std::int64_t size = dim / groups;
  for (std::int64_t grp = 0; grp < groups; ++grp) {
    std::int32_t sum = 0;
    for (std::int64_t i = grp * size; i < (grp + 1) * size; ++i) sum += qi[i];
    out[grp * stride] = 8 * sum;
  }
}

template <class Arch, int SETS>
void decode_chunk_vnni_i4(const DecodeChunkArgs& a) noexcept {
  const std::int64_t n = a.t1 - a.t0, steps = a.dim / 32;
  const KvI8Scratch s = kv_i8_scratch(a);
  // The query heads: int8, arranged per (kv head, set, step) as 4 lanes of 16 even elements, then
  // 4 lanes of 16 odd ones; per lane, 8 * the sum of qi over each group and the factor step * scale.
  for_each_query_slot<Arch>(a, s, SETS, [&](std::int64_t h, std::int64_t set, std::int64_t lane, float step) {
    for (std::int64_t st = 0; st < steps; ++st) {
      std::int8_t* dst = s.qarr + ((h * SETS + set) * steps + st) * 128 + lane * 16;
      for (std::int64_t j = 0; j < 16; ++j) {
        dst[j] = s.qi[st * 32 + 2 * j];
        dst[64 + j] = s.qi[st * 32 + 2 * j + 1];
      }
    }
    std::int32_t* corr = s.corr + (h * SETS + set) * a.groups * 16 + lane * 4;
    group_sums_i4(s.qi, a.dim, a.groups, corr, 16);
    for (std::int64_t grp = 0; grp < a.groups; ++grp)
      for (int e = 1; e < 4; ++e) corr[grp * 16 + e] = corr[grp * 16];
    for (int e = 0; e < 4; ++e) s.lanes[(h * SETS + set) * 32 + 16 + lane * 4 + e] = step * a.scale;
  });
  vnni_chunk_i4<Arch>(a, s, [&](std::int64_t h, std::int64_t row, std::int64_t rows, std::int64_t j0, const Ahead& ahead) {
    vnni_scores_i4<Arch, SETS>(a, s, h, row, rows, j0, n, ahead);
  });
}

// INT4 scores for one or two query heads per kv head (G), as vnni_scores_tokens does for INT8:
// four tokens' 16 bytes (32 elements) in the four lanes, split into nibbles, the query head's
// even and odd elements broadcast; per group, each lane's four sums added within the lane, less 8
// * the group's sum of qi, times the tokens' scales of that group.
template <class Arch, int G>
QUARRY_ALWAYS_INLINE void vnni_scores_i4_tokens(const DecodeChunkArgs& a, const KvI8Scratch& s, std::int64_t h, std::int64_t row, std::int64_t rows,
                                                std::int64_t j0, std::int64_t n, const Ahead& ahead) noexcept {
  const std::int64_t steps = a.dim / 32, gsteps = steps / a.groups, row_bytes = a.dim / 2;
  const std::uint8_t* kbase = static_cast<const std::uint8_t*>(a.k.values) + row * row_bytes;
  const std::int8_t* qh = s.qarr + h * G * a.dim;              // per head and step: 16 even, 16 odd
  const std::int32_t* corr = s.corr + h * G * a.groups;        // per head and group
  const float* lanes = s.lanes + h * G * 2;                    // per head: -, the factor step * scale
  const __m512i eight = _mm512_set1_epi8(0x08), low = _mm512_set1_epi8(0x0f);
  const __m512i firsts = _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
  float* kcols = s.tile;  // K's scales of the run, one group per 16 floats
  transpose_run_scales(a.k.scales + row * a.groups, a.groups, rows, kcols);
  for_each_quad(kbase, row_bytes, rows, ahead, [&](std::int64_t r, const std::uint8_t* const* kr, __mmask8 mask) {
    __m128 tot[G];
    QUARRY_UNROLL
    for (int g = 0; g < G; ++g) tot[g] = _mm_setzero_ps();
    for (std::int64_t grp = 0; grp < a.groups; ++grp) {
      __m512i acc[G];
      QUARRY_UNROLL
      for (int g = 0; g < G; ++g) acc[g] = _mm512_setzero_si512();
      for (std::int64_t st = grp * gsteps; st < (grp + 1) * gsteps; ++st) {
        const __m512i k = four_rows_lanes(kr, st * 16);
        // (x ^ 8) & 15 of each nibble, as vnni_scores_i4.
        const __m512i lo = _mm512_ternarylogic_epi32(k, eight, low, 0x28), hi = _mm512_ternarylogic_epi32(_mm512_srli_epi16(k, 4), eight, low, 0x28);
        QUARRY_UNROLL
        for (int g = 0; g < G; ++g) {
          const std::int8_t* q = qh + g * a.dim + st * 32;
          const __m512i qe = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q)));
          const __m512i qo = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(q + 16)));
          acc[g] = dpbusd_inplace(dpbusd_inplace(acc[g], lo, qe), hi, qo);
        }
      }
      const __m128 sg = _mm_loadu_ps(kcols + grp * 16 + r);  // the 4 tokens' scales of the group
      QUARRY_UNROLL
      for (int g = 0; g < G; ++g) {
        __m512i x = _mm512_add_epi32(acc[g], _mm512_shuffle_epi32(acc[g], _MM_PERM_BADC));
        x = _mm512_add_epi32(x, _mm512_shuffle_epi32(x, _MM_PERM_CDAB));
        const __m128i z = _mm_sub_epi32(_mm512_castsi512_si128(_mm512_permutexvar_epi32(firsts, x)), _mm_set1_epi32(corr[g * a.groups + grp]));
        tot[g] = _mm_fmadd_ps(_mm_cvtepi32_ps(z), sg, tot[g]);
      }
    }
    QUARRY_UNROLL
    for (int g = 0; g < G; ++g) _mm_mask_storeu_ps(s.scores + (h * G + g) * n + j0 + r, mask, _mm_mul_ps(tot[g], _mm_set1_ps(lanes[2 * g + 1])));
  });
}

template <class Arch, int G>
void decode_chunk_vnni_i4_tokens(const DecodeChunkArgs& a) noexcept {
  const std::int64_t n = a.t1 - a.t0, steps = a.dim / 32;
  const KvI8Scratch s = kv_i8_scratch(a);
  // The query heads: int8, per head and step its 16 even elements, then its 16 odd ones; per
  // head, 8 * the sum of qi over each group and the factor step * scale.
  for (std::int64_t g = 0; g < a.kv_heads * G; ++g) {
    const float step = quantize_query_i8<Arch>(a.q + g * a.dim, a.dim, s.qi);
    std::int8_t* dst = s.qarr + g * a.dim;
    for (std::int64_t st = 0; st < steps; ++st)
      for (std::int64_t j = 0; j < 16; ++j) {
        dst[st * 32 + j] = s.qi[st * 32 + 2 * j];
        dst[st * 32 + 16 + j] = s.qi[st * 32 + 2 * j + 1];
      }
    group_sums_i4(s.qi, a.dim, a.groups, s.corr + g * a.groups, 1);
    s.lanes[2 * g + 1] = step * a.scale;
  }
  vnni_chunk_i4<Arch>(a, s, [&](std::int64_t h, std::int64_t row, std::int64_t rows, std::int64_t j0, const Ahead& ahead) {
    vnni_scores_i4_tokens<Arch, G>(a, s, h, row, rows, j0, n, ahead);
  });
}
#endif

template <class Arch>
void decode_chunk(const DecodeChunkArgs& a) noexcept {
#if defined(__x86_64__) || defined(_M_X64)
  if constexpr (simd::is_avx512<Arch> || simd::is_avx2<Arch>) {
    constexpr std::int64_t W = static_cast<std::int64_t>(xsimd::batch<float, Arch>::size);
    const std::int64_t group_size = a.dim / a.groups;
    const bool fits = a.dim % W == 0 && (a.elem != KvElem::i4 || (group_size % W == 0 && (group_size & (group_size - 1)) == 0));
    if constexpr (simd::is_avx512<Arch>) {
      if (a.elem == KvElem::i8 && a.dim % 32 == 0) {
        if (a.group == 1) return decode_chunk_vnni_i8_tokens<Arch, 1>(a);
        if (a.group == 2) return decode_chunk_vnni_i8_tokens<Arch, 2>(a);
        switch ((a.group + 3) / 4) {
          case 1: return decode_chunk_vnni_i8<Arch, 1>(a);
          case 2: return decode_chunk_vnni_i8<Arch, 2>(a);
          case 3: return decode_chunk_vnni_i8<Arch, 3>(a);
          case 4: return decode_chunk_vnni_i8<Arch, 4>(a);
          default: break;  // more than 16 query heads per kv head: the float kernel
        }
      }
      if (a.elem == KvElem::i4 && a.dim % 32 == 0 && group_size % 32 == 0 && (group_size & (group_size - 1)) == 0) {
        if (a.group == 1) return decode_chunk_vnni_i4_tokens<Arch, 1>(a);
        if (a.group == 2) return decode_chunk_vnni_i4_tokens<Arch, 2>(a);
        switch ((a.group + 3) / 4) {
          case 1: return decode_chunk_vnni_i4<Arch, 1>(a);
          case 2: return decode_chunk_vnni_i4<Arch, 2>(a);
          case 3: return decode_chunk_vnni_i4<Arch, 3>(a);
          case 4: return decode_chunk_vnni_i4<Arch, 4>(a);
          default: break;
        }
      }
    }
    if (fits) {
      switch (a.elem) {
        case KvElem::f32: return decode_chunk_fused<Arch, KvElem::f32>(a);
        case KvElem::f16: return decode_chunk_fused<Arch, KvElem::f16>(a);
        case KvElem::bf16: return decode_chunk_fused<Arch, KvElem::bf16>(a);
        case KvElem::i8: return decode_chunk_fused<Arch, KvElem::i8>(a);
        case KvElem::i4: return decode_chunk_fused<Arch, KvElem::i4>(a);
      }
    }
  }
#endif
  per_kv_head(a, [](const DecodeChunkArgs& one) { decode_chunk_tiled_one_head<Arch>(one); });
}

/// The KvKernels table for one arch tag.
template <class Arch>
constexpr KvKernels make_kv_kernels() noexcept {
  if constexpr (simd::is_scalar<Arch>) {
    return KvKernels{&ref_decode_chunk<Arch>, &ref_tile_gemm<Arch>, &ref_tile_softmax<Arch>};
  } else {
    return KvKernels{&decode_chunk<Arch>, &tile_gemm<Arch>, &tile_softmax<Arch>};
  }
}

}  // namespace quarry::detail::cpu_kernels
