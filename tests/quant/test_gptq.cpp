// GPTQ (v1 "gptq" and "gptq_v2") and AWQ (GEMM) packed int4 import.
//
// The packed tensors are built here from a known integer matrix by packers written from the
// formats' definitions (AutoGPTQ's and AutoAWQ's pack loops), independently of quarry's
// importers, and every dequantized weight is compared with (q - z) * s.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <quarry/quant/gptq.hpp>
#include <quarry/quant/quantize.hpp>

#include "test_util.hpp"

using namespace quarry;
using namespace quarry::testing;

namespace {

std::string error_of(const status& s) { return s.ok() ? "" : s.to_string(); }

// A layer W [N, K] in integers: q (0..15), stored zero points (0..15) and f16 scales per group.
struct IntLayer {
  std::int64_t n = 0, k = 0;
  int g = 0;
  std::vector<int> q;         // [N, K]
  std::vector<int> zero;      // [N, K / G], as stored in the checkpoint
  std::vector<f16> scale;     // [N, K / G]
  int& qv(std::int64_t r, std::int64_t c) { return q[static_cast<std::size_t>(r * k + c)]; }
  int zv(std::int64_t r, std::int64_t grp) const { return zero[static_cast<std::size_t>(r * (k / g) + grp)]; }
  f16 sv(std::int64_t r, std::int64_t grp) const { return scale[static_cast<std::size_t>(r * (k / g) + grp)]; }
};

IntLayer random_layer(std::int64_t n, std::int64_t k, int g, std::uint32_t seed) {
  IntLayer l;
  l.n = n, l.k = k, l.g = g;
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> nib(0, 15);
  std::normal_distribution<float> sd(0.f, 0.01f);
  l.q.resize(static_cast<std::size_t>(n * k));
  for (int& v : l.q) v = nib(rng);
  l.zero.resize(static_cast<std::size_t>(n * (k / g)));
  for (int& v : l.zero) v = nib(rng);
  l.zero[0] = 15;  // GPTQ v1: z = 16
  l.zero[1] = 0;
  l.scale.resize(l.zero.size());
  for (f16& s : l.scale) s = f16(sd(rng));
  return l;
}

std::int32_t as_int32(std::uint32_t u) {
  std::int32_t i;
  std::memcpy(&i, &u, 4);
  return i;
}

struct Packed {
  Tensor<std::int32_t> qweight, qzeros;
  Tensor<f16> scales;
};

// AutoGPTQ: qweight[i][n] |= q(n, k = 8i + j) << 4j; qzeros[g][i] |= zero(n = 8i + j, g) << 4j.
Packed pack_gptq(const IntLayer& l) {
  Packed p;
  std::vector<std::uint32_t> w(static_cast<std::size_t>(l.k / 8 * l.n), 0u), z(static_cast<std::size_t>(l.k / l.g * (l.n / 8)), 0u);
  for (std::int64_t n = 0; n < l.n; ++n)
    for (std::int64_t k = 0; k < l.k; ++k)
      w[static_cast<std::size_t>((k / 8) * l.n + n)] |= static_cast<std::uint32_t>(l.q[static_cast<std::size_t>(n * l.k + k)]) << (4 * (k % 8));
  for (std::int64_t grp = 0; grp < l.k / l.g; ++grp)
    for (std::int64_t n = 0; n < l.n; ++n)
      z[static_cast<std::size_t>(grp * (l.n / 8) + n / 8)] |= static_cast<std::uint32_t>(l.zv(n, grp)) << (4 * (n % 8));
  p.qweight = Tensor<std::int32_t>({l.k / 8, l.n});
  for (std::size_t i = 0; i < w.size(); ++i) p.qweight.data()[i] = as_int32(w[i]);
  p.qzeros = Tensor<std::int32_t>({l.k / l.g, l.n / 8});
  for (std::size_t i = 0; i < z.size(); ++i) p.qzeros.data()[i] = as_int32(z[i]);
  p.scales = Tensor<f16>({l.k / l.g, l.n});
  for (std::int64_t grp = 0; grp < l.k / l.g; ++grp)
    for (std::int64_t n = 0; n < l.n; ++n) p.scales(grp, n) = l.sv(n, grp);
  return p;
}

// AutoAWQ (WQLinear_GEMM.from_linear): nibble p of qweight[k][i] = q(n = 8i + order[p], k),
// order = [0, 2, 4, 6, 1, 3, 5, 7]; qzeros[g][i] likewise with the zero of (8i + order[p], g).
Packed pack_awq(const IntLayer& l) {
  static const int order[8] = {0, 2, 4, 6, 1, 3, 5, 7};
  Packed p;
  p.qweight = Tensor<std::int32_t>({l.k, l.n / 8});
  for (std::int64_t k = 0; k < l.k; ++k)
    for (std::int64_t i = 0; i < l.n / 8; ++i) {
      std::uint32_t word = 0;
      for (int pos = 0; pos < 8; ++pos) word |= static_cast<std::uint32_t>(l.q[static_cast<std::size_t>((8 * i + order[pos]) * l.k + k)]) << (4 * pos);
      p.qweight(k, i) = as_int32(word);
    }
  p.qzeros = Tensor<std::int32_t>({l.k / l.g, l.n / 8});
  for (std::int64_t grp = 0; grp < l.k / l.g; ++grp)
    for (std::int64_t i = 0; i < l.n / 8; ++i) {
      std::uint32_t word = 0;
      for (int pos = 0; pos < 8; ++pos) word |= static_cast<std::uint32_t>(l.zv(8 * i + order[pos], grp)) << (4 * pos);
      p.qzeros(grp, i) = as_int32(word);
    }
  p.scales = Tensor<f16>({l.k / l.g, l.n});
  for (std::int64_t grp = 0; grp < l.k / l.g; ++grp)
    for (std::int64_t n = 0; n < l.n; ++n) p.scales(grp, n) = l.sv(n, grp);
  return p;
}

// Every weight of q against (q - (zero + zero_offset)) * s, bit for bit, plus the stored parts.
void check_layer(const QuantizedTensor<cpu>& qt, IntLayer& l, int zero_offset) {
  CHECK(qt.scheme() == QuantScheme::int4_grouped(l.g, false, DType::f16));
  REQUIRE(qt.shape() == Shape{l.n, l.k});
  const Tensor<float> back = dequantize(qt);
  std::int64_t mismatches = 0;
  for (std::int64_t n = 0; n < l.n; ++n)
    for (std::int64_t k = 0; k < l.k; ++k) {
      const std::int64_t grp = k / l.g;
      const int z = l.zv(n, grp) + zero_offset;
      const float expected = static_cast<float>(l.qv(n, k) - z) * static_cast<float>(l.sv(n, grp));
      const bool ok = qt.value(n, k) == l.qv(n, k) && qt.zero(n, grp) == z && qt.scale(n, grp) == static_cast<float>(l.sv(n, grp)) &&
                      std::memcmp(&back(n, k), &expected, 4) == 0;
      if (!ok && mismatches++ < 5)
        CHECK_MESSAGE(false, "weight (", n, ", ", k, "): value ", qt.value(n, k), " vs ", l.qv(n, k), ", zero ", qt.zero(n, grp), " vs ", z,
                      ", dequantized ", back(n, k), " vs ", expected);
    }
  CHECK(mismatches == 0);
}

}  // namespace

TEST_CASE("GPTQ v1 and v2: every weight is (q - z) * s with z = stored + 1 (v1) or stored (v2)") {
  for (int g : {32, 64, 128}) {
    INFO("G = ", g);
    IntLayer l = random_layer(24, 256, g, static_cast<std::uint32_t>(g));
    Packed p = pack_gptq(l);
    auto v1 = import_gptq(p.qweight.view(), p.qzeros.view(), p.scales.view(), g);
    REQUIRE(v1.ok());
    check_layer(*v1, l, 1);
    CHECK(v1->zero(0, 0) == 16);  // stored 15: the uint8 zero point holds 16
    CHECK(v1->zero(0, 1) == 1);
    auto v2 = import_gptq(p.qweight.view(), p.qzeros.view(), p.scales.view(), g, GptqFormat::v2);
    REQUIRE(v2.ok());
    check_layer(*v2, l, 0);
  }
}

TEST_CASE("GPTQ: hand-packed words, negative int32 included") {
  // qweight[0][0] = 0x76543210: k = 0..7 of out feature 0 are 0..7; 0xFEDCBA98 (negative as
  // int32): k = 0..7 of out feature 1 are 8..15.
  Tensor<std::int32_t> qweight({32 / 8, 8});
  qweight(0, 0) = 0x76543210;
  qweight(0, 1) = as_int32(0xFEDCBA98u);
  Tensor<std::int32_t> qzeros({1, 1});
  qzeros(0, 0) = as_int32(0xF0000007u);  // out feature 0: stored 7 (z = 8 in v1); out feature 7: stored 15
  Tensor<f16> scales = Tensor<f16>::full({1, 8}, f16(0.5f));
  auto q = import_gptq(qweight.view(), qzeros.view(), scales.view(), 32);
  REQUIRE(q.ok());
  for (int k = 0; k < 8; ++k) {
    CHECK(q->value(0, k) == k);
    CHECK(q->value(1, k) == 8 + k);
    CHECK(q->dequantized(0, k) == static_cast<float>(k - 8) * 0.5f);
  }
  CHECK(q->value(0, 8) == 0);
  CHECK(q->zero(0, 0) == 8);
  CHECK(q->zero(7, 0) == 16);
  CHECK(q->zero(3, 0) == 1);  // stored 0
}

TEST_CASE("GPTQ g_idx: the trivial k / G is accepted, act-order is refused") {
  IntLayer l = random_layer(16, 128, 32, 9);
  Packed p = pack_gptq(l);
  Tensor<std::int32_t> g_idx({128});
  for (int k = 0; k < 128; ++k) g_idx(k) = k / 32;
  auto with = import_gptq(p.qweight.view(), p.qzeros.view(), p.scales.view(), 32, GptqFormat::v1, g_idx.view());
  REQUIRE(with.ok());
  check_layer(*with, l, 1);

  std::swap(g_idx(5), g_idx(40));  // as desc_act would permute
  auto act = import_gptq(p.qweight.view(), p.qzeros.view(), p.scales.view(), 32, GptqFormat::v1, g_idx.view());
  CHECK(act.status().code() == errc::unsupported);
  CHECK(contains(error_of(act.status()), "g_idx[5] = 1, not 0 = k / G: an act-order (desc_act) checkpoint"));

  Tensor<std::int32_t> short_idx({64});
  CHECK(contains(error_of(import_gptq(p.qweight.view(), p.qzeros.view(), p.scales.view(), 32, GptqFormat::v1, short_idx.view()).status()),
                 "g_idx has shape [64]; [K] = [128] expected"));
  Tensor<std::int32_t> idx2({2, 64});
  CHECK(contains(error_of(import_gptq(p.qweight.view(), p.qzeros.view(), p.scales.view(), 32, GptqFormat::v1, idx2.view()).status()),
                 "g_idx must have rank 1"));
}

TEST_CASE("AWQ: interleaved order [0, 2, 4, 6, 1, 3, 5, 7]; every weight is (q - z) * s") {
  for (int g : {32, 64, 128}) {
    INFO("G = ", g);
    IntLayer l = random_layer(32, 384, g, 100u + static_cast<std::uint32_t>(g));
    Packed p = pack_awq(l);
    auto q = import_awq(p.qweight.view(), p.qzeros.view(), p.scales.view(), g);
    REQUIRE(q.ok());
    check_layer(*q, l, 0);
  }
  // One word by hand: nibble p holds p, so out features 0..7 read 0, 4, 1, 5, 2, 6, 3, 7.
  Tensor<std::int32_t> qweight({32, 1});
  qweight(0, 0) = 0x76543210;
  Tensor<std::int32_t> qzeros({1, 1});
  qzeros(0, 0) = 0x76543210;
  Tensor<f16> scales = Tensor<f16>::full({1, 8}, f16(1.f));
  auto q = import_awq(qweight.view(), qzeros.view(), scales.view(), 32);
  REQUIRE(q.ok());
  const int expected[8] = {0, 4, 1, 5, 2, 6, 3, 7};
  for (int n = 0; n < 8; ++n) {
    CHECK(q->value(n, 0) == expected[n]);
    CHECK(q->zero(n, 0) == expected[n]);
    CHECK(q->dequantized(n, 0) == 0.f);
    CHECK(q->dequantized(n, 1) == static_cast<float>(-expected[n]));
  }
}

TEST_CASE("strided inputs import like contiguous ones") {
  IntLayer l = random_layer(16, 64, 32, 11);
  Packed p = pack_gptq(l);
  // The same qweight held transposed in memory, viewed back through .t().
  Tensor<std::int32_t> qt = Tensor<std::int32_t>::uninitialized({p.qweight.dim(1), p.qweight.dim(0)});
  qt.view().copy_from(p.qweight.view().t());
  Tensor<f16> st = Tensor<f16>::uninitialized({p.scales.dim(1), p.scales.dim(0)});
  st.view().copy_from(p.scales.view().t());
  auto q = import_gptq(qt.view().t(), p.qzeros.view(), st.view().t(), 32);
  REQUIRE(q.ok());
  check_layer(*q, l, 1);

  Packed a = pack_awq(l);
  Tensor<std::int32_t> at = Tensor<std::int32_t>::uninitialized({a.qweight.dim(1), a.qweight.dim(0)});
  at.view().copy_from(a.qweight.view().t());
  auto qa = import_awq(at.view().t(), a.qzeros.view(), a.scales.view(), 32);
  REQUIRE(qa.ok());
  check_layer(*qa, l, 0);
}

TEST_CASE("bad input: shapes named, group size and K checked, never a crash") {
  IntLayer l = random_layer(16, 128, 32, 12);
  Packed p = pack_gptq(l);
  Packed a = pack_awq(l);
  auto gptq_error = [&](TensorView<const std::int32_t> qw, TensorView<const std::int32_t> qz, TensorView<const f16> sc, int g) {
    return error_of(import_gptq(qw, qz, sc, g).status());
  };
  auto awq_error = [&](TensorView<const std::int32_t> qw, TensorView<const std::int32_t> qz, TensorView<const f16> sc, int g) {
    return error_of(import_awq(qw, qz, sc, g).status());
  };

  // Group size.
  for (int g : {16, 256, 0}) {
    CHECK(contains(gptq_error(p.qweight, p.qzeros, p.scales, g), fmt::format("import_gptq: group_size must be 32, 64 or 128, not {}", g)));
    CHECK(contains(awq_error(a.qweight, a.qzeros, a.scales, g), fmt::format("import_awq: group_size must be 32, 64 or 128, not {}", g)));
  }
  CHECK(contains(gptq_error(p.qweight, p.qzeros, p.scales, -1), "one group for all of K is not supported"));

  // K not a multiple of G: GPTQ K = 8 * 5 = 40, AWQ K = 40.
  Tensor<std::int32_t> qw5({5, 16}), qz1({1, 2}), aw40({40, 2});
  Tensor<f16> sc1({1, 16});
  CHECK(contains(gptq_error(qw5, qz1, sc1, 32), "import_gptq: K = 40 in features is not a multiple of group_size 32"));
  CHECK(contains(awq_error(aw40, qz1, sc1, 32), "import_awq: K = 40 in features is not a multiple of group_size 32"));

  // Shapes that disagree, each named with what was expected.
  Tensor<f16> sc_bad({4, 8});
  CHECK(contains(gptq_error(p.qweight, p.qzeros, sc_bad, 32), "scales has shape [4, 8]; [K / G, N] = [4, 16] expected"));
  CHECK(contains(gptq_error(p.qweight, p.qzeros, sc_bad, 32), "K = 8 * qweight rows = 128, N = qweight columns = 16"));
  Tensor<std::int32_t> qz_bad({4, 3});
  CHECK(contains(gptq_error(p.qweight, qz_bad, p.scales, 32), "qzeros has shape [4, 3]; [K / G, N / 8] = [4, 2] expected"));
  CHECK(contains(gptq_error(p.qweight, p.qzeros, p.scales, 64), "scales has shape [4, 16]; [K / G, N] = [2, 16] expected"));
  Tensor<std::int32_t> qw_n12({16, 12});
  Tensor<f16> sc_n12({4, 12});
  CHECK(contains(gptq_error(qw_n12, qz1, sc_n12, 32), "N = 12 out features"));
  CHECK(contains(awq_error(a.qweight, a.qzeros, sc_bad, 32), "scales has shape [4, 8]; [K / G, N] = [4, 16] expected"));
  CHECK(contains(awq_error(a.qweight, a.qzeros, sc_bad, 32), "K = qweight rows = 128, N = 8 * qweight columns = 16"));
  CHECK(contains(awq_error(a.qweight, qz_bad, a.scales, 32), "qzeros has shape [4, 3]; [K / G, N / 8] = [4, 2] expected"));
  // GPTQ tensors handed to the AWQ importer (and back) are caught by the shapes.
  CHECK(!import_awq(p.qweight, p.qzeros, p.scales, 32).ok());
  CHECK(!import_gptq(a.qweight, a.qzeros, a.scales, 32).ok());

  // Ranks.
  Tensor<std::int32_t> flat({128});
  CHECK(contains(gptq_error(flat, p.qzeros, p.scales, 32), "qweight must have rank 2; its shape is [128]"));
  CHECK(contains(awq_error(a.qweight, flat, a.scales, 32), "qzeros must have rank 2; its shape is [128]"));
  Tensor<f16> sc3({1, 4, 16});
  CHECK(contains(gptq_error(p.qweight, p.qzeros, sc3, 32), "scales must have rank 2"));

  // A scale that is not finite.
  p.scales(2, 5) = f16(std::numeric_limits<float>::infinity());
  CHECK(contains(gptq_error(p.qweight, p.qzeros, p.scales, 32), "scales[2, 5] (group 2 of out feature 5) is inf"));
  a.scales(0, 1) = f16(std::numeric_limits<float>::quiet_NaN());
  CHECK(contains(awq_error(a.qweight, a.qzeros, a.scales, 32), "scales[0, 1] (group 0 of out feature 1) is nan"));

  // Empty layers are fine.
  Tensor<std::int32_t> qw0({0, 8}), qz0({0, 1});
  Tensor<f16> sc0({0, 8});
  auto e = import_gptq(qw0, qz0, sc0, 32);
  REQUIRE(e.ok());
  CHECK(e->shape() == Shape{8, 0});
}
