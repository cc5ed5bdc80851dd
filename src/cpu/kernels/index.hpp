// Bodies of the index kernels (IndexKernels in quarry/index/detail/index_kernels.hpp), templates
// on the arch tag; included only by src/cpu/<isa>.cpp (the rule of src/cpu/kernels/core.hpp holds).
//
// Fast-scan: each 128-bit lane holds one sub-quantizer's 16-entry table and the 16 code bytes of
// a block for it; the low nibbles index vectors 0..15 and the high nibbles vectors 16..31, and one
// vpshufb per nibble half looks up 16 distances per lane. The uint8 results are summed as uint16
// without unpacking: a 16-bit word holds the distances of vectors 2w and 2w + 1 (even + 256 odd),
// so one accumulator adds whole words and another the odd ones (word >> 8); the even sums are
// words - 256 odds (exact mod 2^16, as FAISS's kernels do it: one AND per lookup fewer), and
// the two are interleaved once per block after the lanes (sub-quantizers) are added together.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cpu/kernels/core.hpp"
#include "quarry/index/detail/index_kernels.hpp"

namespace quarry::detail::cpu_kernels {

template <class Arch>
void ref_fastscan(const FastScanArgs& g) noexcept {
  const std::size_t bytes = g.m_pad * 16;
  for (std::size_t b = 0; b < g.nblocks; ++b) {
    const std::uint8_t* block = g.codes + b * bytes;
    std::uint32_t mask = 0;
    for (std::size_t v = 0; v < 32; ++v) {
      std::uint16_t sum = 0;
      for (std::size_t m = 0; m < g.m_pad; ++m) {
        const std::uint8_t byte = block[m * 16 + v % 16];
        const unsigned code = v < 16 ? (byte & 0xfu) : (byte >> 4);
        sum = static_cast<std::uint16_t>(sum + g.lut[m * 16 + code]);
      }
      if (g.out) g.out[b * 32 + v] = sum;
      if (sum < g.threshold) mask |= std::uint32_t{1} << v;
    }
    if (g.mask) g.mask[b] = mask;
  }
}

/// x rounded to the nearest integer, ties to even, for 0 <= x < 2^22: adding 2^23 leaves no
/// fraction bits, so the float addition does the rounding (as cvtps2dq does under the default
/// rounding mode), without a libm call.
template <class Arch>
QUARRY_ALWAYS_INLINE std::uint32_t round_small(float x) noexcept {
  return static_cast<std::uint32_t>(x + 8388608.f) - 8388608u;
}

template <class Arch>
void ref_fastscan_lut(const FastScanLutArgs& g) noexcept {
  auto t = [&](std::size_t i) __attribute__((always_inline)) { return g.a ? g.a[i] + g.alpha * g.b[i] : g.alpha * g.b[i]; };
  float range = 0.f;
  for (std::size_t j = 0; j < g.m; ++j) {
    float lo = t(j * 16), hi = lo;
    for (std::size_t c = 0; c < 16; ++c) {
      const float v = t(j * 16 + c);
      if (g.table) g.table[j * 16 + c] = v;
      lo = v < lo ? v : lo;
      hi = v > hi ? v : hi;
    }
    g.row_min[j] = lo;
    range = hi - lo > range ? hi - lo : range;
  }
  const float scale = range > 0.f ? 255.f / range : 1.f;
  *g.scale = scale;
  for (std::size_t j = 0; j < g.m; ++j)
    for (std::size_t c = 0; c < 16; ++c) {
      // round_small needs 0 <= x < 2^22. A table with an infinite entry (a hostile index, a huge
      // query) makes x NaN (inf * 0) or inf; those give 0, as cvtps2dq (integer indefinite) and
      // the unsigned packs of the SIMD kernels do, and x >= 255 gives 255 as their saturation.
      const float x = (t(j * 16 + c) - g.row_min[j]) * scale;
      const std::uint32_t q = !(x >= 0.f) || x >= 2147483648.f ? 0u : x >= 255.f ? 255u : round_small<Arch>(x);
      g.lut[j * 16 + c] = static_cast<std::uint8_t>(q < 255u ? q : 255u);
    }
  for (std::size_t i = g.m * 16; i < (g.m + 1) / 2 * 32; ++i) g.lut[i] = 0;
}

#if defined(__x86_64__) || defined(_M_X64)

/// The 32 sums of one block from the four accumulators (each: 8 uint16 per 128-bit lane), written
/// out and compared with the threshold. AVX2 lanes: 2; the AVX-512 body reduces to these first.
template <class Arch>
QUARRY_ALWAYS_INLINE void fastscan_finish(__m256i even_lo, __m256i odd_lo, __m256i even_hi, __m256i odd_hi,
                                          const FastScanArgs& g, std::size_t b) noexcept {
  auto lanes = [](__m256i v) __attribute__((always_inline)) {
    return _mm_add_epi16(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  };
  const __m128i e0 = lanes(even_lo), o0 = lanes(odd_lo), e1 = lanes(even_hi), o1 = lanes(odd_hi);
  // vectors 0..7, 8..15, 16..23, 24..31
  const __m256i d0 = _mm256_set_m128i(_mm_unpackhi_epi16(e0, o0), _mm_unpacklo_epi16(e0, o0));
  const __m256i d1 = _mm256_set_m128i(_mm_unpackhi_epi16(e1, o1), _mm_unpacklo_epi16(e1, o1));
  if (g.out) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(g.out + b * 32), d0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(g.out + b * 32 + 16), d1);
  }
  if (g.mask) {
    if (g.threshold == 0) {
      g.mask[b] = 0;
      return;
    }
    // d < t  <=>  min(d, t - 1) == d (unsigned)
    const __m256i t1 = _mm256_set1_epi16(static_cast<short>(g.threshold - 1));
    const __m256i c0 = _mm256_cmpeq_epi16(_mm256_min_epu16(d0, t1), d0);
    const __m256i c1 = _mm256_cmpeq_epi16(_mm256_min_epu16(d1, t1), d1);
    // packs interleaves 128-bit lanes: bytes [c0.lo c1.lo c0.hi c1.hi]; put them back in order
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packs_epi16(c0, c1), 0xd8);
    g.mask[b] = static_cast<std::uint32_t>(_mm256_movemask_epi8(packed));
  }
}

template <class Arch>
void fastscan_avx2(const FastScanArgs& g) noexcept {
  const __m256i nib = _mm256_set1_epi8(0x0f);
  const std::size_t bytes = g.m_pad * 16;
  for (std::size_t b = 0; b < g.nblocks; ++b) {
    const std::uint8_t* block = g.codes + b * bytes;
    __m256i word_lo = _mm256_setzero_si256(), odd_lo = word_lo, word_hi = word_lo, odd_hi = word_lo;
    for (std::size_t m = 0; m < g.m_pad; m += 2) {
      const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + m * 16));
      const __m256i lut = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g.lut + m * 16));
      const __m256i r_lo = _mm256_shuffle_epi8(lut, _mm256_and_si256(c, nib));
      const __m256i r_hi = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(c, 4), nib));
      word_lo = _mm256_add_epi16(word_lo, r_lo);
      odd_lo = _mm256_add_epi16(odd_lo, _mm256_srli_epi16(r_lo, 8));
      word_hi = _mm256_add_epi16(word_hi, r_hi);
      odd_hi = _mm256_add_epi16(odd_hi, _mm256_srli_epi16(r_hi, 8));
    }
    fastscan_finish<Arch>(_mm256_sub_epi16(word_lo, _mm256_slli_epi16(odd_lo, 8)), odd_lo,
                          _mm256_sub_epi16(word_hi, _mm256_slli_epi16(odd_hi, 8)), odd_hi, g, b);
  }
}

// kSteps: m_pad / 4 when known at compile time (the table then stays in kSteps registers for all
// blocks, as FAISS's kernels templated on the sub-quantizer count), 0 for any m_pad.
template <class Arch, std::size_t kSteps>
void fastscan_avx512_body(const FastScanArgs& g) noexcept {
  const __m512i nib = _mm512_set1_epi8(0x0f);
  const std::size_t bytes = g.m_pad * 16, m4 = g.m_pad / 4 * 4;
  // 256-bit halves of a 512-bit accumulator, added: lanes (0 + 2, 1 + 3)
  auto fold = [](__m512i v) __attribute__((always_inline)) {
    return _mm256_add_epi16(_mm512_castsi512_si256(v), _mm512_extracti64x4_epi64(v, 1));
  };
  __m512i luts[kSteps > 0 ? kSteps : 1];
  if constexpr (kSteps > 0)
    for (std::size_t i = 0; i < kSteps; ++i) luts[i] = _mm512_loadu_si512(g.lut + i * 64);
  for (std::size_t b = 0; b < g.nblocks; ++b) {
    const std::uint8_t* block = g.codes + b * bytes;
    __m512i word_lo = _mm512_setzero_si512(), odd_lo = word_lo, word_hi = word_lo, odd_hi = word_lo;
    auto step = [&](__m512i c, __m512i lut) __attribute__((always_inline)) {
      const __m512i r_lo = _mm512_shuffle_epi8(lut, _mm512_and_si512(c, nib));
      const __m512i r_hi = _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(c, 4), nib));
      word_lo = _mm512_add_epi16(word_lo, r_lo);
      odd_lo = _mm512_add_epi16(odd_lo, _mm512_srli_epi16(r_lo, 8));
      word_hi = _mm512_add_epi16(word_hi, r_hi);
      odd_hi = _mm512_add_epi16(odd_hi, _mm512_srli_epi16(r_hi, 8));
    };
    if constexpr (kSteps > 0) {
      for (std::size_t i = 0; i < kSteps; ++i) step(_mm512_loadu_si512(block + i * 64), luts[i]);
    } else {
      std::size_t m = 0;
      for (; m < m4; m += 4) step(_mm512_loadu_si512(block + m * 16), _mm512_loadu_si512(g.lut + m * 16));
      if (m < g.m_pad) {  // a last pair of sub-quantizers in the low 256 bits
        const __mmask64 half = 0xffffffffull;  // zero table in the upper lanes: they add 0
        step(_mm512_maskz_loadu_epi8(half, block + m * 16), _mm512_maskz_loadu_epi8(half, g.lut + m * 16));
      }
    }
    const __m256i o_lo = fold(odd_lo), o_hi = fold(odd_hi);
    fastscan_finish<Arch>(_mm256_sub_epi16(fold(word_lo), _mm256_slli_epi16(o_lo, 8)), o_lo,
                          _mm256_sub_epi16(fold(word_hi), _mm256_slli_epi16(o_hi, 8)), o_hi, g, b);
  }
}

template <class Arch>
void fastscan_avx512(const FastScanArgs& g) noexcept {
  switch (g.m_pad) {  // the common PQ shapes: M = 8, 16, 32, 64
    case 8: fastscan_avx512_body<Arch, 2>(g); return;
    case 16: fastscan_avx512_body<Arch, 4>(g); return;
    case 32: fastscan_avx512_body<Arch, 8>(g); return;
    case 64: fastscan_avx512_body<Arch, 16>(g); return;
    default: fastscan_avx512_body<Arch, 0>(g); return;
  }
}

/// Element 4 L + i of the result is op over all 16 elements of t[L + 4 i] (t: 16 registers): a
/// butterfly that folds two registers into one per step (15 shuffle pairs and ops instead of 16
/// horizontal reductions).
template <class Arch, class Op>
QUARRY_ALWAYS_INLINE __m512 reduce16_avx512(const __m512* t, Op op) noexcept {
  __m512 p[8], q[4], r[2];
  for (int i = 0; i < 8; ++i)  // lanes 0, 1: register 2i; 2, 3: register 2i + 1
    p[i] = op(_mm512_shuffle_f32x4(t[2 * i], t[2 * i + 1], 0x44), _mm512_shuffle_f32x4(t[2 * i], t[2 * i + 1], 0xee));
  for (int i = 0; i < 4; ++i)  // lane L: register 4i + L
    q[i] = op(_mm512_shuffle_f32x4(p[2 * i], p[2 * i + 1], 0x88), _mm512_shuffle_f32x4(p[2 * i], p[2 * i + 1], 0xdd));
  for (int i = 0; i < 2; ++i)  // lane L: register 8i + L in elements 0, 1; 8i + 4 + L in 2, 3
    r[i] = op(_mm512_shuffle_ps(q[2 * i], q[2 * i + 1], 0x44), _mm512_shuffle_ps(q[2 * i], q[2 * i + 1], 0xee));
  return op(_mm512_shuffle_ps(r[0], r[1], 0x88), _mm512_shuffle_ps(r[0], r[1], 0xdd));
}

/// The dword permutation (for permutexvar) that moves element 4 (r % 4) + r / 4 to r: a 4 x 4
/// transpose, which puts reduce16_avx512's results in register order.
template <class Arch>
QUARRY_ALWAYS_INLINE __m512i transpose4x4_index() noexcept {
  return _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
}

/// inner_products' tile of 4 queries by 4 rows on AVX-512, its 16 sums reduced together by the
/// butterfly (16 separate reductions cost more than the multiply-adds at d = 128).
template <class Arch>
QUARRY_ALWAYS_INLINE void inner_products_tile_avx512(const float* rows, std::size_t d, std::size_t ld, const float* x, std::size_t ldx,
                                                     float* out, std::size_t ldo) noexcept {
  __m512 acc[16];  // query q, row r: acc[4 q + r]
  for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_ps();
  std::size_t t = 0;
  for (; t + 16 <= d; t += 16) {
    __m512 rv[4];
    for (std::size_t r = 0; r < 4; ++r) rv[r] = _mm512_loadu_ps(rows + r * ld + t);
    for (std::size_t q = 0; q < 4; ++q) {
      const __m512 xv = _mm512_loadu_ps(x + q * ldx + t);
      for (std::size_t r = 0; r < 4; ++r) acc[4 * q + r] = _mm512_fmadd_ps(rv[r], xv, acc[4 * q + r]);
    }
  }
  auto add = [](__m512 a, __m512 b) __attribute__((always_inline)) { return _mm512_add_ps(a, b); };
  // element 4 r + q of the butterfly is (q, r); transposed, lane q holds query q's four rows
  const __m512 sums = _mm512_permutexvar_ps(transpose4x4_index<Arch>(), reduce16_avx512<Arch>(acc, add));
  alignas(64) float s[16];
  _mm512_store_ps(s, sums);
  for (std::size_t q = 0; q < 4; ++q)
    for (std::size_t r = 0; r < 4; ++r) out[q * ldo + r] = s[4 * q + r] + ref_dot_f32<Arch>(rows + r * ld + t, x + q * ldx + t, d - t);
}

// Tables: one row (16 entries) is one 512-bit register or two 256-bit ones; cvtps2dq rounds to
// nearest even as round_small does, and (t - min) * scale is a subtraction then a
// multiplication, which no compiler fuses, so the quantized entries equal the reference's.
template <class Arch, bool kHasA, bool kWriteTable>
void fastscan_lut_avx512_body(const FastScanLutArgs& g) noexcept {
  // the operands in locals: the uint8 stores may alias anything, and would make every loop
  // iteration reload them from g
  const float* const pa = g.a;
  const float* const pb = g.b;
  float* const table = g.table;
  std::uint8_t* const lut = g.lut;
  float* const row_min = g.row_min;
  const std::size_t m = g.m;
  const __m512 alpha = _mm512_set1_ps(g.alpha);
  auto row = [&](std::size_t j) __attribute__((always_inline)) {
    const __m512 b = _mm512_mul_ps(alpha, _mm512_loadu_ps(pb + j * 16));
    if constexpr (kHasA) return _mm512_add_ps(_mm512_loadu_ps(pa + j * 16), b);
    else return b;
  };
  auto min_op = [](__m512 x, __m512 y) __attribute__((always_inline)) { return _mm512_min_ps(x, y); };
  auto max_op = [](__m512 x, __m512 y) __attribute__((always_inline)) { return _mm512_max_ps(x, y); };
  // row r is element 4 (r % 4) + r / 4 of the butterfly's result (the same 4 x 4 transpose
  // orders the packed quantized rows below)
  const __m512i order = transpose4x4_index<Arch>();
  __m512 range = _mm512_setzero_ps();
  std::size_t j = 0;
  for (; j + 16 <= m; j += 16) {
    __m512 t[16];
    for (std::size_t i = 0; i < 16; ++i) {
      t[i] = row(j + i);
      if constexpr (kWriteTable) _mm512_storeu_ps(table + (j + i) * 16, t[i]);
    }
    const __m512 lo = reduce16_avx512<Arch>(t, min_op), hi = reduce16_avx512<Arch>(t, max_op);
    range = _mm512_max_ps(range, _mm512_sub_ps(hi, lo));
    _mm512_storeu_ps(row_min + j, _mm512_permutexvar_ps(order, lo));
  }
  for (; j < m; ++j) {
    const __m512 t = row(j);
    if constexpr (kWriteTable) _mm512_storeu_ps(table + j * 16, t);
    const float lo = _mm512_reduce_min_ps(t);
    row_min[j] = lo;
    range = _mm512_max_ps(range, _mm512_sub_ps(_mm512_set1_ps(_mm512_reduce_max_ps(t)), _mm512_set1_ps(lo)));
  }
  const float r = _mm512_reduce_max_ps(range);
  const float scale = r > 0.f ? 255.f / r : 1.f;
  *g.scale = scale;
  const __m512 s = _mm512_set1_ps(scale);
  auto quantized = [&](std::size_t r) __attribute__((always_inline)) {  // int32, 0..256
    const __m512 t = kWriteTable ? _mm512_loadu_ps(table + r * 16) : row(r);
    return _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_sub_ps(t, _mm512_set1_ps(row_min[r])), s));
  };
  for (j = 0; j + 4 <= m; j += 4) {
    // four rows into one register by saturating packs (which also clamp to 255): 128-bit lane L
    // then holds entries 4L..4L+3 of rows j..j+3, a 4 x 4 transpose of dwords away from row order
    const __m512i w01 = _mm512_packus_epi32(quantized(j), quantized(j + 1));
    const __m512i w23 = _mm512_packus_epi32(quantized(j + 2), quantized(j + 3));
    _mm512_storeu_si512(lut + j * 16, _mm512_permutexvar_epi32(order, _mm512_packus_epi16(w01, w23)));
  }
  for (; j < m; ++j) {
    const __m512i q = _mm512_min_epi32(quantized(j), _mm512_set1_epi32(255));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(lut + j * 16), _mm512_cvtepi32_epi8(q));
  }
  if (m % 2) _mm_storeu_si128(reinterpret_cast<__m128i*>(lut + m * 16), _mm_setzero_si128());
}

template <class Arch>
void fastscan_lut_avx512(const FastScanLutArgs& g) noexcept {
  if (g.a) {
    if (g.table) fastscan_lut_avx512_body<Arch, true, true>(g);
    else fastscan_lut_avx512_body<Arch, true, false>(g);
  } else {
    if (g.table) fastscan_lut_avx512_body<Arch, false, true>(g);
    else fastscan_lut_avx512_body<Arch, false, false>(g);
  }
}

template <class Arch>
void fastscan_lut_avx2(const FastScanLutArgs& g) noexcept {
  const __m256 alpha = _mm256_set1_ps(g.alpha);
  auto half = [&](std::size_t i) __attribute__((always_inline)) {
    const __m256 b = _mm256_mul_ps(alpha, _mm256_loadu_ps(g.b + i));
    return g.a ? _mm256_add_ps(_mm256_loadu_ps(g.a + i), b) : b;
  };
  // horizontal min / max of 8 floats, in every element
  auto hmin = [](__m256 v) __attribute__((always_inline)) {
    v = _mm256_min_ps(v, _mm256_permute2f128_ps(v, v, 1));
    v = _mm256_min_ps(v, _mm256_shuffle_ps(v, v, 0x4e));
    return _mm256_min_ps(v, _mm256_shuffle_ps(v, v, 0xb1));
  };
  auto hmax = [](__m256 v) __attribute__((always_inline)) {
    v = _mm256_max_ps(v, _mm256_permute2f128_ps(v, v, 1));
    v = _mm256_max_ps(v, _mm256_shuffle_ps(v, v, 0x4e));
    return _mm256_max_ps(v, _mm256_shuffle_ps(v, v, 0xb1));
  };
  __m256 range = _mm256_setzero_ps();
  for (std::size_t j = 0; j < g.m; ++j) {
    const __m256 t0 = half(j * 16), t1 = half(j * 16 + 8);
    if (g.table) {
      _mm256_storeu_ps(g.table + j * 16, t0);
      _mm256_storeu_ps(g.table + j * 16 + 8, t1);
    }
    const __m256 lo = hmin(_mm256_min_ps(t0, t1)), hi = hmax(_mm256_max_ps(t0, t1));
    g.row_min[j] = _mm256_cvtss_f32(lo);
    range = _mm256_max_ps(range, _mm256_sub_ps(hi, lo));
  }
  const float r = _mm256_cvtss_f32(range);
  const float scale = r > 0.f ? 255.f / r : 1.f;
  *g.scale = scale;
  const __m256 s = _mm256_set1_ps(scale);
  for (std::size_t j = 0; j < g.m; ++j) {
    const __m256 lo = _mm256_set1_ps(g.row_min[j]);
    const __m256i q0 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_sub_ps(half(j * 16), lo), s));
    const __m256i q1 = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_sub_ps(half(j * 16 + 8), lo), s));
    // packs saturate: int32 -> uint16 (values 0..256) -> uint8 (255 at most); undo the lane interleave
    const __m256i w = _mm256_permute4x64_epi64(_mm256_packus_epi32(q0, q1), 0xd8);
    const __m128i b = _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(g.lut + j * 16), b);
  }
  if (g.m % 2) _mm_storeu_si128(reinterpret_cast<__m128i*>(g.lut + g.m * 16), _mm_setzero_si128());
}

#endif  // x86-64

template <class Arch>
void fastscan_lut(const FastScanLutArgs& g) noexcept {
#if defined(__x86_64__) || defined(_M_X64)
  if constexpr (simd::is_avx512<Arch>) {
    fastscan_lut_avx512<Arch>(g);
    return;
  } else if constexpr (simd::is_avx2<Arch>) {
    fastscan_lut_avx2<Arch>(g);
    return;
  }
#endif
  ref_fastscan_lut<Arch>(g);
}

template <class Arch>
void ref_inner_products(const float* rows, std::size_t n, std::size_t d, std::size_t ld, const float* x, std::size_t nx, std::size_t ldx,
                        float* out) noexcept {
  for (std::size_t q = 0; q < nx; ++q)
    for (std::size_t i = 0; i < n; ++i) out[q * n + i] = ref_dot_f32<Arch>(rows + i * ld, x + q * ldx, d);
}

template <class Arch>
void ref_codeword_products(const float* x, const float* ct, std::size_t m, std::size_t dsub, std::size_t ksub, float* out) noexcept {
  for (std::size_t j = 0; j < m; ++j)
    for (std::size_t c = 0; c < ksub; ++c) {
      float s = 0.f;
      for (std::size_t t = 0; t < dsub; ++t) s += x[j * dsub + t] * ct[(j * dsub + t) * ksub + c];
      out[j * ksub + c] = s;
    }
}

/// R rows by QB queries: each row register serves QB multiply-adds and each query register R.
template <class Arch, std::size_t R, std::size_t QB>
QUARRY_ALWAYS_INLINE void inner_products_tile(const float* rows, std::size_t d, std::size_t ld, const float* x, std::size_t ldx,
                                              float* out, std::size_t ldo) noexcept {
  using B = xsimd::batch<float, Arch>;
  constexpr std::size_t W = B::size;
  B acc[QB][R];
  for (std::size_t q = 0; q < QB; ++q)
    for (std::size_t r = 0; r < R; ++r) acc[q][r] = B(0.f);
  std::size_t t = 0;
  for (; t + W <= d; t += W) {
    B rv[R];
    for (std::size_t r = 0; r < R; ++r) rv[r] = B::load_unaligned(rows + r * ld + t);
    for (std::size_t q = 0; q < QB; ++q) {
      const B xv = B::load_unaligned(x + q * ldx + t);
      for (std::size_t r = 0; r < R; ++r) acc[q][r] = xsimd::fma(rv[r], xv, acc[q][r]);
    }
  }
  for (std::size_t q = 0; q < QB; ++q)
    for (std::size_t r = 0; r < R; ++r)
      out[q * ldo + r] = simd::reduce_add(acc[q][r]) + ref_dot_f32<Arch>(rows + r * ld + t, x + q * ldx + t, d - t);
}

/// Tiles of 4 queries by 4 rows (AVX-512: 16 accumulators of its 32 registers; 2 rows with the
/// 16 registers of AVX2 and NEON), so each row is read from memory once per 4 queries.
template <class Arch>
void inner_products(const float* rows, std::size_t n, std::size_t d, std::size_t ld, const float* x, std::size_t nx, std::size_t ldx,
                    float* out) noexcept {
  if constexpr (simd::is_scalar<Arch>) {
    ref_inner_products<Arch>(rows, n, d, ld, x, nx, ldx, out);
  } else {
    constexpr std::size_t R = xsimd::batch<float, Arch>::size == 16 ? 4 : 2;
    std::size_t q = 0;
    for (; q + 4 <= nx; q += 4) {
      std::size_t i = 0;
      for (; i + R <= n; i += R) {
#if defined(__x86_64__) || defined(_M_X64)
        if constexpr (simd::is_avx512<Arch>) {
          inner_products_tile_avx512<Arch>(rows + i * ld, d, ld, x + q * ldx, ldx, out + q * n + i, n);
          continue;
        }
#endif
        inner_products_tile<Arch, R, 4>(rows + i * ld, d, ld, x + q * ldx, ldx, out + q * n + i, n);
      }
      for (; i < n; ++i) inner_products_tile<Arch, 1, 4>(rows + i * ld, d, ld, x + q * ldx, ldx, out + q * n + i, n);
    }
    for (; q < nx; ++q) {
      std::size_t i = 0;
      for (; i + 4 <= n; i += 4) inner_products_tile<Arch, 4, 1>(rows + i * ld, d, ld, x + q * ldx, ldx, out + q * n + i, n);
      for (; i < n; ++i) out[q * n + i] = dot_f32<Arch>(rows + i * ld, x + q * ldx, d);
    }
  }
}

/// Along the ksub codewords: one broadcast of x and one multiply-add per register of them.
template <class Arch>
void codeword_products(const float* x, const float* ct, std::size_t m, std::size_t dsub, std::size_t ksub, float* out) noexcept {
  if constexpr (simd::is_scalar<Arch>) {
    ref_codeword_products<Arch>(x, ct, m, dsub, ksub, out);
  } else {
    using B = xsimd::batch<float, Arch>;
    constexpr std::size_t W = B::size;  // divides 16, so ksub
    for (std::size_t j = 0; j < m; ++j) {
      const float* xj = x + j * dsub;
      const float* cj = ct + j * dsub * ksub;
      for (std::size_t c = 0; c < ksub; c += W) {
        B acc = B(xj[0]) * B::load_unaligned(cj + c);
        for (std::size_t t = 1; t < dsub; ++t) acc = xsimd::fma(B(xj[t]), B::load_unaligned(cj + t * ksub + c), acc);
        acc.store_unaligned(out + j * ksub + c);
      }
    }
  }
}

template <class Arch>
void fastscan(const FastScanArgs& g) noexcept {
#if defined(__x86_64__) || defined(_M_X64)
  if constexpr (simd::is_avx512<Arch>) {
    fastscan_avx512<Arch>(g);
    return;
  } else if constexpr (simd::is_avx2<Arch>) {
    fastscan_avx2<Arch>(g);
    return;
  }
#endif
  ref_fastscan<Arch>(g);
}

/// The IndexKernels table for one arch tag.
template <class Arch>
constexpr IndexKernels make_index_kernels() noexcept {
  if constexpr (simd::is_scalar<Arch>)
    return IndexKernels{&ref_fastscan<Arch>, &ref_fastscan_lut<Arch>, &ref_inner_products<Arch>, &ref_codeword_products<Arch>};
  else return IndexKernels{&fastscan<Arch>, &fastscan_lut<Arch>, &inner_products<Arch>, &codeword_products<Arch>};
}

}  // namespace quarry::detail::cpu_kernels
