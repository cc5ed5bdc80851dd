// A downstream program: it sees only quarry's public headers and links only quarry's targets.
// Prints what it computed and exits nonzero when a result is wrong.
#include <quarry/quarry.hpp>
#ifdef QUARRY_CONSUMER_CUDA
#include <quarry/cuda.hpp>  // the cuda component: host-compiler clean, links through quarry::cuda
#endif

#include <cmath>
#include <cstdint>
#include <string_view>

#include <fmt/core.h>

int main() {
  int failures = 0;
  auto expect = [&failures](bool ok, std::string_view what) {
    if (!ok) {
      fmt::print(stderr, "quarry_consumer: FAILED: {}\n", what);
      ++failures;
    }
  };

  // 100 elements: not a multiple of any SIMD width, so the kernels' tails run too.
  constexpr std::int64_t n = 100;
  quarry::Tensor<float> a({2, n});
  quarry::Tensor<std::int8_t> x({n});
  quarry::Tensor<std::int8_t> y({n});
  std::int32_t dot_i8_expected = 0;
  double l2_expected = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    a(0, i) = 0.5f * static_cast<float>(i);
    a(1, i) = 1.0f;
    x(i) = static_cast<std::int8_t>(i % 255 - 127);
    y(i) = static_cast<std::int8_t>(3 - i % 7);
    dot_i8_expected += static_cast<std::int32_t>(x(i)) * y(i);
    l2_expected += (0.5 * static_cast<double>(i) - 1.0) * (0.5 * static_cast<double>(i) - 1.0);
  }

  const float dot_f32 = quarry::dot(a[0].span(), a[1].span());
  expect(dot_f32 == 2475.0f, "dot(f32) of 0.5*i with ones is 2475 (exact in float)");
  const std::int32_t dot_i8 = quarry::dot(x.span(), y.span());
  expect(dot_i8 == dot_i8_expected, "dot(i8) matches the int32 reference");
  const float l2 = quarry::l2_sqr(a[0].span(), a[1].span());
  expect(std::abs(l2 - l2_expected) <= 1e-5 * l2_expected, "l2_sqr matches the double reference");

  // An exception thrown inside quarry reaches the caller as quarry::error.
  bool threw = false;
  try {
    (void)quarry::dot(a[0].span(), a[0].slice(0, 0, n - 1).span());
  } catch (const quarry::error&) {
    threw = true;
  }
  expect(threw, "dot of vectors of different lengths throws quarry::error");

  const quarry::Isa isa = quarry::active_isa();
  expect(quarry::isa_supported(isa), "active_isa() is built and supported on this CPU");
#ifdef QUARRY_CONSUMER_EXPECTED_VERSION
  expect(std::string_view(QUARRY_VERSION_STRING) == QUARRY_CONSUMER_EXPECTED_VERSION,
         "QUARRY_VERSION_STRING is the version find_package reported");
#endif

#ifdef QUARRY_CONSUMER_CUDA
  // 0 without a device or driver: this checks that quarry::cuda links and loads, not the GPU.
  const int devices = quarry::cuda_device_count();
  expect(devices >= 0, "cuda_device_count() is not negative");
  fmt::print("quarry::cuda linked: {} CUDA device(s)\n", devices);
#endif
  fmt::print("quarry {} consumer: isa {}, dot(f32) = {}, dot(i8) = {}, l2_sqr = {}: {}\n",
             QUARRY_VERSION_STRING, quarry::isa_name(isa), dot_f32, dot_i8, l2,
             failures == 0 ? "ok" : "WRONG");
  return failures == 0 ? 0 : 1;
}
