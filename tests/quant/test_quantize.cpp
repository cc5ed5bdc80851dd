// quantize / dequantize / quant_error on Gaussian weights, edge cases and bad input.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <quarry/core/convert.hpp>
#include <quarry/quant/error_metrics.hpp>
#include <quarry/io/gguf.hpp>
#include <quarry/quant/quantize.hpp>

#include "shared_data.hpp"

#include "test_util.hpp"

using namespace quarry;
using namespace quarry::testing;

namespace {


std::vector<QuantScheme> all_schemes() {
  std::vector<QuantScheme> s;
  for (bool sym : {true, false}) {
    s.push_back(QuantScheme::int8_per_tensor(sym));
    s.push_back(QuantScheme::int8_per_channel(sym));
    for (int g : {32, 64, 128})
      for (DType sd : {DType::f16, DType::f32}) {
        s.push_back(QuantScheme::int8_grouped(g, sym, sd));
        s.push_back(QuantScheme::int4_grouped(g, sym, sd));
      }
  }
  return s;
}

std::string error_of(const status& s) { return s.ok() ? "" : s.to_string(); }

}  // namespace

TEST_CASE("schemes validate and describe themselves") {
  CHECK(QuantScheme::int4_grouped(128, false).to_string() == "int4 per_group(128) asymmetric f16-scales");
  CHECK(QuantScheme::int8_per_channel().to_string() == "int8 per_channel symmetric f32-scales");
  CHECK(QuantScheme::int8_per_channel().value_dtype() == DType::i8);
  CHECK(QuantScheme::int8_per_channel(false).value_dtype() == DType::u8);
  CHECK(QuantScheme::int4_grouped(32).value_dtype() == DType::i4);
  CHECK(QuantScheme::int4_grouped(32, false).value_dtype() == DType::u4);
  CHECK(QuantScheme::int4_grouped(32).qmin() == -7);
  CHECK(QuantScheme::int4_grouped(32, false).qmax() == 15);
  CHECK(contains(error_of(QuantScheme::int4_grouped(48).validate()), "group size must be 32, 64 or 128, not 48"));
  QuantScheme bad = QuantScheme::int8_per_channel();
  bad.bits = 3;
  CHECK(contains(error_of(bad.validate()), "bits must be 8 or 4, not 3"));
  CHECK(contains(error_of(QuantScheme::int4_grouped(64).validate_for(4, 96)), "K = 96 columns is not a multiple of the group size 64"));
  QuantScheme odd = QuantScheme::int8_per_channel();
  odd.bits = 4;
  CHECK(contains(error_of(odd.validate_for(2, 7)), "even number of columns; K = 7"));
}

TEST_CASE("every scheme: integers in range, each weight within half a step, storage as documented") {
  const Tensor<float> w = gaussian(24, 256, 1);
  for (const QuantScheme& s : all_schemes()) {
    INFO(s.to_string());
    auto q = quantize(w.view(), s);
    REQUIRE(q.ok());
    CHECK(q->rows() == 24);
    CHECK(q->cols() == 256);
    CHECK(q->row_bytes() == (s.bits == 8 ? 256 : 128));
    CHECK(q->scales_shape() == Shape{s.scale_rows(24), s.scales_per_row(256)});
    const auto expected_bytes = 24 * q->row_bytes() + q->scales_shape()[0] * q->scales_shape()[1] * ((s.scale_dtype == DType::f16 ? 2 : 4) + (s.symmetric ? 0 : 1));
    CHECK(static_cast<std::int64_t>(q->nbytes()) == expected_bytes);
    for (std::int64_t r = 0; r < 24; ++r)
      for (std::int64_t c = 0; c < 256; ++c) {
        const int v = q->value(r, c);
        REQUIRE(v >= s.qmin());
        REQUIRE(v <= s.qmax());
        const auto [sr, sc] = q->scale_index(r, c);
        const float step = q->scale(sr, sc);
        // Half a step of rounding, plus what clamping costs when the scale was rounded to f16.
        const float bound = step * (0.5f + s.qmax() * 1e-3f) + 1e-7f;
        REQUIRE(std::fabs(q->dequantized(r, c) - w(r, c)) <= bound);
      }
    const Tensor<float> back = dequantize(*q);
    CHECK(back(5, 77) == q->dequantized(5, 77));
  }
}

TEST_CASE("SNR follows from the scheme on Gaussian weights") {
  const Tensor<float> w = gaussian(64, 4096, 2, 0.02f);
  auto snr = [&](const QuantScheme& s) {
    auto q = quantize(w.view(), s);
    REQUIRE(q.ok());
    const QuantError e = quant_error(w.view(), *q);
    MESSAGE(s.to_string() << ": SNR " << e.snr_db << " dB, RMSE " << e.rmse << ", max abs " << e.max_abs
                          << ", " << q->bits_per_weight() << " bits/weight");
    return e.snr_db;
  };
  // Uniform rounding noise has variance step^2 / 12; the step is amax / qmax, and the amax of
  // n Gaussians grows with n: ~4.2 sigma for 4096, ~2.9 for 128, ~2.2 for 32. So int8 per channel
  // is near 40 dB, int4 groups near 18-21 dB, and each finer grain helps.
  const double i8_pc = snr(QuantScheme::int8_per_channel());
  const double i8_pt = snr(QuantScheme::int8_per_tensor());
  const double i8_g32 = snr(QuantScheme::int8_grouped(32));
  const double i4_g32 = snr(QuantScheme::int4_grouped(32, true, DType::f32));
  const double i4_g64 = snr(QuantScheme::int4_grouped(64, true, DType::f32));
  const double i4_g128 = snr(QuantScheme::int4_grouped(128, true, DType::f32));
  const double i4a_g128 = snr(QuantScheme::int4_grouped(128, false, DType::f32));
  CHECK(i8_pc > 37.0);
  CHECK(i8_pt > 34.0);
  CHECK(i8_pc >= i8_pt);
  CHECK(i8_g32 >= i8_pc);
  CHECK(i4_g128 > 15.0);
  CHECK(i4_g64 >= i4_g128);
  CHECK(i4_g32 >= i4_g64);
  CHECK(i8_pc > i4_g32 + 15.0);
  CHECK(i4a_g128 > 15.0);
  // f16 scales cost almost nothing against f32 ones.
  CHECK(snr(QuantScheme::int4_grouped(128, true, DType::f16)) > i4_g128 - 0.05);
}

TEST_CASE("asymmetric schemes win on one-sided data; zero stays exact") {
  Tensor<float> w = gaussian(8, 128, 3);
  for (float& v : w.span()) v = std::fabs(v) + 0.5f;  // all positive
  w(0, 0) = 0.f;
  auto sym = quantize(w.view(), QuantScheme::int4_grouped(32, true, DType::f32));
  auto asym = quantize(w.view(), QuantScheme::int4_grouped(32, false, DType::f32));
  REQUIRE(sym.ok());
  REQUIRE(asym.ok());
  CHECK(quant_error(w.view(), *asym).snr_db > quant_error(w.view(), *sym).snr_db + 3.0);
  CHECK(asym->dequantized(0, 0) == 0.f);
  CHECK(asym->zero(0, 0) == 0);  // range [0, max]: zero point 0
}

TEST_CASE("all-zero blocks get scale 0 and read back as exact zeros, never NaN") {
  Tensor<float> w = gaussian(4, 128, 4);
  w.slice(1, 32, 64).fill(0.f);  // one zero group in every row
  w[3].fill(0.f);                // and a whole zero row
  for (const QuantScheme& s : all_schemes()) {
    INFO(s.to_string());
    auto q = quantize(w.view(), s);
    REQUIRE(q.ok());
    const Tensor<float> back = dequantize(*q);
    for (float v : back.span()) REQUIRE(std::isfinite(v));
    for (std::int64_t c = 0; c < 128; ++c) REQUIRE(back(3, c) == 0.f);
    if (s.granularity == Granularity::per_group && s.group_size == 32) {  // columns 32..63: one whole group
      const auto [sr, sc] = q->scale_index(0, 40);
      CHECK(q->scale(sr, sc) == 0.f);
      CHECK(back(0, 40) == 0.f);
    }
  }
  Tensor<float> zeros({3, 64});
  auto q = quantize(zeros.view(), QuantScheme::int8_per_tensor(false));
  REQUIRE(q.ok());
  CHECK(q->scale(0, 0) == 0.f);
  CHECK(dequantize(*q)(2, 63) == 0.f);
  CHECK(quant_error(zeros.view(), *q).snr_db == std::numeric_limits<double>::infinity());
}

TEST_CASE("bad input: a clear error, never a crash") {
  Tensor<float> w = gaussian(3, 64, 5);
  w(2, 17) = std::numeric_limits<float>::quiet_NaN();
  auto r = quantize(w.view(), QuantScheme::int8_per_channel());
  CHECK(r.status().code() == errc::invalid_argument);
  CHECK(contains(r.status().message(), "weight (2, 17) of the [3, 64] matrix is nan"));
  w(2, 17) = std::numeric_limits<float>::infinity();
  CHECK(contains(quantize(w.view(), QuantScheme::int4_grouped(32)).status().message(), "is inf"));

  const Tensor<float> g = gaussian(2, 96, 6);
  CHECK(quantize(g.view(), QuantScheme::int4_grouped(64)).status().code() == errc::shape_mismatch);
  const Tensor<float> cube({2, 2, 32});
  CHECK(contains(quantize(cube.view(), QuantScheme::int8_per_channel()).status().message(), "needs a [rows, cols] matrix; shape is [2, 2, 32]"));

  Tensor<float> huge = gaussian(2, 32, 7);
  huge(1, 3) = 3e38f;  // the f16 scale of this group would be infinite
  auto o = quantize(huge.view(), QuantScheme::int8_grouped(32));
  CHECK(o.status().code() == errc::out_of_range);
  CHECK(quantize(huge.view(), QuantScheme::int8_grouped(32, true, DType::f32)).ok());

  auto q = quantize(g.view(), QuantScheme::int8_per_channel());
  REQUIRE(q.ok());
  CHECK_THROWS_AS((void)q->values<int4>(), error);
  CHECK_THROWS_AS((void)q->scales_f16(), error);
  CHECK(q->values<std::int8_t>().shape() == Shape{2, 96});
}

TEST_CASE("f16 and bf16 inputs; a thread pool gives the same bytes; re-quantizing is stable") {
  const Tensor<float> w = gaussian(40, 256, 8);
  const Tensor<f16> h = cast<f16>(w.view());
  const Tensor<float> hf = cast<float>(h.view());
  const QuantScheme s = QuantScheme::int4_grouped(64, false);
  auto from_h = quantize(h.view(), s);
  auto from_hf = quantize(hf.view(), s);
  REQUIRE(from_h.ok());
  REQUIRE(from_hf.ok());
  CHECK(std::memcmp(from_h->value_bytes().data(), from_hf->value_bytes().data(), from_h->value_bytes().numel()) == 0);
  const Tensor<bf16> b = cast<bf16>(w.view());
  auto from_b = quantize(b.view(), s);
  REQUIRE(from_b.ok());

  ThreadPool pool(3);
  for (const QuantScheme& sc : all_schemes()) {
    auto serial = quantize(w.view(), sc);
    auto parallel = quantize(w.view(), sc, &pool);
    REQUIRE(serial.ok());
    REQUIRE(parallel.ok());
    REQUIRE(std::memcmp(serial->value_bytes().data(), parallel->value_bytes().data(), serial->value_bytes().numel()) == 0);
  }

  // Symmetric f32-scale schemes are idempotent: dequantized weights quantize to the same integers.
  for (const QuantScheme& sc : {QuantScheme::int8_per_channel(), QuantScheme::int4_grouped(32, true, DType::f32)}) {
    auto q1 = quantize(w.view(), sc);
    REQUIRE(q1.ok());
    const Tensor<float> back = dequantize(*q1, &pool);
    auto q2 = quantize(back.view(), sc);
    REQUIRE(q2.ok());
    CHECK(std::memcmp(q1->value_bytes().data(), q2->value_bytes().data(), q1->value_bytes().numel()) == 0);
  }
}

TEST_CASE("quant_error figures") {
  const Tensor<float> a({1, 4}, {1.f, -2.f, 3.f, 0.f});
  const Tensor<float> b({1, 4}, {1.f, -2.5f, 3.f, 0.5f});
  const QuantError e = quant_error(a.view(), b.view());
  CHECK(e.count == 4);
  CHECK(e.max_abs == doctest::Approx(0.5));
  CHECK(e.rmse == doctest::Approx(std::sqrt(0.5 / 4)));
  CHECK(e.snr_db == doctest::Approx(10 * std::log10(14 / 0.5)));
  const Tensor<float> c({4, 1});
  CHECK_THROWS_AS((void)quant_error(a.view(), c.view()), error);
}

TEST_CASE("SNR on the real weight matrices of stories260K") {
  QUARRY_REQUIRE_SHARED_DATA(path, "models/stories260K/stories260K.gguf");
  auto f = GgufFile::open(path);
  REQUIRE_MESSAGE(f.ok(), f.status().to_string());
  int matrices = 0, grouped = 0;
  double worst_i8 = 1e9, worst_i4_g32 = 1e9;
  for (const GgufTensorInfo& t : f->tensors()) {
    if (t.shape.rank() != 2) continue;
    INFO(t.name << " " << t.shape);
    auto w = f->tensor_f32(t.name);
    REQUIRE(w.ok());
    auto snr = [&](const QuantScheme& s) {
      auto q = quantize(*w, s);
      REQUIRE_MESSAGE(q.ok(), q.status().to_string());
      return quant_error(*w, *q).snr_db;
    };
    ++matrices;
    const double i8_pc = snr(QuantScheme::int8_per_channel());
    const double i8_pt = snr(QuantScheme::int8_per_tensor());
    CHECK(i8_pc >= i8_pt - 0.1);
    worst_i8 = std::min(worst_i8, i8_pc);
    if (t.shape[1] % 64 != 0) {
      // K = 172 (ffn_down): no group size divides it, and quantize says so.
      CHECK(quantize(*w, QuantScheme::int4_grouped(32)).status().code() == errc::shape_mismatch);
      continue;
    }
    ++grouped;
    const double i4_g32 = snr(QuantScheme::int4_grouped(32));
    const double i4_g64 = snr(QuantScheme::int4_grouped(64));
    const double i4a_g32 = snr(QuantScheme::int4_grouped(32, false));
    const double i8_g32 = snr(QuantScheme::int8_grouped(32));
    MESSAGE(t.name << ": int8 per-channel " << i8_pc << " dB, per-tensor " << i8_pt << ", g32 " << i8_g32 << "; int4 g32 "
                   << i4_g32 << ", g64 " << i4_g64 << ", asym g32 " << i4a_g32);
    CHECK(i4_g32 >= i4_g64 - 0.1);  // smaller groups are never worse (up to f16-scale noise)
    CHECK(i8_g32 >= i8_pc - 0.1);
    CHECK(i8_pc > i4_g32 + 15.0);
    worst_i4_g32 = std::min(worst_i4_g32, i4_g32);
  }
  CHECK(matrices == 37);
  CHECK(grouped == 32);
  MESSAGE("worst int8 per-channel SNR " << worst_i8 << " dB, worst int4 g32 " << worst_i4_g32 << " dB");
  CHECK(worst_i8 > 35.0);
  CHECK(worst_i4_g32 > 15.0);
}
