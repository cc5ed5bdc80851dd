// CUDA's __nv_bfloat16 for the host SIMT emulator: storage and conversions only (quarry's
// bit-exact conversions, round to nearest even).
#pragma once

#include <bit>
#include <cstdint>

#include "quarry/core/detail/float16_bits.hpp"
#include "vector_types.h"

struct __nv_bfloat16 {
  std::uint16_t __x;
};
struct alignas(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};

inline float __bfloat162float(__nv_bfloat16 h) { return std::bit_cast<float>(quarry::detail::bf16_bits_to_f32_bits(h.__x)); }
inline __nv_bfloat16 __float2bfloat16(float f) { return {quarry::detail::f32_bits_to_bf16_bits(std::bit_cast<std::uint32_t>(f))}; }
