// The f32 <-> f16 / bf16 bit conversions: the reference every CPU and CUDA kernel matches.
//
// Plain C++17 on purpose, with no quarry header: nvcc compiles this file for the device
// (src/cuda/convert_kernels.cu) and the host compiler for the CPU, so both backends run the very
// same arithmetic. Integer in, integer out: no float instruction can canonicalise a NaN.
//
// On the host the functions are always inlined: per-ISA kernel files (compiled with AVX-512
// flags) call them for loop tails, and an out-of-line copy emitted there could be picked by the
// linker for the whole program.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define QUARRY_F16_BITS_FN __host__ __device__ __forceinline__ constexpr
#elif defined(__GNUC__) || defined(__clang__)
#define QUARRY_F16_BITS_FN inline __attribute__((always_inline)) constexpr
#else
#define QUARRY_F16_BITS_FN __forceinline constexpr
#endif

namespace quarry {

namespace detail {

/// binary16 bits -> binary32 bits, exact.
QUARRY_F16_BITS_FN std::uint32_t f16_bits_to_f32_bits(std::uint16_t h) noexcept {
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
    if (mant == 0) return sign | 0x7f800000u;           // +-inf
    return sign | 0x7fc00000u | (mant << 13);            // NaN, made quiet
  }
  return sign | ((exp + 112u) << 23) | (mant << 13);    // normal: rebias 15 -> 127
}

/// binary32 bits -> binary16 bits, round to nearest even; overflow gives +-inf.
QUARRY_F16_BITS_FN std::uint16_t f32_bits_to_f16_bits(std::uint32_t x) noexcept {
  const std::uint16_t sign = static_cast<std::uint16_t>((x >> 16) & 0x8000u);
  const std::uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u)  // NaN: quiet, keep the top 9 payload bits
    return static_cast<std::uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
  if (abs >= 0x477ff000u)  // >= 65520 rounds past 65504 (ties to even go up): inf
    return static_cast<std::uint16_t>(sign | 0x7c00u);
  if (abs < 0x38800000u) {  // below 2^-14: subnormal half or zero
    if (abs <= 0x33000000u) return sign;  // <= 2^-25 rounds to zero (a tie goes to even 0)
    const std::uint32_t e = abs >> 23;
    const std::uint32_t m = (abs & 0x7fffffu) | 0x800000u;
    const std::uint32_t shift = 126u - e;  // value in units of 2^-24 is m >> shift
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

/// binary32 bits -> bfloat16 bits, round to nearest even; NaN stays NaN (quiet).
QUARRY_F16_BITS_FN std::uint16_t f32_bits_to_bf16_bits(std::uint32_t x) noexcept {
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((x >> 16) | 0x0040u);
  const std::uint32_t rounding = 0x7fffu + ((x >> 16) & 1u);
  return static_cast<std::uint16_t>((x + rounding) >> 16);
}

/// bfloat16 bits -> binary32 bits, exact.
QUARRY_F16_BITS_FN std::uint32_t bf16_bits_to_f32_bits(std::uint16_t b) noexcept { return static_cast<std::uint32_t>(b) << 16; }

}  // namespace detail
}  // namespace quarry
