// Every core kernel of every built ISA against the scalar reference.
#include <cstring>

#include <quarry/core/detail/core_kernels.hpp>
#include <quarry/core/float16.hpp>

#include "conformance/harness.hpp"

using namespace quarry;
using namespace quarry::testing;
using detail::CoreKernels;

namespace {

template <class T>
std::vector<T> shifted(const std::vector<T>& v, std::size_t offset) {
  std::vector<T> out(v.size() + offset);
  std::copy(v.begin(), v.end(), out.begin() + static_cast<std::ptrdiff_t>(offset));
  return out;
}

std::vector<std::uint16_t> all_16bit_patterns() {
  std::vector<std::uint16_t> v(65536);
  for (std::uint32_t i = 0; i < 65536; ++i) v[i] = static_cast<std::uint16_t>(i);
  return v;
}

// Floats around every f16 rounding boundary: each midpoint between neighbours, and one ulp
// either side of it, both signs.
std::vector<float> f16_rounding_boundaries() {
  std::vector<float> v;
  for (std::uint16_t h = 0; h < 0x7c00; ++h) {
    const float lo = f16::from_bits(h);
    const float hi = f16::from_bits(static_cast<std::uint16_t>(h + 1));
    const float mid = lo + (hi - lo) / 2;
    for (float x : {mid, std::nextafter(mid, 0.f), std::nextafter(mid, 1e30f)}) {
      v.push_back(x);
      v.push_back(-x);
    }
  }
  return v;
}

template <class Src, class Dst>
void check_conversion_exact(void (*kernel)(const Src*, Dst*, std::size_t) noexcept,
                            void (*reference)(const Src*, Dst*, std::size_t) noexcept, const std::vector<Src>& input,
                            const char* name) {
  // The whole input at each misalignment, then every short length for the tails.
  for (std::size_t off : kMisalignments) {
    const auto src = shifted(input, off);
    std::vector<Dst> got(input.size() + off), want(input.size() + off);
    kernel(src.data() + off, got.data() + off, input.size());
    reference(src.data() + off, want.data() + off, input.size());
    INFO(name << " misalignment " << off);
    REQUIRE(std::memcmp(got.data(), want.data(), got.size() * sizeof(Dst)) == 0);
  }
  for (std::size_t n : conformance_lengths()) {
    if (n > input.size()) break;
    std::vector<Dst> got(n + 1, Dst{}), want(n + 1, Dst{});
    kernel(input.data(), got.data(), n);
    reference(input.data(), want.data(), n);
    INFO(name << " n=" << n);
    REQUIRE(std::memcmp(got.data(), want.data(), got.size() * sizeof(Dst)) == 0);  // and nothing past n written
  }
}

}  // namespace

TEST_CASE("conformance: f16 and bf16 widening is bit-exact on all 65,536 patterns") {
  const auto all = all_16bit_patterns();
  for_each_simd_table<CoreKernels>([&](Isa isa, const CoreKernels& k, const CoreKernels& ref) {
    check_conversion_exact(k.f16_to_f32, ref.f16_to_f32, all, "f16_to_f32");
    check_conversion_exact(k.bf16_to_f32, ref.bf16_to_f32, all, "bf16_to_f32");
    std::vector<float> out(all.size());
    report_perf("f16_to_f32", isa, 6.0 * all.size(), [&] { k.f16_to_f32(all.data(), out.data(), all.size()); });
  });
}

TEST_CASE("conformance: f32 -> f16 and f32 -> bf16 narrowing is bit-exact") {
  auto input = f16_rounding_boundaries();
  const auto random = random_float_bits(1 << 18, 42);
  input.insert(input.end(), random.begin(), random.end());
  for (std::uint32_t h = 0; h < 65536; ++h) input.push_back(f16::from_bits(static_cast<std::uint16_t>(h)));
  for_each_simd_table<CoreKernels>([&](Isa isa, const CoreKernels& k, const CoreKernels& ref) {
    check_conversion_exact(k.f32_to_f16, ref.f32_to_f16, input, "f32_to_f16");
    check_conversion_exact(k.f32_to_bf16, ref.f32_to_bf16, input, "f32_to_bf16");
    std::vector<std::uint16_t> out(input.size());
    report_perf("f32_to_bf16", isa, 6.0 * input.size(), [&] { k.f32_to_bf16(input.data(), out.data(), input.size()); });
  });
}

TEST_CASE("conformance: dot_f32 and l2_sqr_f32 within float summation error") {
  for_each_simd_table<CoreKernels>([&](Isa isa, const CoreKernels& k, const CoreKernels& ref) {
    std::uint32_t seed = 1;
    for (std::size_t n : conformance_lengths()) {
      for (std::size_t off : kMisalignments) {
        const auto a = shifted(random_normal(n, seed++), off);
        const auto b = shifted(random_normal(n, seed++), off);
        const float* pa = a.data() + off;
        const float* pb = b.data() + off;
        double abs_sum = 0, sq_sum = 0;
        for (std::size_t i = 0; i < n; ++i) {
          abs_sum += std::fabs(double(pa[i]) * pb[i]);
          sq_sum += (double(pa[i]) - pb[i]) * (double(pa[i]) - pb[i]);
        }
        // Any order of float summation is within n * eps * sum|terms| of the exact sum.
        const double eps = std::numeric_limits<float>::epsilon();
        INFO("n=" << n << " misalignment=" << off);
        CHECK(std::fabs(double(k.dot_f32(pa, pb, n)) - ref.dot_f32(pa, pb, n)) <= 2 * (n + 1) * eps * abs_sum + 1e-30);
        CHECK(std::fabs(double(k.l2_sqr_f32(pa, pb, n)) - ref.l2_sqr_f32(pa, pb, n)) <= 2 * (n + 1) * eps * sq_sum + 1e-30);
      }
    }
    // Non-finite inputs propagate as they do in the reference.
    std::vector<float> a(100, 1.f), b(100, 1.f);
    a[77] = std::numeric_limits<float>::quiet_NaN();
    CHECK(std::isnan(k.dot_f32(a.data(), b.data(), 100)));
    CHECK(std::isnan(k.l2_sqr_f32(a.data(), b.data(), 100)));
    a[77] = std::numeric_limits<float>::infinity();
    CHECK(k.dot_f32(a.data(), b.data(), 100) == ref.dot_f32(a.data(), b.data(), 100));

    const auto big_a = random_normal(1 << 20, 7), big_b = random_normal(1 << 20, 8);
    report_perf("dot_f32", isa, 8.0 * big_a.size(), [&] { (void)k.dot_f32(big_a.data(), big_b.data(), big_a.size()); });
  });
}

TEST_CASE("conformance: dot_i8 is exact, including int32 wrap-around") {
  for_each_simd_table<CoreKernels>([&](Isa isa, const CoreKernels& k, const CoreKernels& ref) {
    std::mt19937 rng(99);
    for (std::size_t n : conformance_lengths()) {
      for (std::size_t off : kMisalignments) {
        std::vector<std::int8_t> a(n + off), b(n + off);
        for (auto& x : a) x = static_cast<std::int8_t>(rng());
        for (auto& x : b) x = static_cast<std::int8_t>(rng());
        INFO("n=" << n << " misalignment=" << off);
        REQUIRE(k.dot_i8(a.data() + off, b.data() + off, n) == ref.dot_i8(a.data() + off, b.data() + off, n));
      }
    }
    // Extremes: -128 * -128 everywhere overflows int32 past n = 131072; both wrap alike.
    for (std::size_t n : {std::size_t{131072}, std::size_t{131073}, std::size_t{300001}}) {
      std::vector<std::int8_t> a(n, -128), b(n, -128);
      INFO("n=" << n);
      CHECK(k.dot_i8(a.data(), b.data(), n) == ref.dot_i8(a.data(), b.data(), n));
      if (n == 131072) CHECK(ref.dot_i8(a.data(), b.data(), n) == static_cast<std::int32_t>(std::uint32_t{1} << 31));
    }
    std::vector<std::int8_t> big(1 << 22, 3);
    report_perf("dot_i8", isa, 2.0 * big.size(), [&] { (void)k.dot_i8(big.data(), big.data(), big.size()); });
  });
}

TEST_CASE("conformance: the scalar reference agrees with the f16/bf16 scalar types") {
  const CoreKernels& ref = *detail::kernel_table<CoreKernels>(Isa::scalar);
  const auto input = random_float_bits(10000, 5);
  std::vector<std::uint16_t> h(input.size()), b(input.size());
  ref.f32_to_f16(input.data(), h.data(), input.size());
  ref.f32_to_bf16(input.data(), b.data(), input.size());
  for (std::size_t i = 0; i < input.size(); ++i) {
    REQUIRE(h[i] == f16(input[i]).bits);
    REQUIRE(b[i] == bf16(input[i]).bits);
  }
}
