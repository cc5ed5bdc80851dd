// Conformance of the kv kernels: one decode-attention chunk (scores, softmax numerators, the
// weighted sum of V) of every ISA against the scalar reference, for every K/V element type, on
// page sizes and token ranges that start and end mid-page, GQA groups, head dims that are and
// are not multiples of the SIMD width, and INT4 group sizes that do and do not fill a register;
// and that the hint of a following chunk (DecodeChunkArgs::then) leaves the results as they are.
#include "conformance/harness.hpp"

#include <algorithm>
#include <cstring>

#include <quarry/core/float16.hpp>
#include <quarry/kv/detail/kv_kernels.hpp>

using namespace quarry;
using namespace quarry::testing;
using detail::DecodeChunkArgs;
using detail::KvElem;
using detail::KvKernels;

namespace {

const char* elem_name(KvElem e) {
  switch (e) {
    case KvElem::f32: return "f32";
    case KvElem::f16: return "f16";
    case KvElem::bf16: return "bf16";
    case KvElem::i8: return "i8";
    case KvElem::i4: return "i4";
  }
  return "?";
}

// Random pages of one element type: raw bytes for `rows` rows of `dim`, and scales.
struct RawPages {
  std::vector<std::uint8_t> bytes;
  std::vector<float> scales;
};

RawPages random_pages(KvElem elem, std::int64_t rows, std::int64_t dim, std::int64_t groups, std::mt19937& rng) {
  RawPages p;
  const std::vector<float> x = random_normal(static_cast<std::size_t>(rows * dim), static_cast<std::uint32_t>(rng()));
  std::uniform_real_distribution<float> unit(0.01f, 0.5f);
  switch (elem) {
    case KvElem::f32:
      p.bytes.resize(x.size() * 4);
      std::memcpy(p.bytes.data(), x.data(), p.bytes.size());
      break;
    case KvElem::f16:
    case KvElem::bf16: {
      std::vector<std::uint16_t> h(x.size());
      for (std::size_t i = 0; i < x.size(); ++i)
        h[i] = elem == KvElem::f16 ? f16(x[i]).bits : bf16(x[i]).bits;
      p.bytes.resize(h.size() * 2);
      std::memcpy(p.bytes.data(), h.data(), p.bytes.size());
      break;
    }
    case KvElem::i8:
      p.bytes.resize(x.size());
      for (auto& b : p.bytes) b = static_cast<std::uint8_t>(rng());
      p.scales.resize(static_cast<std::size_t>(rows));
      for (auto& s : p.scales) s = unit(rng) / 64.f;
      break;
    case KvElem::i4:
      p.bytes.resize(x.size() / 2);
      for (auto& b : p.bytes) b = static_cast<std::uint8_t>(rng());
      p.scales.resize(static_cast<std::size_t>(rows * groups));
      for (auto& s : p.scales) s = unit(rng) / 4.f;
      break;
  }
  return p;
}

}  // namespace

TEST_CASE("conformance: decode_chunk within float rounding of the reference, every element type") {
  for_each_simd_table<KvKernels>([&](Isa isa, const KvKernels& kt, const KvKernels& ref) {
    std::mt19937 rng(11);
    std::size_t cases = 0;
    for (const KvElem elem : {KvElem::f32, KvElem::f16, KvElem::bf16, KvElem::i8, KvElem::i4}) {
      for (const std::int64_t dim : {2, 6, 16, 40, 64, 72, 96, 128, 160, 256}) {  // 96, 160: the VNNI values' last block is short
        for (const std::int64_t page_size : {1, 5, 16, 33}) {
          for (const std::int64_t group : {1, 2, 3, 4, 8}) {
            std::int64_t groups = 1;
            if (elem == KvElem::i4) {
              // group sizes 2 .. dim: 8 (less than a register), 16, 32, dim
              const std::int64_t sizes[] = {2, 8, 16, 32, dim};
              const std::int64_t gs = sizes[static_cast<std::size_t>(cases + cases / 5) % 5];  // every size meets every group
              groups = dim % gs == 0 ? dim / gs : 1;
            }
            const std::int64_t n_kv = 2, kv_head = static_cast<std::int64_t>(rng() % 2);
            const std::int64_t tokens = 1 + static_cast<std::int64_t>(rng() % 120);
            const std::int64_t t0 = static_cast<std::int64_t>(rng() % 40), t1 = t0 + tokens;
            const std::int64_t num_pages = (t1 + page_size - 1) / page_size + 2;
            std::vector<std::int32_t> pages(static_cast<std::size_t>(num_pages));
            for (std::size_t i = 0; i < pages.size(); ++i) pages[i] = static_cast<std::int32_t>(i);
            std::shuffle(pages.begin(), pages.end(), rng);
            const std::int64_t rows = num_pages * n_kv * page_size;
            const RawPages k = random_pages(elem, rows, dim, groups, rng), v = random_pages(elem, rows, dim, groups, rng);
            const std::int64_t kv_heads = kv_head == 0 && cases % 2 == 1 ? 2 : 1;  // both heads of a page in one call
            const std::int64_t heads = kv_heads * group;
            const std::vector<float> q = random_normal(static_cast<std::size_t>(heads * dim), static_cast<std::uint32_t>(rng()));
            // then: with a hint of a following chunk (DecodeChunkArgs::then), which must not
            // change the results.
            auto run = [&](const KvKernels& table, bool then = false) {
              std::vector<float> scratch(detail::decode_chunk_scratch(heads, tokens, dim), std::nanf(""));
              std::vector<float> out(static_cast<std::size_t>(heads * (dim + 2)), std::nanf(""));
              DecodeChunkArgs a;
              a.elem = elem;
              a.k = {k.bytes.data(), k.scales.data()};
              a.v = {v.bytes.data(), v.scales.data()};
              a.n_kv = n_kv;
              a.page_size = page_size;
              a.dim = dim;
              a.groups = groups;
              a.pages = pages.data();
              a.kv_head = kv_head;
              a.kv_heads = kv_heads;
              a.t0 = t0;
              a.t1 = t1;
              a.q = q.data();
              a.group = group;
              a.scale = 0.125f;
              a.scratch = scratch.data();
              a.out = out.data();
              DecodeChunkArgs next = a;  // the sequence's tokens from 0, the same heads
              next.t0 = 0;
              if (then) a.then = &next;
              table.decode_chunk(a);
              return out;
            };
            const std::vector<float> got = run(kt), want = run(ref);
            const std::vector<float> hinted = run(kt, true);
            REQUIRE(std::memcmp(hinted.data(), got.data(), got.size() * sizeof(float)) == 0);
            INFO("elem=" << std::string(elem_name(elem)) << " dim=" << dim << " page_size=" << page_size << " group=" << group << " kv_heads=" << kv_heads
                         << " groups=" << groups << " t0=" << t0 << " t1=" << t1);
            for (std::int64_t g = 0; g < heads; ++g) {
              const float* o = got.data() + g * (dim + 2);
              const float* r = want.data() + g * (dim + 2);
              REQUIRE(std::fabs(o[0] - r[0]) <= 1e-5f * (1.f + std::fabs(r[0])));                // max score
              REQUIRE(std::fabs(o[1] - r[1]) <= 1e-5f * static_cast<float>(tokens) * (1.f + r[1]));  // sum of exps
              float worst = 0.f, mag = 1.f;
              for (std::int64_t i = 0; i < dim; ++i) {
                worst = std::max(worst, std::fabs(o[2 + i] - r[2 + i]));
                mag = std::max(mag, std::fabs(r[2 + i]));
              }
              // INT8: a weight can round to the other 8-bit neighbour when exp differs in its last
              // bit across ISAs, which moves the output by one step (1/255 of the run's largest
              // weight, p * V's scale <= the scale) times an int8 value; allow one such step.
              // INT4 the same, per group: one step of the group's weights times a value up to 8.
              const float top = elem == KvElem::i8 ? 127.f : elem == KvElem::i4 ? 8.f : 0.f;
              const float flip = top > 0.f ? top * *std::max_element(v.scales.begin(), v.scales.end()) / 255.f : 0.f;
              REQUIRE(worst <= 1e-5f * static_cast<float>(tokens) * mag + flip);
            }
            ++cases;
          }
        }
      }
    }
    MESSAGE(isa_name(isa) << ": " << cases << " decode chunks checked");
    (void)isa;
  });
}

TEST_CASE("conformance: tile_gemm within FMA rounding of the reference, every shape tail") {
  for_each_simd_table<KvKernels>([&](Isa isa, const KvKernels& kt, const KvKernels& ref) {
    std::mt19937 rng(5);
    std::size_t cases = 0;
    for (const std::int64_t m : {1, 3, 4, 5, 8, 13}) {
      for (const std::int64_t n : {1, 7, 8, 16, 33, 64, 100, 128}) {
        for (const std::int64_t k : {0, 1, 8, 17, 64}) {
          for (const bool accumulate : {false, true}) {
            const std::int64_t lda = k + 3, ldb = n + 5, ldc = n + 2;
            const std::vector<float> a = random_normal(static_cast<std::size_t>(m * lda), static_cast<std::uint32_t>(rng()));
            const std::vector<float> b = random_normal(static_cast<std::size_t>(std::max<std::int64_t>(k, 1) * ldb), static_cast<std::uint32_t>(rng()));
            const std::vector<float> c0 = random_normal(static_cast<std::size_t>(m * ldc), static_cast<std::uint32_t>(rng()));
            auto run = [&](const KvKernels& table) {
              std::vector<float> c = c0;
              detail::TileGemmArgs g;
              g.m = m;
              g.n = n;
              g.k = k;
              g.a = a.data();
              g.lda = lda;
              g.b = b.data();
              g.ldb = ldb;
              g.c = c.data();
              g.ldc = ldc;
              g.accumulate = accumulate;
              table.tile_gemm(g);
              return c;
            };
            const std::vector<float> got = run(kt), want = run(ref);
            INFO("m=" << m << " n=" << n << " k=" << k << " accumulate=" << accumulate);
            for (std::int64_t i = 0; i < m; ++i)
              for (std::int64_t j = 0; j < ldc; ++j) {
                const std::size_t e = static_cast<std::size_t>(i * ldc + j);
                if (j >= n) {
                  REQUIRE(got[e] == c0[e]);  // padding untouched
                  continue;
                }
                double mag = accumulate ? std::fabs(c0[e]) : 0.0;
                for (std::int64_t t = 0; t < k; ++t)
                  mag += std::fabs(static_cast<double>(a[static_cast<std::size_t>(i * lda + t)]) * b[static_cast<std::size_t>(t * ldb + j)]);
                REQUIRE(std::fabs(got[e] - want[e]) <= 2e-7 * static_cast<double>(k + 1) * (mag + 1e-30));
              }
            ++cases;
          }
        }
      }
    }
    MESSAGE(isa_name(isa) << ": " << cases << " tile products checked");
  });
}

TEST_CASE("conformance: tile_softmax within exp rounding of the reference, masks and tails") {
  for_each_simd_table<KvKernels>([&](Isa isa, const KvKernels& kt, const KvKernels& ref) {
    std::mt19937 rng(9);
    std::size_t cases = 0;
    for (const std::int64_t group : {1, 3, 4}) {
      for (const std::int64_t rows : {1, 5}) {
        for (const std::int64_t n : {1, 7, 16, 33, 64}) {
          for (const std::int64_t dim : {8, 40, 128}) {
            for (const int mask : {0, 1}) {  // 1: per-row visible ranges, some empty
              const std::int64_t m = rows * group, lds = n + 3, ld_acc = dim + 5;
              std::vector<float> s0 = random_normal(static_cast<std::size_t>(m * lds), static_cast<std::uint32_t>(rng()));
              for (float& x : s0) x *= 4.f;
              const std::vector<float> acc0 = random_normal(static_cast<std::size_t>(m * ld_acc), static_cast<std::uint32_t>(rng()));
              std::vector<float> max0(static_cast<std::size_t>(m)), sum0(static_cast<std::size_t>(m));
              for (std::int64_t r = 0; r < m; ++r) {  // a first tile (max -inf, sum 0), or one after others
                const bool first = r % 2 == 0;
                max0[static_cast<std::size_t>(r)] = first ? -std::numeric_limits<float>::infinity() : 1.5f;
                sum0[static_cast<std::size_t>(r)] = first ? 0.f : 3.f;
              }
              std::vector<std::int64_t> lo(static_cast<std::size_t>(rows)), hi(static_cast<std::size_t>(rows));
              for (std::int64_t i = 0; i < rows; ++i) {
                lo[static_cast<std::size_t>(i)] = std::uniform_int_distribution<std::int64_t>(0, n)(rng);
                hi[static_cast<std::size_t>(i)] = i == 0 ? lo[0] : std::uniform_int_distribution<std::int64_t>(lo[static_cast<std::size_t>(i)], n)(rng);
              }
              struct Out {
                std::vector<float> s, acc, max, sum;
              };
              auto run = [&](const KvKernels& table) {
                Out o{s0, acc0, max0, sum0};
                detail::TileSoftmaxArgs g;
                g.m = m;
                g.n = n;
                g.s = o.s.data();
                g.lds = lds;
                if (mask) {
                  g.lo = lo.data();
                  g.hi = hi.data();
                }
                g.group = group;
                g.row_max = o.max.data();
                g.row_sum = o.sum.data();
                g.acc = o.acc.data();
                g.ld_acc = ld_acc;
                g.dim = dim;
                table.tile_softmax(g);
                return o;
              };
              const Out got = run(kt), want = run(ref);
              INFO("group=" << group << " rows=" << rows << " n=" << n << " dim=" << dim << " mask=" << mask);
              auto close = [](float x, float y) { return std::fabs(x - y) <= 4e-6f * std::max(1.f, std::fabs(y)); };
              for (std::int64_t r = 0; r < m; ++r) {
                const std::size_t i = static_cast<std::size_t>(r / group);
                const std::int64_t vlo = mask ? lo[i] : 0, vhi = mask ? hi[i] : n;
                REQUIRE(got.max[static_cast<std::size_t>(r)] == want.max[static_cast<std::size_t>(r)]);
                REQUIRE(close(got.sum[static_cast<std::size_t>(r)], want.sum[static_cast<std::size_t>(r)]));
                for (std::int64_t j = 0; j < lds; ++j) {
                  const std::size_t e = static_cast<std::size_t>(r * lds + j);
                  if (j >= n) REQUIRE(got.s[e] == s0[e]);                  // padding untouched
                  else if (j < vlo || j >= vhi) REQUIRE(got.s[e] == 0.f);  // masked: 0
                  else REQUIRE(close(got.s[e], want.s[e]));
                }
                for (std::int64_t d = 0; d < ld_acc; ++d) {
                  const std::size_t e = static_cast<std::size_t>(r * ld_acc + d);
                  if (d >= dim || vlo >= vhi) REQUIRE(got.acc[e] == acc0[e]);  // padding, or a row that saw nothing
                  else REQUIRE(close(got.acc[e], want.acc[e]));
                }
                if (vlo >= vhi) {  // the state unchanged
                  REQUIRE(got.sum[static_cast<std::size_t>(r)] == sum0[static_cast<std::size_t>(r)]);
                  REQUIRE(got.max[static_cast<std::size_t>(r)] == max0[static_cast<std::size_t>(r)]);
                }
              }
              ++cases;
            }
          }
        }
      }
    }
    MESSAGE(isa_name(isa) << ": " << cases << " softmax tiles checked");
  });
}
