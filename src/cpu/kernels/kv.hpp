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
#include <limits>
#include <type_traits>

#include "cpu/kernels/core.hpp"
#include "quarry/kv/detail/kv_kernels.hpp"

namespace quarry::detail::cpu_kernels {

// ---- Scalar reference: token by token, each row widened to f32 and used for every head. ----

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
      const float* s = pages.scales + row * groups;
      const std::int64_t group = dim / groups;
      for (std::int64_t i = 0; i < dim; ++i) {
        const int nibble = (i % 2 == 0) ? (p[i / 2] & 0xf) : (p[i / 2] >> 4);
        out[i] = static_cast<float>((nibble ^ 8) - 8) * s[i / group];
      }
      break;
    }
  }
}

template <class Arch>
void ref_decode_chunk_one_head(const DecodeChunkArgs& a) noexcept {
  const std::int64_t n = a.t1 - a.t0, dim = a.dim;
  float* scores = a.scratch;        // [group][n]
  float* row = a.scratch + a.group * n;  // [dim]
  auto row_of = [&](std::int64_t t) { return (a.pages[t / a.page_size] * a.n_kv + a.kv_head) * a.page_size + t % a.page_size; };
  for (std::int64_t t = a.t0; t < a.t1; ++t) {
    ref_kv_row<Arch>(a.elem, a.k, row_of(t), dim, a.groups, row);
    for (std::int64_t g = 0; g < a.group; ++g) {
      float dot = 0.f;
      for (std::int64_t i = 0; i < dim; ++i) dot += a.q[g * dim + i] * row[i];
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
  for (std::int64_t t = a.t0; t < a.t1; ++t) {
    ref_kv_row<Arch>(a.elem, a.v, row_of(t), dim, a.groups, row);
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
        const float s = pages.scales[row + r];
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
        const float* s = pages.scales + (row + r) * groups;
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
              _mm512_storeu_ps(out + i, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(x)), _mm512_set1_ps(s[i / group])));
            }
        } else if constexpr (simd::is_avx2<Arch>) {
          if (group % 8 == 0)
            for (; i + 8 <= dim; i += 8) {
              std::int32_t four;
              __builtin_memcpy(&four, pr + i / 2, 4);
              const __m128i x = nibbles(_mm_cvtsi32_si128(four));
              _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(x)), _mm256_set1_ps(s[i / group])));
            }
        }
#endif
        for (; i < dim; ++i) {
          const int nibble = (i % 2 == 0) ? (pr[i / 2] & 0xf) : (pr[i / 2] >> 4);
          out[i] = static_cast<float>((nibble ^ 8) - 8) * s[i / group];
        }
      }
      return tile;
    }
  }
  return tile;
}

// The softmax numerators of each head's n scores (in place, max subtracted) and, per head, the
// chunk's partial result header: out[g * (dim + 2)] = max, [+1] = sum of exps, then dim zeros.
template <class Arch>
QUARRY_ALWAYS_INLINE void chunk_softmax(float* scores, std::int64_t n, std::int64_t heads, float* out, std::int64_t dim) noexcept {
  using B = xsimd::batch<float, Arch>;
  constexpr std::int64_t W = static_cast<std::int64_t>(B::size);
  for (std::int64_t g = 0; g < heads; ++g) {
    float* s = scores + g * n;
    B vmax(-std::numeric_limits<float>::infinity());
    std::int64_t j = 0;
    for (; j + W <= n; j += W) vmax = xsimd::max(vmax, B::load_unaligned(s + j));
    float lanes[W];
    vmax.store_unaligned(lanes);
    float m = lanes[0];
    for (std::int64_t l = 1; l < W; ++l) m = std::max(m, lanes[l]);
    for (; j < n; ++j) m = std::max(m, s[j]);
    const B bm(m);
    B vsum(0.f);
    j = 0;
    for (; j + W <= n; j += W) {
      const B e = xsimd::exp(B::load_unaligned(s + j) - bm);
      e.store_unaligned(s + j);
      vsum += e;
    }
    float sum = simd::reduce_add(vsum);
    for (; j < n; ++j) {
      s[j] = std::exp(s[j] - m);
      sum += s[j];
    }
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
  float* scores = a.scratch;                   // [group][n]
  float* tile = a.scratch + a.group * n;       // [16][dim]
  constexpr std::int64_t kRun = 16;

  // Calls f(first token, rows, f32 rows) for each run of tokens in one page.
  auto for_each_run = [&](const KvPagesRef& pages, auto&& f) {
    for (std::int64_t t = a.t0; t < a.t1;) {
      const std::int64_t slot = t % a.page_size;
      const std::int64_t rows = std::min({kRun, a.page_size - slot, a.t1 - t});
      const std::int64_t row = (a.pages[t / a.page_size] * a.n_kv + a.kv_head) * a.page_size + slot;
      f(t, rows, kv_rows_f32<Arch>(a.elem, pages, row, rows, dim, a.groups, tile));
      t += rows;
    }
  };

  // Pass 1: scores, K read once for the group.
  for_each_run(a.k, [&](std::int64_t t, std::int64_t rows, const float* k) {
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t g = 0; g < a.group; ++g)
        scores[g * n + (t - a.t0) + r] = dot_f32<Arch>(a.q + g * dim, k + r * dim, static_cast<std::size_t>(dim)) * a.scale;
  });

  chunk_softmax<Arch>(scores, n, a.group, a.out, dim);

  // Pass 2: acc[g] += p[g][t] v[t], V read once for the group; 4 registers of acc at a time.
  for_each_run(a.v, [&](std::int64_t t, std::int64_t rows, const float* v) {
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
      for (; i + W <= dim; i += W) {
        B c = B::load_unaligned(acc + i);
        for (std::int64_t r = 0; r < rows; ++r) c = xsimd::fma(B(p[r]), B::load_unaligned(v + r * dim + i), c);
        c.store_unaligned(acc + i);
      }
      for (; i < dim; ++i)
        for (std::int64_t r = 0; r < rows; ++r) acc[i] += p[r] * v[r * dim + i];
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
// Scores: for two tokens at a time, one accumulator per (head, token) runs over the head's
// dimension blocks (a widened block of K is used by every head of the sub-group), and the
// per-token accumulators of up to W tokens are reduced together (sums_of: one transpose-add for
// W sums). INT8 rows' scales multiply the sums (a scale per token); INT4 group scales multiply the
// widened block. Weighted V: blocks of 2 registers of the output per head, over the run's tokens,
// with p (times the INT8 row scale) broadcast. Needs dim % W == 0 and, for INT4, group % W == 0.

// W values of row `row` from element i, widened to f32 (INT4 times its group's scale).
template <class Arch, KvElem E>
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
    const __m128i low = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
    const float s = pages.scales[row * groups + (i >> group_shift)];
    if constexpr (simd::is_avx512<Arch>) {
      const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p));
      const __m128i x = _mm_sub_epi8(_mm_xor_si128(_mm_unpacklo_epi8(_mm_and_si128(b, low), _mm_and_si128(_mm_srli_epi16(b, 4), low)), eight), eight);
      return B(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(x)), _mm512_set1_ps(s)));
    } else {
      std::int32_t four;
      __builtin_memcpy(&four, p, 4);
      const __m128i b = _mm_cvtsi32_si128(four);
      const __m128i x = _mm_sub_epi8(_mm_xor_si128(_mm_unpacklo_epi8(_mm_and_si128(b, low), _mm_and_si128(_mm_srli_epi16(b, 4), low)), eight), eight);
      return B(_mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(x)), _mm256_set1_ps(s)));
    }
  }
}

// The sums of 8 AVX registers, in one register: three rounds of pairwise horizontal adds.
QUARRY_ALWAYS_INLINE __m256 sums_of_8(const __m256* v) noexcept {
  const __m256 a = _mm256_hadd_ps(_mm256_hadd_ps(v[0], v[1]), _mm256_hadd_ps(v[2], v[3]));
  const __m256 b = _mm256_hadd_ps(_mm256_hadd_ps(v[4], v[5]), _mm256_hadd_ps(v[6], v[7]));
  // a = [v0..v3 low-half sums | v0..v3 high-half sums], b the same for v4..v7.
  return _mm256_add_ps(_mm256_permute2f128_ps(a, b, 0x20), _mm256_permute2f128_ps(a, b, 0x31));
}

// The sums of W registers, in one register (lane j: the sum of v[j]'s lanes).
template <class Arch>
QUARRY_ALWAYS_INLINE xsimd::batch<float, Arch> sums_of(const xsimd::batch<float, Arch>* v) noexcept {
  if constexpr (simd::is_avx512<Arch>) {
    __m256 half[16];
    for (int j = 0; j < 16; ++j) {
      const __m512 z = v[j];
      half[j] = _mm256_add_ps(_mm512_castps512_ps256(z), _mm512_extractf32x8_ps(z, 1));
    }
    return _mm512_insertf32x8(_mm512_castps256_ps512(sums_of_8(half)), sums_of_8(half + 8), 1);
  } else {
    __m256 r[8];
    for (int j = 0; j < 8; ++j) r[j] = v[j];
    return sums_of_8(r);
  }
}

// Scores of heads [g0, g0 + S) for the run of `rows` tokens whose first row is `row`, written to
// scores[g * n + j0 + r].
template <class Arch, KvElem E, int S>
QUARRY_ALWAYS_INLINE void fused_scores(const DecodeChunkArgs& a, std::int64_t g0, std::int64_t row, std::int64_t rows, std::int64_t j0,
                                       std::int64_t n, std::int64_t shift, float* scores) noexcept {
  using B = xsimd::batch<float, Arch>;
  constexpr std::int64_t W = static_cast<std::int64_t>(B::size);
  B part[S][16];
  std::int64_t r = 0;
  for (; r + 2 <= rows; r += 2) {
    B acc[S][2];
    for (int s = 0; s < S; ++s) acc[s][0] = acc[s][1] = B(0.f);
    for (std::int64_t i = 0; i < a.dim; i += W) {
      const B k0 = kv_block<Arch, E>(a.k, row + r, a.dim, i, a.groups, shift);
      const B k1 = kv_block<Arch, E>(a.k, row + r + 1, a.dim, i, a.groups, shift);
      for (int s = 0; s < S; ++s) {
        const B qb = B::load_unaligned(a.q + (g0 + s) * a.dim + i);
        acc[s][0] = xsimd::fma(qb, k0, acc[s][0]);
        acc[s][1] = xsimd::fma(qb, k1, acc[s][1]);
      }
    }
    for (int s = 0; s < S; ++s) {
      part[s][r] = acc[s][0];
      part[s][r + 1] = acc[s][1];
    }
  }
  for (; r < rows; ++r) {
    B acc[S];
    for (int s = 0; s < S; ++s) acc[s] = B(0.f);
    for (std::int64_t i = 0; i < a.dim; i += W) {
      const B k0 = kv_block<Arch, E>(a.k, row + r, a.dim, i, a.groups, shift);
      for (int s = 0; s < S; ++s) acc[s] = xsimd::fma(B::load_unaligned(a.q + (g0 + s) * a.dim + i), k0, acc[s]);
    }
    for (int s = 0; s < S; ++s) part[s][r] = acc[s];
  }
  for (std::int64_t c = 0; c < rows; c += W) {
    const std::int64_t m = std::min(W, rows - c);
    alignas(64) float row_scale[16];
    for (std::int64_t j = 0; j < W; ++j) row_scale[j] = j < m ? (E == KvElem::i8 ? a.k.scales[row + c + j] : 1.f) * a.scale : 0.f;
    for (int s = 0; s < S; ++s) {
      // (quarry's own transpose-add: xsimd 8.1's AVX-512 haddp gives wrong sums.)
      for (std::int64_t j = m; j < W; ++j) part[s][c + j] = B(0.f);
      const B sums = sums_of<Arch>(&part[s][c]) * B::load_aligned(row_scale);
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

// acc[g] += p[g][j0 + r] v[row + r] for heads [g0, g0 + S).
template <class Arch, KvElem E, int S>
QUARRY_ALWAYS_INLINE void fused_values(const DecodeChunkArgs& a, std::int64_t g0, std::int64_t row, std::int64_t rows, std::int64_t j0,
                                       std::int64_t n, std::int64_t shift, const float* probs) noexcept {
  using B = xsimd::batch<float, Arch>;
  constexpr std::int64_t W = static_cast<std::int64_t>(B::size);
  float p[S][16];
  for (int s = 0; s < S; ++s)
    for (std::int64_t r = 0; r < rows; ++r)
      p[s][r] = probs[(g0 + s) * n + j0 + r] * (E == KvElem::i8 ? a.v.scales[row + r] : 1.f);
  std::int64_t i = 0;
  for (; i + 2 * W <= a.dim; i += 2 * W) {
    B acc[S][2];
    for (int s = 0; s < S; ++s) {
      float* o = a.out + (g0 + s) * (a.dim + 2) + 2 + i;
      acc[s][0] = B::load_unaligned(o);
      acc[s][1] = B::load_unaligned(o + W);
    }
    for (std::int64_t r = 0; r < rows; ++r) {
      const B v0 = kv_block<Arch, E>(a.v, row + r, a.dim, i, a.groups, shift);
      const B v1 = kv_block<Arch, E>(a.v, row + r, a.dim, i + W, a.groups, shift);
      for (int s = 0; s < S; ++s) {
        const B pr(p[s][r]);
        acc[s][0] = xsimd::fma(pr, v0, acc[s][0]);
        acc[s][1] = xsimd::fma(pr, v1, acc[s][1]);
      }
    }
    for (int s = 0; s < S; ++s) {
      float* o = a.out + (g0 + s) * (a.dim + 2) + 2 + i;
      acc[s][0].store_unaligned(o);
      acc[s][1].store_unaligned(o + W);
    }
  }
  for (; i < a.dim; i += W) {
    B acc[S];
    for (int s = 0; s < S; ++s) acc[s] = B::load_unaligned(a.out + (g0 + s) * (a.dim + 2) + 2 + i);
    for (std::int64_t r = 0; r < rows; ++r) {
      const B v0 = kv_block<Arch, E>(a.v, row + r, a.dim, i, a.groups, shift);
      for (int s = 0; s < S; ++s) acc[s] = xsimd::fma(B(p[s][r]), v0, acc[s]);
    }
    for (int s = 0; s < S; ++s) acc[s].store_unaligned(a.out + (g0 + s) * (a.dim + 2) + 2 + i);
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

template <class Arch, KvElem E>
void decode_chunk_fused(const DecodeChunkArgs& a) noexcept {
  using B = xsimd::batch<float, Arch>;
  constexpr std::int64_t W = static_cast<std::int64_t>(B::size);
  const std::int64_t n = a.t1 - a.t0;
  const std::int64_t heads = a.kv_heads * a.group;  // query heads of the call
  float* scores = a.scratch;  // [heads][n]
  std::int64_t shift = 0;     // INT4: log2 of the group size (a power of two here)
  if constexpr (E == KvElem::i4)
    while ((std::int64_t{1} << shift) < a.dim / a.groups) ++shift;
  // Bytes of one row (values only; scales are few and close together).
  constexpr std::int64_t kElemBits = E == KvElem::f32 ? 32 : (E == KvElem::f16 || E == KvElem::bf16) ? 16 : E == KvElem::i8 ? 8 : 4;
  const std::int64_t row_bytes = a.dim * kElemBits / 8;
  // Calls f(first row, rows, first index in the chunk) per run of <= 16 tokens in one page, and
  // first asks for the run after next to be fetched: runs of scattered pages are 4 KiB islands
  // the hardware prefetchers do not cross, so each would otherwise start with a DRAM miss.
  auto for_each_run = [&](const KvPagesRef& pages, auto&& f) {
    auto run_at = [&](std::int64_t t, std::int64_t& row, std::int64_t& rows) {
      const std::int64_t slot = t % a.page_size;
      rows = std::min({std::int64_t{16}, a.page_size - slot, a.t1 - t});
      row = (a.pages[t / a.page_size] * a.n_kv + a.kv_head) * a.page_size + slot;
    };
    auto prefetch = [&](std::int64_t t) {  // the run in every kv head of the call: one span
      if (t >= a.t1) return;
      std::int64_t row, rows;
      run_at(t, row, rows);
      const char* p = static_cast<const char*>(pages.values) + row * row_bytes;
      const std::int64_t bytes = ((a.kv_heads - 1) * a.page_size + rows) * row_bytes;
      for (std::int64_t b = 0; b < bytes; b += 64) __builtin_prefetch(p + b);
    };
    std::int64_t ahead = a.t0;  // the first token not yet asked for
    for (int k = 0; k < 2 && ahead < a.t1; ++k) {
      prefetch(ahead);
      std::int64_t row, rows;
      run_at(ahead, row, rows);
      ahead += rows;
    }
    for (std::int64_t t = a.t0; t < a.t1;) {
      std::int64_t row, rows;
      run_at(t, row, rows);
      if (ahead < a.t1) {
        prefetch(ahead);
        std::int64_t arow, arows;
        run_at(ahead, arow, arows);
        ahead += arows;
      }
      f(row, rows, t - a.t0);
      t += rows;
    }
  };
  // Each run is swept across the call's kv heads (a page's heads lie side by side).
  for_each_run(a.k, [&](std::int64_t row, std::int64_t rows, std::int64_t j0) {
    for (std::int64_t h = 0; h < a.kv_heads; ++h)
      for_each_subgroup(a.group, [&](auto sub, std::int64_t g0) {
        fused_scores<Arch, E, decltype(sub)::value>(a, h * a.group + g0, row + h * a.page_size, rows, j0, n, shift, scores);
      });
  });
  chunk_softmax<Arch>(scores, n, heads, a.out, a.dim);
  for_each_run(a.v, [&](std::int64_t row, std::int64_t rows, std::int64_t j0) {
    for (std::int64_t h = 0; h < a.kv_heads; ++h)
      for_each_subgroup(a.group, [&](auto sub, std::int64_t g0) {
        fused_values<Arch, E, decltype(sub)::value>(a, h * a.group + g0, row + h * a.page_size, rows, j0, n, shift, scores);
      });
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
    return KvKernels{&ref_decode_chunk<Arch>, &ref_tile_gemm<Arch>};
  } else {
    return KvKernels{&decode_chunk<Arch>, &tile_gemm<Arch>};
  }
}

}  // namespace quarry::detail::cpu_kernels
