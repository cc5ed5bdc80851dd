// Every quant kernel of every built ISA against the scalar reference: the activation quantizer
// bit-exact, the W8A8 product's int32 accumulators exact (read through unit scales, where the
// float epilogue is exact too), and the scaled, biased outputs bit-exact (one explicit fma).
#include <bit>
#include <cstring>

#include <quarry/core/float16.hpp>
#include <quarry/quant/detail/quant_kernels.hpp>

#include "conformance/harness.hpp"

using namespace quarry;
using namespace quarry::testing;
using detail::QGemmArgs;
using detail::QuantKernels;
using detail::pack_w4a8_activations;
using detail::w4a8_padded_k;
using detail::s8g_bsum_count;

namespace {

std::vector<std::size_t> k_lengths() {
  std::vector<std::size_t> k;
  for (std::size_t i = 0; i <= 300; ++i)
    if (i <= 70 || i % 7 == 0 || i % 16 <= 1 || i % 16 == 15) k.push_back(i);
  for (std::size_t v : {511u, 512u, 513u, 1000u}) k.push_back(v);
  return k;
}

// Activations as the quantizer makes them (-127..127), weights over all of int8 (-128 too); for
// asymmetric weights the same bytes read as uint8, with a zero point per row over all of uint8.
struct Operands {
  std::vector<std::int8_t> a, w;
  std::vector<std::uint8_t> zero;
  std::vector<std::int32_t> a_sum;
  std::vector<float> a_scale, w_scale, bias;
  std::size_t m, n, k, lda, ldw, off;

  Operands(std::size_t m_, std::size_t n_, std::size_t k_, std::size_t off_, std::mt19937& rng, int mode)
      : m(m_), n(n_), k(k_), lda((k_ + 3) / 4 * 4 + off_ * 5), ldw(k_ + off_ * 3), off(off_) {
    a.resize(m * lda + off + 4);
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
    zero.resize(n);
    for (auto& z : zero) z = static_cast<std::uint8_t>(mode == 1 ? ((rng() & 1) ? 255 : 0) : rng());
  }
  QGemmArgs args(float* y, bool with_bias, std::size_t w_scale_stride = 1, bool asymmetric = false) const {
    QGemmArgs g;
    g.a = a.data() + off;
    g.lda = lda;
    g.a_sum = a_sum.data();
    g.a_scale = a_scale.data();
    g.w = w.data() + off;
    g.ldw = ldw;
    g.w_scale = w_scale.data();
    g.w_scale_stride = w_scale_stride;
    g.w_zero = asymmetric ? zero.data() : nullptr;
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

TEST_CASE("conformance: gemm_s8 int32 accumulators are exact (symmetric int8 and asymmetric uint8 weights)") {
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
          for (bool asym : {false, true}) {
            std::vector<float> yg(m * (n + 1), -7.f), yr(m * (n + 1), -7.f);
            kt.gemm_s8(op.args(yg.data(), false, 1, asym));
            ref.gemm_s8(op.args(yr.data(), false, 1, asym));
            INFO("m=" << m << " n=" << n << " k=" << k << " misalignment=" << off << " mode=" << mode << " asymmetric=" << asym);
            for (std::size_t i = 0; i < yg.size(); ++i) {
              INFO("element " << i);
              REQUIRE(same_float(yg[i], yr[i]));  // the same int32 rounds alike
            }
            ++cases;
          }
        }
      }
    }
    MESSAGE(isa_name(isa) << ": " << cases << " gemm shapes checked");

    // Long rows (the benchmark shapes' K) with extreme values.
    for (std::size_t k : {4096u, 11008u}) {
      Operands op(2, 9, k, 1, rng, 1);
      for (bool asym : {false, true}) {
        std::vector<float> yg(2 * 10), yr(2 * 10);
        kt.gemm_s8(op.args(yg.data(), false, 1, asym));
        ref.gemm_s8(op.args(yr.data(), false, 1, asym));
        for (std::size_t i = 0; i < yg.size(); ++i) REQUIRE(same_float(yg[i], yr[i]));  // the same int32 rounds alike
      }
    }
  });
}

TEST_CASE("conformance: gemm_s8 on packed panels (AVX-512 prefill) is bit-exact") {
  for_each_simd_table<QuantKernels>([&](Isa isa, const QuantKernels& kt, const QuantKernels& ref) {
    std::mt19937 rng(13);
    std::uniform_real_distribution<float> scale(1e-4f, 1e-1f), b(-3.f, 3.f);
    std::size_t cases = 0;
    for (std::size_t m : {16u, 17u, 23u, 40u}) {
      for (std::size_t n : {1u, 15u, 16u, 17u, 32u, 33u, 70u}) {
        for (std::size_t k : {1u, 3u, 4u, 63u, 64u, 65u, 130u, 300u}) {
          const std::size_t variant = (m + n + k) % 4, per_tensor = variant % 2, mode = (m * n + k) % 3;
          const bool asym = variant >= 2, with_bias = (n + k) % 2 == 0;
          Operands op(m, n, k, kMisalignments[(n + k) % 3], rng, static_cast<int>(mode));
          for (auto& v : op.a_scale) v = scale(rng);
          for (auto& v : op.w_scale) v = scale(rng);
          for (auto& v : op.bias) v = b(rng);
          op.a_scale[3] = std::numeric_limits<float>::quiet_NaN();
          std::vector<std::uint8_t> a_u8(op.a.size());
          for (std::size_t t = 0; t < a_u8.size(); ++t) a_u8[t] = static_cast<std::uint8_t>(op.a[t] ^ 0x80);
          std::vector<std::uint8_t> scratch(detail::qgemm_s8_scratch_bytes(k) + 1);
          std::vector<float> yg(m * (n + 1), -7.f), yr(m * (n + 1), -7.f);
          QGemmArgs g = op.args(yg.data(), with_bias, per_tensor ? 0 : 1, asym);
          g.a_u8 = a_u8.data() + op.off;
          g.scratch = scratch.data() + 1;  // any alignment
          kt.gemm_s8(g);
          ref.gemm_s8(op.args(yr.data(), with_bias, per_tensor ? 0 : 1, asym));
          INFO("m=" << m << " n=" << n << " k=" << k << " per_tensor=" << per_tensor << " asymmetric=" << asym << " mode=" << mode);
          for (std::size_t i = 0; i < yg.size(); ++i) {
            INFO("element " << i);
            REQUIRE(same_float(yg[i], yr[i]));
          }
          ++cases;
        }
      }
    }
    MESSAGE(isa_name(isa) << ": " << cases << " packed-panel shapes checked");
  });
}

TEST_CASE("conformance: gemm_s8 scaled and biased outputs are bit-exact") {
  for_each_simd_table<QuantKernels>([&](Isa isa, const QuantKernels& kt, const QuantKernels& ref) {
    std::mt19937 rng(11);
    std::uniform_real_distribution<float> scale(1e-4f, 1e-1f), b(-3.f, 3.f);
    for (std::size_t k : {1u, 31u, 64u, 100u, 257u, 1000u}) {
      for (std::size_t variant : {0u, 1u, 2u, 3u}) {
        const std::size_t per_tensor = variant % 2;
        const bool asym = variant >= 2;
        Operands op(6, 13, k, 1, rng, 0);
        for (auto& s : op.a_scale) s = scale(rng);
        for (auto& s : op.w_scale) s = scale(rng);
        op.w_scale[3] = 0.f;                                      // an all-zero weight row's scale
        op.a_scale[4] = std::numeric_limits<float>::quiet_NaN();  // a row that held a NaN
        for (auto& x : op.bias) x = b(rng);
        std::vector<float> yg(6 * 14), yr(6 * 14);
        kt.gemm_s8(op.args(yg.data(), true, per_tensor ? 0 : 1, asym));
        ref.gemm_s8(op.args(yr.data(), true, per_tensor ? 0 : 1, asym));
        for (std::size_t i = 0; i < 6; ++i) {
          for (std::size_t j = 0; j < 13; ++j) {
            const float g = yg[i * 14 + j], r = yr[i * 14 + j];
            INFO("k=" << k << " i=" << i << " j=" << j << " per_tensor=" << per_tensor << " asymmetric=" << asym);
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

// ---- W4A32: int4 per_group weights x f32 activations ----
// Float sums are not bit-identical across ISAs (lane-wise summation), so every output of every
// ISA, the reference included, is checked against the exact value (in double) with the bound
// documented in quant_kernels.hpp:
//   |y - exact| <= (K + 2 K / group + 4) * 2^-24 * (|output_scale| * sum_c |s (q - z) x_c| + |bias|)
// and each ISA against the reference with twice that. Within one ISA, outputs are
// bit-identical whatever the tiling (decode rows, register tiles, row blocks, thread splits).

using detail::Q4GemmArgs;

namespace {

struct W4Operands {
  std::vector<float> x, bias;
  std::vector<std::uint8_t> w, zero;
  std::vector<float> scale32;
  std::vector<f16> scale16;
  std::size_t m, n, k, group, ldx, ldw, ld_scale, off;
  bool symmetric, f16_scales;
  float output_scale;

  W4Operands(std::size_t m_, std::size_t n_, std::size_t k_, std::size_t group_, bool sym, bool f16s, std::size_t off_,
             std::mt19937& rng)
      : m(m_), n(n_), k(k_), group(group_), ldx(k_ + off_ * 7), ldw(k_ / 2 + off_ * 3), ld_scale(k_ / group_ + off_),
        off(off_), symmetric(sym), f16_scales(f16s) {
    std::normal_distribution<float> nd(0.f, 1.f);
    std::uniform_real_distribution<float> sd(1e-3f, 2e-2f);
    x.resize(m * ldx + off + 1);
    for (auto& v : x) v = nd(rng);
    w.resize(n * ldw + off + 1);
    for (auto& v : w) v = static_cast<std::uint8_t>(rng());
    scale32.resize(n * ld_scale + 1);
    for (auto& v : scale32) v = sd(rng);
    zero.resize(n * ld_scale + 1);
    for (auto& v : zero) v = static_cast<std::uint8_t>(rng() % 16);
    // An all-zero group (scale 0, zero point 0, values 0) in row 1, group 0, when there is one.
    if (n > 1 && k >= group) {
      scale32[ld_scale] = 0.f;
      zero[ld_scale] = 0;
      for (std::size_t c = 0; c < group / 2; ++c) w[off + ldw + c] = 0;  // q = 0 (int4) or z = 0 (uint4)
    }
    scale16.resize(scale32.size());
    for (std::size_t i = 0; i < scale32.size(); ++i) {
      scale16[i] = f16(scale32[i]);
      if (f16s) scale32[i] = static_cast<float>(scale16[i]);  // the exact values the kernel sees
    }
    bias.resize(n);
    for (auto& v : bias) v = nd(rng);
    output_scale = 0.5f + static_cast<float>(rng() % 100) / 100.f;
  }
  Q4GemmArgs args(float* y, std::size_t ldy, bool with_bias) const {
    Q4GemmArgs g;
    g.x = x.data() + off;
    g.ldx = ldx;
    g.w = w.data() + off;
    g.ldw = ldw;
    g.w_scale = f16_scales ? static_cast<const void*>(scale16.data()) : static_cast<const void*>(scale32.data());
    g.scale_f16 = f16_scales;
    g.ld_scale = ld_scale;
    g.w_zero = symmetric ? nullptr : zero.data();
    g.group = group;
    g.bias = with_bias ? bias.data() : nullptr;
    g.output_scale = output_scale;
    g.y = y;
    g.ldy = ldy;
    g.m = m;
    g.n = n;
    g.k = k;
    return g;
  }
  int q_minus_z(std::size_t j, std::size_t c) const {
    const int nib = (w[off + j * ldw + c / 2] >> ((c & 1) * 4)) & 0xf;
    return symmetric ? (nib ^ 8) - 8 : nib - zero[j * ld_scale + c / group];
  }
  // The exact output in double and the documented error bound.
  std::pair<double, double> exact(std::size_t i, std::size_t j, bool with_bias) const {
    double sum = 0, mag = 0;
    for (std::size_t c = 0; c < k; ++c) {
      const double t = double(scale32[j * ld_scale + c / group]) * q_minus_z(j, c) * x[off + i * ldx + c];
      sum += t;
      mag += std::fabs(t);
    }
    const double b = with_bias ? bias[j] : 0.0;
    const double bound = double(k + 2 * (group ? k / group : 0) + 4) * std::ldexp(1.0, -24) *
                         (std::fabs(double(output_scale)) * mag + std::fabs(b));
    return {double(output_scale) * sum + b, bound + 1e-37};
  }
};

}  // namespace

TEST_CASE("conformance: gemm_w4_f32 within the stated bound of the exact result, on every ISA") {
  const std::size_t ms[] = {1, 2, 3, 4, 5, 9};
  const std::size_t ns[] = {1, 2, 3, 4, 5, 7, 9, 17};
  for_each_simd_table<QuantKernels>([&](Isa isa, const QuantKernels& kt, const QuantKernels& ref) {
    std::mt19937 rng(21);
    std::size_t cases = 0;
    double worst = 0;  // largest |isa - ref| / bound seen
    for (std::size_t group : {32u, 64u, 128u}) {
      for (std::size_t k : {0u, 32u, 64u, 96u, 128u, 256u, 384u, 1024u}) {
        if (k % group) continue;
        for (std::size_t mi = 0; mi < std::size(ms); ++mi) {
          for (std::size_t ni = 0; ni < std::size(ns); ++ni) {
            if ((mi + ni + k / 32) % 3 != 0 && !(mi < 2 && ni < 4)) continue;
            const std::size_t m = ms[mi], n = ns[ni], off = kMisalignments[(mi + ni) % 3];
            const bool sym = (mi + ni) % 2 == 0, f16s = (mi + 2 * ni + k) % 3 == 0, with_bias = ni % 2 == 1;
            W4Operands op(m, n, k, group, sym, f16s, off, rng);
            const std::size_t ldy = n + 2;
            std::vector<float> yg(m * ldy, -7.f), yr(m * ldy, -7.f);
            kt.gemm_w4_f32(op.args(yg.data(), ldy, with_bias));
            ref.gemm_w4_f32(op.args(yr.data(), ldy, with_bias));
            INFO("m=" << m << " n=" << n << " k=" << k << " group=" << group << " symmetric=" << sym << " f16 scales=" << f16s
                      << " misalignment=" << off);
            for (std::size_t i = 0; i < m; ++i) {
              for (std::size_t j = 0; j < n; ++j) {
                const auto exact = op.exact(i, j, with_bias);
                const double want = exact.first, bound = exact.second;  // named: INFO's lambda captures them
                const float g = yg[i * ldy + j], r = yr[i * ldy + j];
                INFO("(" << i << ", " << j << ") isa " << g << " reference " << r << " exact " << want << " bound " << bound);
                REQUIRE(std::fabs(double(r) - want) <= bound);
                REQUIRE(std::fabs(double(g) - want) <= bound);
                REQUIRE(std::fabs(double(g) - r) <= 2 * bound);
                worst = std::max(worst, std::fabs(double(g) - r) / bound);
              }
              REQUIRE(yg[i * ldy + n] == -7.f);  // nothing written past n
              REQUIRE(yg[i * ldy + n + 1] == -7.f);
            }
            if (n > 1 && k >= group) {  // the all-zero group adds exactly nothing: row 1 has no NaN
              for (std::size_t i = 0; i < m; ++i) REQUIRE(std::isfinite(yg[i * ldy + 1]));
            }
            ++cases;
          }
        }
      }
    }
    MESSAGE(isa_name(isa) << ": " << cases << " W4A32 shapes checked; largest |isa - reference| / bound = " << worst);
  });
}

TEST_CASE("conformance: gemm_w4_f32 is bit-identical across tilings within one ISA; NaN rows") {
  for_each_simd_table<QuantKernels>([&](Isa isa, const QuantKernels& kt, const QuantKernels& ref) {
    std::mt19937 rng(22);
    for (bool sym : {true, false}) {
      W4Operands op(7, 19, 512, 64, sym, true, 1, rng);
      op.x[op.off + 3 * op.ldx + 100] = std::numeric_limits<float>::quiet_NaN();
      op.x[op.off + 5 * op.ldx + 7] = std::numeric_limits<float>::infinity();
      const std::size_t ldy = op.n;
      std::vector<float> all(op.m * ldy), piece(op.m * ldy);
      kt.gemm_w4_f32(op.args(all.data(), ldy, true));
      // Row by row (the decode path), and in column slices of 1 and 5 weight rows.
      for (std::size_t i = 0; i < op.m; ++i) {
        for (std::size_t width : {1u, 5u, 19u}) {
          for (std::size_t j0 = 0; j0 < op.n; j0 += width) {
            Q4GemmArgs g = op.args(piece.data(), ldy, true);
            g.x += i * op.ldx;
            g.m = 1;
            g.n = std::min(width, op.n - j0);
            g.w += j0 * op.ldw;
            g.w_scale = static_cast<const f16*>(g.w_scale) + j0 * op.ld_scale;
            if (g.w_zero) g.w_zero += j0 * op.ld_scale;
            g.bias += j0;
            g.y = piece.data() + i * ldy + j0;
            kt.gemm_w4_f32(g);
          }
          for (std::size_t j = 0; j < op.n; ++j) {
            INFO("isa " << isa_name(isa) << " row " << i << " column " << j << " slice width " << width);
            REQUIRE(same_float(piece[i * ldy + j], all[i * ldy + j]));
          }
        }
      }
      std::vector<float> yr(op.m * ldy);
      ref.gemm_w4_f32(op.args(yr.data(), ldy, true));
      for (std::size_t j = 0; j < op.n; ++j) {
        CHECK(std::isnan(all[3 * ldy + j]));  // a NaN activation: a row of NaN
        CHECK(std::isnan(yr[3 * ldy + j]));
        CHECK_FALSE(std::isfinite(all[5 * ldy + j]));  // an infinity: non-finite outputs
        CHECK_FALSE(std::isfinite(yr[5 * ldy + j]));
        CHECK(std::isfinite(all[0 * ldy + j]));
      }
    }
    // Decode-shaped perf (one activation row, 4096 x 4096 int4 g128) in perf mode.
    W4Operands op(1, 1024, 4096, 128, true, true, 0, rng);
    std::vector<float> y(1024);
    report_perf("gemv_w4_f32", isa, 1024.0 * 4096, [&] { kt.gemm_w4_f32(op.args(y.data(), 1024, false)); });
  });
}

// ---- W4A8: int4 per_group weights x int8 activations: bit-exact on every ISA ----

TEST_CASE("conformance: gemm_w4_s8 is bit-exact (exact int32 8-column dots, 16 float lanes, a fixed tree)") {
  const std::size_t ms[] = {1, 2, 3, 4, 5, 9};
  const std::size_t ns[] = {1, 2, 3, 4, 5, 7, 9, 17};
  for_each_simd_table<QuantKernels>([&](Isa isa, const QuantKernels& kt, const QuantKernels& ref) {
    std::mt19937 rng(31);
    std::size_t cases = 0;
    for (std::size_t group : {32u, 64u, 128u}) {
      for (std::size_t k : {0u, 32u, 64u, 96u, 128u, 160u, 224u, 256u, 352u, 384u, 1024u}) {
        if (k % group) continue;
        for (std::size_t mi = 0; mi < std::size(ms); ++mi) {
          for (std::size_t ni = 0; ni < std::size(ns); ++ni) {
            const std::size_t m = ms[mi], n = ns[ni], off = kMisalignments[(mi + ni) % 3];
            const bool sym = (mi + ni) % 2 == 0, f16s = (mi + 2 * ni + k) % 3 == 0, with_bias = ni % 2 == 1;
            const int mode = static_cast<int>((mi + ni + k / 32) % 4);  // 0 random, 1 extremes, 2 all -127, 3 unit scales
            W4Operands op(m, n, k, group, sym, f16s, off, rng);
            const std::size_t lda = k + off * 5;
            std::vector<std::int8_t> a(m * lda + off + 1);
            for (auto& v : a) {
              int t = static_cast<int>(rng() % 255) - 127;
              if (mode == 1) t = (rng() & 1) ? 127 : -127;
              if (mode == 2) t = -127;
              v = static_cast<std::int8_t>(t);
            }
            if (mode == 2 && !sym) std::fill(op.zero.begin(), op.zero.end(), std::uint8_t{15});  // largest |q - z|
            // The kernels' operand: each row packed in the W4A8 order, rows lda_p apart.
            const std::size_t padded = w4a8_padded_k(k), lda_p = padded + off * 64, ld_bsum = padded / 8 + off;
            std::vector<std::int8_t> packed(m * lda_p + off + 1, 99);
            std::vector<std::int32_t> bsum(m * ld_bsum + 1, 12345);
            for (std::size_t i = 0; i < m; ++i)
              pack_w4a8_activations(a.data() + off + i * lda, k, packed.data() + off + i * lda_p, bsum.data() + i * ld_bsum);
            std::vector<float> a_scale(m);
            std::uniform_real_distribution<float> sd(1e-3f, 1e-1f);
            for (auto& v : a_scale) v = mode == 3 ? 1.f : sd(rng);
            if (mode == 3) {  // unit scales: outputs are the exact integer sums (< 2^24)
              std::fill(op.scale32.begin(), op.scale32.end(), 1.f);
              std::fill(op.scale16.begin(), op.scale16.end(), f16(1.f));
            }
            if (m > 2 && mode != 3) a_scale[2] = std::numeric_limits<float>::quiet_NaN();  // a row that held a NaN
            const std::size_t ldy = n + 2;
            std::vector<float> yg(m * ldy, -7.f), yr(m * ldy, -7.f);
            auto args = [&](float* y) {
              Q4GemmArgs g = op.args(y, ldy, with_bias && mode != 3);
              g.x = nullptr;
              g.a = packed.data() + off;
              g.lda = lda_p;
              g.a_bsum = bsum.data();
              g.ld_bsum = ld_bsum;
              g.a_scale = a_scale.data();
              return g;
            };
            kt.gemm_w4_s8(args(yg.data()));
            ref.gemm_w4_s8(args(yr.data()));
            INFO("m=" << m << " n=" << n << " k=" << k << " group=" << group << " symmetric=" << sym << " f16 scales=" << f16s
                      << " misalignment=" << off << " mode=" << mode);
            for (std::size_t i = 0; i < yg.size(); ++i) {
              INFO("element " << i);
              REQUIRE(same_float(yg[i], yr[i]));
            }
            if (mode == 3) {  // the reference's integers against a plain sum
              for (std::size_t i = 0; i < m; ++i)
                for (std::size_t j = 0; j < n; ++j) {
                  std::int64_t want = 0;
                  for (std::size_t c = 0; c < k; ++c) want += std::int64_t{op.q_minus_z(j, c)} * a[off + i * lda + c];
                  REQUIRE(yr[i * ldy + j] == static_cast<float>(want));
                }
            }
            ++cases;
          }
        }
      }
    }
    MESSAGE(isa_name(isa) << ": " << cases << " W4A8 shapes checked bit-exact");
    // Decode-shaped perf.
    W4Operands op(1, 1024, 4096, 128, true, true, 0, rng);
    std::vector<std::int8_t> a(4096, 3), packed(4096);
    std::vector<std::int32_t> bsum(512);
    pack_w4a8_activations(a.data(), 4096, packed.data(), bsum.data());
    const float one = 1.f;
    std::vector<float> y(1024);
    Q4GemmArgs g = op.args(y.data(), 1024, false);
    g.a = packed.data();
    g.lda = 4096;
    g.a_bsum = bsum.data();
    g.ld_bsum = 512;
    g.a_scale = &one;
    report_perf("gemv_w4_s8", isa, 1024.0 * 4096, [&] { kt.gemm_w4_s8(g); });
  });
}

// ---- W4A8 on panels of 16 rows (QuantizedPanels): bit-exact on every ISA ----

namespace {

// A panel operand in the layout of quarry/quant/quantized_panels.hpp: values, scales and zero points
// of ceil(n / 16) panels, at an offset that breaks their alignment.
struct PanelOperands {
  std::vector<std::uint8_t> w, zero;
  std::vector<float> scale32;
  std::vector<f16> scale16;
  std::size_t n, k, group, off, bits;
  bool symmetric, f16_scales;

  PanelOperands(std::size_t n_, std::size_t k_, std::size_t group_, bool sym, bool f16s, std::size_t off_, std::mt19937& rng, int mode,
                std::size_t bits_ = 4)
      : n(n_), k(k_), group(group_), off(off_), bits(bits_), symmetric(sym), f16_scales(f16s) {
    const std::size_t panels = (n + 15) / 16, slots = panels * (k / group) * 16;
    w.resize(off + panels * k * bits * 2 + 1);  // 16 rows x k columns of `bits` each
    // mode 2, the largest |q - z|: int4 0x00 (q = -8; u = 0 against z = 15), int8 0x80 (-128)
    // symmetric or 0xff (255 against z = 0).
    for (auto& v : w) v = static_cast<std::uint8_t>(mode == 2 ? (sym ? (bits == 4 ? 0x00 : 0x80) : 0xff) : rng());
    std::uniform_real_distribution<float> sd(1e-3f, 2e-2f);
    scale32.resize(off + slots + 1);
    for (auto& v : scale32) v = mode == 3 ? 1.f : sd(rng);
    zero.resize(off + slots + 1);
    for (auto& v : zero) v = static_cast<std::uint8_t>(mode == 2 ? 0 : bits == 4 ? rng() % 16 : rng() % 256);
    if (n > 1 && k >= group && mode != 3) scale32[off + 1] = 0.f;  // row 1, group 0: scale 0
    scale16.resize(scale32.size());
    for (std::size_t i = 0; i < scale32.size(); ++i) {
      scale16[i] = f16(scale32[i]);
      if (f16s) scale32[i] = static_cast<float>(scale16[i]);
    }
  }
  // Panel p's unit as the header states it: quads of 4 panels interleaved, then single panels.
  std::size_t unit_base(std::size_t p) const { return p < (n + 15) / 16 / 4 * 4 ? p / 4 * 4 : p; }
  std::size_t unit_width(std::size_t p) const { return p < (n + 15) / 16 / 4 * 4 ? 4 : 1; }
  // q - z of weight (j, c), read from the layout as the header states it.
  int q_minus_z(std::size_t j, std::size_t c) const {
    const std::size_t p = j / 16, r = j % 16, base = unit_base(p), width = unit_width(p), cols = bits == 4 ? 8 : 4;
    const std::uint8_t byte = w[off + (base * (k / cols) + (c / cols) * width + p - base) * 64 + r * 4 + c % 4];
    if (bits == 8) return symmetric ? int{static_cast<std::int8_t>(byte)} : int{byte} - zero[off + slot(j, c / group)];
    const int u = c % 8 < 4 ? byte & 0xf : byte >> 4;
    const int z = symmetric ? 8 : zero[off + slot(j, c / group)];
    return u - z;
  }
  std::size_t slot(std::size_t j, std::size_t gr) const {
    const std::size_t p = j / 16, base = unit_base(p);
    return (base * (k / group) + gr * unit_width(p) + p - base) * 16 + j % 16;
  }
  float scale(std::size_t j, std::size_t gr) const { return scale32[off + slot(j, gr)]; }
};

}  // namespace

TEST_CASE("conformance: gemm_grouped_panels is bit-exact (exact int32 group dots, one fma per group in order; int4 and int8)") {
  const std::size_t ms[] = {1, 2, 3, 4, 5, 9};
  const std::size_t ns[] = {1, 5, 16, 17, 33, 64, 80, 150};
  for_each_simd_table<QuantKernels>([&](Isa isa, const QuantKernels& kt, const QuantKernels& ref) {
    std::mt19937 rng(47);
    std::size_t cases = 0;
    for (std::size_t bits : {4u, 8u}) {
      for (std::size_t group : {32u, 64u, 128u}) {
        for (std::size_t k : {0u, 32u, 64u, 96u, 128u, 256u, 384u, 1024u}) {
          if (k % group) continue;
          for (std::size_t mi = 0; mi < std::size(ms); ++mi) {
            for (std::size_t ni = 0; ni < std::size(ns); ++ni) {
              const std::size_t m = ms[mi], n = ns[ni], off = kMisalignments[(mi + ni) % 3];
              const bool sym = (mi + ni) % 2 == 0, f16s = (mi + 2 * ni + k) % 3 == 0, with_bias = ni % 2 == 1;
              const int mode = static_cast<int>((mi + ni + k / 32) % 4);  // 0 random, 1 extremes, 2 largest |q - z|, 3 unit scales
              PanelOperands op(n, k, group, sym, f16s, off, rng, mode, bits);
              const std::size_t lda = k + off * 5, groups = k / group, ld_gsum = groups + off;
              std::vector<std::int8_t> a(off + m * lda + 1);
              for (auto& v : a) {
                int t = static_cast<int>(rng() % 255) - 127;
                if (mode == 1) t = (rng() & 1) ? 127 : -127;
                if (mode == 2) t = 127;
                v = static_cast<std::int8_t>(t);
              }
              std::vector<std::int32_t> gsum(m * ld_gsum + 1, 12345);
              for (std::size_t i = 0; i < m; ++i)
                for (std::size_t gr = 0; gr < groups; ++gr) {
                  std::int32_t sum = 0;
                  for (std::size_t c = gr * group; c < (gr + 1) * group; ++c) sum += a[off + i * lda + c];
                  gsum[i * ld_gsum + gr] = sum;
                }
              std::vector<float> a_scale(m), bias(n);
              std::uniform_real_distribution<float> sd(1e-3f, 1e-1f);
              std::normal_distribution<float> nd;
              for (auto& v : a_scale) v = mode == 3 ? 1.f : sd(rng);
              for (auto& v : bias) v = nd(rng);
              if (m > 2 && mode != 3) a_scale[2] = std::numeric_limits<float>::quiet_NaN();  // a row that held a NaN
              const std::size_t ldy = n + 2;
              std::vector<float> yg(m * ldy, -7.f), yr(m * ldy, -7.f);
              auto args = [&](float* y) {
                detail::Q4PanelArgs g;
                g.a = a.data() + off;
                g.lda = lda;
                g.a_gsum = gsum.data();
                g.ld_gsum = ld_gsum;
                g.a_scale = a_scale.data();
                g.w = op.w.data() + off;
                g.w_scale = f16s ? static_cast<const void*>(op.scale16.data() + off) : static_cast<const void*>(op.scale32.data() + off);
                g.scale_f16 = f16s;
                g.w_zero = sym ? nullptr : op.zero.data() + off;
                g.bits = static_cast<int>(bits);
                g.group = group;
                g.bias = with_bias && mode != 3 ? bias.data() : nullptr;
                g.y = y;
                g.ldy = ldy;
                g.m = m;
                g.n = n;
                g.k = k;
                return g;
              };
              kt.gemm_grouped_panels(args(yg.data()));
              ref.gemm_grouped_panels(args(yr.data()));
              INFO("bits=" << bits << " m=" << m << " n=" << n << " k=" << k << " group=" << group << " symmetric=" << sym
                           << " f16 scales=" << f16s << " misalignment=" << off << " mode=" << mode);
              for (std::size_t i = 0; i < yg.size(); ++i) {
                INFO("element " << i);
                REQUIRE(same_float(yg[i], yr[i]));
                if (i % ldy >= n) REQUIRE(yr[i] == -7.f);  // nothing written past row n
              }
              // The reference against a plain reading of the layout: one fma per group in order.
              for (std::size_t i = 0; i < m; ++i)
                for (std::size_t j = 0; j < n; ++j) {
                  float t = 0.f;
                  for (std::size_t gr = 0; gr < groups; ++gr) {
                    std::int64_t dot = 0;
                    for (std::size_t c = gr * group; c < (gr + 1) * group; ++c) dot += std::int64_t{op.q_minus_z(j, c)} * a[off + i * lda + c];
                    t = std::fma(static_cast<float>(dot), op.scale(j, gr), t);
                  }
                  const float want = std::fma(t, a_scale[i], with_bias && mode != 3 ? bias[j] : 0.f);
                  REQUIRE(same_float(yr[i * ldy + j], want));
                }
              ++cases;
            }
          }
        }
      }
    }
    MESSAGE(isa_name(isa) << ": " << cases << " per-group panel shapes (int4 and int8) checked bit-exact");
    // Decode-shaped perf.
    PanelOperands op(1024, 4096, 32, true, true, 0, rng, 0);
    std::vector<std::int8_t> a(4096, 3);
    std::vector<std::int32_t> gsum(128, 96);
    const float one = 1.f;
    std::vector<float> y(1024);
    detail::Q4PanelArgs g;
    g.a = a.data();
    g.lda = 4096;
    g.a_gsum = gsum.data();
    g.ld_gsum = 128;
    g.a_scale = &one;
    g.w = op.w.data();
    g.w_scale = op.scale16.data();
    g.scale_f16 = true;
    g.y = y.data();
    g.ldy = 1024;
    g.m = 1;
    g.n = 1024;
    g.k = 4096;
    report_perf("gemv_w4_panels", isa, 1024.0 * 4096 / 2, [&] { kt.gemm_grouped_panels(g); });
  });
}

// ---- W8A8 on int8 panels (QuantizedPanels): bit-exact, and equal to gemm_s8 row-major ----

TEST_CASE("conformance: gemm_s8_panels is bit-exact and equals gemm_s8 on the same weights row-major") {
  const std::size_t ms[] = {1, 2, 3, 4, 5, 9};
  const std::size_t ns[] = {1, 5, 16, 17, 64, 80, 150};
  for_each_simd_table<QuantKernels>([&](Isa isa, const QuantKernels& kt, const QuantKernels& ref) {
    std::mt19937 rng(53);
    std::size_t cases = 0;
    for (std::size_t k : {0u, 1u, 3u, 4u, 5u, 31u, 64u, 130u, 257u, 1024u}) {
      for (std::size_t mi = 0; mi < std::size(ms); ++mi) {
        for (std::size_t ni = 0; ni < std::size(ns); ++ni) {
          const std::size_t m = ms[mi], n = ns[ni], off = kMisalignments[(mi + ni) % 3];
          const int mode = static_cast<int>((mi + ni + k) % 3);
          const bool asym = (mi + 2 * ni + k) % 2 == 1, with_bias = ni % 2 == 1;
          Operands op(m, n, k, off, rng, mode);  // row-major weights, activations, sums, zero points
          std::uniform_real_distribution<float> sd(1e-3f, 1e-1f);
          std::normal_distribution<float> nd;
          for (auto& v : op.a_scale) v = sd(rng);
          for (auto& v : op.w_scale) v = sd(rng);
          for (auto& v : op.bias) v = nd(rng);
          if (m > 2) op.a_scale[2] = std::numeric_limits<float>::quiet_NaN();
          // The panels: (k + 3) / 4 blocks of 64 bytes per panel, quads interleaved (the header's layout).
          const std::size_t panels = (n + 15) / 16, blocks = (k + 3) / 4, full = panels / 4 * 4;
          std::vector<std::uint8_t> pw(off + panels * blocks * 64 + 1, 0);
          for (std::size_t j = 0; j < n; ++j)
            for (std::size_t c = 0; c < k; ++c) {
              const std::size_t p = j / 16, base = p < full ? p / 4 * 4 : p, width = p < full ? 4 : 1;
              pw[off + (base * blocks + (c / 4) * width + p - base) * 64 + (j % 16) * 4 + c % 4] =
                  static_cast<std::uint8_t>(op.w[off + j * op.ldw + c]);
            }
          // Activations past k (to a multiple of 4) are zero, as the front end leaves them.
          std::vector<std::int8_t> a4 = op.a;
          for (std::size_t i = 0; i < m; ++i)
            for (std::size_t c = k; c < (k + 3) / 4 * 4; ++c) a4[off + i * op.lda + c] = 0;
          const std::size_t ldy = n + 1;
          std::vector<float> yg(m * ldy, -7.f), yr(m * ldy, -7.f), yrow(m * ldy, -7.f);
          QGemmArgs g = op.args(nullptr, with_bias, 1, asym);
          g.ldy = ldy;
          g.y = yrow.data();
          ref.gemm_s8(g);  // the row-major reference
          g.a = a4.data() + off;
          g.w = reinterpret_cast<const std::int8_t*>(pw.data() + off);
          g.ldw = 0;
          g.y = yg.data();
          kt.gemm_s8_panels(g);
          g.y = yr.data();
          ref.gemm_s8_panels(g);
          INFO("m=" << m << " n=" << n << " k=" << k << " asymmetric=" << asym << " misalignment=" << off << " mode=" << mode);
          for (std::size_t i = 0; i < yg.size(); ++i) {
            INFO("element " << i);
            REQUIRE(same_float(yg[i], yr[i]));
            REQUIRE(same_float(yr[i], yrow[i]));
          }
          ++cases;
        }
      }
    }
    MESSAGE(isa_name(isa) << ": " << cases << " W8A8 panel shapes checked bit-exact");
  });
}

// ---- W8A8 grouped: int8 per_group weights x int8 activations: bit-exact on every ISA ----

TEST_CASE("conformance: gemm_s8_grouped is bit-exact (exact int32 4-column dots, 16 float lanes, a fixed tree)") {
  const std::size_t ms[] = {1, 2, 3, 4, 5, 9};
  const std::size_t ns[] = {1, 2, 3, 4, 7, 9, 17};
  for_each_simd_table<QuantKernels>([&](Isa isa, const QuantKernels& kt, const QuantKernels& ref) {
    std::mt19937 rng(37);
    std::size_t cases = 0;
    for (std::size_t group : {32u, 64u, 128u}) {
      for (std::size_t k : {0u, 32u, 64u, 96u, 128u, 160u, 384u, 1024u}) {
        if (k % group) continue;
        for (std::size_t mi = 0; mi < std::size(ms); ++mi) {
          for (std::size_t ni = 0; ni < std::size(ns); ++ni) {
            const std::size_t m = ms[mi], n = ns[ni], off = kMisalignments[(mi + ni) % 3];
            const bool sym = (mi + ni) % 2 == 0, f16s = (mi + 2 * ni + k) % 3 == 0, with_bias = ni % 2 == 1;
            const int mode = static_cast<int>((mi + ni + k / 32) % 3);  // 0 random, 1 extremes, 2 unit scales
            const std::size_t lda = k + off * 5, ldw = k + off * 3, groups = k / group, ld_scale = groups + off;
            const std::size_t ld_bsum = s8g_bsum_count(k) + off;
            std::vector<std::int8_t> a(m * lda + off + 1);
            for (auto& v : a) v = static_cast<std::int8_t>(mode == 1 ? ((rng() & 1) ? 127 : -127) : static_cast<int>(rng() % 255) - 127);
            std::vector<std::uint8_t> w(n * ldw + off + 1), zero(n * ld_scale + 1);
            for (auto& v : w) v = static_cast<std::uint8_t>(mode == 1 ? ((rng() & 1) ? 0x80 : 0x7f) : rng());
            for (auto& v : zero) v = static_cast<std::uint8_t>(mode == 1 ? 255 : rng());
            std::vector<float> s32(n * ld_scale + 1), bias(n), a_scale(m);
            std::vector<f16> s16(s32.size());
            std::uniform_real_distribution<float> sd(1e-3f, 2e-2f);
            for (std::size_t t = 0; t < s32.size(); ++t) {
              s32[t] = mode == 2 ? 1.f : sd(rng);
              s16[t] = f16(s32[t]);
            }
            if (n > 1 && groups > 0) s32[ld_scale] = 0.f, s16[ld_scale] = f16(0.f);  // a zero scale (an all-zero group)
            for (auto& v : bias) v = sd(rng) * 100;
            for (auto& v : a_scale) v = mode == 2 ? 1.f : sd(rng);
            if (m > 2 && mode != 2) a_scale[2] = std::numeric_limits<float>::quiet_NaN();
            std::vector<std::int32_t> bsum(m * ld_bsum + 1, 777);
            for (std::size_t i = 0; i < m; ++i) {
              for (std::size_t b = 0; b < s8g_bsum_count(k); ++b) bsum[i * ld_bsum + b] = 0;
              for (std::size_t c = 0; c < k; ++c) bsum[i * ld_bsum + c / 4] += a[off + i * lda + c];
            }
            const std::size_t ldy = n + 2;
            std::vector<float> yg(m * ldy, -7.f), yr(m * ldy, -7.f);
            auto args = [&](float* y) {
              Q4GemmArgs g;
              g.w = w.data() + off;
              g.ldw = ldw;
              g.w_scale = f16s ? static_cast<const void*>(s16.data()) : static_cast<const void*>(s32.data());
              g.scale_f16 = f16s;
              g.ld_scale = ld_scale;
              g.w_zero = sym ? nullptr : zero.data();
              g.group = group;
              g.bias = with_bias && mode != 2 ? bias.data() : nullptr;
              g.y = y;
              g.ldy = ldy;
              g.m = m;
              g.n = n;
              g.k = k;
              g.a = a.data() + off;
              g.lda = lda;
              g.a_bsum = bsum.data();
              g.ld_bsum = ld_bsum;
              g.a_scale = a_scale.data();
              return g;
            };
            kt.gemm_s8_grouped(args(yg.data()));
            ref.gemm_s8_grouped(args(yr.data()));
            INFO("m=" << m << " n=" << n << " k=" << k << " group=" << group << " symmetric=" << sym << " f16 scales=" << f16s
                      << " misalignment=" << off << " mode=" << mode);
            for (std::size_t i = 0; i < yg.size(); ++i) {
              INFO("element " << i);
              REQUIRE(same_float(yg[i], yr[i]));
            }
            if (mode == 2) {  // unit scales: the reference's outputs are the exact integer sums (< 2^24)
              for (std::size_t i = 0; i < m; ++i)
                for (std::size_t j = 0; j < n; ++j) {
                  std::int64_t want = 0;
                  for (std::size_t c = 0; c < k; ++c) {
                    const std::uint8_t b = w[off + j * ldw + c];
                    const int q = sym ? int{static_cast<std::int8_t>(b)} : int{b} - zero[j * ld_scale + c / group];
                    const bool zeroed = j == 1 && c < group;  // the zero scale
                    want += zeroed ? 0 : std::int64_t{q} * a[off + i * lda + c];
                  }
                  REQUIRE(yr[i * ldy + j] == static_cast<float>(want));
                }
            }
            ++cases;
          }
        }
      }
    }
    MESSAGE(isa_name(isa) << ": " << cases << " grouped W8A8 shapes checked bit-exact");
  });
}
