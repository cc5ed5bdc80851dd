// src/cuda/float16_bits.h (the arithmetic the CUDA conversion kernels run) agrees bit for bit
// with the scalar reference in quarry/core/float16.hpp. Host only: no GPU needed.
// QUARRY_EXHAUSTIVE=1 also checks all 2^32 f32 inputs (a few seconds in a release build).
#include <doctest/doctest.h>

#include <bit>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include <fmt/format.h>

#include <quarry/core/float16.hpp>

#include "cuda/f32_test_values.hpp"
#include "cuda/float16_bits.h"

namespace reference = quarry::detail;
namespace device = quarry::cuda_kernels;

namespace {

// Counts the f32 inputs on which the device-side arithmetic and the reference disagree.
struct F32Mismatches {
  std::uint64_t f16 = 0, bf16 = 0;
  std::uint32_t first_f16 = 0, first_bf16 = 0;
  void check(std::uint32_t x) noexcept {
    if (device::f32_bits_to_f16_bits(x) != reference::f32_bits_to_f16_bits(x) && f16++ == 0) first_f16 = x;
    if (device::f32_bits_to_bf16_bits(x) != reference::f32_bits_to_bf16_bits(x) && bf16++ == 0) first_bf16 = x;
  }
  void report() const {
    CHECK_MESSAGE(f16 == 0, fmt::format("f32 -> f16 differs on {} inputs, first {:#010x}", f16, first_f16));
    CHECK_MESSAGE(bf16 == 0, fmt::format("f32 -> bf16 differs on {} inputs, first {:#010x}", bf16, first_bf16));
  }
};

}  // namespace

TEST_CASE("f16 -> f32 and bf16 -> f32: all 65536 inputs") {
  int f16_mismatches = 0, bf16_mismatches = 0;
  for (std::uint32_t h = 0; h < 0x10000u; ++h) {
    const auto b = static_cast<std::uint16_t>(h);
    f16_mismatches += device::f16_bits_to_f32_bits(b) != reference::f16_bits_to_f32_bits(b);
    bf16_mismatches += device::bf16_bits_to_f32_bits(b) != std::bit_cast<std::uint32_t>(float(quarry::bf16::from_bits(b)));
  }
  CHECK(f16_mismatches == 0);
  CHECK(bf16_mismatches == 0);
}

TEST_CASE("f32 -> f16 and f32 -> bf16: rounding edges, specials and random inputs") {
  F32Mismatches m;
  for (std::uint32_t x : quarry::test::f32_conversion_test_bits()) m.check(x);
  m.report();
}

TEST_CASE("f32 -> f16 and f32 -> bf16: all 2^32 inputs (QUARRY_EXHAUSTIVE=1)") {
  const char* flag = std::getenv("QUARRY_EXHAUSTIVE");
  if (flag == nullptr || *flag == '\0' || *flag == '0') return;
  F32Mismatches m;
  std::uint32_t x = 0;
  do m.check(x);
  while (++x != 0);
  m.report();
}
