// qgemm / qgemv: results against a plain reference of the documented formula, against the f32
// product, fused bias and scale, threads, strided views, edge rows and bad input.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <quarry/quant/gguf_blocks.hpp>
#include <quarry/quant/qgemm.hpp>
#include <quarry/quant/quantize.hpp>

#include "test_util.hpp"

using namespace quarry;
using namespace quarry::testing;

namespace {


QuantizedTensor<cpu> quantized(const Tensor<float>& w, QuantScheme s = QuantScheme::int8_per_channel()) {
  auto q = quantize(w.view(), s);
  REQUIRE(q.ok());
  return std::move(q).value();
}

// Row i of x quantized as the documented W8A8/W4A8 activation step: round half even of
// x * (127 / amax), clamped to +-127; the scale is amax / 127, 0 for an all-zero (or too tiny)
// row and NaN for a row holding a NaN or an infinity.
std::pair<std::vector<int>, double> quantize_activation_row(const Tensor<float>& x, std::int64_t i) {
  const std::int64_t k = x.dim(1);
  float amax = 0;
  bool finite = true;
  for (std::int64_t c = 0; c < k; ++c) {
    finite = finite && std::isfinite(x(i, c));
    amax = std::max(amax, std::fabs(x(i, c)));
  }
  const float inv = 127.f / amax;
  std::vector<int> q(static_cast<std::size_t>(k), 0);
  double sx = std::numeric_limits<double>::quiet_NaN();
  if (finite) {
    sx = std::isfinite(inv) ? double(amax / 127.f) : 0.0;
    if (std::isfinite(inv))
      for (std::int64_t c = 0; c < k; ++c) q[c] = std::clamp(static_cast<int>(std::nearbyint(x(i, c) * inv)), -127, 127);
  }
  return {std::move(q), sx};
}

// The documented formula in double: x quantized per row (round half even, 127 / amax), weights
// dequantized, products summed exactly, then scaled and biased.
Tensor<double> reference(const Tensor<float>& x, const QuantizedTensor<cpu>& w, const std::vector<float>& bias, float out_scale) {
  const std::int64_t m = x.dim(0), k = x.dim(1), n = w.rows();
  Tensor<double> y({m, n});
  for (std::int64_t i = 0; i < m; ++i) {
    const auto [q, sx] = quantize_activation_row(x, i);
    for (std::int64_t j = 0; j < n; ++j) {
      const auto [sr, sc] = w.scale_index(j, 0);
      std::int64_t acc = 0;
      for (std::int64_t c = 0; c < k; ++c) acc += std::int64_t{q[c]} * (w.value(j, c) - w.zero(sr, sc));
      y(i, j) = double(out_scale) * sx * w.scale(sr, sc) * double(acc) + (bias.empty() ? 0.0 : bias[j]);
    }
  }
  return y;
}

void check_close(const Tensor<float>& got, const Tensor<double>& want, double rel = 1e-5) {
  REQUIRE(got.shape() == want.shape());
  double scale = 0;
  for (std::int64_t i = 0; i < want.dim(0); ++i)
    for (std::int64_t j = 0; j < want.dim(1); ++j)
      if (std::isfinite(want(i, j))) scale = std::max(scale, std::fabs(want(i, j)));
  for (std::int64_t i = 0; i < want.dim(0); ++i)
    for (std::int64_t j = 0; j < want.dim(1); ++j) {
      INFO("(" << i << ", " << j << ") got " << got(i, j) << " want " << want(i, j));
      if (std::isnan(want(i, j))) REQUIRE(std::isnan(got(i, j)));
      else REQUIRE(std::fabs(got(i, j) - want(i, j)) <= rel * (scale + 1e-30));
    }
}

std::vector<float> random_bias(std::int64_t n, std::uint32_t seed) {
  const Tensor<float> b = gaussian(1, n, seed);
  return {b.data(), b.data() + n};
}

}  // namespace

TEST_CASE("qgemm matches the documented formula for per_channel and per_tensor weights, symmetric and asymmetric") {
  ThreadPool pool(3);
  for (auto scheme : {QuantScheme::int8_per_channel(), QuantScheme::int8_per_tensor(),
                      QuantScheme{8, Granularity::per_channel, 0, true, DType::f16}, QuantScheme::int8_per_channel(false),
                      QuantScheme::int8_per_tensor(false), QuantScheme{8, Granularity::per_channel, 0, false, DType::f16}}) {
    for (const auto& mnk : {std::tuple{1, 37, 100}, std::tuple{3, 16, 64}, std::tuple{8, 70, 257}, std::tuple{13, 9, 1},
                           std::tuple{33, 130, 300}, std::tuple{20, 70, 160}}) {
      const int m = std::get<0>(mnk), n = std::get<1>(mnk), k = std::get<2>(mnk);
      INFO(scheme.to_string() << " m=" << m << " n=" << n << " k=" << k);
      const Tensor<float> x = gaussian(m, k, 1), wf = gaussian(n, k, 2, 0.05f);
      const auto w = quantized(wf, scheme);
      const auto bias = random_bias(n, 3);
      Tensor<float> y({m, n});
      qgemm(x.view(), w, y.view(), {.bias = bias, .output_scale = 0.5f});
      check_close(y, reference(x, w, bias, 0.5f));
      Tensor<float> ymt({m, n});  // threads split the rows: the same bits
      qgemm(x.view(), w, ymt.view(), {.bias = bias, .output_scale = 0.5f, .pool = &pool});
      for (std::int64_t i = 0; i < m; ++i)
        for (std::int64_t j = 0; j < n; ++j) REQUIRE(ymt(i, j) == y(i, j));
    }
  }
}

TEST_CASE("asymmetric int8 W8A8: non-negative weights use the whole uint8 range and beat symmetric") {
  // ReLU-like weights (all >= 0): asymmetric quantization spends all 256 levels on [0, max].
  const std::int64_t m = 4, n = 32, k = 300;
  const Tensor<float> x = gaussian(m, k, 61);
  Tensor<float> wf = gaussian(n, k, 62);
  for (std::int64_t j = 0; j < n; ++j)
    for (std::int64_t c = 0; c < k; ++c) wf(j, c) = std::fabs(wf(j, c)) + 0.5f;
  double err[2] = {0, 0}, sig = 0;
  for (bool sym : {true, false}) {
    const auto w = quantized(wf, QuantScheme::int8_per_channel(sym));
    Tensor<float> y({m, n});
    qgemm(x.view(), w, y.view());
    check_close(y, reference(x, w, {}, 1.f));
    double e = 0;
    sig = 0;
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j) {
        double exact = 0, deq = 0;
        for (std::int64_t c = 0; c < k; ++c) {
          exact += double(x(i, c)) * wf(j, c);
          deq += double(x(i, c)) * w.dequantized(j, c);
        }
        e += (deq - exact) * (deq - exact);  // the weights' part of the error only
        sig += exact * exact;
      }
    err[sym ? 0 : 1] = e;
  }
  CHECK(err[1] < err[0]);
}

TEST_CASE("qgemm is close to the f32 product (W8A8 quantization error only)") {
  const std::int64_t m = 16, n = 64, k = 512;
  const Tensor<float> x = gaussian(m, k, 4), wf = gaussian(n, k, 5);
  const auto w = quantized(wf);
  Tensor<float> y({m, n});
  qgemm(x.view(), w, y.view());
  double err = 0, sig = 0;
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      double exact = 0;
      for (std::int64_t c = 0; c < k; ++c) exact += double(x(i, c)) * wf(j, c);
      err += (y(i, j) - exact) * (y(i, j) - exact);
      sig += exact * exact;
    }
  CHECK(10 * std::log10(sig / err) > 30.0);  // int8 x int8 on Gaussians: ~35 dB
}

TEST_CASE("qgemv equals qgemm's row; threads give bit-identical results") {
  const std::int64_t n = 1000, k = 4096;
  const Tensor<float> x = gaussian(5, k, 6), wf = gaussian(n, k, 7);
  const auto w = quantized(wf);
  const auto bias = random_bias(n, 8);
  Tensor<float> serial({5, n}), threaded({5, n});
  ThreadPool pool(3);
  qgemm(x.view(), w, serial.view(), {.bias = bias});
  qgemm(x.view(), w, threaded.view(), {.bias = bias, .pool = &pool});
  for (std::int64_t i = 0; i < 5; ++i) {
    std::vector<float> row(static_cast<std::size_t>(n)), row_mt(static_cast<std::size_t>(n));
    qgemv({&x(i, 0), static_cast<std::size_t>(k)}, w, row, {.bias = bias});
    qgemv({&x(i, 0), static_cast<std::size_t>(k)}, w, row_mt, {.bias = bias, .pool = &pool});
    for (std::int64_t j = 0; j < n; ++j) {
      REQUIRE(serial(i, j) == threaded(i, j));
      REQUIRE(row[j] == serial(i, j));
      REQUIRE(row_mt[j] == serial(i, j));
    }
  }
}

TEST_CASE("qgemm takes strided x and y") {
  const std::int64_t m = 6, n = 20, k = 70;
  const Tensor<float> xt = gaussian(k, m, 9), wf = gaussian(n, k, 10);  // x = xt^T: column stride != 1
  const auto w = quantized(wf);
  const TensorView<const float> x(xt.data(), Shape{m, k}, Strides{1, m});
  Tensor<float> xd({m, k});
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t c = 0; c < k; ++c) xd(i, c) = x(i, c);
  Tensor<float> want({m, n});
  qgemm(xd.view(), w, want.view());

  Tensor<float> wide(Shape{m, n + 5});
  qgemm(x, w, TensorView<float>(wide.data(), Shape{m, n}, Strides{n + 5, 1}));
  Tensor<float> yt({n, m});
  qgemm(x, w, TensorView<float>(yt.data(), Shape{m, n}, Strides{1, m}));
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      REQUIRE(wide(i, j) == want(i, j));
      REQUIRE(yt(j, i) == want(i, j));
    }
}

TEST_CASE("qgemm edge rows: zeros, NaN, infinity, tiny values, zero weight rows, K = 0") {
  const std::int64_t m = 6, n = 10, k = 48;
  Tensor<float> x = gaussian(m, k, 11);
  Tensor<float> wf = gaussian(n, k, 12);
  for (std::int64_t c = 0; c < k; ++c) {
    x(1, c) = 0.f;     // all-zero row -> bias
    x(4, c) = 1e-40f;  // subnormal row: 127 / amax overflows -> treated as zero -> bias
    wf(7, c) = 0.f;    // all-zero weight row: scale 0 -> bias, not NaN
  }
  x(2, 5) = std::numeric_limits<float>::quiet_NaN();
  x(3, 40) = -std::numeric_limits<float>::infinity();
  const auto w = quantized(wf);
  CHECK(w.scale(7, 0) == 0.f);
  const auto bias = random_bias(n, 13);
  Tensor<float> y({m, n});
  qgemm(x.view(), w, y.view(), {.bias = bias});
  for (std::int64_t j = 0; j < n; ++j) {
    CHECK(y(1, j) == bias[j]);
    CHECK(y(4, j) == bias[j]);
    CHECK(std::isnan(y(2, j)));
    CHECK(std::isnan(y(3, j)));
    CHECK(std::isfinite(y(0, j)));
    CHECK(std::isfinite(y(5, j)));
    CHECK(y(0, 7) == bias[7]);
  }
  check_close(y, reference(x, w, bias, 1.f));

  // K = 0: every output is the bias.
  const auto empty = quantized(Tensor<float>({n, 0}));
  Tensor<float> y0({2, n});
  const Tensor<float> x0({2, 0});
  qgemm(x0.view(), empty, y0.view(), {.bias = bias});
  for (std::int64_t j = 0; j < n; ++j) CHECK(y0(1, j) == bias[j]);
  // M = 0 and N = 0: nothing to do, no error.
  Tensor<float> none({0, n});
  const Tensor<float> xm0({0, k});
  qgemm(xm0.view(), w, none.view());
}

TEST_CASE("qgemm rejects bad shapes and unsupported schemes with messages that name them") {
  const auto w = quantized(gaussian(8, 64, 14));
  Tensor<float> x({2, 64}), y({2, 8});
  auto message = [](auto&& f) -> std::string {
    try {
      f();
    } catch (const error& e) {
      return e.what();
    }
    return "no error";
  };
  auto code = [](auto&& f) -> errc {
    try {
      f();
    } catch (const error& e) {
      return e.code();
    }
    return errc::ok;
  };
  Tensor<float> bad_x({2, 63}), bad_y({2, 9}), bad_m({3, 8});
  CHECK(message([&] { qgemm(bad_x.view(), w, y.view()); }).find("[2, 63]") != std::string::npos);
  CHECK(code([&] { qgemm(bad_x.view(), w, y.view()); }) == errc::shape_mismatch);
  CHECK(message([&] { qgemm(x.view(), w, bad_y.view()); }).find("[2, 9]") != std::string::npos);
  CHECK(code([&] { qgemm(x.view(), w, bad_m.view()); }) == errc::shape_mismatch);
  const Tensor<float> vec({64});
  CHECK(code([&] { qgemm(vec.view(), w, y.view()); }) == errc::shape_mismatch);
  const std::vector<float> short_bias(7);
  CHECK(message([&] { qgemm(x.view(), w, y.view(), {.bias = short_bias}); }).find("bias has 7") != std::string::npos);
  std::vector<float> xv(64), yv(8), yv_bad(9);
  CHECK(code([&] { qgemv(std::span<const float>(xv).first(60), w, yv); }) == errc::shape_mismatch);
  CHECK(message([&] { qgemv(xv, w, yv_bad); }).find("y [9]") != std::string::npos);

  for (auto s : {QuantScheme::int8_grouped(32), QuantScheme::int8_grouped(64, false), QuantScheme::int8_per_tensor(false)}) {
    const auto q = quantized(gaussian(8, 128, 15), s);
    Tensor<float> xs({1, 128});
    const QGemmOptions f32{.activations = ActivationMode::float32};
    CHECK(code([&] { qgemm(xs.view(), q, y.view(), f32); }) == errc::unsupported);  // no W8A16
    CHECK(message([&] { qgemm(xs.view(), q, y.view(), f32); }).find(s.to_string()) != std::string::npos);
    CHECK(qgemm_supports(s));
    CHECK_FALSE(qgemm_supports(s, ActivationMode::float32));
  }
  CHECK(qgemm_supports(QuantScheme::int8_per_channel()));
  CHECK(qgemm_supports(QuantScheme::int8_per_tensor(false)));
  CHECK_FALSE(qgemm_supports(QuantScheme::int8_per_channel(), ActivationMode::float32));
  // int4 weights take float (W4A32) or int8 (W4A8) activations; bad shapes are still errors.
  for (auto s : {QuantScheme::int4_grouped(32), QuantScheme::int4_grouped(128, false)}) {
    CHECK(qgemm_supports(s));
    CHECK(qgemm_supports(s, ActivationMode::float32));
    CHECK(qgemm_supports(s, ActivationMode::int8));
    const auto q = quantized(gaussian(8, 128, 15), s);
    Tensor<float> xs({2, 128});
    for (auto mode : {ActivationMode::int8, ActivationMode::float32}) {
      const QGemmOptions o{.activations = mode};
      CHECK(code([&] { qgemm(xs.view(), q, bad_y.view(), o); }) == errc::shape_mismatch);
      CHECK(code([&] { qgemm(bad_x.view(), q, y.view(), o); }) == errc::shape_mismatch);
      CHECK(message([&] { qgemm(xs.view(), q, y.view(), {.bias = short_bias, .activations = mode}); }).find("bias has 7") != std::string::npos);
    }
    const std::vector<f16> xh(100);
    CHECK(code([&] { qgemv(xh, q, yv); }) == errc::shape_mismatch);
  }
  CHECK(code([&] { qgemm(x.view(), w, y.view(), {.activations = ActivationMode::float32}); }) == errc::unsupported);
  CHECK(message([&] { qgemm(x.view(), w, y.view(), {.activations = ActivationMode::float32}); }).find("W8A16") != std::string::npos);
}

// ---- W4A32 / W4A16: int4 per_group weights, float activations ----

namespace {

// output_scale * x . dequantize(w)^T + bias in double, with the documented error bound (one
// more 2^-24 per term than qgemm.hpp states: dequantize() rounds (q - z) * s to float).
struct W4Reference {
  Tensor<double> y, bound;
};
W4Reference w4_reference(const Tensor<float>& x, const QuantizedTensor<cpu>& w, const std::vector<float>& bias, float out_scale) {
  const Tensor<float> wd = dequantize(w);
  const std::int64_t m = x.dim(0), k = x.dim(1), n = w.rows();
  const double groups = w.scheme().group_size ? double(k / w.scheme().group_size) : 0.0;
  W4Reference r{Tensor<double>({m, n}), Tensor<double>({m, n})};
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      double sum = 0, mag = 0;
      for (std::int64_t c = 0; c < k; ++c) {
        sum += double(wd(j, c)) * x(i, c);
        mag += std::fabs(double(wd(j, c)) * x(i, c));
      }
      const double b = bias.empty() ? 0.0 : bias[static_cast<std::size_t>(j)];
      r.y(i, j) = double(out_scale) * sum + b;
      r.bound(i, j) = (double(k) + 2 * groups + 5) * std::ldexp(1.0, -24) * (std::fabs(double(out_scale)) * mag + std::fabs(b)) + 1e-37;
    }
  return r;
}

void check_within(const Tensor<float>& got, const W4Reference& want) {
  REQUIRE(got.shape() == want.y.shape());
  for (std::int64_t i = 0; i < got.dim(0); ++i)
    for (std::int64_t j = 0; j < got.dim(1); ++j) {
      INFO("(" << i << ", " << j << ") got " << got(i, j) << " want " << want.y(i, j) << " bound " << want.bound(i, j));
      REQUIRE(std::fabs(got(i, j) - want.y(i, j)) <= want.bound(i, j));
    }
}

}  // namespace

TEST_CASE("W4A32 qgemm is within the stated bound of x . dequantize(w)^T for every int4 scheme") {
  for (int group : {32, 64, 128})
    for (bool sym : {true, false})
      for (DType sd : {DType::f16, DType::f32}) {
        const auto scheme = QuantScheme::int4_grouped(group, sym, sd);
        for (const auto& mnk : {std::tuple{1, 37, 256}, std::tuple{3, 16, 128}, std::tuple{8, 70, 384}, std::tuple{13, 9, 128}}) {
          const int m = std::get<0>(mnk), n = std::get<1>(mnk), k = std::get<2>(mnk);
          INFO(scheme.to_string() << " m=" << m << " n=" << n << " k=" << k);
          const Tensor<float> x = gaussian(m, k, 21), wf = gaussian(n, k, 22, 0.05f);
          const auto w = quantized(wf, scheme);
          const auto bias = random_bias(n, 23);
          Tensor<float> y({m, n});
          qgemm(x.view(), w, y.view(), {.bias = bias, .output_scale = 0.75f});
          check_within(y, w4_reference(x, w, bias, 0.75f));
          qgemm(x.view(), w, y.view(), {.activations = ActivationMode::float32});
          check_within(y, w4_reference(x, w, {}, 1.f));
        }
      }
}

TEST_CASE("W4A16: f16 and bf16 activations give the f32 result on the converted values") {
  const std::int64_t m = 5, n = 40, k = 256;
  const Tensor<float> xf = gaussian(m, k, 24), wf = gaussian(n, k, 25);
  const auto w = quantized(wf, QuantScheme::int4_grouped(64, false));
  Tensor<f16> xh({m, k});
  Tensor<bf16> xb({m, k});
  Tensor<float> xh32({m, k}), xb32({m, k});
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t c = 0; c < k; ++c) {
      xh(i, c) = f16(xf(i, c));
      xb(i, c) = bf16(xf(i, c));
      xh32(i, c) = static_cast<float>(xh(i, c));
      xb32(i, c) = static_cast<float>(xb(i, c));
    }
  const auto bias = random_bias(n, 26);
  Tensor<float> yh({m, n}), yb({m, n}), wanth({m, n}), wantb({m, n});
  qgemm(TensorView<const f16>(xh.view()), w, yh.view(), {.bias = bias});
  qgemm(TensorView<const bf16>(xb.view()), w, yb.view(), {.bias = bias});
  qgemm(xh32.view(), w, wanth.view(), {.bias = bias});
  qgemm(xb32.view(), w, wantb.view(), {.bias = bias});
  for (std::int64_t i = 0; i < m; ++i) {
    std::vector<float> row(static_cast<std::size_t>(n));
    qgemv(std::span<const f16>(&xh(i, 0), static_cast<std::size_t>(k)), w, row, {.bias = bias});
    for (std::int64_t j = 0; j < n; ++j) {
      REQUIRE(yh(i, j) == wanth(i, j));
      REQUIRE(yb(i, j) == wantb(i, j));
      REQUIRE(row[static_cast<std::size_t>(j)] == wanth(i, j));
    }
  }
  // Strided f16 activations (column stride 2).
  Tensor<f16> wide({m, 2 * k});
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t c = 0; c < k; ++c) wide(i, 2 * c) = xh(i, c);
  Tensor<float> ys({m, n});
  qgemm(TensorView<const f16>(wide.data(), Shape{m, k}, Strides{2 * k, 2}), w, ys.view(), {.bias = bias});
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) REQUIRE(ys(i, j) == wanth(i, j));
}

TEST_CASE("W4A32: qgemv equals qgemm's row; threads and strides give bit-identical results") {
  const std::int64_t n = 1000, k = 4096;
  const Tensor<float> x = gaussian(5, k, 27), wf = gaussian(n, k, 28);
  const auto w = quantized(wf, QuantScheme::int4_grouped(128));
  const auto bias = random_bias(n, 29);
  Tensor<float> serial({5, n}), threaded({5, n});
  ThreadPool pool(3);
  qgemm(x.view(), w, serial.view(), {.bias = bias});
  qgemm(x.view(), w, threaded.view(), {.bias = bias, .pool = &pool});
  Tensor<float> yt({n, 5});  // y transposed: written through a dense temporary
  qgemm(x.view(), w, TensorView<float>(yt.data(), Shape{5, n}, Strides{1, 5}), {.bias = bias, .pool = &pool});
  for (std::int64_t i = 0; i < 5; ++i) {
    std::vector<float> row(static_cast<std::size_t>(n)), row_mt(static_cast<std::size_t>(n));
    qgemv({&x(i, 0), static_cast<std::size_t>(k)}, w, row, {.bias = bias});
    qgemv({&x(i, 0), static_cast<std::size_t>(k)}, w, row_mt, {.bias = bias, .pool = &pool});
    for (std::int64_t j = 0; j < n; ++j) {
      REQUIRE(serial(i, j) == threaded(i, j));
      REQUIRE(row[j] == serial(i, j));
      REQUIRE(row_mt[j] == serial(i, j));
      REQUIRE(yt(j, i) == serial(i, j));
    }
  }
  // x with a column stride: gathered, same result.
  Tensor<float> xt({k, 5});
  for (std::int64_t i = 0; i < 5; ++i)
    for (std::int64_t c = 0; c < k; ++c) xt(c, i) = x(i, c);
  Tensor<float> ys({5, n});
  qgemm(TensorView<const float>(xt.data(), Shape{5, k}, Strides{1, 5}), w, ys.view(), {.bias = bias});
  for (std::int64_t i = 0; i < 5; ++i)
    for (std::int64_t j = 0; j < n; ++j) REQUIRE(ys(i, j) == serial(i, j));
  // Quantization error only: int4 g128 on Gaussians against the f32 product.
  double err = 0, sig = 0;
  for (std::int64_t j = 0; j < n; j += 7) {
    double exact = 0;
    for (std::int64_t c = 0; c < k; ++c) exact += double(x(0, c)) * wf(j, c);
    exact += bias[static_cast<std::size_t>(j)];
    err += (serial(0, j) - exact) * (serial(0, j) - exact);
    sig += exact * exact;
  }
  CHECK(10 * std::log10(sig / err) > 15.0);
}

TEST_CASE("W4A32 edge cases: all-zero groups, NaN and infinite activations, K = 0") {
  const std::int64_t m = 4, n = 6, k = 128;
  Tensor<float> x = gaussian(m, k, 30);
  Tensor<float> wf = gaussian(n, k, 31);
  for (std::int64_t c = 0; c < 32; ++c) wf(2, c) = 0.f;  // one all-zero group in row 2
  for (std::int64_t c = 0; c < k; ++c) wf(4, c) = 0.f;   // an all-zero row
  x(1, 9) = std::numeric_limits<float>::quiet_NaN();
  x(2, 70) = std::numeric_limits<float>::infinity();
  for (bool sym : {true, false}) {
    const auto w = quantized(wf, QuantScheme::int4_grouped(32, sym));
    CHECK(w.scale(2, 0) == 0.f);
    const auto bias = random_bias(n, 32);
    Tensor<float> y({m, n});
    qgemm(x.view(), w, y.view(), {.bias = bias});
    for (std::int64_t j = 0; j < n; ++j) {
      CHECK(std::isfinite(y(0, j)));
      CHECK(std::isfinite(y(3, j)));
      CHECK(std::isnan(y(1, j)));         // a NaN activation: its row is NaN
      CHECK_FALSE(std::isfinite(y(2, j)));  // an infinity: non-finite
    }
    CHECK(y(0, 4) == bias[4]);  // an all-zero weight row gives the bias exactly
    CHECK(y(3, 4) == bias[4]);
    Tensor<float> x03({2, k});
    for (std::int64_t c = 0; c < k; ++c) {
      x03(0, c) = x(0, c);
      x03(1, c) = x(3, c);
    }
    Tensor<float> y03({2, n});
    qgemm(x03.view(), w, y03.view(), {.bias = bias});
    check_within(y03, w4_reference(x03, w, bias, 1.f));
  }
  // K = 0: every output is the bias.
  const auto empty = quantized(Tensor<float>({n, 0}), QuantScheme::int4_grouped(32));
  const auto bias = random_bias(n, 33);
  Tensor<float> y0({2, n});
  const Tensor<float> x0({2, 0});
  qgemm(x0.view(), empty, y0.view(), {.bias = bias});
  for (std::int64_t j = 0; j < n; ++j) CHECK(y0(1, j) == bias[j]);
}

// ---- W8A8 grouped: int8 per_group weights (GGUF Q8_0 and the like) ----

namespace {

// The documented per_group formula (W4A8, grouped W8A8) in double: x quantized per row as W8A8
// does, exact integer group sums, scaled and summed exactly.
Tensor<double> grouped_reference(const Tensor<float>& x, const QuantizedTensor<cpu>& w, const std::vector<float>& bias, float out_scale) {
  const std::int64_t m = x.dim(0), k = x.dim(1), n = w.rows(), group = w.scheme().group_size;
  Tensor<double> y({m, n});
  for (std::int64_t i = 0; i < m; ++i) {
    const auto [q, sx] = quantize_activation_row(x, i);
    for (std::int64_t j = 0; j < n; ++j) {
      double total = 0;
      for (std::int64_t g = 0; g * group < k; ++g) {
        std::int64_t acc = 0;
        for (std::int64_t c = g * group; c < (g + 1) * group; ++c) acc += std::int64_t{q[c]} * (w.value(j, c) - w.zero(j, g));
        total += double(w.scale(j, g)) * double(acc);
      }
      y(i, j) = double(out_scale) * sx * total + (bias.empty() ? 0.0 : bias[j]);
    }
  }
  return y;
}

}  // namespace


TEST_CASE("grouped int8 qgemm (W8A8 per group) matches the documented formula; GGUF Q8_0 weights run as stored") {
  ThreadPool pool(3);
  for (int group : {32, 64, 128})
    for (bool sym : {true, false})
      for (DType sd : {DType::f16, DType::f32}) {
        const auto scheme = QuantScheme::int8_grouped(group, sym, sd);
        for (const auto& mnk : {std::tuple{1, 37, 256}, std::tuple{3, 16, 128}, std::tuple{8, 70, 384}, std::tuple{13, 9, 128}}) {
          const int m = std::get<0>(mnk), n = std::get<1>(mnk), k = std::get<2>(mnk);
          INFO(scheme.to_string() << " m=" << m << " n=" << n << " k=" << k);
          const Tensor<float> x = gaussian(m, k, 51), wf = gaussian(n, k, 52, 0.05f);
          const auto w = quantized(wf, scheme);
          const auto bias = random_bias(n, 53);
          Tensor<float> y({m, n}), ymt({m, n});
          qgemm(x.view(), w, y.view(), {.bias = bias, .output_scale = 0.75f});
          check_close(y, grouped_reference(x, w, bias, 0.75f));
          qgemm(x.view(), w, ymt.view(), {.bias = bias, .output_scale = 0.75f, .pool = &pool});
          std::vector<float> row(static_cast<std::size_t>(n));
          qgemv({&x(0, 0), static_cast<std::size_t>(k)}, w, row, {.bias = bias, .output_scale = 0.75f});
          for (std::int64_t i = 0; i < m; ++i)
            for (std::int64_t j = 0; j < n; ++j) REQUIRE(ymt(i, j) == y(i, j));
          for (std::int64_t j = 0; j < n; ++j) REQUIRE(row[static_cast<std::size_t>(j)] == y(0, j));
        }
      }
  // Q8_0 blocks as a GGUF file holds them, imported as they are, multiply like their dequantized floats.
  const std::int64_t m = 3, n = 24, k = 256;
  const Tensor<float> x = gaussian(m, k, 54), wf = gaussian(n, k, 55, 0.02f);
  auto blocks = quantize_gguf_q8_0(wf.view());
  REQUIRE(blocks.ok());
  auto q8 = import_gguf_q8_0(std::span<const BlockQ8_0>(*blocks), n, k);
  REQUIRE(q8.ok());
  Tensor<float> y({m, n});
  qgemm(x.view(), *q8, y.view());
  double err = 0, sig = 0;
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t j = 0; j < n; ++j) {
      double exact = 0;
      for (std::int64_t c = 0; c < k; ++c) exact += double(x(i, c)) * q8->dequantized(j, c);
      err += (y(i, j) - exact) * (y(i, j) - exact);
      sig += exact * exact;
    }
  CHECK(10 * std::log10(sig / err) > 35.0);  // only the activations' int8 rounding remains
}

// ---- W4A8: int4 per_group weights, int8 activations ----


TEST_CASE("W4A8 qgemm matches the documented formula for every int4 scheme; threads bit-identical") {
  ThreadPool pool(3);
  for (int group : {32, 64, 128})
    for (bool sym : {true, false})
      for (DType sd : {DType::f16, DType::f32}) {
        const auto scheme = QuantScheme::int4_grouped(group, sym, sd);
        for (const auto& mnk : {std::tuple{1, 37, 256}, std::tuple{3, 16, 128}, std::tuple{8, 70, 384}, std::tuple{13, 9, 128}}) {
          const int m = std::get<0>(mnk), n = std::get<1>(mnk), k = std::get<2>(mnk);
          INFO(scheme.to_string() << " m=" << m << " n=" << n << " k=" << k);
          const Tensor<float> x = gaussian(m, k, 41), wf = gaussian(n, k, 42, 0.05f);
          const auto w = quantized(wf, scheme);
          const auto bias = random_bias(n, 43);
          Tensor<float> y({m, n}), ymt({m, n});
          qgemm(x.view(), w, y.view(), {.bias = bias, .output_scale = 0.75f, .activations = ActivationMode::int8});
          check_close(y, grouped_reference(x, w, bias, 0.75f));
          qgemm(x.view(), w, ymt.view(), {.bias = bias, .output_scale = 0.75f, .pool = &pool, .activations = ActivationMode::int8});
          std::vector<float> row(static_cast<std::size_t>(n));
          qgemv({&x(0, 0), static_cast<std::size_t>(k)}, w, row, {.bias = bias, .output_scale = 0.75f, .activations = ActivationMode::int8});
          for (std::int64_t i = 0; i < m; ++i)
            for (std::int64_t j = 0; j < n; ++j) REQUIRE(ymt(i, j) == y(i, j));
          for (std::int64_t j = 0; j < n; ++j) REQUIRE(row[static_cast<std::size_t>(j)] == y(0, j));
        }
      }
}

namespace {

// W4A8's edge operands, x [5, 128] and w [6, 128]: an all-zero group (w row 2, columns 0-31),
// an all-zero weight row (4) and activation row (4), a NaN (x row 1) and an infinity (x row 2).
std::pair<Tensor<float>, Tensor<float>> w4a8_edge_operands(std::uint32_t seed_x, std::uint32_t seed_w) {
  const std::int64_t m = 5, n = 6, k = 128;
  Tensor<float> x = gaussian(m, k, seed_x);
  Tensor<float> wf = gaussian(n, k, seed_w);
  for (std::int64_t c = 0; c < 32; ++c) wf(2, c) = 0.f;
  for (std::int64_t c = 0; c < k; ++c) {
    wf(4, c) = 0.f;
    x(4, c) = 0.f;
  }
  x(1, 9) = std::numeric_limits<float>::quiet_NaN();
  x(2, 70) = -std::numeric_limits<float>::infinity();
  return {std::move(x), std::move(wf)};
}

}  // namespace

TEST_CASE("W4A8 edge cases: zero groups and rows, NaN and infinite activations") {
  const std::int64_t m = 5, n = 6;
  const auto [x, wf] = w4a8_edge_operands(44, 45);
  for (bool sym : {true, false}) {
    const auto w = quantized(wf, QuantScheme::int4_grouped(32, sym));
    const auto bias = random_bias(n, 46);
    Tensor<float> y({m, n});
    qgemm(x.view(), w, y.view(), {.bias = bias, .activations = ActivationMode::int8});
    for (std::int64_t j = 0; j < n; ++j) {
      CHECK(std::isfinite(y(0, j)));
      CHECK(std::isnan(y(1, j)));
      CHECK(std::isnan(y(2, j)));
      CHECK(y(4, j) == bias[j]);
    }
    CHECK(y(0, 4) == bias[4]);
    check_close(y, grouped_reference(x, w, bias, 1.f));
  }
}

// ---- W4A8 on QuantizedPanels: the same weights in panels of 16 rows ----

namespace {

// The message of the quarry::error f throws; empty when it throws none.
template <class F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const error& e) {
    return e.what();
  }
  return {};
}

}  // namespace

TEST_CASE("QuantizedPanels: pack and unpack round-trip every int4 scheme; the panels hold the same bytes") {
  for (int group : {32, 64, 128})
    for (bool sym : {true, false})
      for (DType sd : {DType::f16, DType::f32})
        for (std::int64_t n : {1, 16, 17, 45}) {
          const auto scheme = QuantScheme::int4_grouped(group, sym, sd);
          INFO(scheme.to_string() << " n=" << n);
          const std::int64_t k = 256;
          const auto w = quantized(gaussian(n, k, 61, 0.05f), scheme);
          ThreadPool pool(2);
          auto p = QuantizedPanels::pack(w, n > 16 ? &pool : nullptr);
          REQUIRE(p.ok());
          CHECK(p->rows() == n);
          CHECK(p->cols() == k);
          CHECK(p->panels() == (n + 15) / 16);
          CHECK(p->scheme() == scheme);
          const std::size_t scale_bytes = sd == DType::f16 ? 2 : 4, slots = static_cast<std::size_t>(p->panels() * 16 * (k / group));
          CHECK(p->nbytes() == static_cast<std::size_t>(p->panels()) * 16 * k / 2 + slots * scale_bytes + (sym ? 0 : slots));
          std::size_t sum = 0;
          for (auto b : p->buffers()) sum += b.size();
          CHECK(sum == p->nbytes());
          CHECK(p->buffers().size() == (sym ? 2u : 3u));
          const QuantizedTensor<cpu> back = p->unpack();
          REQUIRE(back.scheme() == scheme);
          for (std::int64_t r = 0; r < n; ++r)
            for (std::int64_t c = 0; c < k; ++c) {
              REQUIRE(back.value(r, c) == w.value(r, c));
              if (c % group == 0) {
                REQUIRE(back.scale(r, c / group) == w.scale(r, c / group));
                REQUIRE(back.zero(r, c / group) == w.zero(r, c / group));
              }
            }
        }
  // int8 per_tensor / per_channel: the same round trip (K not a multiple of 4 too).
  for (const QuantScheme& scheme : {QuantScheme::int8_per_channel(), QuantScheme::int8_per_channel(false),
                                    QuantScheme::int8_per_tensor(), QuantScheme{8, Granularity::per_channel, 0, true, DType::f16}})
    for (std::int64_t n : {1, 16, 17, 70})
      for (std::int64_t k : {1, 37, 128}) {
        INFO(scheme.to_string() << " n=" << n << " k=" << k);
        const auto w = quantized(gaussian(n, k, 69, 0.05f), scheme);
        auto p = QuantizedPanels::pack(w);
        REQUIRE(p.ok());
        CHECK(p->blocks() == (k + 3) / 4);
        CHECK(p->nbytes() == static_cast<std::size_t>(p->panels() * 16 * ((k + 3) / 4 * 4 + 4 + (scheme.symmetric ? 0 : 1))));
        const QuantizedTensor<cpu> back = p->unpack();
        REQUIRE(back.scheme() == scheme);
        for (std::int64_t r = 0; r < n; ++r) {
          for (std::int64_t c = 0; c < k; ++c) REQUIRE(back.value(r, c) == w.value(r, c));
          const auto [sr, sc] = w.scale_index(r, 0);
          REQUIRE(back.scale(sr, sc) == w.scale(sr, sc));
          REQUIRE(back.zero(sr, sc) == w.zero(sr, sc));
        }
      }
  // int8 per_group (GGUF Q8_0's scheme): values as stored, scales per group as int4's.
  for (bool sym : {true, false})
    for (std::int64_t n : {5, 70}) {
      const auto scheme = QuantScheme::int8_grouped(32, sym);
      const auto w = quantized(gaussian(n, 128, 62, 0.05f), scheme);
      auto p = QuantizedPanels::pack(w);
      REQUIRE(p.ok());
      CHECK(p->blocks() == 32);
      CHECK(p->groups() == 4);
      const QuantizedTensor<cpu> back = p->unpack();
      for (std::int64_t r = 0; r < n; ++r)
        for (std::int64_t c = 0; c < 128; ++c) {
          REQUIRE(back.value(r, c) == w.value(r, c));
          REQUIRE(back.scale(r, c / 32) == w.scale(r, c / 32));
          REQUIRE(back.zero(r, c / 32) == w.zero(r, c / 32));
        }
    }
}

TEST_CASE("W8A8 on QuantizedPanels gives the row-major W8A8's bits for every int8 scheme; threads and qgemv too") {
  ThreadPool pool(3);
  for (const QuantScheme& scheme : {QuantScheme::int8_per_channel(), QuantScheme::int8_per_channel(false),
                                    QuantScheme::int8_per_tensor(), QuantScheme{8, Granularity::per_channel, 0, true, DType::f16}})
    for (const auto& mnk : {std::tuple{1, 37, 256}, std::tuple{3, 16, 129}, std::tuple{8, 70, 383}, std::tuple{13, 9, 5},
                            std::tuple{20, 200, 256}, std::tuple{1, 130, 2}}) {
      const int m = std::get<0>(mnk), n = std::get<1>(mnk), k = std::get<2>(mnk);
      INFO(scheme.to_string() << " m=" << m << " n=" << n << " k=" << k);
      Tensor<float> x = gaussian(m, k, 70);
      if (m > 2) x(2, 0) = std::numeric_limits<float>::quiet_NaN();
      const auto w = quantized(gaussian(n, k, 71, 0.05f), scheme);
      auto p = QuantizedPanels::pack(w, &pool);
      REQUIRE(p.ok());
      const auto bias = random_bias(n, 72);
      const QGemmOptions opt{.bias = bias, .output_scale = 0.75f};
      Tensor<float> yp({m, n}), yr({m, n}), ymt({m, n});
      // Stale bytes past K in the activation scratch must not leak in: a wider product first.
      Tensor<float> wide_x = gaussian(m, k + 64, 73), wide_y({m, n});
      qgemm(wide_x.view(), quantized(gaussian(n, k + 64, 74), scheme), wide_y.view());
      qgemm(x.view(), *p, yp.view(), opt);
      qgemm(x.view(), w, yr.view(), opt);
      QGemmOptions mt = opt;
      mt.pool = &pool;
      qgemm(x.view(), *p, ymt.view(), mt);
      std::vector<float> row(static_cast<std::size_t>(n));
      qgemv({&x(0, 0), static_cast<std::size_t>(k)}, *p, row, opt);
      auto same = [](float a, float b) { return a == b || (std::isnan(a) && std::isnan(b)); };
      for (std::int64_t i = 0; i < m; ++i)
        for (std::int64_t j = 0; j < n; ++j) {
          REQUIRE(same(yp(i, j), yr(i, j)));
          REQUIRE(same(ymt(i, j), yr(i, j)));
        }
      for (std::int64_t j = 0; j < n; ++j) REQUIRE(same(row[static_cast<std::size_t>(j)], yr(0, j)));
    }
  const auto w = quantized(gaussian(8, 64, 75));
  auto p = QuantizedPanels::pack(w);
  REQUIRE(p.ok());
  Tensor<float> x = gaussian(2, 64, 76), y({2, 8});
  CHECK(error_message([&] { qgemm(x.view(), *p, y.view(), {.activations = ActivationMode::float32}); }).find("W8A16") != std::string::npos);
}

TEST_CASE("per-group panels (W4A8, Q8_0's W8A8) match the documented formula and the row-major kernels; threads and qgemv bit-identical") {
  ThreadPool pool(3);
  for (int bits : {4, 8}) {
    for (int group : {32, 64, 128})
      for (bool sym : {true, false})
        for (DType sd : {DType::f16, DType::f32}) {
          const auto scheme = bits == 4 ? QuantScheme::int4_grouped(group, sym, sd) : QuantScheme::int8_grouped(group, sym, sd);
          for (const auto& mnk : {std::tuple{1, 37, 256}, std::tuple{3, 16, 128}, std::tuple{8, 70, 384}, std::tuple{13, 9, 128},
                                  std::tuple{20, 200, 256}}) {
            const int m = std::get<0>(mnk), n = std::get<1>(mnk), k = std::get<2>(mnk);
            INFO(scheme.to_string() << " m=" << m << " n=" << n << " k=" << k);
            const Tensor<float> x = gaussian(m, k, 63), wf = gaussian(n, k, 64, 0.05f);
            const auto w = quantized(wf, scheme);
            auto p = QuantizedPanels::pack(w);
            REQUIRE(p.ok());
            const auto bias = random_bias(n, 65);
            const QGemmOptions opt{.bias = bias, .output_scale = 0.75f};
            Tensor<float> y({m, n}), ymt({m, n}), yrow({m, n});
            qgemm(x.view(), *p, y.view(), opt);
            check_close(y, grouped_reference(x, w, bias, 0.75f));
            QGemmOptions mt = opt;
            mt.pool = &pool;
            qgemm(x.view(), *p, ymt.view(), mt);
            QGemmOptions rm = opt;
            rm.activations = ActivationMode::int8;
            qgemm(x.view(), w, yrow.view(), rm);  // the row-major kernel: the same sum, rounded in other steps
            std::vector<float> row(static_cast<std::size_t>(n));
            qgemv({&x(0, 0), static_cast<std::size_t>(k)}, *p, row, opt);
            for (std::int64_t i = 0; i < m; ++i)
              for (std::int64_t j = 0; j < n; ++j) {
                REQUIRE(ymt(i, j) == y(i, j));
                REQUIRE(std::fabs(yrow(i, j) - y(i, j)) <= 1e-5 * (1 + std::fabs(y(i, j))));
              }
            for (std::int64_t j = 0; j < n; ++j) REQUIRE(row[static_cast<std::size_t>(j)] == y(0, j));
          }
        }
  }
}

TEST_CASE("W4A8 on QuantizedPanels: edge rows, strided output, bad options and shapes") {
  const std::int64_t m = 5, n = 6, k = 128;
  const auto operands = w4a8_edge_operands(66, 67);  // not a structured binding: lambdas below use x (Clang 14)
  const Tensor<float>& x = operands.first;
  const Tensor<float>& wf = operands.second;
  for (bool sym : {true, false}) {
    const auto w = quantized(wf, QuantScheme::int4_grouped(32, sym));
    auto p = QuantizedPanels::pack(w);
    REQUIRE(p.ok());
    const auto bias = random_bias(n, 68);
    Tensor<float> y({m, n});
    qgemm(x.view(), *p, y.view(), {.bias = bias});
    for (std::int64_t j = 0; j < n; ++j) {
      CHECK(std::isfinite(y(0, j)));
      CHECK(std::isnan(y(1, j)));
      CHECK(std::isnan(y(2, j)));
      CHECK(y(4, j) == bias[j]);
    }
    CHECK(y(0, 4) == bias[4]);
    check_close(y, grouped_reference(x, w, bias, 1.f));
    // A strided output (every second column of a wider matrix) gets the same values.
    Tensor<float> wide({m, 2 * n});
    qgemm(x.view(), *p, wide.view().slice(1, 0, 2 * n, 2), {.bias = bias});
    for (std::int64_t i = 0; i < m; ++i)
      for (std::int64_t j = 0; j < n; ++j) REQUIRE((wide(i, 2 * j) == y(i, j) || (std::isnan(y(i, j)) && std::isnan(wide(i, 2 * j)))));
  }
  const auto w = quantized(wf, QuantScheme::int4_grouped(32));
  auto p = QuantizedPanels::pack(w);
  REQUIRE(p.ok());
  Tensor<float> y({m, n});
  const std::string float_acts = error_message([&] { qgemm(x.view(), *p, y.view(), {.activations = ActivationMode::float32}); });
  CHECK(float_acts.find("W4A8") != std::string::npos);
  Tensor<float> wrong({m, n + 1});
  CHECK(error_message([&] { qgemm(x.view(), *p, wrong.view()); }).find("[6, 128]") != std::string::npos);
  std::vector<float> xv(k + 1), yv(n);
  CHECK_FALSE(error_message([&] { qgemv(xv, *p, yv); }).empty());
  const std::vector<float> short_bias(n - 1);
  CHECK(error_message([&] { qgemm(x.view(), *p, y.view(), {.bias = short_bias}); }).find("bias") != std::string::npos);
}
