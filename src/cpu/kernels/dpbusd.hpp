// vpdpbusd with its accumulator kept in place: a header of its own so that the benchmarks' int8
// VNNI yardstick (bench/common/detail/peak_kernels_avx512vnni.cpp) issues the instruction exactly
// as the kernels do.
#pragma once

#include "quarry/core/float16.hpp"  // QUARRY_ALWAYS_INLINE

#if defined(__x86_64__) && defined(__AVX512VNNI__)
#include <immintrin.h>

namespace quarry::detail::cpu_kernels {

/// acc + vpdpbusd(a: u8, b: s8), computed in acc's register. GCC (12-14) gives a loop-carried
/// accumulator of _mm512_dpbusd_epi32 a fresh register for each product and moves it back after:
/// two moves per product in the INT8 attention kernels (Zen 4), and a VNNI peak loop held to 0.58
/// of the instruction's rate (Sapphire Rapids). The asm operand ties it; clang takes the intrinsic.
QUARRY_ALWAYS_INLINE __m512i dpbusd_inplace(__m512i acc, __m512i a, __m512i b) noexcept {
#if defined(__GNUC__) && !defined(__clang__)
  __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
#else
  return _mm512_dpbusd_epi32(acc, a, b);
#endif
}

}  // namespace quarry::detail::cpu_kernels
#endif
