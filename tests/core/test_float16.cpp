// The scalar f16/bf16 conversions are the reference for every SIMD and CUDA kernel, so they are
// checked here exhaustively and against an independent definition of rounding.
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

#include <quarry/core/float16.hpp>

using namespace quarry;

namespace {
std::uint32_t bits(float f) { return std::bit_cast<std::uint32_t>(f); }
float from_bits(std::uint32_t b) { return std::bit_cast<float>(b); }
bool is_nan16(std::uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0; }

// The value of a binary16 computed from its definition, in double.
double f16_value(std::uint16_t h) {
  const int sign = (h & 0x8000) ? -1 : 1;
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  if (exp == 0) return sign * std::ldexp(mant, -24);
  if (exp == 31) return mant ? std::numeric_limits<double>::quiet_NaN() : sign * std::numeric_limits<double>::infinity();
  return sign * std::ldexp(1024 + mant, exp - 25);
}
}  // namespace

TEST_CASE("f16 -> f32 is exact for all 65,536 values, and f32 -> f16 returns them") {
  for (std::uint32_t h = 0; h <= 0xffff; ++h) {
    const auto hb = static_cast<std::uint16_t>(h);
    const float f = f16::from_bits(hb);
    if (is_nan16(hb)) {
      REQUIRE(std::isnan(f));
      // Quiet NaN, sign and payload kept (x86 F16C behaviour).
      REQUIRE(bits(f) == ((static_cast<std::uint32_t>(hb & 0x8000) << 16) | 0x7fc00000u | (static_cast<std::uint32_t>(hb & 0x3ff) << 13)));
      REQUIRE(f16(f).bits == (hb | 0x200));
      continue;
    }
    REQUIRE(static_cast<double>(f) == f16_value(hb));
    REQUIRE(f16(f).bits == hb);
  }
}

TEST_CASE("f32 -> f16 rounds to nearest, ties to even, at every pair of neighbours") {
  // For each finite positive half h and its successor, the float midpoint rounds to the even
  // one, and the floats just below/above it go down/up.
  for (std::uint16_t h = 0; h < 0x7bff; ++h) {
    const double lo = f16_value(h), hi = f16_value(static_cast<std::uint16_t>(h + 1));
    const float mid = static_cast<float>((lo + hi) / 2);  // exact: a half midpoint fits in a float
    REQUIRE(static_cast<double>(mid) == (lo + hi) / 2);
    const std::uint16_t even = (h & 1) ? static_cast<std::uint16_t>(h + 1) : h;
    REQUIRE(f16(mid).bits == even);
    REQUIRE(f16(-mid).bits == (even | 0x8000));
    REQUIRE(f16(std::nextafter(mid, 0.f)).bits == h);
    REQUIRE(f16(std::nextafter(mid, 1e9f)).bits == h + 1);
  }
}

TEST_CASE("f32 -> f16 edges: overflow, underflow, infinities, NaN payloads") {
  CHECK(f16(65504.f).bits == 0x7bff);
  CHECK(f16(65519.996f).bits == 0x7bff);
  CHECK(f16(65520.f).bits == 0x7c00);  // the tie goes to even, which is infinity
  CHECK(f16(1e10f).bits == 0x7c00);
  CHECK(f16(-1e10f).bits == 0xfc00);
  CHECK(f16(std::numeric_limits<float>::infinity()).bits == 0x7c00);
  CHECK(f16(-std::numeric_limits<float>::infinity()).bits == 0xfc00);
  CHECK(f16(0.f).bits == 0x0000);
  CHECK(f16(-0.f).bits == 0x8000);
  CHECK(f16(std::ldexp(1.f, -25)).bits == 0x0000);          // exactly half the smallest subnormal: to even (0)
  CHECK(f16(std::nextafter(std::ldexp(1.f, -25), 1.f)).bits == 0x0001);
  CHECK(f16(std::ldexp(3.f, -25)).bits == 0x0002);          // 1.5 ulp: tie to even (2)
  CHECK(f16(std::numeric_limits<float>::denorm_min()).bits == 0x0000);
  CHECK(f16(from_bits(0x7f800001u)).bits == 0x7e00);         // signalling NaN made quiet
  CHECK(f16(from_bits(0xffc00000u)).bits == 0xfe00);
  CHECK(f16(from_bits(0x7fffe000u)).bits == 0x7fff);         // top payload bits kept
}

TEST_CASE("bf16: exact widening, round to nearest even, NaN stays NaN") {
  for (std::uint32_t b = 0; b <= 0xffff; ++b) {
    const float f = bf16::from_bits(static_cast<std::uint16_t>(b));
    REQUIRE(bits(f) == b << 16);
    if (!std::isnan(f)) REQUIRE(bf16(f).bits == b);
  }
  // Independent definition: pick the nearer of the two bf16 neighbours, ties to even mantissa.
  std::mt19937 rng(1234);
  for (int i = 0; i < 200000; ++i) {
    const std::uint32_t x = rng();
    const float f = from_bits(x);
    if (std::isnan(f)) {
      CHECK(std::isnan(static_cast<float>(bf16(f))));
      continue;
    }
    const std::uint32_t down = x & 0xffff0000u;
    const std::uint32_t up = down + 0x10000u;
    const double dd = std::fabs(static_cast<double>(f) - static_cast<double>(from_bits(down)));
    const double du = std::isinf(from_bits(up)) && !std::isinf(f)
                          ? 3.4028236692093846e38 - std::fabs(static_cast<double>(f))  // distance to 2^128
                          : std::fabs(static_cast<double>(from_bits(up)) - static_cast<double>(f));
    std::uint32_t expect;
    if (std::isinf(f)) expect = down;
    else if (dd < std::fabs(du)) expect = down;
    else if (dd > std::fabs(du)) expect = up;
    else expect = ((down >> 16) & 1) ? up : down;
    REQUIRE(bf16(f).bits == (expect >> 16));
  }
  CHECK(bf16(from_bits(0x7f800001u)).bits == 0x7fc0);
  CHECK(bf16(from_bits(0x3f808000u)).bits == 0x3f80);  // tie, even stays
  CHECK(bf16(from_bits(0x3f818000u)).bits == 0x3f82);  // tie, odd rounds up
  CHECK(bf16(from_bits(0x7f7fffffu)).bits == 0x7f80);  // FLT_MAX rounds to inf
}

TEST_CASE("f16/bf16 are usable as constexpr values") {
  constexpr f16 one(1.0f);
  static_assert(one.bits == 0x3c00);
  constexpr bf16 half(0.5f);
  static_assert(half.bits == 0x3f00);
  CHECK(static_cast<float>(one) == 1.0f);
}
