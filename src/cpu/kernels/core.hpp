// Bodies of the core kernels (CoreKernels in quarry/core/detail/core_kernels.hpp), templates on
// the arch tag. Included only by src/cpu/<isa>.cpp, each compiled with its own ISA's flags.
//
// Rule for this folder: everything a kernel calls is either a template on Arch, an intrinsic,
// or always_inline. A plain inline function emitted out of line in the AVX-512 file could be
// chosen by the linker for the whole program and crash an AVX2-only CPU; the test
// `isa_symbols` checks the built library for such shared symbols.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cpu/kernels/dpbusd.hpp"
#include "cpu/xsimd_compat.hpp"
#include "quarry/core/detail/core_kernels.hpp"
#include "quarry/core/float16.hpp"

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

/// Unrolls the loop that follows fully (register-tile loops over MR / NR): GCC leaves a loop of
/// 8 with a large body rolled, and then keeps the tile's accumulators in memory. Clang reads the
/// same pragma.
#define QUARRY_UNROLL _Pragma("GCC unroll 16")

namespace quarry::detail::cpu_kernels {

// ---- Scalar reference bodies. Templates on Arch only so each ISA file has its own copy. ----

template <class Arch>
QUARRY_ALWAYS_INLINE float bits_to_float(std::uint32_t b) noexcept {
  float f;
  __builtin_memcpy(&f, &b, sizeof f);
  return f;
}
template <class Arch>
QUARRY_ALWAYS_INLINE std::uint32_t float_to_bits(float f) noexcept {
  std::uint32_t b;
  __builtin_memcpy(&b, &f, sizeof b);
  return b;
}

template <class Arch>
void ref_f16_to_f32(const std::uint16_t* src, float* dst, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) dst[i] = bits_to_float<Arch>(f16_bits_to_f32_bits(src[i]));
}
template <class Arch>
void ref_f32_to_f16(const float* src, std::uint16_t* dst, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) dst[i] = f32_bits_to_f16_bits(float_to_bits<Arch>(src[i]));
}
template <class Arch>
void ref_bf16_to_f32(const std::uint16_t* src, float* dst, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) dst[i] = bits_to_float<Arch>(static_cast<std::uint32_t>(src[i]) << 16);
}
template <class Arch>
void ref_f32_to_bf16(const float* src, std::uint16_t* dst, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) dst[i] = f32_bits_to_bf16_bits(float_to_bits<Arch>(src[i]));
}
template <class Arch>
float ref_dot_f32(const float* a, const float* b, std::size_t n) noexcept {
  float s = 0.f;
  for (std::size_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}
template <class Arch>
float ref_l2_sqr_f32(const float* a, const float* b, std::size_t n) noexcept {
  float s = 0.f;
  for (std::size_t i = 0; i < n; ++i) {
    const float d = a[i] - b[i];
    s += d * d;
  }
  return s;
}
template <class Arch>
std::int32_t ref_dot_i8(const std::int8_t* a, const std::int8_t* b, std::size_t n) noexcept {
  std::uint32_t s = 0;  // unsigned: wraps modulo 2^32 exactly as the SIMD int32 lanes do
  for (std::size_t i = 0; i < n; ++i) s += static_cast<std::uint32_t>(std::int32_t{a[i]} * std::int32_t{b[i]});
  return static_cast<std::int32_t>(s);
}

#if defined(__x86_64__) || defined(_M_X64)
/// Per 128-bit lane l, the sums of lane l of a, b, c and d: element (l, 0) = a[4l] + .. + a[4l + 3],
/// (l, 1) the same of b, and so on (wrapping like the lanes).
template <class Arch>
QUARRY_ALWAYS_INLINE __m512i lane_sums4_epi32(__m512i a, __m512i b, __m512i c, __m512i d) noexcept {
  const __m512i ab = _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b));  // a0+a2 b0+b2 a1+a3 b1+b3
  const __m512i cd = _mm512_add_epi32(_mm512_unpacklo_epi32(c, d), _mm512_unpackhi_epi32(c, d));
  return _mm512_add_epi32(_mm512_unpacklo_epi64(ab, cd), _mm512_unpackhi_epi64(ab, cd));
}
#endif

// ---- Dispatched bodies: SIMD for the bulk, the reference for the tail. ----

template <class Arch>
void f16_to_f32(const std::uint16_t* src, float* dst, std::size_t n) noexcept {
  std::size_t i = 0;
#if defined(__x86_64__) || defined(_M_X64)
  if constexpr (simd::is_avx512<Arch>) {
    for (; i + 16 <= n; i += 16)
      _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
  } else if constexpr (simd::is_avx2<Arch>) {
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  }
#endif
#if defined(__aarch64__)
  if constexpr (simd::is_neon<Arch>) {
    for (; i + 4 <= n; i += 4)
      vst1q_f32(dst + i, vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(src + i))));
  }
#endif
  ref_f16_to_f32<Arch>(src + i, dst + i, n - i);
}

template <class Arch>
void f32_to_f16(const float* src, std::uint16_t* dst, std::size_t n) noexcept {
  std::size_t i = 0;
#if defined(__x86_64__) || defined(_M_X64)
  if constexpr (simd::is_avx512<Arch>) {
    for (; i + 16 <= n; i += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                          _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  } else if constexpr (simd::is_avx2<Arch>) {
    for (; i + 8 <= n; i += 8)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                       _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
#endif
#if defined(__aarch64__)
  if constexpr (simd::is_neon<Arch>) {
    for (; i + 4 <= n; i += 4)  // FPCR's default rounding is to nearest even
      vst1_u16(dst + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(src + i))));
  }
#endif
  ref_f32_to_f16<Arch>(src + i, dst + i, n - i);
}

template <class Arch>
void bf16_to_f32(const std::uint16_t* src, float* dst, std::size_t n) noexcept {
  std::size_t i = 0;
#if defined(__x86_64__) || defined(_M_X64)
  if constexpr (simd::is_avx512<Arch>) {
    for (; i + 16 <= n; i += 16) {
      const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
      _mm512_storeu_si512(dst + i, _mm512_slli_epi32(w, 16));
    }
  } else if constexpr (simd::is_avx2<Arch>) {
    for (; i + 8 <= n; i += 8) {
      const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_slli_epi32(w, 16));
    }
  }
#endif
#if defined(__aarch64__)
  if constexpr (simd::is_neon<Arch>) {
    for (; i + 4 <= n; i += 4)
      vst1q_u32(reinterpret_cast<std::uint32_t*>(dst + i), vshll_n_u16(vld1_u16(src + i), 16));
  }
#endif
  ref_bf16_to_f32<Arch>(src + i, dst + i, n - i);
}

// f32 -> bf16 in integer arithmetic: (x + 0x7fff + lsb) >> 16 is round-to-nearest-even, and NaN
// lanes become (x >> 16) | 0x40. AVX512_BF16's vcvtneps2bf16 is not used: it flushes subnormal
// inputs to zero, which would differ from the reference.
template <class Arch>
void f32_to_bf16(const float* src, std::uint16_t* dst, std::size_t n) noexcept {
  std::size_t i = 0;
#if defined(__x86_64__) || defined(_M_X64)
  if constexpr (simd::is_avx512<Arch>) {
    const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff);
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff), inf = _mm512_set1_epi32(0x7f800000);
    const __m512i quiet = _mm512_set1_epi32(0x40);
    for (; i + 16 <= n; i += 16) {
      const __m512i x = _mm512_loadu_si512(src + i);
      const __m512i hi = _mm512_srli_epi32(x, 16);
      const __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(x, bias), _mm512_and_si512(hi, one)), 16);
      const __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(x, abs_mask), inf);
      const __m512i r = _mm512_mask_blend_epi32(nan, rounded, _mm512_or_si512(hi, quiet));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm512_cvtepi32_epi16(r));
    }
  } else if constexpr (simd::is_avx2<Arch>) {
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff);
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000);
    const __m256i quiet = _mm256_set1_epi32(0x40);
    auto round8 = [&](const float* p) {
      const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
      const __m256i hi = _mm256_srli_epi32(x, 16);
      const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(x, bias), _mm256_and_si256(hi, one)), 16);
      const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, abs_mask), inf);
      return _mm256_blendv_epi8(rounded, _mm256_or_si256(hi, quiet), nan);
    };
    for (; i + 16 <= n; i += 16) {
      // packus interleaves 128-bit lanes: [a0..3 b0..3 | a4..7 b4..7]; permute restores order.
      const __m256i packed = _mm256_packus_epi32(round8(src + i), round8(src + i + 8));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm256_permute4x64_epi64(packed, 0xd8));
    }
  }
#endif
#if defined(__aarch64__)
  if constexpr (simd::is_neon<Arch>) {
    const uint32x4_t bias = vdupq_n_u32(0x7fff), one = vdupq_n_u32(1);
    for (; i + 4 <= n; i += 4) {
      const uint32x4_t x = vld1q_u32(reinterpret_cast<const std::uint32_t*>(src + i));
      const uint32x4_t hi = vshrq_n_u32(x, 16);
      const uint32x4_t rounded = vshrq_n_u32(vaddq_u32(vaddq_u32(x, bias), vandq_u32(hi, one)), 16);
      const uint32x4_t nan = vcgtq_u32(vandq_u32(x, vdupq_n_u32(0x7fffffff)), vdupq_n_u32(0x7f800000));
      const uint32x4_t r = vbslq_u32(nan, vorrq_u32(hi, vdupq_n_u32(0x40)), rounded);
      vst1_u16(dst + i, vmovn_u32(r));
    }
  }
#endif
  ref_f32_to_bf16<Arch>(src + i, dst + i, n - i);
}

template <class Arch>
float dot_f32(const float* a, const float* b, std::size_t n) noexcept {
  if constexpr (simd::is_scalar<Arch>) {
    return ref_dot_f32<Arch>(a, b, n);
  } else {
    using B = xsimd::batch<float, Arch>;
    constexpr std::size_t W = B::size;
    B acc0(0.f), acc1(0.f), acc2(0.f), acc3(0.f);  // four chains hide the FMA latency
    std::size_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
      acc0 = xsimd::fma(B::load_unaligned(a + i), B::load_unaligned(b + i), acc0);
      acc1 = xsimd::fma(B::load_unaligned(a + i + W), B::load_unaligned(b + i + W), acc1);
      acc2 = xsimd::fma(B::load_unaligned(a + i + 2 * W), B::load_unaligned(b + i + 2 * W), acc2);
      acc3 = xsimd::fma(B::load_unaligned(a + i + 3 * W), B::load_unaligned(b + i + 3 * W), acc3);
    }
    for (; i + W <= n; i += W) acc0 = xsimd::fma(B::load_unaligned(a + i), B::load_unaligned(b + i), acc0);
    return simd::reduce_add((acc0 + acc1) + (acc2 + acc3)) + ref_dot_f32<Arch>(a + i, b + i, n - i);
  }
}

template <class Arch>
float l2_sqr_f32(const float* a, const float* b, std::size_t n) noexcept {
  if constexpr (simd::is_scalar<Arch>) {
    return ref_l2_sqr_f32<Arch>(a, b, n);
  } else {
    using B = xsimd::batch<float, Arch>;
    constexpr std::size_t W = B::size;
    B acc0(0.f), acc1(0.f);
    std::size_t i = 0;
    for (; i + 2 * W <= n; i += 2 * W) {
      const B d0 = B::load_unaligned(a + i) - B::load_unaligned(b + i);
      const B d1 = B::load_unaligned(a + i + W) - B::load_unaligned(b + i + W);
      acc0 = xsimd::fma(d0, d0, acc0);
      acc1 = xsimd::fma(d1, d1, acc1);
    }
    for (; i + W <= n; i += W) {
      const B d = B::load_unaligned(a + i) - B::load_unaligned(b + i);
      acc0 = xsimd::fma(d, d, acc0);
    }
    return simd::reduce_add(acc0 + acc1) + ref_l2_sqr_f32<Arch>(a + i, b + i, n - i);
  }
}

template <class Arch>
std::int32_t dot_i8(const std::int8_t* a, const std::int8_t* b, std::size_t n) noexcept {
  std::size_t i = 0;
  std::int32_t bulk = 0;
  // Sign-extend to int16 and multiply-add pairs into int32 lanes (pmaddwd): exact.
#if defined(__x86_64__) || defined(_M_X64)
  if constexpr (simd::is_avx512<Arch>) {
    __m512i acc = _mm512_setzero_si512();
    for (; i + 32 <= n; i += 32) {
      const __m512i va = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + i)));
      const __m512i vb = _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b + i)));
      acc = _mm512_add_epi32(acc, _mm512_madd_epi16(va, vb));
    }
    // Reduce in vector lanes, which wrap; GCC's _mm512_reduce_add_epi32 adds in signed scalar
    // ints, whose overflow is undefined behaviour.
    const __m256i half = _mm256_add_epi32(_mm512_castsi512_si256(acc), _mm512_extracti64x4_epi64(acc, 1));
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(half), _mm256_extracti128_si256(half, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    bulk = _mm_cvtsi128_si32(s);
  } else if constexpr (simd::is_avx2<Arch>) {
    __m256i acc = _mm256_setzero_si256();
    for (; i + 16 <= n; i += 16) {
      const __m256i va = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + i)));
      const __m256i vb = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b + i)));
      acc = _mm256_add_epi32(acc, _mm256_madd_epi16(va, vb));
    }
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    bulk = _mm_cvtsi128_si32(s);
  }
#endif
#if defined(__aarch64__)
  if constexpr (simd::is_neon<Arch>) {
    int32x4_t acc = vdupq_n_s32(0);
    for (; i + 16 <= n; i += 16) {
      const int8x16_t va = vld1q_s8(a + i), vb = vld1q_s8(b + i);
      acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(va), vget_low_s8(vb)));
      acc = vpadalq_s16(acc, vmull_high_s8(va, vb));
    }
    bulk = vaddvq_s32(acc);
  }
#endif
  return static_cast<std::int32_t>(static_cast<std::uint32_t>(bulk) +
                                   static_cast<std::uint32_t>(ref_dot_i8<Arch>(a + i, b + i, n - i)));
}

/// The CoreKernels table for one arch tag.
template <class Arch>
constexpr CoreKernels make_core_kernels() noexcept {
  return CoreKernels{
      &f16_to_f32<Arch>, &f32_to_f16<Arch>, &bf16_to_f32<Arch>, &f32_to_bf16<Arch>,
      &dot_f32<Arch>,    &l2_sqr_f32<Arch>, &dot_i8<Arch>,
  };
}

}  // namespace quarry::detail::cpu_kernels
