// CUDA's __half and __half2 for the host SIMT emulator: storage and conversions only (quarry's
// bit-exact conversions of quarry/core/detail/float16_bits.hpp, round to nearest even).
#pragma once

#include <bit>
#include <cstdint>

#include "quarry/core/detail/float16_bits.hpp"
#include "vector_types.h"

struct __half {
  std::uint16_t __x;
};
struct alignas(4) __half2 {
  __half x, y;
};

inline float __half2float(__half h) { return std::bit_cast<float>(quarry::detail::f16_bits_to_f32_bits(h.__x)); }
inline __half __float2half(float f) { return {quarry::detail::f32_bits_to_f16_bits(std::bit_cast<std::uint32_t>(f))}; }
inline __half __float2half_rn(float f) { return __float2half(f); }
inline float2 __half22float2(__half2 h) { return {__half2float(h.x), __half2float(h.y)}; }
inline __half2 __floats2half2_rn(float a, float b) { return {__float2half(a), __float2half(b)}; }
inline __half __ushort_as_half(unsigned short u) { return {u}; }
inline __half __int2half_rn(int i) { return __float2half(static_cast<float>(i)); }  // exact below 2^24, then one rounding
inline __half2 __half2half2(__half h) { return {h, h}; }
// f16 arithmetic, correctly rounded as on the device: computed in f32, then rounded to f16 (f32's
// 24-bit significand is at least 2 x 11 + 2 bits, so rounding twice equals rounding once).
inline __half2 __hsub2(__half2 a, __half2 b) {
  return {__float2half(__half2float(a.x) - __half2float(b.x)), __float2half(__half2float(a.y) - __half2float(b.y))};
}
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
