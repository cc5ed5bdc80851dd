// The f32 <-> f16 / bf16 bit conversions, in plain C++17 that nvcc compiles for the device and
// the host compiler for the host. They repeat, line for line, the reference in
// include/quarry/core/float16.hpp (which is C++20 and so stays out of .cu files);
// tests/cuda/test_float16_bits.cpp checks the two agree on every input, with no GPU needed.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define QUARRY_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define QUARRY_HOST_DEVICE inline
#endif

namespace quarry::cuda_kernels {

/// binary16 bits -> binary32 bits, exact.
QUARRY_HOST_DEVICE std::uint32_t f16_bits_to_f32_bits(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    if (mant == 0) return sign;  // +-0
    // Subnormal: mant * 2^-24. Normalise so the leading 1 reaches bit 10.
    std::uint32_t shifts = 0;
    while ((mant & 0x400u) == 0) {
      mant <<= 1;
      ++shifts;
    }
    return sign | ((113u - shifts) << 23) | ((mant & 0x3ffu) << 13);
  }
  if (exp == 31) {
    if (mant == 0) return sign | 0x7f800000u;  // +-inf
    return sign | 0x7fc00000u | (mant << 13);   // NaN, made quiet
  }
  return sign | ((exp + 112u) << 23) | (mant << 13);  // normal: rebias 15 -> 127
}

/// binary32 bits -> binary16 bits, round to nearest even; overflow gives +-inf; NaN made quiet
/// with its sign and top 9 payload bits kept.
QUARRY_HOST_DEVICE std::uint16_t f32_bits_to_f16_bits(std::uint32_t x) noexcept {
  const std::uint16_t sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  const std::uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
  if (abs >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // >= 65520: inf
  if (abs < 0x38800000u) {                   // below 2^-14: subnormal half or zero
    if (abs <= 0x33000000u) return sign;     // <= 2^-25 rounds to zero (a tie goes to even 0)
    const std::uint32_t e = abs >> 23;
    const std::uint32_t m = (abs & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126u - e;    // value in units of 2^-24 is m >> shift
    std::uint32_t q = m >> shift;
    const std::uint32_t rem = m & ((1u << shift) - 1u);
    const std::uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return static_cast<std::uint16_t>(sign | q);
  }
  std::uint32_t q = (abs >> 13) - (112u << 10);  // rebias 127 -> 15, drop 13 mantissa bits
  const std::uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (q & 1u))) ++q;  // a carry may bump the exponent
  return static_cast<std::uint16_t>(sign | q);
}

/// bfloat16 bits -> binary32 bits, exact.
QUARRY_HOST_DEVICE std::uint32_t bf16_bits_to_f32_bits(std::uint16_t b) noexcept {
  return static_cast<std::uint32_t>(b) << 16;
}

/// binary32 bits -> bfloat16 bits, round to nearest even; NaN stays NaN (quiet).
QUARRY_HOST_DEVICE std::uint16_t f32_bits_to_bf16_bits(std::uint32_t x) noexcept {
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x0040u);
  const std::uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);
  return static_cast<std::uint16_t>((x + rounding) >> 16);
}

}  // namespace quarry::cuda_kernels

#undef QUARRY_HOST_DEVICE
