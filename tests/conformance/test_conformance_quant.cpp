// Every quant kernel of every built ISA against the scalar reference: the activation quantizer
// bit-exact, the W8A8 product's int32 accumulators exact (read through unit scales, where the
// float epilogue is exact too), and the scaled, biased outputs bit-exact (one explicit fma).
#include <bit>
#include <cstring>

#include <quarry/quant/detail/quant_kernels.hpp>

#include "conformance/harness.hpp"

using namespace quarry;
using namespace quarry::testing;
using detail::QGemmArgs;
using detail::QuantKernels;

namespace {

std::vector<std::size_t> k_lengths() {
  std::vector<std::size_t> k;
  for (std::size_t i = 0; i <= 300; ++i)
    if (i <= 70 || i % 7 == 0 || i % 16 <= 1 || i % 16 == 15) k.push_back(i);
  for (std::size_t v : {511u, 512u, 513u, 1000u}) k.push_back(v);
  return k;
}

// Activations as the quantizer makes them (-127..127), weights over all of int8 (-128 too).
struct Operands {
  std::vector<std::int8_t> a, w;
  std::vector<std::int32_t> a_sum;
  std::vector<float> a_scale, w_scale, bias;
  std::size_t m, n, k, lda, ldw, off;

  Operands(std::size_t m_, std::size_t n_, std::size_t k_, std::size_t off_, std::mt19937& rng, int mode)
      : m(m_), n(n_), k(k_), lda(k_ + off_ * 5), ldw(k_ + off_ * 3), off(off_) {
    a.resize(m * lda + off + 1);
    w.resize(n * ldw + off + 1);
    for (auto& x : a) {
      int v = static_cast<int>(rng() % 255) - 127;
      if (mode == 1) v = (rng() & 1) ? 127 : -127;   // extremes
      if (mode == 2) v = -127;
      x = static_cast<std::int8_t>(v);
    }
    for (auto& x : w) {
      int v = static_cast<int>(rng() % 256) - 128;
      if (mode == 1) v = (rng() & 1) ? 127 : -128;
      if (mode == 2) v = -128;
      x = static_cast<std::int8_t>(v);
    }
    if (mode == 0 && m > 1)  // an all-zero activation row
      for (std::size_t c = 0; c < k; ++c) a[off + lda + c] = 0;
    a_sum.resize(m);
    for (std::size_t i = 0; i < m; ++i) {
      std::int32_t s = 0;
      for (std::size_t c = 0; c < k; ++c) s += a[off + i * lda + c];
      a_sum[i] = s;
    }
    a_scale.assign(m, 1.f);
    w_scale.assign(n, 1.f);
    bias.assign(n, 0.f);
  }
  QGemmArgs args(float* y, bool with_bias, std::size_t w_scale_stride = 1) const {
    QGemmArgs g;
    g.a = a.data() + off;
    g.lda = lda;
    g.a_sum = a_sum.data();
    g.a_scale = a_scale.data();
    g.w = w.data() + off;
    g.ldw = ldw;
    g.w_scale = w_scale.data();
    g.w_scale_stride = w_scale_stride;
    g.bias = with_bias ? bias.data() : nullptr;
    g.y = y;
    g.ldy = n + 1;
    g.m = m;
    g.n = n;
    g.k = k;
    return g;
  }
};

bool same_float(float a, float b) { return std::bit_cast<std::uint32_t>(a) == std::bit_cast<std::uint32_t>(b) || (std::isnan(a) && std::isnan(b)); }

}  // namespace

TEST_CASE("conformance: quantize_row_s8 is bit-exact (q, sum, scale)") {
  std::vector<std::vector<float>> rows;
  std::uint32_t seed = 1;
  for (std::size_t k : k_lengths()) rows.push_back(random_normal(k, seed++));
  const float inf = std::numeric_limits<float>::infinity(), nan = std::numeric_limits<float>::quiet_NaN();
  // Rounding ties: with amax = 127, x * (127 / amax) = x exactly, so halves are ties.
  std::vector<float> ties;
  for (int i = -254; i <= 254; ++i) ties.push_back(static_cast<float>(i) / 2);
  ties.push_back(127.f);
  rows.push_back(ties);
  rows.push_back(std::vector<float>(100, 0.f));
  rows.push_back(std::vector<float>(33, -0.f));
  rows.push_back({1e-38f, -1e-40f, 0.f, 1e-45f});                // tiny: 127 / amax overflows
  rows.push_back({std::numeric_limits<float>::denorm_min(), 0.f});
  rows.push_back({3e38f, -3.4e38f, 1.f, 1e30f});                 // huge, finite
  for (std::size_t k : {1u, 17u, 64u, 100u}) {
    for (float bad : {nan, -nan, inf, -inf}) {
      auto r = random_normal(k, seed++);
      r[k / 2] = bad;
      rows.push_back(r);
    }
  }
  rows.push_back(random_float_bits(4099, 3));  // every class of float

  for_each_simd_table<QuantKernels>([&](Isa isa, const QuantKernels& kt, const QuantKernels& ref) {
    for (const auto& row : rows) {
      for (std::size_t off : kMisalignments) {
        std::vector<float> x(row.size() + off);
        std::copy(row.begin(), row.end(), x.begin() + static_cast<std::ptrdiff_t>(off));
        std::vector<std::int8_t> qg(row.size() + off + 1, 99), qr(row.size() + off + 1, 99);
        std::int32_t sg = -1, sr = -2;
        const float scale_g = kt.quantize_row_s8(x.data() + off, row.size(), qg.data() + off, &sg);
        const float scale_r = ref.quantize_row_s8(x.data() + off, row.size(), qr.data() + off, &sr);
        INFO("k=" << row.size() << " misalignment=" << off << " first=" << (row.empty() ? 0.f : row[0]));
        REQUIRE(same_float(scale_g, scale_r));
        REQUIRE(sg == sr);
        REQUIRE(std::memcmp(qg.data(), qr.data(), qg.size()) == 0);  // and nothing past k written
        for (std::size_t i = 0; i < row.size(); ++i) REQUIRE(qr[off + i] >= -127);
      }
    }
    std::vector<float> big = random_normal(1 << 20, 11);
    std::vector<std::int8_t> q(big.size());
    std::int32_t s;
    report_perf("quantize_row", isa, 5.0 * big.size(), [&] { (void)kt.quantize_row_s8(big.data(), big.size(), q.data(), &s); });
  });

  // The reference's documented results.
  const QuantKernels& ref = *detail::kernel_table<QuantKernels>(Isa::scalar);
  std::vector<std::int8_t> q(4);
  std::int32_t s = 0;
  const float zero_row[4] = {0.f, -0.f, 0.f, 0.f};
  CHECK(ref.quantize_row_s8(zero_row, 4, q.data(), &s) == 0.f);
  const float nan_row[4] = {1.f, nan, 2.f, 3.f};
  CHECK(std::isnan(ref.quantize_row_s8(nan_row, 4, q.data(), &s)));
  CHECK((q[0] == 0 && q[1] == 0 && q[2] == 0 && q[3] == 0 && s == 0));
  const float row[4] = {-254.f, 1.f, 3.f, -5.f};  // 127 / 254 = 0.5: ties 0.5, 1.5, -2.5 go to even
  CHECK(ref.quantize_row_s8(row, 4, q.data(), &s) == 2.f);
  CHECK((q[0] == -127 && q[1] == 0 && q[2] == 2 && q[3] == -2 && s == -127));
}

TEST_CASE("conformance: gemm_s8 int32 accumulators are exact") {
  const std::size_t ms[] = {1, 2, 3, 4, 5, 7, 9};
  const std::size_t ns[] = {1, 2, 3, 4, 5, 7, 8, 9, 15, 17, 33};
  for_each_simd_table<QuantKernels>([&](Isa isa, const QuantKernels& kt, const QuantKernels& ref) {
    std::mt19937 rng(7);
    std::size_t cases = 0;
    for (std::size_t k : k_lengths()) {
      // every k with a rotating (m, n, misalignment, mode); a full sweep of m x n at a few k
      const bool sweep = k == 0 || k == 1 || k == 63 || k == 64 || k == 65 || k == 300;
      for (std::size_t mi = 0; mi < std::size(ms); ++mi) {
        for (std::size_t ni = 0; ni < std::size(ns); ++ni) {
          if (!sweep && (mi + ni + k) % 17 != 0) continue;
          const std::size_t m = ms[mi], n = ns[ni], off = kMisalignments[(mi + ni) % 3];
          const int mode = static_cast<int>((k + mi + 2 * ni) % 5 == 0 ? 1 + (k % 2) : 0);
          Operands op(m, n, k, off, rng, mode);
          std::vector<float> yg(m * (n + 1), -7.f), yr(m * (n + 1), -7.f);
          kt.gemm_s8(op.args(yg.data(), false));
          ref.gemm_s8(op.args(yr.data(), false));
          INFO("m=" << m << " n=" << n << " k=" << k << " misalignment=" << off << " mode=" << mode);
          for (std::size_t i = 0; i < yg.size(); ++i) {
            INFO("element " << i);
            REQUIRE(same_float(yg[i], yr[i]));  // |acc| < 2^24 here, so float(acc) is the int32 exactly
          }
          ++cases;
        }
      }
    }
    MESSAGE(isa_name(isa) << ": " << cases << " gemm shapes checked");

    // Long rows (the benchmark shapes' K) with extreme values.
    for (std::size_t k : {4096u, 11008u}) {
      Operands op(2, 9, k, 1, rng, 1);
      std::vector<float> yg(2 * 10), yr(2 * 10);
      kt.gemm_s8(op.args(yg.data(), false));
      ref.gemm_s8(op.args(yr.data(), false));
      for (std::size_t i = 0; i < yg.size(); ++i) REQUIRE(same_float(yg[i], yr[i]));  // exact below 2^24, and the same int32 rounds alike
    }
  });
}

TEST_CASE("conformance: gemm_s8 scaled and biased outputs are bit-exact") {
  for_each_simd_table<QuantKernels>([&](Isa isa, const QuantKernels& kt, const QuantKernels& ref) {
    std::mt19937 rng(11);
    std::uniform_real_distribution<float> scale(1e-4f, 1e-1f), b(-3.f, 3.f);
    for (std::size_t k : {1u, 31u, 64u, 100u, 257u, 1000u}) {
      for (std::size_t per_tensor : {0u, 1u}) {
        Operands op(6, 13, k, 1, rng, 0);
        for (auto& s : op.a_scale) s = scale(rng);
        for (auto& s : op.w_scale) s = scale(rng);
        op.w_scale[3] = 0.f;                                      // an all-zero weight row's scale
        op.a_scale[4] = std::numeric_limits<float>::quiet_NaN();  // a row that held a NaN
        for (auto& x : op.bias) x = b(rng);
        std::vector<float> yg(6 * 14), yr(6 * 14);
        kt.gemm_s8(op.args(yg.data(), true, per_tensor ? 0 : 1));
        ref.gemm_s8(op.args(yr.data(), true, per_tensor ? 0 : 1));
        for (std::size_t i = 0; i < 6; ++i) {
          for (std::size_t j = 0; j < 13; ++j) {
            const float g = yg[i * 14 + j], r = yr[i * 14 + j];
            INFO("k=" << k << " i=" << i << " j=" << j << " per_tensor=" << per_tensor);
            if (i == 4) {
              CHECK(std::isnan(g));
              CHECK(std::isnan(r));
              continue;
            }
            if (j == 3 && !per_tensor) CHECK(r == op.bias[3]);
            REQUIRE(same_float(g, r));  // one explicit fma in every epilogue
          }
        }
      }
    }
    // Decode-shaped perf (one activation row) in perf mode.
    Operands op(1, 1024, 4096, 0, rng, 0);
    std::vector<float> y(1025);
    report_perf("gemv_s8", isa, 1024.0 * 4096, [&] { kt.gemm_s8(op.args(y.data(), false)); });
  });
}
