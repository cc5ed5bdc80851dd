// 16-bit floating-point storage types: IEEE binary16 (`f16`) and bfloat16 (`bf16`).
//
// Both are storage types: arithmetic converts to float. The scalar conversions here are the
// reference that the SIMD and CUDA kernels (quarry/core/convert.hpp) are tested against bit for
// bit: f16 -> f32 is exact; f32 -> f16 and f32 -> bf16 round to nearest, ties to even;
// NaNs stay NaNs (made quiet, sign and top payload bits kept, as x86 F16C does).
#pragma once

#include <bit>
#include <cstdint>

#include "quarry/core/detail/float16_bits.hpp"

#if defined(__GNUC__) || defined(__clang__)
#define QUARRY_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define QUARRY_ALWAYS_INLINE __forceinline
#endif

namespace quarry {

/// IEEE 754 binary16 ("half"), stored as its 16 bits. Converts to and from float.
struct f16 {
  std::uint16_t bits = 0;  ///< the binary16 bit pattern

  constexpr f16() noexcept = default;
  /// Rounds `v` to nearest even.
  explicit constexpr f16(float v) noexcept
      : bits(detail::f32_bits_to_f16_bits(std::bit_cast<std::uint32_t>(v))) {}
  /// The value with these exact bits.
  static constexpr f16 from_bits(std::uint16_t b) noexcept {
    f16 h;
    h.bits = b;
    return h;
  }
  /// Exact.
  constexpr operator float() const noexcept {  // NOLINT: widening is lossless
    return std::bit_cast<float>(detail::f16_bits_to_f32_bits(bits));
  }
  /// Compares the values as floats (so +0 == -0 and NaN != NaN).
  friend constexpr bool operator==(f16 a, f16 b) noexcept { return float(a) == float(b); }
};

/// bfloat16: the top 16 bits of a binary32. Converts to and from float.
struct bf16 {
  std::uint16_t bits = 0;  ///< the top 16 bits of the binary32 pattern

  constexpr bf16() noexcept = default;
  /// Rounds `v` to nearest even.
  explicit constexpr bf16(float v) noexcept
      : bits(detail::f32_bits_to_bf16_bits(std::bit_cast<std::uint32_t>(v))) {}
  /// The value with these exact bits.
  static constexpr bf16 from_bits(std::uint16_t b) noexcept {
    bf16 h;
    h.bits = b;
    return h;
  }
  /// Exact.
  constexpr operator float() const noexcept {  // NOLINT: widening is lossless
    return std::bit_cast<float>(detail::bf16_bits_to_f32_bits(bits));
  }
  /// Compares the values as floats (so +0 == -0 and NaN != NaN).
  friend constexpr bool operator==(bf16 a, bf16 b) noexcept { return float(a) == float(b); }
};

static_assert(sizeof(f16) == 2 && sizeof(bf16) == 2);

}  // namespace quarry
