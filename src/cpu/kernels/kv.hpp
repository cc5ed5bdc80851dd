// Bodies of the kv kernels (KvKernels in quarry/kv/detail/kv_kernels.hpp), templates on the arch
// tag; included only by src/cpu/<isa>.cpp (the rule of src/cpu/kernels/core.hpp holds).
//
// Decode chunk, SIMD: the chunk is walked in runs of at most 16 tokens that lie in one page (a
// run's rows of one head are contiguous). Each run of K is widened to an f32 tile once (f32 pages
// are read in place) and dotted with every query head of the GQA group, so K is read once per
// group, not once per head; then the scores of each head go through exp in SIMD; then each run of
// V is widened once and accumulated into every head's output, a block of 4 SIMD registers of the
// output at a time. Two passes over the chunk (scores, then V) keep the softmax exact without
// rescaling: the chunk's maximum is known before any exp.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

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
void ref_decode_chunk(const DecodeChunkArgs& a) noexcept {
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

template <class Arch>
void decode_chunk(const DecodeChunkArgs& a) noexcept {
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

  // Softmax numerators and sums per head.
  for (std::int64_t g = 0; g < a.group; ++g) {
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
    float* o = a.out + g * (dim + 2);
    o[0] = m;
    o[1] = sum;
    std::fill(o + 2, o + 2 + dim, 0.f);
  }

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
