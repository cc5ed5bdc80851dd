// Bodies of the quant kernels (QuantKernels in quarry/quant/detail/quant_kernels.hpp), templates
// on the arch tag. Included only by src/cpu/<isa>.cpp, each compiled with its own ISA's flags;
// the rule of src/cpu/kernels/core.hpp holds here too: everything is a template on Arch, an
// intrinsic, or always_inline.
//
// The int8 products, exact in int32 (modulo 2^32) on every ISA:
//   AVX-512 VNNI  vpdpbusd multiplies u8 by s8. The weights (any s8, -128 included) become
//                 u8 by w ^ 0x80 = w + 128, the activations stay s8 (-127..127), and
//                 sum (w + 128) a = sum w a + 128 sum a: the row sum of the activations, known
//                 from their quantization, removes the shift. No per-weight-row sums are needed.
//   AVX2          vpmaddubsw (u8 x s8, pairs summed into int16 with saturation) on |w| and
//                 sign(a, w): |w| <= 128 and |a| <= 127, so a pair is at most 2 * 128 * 127 =
//                 32512 < 32767 and never saturates (it would with a + 128 as the u8 operand:
//                 2 * 255 * 127). vpmaddwd by ones then widens the pairs to int32.
//   scalar, NEON  the reference loop.
// W4A32 (int4 per_group weights x f32 activations): nibbles unpacked with shifts and masks into
// column order, widened to int32, converted to float, minus the zero point (exact: small
// integers), multiplied into per-group float accumulators lane by lane; at the end of a group
// the lane accumulators are scaled by the group's scale (one fma per lane) into running totals,
// which are summed across lanes once per output. Each output's operation sequence does not
// depend on the tile it is computed in, so one ISA is bit-identical across tilings and threads.
// W4A8: the activations are laid out per 128-column chunk as even then odd columns, matching the
// low and high nibbles of 64 packed weight bytes, so each vpdpbusd lane holds the exact dot of 8
// consecutive columns; the lanes are scaled by their group's scale and accumulated in float lane
// by lane (QuantKernels::gemm_w4_s8 defines the order), with no horizontal sum per group.
// Decode (one activation row) streams the weights once, several rows in flight sharing each
// activation load. A weight row of 4 KiB is one page, where the hardware prefetchers stop, so
// the kernels prefetch the next tile's rows into L2 (prefetcht1) one step ahead: a plain
// in-row prefetch into L1 reached ~0.65 of a streaming read on Zen 4, this ~1.0. Prefill (many
// rows) tiles MR activation rows x NR weight rows in registers over blocks of weight rows sized
// for L2.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "cpu/kernels/core.hpp"
#include "quarry/quant/detail/quant_kernels.hpp"

namespace quarry::detail::cpu_kernels {

// ---- Shared pieces (identical on every ISA) ----

/// The per-row quantization step from the largest |x| as raw bits (sign cleared): writes the
/// scale and returns 127 / amax, or 0 when the row quantizes to zeros (see QuantKernels).
template <class Arch>
QUARRY_ALWAYS_INLINE float activation_inv_scale(std::uint32_t amax_bits, float* scale) noexcept {
  if (amax_bits >= 0x7f800000u) {  // an infinity or a NaN somewhere in the row
    *scale = std::numeric_limits<float>::quiet_NaN();
    return 0.f;
  }
  const float amax = bits_to_float<Arch>(amax_bits);
  const float inv = 127.f / amax;
  if (!(inv <= std::numeric_limits<float>::max())) {  // amax == 0, or so small that 127 / amax overflows
    *scale = 0.f;
    return 0.f;
  }
  *scale = amax / 127.f;
  return inv;
}

/// q = clamp(round_even(x * inv), -127, 127), the reference rounding.
template <class Arch>
QUARRY_ALWAYS_INLINE int quantize_activation(float x, float inv) noexcept {
  const int q = static_cast<int>(std::nearbyint(x * inv));
  return q < -127 ? -127 : (q > 127 ? 127 : q);
}

/// The float epilogue of output (i, j) from its exact int32 accumulator. One explicit fused
/// multiply-add (vfmadd with FMA, a correctly rounded fmaf without), so no compiler contraction
/// can make one ISA, or one tile shape, round differently from another: outputs are bit-exact.
template <class Arch>
QUARRY_ALWAYS_INLINE void store_output(const QGemmArgs& g, std::size_t i, std::size_t j, std::int32_t acc) noexcept {
  const float scale = g.a_scale[i] * g.w_scale[j * g.w_scale_stride];
  g.y[i * g.ldy + j] = std::fma(static_cast<float>(acc), scale, g.bias ? g.bias[j] : 0.f);
}

// ---- Scalar reference ----

template <class Arch>
void ref_quantize_rest(const float* x, std::size_t k, float inv, std::int8_t* q, std::uint32_t* sum) noexcept {
  for (std::size_t i = 0; i < k; ++i) {
    const int v = quantize_activation<Arch>(x[i], inv);
    q[i] = static_cast<std::int8_t>(v);
    *sum += static_cast<std::uint32_t>(v);
  }
}

template <class Arch>
float ref_quantize_row_s8(const float* x, std::size_t k, std::int8_t* q, std::int32_t* q_sum) noexcept {
  std::uint32_t amax_bits = 0;
  for (std::size_t i = 0; i < k; ++i) {
    const std::uint32_t b = float_to_bits<Arch>(x[i]) & 0x7fffffffu;
    amax_bits = b > amax_bits ? b : amax_bits;
  }
  float scale;
  const float inv = activation_inv_scale<Arch>(amax_bits, &scale);
  std::uint32_t sum = 0;
  if (inv == 0.f) {
    for (std::size_t i = 0; i < k; ++i) q[i] = 0;
  } else {
    ref_quantize_rest<Arch>(x, k, inv, q, &sum);
  }
  *q_sum = static_cast<std::int32_t>(sum);
  return scale;
}

/// sum a[i] * w[i] modulo 2^32, the weights read as int8 (Unsigned: as uint8).
template <class Arch, bool Unsigned = false>
QUARRY_ALWAYS_INLINE std::int32_t ref_dot_s8(const std::int8_t* a, const std::int8_t* w, std::size_t k) noexcept {
  std::uint32_t s = 0;  // unsigned: wraps modulo 2^32 exactly as the SIMD int32 lanes do
  for (std::size_t i = 0; i < k; ++i) {
    const std::int32_t wi = Unsigned ? std::int32_t{static_cast<std::uint8_t>(w[i])} : std::int32_t{w[i]};
    s += static_cast<std::uint32_t>(std::int32_t{a[i]} * wi);
  }
  return static_cast<std::int32_t>(s);
}

template <class Arch>
void ref_gemm_s8(const QGemmArgs& g) noexcept {
  for (std::size_t i = 0; i < g.m; ++i)
    for (std::size_t j = 0; j < g.n; ++j) {
      if (!g.w_zero) {
        store_output<Arch>(g, i, j, ref_dot_s8<Arch>(g.a + i * g.lda, g.w + j * g.ldw, g.k));
        continue;
      }
      // sum a * (w - z) = sum a * w - z * sum a, modulo 2^32
      const std::uint32_t dot = static_cast<std::uint32_t>(ref_dot_s8<Arch, true>(g.a + i * g.lda, g.w + j * g.ldw, g.k));
      const std::uint32_t z = g.w_zero[j * g.w_scale_stride];
      store_output<Arch>(g, i, j, static_cast<std::int32_t>(dot - z * static_cast<std::uint32_t>(g.a_sum[i])));
    }
}


// ---- W4A32: int4 per_group weights x f32 activations ----

/// Scale `at` of an array of f32 scales, or of f16 bits (f16), as a float.
template <class Arch>
QUARRY_ALWAYS_INLINE float scale_at(const void* scales, bool f16, std::size_t at) noexcept {
  if (!f16) return static_cast<const float*>(scales)[at];
  const std::uint16_t h = static_cast<const std::uint16_t*>(scales)[at];
#if defined(__F16C__)
  if constexpr (!simd::is_scalar<Arch>) return _cvtsh_ss(h);  // exact, as the bit conversion
#endif
  return bits_to_float<Arch>(f16_bits_to_f32_bits(h));
}

/// The scale of weight row j's group grp, as a float.
template <class Arch>
QUARRY_ALWAYS_INLINE float w4_scale(const Q4GemmArgs& g, std::size_t j, std::size_t grp) noexcept {
  return scale_at<Arch>(g.w_scale, g.scale_f16, j * g.ld_scale + grp);
}
/// The zero point subtracted from the nibble u: an asymmetric group's own, or 8 for symmetric int4
/// whose nibbles are read as u = nibble ^ 8 = q + 8 (0..15).
template <class Arch>
QUARRY_ALWAYS_INLINE int w4_zero(const Q4GemmArgs& g, std::size_t j, std::size_t grp) noexcept {
  return g.w_zero ? g.w_zero[j * g.ld_scale + grp] : 8;
}

template <class Arch>
void ref_gemm_w4_f32(const Q4GemmArgs& g) noexcept {
  const unsigned flip = g.w_zero ? 0u : 8u;
  const std::size_t groups = g.group ? g.k / g.group : 0;
  for (std::size_t i = 0; i < g.m; ++i) {
    const float* x = g.x + i * g.ldx;
    for (std::size_t j = 0; j < g.n; ++j) {
      const std::uint8_t* w = g.w + j * g.ldw;
      float total = 0.f;
      for (std::size_t grp = 0; grp < groups; ++grp) {
        const int z = w4_zero<Arch>(g, j, grp);
        float acc = 0.f;
        for (std::size_t c = grp * g.group; c < (grp + 1) * g.group; ++c) {
          const int u = static_cast<int>(((w[c >> 1] >> ((c & 1) * 4)) & 0xfu) ^ flip);
          acc += static_cast<float>(u - z) * x[c];
        }
        total += acc * w4_scale<Arch>(g, j, grp);
      }
      g.y[i * g.ldy + j] = std::fma(total, g.output_scale, g.bias ? g.bias[j] : 0.f);
    }
  }
}

/// Activation (i, c) of a W4A8 operand: a chunk's even columns first, then its odd ones.
template <class Arch>
QUARRY_ALWAYS_INLINE int w4a8_activation(const Q4GemmArgs& g, std::size_t i, std::size_t c) noexcept {
  const std::size_t r = c % 128;
  return g.a[i * g.lda + (c - r) + (r & 1) * 64 + r / 2];
}

/// The fixed summation tree of the 16 W4A8 lanes (lane i + 8, then + 4, + 2, + 1).
template <class Arch>
QUARRY_ALWAYS_INLINE float w4a8_tree(float* t) noexcept {
  for (int width = 8; width >= 1; width /= 2)
    for (int l = 0; l < width; ++l) t[l] = t[l] + t[l + width];
  return t[0];
}

template <class Arch>
void ref_gemm_w4_s8(const Q4GemmArgs& g) noexcept {
  const unsigned flip = g.w_zero ? 0u : 8u;
  for (std::size_t i = 0; i < g.m; ++i) {
    for (std::size_t j = 0; j < g.n; ++j) {
      const std::uint8_t* w = g.w + j * g.ldw;
      float t[16] = {};
      for (std::size_t b = 0; b < g.k / 8; ++b) {
        const std::size_t grp = 8 * b / g.group;
        const int z = w4_zero<Arch>(g, j, grp);
        std::int32_t dot = 0;  // |dot| <= 8 * 255 * 127: exact
        for (std::size_t c = 8 * b; c < 8 * b + 8; ++c) {
          const int u = static_cast<int>(((w[c >> 1] >> ((c & 1) * 4)) & 0xfu) ^ flip);
          dot += (u - z) * w4a8_activation<Arch>(g, i, c);
        }
        t[b % 16] = std::fma(static_cast<float>(dot), w4_scale<Arch>(g, j, grp), t[b % 16]);
      }
      g.y[i * g.ldy + j] = std::fma(w4a8_tree<Arch>(t), g.a_scale[i], g.bias ? g.bias[j] : 0.f);
    }
  }
}

/// Weight (j, c) of a grouped int8 operand: int8, or uint8 when the weights have zero points.
template <class Arch>
QUARRY_ALWAYS_INLINE int s8g_weight(const Q4GemmArgs& g, std::size_t j, std::size_t c) noexcept {
  const std::uint8_t b = g.w[j * g.ldw + c];
  return g.w_zero ? int{b} : int{static_cast<std::int8_t>(b)};
}

template <class Arch>
void ref_gemm_s8_grouped(const Q4GemmArgs& g) noexcept {
  for (std::size_t i = 0; i < g.m; ++i) {
    for (std::size_t j = 0; j < g.n; ++j) {
      float t[16] = {};
      for (std::size_t b = 0; b < g.k / 4; ++b) {
        const std::size_t grp = 4 * b / g.group;
        const int z = g.w_zero ? g.w_zero[j * g.ld_scale + grp] : 0;
        std::int32_t dot = 0;  // |dot| <= 4 * 255 * 127: exact
        for (std::size_t c = 4 * b; c < 4 * b + 4; ++c) dot += (s8g_weight<Arch>(g, j, c) - z) * g.a[i * g.lda + c];
        t[b % 16] = std::fma(static_cast<float>(dot), w4_scale<Arch>(g, j, grp), t[b % 16]);
      }
      g.y[i * g.ldy + j] = std::fma(w4a8_tree<Arch>(t), g.a_scale[i], g.bias ? g.bias[j] : 0.f);
    }
  }
}

// ---- Weights in panels of 16 rows (QuantizedPanels): per group (W4A8, Q8_0's W8A8), W8A8 ----

template <class Arch>
void ref_gemm_grouped_panels(const Q4PanelArgs& g) noexcept {
  const std::size_t groups = g.k / g.group, panels = (g.n + 15) / 16;
  const bool int4 = g.bits == 4;
  for (std::size_t i = 0; i < g.m; ++i) {
    const std::int8_t* a = g.a + i * g.lda;
    for (std::size_t j = 0; j < g.n; ++j) {
      const std::size_t p = j / 16, r = j % 16;
      float t = 0.f;
      for (std::size_t gr = 0; gr < groups; ++gr) {
        const std::size_t at = panel_group_slot(p, panels, groups, gr) + r;
        const int z = g.w_zero ? int{g.w_zero[at]} : (int4 ? 8 : 0);
        std::int32_t dot = 0;  // |dot| <= 128 * 255 * 127: exact
        for (std::size_t c = gr * g.group; c < (gr + 1) * g.group; ++c) {
          int u;  // the stored value: an unsigned nibble, an int8, or (asymmetric) a uint8
          if (int4) {
            const std::uint8_t byte = g.w[panel_block_offset(p, panels, g.k / 8, c / 8) + r * 4 + c % 4];
            u = (c % 8) < 4 ? (byte & 0xf) : (byte >> 4);
          } else {
            const std::uint8_t byte = g.w[panel_block_offset(p, panels, g.k / 4, c / 4) + r * 4 + c % 4];
            u = g.w_zero ? int{byte} : int{static_cast<std::int8_t>(byte)};
          }
          dot += (u - z) * a[c];
        }
        t = std::fma(static_cast<float>(dot), scale_at<Arch>(g.w_scale, g.scale_f16, at), t);
      }
      g.y[i * g.ldy + j] = std::fma(t, g.a_scale[i], g.bias ? g.bias[j] : 0.f);
    }
  }
}

/// The W8A8 product on int8 panels: gemm_s8's sums and epilogue, the weights read from panels.
template <class Arch>
void ref_gemm_s8_panels(const QGemmArgs& g) noexcept {
  const std::size_t panels = (g.n + 15) / 16, blocks = (g.k + 3) / 4;
  const auto* w = reinterpret_cast<const std::uint8_t*>(g.w);
  for (std::size_t i = 0; i < g.m; ++i)
    for (std::size_t j = 0; j < g.n; ++j) {
      const std::size_t p = j / 16, r = j % 16;
      std::uint32_t dot = 0;  // modulo 2^32, as gemm_s8
      for (std::size_t c = 0; c < g.k; ++c) {
        const std::uint8_t b = w[panel_block_offset(p, panels, blocks, c / 4) + r * 4 + c % 4];
        const std::int32_t wi = g.w_zero ? std::int32_t{b} : std::int32_t{static_cast<std::int8_t>(b)};
        dot += static_cast<std::uint32_t>(std::int32_t{g.a[i * g.lda + c]} * wi);
      }
      if (g.w_zero) dot -= std::uint32_t{g.w_zero[j]} * static_cast<std::uint32_t>(g.a_sum[i]);
      store_output<Arch>(g, i, j, static_cast<std::int32_t>(dot));
    }
}

// ---- SIMD bodies ----

#if defined(__x86_64__) || defined(_M_X64)

/// Sums of four int32 vectors' lanes: {sum a, sum b, sum c, sum d}, wrapping like the lanes.
template <class Arch>
QUARRY_ALWAYS_INLINE __m128i reduce4_epi32(__m512i a, __m512i b, __m512i c, __m512i d) noexcept {
  const __m512i abcd = lane_sums4_epi32<Arch>(a, b, c, d);
  const __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(abcd), _mm512_extracti64x4_epi64(abcd, 1));
  return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

template <class Arch>
QUARRY_ALWAYS_INLINE std::int32_t hsum_epi32_256(__m256i v) noexcept {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
  return _mm_cvtsi128_si32(s);
}

/// AVX-512 VNNI tile: MR activation rows x NR weight rows, over all of K.
template <class Arch, int MR, int NR, bool Prefetch>
QUARRY_ALWAYS_INLINE void tile_vnni(const QGemmArgs& g, std::size_t i0, std::size_t j0, std::size_t pf_rows) noexcept {
  __m512i acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_si512();
  // int8 weights become uint8 by w ^ 0x80 = w + 128; uint8 (asymmetric) weights are used as they are.
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(g.w_zero ? 0 : 0x80));
  const std::int8_t* a = g.a + i0 * g.lda;
  const std::int8_t* w = g.w + j0 * g.ldw;
  const std::size_t k = g.k;
  std::size_t kk = 0;
  for (; kk + 64 <= k; kk += 64) {
    __m512i wv[NR];
    for (int j = 0; j < NR; ++j) {
      if constexpr (Prefetch)
        if (static_cast<std::size_t>(j) < pf_rows) _mm_prefetch(reinterpret_cast<const char*>(w + (j + NR) * g.ldw + kk), _MM_HINT_T1);
      wv[j] = _mm512_xor_si512(_mm512_loadu_si512(w + j * g.ldw + kk), flip);
    }
    for (int i = 0; i < MR; ++i) {
      const __m512i av = _mm512_loadu_si512(a + i * g.lda + kk);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], wv[j], av);
    }
  }
  if (kk < k) {  // masked tail: absent activation bytes are 0, so the shifted weights add nothing
    const __mmask64 mask = _bzhi_u64(~std::uint64_t{0}, static_cast<unsigned>(k - kk));
    __m512i wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = _mm512_xor_si512(_mm512_maskz_loadu_epi8(mask, w + j * g.ldw + kk), flip);
    for (int i = 0; i < MR; ++i) {
      const __m512i av = _mm512_maskz_loadu_epi8(mask, a + i * g.lda + kk);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], wv[j], av);
    }
  }
  for (int i = 0; i < MR; ++i) {
    // sum u * a - offset * sum a, offset 128 (the flip) or the zero point, modulo 2^32
    const std::uint32_t a_sum = static_cast<std::uint32_t>(g.a_sum[i0 + i]);
    for (int j = 0; j < NR; j += 4) {
      alignas(16) std::uint32_t s[4];
      const __m512i z = _mm512_setzero_si512();
      _mm_store_si128(reinterpret_cast<__m128i*>(s),
                      reduce4_epi32<Arch>(acc[i][j], j + 1 < NR ? acc[i][j + 1] : z, j + 2 < NR ? acc[i][j + 2] : z,
                                          j + 3 < NR ? acc[i][j + 3] : z));
      for (int t = 0; t < 4 && j + t < NR; ++t) {
        const std::uint32_t offset = g.w_zero ? g.w_zero[(j0 + j + t) * g.w_scale_stride] : 128u;
        store_output<Arch>(g, i0 + i, j0 + j + t, static_cast<std::int32_t>(s[t] - offset * a_sum));
      }
    }
  }
}

// ---- AVX-512 VNNI prefill on packed panels ----
// The weights of 32 rows are packed per call into the layout vpdpbusd wants for an outer product,
// [k / 4][32 rows][4 bytes]: one 64-byte load then holds 4 consecutive k of 16 weight rows, and a
// 4-byte broadcast of an activation row multiplies it into 16 accumulators (output columns) at
// once. Accumulators stay in registers over all of K (no horizontal sums), and the panel (128
// bytes per 4 k) stays in L2 while every activation row passes. Symmetric int8 weights: the
// activations + 128 are the uint8 operand, 128 * sum(w row) is taken out; asymmetric uint8
// weights: the packed weights are the uint8 operand, z * sum(a row) is taken out.

/// r[0..16) as a 16 x 16 matrix of int32, transposed in place.
template <class Arch>
QUARRY_ALWAYS_INLINE void transpose16_epi32(__m512i* r) noexcept {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // r[i + e], 128-bit lane L: rows i .. i + 3 of column 4L + e
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int e = 0; e < 4; ++e) {
    const __m512i ab_lo = _mm512_shuffle_i32x4(r[e], r[4 + e], 0x44), ab_hi = _mm512_shuffle_i32x4(r[e], r[4 + e], 0xee);
    const __m512i cd_lo = _mm512_shuffle_i32x4(r[8 + e], r[12 + e], 0x44), cd_hi = _mm512_shuffle_i32x4(r[8 + e], r[12 + e], 0xee);
    t[e] = _mm512_shuffle_i32x4(ab_lo, cd_lo, 0x88);
    t[4 + e] = _mm512_shuffle_i32x4(ab_lo, cd_lo, 0xdd);
    t[8 + e] = _mm512_shuffle_i32x4(ab_hi, cd_hi, 0x88);
    t[12 + e] = _mm512_shuffle_i32x4(ab_hi, cd_hi, 0xdd);
  }
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

/// Packs weight rows [j0, j0 + rows) (rows <= 32; the rest of the panel is zero) into `panel`,
/// [k4][32][4] bytes with k zero-padded to k4 * 4, and writes each packed row's byte sum (as int8)
/// to wsum[32].
template <class Arch>
QUARRY_ALWAYS_INLINE void pack_panel_vnni(const QGemmArgs& g, std::size_t j0, std::size_t rows, std::uint8_t* panel,
                                          std::int32_t* wsum) noexcept {
  const std::size_t k4 = (g.k + 3) / 4;
  for (std::size_t half = 0; half < 2; ++half) {
    for (std::size_t q0 = 0; q0 < k4; q0 += 16) {
      const std::size_t kk = q0 * 4, bytes = g.k - kk < 64 ? g.k - kk : 64;
      const __mmask64 mask = _bzhi_u64(~std::uint64_t{0}, static_cast<unsigned>(bytes));
      __m512i r[16];
      for (std::size_t c = 0; c < 16; ++c) {
        const std::size_t row = half * 16 + c;
        r[c] = row < rows ? _mm512_maskz_loadu_epi8(mask, g.w + (j0 + row) * g.ldw + kk) : _mm512_setzero_si512();
      }
      transpose16_epi32<Arch>(r);
      const std::size_t nq = k4 - q0 < 16 ? k4 - q0 : 16;
      for (std::size_t q = 0; q < nq; ++q) _mm512_storeu_si512(panel + ((q0 + q) * 32 + half * 16) * 4, r[q]);
    }
  }
  const __m512i ones = _mm512_set1_epi8(1);
  __m512i s0 = _mm512_setzero_si512(), s1 = s0;
  for (std::size_t q = 0; q < k4; ++q) {
    s0 = _mm512_dpbusd_epi32(s0, ones, _mm512_loadu_si512(panel + q * 128));
    s1 = _mm512_dpbusd_epi32(s1, ones, _mm512_loadu_si512(panel + q * 128 + 64));
  }
  _mm512_storeu_si512(wsum, s0);
  _mm512_storeu_si512(wsum + 16, s1);
}

/// The epilogue of 16 columns [j, j + nc) of MR rows from their accumulators: the same float
/// steps as store_output.
template <class Arch, int MR>
QUARRY_ALWAYS_INLINE void panel_store_vnni(const QGemmArgs& g, const __m512i* acc, const std::int32_t* wsum, std::size_t i0,
                                           std::size_t j, std::size_t nc) noexcept {
  const __mmask16 m = static_cast<__mmask16>(_bzhi_u32(0xffffu, static_cast<unsigned>(nc)));
  const __m512 ws = g.w_scale_stride ? _mm512_maskz_loadu_ps(m, g.w_scale + j) : _mm512_set1_ps(g.w_scale[0]);
  const __m512 bias = g.bias ? _mm512_maskz_loadu_ps(m, g.bias + j) : _mm512_setzero_ps();
  const bool asym = g.w_zero != nullptr;
  const __m512i wcorr = _mm512_slli_epi32(_mm512_loadu_si512(wsum), 7);  // 128 * sum w
  const __m512i zv = !asym ? _mm512_setzero_si512()
                   : g.w_scale_stride ? _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(m, g.w_zero + j))
                                      : _mm512_set1_epi32(g.w_zero[0]);
  for (int i = 0; i < MR; ++i) {
    const __m512i corr = asym ? _mm512_mullo_epi32(zv, _mm512_set1_epi32(g.a_sum[i0 + i])) : wcorr;  // z * sum a
    const __m512i d = _mm512_sub_epi32(acc[i], corr);
    const __m512 scale = _mm512_mul_ps(_mm512_set1_ps(g.a_scale[i0 + i]), ws);
    _mm512_mask_storeu_ps(g.y + (i0 + i) * g.ldy + j, m, _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), scale, bias));
  }
}

/// MR activation rows x the 32 columns of one packed panel, over all of K, then the epilogue.
/// `Asym`: the packed weights are the uint8 operand (else the activations + 128 are).
template <class Arch, int MR, bool Asym>
QUARRY_ALWAYS_INLINE void panel_tile_vnni(const QGemmArgs& g, const std::uint8_t* panel, const std::int32_t* wsum,
                                          std::size_t i0, std::size_t j0, std::size_t cols) noexcept {
  __m512i acc0[MR], acc1[MR];
  for (int i = 0; i < MR; ++i) acc0[i] = acc1[i] = _mm512_setzero_si512();
  const std::size_t k4 = (g.k + 3) / 4;
  const std::uint8_t* arow = Asym ? reinterpret_cast<const std::uint8_t*>(g.a) : g.a_u8;
  arow += i0 * g.lda;
  for (std::size_t q = 0; q < k4; ++q) {
    const __m512i b0 = _mm512_loadu_si512(panel + q * 128), b1 = _mm512_loadu_si512(panel + q * 128 + 64);
    for (int i = 0; i < MR; ++i) {
      std::int32_t a4;
      __builtin_memcpy(&a4, arow + i * g.lda + q * 4, 4);
      const __m512i av = _mm512_set1_epi32(a4);
      if constexpr (Asym) {
        acc0[i] = _mm512_dpbusd_epi32(acc0[i], b0, av);
        acc1[i] = _mm512_dpbusd_epi32(acc1[i], b1, av);
      } else {
        acc0[i] = _mm512_dpbusd_epi32(acc0[i], av, b0);
        acc1[i] = _mm512_dpbusd_epi32(acc1[i], av, b1);
      }
    }
  }
  panel_store_vnni<Arch, MR>(g, acc0, wsum, i0, j0, cols < 16 ? cols : 16);
  if (cols > 16) panel_store_vnni<Arch, MR>(g, acc1, wsum + 16, i0, j0 + 16, cols - 16);
}

template <class Arch, bool Asym>
QUARRY_ALWAYS_INLINE void panel_rows_vnni(const QGemmArgs& g, const std::uint8_t* panel, const std::int32_t* wsum,
                                          std::size_t j0, std::size_t cols) noexcept {
  constexpr int MR = 8;
  std::size_t i = 0;
  for (; i + MR <= g.m; i += MR) panel_tile_vnni<Arch, MR, Asym>(g, panel, wsum, i, j0, cols);
  switch (g.m - i) {
    case 7: panel_tile_vnni<Arch, 7, Asym>(g, panel, wsum, i, j0, cols); break;
    case 6: panel_tile_vnni<Arch, 6, Asym>(g, panel, wsum, i, j0, cols); break;
    case 5: panel_tile_vnni<Arch, 5, Asym>(g, panel, wsum, i, j0, cols); break;
    case 4: panel_tile_vnni<Arch, 4, Asym>(g, panel, wsum, i, j0, cols); break;
    case 3: panel_tile_vnni<Arch, 3, Asym>(g, panel, wsum, i, j0, cols); break;
    case 2: panel_tile_vnni<Arch, 2, Asym>(g, panel, wsum, i, j0, cols); break;
    case 1: panel_tile_vnni<Arch, 1, Asym>(g, panel, wsum, i, j0, cols); break;
    default: break;
  }
}

/// The whole W8A8 product on packed panels (AVX-512; m large enough to repay the packing).
template <class Arch>
QUARRY_ALWAYS_INLINE void gemm_s8_packed(const QGemmArgs& g) noexcept {
  std::uint8_t* panel = g.scratch;
  std::int32_t* wsum = reinterpret_cast<std::int32_t*>(g.scratch + (g.k + 3) / 4 * 128);
  for (std::size_t j0 = 0; j0 < g.n; j0 += 32) {
    const std::size_t cols = g.n - j0 < 32 ? g.n - j0 : 32;
    pack_panel_vnni<Arch>(g, j0, cols, panel, wsum);
    if (g.w_zero) panel_rows_vnni<Arch, true>(g, panel, wsum, j0, cols);
    else panel_rows_vnni<Arch, false>(g, panel, wsum, j0, cols);
  }
}

/// AVX2 tile: MR activation rows x NR weight rows, vpmaddubsw on |w| and sign(a, w).
template <class Arch, int MR, int NR, bool Prefetch>
QUARRY_ALWAYS_INLINE void tile_avx2(const QGemmArgs& g, std::size_t i0, std::size_t j0, std::size_t pf_rows) noexcept {
  __m256i acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm256_setzero_si256();
  const __m256i ones = _mm256_set1_epi16(1);
  // uint8 (asymmetric) weights u become int8 by u ^ 0x80 = u - 128; the epilogue adds (128 - z) * sum a.
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(g.w_zero ? 0x80 : 0));
  const std::int8_t* a = g.a + i0 * g.lda;
  const std::int8_t* w = g.w + j0 * g.ldw;
  const std::size_t k = g.k;
  std::size_t kk = 0;
  for (; kk + 32 <= k; kk += 32) {
    __m256i wv[NR], wabs[NR];
    for (int j = 0; j < NR; ++j) {
      if constexpr (Prefetch)
        if (kk % 64 == 0 && static_cast<std::size_t>(j) < pf_rows)
          _mm_prefetch(reinterpret_cast<const char*>(w + (j + NR) * g.ldw + kk), _MM_HINT_T1);
      wv[j] = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + j * g.ldw + kk)), flip);
      wabs[j] = _mm256_abs_epi8(wv[j]);
    }
    for (int i = 0; i < MR; ++i) {
      const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i * g.lda + kk));
      for (int j = 0; j < NR; ++j) {
        const __m256i pairs = _mm256_maddubs_epi16(wabs[j], _mm256_sign_epi8(av, wv[j]));
        acc[i][j] = _mm256_add_epi32(acc[i][j], _mm256_madd_epi16(pairs, ones));
      }
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) {
      const std::uint32_t bulk = static_cast<std::uint32_t>(hsum_epi32_256<Arch>(acc[i][j]));
      const std::int8_t* wr = w + j * g.ldw + kk;
      const std::int8_t* ar = a + i * g.lda + kk;
      if (!g.w_zero) {
        const std::uint32_t rest = static_cast<std::uint32_t>(ref_dot_s8<Arch>(ar, wr, k - kk));
        store_output<Arch>(g, i0 + i, j0 + j, static_cast<std::int32_t>(bulk + rest));
        continue;
      }
      // bulk = sum a * (u - 128); the rest and the correction in the reference's terms, mod 2^32
      const std::uint32_t rest = static_cast<std::uint32_t>(ref_dot_s8<Arch, true>(ar, wr, k - kk));
      const std::uint32_t z = g.w_zero[(j0 + j) * g.w_scale_stride];
      const std::uint32_t a_sum = static_cast<std::uint32_t>(g.a_sum[i0 + i]);
      std::uint32_t bulk_sum = 0;  // sum a over [0, kk): the part of a_sum the bulk covered
      for (std::size_t c = kk; c < k; ++c) bulk_sum += static_cast<std::uint32_t>(std::int32_t{ar[c - kk]});
      bulk_sum = a_sum - bulk_sum;
      store_output<Arch>(g, i0 + i, j0 + j, static_cast<std::int32_t>(bulk + 128u * bulk_sum + rest - z * a_sum));
    }
}

template <class Arch, int MR, int NR, bool Prefetch>
QUARRY_ALWAYS_INLINE void tile(const QGemmArgs& g, std::size_t i0, std::size_t j0, std::size_t pf_rows = 0) noexcept {
  if constexpr (simd::is_avx512<Arch>) tile_vnni<Arch, MR, NR, Prefetch>(g, i0, j0, pf_rows);
  else tile_avx2<Arch, MR, NR, Prefetch>(g, i0, j0, pf_rows);
}

/// Tiles of `mr` (1..MR, a run-time count) activation rows x weight rows [j0, j1).
template <class Arch, int MR, int NR>
QUARRY_ALWAYS_INLINE void tile_row_block(const QGemmArgs& g, std::size_t i0, std::size_t j0, std::size_t j1) noexcept {
  std::size_t j = j0;
  if (i0 == 0) {  // the first pass brings the block's weights from memory: prefetch the next tile
    for (; j + NR <= j1; j += NR) {
      const std::size_t next = j1 - (j + NR);
      tile<Arch, MR, NR, true>(g, i0, j, next < NR ? next : std::size_t{NR});
    }
  }
  for (; j + NR <= j1; j += NR) tile<Arch, MR, NR, false>(g, i0, j);
  for (; j < j1; ++j) tile<Arch, MR, 1, false>(g, i0, j);
}


/// The float vector of Arch's widest float lanes (16 on AVX-512, 8 on AVX2).
template <class Arch, bool Wide = simd::is_avx512<Arch>>
struct W4Vec {
  using type = __m256;
};
template <class Arch>
struct W4Vec<Arch, true> {
  using type = __m512;
};
template <class Arch>
using w4_vec = typename W4Vec<Arch>::type;

/// 16 packed bytes (32 columns) to two vectors of u bytes in column order: c0 columns 0..15,
/// c1 columns 16..31 (low nibble first), each xor `flip`.
template <class Arch>
QUARRY_ALWAYS_INLINE void w4_unpack32(const std::uint8_t* p, __m128i flip, __m128i* c0, __m128i* c1) noexcept {
  const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m128i mask = _mm_set1_epi8(0x0f);
  const __m128i lo = _mm_and_si128(b, mask);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), mask);
  *c0 = _mm_xor_si128(_mm_unpacklo_epi8(lo, hi), flip);
  *c1 = _mm_xor_si128(_mm_unpackhi_epi8(lo, hi), flip);
}

/// Part q (of 32 / lanes) of the 32 unpacked columns as floats.
template <class Arch, int Q>
QUARRY_ALWAYS_INLINE w4_vec<Arch> w4_part(__m128i c0, __m128i c1) noexcept {
  if constexpr (simd::is_avx512<Arch>) {
    return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(Q == 0 ? c0 : c1));
  } else {
    const __m128i b = Q < 2 ? c0 : c1;
    return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(Q % 2 == 0 ? b : _mm_srli_si128(b, 8)));
  }
}

template <class Arch>
QUARRY_ALWAYS_INLINE w4_vec<Arch> w4_zero_vec() noexcept {
  if constexpr (simd::is_avx512<Arch>) return _mm512_setzero_ps();
  else return _mm256_setzero_ps();
}
template <class Arch>
QUARRY_ALWAYS_INLINE w4_vec<Arch> w4_set1(float v) noexcept {
  if constexpr (simd::is_avx512<Arch>) return _mm512_set1_ps(v);
  else return _mm256_set1_ps(v);
}
template <class Arch>
QUARRY_ALWAYS_INLINE w4_vec<Arch> w4_load(const float* p) noexcept {
  if constexpr (simd::is_avx512<Arch>) return _mm512_loadu_ps(p);
  else return _mm256_loadu_ps(p);
}
template <class Arch>
QUARRY_ALWAYS_INLINE w4_vec<Arch> w4_sub(w4_vec<Arch> a, w4_vec<Arch> b) noexcept {
  if constexpr (simd::is_avx512<Arch>) return _mm512_sub_ps(a, b);
  else return _mm256_sub_ps(a, b);
}
template <class Arch>
QUARRY_ALWAYS_INLINE w4_vec<Arch> w4_fmadd(w4_vec<Arch> a, w4_vec<Arch> b, w4_vec<Arch> c) noexcept {
  if constexpr (simd::is_avx512<Arch>) return _mm512_fmadd_ps(a, b, c);
  else return _mm256_fmadd_ps(a, b, c);
}
/// Sum of the lanes, in a fixed pairwise order.
template <class Arch>
QUARRY_ALWAYS_INLINE float w4_hsum(w4_vec<Arch> v) noexcept {
  __m256 h;
  if constexpr (simd::is_avx512<Arch>)
    h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
  else h = v;
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 0x55));
  return _mm_cvtss_f32(s);
}

/// AVX-512 W4A32 tile: MR activation rows x NR weight rows over all of K. vpmovzxbd widens 16
/// packed bytes (32 columns) to int32 lanes; vpermps reads only the low 4 bits of its index, so
/// it maps the low nibble straight to float(q - z) from a 16-entry table in a register (the
/// group's zero point folded in), and after a 4-bit shift the high nibble too. Low nibbles are
/// the even columns and high nibbles the odd ones, so the activations are split into even and
/// odd columns once per 32 columns (vpermt2ps), shared by the NR weight rows.
template <class Arch, int MR, int NR, bool Prefetch>
QUARRY_ALWAYS_INLINE void tile_w4_avx512(const Q4GemmArgs& g, std::size_t i0, std::size_t j0, std::size_t pf_rows) noexcept {
  __m512 total[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) total[i][j] = _mm512_setzero_ps();
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const __m512 iota = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512 signed_nibbles = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, -8, -7, -6, -5, -4, -3, -2, -1);
  const std::size_t groups = g.k / g.group;
  for (std::size_t grp = 0; grp < groups; ++grp) {
    __m512 acc[MR][NR], table[NR];
    for (int j = 0; j < NR; ++j) {
      table[j] = g.w_zero ? _mm512_sub_ps(iota, _mm512_set1_ps(static_cast<float>(g.w_zero[(j0 + j) * g.ld_scale + grp])))
                          : signed_nibbles;
      for (int i = 0; i < MR; ++i) acc[i][j] = _mm512_setzero_ps();
    }
    for (std::size_t c = grp * g.group; c < (grp + 1) * g.group; c += 32) {
      __m512 xe[MR], xo[MR];
      for (int i = 0; i < MR; ++i) {
        const float* xp = g.x + (i0 + i) * g.ldx + c;
        const __m512 x0 = _mm512_loadu_ps(xp), x1 = _mm512_loadu_ps(xp + 16);
        xe[i] = _mm512_permutex2var_ps(x0, even, x1);
        xo[i] = _mm512_permutex2var_ps(x0, odd, x1);
      }
      for (int j = 0; j < NR; ++j) {
        const std::uint8_t* p = g.w + (j0 + j) * g.ldw + c / 2;
        if constexpr (Prefetch)
          if (c % 128 == 0 && static_cast<std::size_t>(j) < pf_rows) _mm_prefetch(reinterpret_cast<const char*>(p + NR * g.ldw), _MM_HINT_T1);
        const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
        const __m512 lo = _mm512_permutexvar_ps(b, table[j]);
        const __m512 hi = _mm512_permutexvar_ps(_mm512_srli_epi32(b, 4), table[j]);
        for (int i = 0; i < MR; ++i) {
          acc[i][j] = _mm512_fmadd_ps(lo, xe[i], acc[i][j]);
          acc[i][j] = _mm512_fmadd_ps(hi, xo[i], acc[i][j]);
        }
      }
    }
    for (int j = 0; j < NR; ++j) {
      const __m512 sv = _mm512_set1_ps(w4_scale<Arch>(g, j0 + j, grp));
      for (int i = 0; i < MR; ++i) total[i][j] = _mm512_fmadd_ps(acc[i][j], sv, total[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j)
      g.y[(i0 + i) * g.ldy + j0 + j] =
          std::fma(w4_hsum<Arch>(total[i][j]), g.output_scale, g.bias ? g.bias[j0 + j] : 0.f);
}

/// W4A32 tile: MR activation rows x NR weight rows over all of K.
template <class Arch, int MR, int NR, bool Prefetch>
QUARRY_ALWAYS_INLINE void tile_w4(const Q4GemmArgs& g, std::size_t i0, std::size_t j0, std::size_t pf_rows) noexcept {
  if constexpr (simd::is_avx512<Arch>) {
    tile_w4_avx512<Arch, MR, NR, Prefetch>(g, i0, j0, pf_rows);
    return;
  }
  using V = w4_vec<Arch>;
  constexpr int L = static_cast<int>(sizeof(V) / sizeof(float));
  V total[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) total[i][j] = w4_zero_vec<Arch>();
  const __m128i flip = _mm_set1_epi8(static_cast<char>(g.w_zero ? 0 : 8));
  const std::size_t groups = g.k / g.group;
  for (std::size_t grp = 0; grp < groups; ++grp) {
    V acc[MR][NR], zf[NR];
    for (int j = 0; j < NR; ++j) {
      zf[j] = w4_set1<Arch>(static_cast<float>(w4_zero<Arch>(g, j0 + j, grp)));
      for (int i = 0; i < MR; ++i) acc[i][j] = w4_zero_vec<Arch>();
    }
    for (std::size_t c = grp * g.group; c < (grp + 1) * g.group; c += 32) {
      __m128i c0[NR], c1[NR];
      for (int j = 0; j < NR; ++j) {
        const std::uint8_t* p = g.w + (j0 + j) * g.ldw + c / 2;
        if constexpr (Prefetch)
          if (c % 128 == 0 && static_cast<std::size_t>(j) < pf_rows) _mm_prefetch(reinterpret_cast<const char*>(p + NR * g.ldw), _MM_HINT_T1);
        w4_unpack32<Arch>(p, flip, &c0[j], &c1[j]);
      }
      auto part = [&]<int Q>(std::integral_constant<int, Q>) __attribute__((always_inline)) {
        V wq[NR];
        for (int j = 0; j < NR; ++j) wq[j] = w4_sub<Arch>(w4_part<Arch, Q>(c0[j], c1[j]), zf[j]);
        for (int i = 0; i < MR; ++i) {
          const V xv = w4_load<Arch>(g.x + (i0 + i) * g.ldx + c + Q * L);
          for (int j = 0; j < NR; ++j) acc[i][j] = w4_fmadd<Arch>(wq[j], xv, acc[i][j]);
        }
      };
      part(std::integral_constant<int, 0>{});
      part(std::integral_constant<int, 1>{});
      if constexpr (L == 8) {
        part(std::integral_constant<int, 2>{});
        part(std::integral_constant<int, 3>{});
      }
    }
    for (int j = 0; j < NR; ++j) {
      const V sv = w4_set1<Arch>(w4_scale<Arch>(g, j0 + j, grp));
      for (int i = 0; i < MR; ++i) total[i][j] = w4_fmadd<Arch>(acc[i][j], sv, total[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j)
      g.y[(i0 + i) * g.ldy + j0 + j] =
          std::fma(w4_hsum<Arch>(total[i][j]), g.output_scale, g.bias ? g.bias[j0 + j] : 0.f);
}

/// Asks for the per-group scales at element `at` into L2: decode's prefetch of the next tile's
/// scales along with its weights (g32 scales are 1/8 of an INT4 row's bytes, in an array of their
/// own that the hardware prefetchers do not follow from row to row).
QUARRY_ALWAYS_INLINE void prefetch_group_scales(const Q4GemmArgs& g, std::size_t at) noexcept {
  _mm_prefetch(g.scale_f16 ? reinterpret_cast<const char*>(static_cast<const std::uint16_t*>(g.w_scale) + at)
                           : reinterpret_cast<const char*>(static_cast<const float*>(g.w_scale) + at),
               _MM_HINT_T1);
}

// ---- AVX-512 per_group tiles' shared pieces (W4A8 and grouped W8A8) ----

/// A per_group tile's pointers and strides in locals, from activation row i0 and weight row j0,
/// the scale type and zero points fixed, so the tile's loops unroll with nothing reloaded.
template <bool ScaleF16, bool HasZero>
struct GroupedTile {
  using Scale = std::conditional_t<ScaleF16, std::uint16_t, float>;
  std::size_t k, ldw, lds, lda, ldb;
  const std::uint8_t* w;
  const Scale* sc;
  const std::uint8_t* zp;
  const std::int8_t* a;
  const std::int32_t* a_bsum;
  QUARRY_ALWAYS_INLINE GroupedTile(const Q4GemmArgs& g, std::size_t i0, std::size_t j0) noexcept
      : k(g.k), ldw(g.ldw), lds(g.ld_scale), lda(g.lda), ldb(g.ld_bsum), w(g.w + j0 * ldw),
        sc(static_cast<const Scale*>(g.w_scale) + j0 * lds), zp(HasZero ? g.w_zero + j0 * lds : nullptr), a(g.a + i0 * lda),
        a_bsum(g.a_bsum + i0 * ldb) {}
  /// The scales (zero points) of the groups in gmask from index `at` (of the tile's first weight
  /// row), spread over the lanes by lane_group; groups past the mask read 0.
  QUARRY_ALWAYS_INLINE void spread(std::size_t at, __mmask16 gmask, __m512i lane_group, __m512* sv, __m512i* zv) const noexcept {
    __m512 v;
    if constexpr (ScaleF16) v = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(gmask, sc + at));
    else v = _mm512_maskz_loadu_ps(gmask, sc + at);
    *sv = _mm512_permutexvar_ps(lane_group, v);
    *zv = _mm512_setzero_si512();
    if constexpr (HasZero) *zv = _mm512_permutexvar_epi32(lane_group, _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(gmask, zp + at)));
  }
};

/// Calls f.template operator()<HasZero, ScaleF16>() for g's zero points and scale type.
template <class Args, class F>
QUARRY_ALWAYS_INLINE void with_grouped_types(const Args& g, F&& f) noexcept {
  if (g.w_zero) g.scale_f16 ? f.template operator()<true, true>() : f.template operator()<true, false>();
  else g.scale_f16 ? f.template operator()<false, true>() : f.template operator()<false, false>();
}

// ---- AVX-512 W4A8 steps shared by the tile and decode kernels below ----

/// Lane l of a W4A8 chunk holds columns 8l .. 8l + 7: group l * 8 / group of the chunk. The
/// index vector that spreads a chunk's group scales (zero points) over the lanes.
template <class Arch>
QUARRY_ALWAYS_INLINE __m512i w4a8_lane_group(std::size_t group) noexcept {
  const int shift = group == 32 ? 2 : (group == 64 ? 3 : 4);
  return _mm512_srl_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm_cvtsi32_si128(shift));
}

/// The grouped tiles' products (unsigned weights u = w + z times int8 activations) start from
/// -z x the activations' block sums, exact in int32, so that the dots come out as w x a with no
/// subtraction after. grouped_sums loads a chunk's 16 block sums: for symmetric weights, whose
/// z is the fixed offset 2^Shift, already as that start; grouped_start gives a weight row's
/// start from them: that one for symmetric weights, -z x them with the row's zero points else.
template <class Arch, int Shift, bool HasZero>
QUARRY_ALWAYS_INLINE __m512i grouped_sums(const std::int32_t* p) noexcept {
  const __m512i bs = _mm512_loadu_si512(p);
  if constexpr (HasZero) return bs;
  else return _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_slli_epi32(bs, Shift));
}
template <class Arch, bool HasZero>
QUARRY_ALWAYS_INLINE __m512i grouped_start(__m512i bs, __m512i zv) noexcept {
  if constexpr (HasZero) return _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_mullo_epi32(zv, bs));
  else return bs;
}

/// The 16 block sums of a W4A8 chunk's activations (grouped_sums; symmetric nibbles are u = q + 8).
template <class Arch, bool HasZero>
QUARRY_ALWAYS_INLINE __m512i w4a8_block_sums(const std::int32_t* p) noexcept {
  return grouped_sums<Arch, 3, HasZero>(p);
}

/// 64 packed bytes as unsigned nibbles: lo the low nibbles (the chunk's even columns), hi the
/// high ones (odd columns), each ^ flip (8 for symmetric weights, 0 else).
template <class Arch>
QUARRY_ALWAYS_INLINE void w4a8_unpack(__m512i b, __m512i nibble, __m512i flip, __m512i* lo, __m512i* hi) noexcept {
  *lo = _mm512_ternarylogic_epi32(b, nibble, flip, 0x6A);  // (b & 0x0f) ^ flip
  *hi = _mm512_ternarylogic_epi32(_mm512_srli_epi16(b, 4), nibble, flip, 0x6A);
}

/// t + (exact 8-column dots of the nibbles with the activations ae / ao, less zero point x
/// block sum) x the lanes' scales: one chunk of one weight row and one activation row. bs is
/// w4a8_block_sums' (the products start from grouped_start).
template <class Arch, bool HasZero>
QUARRY_ALWAYS_INLINE __m512 w4a8_accumulate(__m512i lo, __m512i hi, __m512i ae, __m512i ao, __m512i bs, __m512i zv, __m512 sv,
                                            __m512 t) noexcept {
  const __m512i d = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(grouped_start<Arch, HasZero>(bs, zv), lo, ae), hi, ao);
  return _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), sv, t);
}

/// AVX-512 W4A8 tile: MR activation rows x NR weight rows, 128 columns (64 packed bytes) per
/// step. The low nibbles of the 64 bytes are the chunk's even columns and the high nibbles its
/// odd ones, which is how the activations are laid out, so one vpdpbusd each gives lane l the
/// exact dot of columns 8l .. 8l + 7 (the W4A8 lanes of QuantKernels::gemm_w4_s8). The group
/// scales (and zero points) of the chunk are spread over the lanes with one vpermps (vpermd).
/// As the decode kernel below, the pointers and strides live in locals and the scale type and
/// zero points are template arguments, so the tile's loops unroll with nothing reloaded.
/// Prefetch (decode): the next tile's rows, `pf_rows` of them, are fetched into L2 one step ahead.
template <class Arch, int MR, int NR, bool Prefetch, bool HasZero, bool ScaleF16>
QUARRY_ALWAYS_INLINE void tile_w4_s8_avx512(const Q4GemmArgs& g, std::size_t i0, std::size_t j0, std::size_t pf_rows) noexcept {
  const GroupedTile<ScaleF16, HasZero> tl(g, i0, j0);
  const std::size_t k = tl.k, ldw = tl.ldw, lds = tl.lds, lda = tl.lda, ldb = tl.ldb;
  const std::uint8_t* const w = tl.w;
  const std::int8_t* const a = tl.a;
  const std::int32_t* const a_bsum = tl.a_bsum;
  __m512 t[MR][NR];
  QUARRY_UNROLL for (int i = 0; i < MR; ++i)
    QUARRY_UNROLL for (int j = 0; j < NR; ++j) t[i][j] = _mm512_setzero_ps();
  const __m512i nibble = _mm512_set1_epi8(0x0f);
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(HasZero ? 0 : 8));
  const __m512i lane_group = w4a8_lane_group<Arch>(g.group);
  const std::size_t groups = k / g.group, per_chunk = 128 / g.group;
  for (std::size_t c0 = 0; c0 < k; c0 += 128) {
    const std::size_t cols = k - c0 < 128 ? k - c0 : 128;  // 32, 64, 96 or 128
    const __mmask64 wmask = _bzhi_u64(~std::uint64_t{0}, static_cast<unsigned>(cols / 2));
    const std::size_t g0 = c0 / g.group, ng = groups - g0 < per_chunk ? groups - g0 : per_chunk;
    const __mmask16 gmask = static_cast<__mmask16>((1u << ng) - 1);
    __m512i ae[MR], ao[MR], bs[MR];
    QUARRY_UNROLL for (int i = 0; i < MR; ++i) {
      const std::int8_t* ap = a + static_cast<std::size_t>(i) * lda + c0;
      ae[i] = _mm512_loadu_si512(ap);
      ao[i] = _mm512_loadu_si512(ap + 64);
      bs[i] = w4a8_block_sums<Arch, HasZero>(a_bsum + static_cast<std::size_t>(i) * ldb + c0 / 8);
    }
    QUARRY_UNROLL for (int j = 0; j < NR; ++j) {
      const std::uint8_t* p = w + static_cast<std::size_t>(j) * ldw + c0 / 2;
      if constexpr (Prefetch)
        if (static_cast<std::size_t>(j) < pf_rows) _mm_prefetch(reinterpret_cast<const char*>(p + NR * ldw), _MM_HINT_T1);
      __m512i lo, hi;
      w4a8_unpack<Arch>(_mm512_maskz_loadu_epi8(wmask, p), nibble, flip, &lo, &hi);
      const std::size_t at = static_cast<std::size_t>(j) * lds + g0;
      if constexpr (Prefetch)
        if (static_cast<std::size_t>(j) < pf_rows) prefetch_group_scales(g, (j0 + j) * lds + g0 + NR * lds);
      __m512 sv;
      __m512i zv;
      tl.spread(at, gmask, lane_group, &sv, &zv);  // lanes past the last group read a masked 0
      QUARRY_UNROLL for (int i = 0; i < MR; ++i) t[i][j] = w4a8_accumulate<Arch, HasZero>(lo, hi, ae[i], ao[i], bs[i], zv, sv, t[i][j]);
    }
  }
  QUARRY_UNROLL for (int i = 0; i < MR; ++i)
    QUARRY_UNROLL for (int j = 0; j < NR; ++j)
      g.y[(i0 + i) * g.ldy + j0 + j] = std::fma(w4_hsum<Arch>(t[i][j]), g.a_scale[i0 + i], g.bias ? g.bias[j0 + j] : 0.f);
}

/// AVX-512 W4A8 decode (one activation row): NR weight rows at once, 256 columns (two chunks of
/// the tile above, the same arithmetic in the same order: bit-identical outputs) per step, so
/// one load and conversion of 8 group scales serves both chunks (g32). The pointers and
/// strides live in locals (the tiles' GroupedTile) and the scale type and zero points are
/// template arguments, so the rows' loop unrolls with every accumulator in a register.
/// Prefetch: the next NR rows' weights into L2 one line per chunk, their scales once at the
/// start.
template <class Arch, int NR, bool Prefetch, bool HasZero, bool ScaleF16>
QUARRY_ALWAYS_INLINE void decode_w4_s8_avx512(const Q4GemmArgs& g, std::size_t j0) noexcept {
  using Tile = GroupedTile<ScaleF16, HasZero>;
  using Scale = typename Tile::Scale;
  const Tile tl(g, 0, j0);
  const std::size_t k = tl.k, ldw = tl.ldw, lds = tl.lds, group = g.group;
  const std::uint8_t* const w = tl.w;
  const Scale* const sc = tl.sc;
  const std::uint8_t* const zp = tl.zp;
  const std::int8_t* const a = tl.a;
  const std::int32_t* const a_bsum = tl.a_bsum;
  const std::size_t groups = k / group, per_chunk = 128 / group;
  if constexpr (Prefetch) {
    const std::size_t scale_bytes = groups * sizeof(Scale);
    QUARRY_UNROLL for (int j = 0; j < NR; ++j) {
      const char* s = reinterpret_cast<const char*>(sc + (NR + j) * lds);
      for (std::size_t b = 0; b < scale_bytes; b += 64) _mm_prefetch(s + b, _MM_HINT_T1);
    }
  }
  __m512 t[NR];
  QUARRY_UNROLL for (int j = 0; j < NR; ++j) t[j] = _mm512_setzero_ps();
  const __m512i nibble = _mm512_set1_epi8(0x0f);
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(HasZero ? 0 : 8));
  const __m512i lane_group0 = w4a8_lane_group<Arch>(group);
  const __m512i lane_group1 = _mm512_add_epi32(lane_group0, _mm512_set1_epi32(static_cast<int>(per_chunk)));
  // One chunk of 128 columns at c0 (`cols` of them, 32 .. 128) for every row, scales and zero
  // points of the step already spread out over the lanes by the caller's permutes.
  auto chunk = [&](std::size_t c0, std::size_t cols, const __m512* sv, const __m512i* zv) __attribute__((always_inline)) {
    const __mmask64 wmask = _bzhi_u64(~std::uint64_t{0}, static_cast<unsigned>(cols / 2));
    const __m512i ae = _mm512_loadu_si512(a + c0), ao = _mm512_loadu_si512(a + c0 + 64);
    const __m512i bs = w4a8_block_sums<Arch, HasZero>(a_bsum + c0 / 8);
    QUARRY_UNROLL for (int j = 0; j < NR; ++j) {
      const std::uint8_t* p = w + static_cast<std::size_t>(j) * ldw + c0 / 2;
      if constexpr (Prefetch) _mm_prefetch(reinterpret_cast<const char*>(p + NR * ldw), _MM_HINT_T1);
      __m512i lo, hi;
      w4a8_unpack<Arch>(_mm512_maskz_loadu_epi8(wmask, p), nibble, flip, &lo, &hi);
      t[j] = w4a8_accumulate<Arch, HasZero>(lo, hi, ae, ao, bs, HasZero ? zv[j] : _mm512_setzero_si512(), sv[j], t[j]);
    }
  };
  // The scales (zero points) of up to 8 groups from group g0, spread over the lanes of the
  // step's two chunks; groups past the mask read 0.
  auto spread = [&](std::size_t g0, __mmask8 gmask, __m512* sv0, __m512* sv1, __m512i* zv0, __m512i* zv1) __attribute__((always_inline)) {
    QUARRY_UNROLL for (int j = 0; j < NR; ++j) {
      const Scale* s = sc + static_cast<std::size_t>(j) * lds + g0;
      __m512 v;
      if constexpr (ScaleF16) v = _mm512_castps256_ps512(_mm256_cvtph_ps(_mm_maskz_loadu_epi16(gmask, s)));
      else v = _mm512_castps256_ps512(_mm256_maskz_loadu_ps(gmask, s));
      sv0[j] = _mm512_permutexvar_ps(lane_group0, v);
      sv1[j] = _mm512_permutexvar_ps(lane_group1, v);
      if constexpr (HasZero) {
        const __m512i z = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(gmask, zp + static_cast<std::size_t>(j) * lds + g0));
        zv0[j] = _mm512_permutexvar_epi32(lane_group0, z);
        zv1[j] = _mm512_permutexvar_epi32(lane_group1, z);
      }
    }
  };
  __m512 sv0[NR], sv1[NR];
  __m512i zv0[NR], zv1[NR];
  std::size_t c0 = 0;
  for (; c0 + 256 <= k; c0 += 256) {
    spread(c0 / group, static_cast<__mmask8>((1u << (2 * per_chunk)) - 1), sv0, sv1, zv0, zv1);
    chunk(c0, 128, sv0, zv0);
    chunk(c0 + 128, 128, sv1, zv1);
  }
  if (c0 < k) {  // 32 .. 224 columns left
    const std::size_t g0 = c0 / group, ng = groups - g0;
    spread(g0, static_cast<__mmask8>((1u << ng) - 1), sv0, sv1, zv0, zv1);
    const std::size_t cols = k - c0;
    chunk(c0, cols < 128 ? cols : 128, sv0, zv0);
    if (cols > 128) chunk(c0 + 128, cols - 128, sv1, zv1);
  }
  QUARRY_UNROLL for (int j = 0; j < NR; ++j)
    g.y[j0 + j] = std::fma(w4_hsum<Arch>(t[j]), g.a_scale[0], g.bias ? g.bias[j0 + j] : 0.f);
}

/// W4A8 tile: MR activation rows x NR weight rows. AVX2: each 128-column chunk as two halves of
/// 64 columns (32 packed bytes) in two 8-lane accumulators (lanes 0..7 and 8..15 of the W4A8
/// lanes), vpmaddubsw + vpmaddwd for the exact dots (u <= 15, |a| <= 127: a pair is at most 3810,
/// never saturating); the AVX-512 body above otherwise.
template <class Arch, int MR, int NR, bool Prefetch>
QUARRY_ALWAYS_INLINE void tile_w4_s8_avx2(const Q4GemmArgs& g, std::size_t i0, std::size_t j0, std::size_t pf_rows) noexcept {
  __m256 t[MR][NR][2];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) t[i][j][0] = t[i][j][1] = _mm256_setzero_ps();
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(g.w_zero ? 0 : 8));
  const __m256i ones16 = _mm256_set1_epi16(1);
  for (std::size_t chunk = 0; chunk < g.k; chunk += 128) {
    QUARRY_UNROLL for (int h = 0; h < 2; ++h) {
      const std::size_t c0 = chunk + 64 * static_cast<std::size_t>(h);
      if (c0 >= g.k) break;
      const bool full = g.k - c0 >= 64;  // else 32 columns
      __m256i ae[MR], ao[MR], bs[MR];
      QUARRY_UNROLL for (int i = 0; i < MR; ++i) {
        const std::int8_t* ap = g.a + (i0 + i) * g.lda + chunk + 32 * h;
        ae[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ap));
        ao[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ap + 64));
        bs[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g.a_bsum + (i0 + i) * g.ld_bsum + c0 / 8));
        if (!g.w_zero) bs[i] = _mm256_slli_epi32(bs[i], 3);
      }
      QUARRY_UNROLL for (int j = 0; j < NR; ++j) {
        const std::uint8_t* p = g.w + (j0 + j) * g.ldw + c0 / 2;
        if constexpr (Prefetch)
          if (h == 0 && static_cast<std::size_t>(j) < pf_rows) _mm_prefetch(reinterpret_cast<const char*>(p + NR * g.ldw), _MM_HINT_T1);
        const __m128i b0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
        const __m256i b = full ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)) : _mm256_set_m128i(_mm_setzero_si128(), b0);
        const __m256i lo = _mm256_xor_si256(_mm256_and_si256(b, nibble), flip);
        const __m256i hi = _mm256_xor_si256(_mm256_and_si256(_mm256_srli_epi16(b, 4), nibble), flip);
        const std::size_t g_lo = c0 / g.group, g_hi = (c0 + 32) / g.group;
        const float s_lo = w4_scale<Arch>(g, j0 + j, g_lo), s_hi = full ? w4_scale<Arch>(g, j0 + j, g_hi) : 0.f;
        const __m256 sv = _mm256_set_m128(_mm_set1_ps(s_hi), _mm_set1_ps(s_lo));
        __m256i zv = _mm256_setzero_si256();
        if (g.w_zero)
          zv = _mm256_set_m128i(_mm_set1_epi32(full ? w4_zero<Arch>(g, j0 + j, g_hi) : 0), _mm_set1_epi32(w4_zero<Arch>(g, j0 + j, g_lo)));
        QUARRY_UNROLL for (int i = 0; i < MR; ++i) {
          __m256i d = _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(lo, ae[i]), ones16),
                                       _mm256_madd_epi16(_mm256_maddubs_epi16(hi, ao[i]), ones16));
          d = _mm256_sub_epi32(d, g.w_zero ? _mm256_mullo_epi32(zv, bs[i]) : bs[i]);
          t[i][j][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), sv, t[i][j][h]);
        }
      }
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j)
      g.y[(i0 + i) * g.ldy + j0 + j] = std::fma(w4_hsum<Arch>(_mm256_add_ps(t[i][j][0], t[i][j][1])), g.a_scale[i0 + i],
                                                g.bias ? g.bias[j0 + j] : 0.f);
}

template <class Arch, int MR, int NR, bool Prefetch>
QUARRY_ALWAYS_INLINE void tile_w4_s8(const Q4GemmArgs& g, std::size_t i0, std::size_t j0, std::size_t pf_rows) noexcept {
  if constexpr (simd::is_avx512<Arch>) {
    with_grouped_types(g, [&]<bool HasZero, bool ScaleF16>() { tile_w4_s8_avx512<Arch, MR, NR, Prefetch, HasZero, ScaleF16>(g, i0, j0, pf_rows); });
  } else {
    tile_w4_s8_avx2<Arch, MR, NR, Prefetch>(g, i0, j0, pf_rows);
  }
}

/// AVX-512 grouped-int8 tile: MR activation rows x NR weight rows, 64 columns per step; one
/// vpdpbusd gives lane l the exact dot of columns 4l .. 4l + 3 (int8 weights made uint8 by ^ 0x80,
/// the shift taken out with the 4-column sums of the activations: the products start from
/// -128 x them, or -z x them for asymmetric weights). Pointers and strides in locals, the scale
/// type and zero points template arguments, as the W4A8 tile.
template <class Arch, int MR, int NR, bool Prefetch, bool HasZero, bool ScaleF16>
QUARRY_ALWAYS_INLINE void tile_s8g_avx512(const Q4GemmArgs& g, std::size_t i0, std::size_t j0, std::size_t pf_rows) noexcept {
  const GroupedTile<ScaleF16, HasZero> tl(g, i0, j0);
  const std::size_t k = tl.k, ldw = tl.ldw, lds = tl.lds, lda = tl.lda, ldb = tl.ldb;
  const std::uint8_t* const w = tl.w;
  const std::int8_t* const a = tl.a;
  const std::int32_t* const a_bsum = tl.a_bsum;
  __m512 t[MR][NR];
  QUARRY_UNROLL for (int i = 0; i < MR; ++i)
    QUARRY_UNROLL for (int j = 0; j < NR; ++j) t[i][j] = _mm512_setzero_ps();
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(HasZero ? 0 : 0x80));
  // lane l holds columns 4l .. 4l + 3: group 32 puts lanes 0..7 and 8..15 in two groups.
  const __m512i lane_group = g.group == 32 ? _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1) : _mm512_setzero_si512();
  const std::size_t groups = k / g.group;
  for (std::size_t c0 = 0; c0 < k; c0 += 64) {
    const std::size_t cols = k - c0 < 64 ? k - c0 : 64;  // 32 or 64
    const __mmask64 mask = _bzhi_u64(~std::uint64_t{0}, static_cast<unsigned>(cols));
    const std::size_t g0 = c0 / g.group;
    const __mmask16 gmask = g.group == 32 && g0 + 1 < groups && cols == 64 ? __mmask16{3} : __mmask16{1};
    __m512i av[MR], bs[MR];
    QUARRY_UNROLL for (int i = 0; i < MR; ++i) {
      av[i] = _mm512_maskz_loadu_epi8(mask, a + static_cast<std::size_t>(i) * lda + c0);
      bs[i] = grouped_sums<Arch, 7, HasZero>(a_bsum + static_cast<std::size_t>(i) * ldb + c0 / 4);  // u = w + 128
    }
    QUARRY_UNROLL for (int j = 0; j < NR; ++j) {
      const std::uint8_t* p = w + static_cast<std::size_t>(j) * ldw + c0;
      if constexpr (Prefetch)
        if (static_cast<std::size_t>(j) < pf_rows) _mm_prefetch(reinterpret_cast<const char*>(p + NR * ldw), _MM_HINT_T1);
      const __m512i u = _mm512_xor_si512(_mm512_maskz_loadu_epi8(mask, p), flip);
      const std::size_t at = static_cast<std::size_t>(j) * lds + g0;
      if constexpr (Prefetch)
        if (static_cast<std::size_t>(j) < pf_rows) prefetch_group_scales(g, (j0 + j) * lds + g0 + NR * lds);
      __m512 sv;
      __m512i zv;
      tl.spread(at, gmask, lane_group, &sv, &zv);  // lanes past the last group read a masked 0
      QUARRY_UNROLL for (int i = 0; i < MR; ++i)
        t[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(grouped_start<Arch, HasZero>(bs[i], zv), u, av[i])), sv, t[i][j]);
    }
  }
  QUARRY_UNROLL for (int i = 0; i < MR; ++i)
    QUARRY_UNROLL for (int j = 0; j < NR; ++j)
      g.y[(i0 + i) * g.ldy + j0 + j] = std::fma(w4_hsum<Arch>(t[i][j]), g.a_scale[i0 + i], g.bias ? g.bias[j0 + j] : 0.f);
}

/// AVX2 grouped-int8 tile: 32 columns (one group or half of one) per step into the 8 lanes of
/// its half of the 16; vpmaddubsw on |w| and sign(a, w) as the W8A8 kernel (asymmetric weights
/// as u - 128, with (128 - z) * sum a added back).
template <class Arch, int MR, int NR, bool Prefetch>
QUARRY_ALWAYS_INLINE void tile_s8g_avx2(const Q4GemmArgs& g, std::size_t i0, std::size_t j0, std::size_t pf_rows) noexcept {
  __m256 t[MR][NR][2];
  QUARRY_UNROLL for (int i = 0; i < MR; ++i)
    QUARRY_UNROLL for (int j = 0; j < NR; ++j) t[i][j][0] = t[i][j][1] = _mm256_setzero_ps();
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(g.w_zero ? 0x80 : 0));
  const __m256i ones16 = _mm256_set1_epi16(1);
  for (std::size_t c0 = 0; c0 < g.k; c0 += 32) {
    const int h = static_cast<int>((c0 / 32) % 2);
    const std::size_t grp = c0 / g.group;
    __m256i av[MR], bs[MR];
    QUARRY_UNROLL for (int i = 0; i < MR; ++i) {
      av[i] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g.a + (i0 + i) * g.lda + c0));
      bs[i] = g.w_zero ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(g.a_bsum + (i0 + i) * g.ld_bsum + c0 / 4))
                       : _mm256_setzero_si256();
    }
    QUARRY_UNROLL for (int j = 0; j < NR; ++j) {
      const std::uint8_t* p = g.w + (j0 + j) * g.ldw + c0;
      if constexpr (Prefetch)
        if (h == 0 && static_cast<std::size_t>(j) < pf_rows) _mm_prefetch(reinterpret_cast<const char*>(p + NR * g.ldw), _MM_HINT_T1);
      const __m256i w = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), flip);
      const __m256i wabs = _mm256_abs_epi8(w);
      const __m256 sv = _mm256_set1_ps(w4_scale<Arch>(g, j0 + j, grp));
      const __m256i back = g.w_zero ? _mm256_set1_epi32(128 - g.w_zero[(j0 + j) * g.ld_scale + grp]) : _mm256_setzero_si256();
      QUARRY_UNROLL for (int i = 0; i < MR; ++i) {
        __m256i d = _mm256_madd_epi16(_mm256_maddubs_epi16(wabs, _mm256_sign_epi8(av[i], w)), ones16);
        if (g.w_zero) d = _mm256_add_epi32(d, _mm256_mullo_epi32(back, bs[i]));
        t[i][j][h] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), sv, t[i][j][h]);
      }
    }
  }
  QUARRY_UNROLL for (int i = 0; i < MR; ++i)
    QUARRY_UNROLL for (int j = 0; j < NR; ++j)
      g.y[(i0 + i) * g.ldy + j0 + j] = std::fma(w4_hsum<Arch>(_mm256_add_ps(t[i][j][0], t[i][j][1])), g.a_scale[i0 + i],
                                                g.bias ? g.bias[j0 + j] : 0.f);
}

template <class Arch, int MR, int NR, bool Prefetch>
QUARRY_ALWAYS_INLINE void tile_s8g(const Q4GemmArgs& g, std::size_t i0, std::size_t j0, std::size_t pf_rows) noexcept {
  if constexpr (simd::is_avx512<Arch>) {
    with_grouped_types(g, [&]<bool HasZero, bool ScaleF16>() { tile_s8g_avx512<Arch, MR, NR, Prefetch, HasZero, ScaleF16>(g, i0, j0, pf_rows); });
  } else {
    tile_s8g_avx2<Arch, MR, NR, Prefetch>(g, i0, j0, pf_rows);
  }
}

// ---- Per-group products on panels (QuantizedPanels: W4A8, Q8_0's W8A8): AVX-512 and AVX2 ----

/// The activations' 4 bytes at p as one int32, for a broadcast (the compilers fold it into the
/// vpdpbusd as an embedded {1to16} broadcast).
QUARRY_ALWAYS_INLINE std::int32_t load4(const std::int8_t* p) noexcept {
  std::int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

/// Decode reads a quad as one sequential stream, which the hardware prefetchers follow by
/// themselves: on Zen 4 (TinyLlama's matrices in rotation, from DRAM, against the row-major
/// kernels in the same process; 1 / 2 threads) int4 without software prefetch ran 1.33-1.35x /
/// 1.05-1.10x the row-major's speed, with a prefetch 1 KiB ahead 1.19-1.20x / 1.06-1.11x (2 KiB
/// 1.14-1.23x, 4 KiB 0.92-0.96x); int8 per channel without 1.22-1.26x / 1.01-1.04x, 8 KiB
/// ahead 1.17x / 1.01x; on 4 KiB pages alike (int4 1.15x vs 1.01x on 1 thread). Only int8 per
/// group (Q8_0), whose group scales are a second stream, gains from it: 4 KiB ahead 1.01-1.04x
/// on 2 threads, none 0.95-1.00x (8 KiB 0.84-0.97x).
inline constexpr std::size_t kPanelPrefetchGrouped8 = 4096;

/// A per-group panel tile's operands from activation row i0 and panel p0 (panel_place: the
/// unit's W panels interleave block by block, 64 bytes each, their scales and zero points group
/// by group, 16 each), in locals so that the tiles' loops unroll with nothing reloaded.
template <int Bits, int W, bool HasZero, bool ScaleF16>
struct PanelTile {
  static constexpr std::size_t kCols = Bits == 4 ? 8 : 4;  // columns per 64-byte block
  using Scale = std::conditional_t<ScaleF16, std::uint16_t, float>;
  std::size_t groups, bpg, lda, ldg;
  const std::uint8_t* w;
  const Scale* sc;
  const std::uint8_t* zp;
  const std::int8_t* a;
  const std::int32_t* gs;
  QUARRY_ALWAYS_INLINE PanelTile(const Q4PanelArgs& g, std::size_t i0, std::size_t p0) noexcept
      : groups(g.k / g.group), bpg(g.group / kCols), lda(g.lda), ldg(g.ld_gsum) {
    const std::size_t base = p0 / W * W, sub = p0 - base;
    w = g.w + (base * (g.k / kCols) + sub) * 64;
    sc = static_cast<const Scale*>(g.w_scale) + (base * groups + sub) * 16;
    zp = HasZero ? g.w_zero + (base * groups + sub) * 16 : nullptr;
    a = g.a + i0 * lda;
    gs = g.a_gsum + i0 * ldg;
  }
};

/// AVX-512 per-group products on panels (int4 W4A8; int8, GGUF Q8_0's, W8A8): MR activation rows
/// x P panels of 16 weight rows. Per 64-byte block, one load and, per activation row: int4 (16
/// rows x 8 columns), the nibbles split with a shift and two ands, two vpdpbusd against the
/// row's 4 + 4 activations broadcast; int8 (16 rows x 4 columns), ^ 0x80 when symmetric (the
/// unsigned operand w + 128), one vpdpbusd. A group's int32 dots take one conversion and one
/// fma per 16 rows at its end. The start of each dot is -z x the group's activation sum, so the
/// unsigned products need no correction after. With one activation row (decode) each dot runs
/// as two chains (int4: low and high nibbles; int8: even and odd blocks) added at the group's
/// end, for more independent vpdpbusd in flight.
template <class Arch, int Bits, int MR, int P, int W, bool Prefetch, bool HasZero, bool ScaleF16>
QUARRY_ALWAYS_INLINE void panel_tile_avx512(const Q4PanelArgs& g, std::size_t i0, std::size_t p0) noexcept {
  static_assert(P <= W, "a tile's panels lie in one unit of the layout (a quad, or one panel)");
  constexpr int C = MR == 1 ? 2 : 1;
  using Tile = PanelTile<Bits, W, HasZero, ScaleF16>;
  const Tile tl(g, i0, p0);
  const std::size_t groups = tl.groups, bpg = tl.bpg, lda = tl.lda, ldg = tl.ldg;
  const std::uint8_t* const w = tl.w;
  const typename Tile::Scale* const sc = tl.sc;
  const std::uint8_t* const zp = tl.zp;
  const std::int8_t* const a = tl.a;
  const std::int32_t* const gs = tl.gs;
  const __m512i nibble = _mm512_set1_epi8(0x0f), flip = _mm512_set1_epi8(static_cast<char>(0x80));
  // The unsigned operand's zero point for symmetric weights: nibbles hold q + 8, int8 bytes
  // become w + 128 (^ 0x80) on the way in.
  constexpr int kSymmetricZero = Bits == 4 ? 8 : 128;
  __m512 t[MR][P];
  QUARRY_UNROLL for (int i = 0; i < MR; ++i)
    QUARRY_UNROLL for (int p = 0; p < P; ++p) t[i][p] = _mm512_setzero_ps();
  for (std::size_t gr = 0; gr < groups; ++gr) {
    __m512i acc[MR][P][C];
    QUARRY_UNROLL for (int p = 0; p < P; ++p) {
      __m512i z = _mm512_setzero_si512();
      if constexpr (HasZero) z = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(zp + (gr * W + p) * 16)));
      QUARRY_UNROLL for (int i = 0; i < MR; ++i) {
        const std::int32_t sum = gs[static_cast<std::size_t>(i) * ldg + gr];
        if constexpr (HasZero) acc[i][p][0] = _mm512_mullo_epi32(z, _mm512_set1_epi32(-sum));
        else acc[i][p][0] = _mm512_set1_epi32(-kSymmetricZero * sum);
        if constexpr (C == 2) acc[i][p][1] = _mm512_setzero_si512();
      }
    }
    const std::uint8_t* const wg = w + gr * bpg * 64 * W;
    const std::int8_t* const ag = a + gr * g.group;
    // One 64-byte block of each panel: int4 takes two vpdpbusd per activation row (the low and
    // high nibbles, chains 0 and C - 1), int8 one (into chain c).
    auto block = [&](std::size_t bb, int c) __attribute__((always_inline)) {
      QUARRY_UNROLL for (int p = 0; p < P; ++p) {
        const std::uint8_t* q = wg + (bb * W + static_cast<std::size_t>(p)) * 64;
        if constexpr (Prefetch) _mm_prefetch(reinterpret_cast<const char*>(q + kPanelPrefetchGrouped8), _MM_HINT_T1);
        const __m512i wv = _mm512_loadu_si512(q);
        if constexpr (Bits == 4) {
          const __m512i lo = _mm512_and_si512(wv, nibble), hi = _mm512_and_si512(_mm512_srli_epi16(wv, 4), nibble);
          QUARRY_UNROLL for (int i = 0; i < MR; ++i) {
            const std::int8_t* ap = ag + static_cast<std::size_t>(i) * lda + bb * 8;
            acc[i][p][0] = _mm512_dpbusd_epi32(acc[i][p][0], lo, _mm512_set1_epi32(load4(ap)));
            acc[i][p][C - 1] = _mm512_dpbusd_epi32(acc[i][p][C - 1], hi, _mm512_set1_epi32(load4(ap + 4)));
          }
        } else {
          const __m512i u = HasZero ? wv : _mm512_xor_si512(wv, flip);
          QUARRY_UNROLL for (int i = 0; i < MR; ++i)
            acc[i][p][c] = _mm512_dpbusd_epi32(acc[i][p][c], u, _mm512_set1_epi32(load4(ag + static_cast<std::size_t>(i) * lda + bb * 4)));
        }
      }
    };
    if constexpr (Bits == 4) {
      for (std::size_t bb = 0; bb < bpg; ++bb) block(bb, 0);
    } else {  // bpg is even (a group is 32, 64 or 128 columns)
      for (std::size_t bb = 0; bb < bpg; bb += 2) {
        block(bb, 0);
        block(bb + 1, C - 1);
      }
    }
    QUARRY_UNROLL for (int p = 0; p < P; ++p) {
      const typename Tile::Scale* s = sc + (gr * W + p) * 16;
      __m512 sv;
      if constexpr (ScaleF16) sv = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(s)));
      else sv = _mm512_loadu_ps(s);
      QUARRY_UNROLL for (int i = 0; i < MR; ++i) {
        __m512i d = acc[i][p][0];
        if constexpr (C == 2) d = _mm512_add_epi32(d, acc[i][p][1]);
        t[i][p] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), sv, t[i][p]);
      }
    }
  }
  QUARRY_UNROLL for (int p = 0; p < P; ++p) {
    const std::size_t j0 = (p0 + static_cast<std::size_t>(p)) * 16, rows = g.n - j0 < 16 ? g.n - j0 : 16;
    const __mmask16 mask = static_cast<__mmask16>((1u << rows) - 1);
    const __m512 bias = g.bias ? _mm512_maskz_loadu_ps(mask, g.bias + j0) : _mm512_setzero_ps();
    QUARRY_UNROLL for (int i = 0; i < MR; ++i)
      _mm512_mask_storeu_ps(g.y + (i0 + static_cast<std::size_t>(i)) * g.ldy + j0, mask,
                            _mm512_fmadd_ps(t[i][p], _mm512_set1_ps(g.a_scale[i0 + static_cast<std::size_t>(i)]), bias));
  }
}

/// AVX2 per-group products on panels: MR activation rows x P panels of a unit of W (a quad, or
/// one panel), each panel as two halves of 8 rows (32 bytes of each block), a group's blocks for
/// one half at a time (the other half's bytes are then in L1). int4: vpmaddubsw multiplies the
/// unsigned nibbles (0..15) by the activations in pairs, the low and high nibbles' pairs are
/// added in int16 (at most 2 x 2 x 15 x 127 = 7620: no saturation); int8: vpmaddubsw on |v| and
/// sign(a, v), as the row-major AVX2 W8A8. vpmaddwd by ones widens the pairs into the int32
/// dots: the same integers as AVX-512's, so the same floats. Decode takes a whole quad (one
/// sequential stream); the float totals live in memory (16 registers).
template <class Arch, int Bits, int MR, int P, int W, bool Prefetch, bool HasZero, bool ScaleF16>
QUARRY_ALWAYS_INLINE void panel_tile_avx2(const Q4PanelArgs& g, std::size_t i0, std::size_t p0) noexcept {
  static_assert(P <= W, "a tile's panels lie in one unit of the layout (a quad, or one panel)");
  using Tile = PanelTile<Bits, W, HasZero, ScaleF16>;
  constexpr std::size_t kCols = Tile::kCols;
  const Tile tl(g, i0, p0);
  const std::size_t groups = tl.groups, bpg = tl.bpg, lda = tl.lda, ldg = tl.ldg;
  const std::uint8_t* const w = tl.w;
  const typename Tile::Scale* const sc = tl.sc;
  const std::uint8_t* const zp = tl.zp;
  const std::int8_t* const a = tl.a;
  const std::int32_t* const gs = tl.gs;
  const __m256i nibble = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1), flip = _mm256_set1_epi8(static_cast<char>(0x80));
  alignas(32) float t[MR][P][16] = {};
  for (std::size_t gr = 0; gr < groups; ++gr) {
    const std::uint8_t* const wg = w + gr * bpg * 64 * W;
    QUARRY_UNROLL for (int h = 0; h < 2; ++h) {
      // Each dot starts from its zero point's share: int4, -z x the group sum (nibbles are
      // unsigned, z = 8 when symmetric); int8, 0 (symmetric: the bytes are the signed weights)
      // or (128 - z) x the sum (asymmetric: the bytes are taken as u - 128).
      __m256i acc[MR][P];
      QUARRY_UNROLL for (int p = 0; p < P; ++p) {
        __m256i z = _mm256_setzero_si256();
        if constexpr (HasZero) z = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(zp + (gr * W + p) * 16 + h * 8)));
        QUARRY_UNROLL for (int i = 0; i < MR; ++i) {
          const std::int32_t sum = gs[static_cast<std::size_t>(i) * ldg + gr];
          if constexpr (Bits == 4 && HasZero) acc[i][p] = _mm256_mullo_epi32(z, _mm256_set1_epi32(-sum));
          else if constexpr (Bits == 4) acc[i][p] = _mm256_set1_epi32(-8 * sum);
          else if constexpr (HasZero) acc[i][p] = _mm256_mullo_epi32(_mm256_sub_epi32(_mm256_set1_epi32(128), z), _mm256_set1_epi32(sum));
          else acc[i][p] = _mm256_setzero_si256();
        }
      }
      for (std::size_t bb = 0; bb < bpg; ++bb) {
        const std::int8_t* const ab = a + (gr * bpg + bb) * kCols;
        QUARRY_UNROLL for (int p = 0; p < P; ++p) {
          const std::uint8_t* q = wg + (bb * W + static_cast<std::size_t>(p)) * 64;
          if constexpr (Prefetch)
            if (h == 0) _mm_prefetch(reinterpret_cast<const char*>(q + kPanelPrefetchGrouped8), _MM_HINT_T1);
          const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + h * 32));
          if constexpr (Bits == 4) {
            const __m256i lo = _mm256_and_si256(wv, nibble), hi = _mm256_and_si256(_mm256_srli_epi16(wv, 4), nibble);
            QUARRY_UNROLL for (int i = 0; i < MR; ++i) {
              const std::int8_t* ap = ab + static_cast<std::size_t>(i) * lda;
              const __m256i pairs = _mm256_add_epi16(_mm256_maddubs_epi16(lo, _mm256_set1_epi32(load4(ap))),
                                                     _mm256_maddubs_epi16(hi, _mm256_set1_epi32(load4(ap + 4))));
              acc[i][p] = _mm256_add_epi32(acc[i][p], _mm256_madd_epi16(pairs, ones));
            }
          } else {  // |v| x sign(a, v), as the row-major AVX2 W8A8
            const __m256i v = HasZero ? _mm256_xor_si256(wv, flip) : wv, mag = _mm256_abs_epi8(v);
            QUARRY_UNROLL for (int i = 0; i < MR; ++i) {
              const __m256i av = _mm256_set1_epi32(load4(ab + static_cast<std::size_t>(i) * lda));
              acc[i][p] = _mm256_add_epi32(acc[i][p], _mm256_madd_epi16(_mm256_maddubs_epi16(mag, _mm256_sign_epi8(av, v)), ones));
            }
          }
        }
      }
      QUARRY_UNROLL for (int p = 0; p < P; ++p) {
        const typename Tile::Scale* s = sc + (gr * W + p) * 16 + h * 8;
        __m256 sv;
        if constexpr (ScaleF16) sv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s)));
        else sv = _mm256_loadu_ps(s);
        QUARRY_UNROLL for (int i = 0; i < MR; ++i) {
          float* tp = t[i][p] + h * 8;
          _mm256_store_ps(tp, _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[i][p]), sv, _mm256_load_ps(tp)));
        }
      }
    }
  }
  QUARRY_UNROLL for (int p = 0; p < P; ++p) {
    const std::size_t j0 = (p0 + static_cast<std::size_t>(p)) * 16, rows = g.n - j0 < 16 ? g.n - j0 : 16;
    QUARRY_UNROLL for (int i = 0; i < MR; ++i) {
      const float as = g.a_scale[i0 + static_cast<std::size_t>(i)];
      for (std::size_t r = 0; r < rows; ++r)
        g.y[(i0 + static_cast<std::size_t>(i)) * g.ldy + j0 + r] = std::fma(t[i][p][r], as, g.bias ? g.bias[j0 + r] : 0.f);
    }
  }
}

// ---- W8A8 on int8 panels (QuantizedPanels): AVX-512 VNNI and AVX2 ----

/// AVX-512 W8A8 on panels: MR activation rows x P panels of a unit of W. Per 64-byte block (16
/// rows x 4 columns) one load, ^ 0x80 for symmetric int8 (vpdpbusd's unsigned operand: w + 128),
/// and per activation row one vpdpbusd against its 4 activations broadcast. The sums start at
/// 0 and end less z x the row's activation sum (z = 128 symmetric, the row's zero point else),
/// modulo 2^32 as gemm_s8's; then gemm_s8's epilogue, fma(float(acc), a_scale x w_scale, bias),
/// 16 rows at once. Decode (MR = 1) runs two chains per panel (even and odd blocks).
template <class Arch, int MR, int P, int W, bool HasZero>
QUARRY_ALWAYS_INLINE void panel_tile_s8_avx512(const QGemmArgs& g, std::size_t i0, std::size_t p0) noexcept {
  static_assert(P <= W, "a tile's panels lie in one unit of the layout (a quad, or one panel)");
  constexpr int C = MR == 1 ? 2 : 1;
  const std::size_t blocks = (g.k + 3) / 4, lda = g.lda;
  const std::size_t base = p0 / W * W, sub = p0 - base;
  const auto* const w = reinterpret_cast<const std::uint8_t*>(g.w) + (base * blocks + sub) * 64;
  const std::int8_t* const a = g.a + i0 * lda;
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512i acc[MR][P][C];
  QUARRY_UNROLL for (int i = 0; i < MR; ++i)
    QUARRY_UNROLL for (int p = 0; p < P; ++p)
      QUARRY_UNROLL for (int c = 0; c < C; ++c) acc[i][p][c] = _mm512_setzero_si512();
  auto step = [&](std::size_t b, int c) __attribute__((always_inline)) {
    QUARRY_UNROLL for (int p = 0; p < P; ++p) {
      const std::uint8_t* q = w + (b * W + static_cast<std::size_t>(p)) * 64;
      __m512i wv = _mm512_loadu_si512(q);
      if constexpr (!HasZero) wv = _mm512_xor_si512(wv, flip);
      QUARRY_UNROLL for (int i = 0; i < MR; ++i)
        acc[i][p][c] = _mm512_dpbusd_epi32(acc[i][p][c], wv, _mm512_set1_epi32(load4(a + static_cast<std::size_t>(i) * lda + b * 4)));
    }
  };
  std::size_t b = 0;
  if constexpr (C == 2)
    for (; b + 2 <= blocks; b += 2) {
      step(b, 0);
      step(b + 1, 1);
    }
  for (; b < blocks; ++b) step(b, 0);
  QUARRY_UNROLL for (int p = 0; p < P; ++p) {
    const std::size_t j0 = (p0 + static_cast<std::size_t>(p)) * 16, rows = g.n - j0 < 16 ? g.n - j0 : 16;
    const __mmask16 mask = static_cast<__mmask16>((1u << rows) - 1);
    const __m512 ws = _mm512_maskz_loadu_ps(mask, g.w_scale + j0);
    const __m512 bias = g.bias ? _mm512_maskz_loadu_ps(mask, g.bias + j0) : _mm512_setzero_ps();
    __m512i z = _mm512_set1_epi32(128);
    if constexpr (HasZero) z = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(mask, g.w_zero + j0));
    QUARRY_UNROLL for (int i = 0; i < MR; ++i) {
      __m512i d = acc[i][p][0];
      if constexpr (C == 2) d = _mm512_add_epi32(d, acc[i][p][1]);
      d = _mm512_sub_epi32(d, _mm512_mullo_epi32(z, _mm512_set1_epi32(g.a_sum[i0 + static_cast<std::size_t>(i)])));
      const __m512 scale = _mm512_mul_ps(_mm512_set1_ps(g.a_scale[i0 + static_cast<std::size_t>(i)]), ws);
      _mm512_mask_storeu_ps(g.y + (i0 + static_cast<std::size_t>(i)) * g.ldy + j0, mask, _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), scale, bias));
    }
  }
}

/// AVX2 W8A8 on panels: MR activation rows x P panels of a unit of W, each panel as two halves
/// of 8 rows. The int8 products as the row-major AVX2 kernel takes them: vpmaddubsw on |v| and
/// sign(a, v), v the weight as int8 (asymmetric uint8 as u - 128, corrected by (128 - z) x the
/// activation sum after), pairs at most 2 x 128 x 127 (no saturation), vpmaddwd by ones into
/// int32. The same sums modulo 2^32 as gemm_s8, so the same floats.
template <class Arch, int MR, int P, int W, bool HasZero>
QUARRY_ALWAYS_INLINE void panel_tile_s8_avx2(const QGemmArgs& g, std::size_t i0, std::size_t p0) noexcept {
  static_assert(P <= W, "a tile's panels lie in one unit of the layout (a quad, or one panel)");
  const std::size_t blocks = (g.k + 3) / 4, lda = g.lda;
  const std::size_t base = p0 / W * W, sub = p0 - base;
  const auto* const w = reinterpret_cast<const std::uint8_t*>(g.w) + (base * blocks + sub) * 64;
  const std::int8_t* const a = g.a + i0 * lda;
  const __m256i ones = _mm256_set1_epi16(1), flip = _mm256_set1_epi8(static_cast<char>(0x80));
  __m256i acc[MR][P][2];
  QUARRY_UNROLL for (int i = 0; i < MR; ++i)
    QUARRY_UNROLL for (int p = 0; p < P; ++p) acc[i][p][0] = acc[i][p][1] = _mm256_setzero_si256();
  for (std::size_t b = 0; b < blocks; ++b) {
    QUARRY_UNROLL for (int p = 0; p < P; ++p) {
      const std::uint8_t* q = w + (b * W + static_cast<std::size_t>(p)) * 64;
      QUARRY_UNROLL for (int h = 0; h < 2; ++h) {
        __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + h * 32));
        if constexpr (HasZero) v = _mm256_xor_si256(v, flip);
        const __m256i mag = _mm256_abs_epi8(v);
        QUARRY_UNROLL for (int i = 0; i < MR; ++i) {
          const __m256i av = _mm256_set1_epi32(load4(a + static_cast<std::size_t>(i) * lda + b * 4));
          acc[i][p][h] = _mm256_add_epi32(acc[i][p][h], _mm256_madd_epi16(_mm256_maddubs_epi16(mag, _mm256_sign_epi8(av, v)), ones));
        }
      }
    }
  }
  QUARRY_UNROLL for (int p = 0; p < P; ++p) {
    const std::size_t j0 = (p0 + static_cast<std::size_t>(p)) * 16, rows = g.n - j0 < 16 ? g.n - j0 : 16;
    QUARRY_UNROLL for (int i = 0; i < MR; ++i) {
      alignas(32) std::int32_t out[16];
      _mm256_store_si256(reinterpret_cast<__m256i*>(out), acc[i][p][0]);
      _mm256_store_si256(reinterpret_cast<__m256i*>(out + 8), acc[i][p][1]);
      const std::uint32_t sum = static_cast<std::uint32_t>(g.a_sum[i0 + static_cast<std::size_t>(i)]);
      for (std::size_t r = 0; r < rows; ++r) {
        std::uint32_t d = static_cast<std::uint32_t>(out[r]);
        if constexpr (HasZero) d += (128u - std::uint32_t{g.w_zero[j0 + r]}) * sum;
        store_output<Arch>(g, i0 + static_cast<std::size_t>(i), j0 + r, static_cast<std::int32_t>(d));
      }
    }
  }
}

#endif  // x86-64

template <class Arch>
float quantize_row_s8(const float* x, std::size_t k, std::int8_t* q, std::int32_t* q_sum) noexcept {
#if defined(__x86_64__) || defined(_M_X64)
  if constexpr (simd::is_avx512<Arch>) {
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
    __m512i amax = _mm512_setzero_si512();
    std::size_t i = 0;
    for (; i + 16 <= k; i += 16) amax = _mm512_max_epu32(amax, _mm512_and_si512(_mm512_loadu_si512(x + i), abs_mask));
    if (i < k) {
      const __mmask16 m = static_cast<__mmask16>(_bzhi_u32(0xffffu, static_cast<unsigned>(k - i)));
      amax = _mm512_max_epu32(amax, _mm512_and_si512(_mm512_maskz_loadu_epi32(m, x + i), abs_mask));
    }
    float scale;
    const float inv = activation_inv_scale<Arch>(_mm512_reduce_max_epu32(amax), &scale);
    const __m512 vinv = _mm512_set1_ps(inv);
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    __m512i sum = _mm512_setzero_si512();
    // With inv == 0 every lane is 0 * x: NaN for NaN or infinite x, which cvtps2dq turns into
    // INT_MIN; the clamp and the zeroing below keep q = 0 as the reference does.
    const __mmask16 keep = inv == 0.f ? __mmask16{0} : __mmask16{0xffff};
    for (i = 0; i < k; i += 16) {
      const __mmask16 m = static_cast<__mmask16>(keep & (k - i >= 16 ? 0xffffu : _bzhi_u32(0xffffu, static_cast<unsigned>(k - i))));
      __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, x + i), vinv));
      v = _mm512_maskz_min_epi32(m, _mm512_max_epi32(v, lo), hi);
      sum = _mm512_add_epi32(sum, v);
      const __mmask16 store = static_cast<__mmask16>(k - i >= 16 ? 0xffffu : _bzhi_u32(0xffffu, static_cast<unsigned>(k - i)));
      _mm512_mask_cvtsepi32_storeu_epi8(q + i, store, v);
    }
    const __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(sum), _mm512_extracti64x4_epi64(sum, 1));
    *q_sum = hsum_epi32_256<Arch>(h);
    return scale;
  } else if constexpr (simd::is_avx2<Arch>) {
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
    __m256i amax = _mm256_setzero_si256();
    std::size_t i = 0;
    for (; i + 8 <= k; i += 8)
      amax = _mm256_max_epu32(amax, _mm256_and_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i)), abs_mask));
    __m128i m4 = _mm_max_epu32(_mm256_castsi256_si128(amax), _mm256_extracti128_si256(amax, 1));
    m4 = _mm_max_epu32(m4, _mm_shuffle_epi32(m4, 0x4e));
    m4 = _mm_max_epu32(m4, _mm_shuffle_epi32(m4, 0xb1));
    std::uint32_t amax_bits = static_cast<std::uint32_t>(_mm_cvtsi128_si32(m4));
    for (; i < k; ++i) {
      const std::uint32_t b = float_to_bits<Arch>(x[i]) & 0x7fffffffu;
      amax_bits = b > amax_bits ? b : amax_bits;
    }
    float scale;
    const float inv = activation_inv_scale<Arch>(amax_bits, &scale);
    if (inv == 0.f) {
      for (i = 0; i < k; ++i) q[i] = 0;
      *q_sum = 0;
      return scale;
    }
    const __m256 vinv = _mm256_set1_ps(inv);
    const __m256i lo = _mm256_set1_epi32(-127), hi = _mm256_set1_epi32(127);
    const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    __m256i sum = _mm256_setzero_si256();
    auto q8 = [&](std::size_t at) {
      __m256i v = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + at), vinv));
      v = _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
      sum = _mm256_add_epi32(sum, v);
      return v;
    };
    for (i = 0; i + 32 <= k; i += 32) {
      const __m256i v0 = q8(i), v1 = q8(i + 8), v2 = q8(i + 16), v3 = q8(i + 24);
      // packs interleave 128-bit lanes; the permute puts the 4-byte groups back in order.
      const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(v0, v1), _mm256_packs_epi32(v2, v3));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), _mm256_permutevar8x32_epi32(b, order));
    }
    std::uint32_t s = static_cast<std::uint32_t>(hsum_epi32_256<Arch>(sum));
    ref_quantize_rest<Arch>(x + i, k - i, inv, q + i, &s);
    *q_sum = static_cast<std::int32_t>(s);
    return scale;
  }
#endif
  return ref_quantize_row_s8<Arch>(x, k, q, q_sum);
}

template <class Arch>
void gemm_s8(const QGemmArgs& g) noexcept {
#if defined(__x86_64__) || defined(_M_X64)
  if constexpr (simd::is_avx512<Arch> || simd::is_avx2<Arch>) {
    constexpr bool vnni = simd::is_avx512<Arch>;
    constexpr int kDecodeRows = vnni ? 8 : 4;  // weight rows in flight for one activation row
    constexpr int MR = 4;                      // activation rows per register tile
    constexpr int NR = vnni ? 4 : 2;           // weight rows per register tile
    constexpr std::size_t kPackedMinRows = 16; // from here packing 32-row panels pays (AVX-512)
    if constexpr (vnni) {
      if (g.m >= kPackedMinRows && g.scratch && (g.w_zero || g.a_u8)) {
        gemm_s8_packed<Arch>(g);
        return;
      }
    }
    if (g.m == 1) {
      std::size_t j = 0;
      for (; j + kDecodeRows <= g.n; j += kDecodeRows) {
        const std::size_t next = g.n - (j + kDecodeRows);  // rows of the next tile, prefetched meanwhile
        tile<Arch, 1, kDecodeRows, true>(g, 0, j, next < kDecodeRows ? next : std::size_t{kDecodeRows});
      }
      for (; j < g.n; ++j) tile<Arch, 1, 1, true>(g, 0, j, j + 1 < g.n ? 1 : 0);
      return;
    }
    // Weight rows in blocks of ~256 KiB (they stay in L2 while every activation tile passes).
    std::size_t nb = (std::size_t{256} << 10) / (g.k ? g.k : 1);
    nb = nb < NR ? NR : nb - nb % NR;
    for (std::size_t jb = 0; jb < g.n; jb += nb) {
      const std::size_t je = jb + nb < g.n ? jb + nb : g.n;
      std::size_t i = 0;
      for (; i + MR <= g.m; i += MR) tile_row_block<Arch, MR, NR>(g, i, jb, je);
      switch (g.m - i) {
        case 3: tile_row_block<Arch, 3, NR>(g, i, jb, je); break;
        case 2: tile_row_block<Arch, 2, NR>(g, i, jb, je); break;
        case 1: tile_row_block<Arch, 1, NR>(g, i, jb, je); break;
        default: break;
      }
    }
    return;
  }
#endif
  ref_gemm_s8<Arch>(g);
}

// The tiling the per_group kernels (W4A32, W4A8, grouped W8A8) share, calling
// tile(mr, nr, prefetch, i0, j0, pf_rows) for a tile of mr activation rows x nr weight rows
// (integral constants) at (i0, j0). Decode (one activation row) runs DecodeRows weight rows in
// flight and prefetches the next tile's pf_rows rows. Prefill walks weight rows in blocks of
// ~512 KiB (they stay in L2 across activation tiles), MR activation rows x NR weight rows at a
// time. `tile` is a lambda of an Arch-templated kernel, so each ISA gets its own copy of this.
template <int MR, int NR, int DecodeRows, class Tile>
QUARRY_ALWAYS_INLINE void drive_grouped_tiles(const Q4GemmArgs& g, Tile&& tile) noexcept {
  using std::integral_constant;
  if (g.m == 1) {
    std::size_t j = 0;
    for (; j + DecodeRows <= g.n; j += DecodeRows) {
      const std::size_t next = g.n - (j + DecodeRows);
      tile(integral_constant<int, 1>{}, integral_constant<int, DecodeRows>{}, std::true_type{}, 0, j,
           next < DecodeRows ? next : std::size_t{DecodeRows});
    }
    for (; j < g.n; ++j)
      tile(integral_constant<int, 1>{}, integral_constant<int, 1>{}, std::true_type{}, 0, j, j + 1 < g.n ? std::size_t{1} : std::size_t{0});
    return;
  }
  auto row_block = [&](auto mr, std::size_t i, std::size_t jb, std::size_t je) __attribute__((always_inline)) {
    std::size_t j = jb;
    for (; j + NR <= je; j += NR) tile(mr, integral_constant<int, NR>{}, std::false_type{}, i, j, 0);
    for (; j < je; ++j) tile(mr, integral_constant<int, 1>{}, std::false_type{}, i, j, 0);
  };
  std::size_t nb = (std::size_t{512} << 10) / (g.k ? g.k : 1);
  nb = nb < NR ? NR : nb - nb % NR;
  for (std::size_t jb = 0; jb < g.n; jb += nb) {
    const std::size_t je = jb + nb < g.n ? jb + nb : g.n;
    std::size_t i = 0;
    for (; i + MR <= g.m; i += MR) row_block(integral_constant<int, MR>{}, i, jb, je);
    for (; i < g.m; ++i) row_block(integral_constant<int, 1>{}, i, jb, je);
  }
}

template <class Arch>
void gemm_w4_f32(const Q4GemmArgs& g) noexcept {
#if defined(__x86_64__) || defined(_M_X64)
  if constexpr (simd::is_avx512<Arch> || simd::is_avx2<Arch>) {
    drive_grouped_tiles<simd::is_avx512<Arch> ? 4 : 2, 2, 4>(g, [&](auto mr, auto nr, auto prefetch, std::size_t i, std::size_t j, std::size_t pf) {
      tile_w4<Arch, decltype(mr)::value, decltype(nr)::value, decltype(prefetch)::value>(g, i, j, pf);
    });
    return;
  }
#endif
  ref_gemm_w4_f32<Arch>(g);
}

template <class Arch>
void gemm_w4_s8(const Q4GemmArgs& g) noexcept {
#if defined(__x86_64__) || defined(_M_X64)
  if constexpr (simd::is_avx512<Arch>) {
    if (g.m == 1) {
      auto rows = [&]<bool HasZero, bool ScaleF16>() __attribute__((always_inline)) {
        constexpr int R = 8;
        std::size_t j = 0;
        for (; j + 2 * R <= g.n; j += R) decode_w4_s8_avx512<Arch, R, true, HasZero, ScaleF16>(g, j);
        for (; j + R <= g.n; j += R) decode_w4_s8_avx512<Arch, R, false, HasZero, ScaleF16>(g, j);
        for (; j < g.n; ++j) decode_w4_s8_avx512<Arch, 1, false, HasZero, ScaleF16>(g, j);
      };
      with_grouped_types(g, rows);
      return;
    }
  }
  if constexpr (simd::is_avx512<Arch> || simd::is_avx2<Arch>) {
    drive_grouped_tiles<3, 4, 8>(g, [&](auto mr, auto nr, auto prefetch, std::size_t i, std::size_t j, std::size_t pf) {
      tile_w4_s8<Arch, decltype(mr)::value, decltype(nr)::value, decltype(prefetch)::value>(g, i, j, pf);
    });
    return;
  }
#endif
  ref_gemm_w4_s8<Arch>(g);
}

template <class Arch>
void gemm_s8_grouped(const Q4GemmArgs& g) noexcept {
#if defined(__x86_64__) || defined(_M_X64)
  if constexpr (simd::is_avx512<Arch> || simd::is_avx2<Arch>) {
    drive_grouped_tiles<3, 4, 8>(g, [&](auto mr, auto nr, auto prefetch, std::size_t i, std::size_t j, std::size_t pf) {
      tile_s8g<Arch, decltype(mr)::value, decltype(nr)::value, decltype(prefetch)::value>(g, i, j, pf);
    });
    return;
  }
#endif
  ref_gemm_s8_grouped<Arch>(g);
}

// The tiling the panel kernels share, calling tile(mr, p, w, decode, i, p0) for mr activation
// rows x p panels of a unit of w panels (integral constants; decode a bool constant) from
// activation row i and panel p0. Decode (m = 1) takes a quad (64 rows, one sequential stream)
// at a time, then the single panels. Prefill walks blocks of quads of ~512 KiB (they stay in L2
// across the activation tiles), MR activation rows x PQ panels of a quad at a time.
template <int MR, int PQ, class Tile>
QUARRY_ALWAYS_INLINE void drive_panels(std::size_t m, std::size_t n, std::size_t panel_bytes, Tile&& tile) noexcept {
  using std::integral_constant;
  using One = integral_constant<int, 1>;
  using Four = integral_constant<int, 4>;
  const std::size_t np = (n + 15) / 16, full = np / 4 * 4;
  if (m == 1) {
    for (std::size_t p = 0; p < full; p += 4) tile(One{}, Four{}, Four{}, std::true_type{}, 0, p);
    for (std::size_t p = full; p < np; ++p) tile(One{}, One{}, One{}, std::true_type{}, 0, p);
    return;
  }
  std::size_t nb = (std::size_t{512} << 10) / (panel_bytes + 1);
  nb = nb < 4 ? 4 : nb - nb % 4;
  auto rows = [&](auto mr, std::size_t i, std::size_t pb, std::size_t pe) __attribute__((always_inline)) {
    std::size_t p = pb;
    for (; p < pe && p < full; p += PQ) tile(mr, integral_constant<int, PQ>{}, Four{}, std::false_type{}, i, p);
    for (; p < pe; ++p) tile(mr, One{}, One{}, std::false_type{}, i, p);
  };
  for (std::size_t pb = 0; pb < np; pb += nb) {
    const std::size_t pe = pb + nb < np ? pb + nb : np;
    std::size_t i = 0;
    for (; i + MR <= m; i += MR) rows(integral_constant<int, MR>{}, i, pb, pe);
    if constexpr (MR > 2)
      if (m - i == 2) {
        rows(integral_constant<int, 2>{}, i, pb, pe);
        i += 2;
      }
    for (; i < m; ++i) rows(One{}, i, pb, pe);
  }
}

template <class Arch>
void gemm_grouped_panels(const Q4PanelArgs& g) noexcept {
#if defined(__x86_64__) || defined(_M_X64)
  if constexpr (simd::is_avx512<Arch> || simd::is_avx2<Arch>) {
    // AVX-512 prefill: 3 activation rows x a quad (24 accumulators; on Zen 4, int4 4096 x 4096
    // at M = 512: 0.82 of W8A8's speed, against 0.74 for 4 rows x 2 panels, 0.75 for 4 x 4, 0.79
    // for 2 x 4). AVX2: 2 x 2 panels. Decode prefetches for int8 only (kPanelPrefetchGrouped8).
    constexpr int MR = simd::is_avx512<Arch> ? 3 : 2, PQ = simd::is_avx512<Arch> ? 4 : 2;
    auto run = [&]<int Bits, bool HasZero, bool ScaleF16>() __attribute__((always_inline)) {
      drive_panels<MR, PQ>(g.m, g.n, g.k * (Bits == 4 ? 8 : 16), [&](auto mr, auto pp, auto ww, auto decode, std::size_t i, std::size_t p) __attribute__((always_inline)) {
        constexpr int R = decltype(mr)::value, P = decltype(pp)::value, W = decltype(ww)::value;
        constexpr bool Prefetch = decltype(decode)::value && Bits == 8;
        if constexpr (simd::is_avx512<Arch>) panel_tile_avx512<Arch, Bits, R, P, W, Prefetch, HasZero, ScaleF16>(g, i, p);
        else panel_tile_avx2<Arch, Bits, R, P, W, Prefetch, HasZero, ScaleF16>(g, i, p);
      });
    };
    with_grouped_types(g, [&]<bool HasZero, bool ScaleF16>() __attribute__((always_inline)) {
      if (g.bits == 4) run.template operator()<4, HasZero, ScaleF16>();
      else run.template operator()<8, HasZero, ScaleF16>();
    });
    return;
  }
#endif
  ref_gemm_grouped_panels<Arch>(g);
}

template <class Arch>
void gemm_s8_panels(const QGemmArgs& g) noexcept {
#if defined(__x86_64__) || defined(_M_X64)
  if constexpr (simd::is_avx512<Arch> || simd::is_avx2<Arch>) {
    // Prefill: AVX-512 4 activation rows x a quad (16 int32 accumulators); AVX2 2 x 2 panels x 2
    // halves. Decode without software prefetch (see kPanelPrefetchGrouped8).
    constexpr int MR = simd::is_avx512<Arch> ? 4 : 2, PQ = simd::is_avx512<Arch> ? 4 : 2;
    auto run = [&]<bool HasZero>() __attribute__((always_inline)) {
      drive_panels<MR, PQ>(g.m, g.n, (g.k + 3) / 4 * 64, [&](auto mr, auto pp, auto ww, auto, std::size_t i, std::size_t p) __attribute__((always_inline)) {
        constexpr int R = decltype(mr)::value, P = decltype(pp)::value, W = decltype(ww)::value;
        if constexpr (simd::is_avx512<Arch>) panel_tile_s8_avx512<Arch, R, P, W, HasZero>(g, i, p);
        else panel_tile_s8_avx2<Arch, R, P, W, HasZero>(g, i, p);
      });
    };
    if (g.w_zero) run.template operator()<true>();
    else run.template operator()<false>();
    return;
  }
#endif
  ref_gemm_s8_panels<Arch>(g);
}

/// The QuantKernels table for one arch tag.
template <class Arch>
constexpr QuantKernels make_quant_kernels() noexcept {
  if constexpr (simd::is_scalar<Arch>)
    return QuantKernels{&ref_quantize_row_s8<Arch>, &ref_gemm_s8<Arch>, &ref_gemm_w4_f32<Arch>, &ref_gemm_w4_s8<Arch>,
                        &ref_gemm_s8_grouped<Arch>, &ref_gemm_grouped_panels<Arch>, &ref_gemm_s8_panels<Arch>};
  else
    return QuantKernels{&quantize_row_s8<Arch>, &gemm_s8<Arch>, &gemm_w4_f32<Arch>, &gemm_w4_s8<Arch>, &gemm_s8_grouped<Arch>,
                        &gemm_grouped_panels<Arch>, &gemm_s8_panels<Arch>};
}

}  // namespace quarry::detail::cpu_kernels
