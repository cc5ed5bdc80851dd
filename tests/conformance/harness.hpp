// The conformance harness: runs a kernel table of every built ISA this CPU can run against the
// scalar reference (kernel_table<Table>(Isa::scalar)), on random and edge-case inputs, at many
// lengths and misalignments. Set QUARRY_CONFORMANCE_PERF=1 to also print each kernel's speed
// per ISA (as ggml's test-backend-ops does in perf mode). CUDA kernels are compared against the
// same scalar reference in tests/cuda/.
#pragma once

#include <doctest/doctest.h>

#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <quarry/core/cpu_features.hpp>
#include <quarry/core/detail/dispatch.hpp>

namespace quarry::testing {

/// Lengths that exercise empty input, every tail length of 8/16/32-wide loops, and long runs.
inline std::vector<std::size_t> conformance_lengths() {
  std::vector<std::size_t> n;
  for (std::size_t i = 0; i <= 70; ++i) n.push_back(i);
  for (std::size_t v : {127u, 128u, 129u, 255u, 256u, 257u, 1000u, 1023u, 4099u}) n.push_back(v);
  return n;
}

/// Offsets (in elements) that break 16/32/64-byte alignment of the pointers handed to kernels.
inline constexpr std::size_t kMisalignments[] = {0, 1, 3};

/// Calls f(isa, table, reference) for each ISA other than scalar that is built and runnable.
/// With QUARRY_FORCE_ISA set, the forced level (when not scalar) is the only one checked.
template <class Table, class F>
void for_each_simd_table(F&& f) {
  const Table& reference = *detail::kernel_table<Table>(Isa::scalar);
  int checked = 0;
  for (Isa isa : supported_isas()) {
    if (isa == Isa::scalar) continue;
    if (std::getenv("QUARRY_FORCE_ISA") && *std::getenv("QUARRY_FORCE_ISA") && isa != active_isa()) continue;
    INFO("isa: " << isa_name(isa));
    f(isa, *detail::kernel_table<Table>(isa), reference);
    ++checked;
  }
  MESSAGE("SIMD kernel sets checked against scalar: " << checked << " (active: " << isa_name(active_isa()) << ")");
}

/// Floats that trip conversions and reductions: zeros, subnormals, extremes, infinities, NaNs.
inline std::vector<float> edge_floats() {
  using lim = std::numeric_limits<float>;
  std::vector<float> v = {0.f, -0.f, 1.f, -1.f, 0.5f, 65504.f, 65519.99f, 65520.f, -65520.f, 1e-8f, -1e-8f,
                          std::ldexp(1.f, -24), std::ldexp(1.f, -25), std::ldexp(3.f, -25), std::ldexp(1.f, -14),
                          lim::min(), lim::denorm_min(), -lim::denorm_min(), lim::max(), -lim::max(),
                          lim::infinity(), -lim::infinity(), lim::quiet_NaN(), -lim::quiet_NaN(),
                          std::bit_cast<float>(0x7f800001u), std::bit_cast<float>(0xffbfffffu),
                          std::bit_cast<float>(0x3f808000u), std::bit_cast<float>(0x3f818000u),
                          std::bit_cast<float>(0x7f7f8000u), std::bit_cast<float>(0x00008000u)};
  return v;
}

/// n random float bit patterns (every class of float appears), with the edge values mixed in.
inline std::vector<float> random_float_bits(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> v(n);
  const auto edges = edge_floats();
  for (std::size_t i = 0; i < n; ++i) {
    if (rng() % 8 == 0) v[i] = edges[rng() % edges.size()];
    else v[i] = std::bit_cast<float>(static_cast<std::uint32_t>(rng()));
  }
  return v;
}

/// n normally distributed floats (for products and distances).
inline std::vector<float> random_normal(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.f, 1.f);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

/// True when QUARRY_CONFORMANCE_PERF=1: print kernel speed per ISA.
inline bool perf_mode() {
  const char* p = std::getenv("QUARRY_CONFORMANCE_PERF");
  return p && *p == '1';
}

/// Prints how long `f` takes (best of a few runs) for a kernel on one ISA, in perf mode only.
template <class F>
void report_perf(const char* kernel, Isa isa, double bytes, F&& f) {
  if (!perf_mode()) return;
  double best = 1e30;
  for (int rep = 0; rep < 20; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, s);
  }
  std::printf("perf %-14s %-7s %8.2f GB/s\n", kernel, std::string(isa_name(isa)).c_str(), bytes / best / 1e9);
}

}  // namespace quarry::testing
