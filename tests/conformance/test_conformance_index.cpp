// Conformance of the index kernels: fast-scan sums and candidate masks of every ISA equal the
// scalar reference's bit for bit.
#include "conformance/harness.hpp"

#include <quarry/index/detail/index_kernels.hpp>

using namespace quarry;
using namespace quarry::testing;
using detail::FastScanArgs;
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
