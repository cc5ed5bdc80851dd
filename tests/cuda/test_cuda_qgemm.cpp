// quarry/quant/cuda_quantized_tensor.hpp and cuda_qgemm.hpp: QuantizedTensor<cuda> round trips
// byte for byte; the W4A16 and W8A8 products agree with CPU references computed here, for many
// shapes and every supported scheme:
//   W4A16  double-precision dot products of quarry::dequantize(w) with the activations as the
//          kernel sees them (f16-rounded for f16 activations), to float rounding;
//   W8A8   the per-row int8 activation quantization replicated on the host (bit-exact), the exact
//          int32 accumulators (checked exactly with unit scales), the float epilogue (a few ulp),
//          and the CPU qgemm (quarry/quant/qgemm.hpp) on the same activations, bit for bit.
// Also: edge cases (all-zero groups, NaN activations, K = 0, the 4-rows-per-warp GEMV for large
// N), launches without waiting, and the error messages for bad shapes and schemes.
#include <doctest/doctest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <quarry/cuda.hpp>
#include <quarry/quant/qgemm.hpp>

#include "test_util.hpp"

using namespace quarry;
using namespace quarry::testing;

namespace {

// Weights with all-zero blocks: row 0 entirely (when there are several rows) and the second
// group of the middle row, so the quantizer gives them scale 0.
Tensor<float> weights_with_zero_blocks(std::int64_t n, std::int64_t k, int group, std::uint32_t seed) {
  Tensor<float> w = gaussian(n, k, seed, 0.05f);
  if (n > 1)
    for (std::int64_t c = 0; c < k; ++c) w(0, c) = 0.f;
  if (k >= 2 * group)
    for (std::int64_t c = group; c < 2 * group; ++c) w(n / 2, c) = 0.f;
  return w;
}

QuantizedTensor<cpu> quantized(const Tensor<float>& w, const QuantScheme& scheme) {
  auto q = quantize(w.view(), scheme);
  REQUIRE_MESSAGE(q.ok(), q.status().to_string());
  return std::move(*q);
}

// x rounded to f16 and back when `f16_input`: what the kernel reads.
Tensor<float> as_seen(const Tensor<float>& x, bool f16_input) {
  Tensor<float> seen = x.clone();
  if (f16_input)
    for (float& v : seen.span()) v = static_cast<float>(f16(v));
  return seen;
}

Tensor<f16> to_f16(const Tensor<float>& x) {
  Tensor<f16> h = Tensor<f16>::uninitialized(x.shape());
  for (std::int64_t i = 0; i < x.numel(); ++i) h.data()[i] = f16(x.data()[i]);
  return h;
}

// The device product y = x . w^T with f32 or f16 activations, through qgemv (x as a [K] vector,
// M must be 1) or qgemm; returns y as a host [M, N] matrix.
Tensor<float> device_product(const Tensor<float>& x, bool f16_input, const QuantizedTensor<cuda>& w, const CudaQGemmOptions& options,
                             bool through_qgemv) {
  const std::int64_t m = x.dim(0), k = x.dim(1), n = w.rows();
  Tensor<float, cuda> y = Tensor<float, cuda>::uninitialized(through_qgemv ? Shape{n} : Shape{m, n});
  auto run = [&](const auto& xd) {
    if (through_qgemv) qgemv(xd, w, y, options);
    else qgemm(xd, w, y, options);
  };
  if (f16_input) {
    auto xd = to_device(to_f16(x));
    if (through_qgemv) xd.reshape_in_place({k});
    run(xd);
  } else {
    auto xd = to_device(x);
    if (through_qgemv) xd.reshape_in_place({k});
    run(xd);
  }
  Tensor<float> out = y.to_host();
  out.reshape_in_place({m, n});
  return out;
}

std::vector<QuantScheme> w4a16_schemes() {
  std::vector<QuantScheme> s;
  for (int group : {32, 64, 128})
    for (bool symmetric : {true, false})
      for (DType scale_dtype : {DType::f16, DType::f32}) s.push_back(QuantScheme::int4_grouped(group, symmetric, scale_dtype));
  return s;
}

std::vector<QuantScheme> w8a8_schemes() {
  return {QuantScheme::int8_per_channel(), QuantScheme::int8_per_tensor(), QuantScheme{8, Granularity::per_channel, 0, true, DType::f16},
          QuantScheme{8, Granularity::per_tensor, 0, true, DType::f16}};
}

// Optional bias [N] on the device and its host copy.
struct Bias {
  Tensor<float> host;
  Tensor<float, cuda> device;
};
Bias make_bias(std::int64_t n, std::uint32_t seed) {
  Bias b;
  b.host = gaussian(1, n, seed);
  b.host.reshape_in_place({n});
  b.device = to_device(b.host);
  return b;
}

// ---- W4A16 reference ----

// Compares y [M, N] with output_scale * (x_seen . dequantize(w)^T) + bias in double; the
// tolerance is float rounding of sums of |terms|. Returns the first mismatch, or "".
std::string check_w4a16(const Tensor<float>& y, const Tensor<float>& x_seen, const Tensor<float>& deq, float output_scale, const float* bias) {
  const std::int64_t m = x_seen.dim(0), k = x_seen.dim(1), n = deq.dim(0);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      const float* w = deq.data() + j * k;  // both owning, so rows are contiguous
      const float* xr = x_seen.data() + i * k;
      double dot = 0, mag = 0;
      for (std::int64_t c = 0; c < k; ++c) {
        const double t = static_cast<double>(w[c]) * static_cast<double>(xr[c]);
        dot += t;
        mag += std::fabs(t);
      }
      const double b = bias ? bias[j] : 0.0;
      const double want = static_cast<double>(output_scale) * dot + b;
      const double tol = 2e-5 * (std::fabs(output_scale) * mag + std::fabs(b)) + 1e-30;
      const double got = y(i, j);
      if (!(std::fabs(got - want) <= tol))
        return fmt::format("y({}, {}) = {} but the reference is {} (tolerance {})", i, j, got, want, tol);
    }
  return {};
}

// ---- W8A8 reference: the CPU qgemm's arithmetic (src/cpu/kernels/quant.hpp) ----

struct QuantizedRows {
  std::vector<std::int8_t> q;  // [M, K]
  std::vector<float> scale;    // [M]
};

QuantizedRows quantize_rows_reference(const Tensor<float>& x_seen) {
  const std::int64_t m = x_seen.dim(0), k = x_seen.dim(1);
  QuantizedRows r;
  r.q.assign(static_cast<std::size_t>(m * k), 0);
  r.scale.assign(static_cast<std::size_t>(m), 0.f);
  for (std::int64_t i = 0; i < m; ++i) {
    float amax = 0.f;
    bool finite = true;
    for (std::int64_t c = 0; c < k; ++c) {
      const float v = x_seen(i, c);
      finite = finite && std::isfinite(v);
      amax = std::max(amax, std::fabs(v));
    }
    if (!finite) {
      r.scale[static_cast<std::size_t>(i)] = std::numeric_limits<float>::quiet_NaN();
      continue;
    }
    const float inv = 127.f / amax;
    if (!(inv <= std::numeric_limits<float>::max())) continue;  // scale 0, zeros
    r.scale[static_cast<std::size_t>(i)] = amax / 127.f;
    for (std::int64_t c = 0; c < k; ++c) {
      const float product = x_seen(i, c) * inv;
      const float rounded = std::nearbyint(product);
      r.q[static_cast<std::size_t>(i * k + c)] = static_cast<std::int8_t>(std::clamp(rounded, -127.f, 127.f));
    }
  }
  return r;
}

std::int64_t int_dot(const QuantizedRows& xr, const QuantizedTensor<cpu>& w, std::int64_t i, std::int64_t j) {
  std::int64_t acc = 0;
  for (std::int64_t c = 0; c < w.cols(); ++c) acc += std::int64_t{xr.q[static_cast<std::size_t>(i * w.cols() + c)]} * w.value(j, c);
  return acc;
}

// Distance in units in the last place between two finite floats of one sign (large otherwise).
std::int64_t ulps(float a, float b) {
  if (a == b) return 0;
  if (!std::isfinite(a) || !std::isfinite(b) || (a < 0) != (b < 0)) return std::numeric_limits<std::int64_t>::max();
  return std::abs(static_cast<std::int64_t>(std::bit_cast<std::uint32_t>(a)) - static_cast<std::int64_t>(std::bit_cast<std::uint32_t>(b)));
}

// Compares y with fma(float(acc), (x_scale * output_scale) * w_scale, bias or 0) computed on
// the host in f32 from the exact integer accumulators (the CPU qgemm's epilogue): within 2 ulp
// (the kernel does the same operations, so the bits should agree; the exact-bits check against
// the CPU qgemm is a separate test); NaN where the row's scale is NaN.
std::string check_w8a8(const Tensor<float>& y, const QuantizedRows& xr, const QuantizedTensor<cpu>& w, float output_scale, const float* bias) {
  const std::int64_t m = y.dim(0), n = y.dim(1);
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      const float xs = xr.scale[static_cast<std::size_t>(i)];
      const auto [sr, sc] = w.scale_index(j, 0);
      const float ws = w.scale(sr, sc);
      const std::int64_t acc = int_dot(xr, w, i, j);
      const float combined = (xs * output_scale) * ws;
      const float want = std::fma(static_cast<float>(acc), combined, bias ? bias[j] : 0.f);
      const float got = y(i, j);
      if (std::isnan(want)) {
        if (!std::isnan(got)) return fmt::format("y({}, {}) = {} but row {} has a NaN scale, so it must be NaN", i, j, got, i);
        continue;
      }
      const double tol_abs = 4.0 * std::numeric_limits<float>::epsilon() *
                             (std::fabs(static_cast<double>(acc) * combined) + (bias ? std::fabs(bias[j]) : 0.0));
      if (ulps(got, want) > 2 && !(std::fabs(static_cast<double>(got) - want) <= tol_abs))
        return fmt::format("y({}, {}) = {} but the reference is {} (acc {}, x scale {}, w scale {})", i, j, got, want, acc, xs, ws);
    }
  return {};
}

const std::int64_t kMs[] = {1, 3, 8, 33};
const std::int64_t kNs[] = {1, 7, 64, 300};

}  // namespace

TEST_CASE("QuantizedTensor<cuda>: to_device / to_host round trip is byte-identical for every scheme") {
  std::vector<QuantScheme> schemes = w4a16_schemes();
  for (const auto& s : w8a8_schemes()) schemes.push_back(s);
  // Schemes the kernels do not take still live on the device.
  schemes.push_back(QuantScheme::int8_per_channel(false));
  schemes.push_back(QuantScheme::int8_grouped(32));
  schemes.push_back(QuantScheme{4, Granularity::per_channel, 0, false, DType::f32});
  for (const QuantScheme& scheme : schemes) {
    CAPTURE(scheme.to_string());
    const QuantizedTensor<cpu> q = quantized(weights_with_zero_blocks(7, 256, 32, 11), scheme);
    const QuantizedTensor<cuda> d = to_device(q);
    CHECK(d.scheme() == q.scheme());
    CHECK(d.rows() == 7);
    CHECK(d.cols() == 256);
    CHECK(d.row_bytes() == q.row_bytes());
    CHECK(d.nbytes() == q.nbytes());
    CHECK(d.scales_shape() == q.scales_shape());
    CHECK(d.device() == cuda_current_device());
    CHECK((d.zeros_data() == nullptr) == scheme.symmetric);
    for (const QuantizedTensor<cpu>& back : {to_host(d), d.clone().to_host()}) {
      REQUIRE(back.scheme() == q.scheme());
      REQUIRE(back.nbytes() == q.nbytes());
      CHECK(std::memcmp(back.value_bytes().data(), q.value_bytes().data(), q.value_bytes().numel()) == 0);
      const std::size_t scale_bytes = static_cast<std::size_t>(numel_of(q.scales_shape())) * (scheme.scale_dtype == DType::f16 ? 2 : 4);
      CHECK(std::memcmp(back.scales_data(), q.scales_data(), scale_bytes) == 0);
      if (!scheme.symmetric) CHECK(std::memcmp(back.zeros().data(), q.zeros().data(), static_cast<std::size_t>(q.zeros().numel())) == 0);
    }
  }
  // An empty matrix, and a moved-from one.
  QuantizedTensor<cuda> empty;
  CHECK(empty.to_host().rows() == 0);
  CHECK(empty.nbytes() == 0);
  QuantizedTensor<cuda> a = to_device(quantized(gaussian(3, 64, 2), QuantScheme::int4_grouped(32)));
  QuantizedTensor<cuda> b = std::move(a);
  CHECK(b.rows() == 3);
  CHECK(b.to_host().cols() == 64);
}

TEST_CASE("qgemm / qgemv W4A16 on cuda: every scheme, f32 and f16 activations, many shapes, against dequantize . x") {
  std::uint32_t seed = 100;
  for (const QuantScheme& scheme : w4a16_schemes()) {
    for (std::int64_t k : {32, 64, 128, 160, 384, 1024}) {
      if (k % scheme.group_size != 0) continue;
      for (std::int64_t n : kNs) {
        const QuantizedTensor<cpu> q = quantized(weights_with_zero_blocks(n, k, scheme.group_size, ++seed), scheme);
        const Tensor<float> deq = dequantize(q);
        const QuantizedTensor<cuda> w = to_device(q);
        const Bias bias = make_bias(n, ++seed);
        for (std::int64_t m : kMs) {
          const Tensor<float> x = gaussian(m, k, ++seed);
          for (bool f16_input : {false, true}) {
            const bool with_epilogue = (seed % 2) == 0;
            CudaQGemmOptions options;
            if (with_epilogue) {
              options.bias = &bias.device;
              options.output_scale = 0.75f;
            }
            CAPTURE(scheme.to_string());
            CAPTURE(fmt::format("M = {}, N = {}, K = {}, {} activations, epilogue {}", m, n, k, f16_input ? "f16" : "f32", with_epilogue));
            const Tensor<float> seen = as_seen(x, f16_input);
            const float* b = with_epilogue ? bias.host.data() : nullptr;
            const std::string bad = check_w4a16(device_product(x, f16_input, w, options, false), seen, deq, options.output_scale, b);
            CHECK_MESSAGE(bad.empty(), bad);
            if (m == 1) {
              const std::string bad_gemv = check_w4a16(device_product(x, f16_input, w, options, true), seen, deq, options.output_scale, b);
              CHECK_MESSAGE(bad_gemv.empty(), "qgemv: " << bad_gemv);
            }
          }
        }
      }
    }
  }
}

TEST_CASE("quantize_rows_int8 on cuda: the host's rounding, bit for bit; zero, tiny, NaN and infinite rows") {
  const std::int64_t k = 300;
  Tensor<float> x = gaussian(8, k, 7, 3.f);
  for (std::int64_t c = 0; c < k; ++c) {
    x(1, c) = 0.f;                                      // all zero: scale 0
    x(2, c) = 1e-38f * static_cast<float>(c % 5);        // 127 / amax overflows: scale 0
    x(5, c) = static_cast<float>(c % 255) - 127.f + 0.5f;  // amax 127.5; plenty of near-ties
    x(6, c) = static_cast<float>(c % 255) - 127.f;         // amax 127: inv 1, exact integers
    x(7, c) = static_cast<float>(c) * 1e4f;
  }
  x(3, 17) = std::numeric_limits<float>::quiet_NaN();
  x(4, 250) = -std::numeric_limits<float>::infinity();
  for (bool f16_input : {false, true}) {
    CAPTURE(f16_input);
    const Tensor<float> seen = as_seen(x, f16_input);
    const QuantizedRows want = quantize_rows_reference(seen);
    Tensor<std::int8_t, cuda> xq = Tensor<std::int8_t, cuda>::uninitialized(x.shape());
    Tensor<float, cuda> scales = Tensor<float, cuda>::uninitialized({8});
    if (f16_input) quantize_rows_int8(to_device(to_f16(x)), xq, scales);
    else quantize_rows_int8(to_device(x), xq, scales);
    const Tensor<std::int8_t> got_q = xq.to_host();
    const Tensor<float> got_s = scales.to_host();
    for (std::int64_t i = 0; i < 8; ++i) {
      CAPTURE(i);
      const float ws = want.scale[static_cast<std::size_t>(i)];
      if (std::isnan(ws)) CHECK(std::isnan(got_s(i)));
      else CHECK(std::bit_cast<std::uint32_t>(got_s(i)) == std::bit_cast<std::uint32_t>(ws));
      std::int64_t first_bad = -1;
      for (std::int64_t c = 0; c < k && first_bad < 0; ++c)
        if (got_q(i, c) != want.q[static_cast<std::size_t>(i * k + c)]) first_bad = c;
      CHECK_MESSAGE(first_bad == -1, fmt::format("row {}: first differing integer at column {}", i, first_bad));
    }
    CHECK(got_s(1) == 0.f);
    CHECK(got_s(2) == 0.f);
  }
}

TEST_CASE("qgemm / qgemv W8A8 on cuda: every scheme, f32 and f16 activations, many shapes, against the int32 reference") {
  std::uint32_t seed = 500;
  for (const QuantScheme& scheme : w8a8_schemes()) {
    for (std::int64_t k : {1, 7, 32, 100, 384, 1024}) {  // 1, 7, 100: the unaligned paths
      for (std::int64_t n : kNs) {
        const QuantizedTensor<cpu> q = quantized(weights_with_zero_blocks(n, k, 32, ++seed), scheme);
        const QuantizedTensor<cuda> w = to_device(q);
        const Bias bias = make_bias(n, ++seed);
        for (std::int64_t m : kMs) {
          Tensor<float> x = gaussian(m, k, ++seed);
          if (m > 2)
            for (std::int64_t c = 0; c < k; ++c) x(1, c) = 0.f;  // a zero row: y = bias
          for (bool f16_input : {false, true}) {
            const bool with_epilogue = (seed % 2) == 1;
            CudaQGemmOptions options;
            if (with_epilogue) {
              options.bias = &bias.device;
              options.output_scale = 1.5f;
            }
            CAPTURE(scheme.to_string());
            CAPTURE(fmt::format("M = {}, N = {}, K = {}, {} activations, epilogue {}", m, n, k, f16_input ? "f16" : "f32", with_epilogue));
            const QuantizedRows xr = quantize_rows_reference(as_seen(x, f16_input));
            const float* b = with_epilogue ? bias.host.data() : nullptr;
            const std::string bad = check_w8a8(device_product(x, f16_input, w, options, false), xr, q, options.output_scale, b);
            CHECK_MESSAGE(bad.empty(), bad);
            if (m == 1) {
              const std::string bad_gemv = check_w8a8(device_product(x, f16_input, w, options, true), xr, q, options.output_scale, b);
              CHECK_MESSAGE(bad_gemv.empty(), "qgemv: " << bad_gemv);
            }
          }
        }
      }
    }
  }
}

TEST_CASE("qgemm / qgemv W8A8 on cuda: the same bits as the CPU qgemm (the scalar reference and its SIMD kernels)") {
  std::uint32_t seed = 900;
  for (const QuantScheme& scheme : w8a8_schemes()) {
    for (std::int64_t k : {7, 64, 100, 1024}) {
      for (std::int64_t n : kNs) {
        const QuantizedTensor<cpu> q = quantized(weights_with_zero_blocks(n, k, 32, ++seed), scheme);
        const QuantizedTensor<cuda> w = to_device(q);
        const Bias bias = make_bias(n, ++seed);
        for (std::int64_t m : kMs) {
          for (bool f16_input : {false, true}) {
            CAPTURE(scheme.to_string());
            CAPTURE(fmt::format("M = {}, N = {}, K = {}, {} activations", m, n, k, f16_input ? "f16" : "f32"));
            const Tensor<float> x = gaussian(m, k, ++seed, 2.f);
            // The CPU takes f32 activations; give it exactly what the kernel reads.
            const Tensor<float> seen = as_seen(x, f16_input);
            Tensor<float> want({m, n});
            QGemmOptions cpu_options;
            cpu_options.bias = bias.host.span();
            cpu_options.output_scale = 0.625f;
            qgemm(seen.view(), q, want.view(), cpu_options);
            CudaQGemmOptions options;
            options.bias = &bias.device;
            options.output_scale = 0.625f;
            for (bool through_qgemv : {false, true}) {
              if (through_qgemv && m != 1) continue;
              const Tensor<float> got = device_product(x, f16_input, w, options, through_qgemv);
              std::string bad;
              for (std::int64_t i = 0; i < m && bad.empty(); ++i)
                for (std::int64_t j = 0; j < n && bad.empty(); ++j)
                  if (std::bit_cast<std::uint32_t>(got(i, j)) != std::bit_cast<std::uint32_t>(want(i, j)))
                    bad = fmt::format("{}: y({}, {}) = {} but the CPU qgemm gives {}", through_qgemv ? "qgemv" : "qgemm", i, j, got(i, j), want(i, j));
              CHECK_MESSAGE(bad.empty(), bad);
            }
          }
        }
      }
    }
  }
}

TEST_CASE("qgemm W8A8 on cuda: the int32 accumulation is exact (unit scales, extreme integers, long K)") {
  std::mt19937 rng(99);
  std::uniform_int_distribution<int> any(-127, 127);
  for (std::int64_t k : {1, 7, 16, 100, 1024, 65536}) {
    for (std::int64_t m : {1, 3, 33}) {
      const std::int64_t n = k >= 65536 ? 7 : 64;
      CAPTURE(fmt::format("M = {}, N = {}, K = {}", m, n, k));
      // Weights: random, except row 0 all +127 and row 1 all -127 (the largest |acc|).
      auto made = QuantizedTensor<cpu>::create(QuantScheme::int8_per_channel(), n, k);
      REQUIRE(made.ok());
      QuantizedTensor<cpu> q = std::move(*made);
      auto wv = q.values<std::int8_t>();
      for (std::int64_t j = 0; j < n; ++j) {
        q.scales_f32()(j, 0) = 1.f;
        for (std::int64_t c = 0; c < k; ++c)
          wv(j, c) = static_cast<std::int8_t>(j == 0 ? 127 : (j == 1 ? -127 : any(rng)));
      }
      QuantizedRows xr;
      xr.q.resize(static_cast<std::size_t>(m * k));
      xr.scale.assign(static_cast<std::size_t>(m), 1.f);
      for (std::int64_t i = 0; i < m; ++i)
        for (std::int64_t c = 0; c < k; ++c) xr.q[static_cast<std::size_t>(i * k + c)] = static_cast<std::int8_t>(i == 0 ? 127 : any(rng));
      Tensor<std::int8_t> xq_host = Tensor<std::int8_t>::uninitialized({m, k});
      std::memcpy(xq_host.data(), xr.q.data(), xr.q.size());
      Tensor<float> xs_host = Tensor<float>::full({m}, 1.f);
      const QuantizedTensor<cuda> w = to_device(q);
      Tensor<float, cuda> y({m, n});
      qgemm(to_device(xq_host), to_device(xs_host), w, y);
      const Tensor<float> got = y.to_host();
      std::string bad;
      for (std::int64_t i = 0; i < m && bad.empty(); ++i)
        for (std::int64_t j = 0; j < n && bad.empty(); ++j) {
          const std::int64_t acc = int_dot(xr, q, i, j);
          // float(acc) is what the kernel must produce; exact for |acc| < 2^24, rounded once above.
          if (got(i, j) != static_cast<float>(acc)) bad = fmt::format("y({}, {}) = {} but the exact sum is {}", i, j, got(i, j), acc);
        }
      CHECK_MESSAGE(bad.empty(), bad);
      CHECK(got(0, 0) == static_cast<float>(127 * 127 * k));
    }
  }
}

TEST_CASE("cuda qgemv: large N takes the 4-rows-per-warp kernels (tail rows included)") {
  const std::int64_t n = 4231, k = 256;  // 4231 = 16 * 264 + 7: the last block is partly empty
  const Tensor<float> x = gaussian(1, k, 3);
  for (const QuantScheme& scheme : {QuantScheme::int4_grouped(128, true, DType::f16), QuantScheme::int4_grouped(32, false, DType::f32),
                                    QuantScheme::int8_per_channel()}) {
    CAPTURE(scheme.to_string());
    const QuantizedTensor<cpu> q = quantized(weights_with_zero_blocks(n, k, 32, 4), scheme);
    const QuantizedTensor<cuda> w = to_device(q);
    for (bool f16_input : {false, true}) {
      CAPTURE(f16_input);
      const Tensor<float> y = device_product(x, f16_input, w, {}, true);
      const std::string bad = scheme.bits == 4 ? check_w4a16(y, as_seen(x, f16_input), dequantize(q), 1.f, nullptr)
                                               : check_w8a8(y, quantize_rows_reference(as_seen(x, f16_input)), q, 1.f, nullptr);
      CHECK_MESSAGE(bad.empty(), bad);
    }
  }
}

TEST_CASE("cuda qgemm: NaN activations, all-zero weight blocks, K = 0, launches without waiting") {
  SUBCASE("W4A16: a NaN activation makes its whole output row NaN; other rows are untouched") {
    const QuantizedTensor<cpu> q = quantized(weights_with_zero_blocks(64, 128, 32, 5), QuantScheme::int4_grouped(32, false));
    const QuantizedTensor<cuda> w = to_device(q);
    Tensor<float> x = gaussian(3, 128, 6);
    x(1, 40) = std::numeric_limits<float>::quiet_NaN();
    for (bool f16_input : {false, true}) {
      const Tensor<float> y = device_product(x, f16_input, w, {}, false);
      for (std::int64_t j = 0; j < 64; ++j) {
        CHECK(std::isnan(y(1, j)));  // row 0 of w is all zero: 0 * NaN is still NaN
        CHECK(std::isfinite(y(0, j)));
        CHECK(std::isfinite(y(2, j)));
      }
      CHECK(y(0, 0) == 0.f);  // an all-zero weight row (scale 0) gives exactly 0
      Tensor<float> x1 = gaussian(1, 128, 8);
      x1(0, 3) = std::numeric_limits<float>::quiet_NaN();
      const Tensor<float> y1 = device_product(x1, f16_input, w, {}, true);
      for (std::int64_t j = 0; j < 64; ++j) CHECK(std::isnan(y1(0, j)));
    }
  }
  SUBCASE("W8A8: a NaN or infinite activation makes its row NaN") {
    const QuantizedTensor<cuda> w = to_device(quantized(gaussian(7, 64, 9), QuantScheme::int8_per_channel()));
    Tensor<float> x = gaussian(3, 64, 10);
    x(0, 5) = std::numeric_limits<float>::quiet_NaN();
    x(2, 9) = std::numeric_limits<float>::infinity();
    const Tensor<float> y = device_product(x, false, w, {}, false);
    for (std::int64_t j = 0; j < 7; ++j) {
      CHECK(std::isnan(y(0, j)));
      CHECK(std::isfinite(y(1, j)));
      CHECK(std::isnan(y(2, j)));
    }
  }
  SUBCASE("K = 0: y is the bias") {
    const Bias bias = make_bias(5, 12);
    CudaQGemmOptions options;
    options.bias = &bias.device;
    for (const QuantScheme& scheme : {QuantScheme::int4_grouped(32), QuantScheme::int8_per_channel()}) {
      CAPTURE(scheme.to_string());
      const QuantizedTensor<cuda> w = to_device(quantized(Tensor<float>({5, 0}), scheme));
      const Tensor<float> y = device_product(Tensor<float>({2, 0}), false, w, options, false);
      for (std::int64_t i = 0; i < 2; ++i)
        for (std::int64_t j = 0; j < 5; ++j) CHECK(y(i, j) == bias.host(j));
    }
  }
  SUBCASE("wait = false: the result is there once the stream is synchronised (to_host)") {
    const QuantizedTensor<cpu> q = quantized(gaussian(300, 256, 13, 0.1f), QuantScheme::int4_grouped(64));
    const QuantizedTensor<cuda> w = to_device(q);
    const Tensor<float> x = gaussian(1, 256, 14);
    const auto xd = to_device(x);
    Tensor<float, cuda> y({1, 300});
    CudaQGemmOptions options;
    options.wait = false;
    for (int i = 0; i < 10; ++i) qgemm(xd, w, y, options);
    const std::string bad = check_w4a16(y.to_host(), x, dequantize(q), 1.f, nullptr);
    CHECK_MESSAGE(bad.empty(), bad);
  }
}

TEST_CASE("cuda qgemm: errors name the bad shape or scheme") {
  const QuantizedTensor<cuda> w4 = to_device(quantized(gaussian(64, 128, 1), QuantScheme::int4_grouped(32)));
  const QuantizedTensor<cuda> w8 = to_device(quantized(gaussian(64, 128, 1), QuantScheme::int8_per_channel()));
  const Tensor<float, cuda> x({3, 128});
  Tensor<float, cuda> y({3, 64});

  SUBCASE("K of the activations differs from the weights' K") {
    const Tensor<float, cuda> x100({3, 100});
    const status st = thrown([&] { qgemm(x100, w4, y); });
    CHECK(st.code() == errc::shape_mismatch);
    CHECK(contains(st.message(), "K = 100"));
    CHECK(contains(st.message(), "w [64, 128]"));
    CHECK(contains(st.message(), "per_group(32)"));
    const Tensor<f16, cuda> v({96});
    Tensor<float, cuda> yv({64});
    const status sv = thrown([&] { qgemv(v, w8, yv); });
    CHECK(sv.code() == errc::shape_mismatch);
    CHECK(contains(sv.message(), "K = 96"));
  }
  SUBCASE("y of the wrong shape") {
    Tensor<float, cuda> y_bad({3, 63});
    const status st = thrown([&] { qgemm(x, w4, y_bad); });
    CHECK(st.code() == errc::shape_mismatch);
    CHECK(contains(st.message(), "[3, 63]"));
    CHECK(contains(st.message(), "[3, 64]"));
  }
  SUBCASE("a bias that is not [N]") {
    const Tensor<float, cuda> bias({65});
    CudaQGemmOptions options;
    options.bias = &bias;
    const status st = thrown([&] { qgemm(x, w8, y, options); });
    CHECK(st.code() == errc::shape_mismatch);
    CHECK(contains(st.message(), "[65]"));
  }
  SUBCASE("activations of the wrong rank") {
    const Tensor<float, cuda> x3({1, 3, 128});
    CHECK(thrown([&] { qgemm(x3, w4, y); }).code() == errc::shape_mismatch);
    const Tensor<float, cuda> x2({2, 128});
    Tensor<float, cuda> y2({2, 64});
    const status st = thrown([&] { qgemv(x2, w4, y2); });
    CHECK(st.code() == errc::shape_mismatch);
    CHECK(contains(st.message(), "qgemm"));
  }
  SUBCASE("schemes the kernels do not take") {
    for (const QuantScheme& scheme : {QuantScheme::int8_grouped(32), QuantScheme::int8_per_channel(false),
                                      QuantScheme{4, Granularity::per_channel, 0, true, DType::f32}}) {
      CAPTURE(scheme.to_string());
      CHECK(!cuda_qgemm_supports(scheme).ok());
      const QuantizedTensor<cuda> w = to_device(quantized(gaussian(64, 128, 2), scheme));
      const status st = thrown([&] { qgemm(x, w, y); });
      CHECK(st.code() == errc::invalid_argument);
      CHECK(contains(st.message(), scheme.to_string()));
      CHECK(contains(st.message(), "W4A16"));
    }
    for (const QuantScheme& scheme : w4a16_schemes()) CHECK(cuda_qgemm_supports(scheme).ok());
    for (const QuantScheme& scheme : w8a8_schemes()) CHECK(cuda_qgemm_supports(scheme).ok());
  }
  SUBCASE("int8 activations need W8A8 weights and one scale per row") {
    const Tensor<std::int8_t, cuda> xq({3, 128});
    const Tensor<float, cuda> scales({3});
    const status st = thrown([&] { qgemm(xq, scales, w4, y); });
    CHECK(st.code() == errc::invalid_argument);
    CHECK(contains(st.message(), "W8A8"));
    const Tensor<float, cuda> scales4({4});
    const status ss = thrown([&] { qgemm(xq, scales4, w8, y); });
    CHECK(ss.code() == errc::shape_mismatch);
    CHECK(contains(ss.message(), "x_scales is [4]"));
  }
  SUBCASE("quantize_rows_int8 shapes") {
    Tensor<std::int8_t, cuda> xq({3, 127});
    Tensor<float, cuda> scales({3});
    const status st = thrown([&] { quantize_rows_int8(x, xq, scales); });
    CHECK(st.code() == errc::shape_mismatch);
    CHECK(contains(st.message(), "[3, 127]"));
  }
}
