// Conformance of the index kernels: fast-scan sums and candidate masks, and fast-scan tables and
// their quantization, of every ISA equal the scalar reference's bit for bit; the float products
// (coarse q.c, codeword products) are within float summation error of it.
#include "conformance/harness.hpp"

#include <quarry/index/detail/index_kernels.hpp>

using namespace quarry;
using namespace quarry::testing;
using detail::FastScanArgs;
using detail::FastScanLutArgs;
using detail::IndexKernels;

TEST_CASE("conformance: fastscan sums and masks are exact on every ISA") {
  for_each_simd_table<IndexKernels>([&](Isa isa, const IndexKernels& kt, const IndexKernels& ref) {
    std::mt19937 rng(3);
    std::size_t cases = 0;
    for (std::size_t m_pad = 2; m_pad <= 64; m_pad += 2) {
      for (std::size_t nblocks : {0u, 1u, 2u, 5u}) {
        const std::size_t off = kMisalignments[(m_pad / 2 + nblocks) % 3];
        const int mode = static_cast<int>((m_pad + nblocks) % 3);  // 0 random, 1 all 255 (largest sums), 2 small
        std::vector<std::uint8_t> codes(nblocks * m_pad * 16 + off), lut(m_pad * 16 + off);
        for (auto& c : codes) c = static_cast<std::uint8_t>(rng());
        for (auto& v : lut) v = static_cast<std::uint8_t>(mode == 1 ? 255 : (mode == 2 ? rng() % 4 : rng()));
        for (std::uint32_t threshold : {0u, 1u, 100u, 2000u, 65535u}) {
          std::vector<std::uint16_t> og(nblocks * 32 + 1, 7), orf(nblocks * 32 + 1, 7);
          std::vector<std::uint32_t> mg(nblocks + 1, 5), mr(nblocks + 1, 5);
          auto args = [&](std::uint16_t* out, std::uint32_t* mask) {
            FastScanArgs g;
            g.codes = codes.data() + off;
            g.nblocks = nblocks;
            g.m_pad = m_pad;
            g.lut = lut.data() + off;
            g.out = out;
            g.mask = mask;
            g.threshold = static_cast<std::uint16_t>(threshold);
            return g;
          };
          kt.fastscan(args(og.data(), mg.data()));
          ref.fastscan(args(orf.data(), mr.data()));
          INFO("m_pad=" << m_pad << " nblocks=" << nblocks << " mode=" << mode << " threshold=" << threshold);
          REQUIRE(og == orf);
          REQUIRE(mg == mr);
          // and the masks alone, without sums
          std::vector<std::uint32_t> only(nblocks + 1, 5);
          kt.fastscan(args(nullptr, only.data()));
          REQUIRE(only == mr);
          ++cases;
        }
      }
    }
    // the reference against a plain sum, on the largest sums (m_pad 256: 256 * 255 = 65280)
    std::vector<std::uint8_t> codes(256 * 16), lut(256 * 16, 255);
    for (auto& c : codes) c = static_cast<std::uint8_t>(rng());
    std::vector<std::uint16_t> out(32);
    FastScanArgs g;
    g.codes = codes.data();
    g.nblocks = 1;
    g.m_pad = 256;
    g.lut = lut.data();
    g.out = out.data();
    kt.fastscan(g);
    for (std::uint16_t v : out) REQUIRE(v == 65280);
    MESSAGE(isa_name(isa) << ": " << cases << " fast-scan cases checked");

    // perf: 100k vectors, M = 16
    const std::size_t nb = 100000 / 32;
    std::vector<std::uint8_t> big(nb * 16 * 16);
    for (auto& c : big) c = static_cast<std::uint8_t>(rng());
    std::vector<std::uint16_t> sums(nb * 32);
    std::vector<std::uint32_t> masks(nb);
    FastScanArgs p;
    p.codes = big.data();
    p.nblocks = nb;
    p.m_pad = 16;
    p.lut = lut.data();
    p.out = sums.data();
    p.mask = masks.data();
    p.threshold = 1000;
    report_perf("fastscan_m16", isa, static_cast<double>(big.size()), [&] { kt.fastscan(p); });
  });
}

TEST_CASE("conformance: fastscan tables and their quantization are exact on every ISA") {
  for_each_simd_table<IndexKernels>([&](Isa isa, const IndexKernels& kt, const IndexKernels& ref) {
    std::mt19937 rng(5);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::size_t cases = 0;
    for (std::size_t m : {1u, 2u, 3u, 7u, 8u, 16u, 31u, 32u, 33u, 64u, 256u}) {
      // 0 random, 1 constant rows (range 0), 2 integers 0..510 (scale 0.5: ties at every odd value),
      // 3 large magnitudes with small ranges (as l2 terms far from the origin)
      for (int mode = 0; mode < 4; ++mode) {
        for (const float alpha : {1.f, -1.f, -2.f}) {
          for (const bool with_a : {false, true}) {
            const std::size_t off = kMisalignments[(m + static_cast<std::size_t>(mode)) % 3], n = m * 16, m_pad = (m + 1) / 2 * 2;
            std::vector<float> a(n + off), b(n + off);
            for (std::size_t i = 0; i < n + off; ++i) {
              switch (mode) {
                case 0: a[i] = nd(rng) * 10.f; b[i] = nd(rng) * nd(rng); break;
                case 1: a[i] = 3.f; b[i] = static_cast<float>(i / 16 % 5); break;
                case 2: a[i] = 0.f; b[i] = static_cast<float>(rng() % 511); break;
                default: a[i] = 1e5f + nd(rng); b[i] = 3e4f + nd(rng) * 0.01f; break;
              }
            }
            if (mode == 1) std::fill(b.begin(), b.end(), 1.25f);
            if (mode == 2) b[off] = 0.f, b[off + 1] = 510.f;  // row 0 spans 0..510
            auto run = [&](const IndexKernels& k, std::vector<float>& table, std::vector<std::uint8_t>& lut, std::vector<float>& mins,
                           float& scale, bool write_table) {
              table.assign(n + 1, -7.f);
              lut.assign(m_pad * 16 + 1, 77);
              mins.assign(m + 1, -7.f);
              scale = -7.f;
              FastScanLutArgs g;
              g.a = with_a ? a.data() + off : nullptr;
              g.b = b.data() + off;
              g.alpha = alpha;
              g.m = m;
              g.table = write_table ? table.data() : nullptr;
              g.lut = lut.data();
              g.row_min = mins.data();
              g.scale = &scale;
              k.fastscan_lut(g);
            };
            std::vector<float> tg, tr, mg, mr;
            std::vector<std::uint8_t> lg, lr;
            float sg = 0.f, sr = 0.f;
            run(kt, tg, lg, mg, sg, true);
            run(ref, tr, lr, mr, sr, true);
            INFO("m=" << m << " mode=" << mode << " alpha=" << alpha << " a=" << with_a);
            REQUIRE(tg == tr);
            REQUIRE(lg == lr);
            REQUIRE(mg == mr);
            REQUIRE(sg == sr);
            REQUIRE(lg[m_pad * 16] == 77);  // nothing past the table
            for (std::size_t i = m * 16; i < m_pad * 16; ++i) REQUIRE(lg[i] == 0);
            // without the float table: the same quantization, and the table untouched
            run(kt, tg, lg, mg, sg, false);
            REQUIRE(lg == lr);
            REQUIRE(tg == std::vector<float>(n + 1, -7.f));
            // the reference against its definition
            for (std::size_t j = 0; j < m; ++j)
              for (std::size_t c = 0; c < 16; ++c) {
                const std::size_t i = j * 16 + c;
                const float t = with_a ? a[off + i] + alpha * b[off + i] : alpha * b[off + i];
                REQUIRE(tr[i] == t);
                const float x = (t - mr[j]) * sr;
                REQUIRE(std::fabs(static_cast<float>(lr[i]) - std::min(x, 255.f)) <= 0.5f);
                if (mode == 2 && alpha == 1.f) {  // x = v / 2 exactly: odd v is a tie, which goes to the even neighbour
                  const int v = static_cast<int>(t - mr[j]);
                  REQUIRE(static_cast<int>(lr[i]) == (v % 4 == 1 ? (v - 1) / 2 : (v + 1) / 2));
                }
              }
            ++cases;
          }
        }
      }
    }
    MESSAGE(isa_name(isa) << ": " << cases << " fast-scan table cases checked");
  });
}

TEST_CASE("conformance: inner products and codeword products within float summation error") {
  for_each_simd_table<IndexKernels>([&](Isa isa, const IndexKernels& kt, const IndexKernels& ref) {
    std::mt19937 rng(11);
    std::normal_distribution<float> nd(0.f, 1.f);
    constexpr double eps = 1.0 / (1 << 23);
    for (std::size_t nx : {1u, 3u, 4u, 9u}) {
      for (std::size_t n : {1u, 3u, 4u, 5u, 8u, 64u, 67u}) {
        for (std::size_t d : {1u, 7u, 16u, 33u, 128u}) {
          const std::size_t ld = d + n % 3, ldx = d + nx % 2, off = kMisalignments[(n + d) % 3];
          std::vector<float> rows(n * ld + off), x(nx * ldx + off), got(nx * n + 1, -7.f), want(nx * n + 1, -7.f);
          for (auto& v : rows) v = nd(rng);
          for (auto& v : x) v = nd(rng);
          kt.inner_products(rows.data() + off, n, d, ld, x.data() + off, nx, ldx, got.data());
          ref.inner_products(rows.data() + off, n, d, ld, x.data() + off, nx, ldx, want.data());
          INFO("nx=" << nx << " n=" << n << " d=" << d);
          CHECK(got[nx * n] == -7.f);
          for (std::size_t q = 0; q < nx; ++q)
            for (std::size_t i = 0; i < n; ++i) {
              double abs_sum = 0;
              for (std::size_t t = 0; t < d; ++t) abs_sum += std::fabs(double(rows[off + i * ld + t]) * x[off + q * ldx + t]);
              CHECK(std::fabs(double(got[q * n + i]) - want[q * n + i]) <= 2 * (d + 1) * eps * abs_sum + 1e-30);
            }
        }
      }
    }
    for (std::size_t m : {1u, 4u, 32u}) {
      for (std::size_t dsub : {1u, 2u, 4u, 8u}) {
        for (std::size_t ksub : {16u, 256u}) {
          const std::size_t off = kMisalignments[(m + dsub) % 3];
          std::vector<float> x(m * dsub + off), ct(m * dsub * ksub + off), got(m * ksub + 1, -7.f), want(m * ksub + 1, -7.f);
          for (auto& v : x) v = nd(rng);
          for (auto& v : ct) v = nd(rng);
          kt.codeword_products(x.data() + off, ct.data() + off, m, dsub, ksub, got.data());
          ref.codeword_products(x.data() + off, ct.data() + off, m, dsub, ksub, want.data());
          INFO("m=" << m << " dsub=" << dsub << " ksub=" << ksub);
          CHECK(got[m * ksub] == -7.f);
          for (std::size_t j = 0; j < m; ++j)
            for (std::size_t c = 0; c < ksub; ++c) {
              double abs_sum = 0;
              for (std::size_t t = 0; t < dsub; ++t) abs_sum += std::fabs(double(x[off + j * dsub + t]) * ct[off + (j * dsub + t) * ksub + c]);
              CHECK(std::fabs(double(got[j * ksub + c]) - want[j * ksub + c]) <= 2 * (dsub + 1) * eps * abs_sum + 1e-30);
            }
        }
      }
    }
    // perf: the coarse quantizer of IVF512 on 128-d vectors
    std::vector<float> cents(512 * 128), q(8 * 128), out(8 * 512);
    for (auto& v : cents) v = nd(rng);
    for (auto& v : q) v = nd(rng);
    report_perf("inner_products_512x128x8", isa, 4.0 * cents.size(), [&] { kt.inner_products(cents.data(), 512, 128, 128, q.data(), 8, 128, out.data()); });
  });
}

TEST_CASE("conformance: fastscan tables with infinite entries quantize alike on every ISA") {
  // A huge codebook or query (a hostile index: found by fuzz_ivf_pq_load) makes t = a + alpha * b
  // +-inf, or a row's range so small that 255 / range is inf; (t - min) * scale is then NaN or
  // inf, which the SIMD kernels' conversion and packs turn into 0. The reference must give the
  // same bytes, not convert NaN or inf to an integer (undefined behaviour).
  for_each_simd_table<IndexKernels>([&](Isa, const IndexKernels& kt, const IndexKernels& ref) {
    const float inf = std::numeric_limits<float>::infinity();
    for (int mode = 0; mode < 4; ++mode) {
      for (std::size_t m : {1u, 3u, 16u}) {
        const std::size_t n = m * 16, m_pad = (m + 1) / 2 * 2;
        std::vector<float> a(n), b(n);
        for (std::size_t i = 0; i < n; ++i) {
          a[i] = static_cast<float>(i % 7);
          b[i] = static_cast<float>(i % 5) - 2.f;
        }
        switch (mode) {
          case 0: a[n / 2] = inf; break;  // |r|^2 overflowed
          case 1: b[1] = 3e38f; break;    // -2 * 3e38 = -inf
          case 2: a[0] = inf; a[5] = -inf; break;
          default:  // a range of 2 denormal_min: 255 / range = inf
            std::fill(a.begin(), a.end(), 0.f);
            std::fill(b.begin(), b.end(), 0.f);
            b[3] = -std::numeric_limits<float>::denorm_min();
            break;
        }
        auto run = [&](const IndexKernels& k, std::vector<std::uint8_t>& lut, std::vector<float>& mins, float& scale) {
          lut.assign(m_pad * 16, 77);
          mins.assign(m, 0.f);
          FastScanLutArgs g;
          g.a = a.data();
          g.b = b.data();
          g.alpha = -2.f;
          g.m = m;
          g.table = nullptr;
          g.lut = lut.data();
          g.row_min = mins.data();
          g.scale = &scale;
          k.fastscan_lut(g);
        };
        std::vector<std::uint8_t> lg, lr;
        std::vector<float> mg, mr;
        float sg = 0.f, sr = 0.f;
        run(kt, lg, mg, sg);
        run(ref, lr, mr, sr);
        INFO("mode=" << mode << " m=" << m);
        CHECK(mg == mr);
        CHECK(sg == sr);
        REQUIRE(lg == lr);
      }
    }
  });
}
