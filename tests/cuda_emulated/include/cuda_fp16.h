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
inline unsigned short __half_as_ushort(__half h) { return h.__x; }
