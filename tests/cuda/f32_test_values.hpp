// The f32 inputs the conversion tests (host and device) run f32 -> f16 / bf16 on: every upper
// half-word with the lower half-words at which rounding decides (ties at bits 12..15, one ulp
// either side), named special values, and random bit patterns from a fixed seed.
#pragma once

#include <bit>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace quarry::test {

/// About 5.2 million f32 bit patterns (see the file comment), deterministic.
inline std::vector<std::uint32_t> f32_conversion_test_bits() {
  static constexpr std::uint16_t kLowHalves[] = {0x0000, 0x0001, 0x0fff, 0x1000, 0x1001, 0x1fff, 0x2000, 0x2001,
                                                 0x3fff, 0x4000, 0x4001, 0x7fff, 0x8000, 0x8001, 0xc000, 0xffff};
  std::vector<std::uint32_t> bits;
  bits.reserve((std::size_t{1} << 20) + (std::size_t{1} << 22) + 64);
  for (std::uint32_t hi = 0; hi < 0x10000u; ++hi)
    for (std::uint16_t lo : kLowHalves) bits.push_back(hi << 16 | lo);
  constexpr float kSpecial[] = {0.0f, 65504.0f, 65519.996f, 65520.0f, 65536.0f, 5.9604645e-8f /* 2^-24 */,
                                2.9802322e-8f /* 2^-25 */, 2.9802326e-8f, 6.1035156e-5f /* 2^-14 */, 1.0f / 3.0f,
                                std::numeric_limits<float>::max(), std::numeric_limits<float>::min(),
                                std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::infinity(),
                                std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::signaling_NaN()};
  for (float v : kSpecial) {
    bits.push_back(std::bit_cast<std::uint32_t>(v));
    bits.push_back(std::bit_cast<std::uint32_t>(v) | 0x80000000u);
  }
  bits.push_back(0x7f800001u);  // signalling NaN, lowest payload
  bits.push_back(0x7fbfffffu);  // signalling NaN, highest payload
  bits.push_back(0xffffffffu);  // quiet NaN, all payload bits
  std::mt19937 rng(20240607u);
  for (std::size_t i = 0; i < (std::size_t{1} << 22); ++i) bits.push_back(static_cast<std::uint32_t>(rng()));
  return bits;
}

}  // namespace quarry::test
