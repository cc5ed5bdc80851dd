#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include <quarry/index/fastscan.hpp>

#include "test_util.hpp"

using namespace quarry;

namespace {

std::vector<std::uint8_t> random_pq4_codes(std::int64_t n, std::int64_t m, std::uint32_t seed) {
  std::mt19937 rng(seed);
  const std::int64_t cs = (m + 1) / 2;
  std::vector<std::uint8_t> codes(static_cast<std::size_t>(n * cs));
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < m; ++j) codes[static_cast<std::size_t>(i * cs + j / 2)] |= static_cast<std::uint8_t>((rng() % 16) << ((j & 1) * 4));
  return codes;
}

std::uint8_t pq4_code(const std::vector<std::uint8_t>& codes, std::int64_t m, std::int64_t i, std::int64_t j) {
  return static_cast<std::uint8_t>((codes[static_cast<std::size_t>(i * ((m + 1) / 2) + j / 2)] >> ((j & 1) * 4)) & 0xf);
}

}  // namespace

TEST_CASE("FastScanCodes: append keeps every code; move and truncate; blocks round-trip") {
  for (std::int64_t m : {1, 2, 7, 16, 32, 33}) {
    const std::int64_t n = 77;
    const auto codes = random_pq4_codes(n, m, static_cast<std::uint32_t>(m));
    FastScanCodes fs(m);
    REQUIRE(fs.append(std::span(codes).first(static_cast<std::size_t>(40 * ((m + 1) / 2))), 40).ok());
    REQUIRE(fs.append(std::span(codes).subspan(static_cast<std::size_t>(40 * ((m + 1) / 2))), n - 40).ok());
    CHECK(fs.size() == n);
    CHECK(fs.num_blocks() == 3);
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t j = 0; j < m; ++j) REQUIRE(fs.code(i, j) == pq4_code(codes, m, i, j));
    FastScanCodes copy(m);
    REQUIRE(copy.assign_blocks(fs.bytes(), n).ok());
    CHECK(copy.code(76, m - 1) == fs.code(76, m - 1));
    CHECK_FALSE(copy.assign_blocks(fs.bytes().first(10), n).ok());
    fs.move(70, 3);
    for (std::int64_t j = 0; j < m; ++j) CHECK(fs.code(3, j) == pq4_code(codes, m, 70, j));
    fs.truncate(33);
    CHECK(fs.size() == 33);
    CHECK(fs.num_blocks() == 2);
    for (std::int64_t j = 0; j < m; ++j) CHECK(fs.code(33, j) == 0);  // the padding is zero again
    CHECK_FALSE(fs.append(std::span(codes).first(1), 2).ok());  // too few bytes
  }
  CHECK(testing::thrown([] { FastScanCodes bad(0); }).code() == errc::invalid_argument);
  CHECK(testing::thrown([] { FastScanCodes bad(257); }).code() == errc::invalid_argument);
}

TEST_CASE("fast-scan distances equal the quantized table's sums and approximate the float ADC within the bound") {
  std::mt19937 rng(9);
  std::normal_distribution<float> nd(0.f, 1.f);
  for (std::int64_t m : {1, 8, 16, 31, 64}) {
    const std::int64_t n = 200;
    const auto codes = random_pq4_codes(n, m, 100 + static_cast<std::uint32_t>(m));
    FastScanCodes fs(m);
    REQUIRE(fs.append(codes, n).ok());
    std::vector<float> table(static_cast<std::size_t>(m * 16));
    for (auto& v : table) v = nd(rng) * nd(rng) + 3.f;
    auto lut = quantize_fastscan_lut(table, m);
    REQUIRE(lut.ok());
    std::vector<std::uint16_t> q(static_cast<std::size_t>(n));
    fastscan_distances(fs, *lut, q);
    const float bound = static_cast<float>(m) / (2 * lut->scale) * 1.001f + 1e-4f;
    for (std::int64_t i = 0; i < n; ++i) {
      std::uint32_t want = 0;
      float adc = 0;
      for (std::int64_t j = 0; j < m; ++j) {
        want += lut->table[static_cast<std::size_t>(j * 16 + pq4_code(codes, m, i, j))];
        adc += table[static_cast<std::size_t>(j * 16 + pq4_code(codes, m, i, j))];
      }
      REQUIRE(q[static_cast<std::size_t>(i)] == want);
      REQUIRE(std::fabs(lut->distance(want) - adc) <= bound);
    }
    // for_each_below visits exactly the vectors under the threshold, in order
    std::vector<std::uint16_t> sorted = q;
    std::sort(sorted.begin(), sorted.end());
    std::uint16_t threshold = sorted[20];
    std::vector<std::int64_t> seen;
    fastscan_for_each_below(fs, *lut, threshold, [&](std::int64_t i, std::uint16_t d) {
      REQUIRE(d == q[static_cast<std::size_t>(i)]);
      seen.push_back(i);
    });
    std::vector<std::int64_t> want;
    for (std::int64_t i = 0; i < n; ++i)
      if (q[static_cast<std::size_t>(i)] < sorted[20]) want.push_back(i);
    CHECK(seen == want);
  }
}

TEST_CASE("fast-scan tables: bad input is an error") {
  std::vector<float> t(32, 1.f);
  CHECK_FALSE(quantize_fastscan_lut(t, 3).ok());
  CHECK_FALSE(quantize_fastscan_lut(t, 0).ok());
  t[5] = std::nanf("");
  CHECK(quantize_fastscan_lut(t, 2).status().code() == errc::invalid_argument);
  std::vector<float> flat(32, 2.f);  // all equal: range 0, every entry 0
  auto lut = quantize_fastscan_lut(flat, 2);
  REQUIRE(lut.ok());
  CHECK(lut->distance(0) == 4.f);
  FastScanCodes fs(3);
  std::vector<std::uint16_t> out;
  CHECK(testing::thrown([&] { fastscan_distances(fs, *lut, out); }).code() == errc::shape_mismatch);
}
