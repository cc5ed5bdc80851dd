// quarry/kv/block_pool.hpp: sizing, append / write / read, fork with copy-on-write, truncate,
// release, errors; a property test of random operations against a simple model (contents,
// reference counts, free pages after every step) for every page dtype; decode attention reading
// the pool; INT8 and INT4 pages (round trip, zero and non-finite inputs, copy-on-write of the
// scales, attention error). Concurrent use: tests/kv/test_kv_threads.cpp.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <random>
#include <span>
#include <utility>
#include <vector>

#include <quarry/kv/block_pool.hpp>
#include <quarry/kv/detail/free_pages.hpp>

#include "paged_reference.hpp"
#include "test_util.hpp"

using namespace quarry;
using namespace quarry::testing;

namespace {

BlockPoolOptions small_options(DType t = DType::f32, std::int64_t pages = 12) {
  BlockPoolOptions o;
  o.num_layers = 2;
  o.n_kv_heads = 2;
  o.head_dim = 4;
  o.page_size = 4;
  o.dtype = t;
  o.int4_group = 2;  // i4: 2 scales per token and head
  o.num_pages = pages;
  return o;
}

// The K of (layer, token value): +-(layer + 1) * val, alternating by element (exact in f16 and
// bf16 for the integers 0..200 used); V is its negation.
std::vector<float> k_of(std::int64_t layer, float val) {
  std::vector<float> k(8);
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = static_cast<float>(layer + 1) * val * (i % 2 ? 1.f : -1.f);
  return k;
}
std::vector<float> neg(std::vector<float> x) {
  for (float& f : x) f = -f;
  return x;
}

void write_token(BlockPool& pool, SequenceId s, std::int64_t pos, float val) {
  for (std::int64_t l = 0; l < 2; ++l) {
    const std::vector<float> k = k_of(l, val);
    REQUIRE(pool.write(s, l, pos, k, neg(k)).ok());
  }
}

// Checks the pool against the model: contents of every token and layer, reference counts, free count.
void check_model(const BlockPool& pool, const std::map<SequenceId, std::vector<float>>& model) {
  std::vector<std::int32_t> refs(static_cast<std::size_t>(pool.num_pages()), 0);
  for (const auto& [id, vals] : model) {
    REQUIRE(pool.length(id) == static_cast<std::int64_t>(vals.size()));
    const auto pages = pool.pages(id);
    REQUIRE(static_cast<std::int64_t>(pages.size()) == (static_cast<std::int64_t>(vals.size()) + 3) / 4);
    for (const std::int32_t p : pages) ++refs[static_cast<std::size_t>(p)];
    std::vector<float> k(8), v(8);
    for (std::size_t t = 0; t < vals.size(); ++t)
      for (std::int64_t l = 0; l < 2; ++l) {
        REQUIRE(pool.read(id, l, static_cast<std::int64_t>(t), k, v).ok());
        const std::vector<float> want = k_of(l, vals[t]);
        if (pool.options().dtype == DType::i8 || pool.options().dtype == DType::i4) {
          // Every element is +-amax: +-127 * (amax / 127) (i8), +-7 * (amax / 7) (i4), within an ulp or two.
          for (std::size_t i = 0; i < 8; ++i) {
            REQUIRE(std::fabs(k[i] - want[i]) <= 1e-6f * std::fabs(want[i]));
            REQUIRE(std::fabs(v[i] + want[i]) <= 1e-6f * std::fabs(want[i]));
          }
        } else {
          REQUIRE(k == want);
          REQUIRE(v == neg(want));
        }
      }
  }
  std::int64_t used = 0;
  for (std::int32_t p = 0; p < pool.num_pages(); ++p) {
    REQUIRE(pool.ref_count(p) == refs[static_cast<std::size_t>(p)]);
    used += refs[static_cast<std::size_t>(p)] > 0;
  }
  REQUIRE(pool.free_pages() + pool.evictable_pages() == pool.num_pages() - used);
  std::int64_t cached = 0;
  for (std::int32_t p = 0; p < pool.num_pages(); ++p) cached += pool.is_cached(p);
  REQUIRE(cached == pool.prefix_stats().cached_pages);
}

}  // namespace

TEST_CASE("BlockPool: sizing from a page count or a memory budget, and bad options") {
  auto pool = BlockPool::create(small_options());
  REQUIRE(pool.ok());
  CHECK(pool->page_bytes() == 2 * 4 * 4 * 4);
  CHECK(pool->free_pages() == 12);
  BlockPoolOptions o = small_options(DType::f16, 0);
  o.memory_bytes = 10'000;  // 2 layers x K,V x 64 bytes = 256 bytes a page
  auto budget = BlockPool::create(o);
  REQUIRE(budget.ok());
  CHECK(budget->num_pages() == 39);
  o.memory_bytes = 100;
  CHECK(contains(BlockPool::create(o).status().message(), "holds no page"));
  o = small_options();
  o.page_size = 0;
  CHECK(BlockPool::create(o).status().code() == errc::invalid_argument);
  o = small_options(DType::u4);
  CHECK(contains(BlockPool::create(o).status().message(), "not supported"));
  o = small_options(DType::i4, 0);
  o.memory_bytes = 10'000;  // 2 layers x K,V x (16 bytes of values + 16 scales x 4 bytes) = 320 bytes a page
  auto int4 = BlockPool::create(o);
  REQUIRE(int4.ok());
  CHECK(int4->num_pages() == 31);
  CHECK(int4->page_bytes() == 16);
  o.memory_bytes = 319;
  CHECK(contains(BlockPool::create(o).status().message(), "holds no page of 320 bytes"));
  o = small_options(DType::i4);
  o.head_dim = 5;
  o.int4_group = 5;
  CHECK(contains(BlockPool::create(o).status().message(), "even head_dim"));
  o.head_dim = 6;
  o.int4_group = 4;
  CHECK(contains(BlockPool::create(o).status().message(), "int4_group 4"));
  o.int4_group = 0;
  CHECK(contains(BlockPool::create(o).status().message(), "int4_group 0"));
  o.int4_group = 3;  // a group may straddle a byte
  CHECK(BlockPool::create(o).ok());
  o = small_options(DType::f16);
  o.int4_group = 3;  // ignored for other dtypes
  CHECK(BlockPool::create(o).ok());
  o = small_options(DType::i8, 0);
  o.memory_bytes = 10'000;  // 2 layers x K,V x (32 values + 8 scales x 4 bytes) = 256 bytes a page
  CHECK(BlockPool::create(o).value().num_pages() == 39);
  o = small_options();
  o.num_pages = 0;
  CHECK(BlockPool::create(o).status().code() == errc::invalid_argument);
  o = small_options();
  o.head_dim = std::int64_t{1} << 40;
  o.n_kv_heads = std::int64_t{1} << 30;
  CHECK(BlockPool::create(o).status().code() == errc::out_of_range);
}

TEST_CASE("BlockPool: append, write, fork shares pages, the first write copies, truncate and release give pages back") {
  BlockPool pool = BlockPool::create(small_options()).value();
  const SequenceId a = pool.create();
  REQUIRE(pool.append(a, 6).ok());  // 2 pages, the second half full
  CHECK(pool.free_pages() == 10);
  for (int t = 0; t < 6; ++t) write_token(pool, a, t, static_cast<float>(t));
  const SequenceId b = pool.fork(a).value();
  CHECK(pool.free_pages() == 10);
  CHECK(pool.ref_count(pool.pages(a)[0]) == 2);
  // b appends into the shared, half-full last page: it gets its own copy first.
  REQUIRE(pool.append(b, 1).ok());
  CHECK(pool.free_pages() == 9);
  CHECK(pool.pages(a)[1] != pool.pages(b)[1]);
  CHECK(pool.pages(a)[0] == pool.pages(b)[0]);
  write_token(pool, b, 6, 60.f);
  // b overwrites token 1 (in the shared first page): copied, a keeps its value.
  write_token(pool, b, 1, 10.f);
  CHECK(pool.free_pages() == 8);
  std::map<SequenceId, std::vector<float>> model = {{a, {0, 1, 2, 3, 4, 5}}, {b, {0, 10, 2, 3, 4, 5, 60}}};
  check_model(pool, model);
  REQUIRE(pool.truncate(b, 2).ok());
  model[b].resize(2);
  check_model(pool, model);
  CHECK(pool.free_pages() == 9);
  REQUIRE(pool.release(a).ok());
  model.erase(a);
  check_model(pool, model);
  CHECK(pool.free_pages() == 11);
  CHECK(pool.length(a) == -1);
  CHECK(pool.append(a, 1).code() == errc::invalid_argument);
  CHECK(contains(pool.write(a, 0, 0, k_of(0, 1), k_of(0, 1)).message(), "no sequence"));
  CHECK(pool.write(b, 0, 2, k_of(0, 1), k_of(0, 1)).code() == errc::out_of_range);
  CHECK(pool.write(b, 2, 0, k_of(0, 1), k_of(0, 1)).code() == errc::out_of_range);
  CHECK(pool.write(b, 0, 0, std::vector<float>(7), k_of(0, 1)).code() == errc::shape_mismatch);
  CHECK(pool.truncate(b, 3).code() == errc::out_of_range);
  CHECK(pool.release(b).ok());
  CHECK(pool.release(b).code() == errc::invalid_argument);
  CHECK(pool.free_pages() == 12);
}

TEST_CASE("BlockPool: an exhausted pool is an out_of_memory error that changes nothing") {
  BlockPool pool = BlockPool::create(small_options(DType::f32, 3)).value();
  const SequenceId a = pool.create();
  REQUIRE(pool.append(a, 10).ok());  // 3 pages
  status st = pool.append(a, 3);
  CHECK(st.code() == errc::out_of_memory);
  CHECK(contains(st.message(), "need 1 free pages"));
  CHECK(pool.length(a) == 10);
  const SequenceId b = pool.fork(a).value();
  CHECK(pool.write(b, 0, 0, k_of(0, 1), k_of(0, 1)).code() == errc::out_of_memory);  // the copy has no page
  CHECK(pool.append(b, 1).code() == errc::out_of_memory);                               // nor the shared last page's
  CHECK(pool.length(b) == 10);
  BlockPoolOptions o = small_options();
  o.max_sequence_length = 5;
  BlockPool capped = BlockPool::create(o).value();
  const SequenceId c = capped.create();
  CHECK(capped.append(c, 5).ok());
  CHECK(contains(capped.append(c, 1).message(), "maximum is 5"));
}

namespace {
// Runs of consecutive page numbers in a sequence's block table: 1 + the places where a page
// does not follow the one before.
std::int64_t page_runs(std::span<const std::int32_t> pages) {
  std::int64_t runs = pages.empty() ? 0 : 1;
  for (std::size_t i = 1; i < pages.size(); ++i) runs += pages[i] != pages[i - 1] + 1;
  return runs;
}
}  // namespace

TEST_CASE("BlockPool: sequences growing together get their pages side by side, in runs of extent_pages or more") {
  // 16 sequences decoding in step, a page each in turn: with extents of 8 (the default) or 4
  // pages each sequence's 32 pages lie in runs of 8 or 4; taking the last freed page (extent 1)
  // interleaves them one by one (32 runs).
  for (const std::int64_t extent : {8, 4, 1}) {
    CAPTURE(extent);
    BlockPoolOptions o = small_options(DType::f16, 16 * 32);
    o.extent_pages = extent;
    BlockPool pool = BlockPool::create(o).value();
    std::vector<SequenceId> seqs;
    for (int i = 0; i < 16; ++i) seqs.push_back(pool.create());
    for (int page = 0; page < 32; ++page)
      for (const SequenceId s : seqs) REQUIRE(pool.append(s, o.page_size).ok());
    CHECK(pool.free_pages() == 0);
    for (const SequenceId s : seqs) CHECK(page_runs(pool.pages(s)) == 32 / extent);
  }
  // A sequence's prompt takes consecutive pages; after a release, the freed extents serve again.
  BlockPoolOptions o = small_options(DType::f16, 64);
  o.extent_pages = 4;
  BlockPool pool = BlockPool::create(o).value();
  const SequenceId a = pool.create(), b = pool.create();
  REQUIRE(pool.append(a, 4 * 10).ok());  // 10 pages: 0 .. 9
  CHECK(page_runs(pool.pages(a)) == 1);
  REQUIRE(pool.append(b, 4).ok());  // the next wholly free extent: pages 12 .. 15
  CHECK(pool.pages(b)[0] == 12);
  REQUIRE(pool.append(a, 4).ok());  // page 10 follows a's last
  CHECK(pool.pages(a).back() == 10);
  REQUIRE(pool.release(a).ok());  // pages 0 .. 10 free again: extents 0 .. 2 whole
  const SequenceId c = pool.create();
  REQUIRE(pool.append(c, 4 * 8).ok());  // the last extent freed (8 .. 11), then 12 is b's: the next whole one (4 .. 7)
  const std::vector<std::int32_t> expected{8, 9, 10, 11, 4, 5, 6, 7};
  CHECK(std::ranges::equal(pool.pages(c), expected));
}

TEST_CASE("BlockPool: extents reserve nothing; every free page serves any sequence") {
  BlockPoolOptions o = small_options(DType::f32, 8);
  o.extent_pages = 4;
  BlockPool pool = BlockPool::create(o).value();
  const SequenceId a = pool.create(), b = pool.create(), c = pool.create();
  REQUIRE(pool.append(a, 1).ok());
  REQUIRE(pool.append(b, 1).ok());
  CHECK(pool.pages(a)[0] == 0);
  CHECK(pool.pages(b)[0] == 4);  // each started an extent
  CHECK(pool.free_pages() == 6);
  REQUIRE(pool.append(c, 6 * 4).ok());  // the six pages left, in both extents
  CHECK(pool.free_pages() == 0);
  CHECK(pool.append(a, 4).code() == errc::out_of_memory);
  o.extent_pages = 64;  // one extent, larger than the pool: the lowest free page when none follows
  BlockPool one = BlockPool::create(o).value();
  const SequenceId d = one.create(), e = one.create();
  REQUIRE(one.append(d, 4).ok());
  REQUIRE(one.append(e, 4).ok());
  CHECK(one.pages(e)[0] == 1);
  REQUIRE(one.append(d, 4 * 6).ok());
  const std::vector<std::int32_t> rest{0, 2, 3, 4, 5, 6, 7};
  CHECK(std::ranges::equal(one.pages(d), rest));
  CHECK(one.free_pages() == 0);
  o.extent_pages = 65;
  CHECK(contains(BlockPool::create(o).status().message(), "extent_pages is 65; it must be in 1 .. 64"));
  o.extent_pages = std::numeric_limits<std::int64_t>::max();
  CHECK(BlockPool::create(o).status().code() == errc::invalid_argument);
  o.extent_pages = 0;
  CHECK(contains(BlockPool::create(o).status().message(), "extent_pages is 0"));
}

TEST_CASE("FreePages: in a churned pool, the extent with the most free pages serves first") {
  detail::FreePages f(32, 8);
  std::int32_t last = -1;
  for (int i = 0; i < 32; ++i) CHECK((last = f.take(last)) == i);  // each page after the one before
  CHECK(f.take(last) == -1);
  for (const std::int32_t p : {3, 9, 10, 12, 20}) f.put(p);  // extents 0, 1, 2: 1, 3, 1 free pages
  CHECK(f.size() == 5);
  CHECK(f.take(-1) == 9);   // the fullest extent's first free page
  CHECK(f.take(9) == 10);   // then the page after
  CHECK(f.take(10) == 12);  // 11 is taken: 1 free page each, extent 1's count changed last
  CHECK(f.take(12) == 20);  // extents 0 and 2: 2's changed last (20 was freed after 3)
  CHECK(f.take(-1) == 3);
  CHECK(f.take(3) == -1);
  CHECK(f.size() == 0);
}

TEST_CASE("FreePages: random puts and takes against a model") {
  // Every take is the page after `after` when free, else the lowest free page of an extent with
  // the most free pages; the count is exact; extents of 1, 3 (the last one short), 8 and 64.
  for (const std::int64_t extent : {1, 3, 8, 64}) {
    CAPTURE(extent);
    const std::int32_t n = 100;
    detail::FreePages f(n, extent);
    std::vector<char> is_free(n, 1);
    std::vector<std::int32_t> held;
    std::mt19937 rng(static_cast<std::uint32_t>(extent));
    for (int step = 0; step < 4000; ++step) {
      if (held.empty() || (rng() % 3 != 0 && f.size() > 0)) {
        const std::int32_t after = held.empty() || rng() % 4 == 0 ? -1 : held[rng() % held.size()];
        const std::int32_t p = f.take(after);
        REQUIRE(p >= 0);
        REQUIRE(is_free[static_cast<std::size_t>(p)]);
        if (after >= 0 && after + 1 < n && is_free[static_cast<std::size_t>(after) + 1]) {
          CHECK(p == after + 1);
        } else {
          std::vector<std::int64_t> count((n + extent - 1) / extent);
          for (std::int32_t q = 0; q < n; ++q) count[static_cast<std::size_t>(q / extent)] += is_free[static_cast<std::size_t>(q)];
          const std::int64_t k = p / extent;
          CHECK(count[static_cast<std::size_t>(k)] == *std::ranges::max_element(count));
          for (std::int64_t q = k * extent; q < p; ++q) CHECK(!is_free[static_cast<std::size_t>(q)]);
        }
        is_free[static_cast<std::size_t>(p)] = 0;
        held.push_back(p);
      } else {
        const std::size_t i = rng() % held.size();
        f.put(held[i]);
        is_free[static_cast<std::size_t>(held[i])] = 1;
        held[i] = held.back();
        held.pop_back();
      }
      REQUIRE(f.size() == std::ranges::count(is_free, 1));
    }
  }
}

TEST_CASE("BlockPool: random operations against a model (contents, reference counts, free pages after every step)") {
  // Every dtype with the default extents (8 pages: 3 in the 24-page pool), f32 also with none (1)
  // and with extents of 5 (the last one short): where pages come from must never change what the
  // pool holds.
  const std::int64_t preset = BlockPoolOptions{}.extent_pages;
  const std::pair<DType, std::int64_t> runs[] = {{DType::f32, preset}, {DType::f16, preset}, {DType::bf16, preset}, {DType::i8, preset},
                                                 {DType::i4, preset},  {DType::f32, 1},      {DType::f32, 5}};
  for (const auto& run : runs) {
    const DType t = run.first;  // not structured bindings: CAPTURE's lambda names them (Clang 14)
    const std::int64_t extent = run.second;
    CAPTURE(dtype_name(t));
    CAPTURE(extent);
    BlockPoolOptions o = small_options(t, 24);
    o.extent_pages = extent;
    BlockPool pool = BlockPool::create(o).value();
    std::map<SequenceId, std::vector<float>> model;
    std::mt19937 rng(static_cast<std::uint32_t>(t) + 5 + static_cast<std::uint32_t>(extent));
    float next_val = 1;
    auto pick = [&]() {
      auto it = model.begin();
      std::advance(it, static_cast<long>(rng() % model.size()));
      return it->first;
    };
    for (int step = 0; step < (kSanitized ? 400 : 1500); ++step) {
      const unsigned op = model.empty() ? 0 : rng() % 6;
      if (op == 0 && model.size() < 8) {
        model[pool.create()] = {};
      } else if (op == 1) {
        const SequenceId s = pick();
        const auto f = pool.fork(s);
        REQUIRE(f.ok());
        model[*f] = model[s];
      } else if (op == 2) {
        const SequenceId s = pick();
        const std::int64_t n = 1 + static_cast<std::int64_t>(rng() % 9);
        const std::int64_t before = pool.free_pages();
        const status st = pool.append(s, n);
        if (st.ok()) {
          for (std::int64_t i = 0; i < n; ++i) {
            const auto pos = static_cast<std::int64_t>(model[s].size());
            model[s].push_back(next_val);
            write_token(pool, s, pos, next_val);
            next_val = next_val >= 200 ? 1 : next_val + 1;  // small integers: exact in bf16
          }
        } else {
          REQUIRE(st.code() == errc::out_of_memory);
          REQUIRE(pool.free_pages() == before);
        }
      } else if (op == 3) {
        const SequenceId s = pick();
        if (!model[s].empty()) {
          const auto pos = static_cast<std::int64_t>(rng() % model[s].size());
          const float val = static_cast<float>(rng() % 200);
          bool ok = true;
          for (std::int64_t l = 0; l < 2 && ok; ++l) {
            const std::vector<float> k = k_of(l, val);
            const status st = pool.write(s, l, pos, k, neg(k));
            if (!st.ok()) {
              REQUIRE(st.code() == errc::out_of_memory);
              REQUIRE(l == 0);  // the copy happens at the first layer's write
              ok = false;
            }
          }
          if (ok) model[s][static_cast<std::size_t>(pos)] = val;
        }
      } else if (op == 4) {
        const SequenceId s = pick();
        const auto n = model[s].empty() ? 0 : static_cast<std::int64_t>(rng() % (model[s].size() + 1));
        REQUIRE(pool.truncate(s, n).ok());
        model[s].resize(static_cast<std::size_t>(n));
      } else if (op == 5) {
        const SequenceId s = pick();
        REQUIRE(pool.release(s).ok());
        model.erase(s);
      }
      check_model(pool, model);
    }
  }
}

TEST_CASE("BlockPool: decode attention reads the pool's pages through its page table") {
  BlockPoolOptions o;
  o.num_layers = 1;
  o.n_kv_heads = 2;
  o.head_dim = 8;
  o.page_size = 4;
  o.dtype = DType::f32;
  o.num_pages = 32;
  BlockPool pool = BlockPool::create(o).value();
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<std::vector<std::vector<float>>> ks, vs;  // [seq][token][16]
  std::vector<SequenceId> ids;
  for (const std::int64_t len : {5, 1, 13}) {
    const SequenceId s = pool.create();
    ids.push_back(s);
    REQUIRE(pool.append(s, len).ok());
    ks.emplace_back();
    vs.emplace_back();
    for (std::int64_t t = 0; t < len; ++t) {
      std::vector<float> k(16), v(16);
      for (float& x : k) x = normal(rng);
      for (float& x : v) x = normal(rng);
      REQUIRE(pool.write(s, 0, t, k, v).ok());
      ks.back().push_back(k);
      vs.back().push_back(v);
    }
  }
  const SequenceId forked = pool.fork(ids[0]).value();  // shares all of sequence 0
  ids.push_back(forked);
  ks.push_back(ks[0]);
  vs.push_back(vs[0]);
  const BlockPool::Table table = pool.page_table(ids).value();
  Tensor<float> q({4, 4, 8});
  for (float& x : q.span()) x = normal(rng);
  Tensor<float> out({4, 4, 8});
  REQUIRE(paged_decode_attention(q.view(), pool.k_pages<float>(0), pool.v_pages<float>(0), table.csr(), out.view()).ok());
  for (std::size_t b = 0; b < 4; ++b)
    for (std::int64_t h = 0; h < 4; ++h) {
      const std::int64_t kvh = h / 2;
      std::vector<double> s;
      for (const auto& k : ks[b]) {
        double d = 0;
        for (std::int64_t i = 0; i < 8; ++i) d += static_cast<double>(q(static_cast<std::int64_t>(b), h, i)) * k[static_cast<std::size_t>(kvh * 8 + i)];
        s.push_back(d / std::sqrt(8.0));
      }
      double mx = -1e300, sum = 0;
      for (const double x : s) mx = std::max(mx, x);
      for (double& x : s) sum += (x = std::exp(x - mx));
      for (std::int64_t i = 0; i < 8; ++i) {
        double want = 0;
        for (std::size_t t = 0; t < s.size(); ++t) want += s[t] / sum * vs[b][t][static_cast<std::size_t>(kvh * 8 + i)];
        CHECK(std::fabs(out(static_cast<std::int64_t>(b), h, i) - want) < 1e-5);
      }
    }
  CHECK(pool.page_table(std::vector<SequenceId>{99}).status().code() == errc::invalid_argument);
  CHECK_THROWS_AS((void)pool.k_pages<f16>(0), error);
}

TEST_CASE("BlockPool prefix cache: a shared prompt is computed once; hits, misses and LRU eviction are counted") {
  BlockPool pool = BlockPool::create(small_options(DType::f32, 10)).value();
  const std::vector<std::int32_t> prompt = {5, 6, 7, 8, 9, 10, 11, 12, 13, 14};  // 2 full pages + 2 tokens
  auto first = pool.create(prompt);
  CHECK(first.cached_tokens == 0);
  CHECK(pool.prefix_stats().miss_pages == 2);
  REQUIRE(pool.append(first.seq, 10).ok());
  for (int t = 0; t < 10; ++t) write_token(pool, first.seq, t, static_cast<float>(prompt[static_cast<std::size_t>(t)]));
  REQUIRE(pool.publish(first.seq, prompt).ok());
  CHECK(pool.prefix_stats().cached_pages == 2);
  // Same prompt: both full pages shared, 2 tokens left to compute.
  auto second = pool.create(prompt);
  CHECK(second.cached_tokens == 8);
  CHECK(pool.prefix_stats().hit_pages == 2);
  CHECK(pool.pages(second.seq)[0] == pool.pages(first.seq)[0]);
  CHECK(pool.ref_count(pool.pages(first.seq)[1]) == 2);
  // A prompt of exactly 2 pages keeps its last token to compute: 1 page from the cache.
  auto third = pool.create(std::vector<std::int32_t>(prompt.begin(), prompt.begin() + 8));
  CHECK(third.cached_tokens == 4);
  // Another second page: the first page hits, the second misses.
  std::vector<std::int32_t> other = prompt;
  other[5] = 99;
  auto fourth = pool.create(other);
  CHECK(fourth.cached_tokens == 4);
  // Released, the cached pages stay (evictable), and a later prompt still hits them.
  for (const SequenceId s : {first.seq, second.seq, third.seq, fourth.seq}) REQUIRE(pool.release(s).ok());
  CHECK(pool.evictable_pages() == 2);
  CHECK(pool.free_pages() == 8);
  auto fifth = pool.create(prompt);
  CHECK(fifth.cached_tokens == 8);
  std::vector<float> k(8), v(8);
  REQUIRE(pool.read(fifth.seq, 1, 6, k, v).ok());
  CHECK(k == k_of(1, 11.f));
  REQUIRE(pool.release(fifth.seq).ok());
  // Fill the pool: the free pages go first, then the least recently used cached page.
  const SequenceId big = pool.create();
  REQUIRE(pool.append(big, 4 * 9).ok());
  CHECK(pool.prefix_stats().evictions == 1);
  CHECK(pool.prefix_stats().cached_pages == 1);
  // The evicted page was the prompt's first (released first, so least recently used): the
  // chain is broken and the prompt finds nothing, though its second page is still cached.
  const auto sixth = pool.create(prompt);
  CHECK(sixth.cached_tokens == 0);
  REQUIRE(pool.release(sixth.seq).ok());
  REQUIRE(pool.append(big, 4).ok());  // takes the last evictable page
  CHECK(pool.prefix_stats().evictions == 2);
  CHECK(pool.prefix_stats().cached_pages == 0);
  CHECK(pool.append(big, 4).code() == errc::out_of_memory);
}

TEST_CASE("BlockPool prefix cache: writing to a cached page takes it out of the cache (or copies it when shared)") {
  BlockPool pool = BlockPool::create(small_options(DType::f32, 6)).value();
  const std::vector<std::int32_t> prompt = {1, 2, 3, 4, 5};
  const SequenceId a = pool.create(prompt).seq;
  REQUIRE(pool.append(a, 5).ok());
  for (int t = 0; t < 5; ++t) write_token(pool, a, t, static_cast<float>(t + 1));
  REQUIRE(pool.publish(a, prompt).ok());
  const std::int32_t page0 = pool.pages(a)[0];
  CHECK(pool.is_cached(page0));
  write_token(pool, a, 0, 50.f);  // sole owner: the page leaves the cache
  CHECK_FALSE(pool.is_cached(page0));
  CHECK(pool.create(prompt).cached_tokens == 0);
  CHECK(pool.publish(a, std::vector<std::int32_t>{1, 2}).code() == errc::shape_mismatch);
  CHECK(pool.publish(77, prompt).code() == errc::invalid_argument);
}

TEST_CASE("BlockPool prefix cache: random prompts, forks, writes, truncations and releases against a model") {
  std::int64_t hits = 0, evictions = 0;
  for (const std::uint32_t seed : {1u, 2u, 3u}) {
    CAPTURE(seed);
    BlockPool pool = BlockPool::create(small_options(DType::f32, 20)).value();
    std::map<SequenceId, std::vector<float>> model;        // K/V value per token
    std::map<SequenceId, std::vector<std::int32_t>> ids;   // token ids
    std::mt19937 rng(seed);
    // A token's K/V value depends on its id and position only, so a page's contents follow from
    // its tokens and where it sits: exactly what the cache key (parent chain + ids) captures.
    auto value = [](std::int32_t id, std::size_t pos) { return static_cast<float>((id * 7 + static_cast<std::int32_t>(pos) * 3) % 200); };
    const std::vector<std::vector<std::int32_t>> bases = {{1, 2, 3, 4, 5, 6, 7, 8, 9}, {1, 2, 3, 4, 9, 9, 9, 9}, {4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4}};
    auto pick = [&]() {
      auto it = model.begin();
      std::advance(it, static_cast<long>(rng() % model.size()));
      return it->first;
    };
    auto extend = [&](SequenceId s, const std::vector<std::int32_t>& more) {
      if (!pool.append(s, static_cast<std::int64_t>(more.size())).ok()) return false;
      for (const std::int32_t id : more) {
        const std::size_t pos = ids[s].size();
        ids[s].push_back(id);
        model[s].push_back(value(id, pos));
        write_token(pool, s, static_cast<std::int64_t>(pos), model[s].back());
      }
      return true;
    };
    for (int step = 0; step < (kSanitized ? 300 : 1200); ++step) {
      const unsigned op = model.empty() ? 0 : rng() % 7;
      if (op == 0 && model.size() < 6) {
        std::vector<std::int32_t> prompt = bases[rng() % bases.size()];
        for (unsigned extra = rng() % 4; extra > 0; --extra) prompt.push_back(static_cast<std::int32_t>(rng() % 5));
        const auto m = pool.create(prompt);
        const auto c = static_cast<std::size_t>(m.cached_tokens);
        ids[m.seq].assign(prompt.begin(), prompt.begin() + static_cast<long>(c));
        model[m.seq].clear();
        for (std::size_t i = 0; i < c; ++i) model[m.seq].push_back(value(prompt[i], i));
        if (!extend(m.seq, std::vector<std::int32_t>(prompt.begin() + static_cast<long>(c), prompt.end()))) {
          REQUIRE(pool.release(m.seq).ok());
          model.erase(m.seq);
          ids.erase(m.seq);
        }
      } else if (op == 1) {
        const SequenceId s = pick();
        REQUIRE(pool.publish(s, ids[s]).ok());
      } else if (op == 2) {
        const SequenceId s = pick();
        std::vector<std::int32_t> more;
        for (unsigned n = 1 + rng() % 5; n > 0; --n) more.push_back(static_cast<std::int32_t>(rng() % 5));
        (void)extend(s, more);
      } else if (op == 3) {
        const SequenceId s = pick();
        const SequenceId f = pool.fork(s).value();
        model[f] = model[s];
        ids[f] = ids[s];
      } else if (op == 4) {
        const SequenceId s = pick();
        if (!ids[s].empty()) {
          const std::size_t pos = rng() % ids[s].size();
          const auto id = static_cast<std::int32_t>(rng() % 5);
          const float val = value(id, pos);
          bool ok = true;
          for (std::int64_t l = 0; l < 2 && ok; ++l) {
            const std::vector<float> k = k_of(l, val);
            const status st = pool.write(s, l, static_cast<std::int64_t>(pos), k, neg(k));
            if (!st.ok()) {
              REQUIRE(st.code() == errc::out_of_memory);
              ok = false;
            }
          }
          if (ok) {
            ids[s][pos] = id;
            model[s][pos] = val;
          }
        }
      } else if (op == 5) {
        const SequenceId s = pick();
        const std::size_t n = ids[s].empty() ? 0 : rng() % (ids[s].size() + 1);
        REQUIRE(pool.truncate(s, static_cast<std::int64_t>(n)).ok());
        ids[s].resize(n);
        model[s].resize(n);
      } else if (op == 6) {
        const SequenceId s = pick();
        REQUIRE(pool.release(s).ok());
        model.erase(s);
        ids.erase(s);
      }
      check_model(pool, model);
    }
    hits += pool.prefix_stats().hit_pages;
    evictions += pool.prefix_stats().evictions;
  }
  CHECK(hits > 0);  // the run exercised the cache
  CHECK(evictions > 0);
}

namespace {

// Pages kept outside a pool (what CudaKvCache does on a GPU), f32, layer-major as the pool lays
// out its own: K and V of layer l are [num_pages, n_kv_heads, page_size, head_dim].
struct OutsideStore {
  BlockPoolOptions o;
  std::vector<std::vector<float>> kv;  // [2 * layer + (0: K, 1: V)]
  explicit OutsideStore(const BlockPoolOptions& opts) : o(opts) {
    kv.assign(static_cast<std::size_t>(2 * o.num_layers), std::vector<float>(static_cast<std::size_t>(o.num_pages * o.n_kv_heads * o.page_size * o.head_dim), -1.f));
  }
  std::int64_t page_floats() const { return o.n_kv_heads * o.page_size * o.head_dim; }
  void apply(const std::vector<BlockPool::PageCopy>& copies) {
    for (const BlockPool::PageCopy& c : copies)
      for (auto& t : kv) std::copy_n(t.begin() + c.src * page_floats(), page_floats(), t.begin() + c.dst * page_floats());
  }
  // Row of head h at `slot` (page * page_size + offset).
  std::int64_t row(std::int64_t slot, std::int64_t h) const { return ((slot / o.page_size) * o.n_kv_heads + h) * o.page_size + slot % o.page_size; }
  void write(std::int64_t layer, std::int64_t slot, const std::vector<float>& k, const std::vector<float>& v) {
    for (std::int64_t h = 0; h < o.n_kv_heads; ++h)
      for (std::int64_t d = 0; d < o.head_dim; ++d) {
        kv[static_cast<std::size_t>(2 * layer)][static_cast<std::size_t>(row(slot, h) * o.head_dim + d)] = k[static_cast<std::size_t>(h * o.head_dim + d)];
        kv[static_cast<std::size_t>(2 * layer + 1)][static_cast<std::size_t>(row(slot, h) * o.head_dim + d)] = v[static_cast<std::size_t>(h * o.head_dim + d)];
      }
  }
};

}  // namespace

TEST_CASE("BlockPool without host storage: prepare_write's slots and the handed-over page copies keep pages elsewhere right") {
  BlockPoolOptions own = small_options(DType::f32, 16);
  BlockPoolOptions outside = own;
  outside.host_storage = false;
  {  // the calls that need the pool's own pages are errors
    BlockPool pool = BlockPool::create(outside).value();
    const SequenceId s = pool.create();
    REQUIRE(pool.append(s, 3).ok());
    std::vector<float> k(8), v(8);
    CHECK(pool.write(s, 0, 0, k, v).code() == errc::unsupported);
    CHECK(contains(pool.read(s, 0, 0, k, v).message(), "host_storage is false"));
    CHECK(contains(thrown([&] { (void)pool.k_pages<float>(0); }), "keeps no pages"));
    CHECK(pool.prepare_write(s, 2, 2).status().code() == errc::out_of_range);
    CHECK(pool.prepare_write(7, 0, 1).status().code() == errc::invalid_argument);
    CHECK(pool.prepare_write(s, 0, 3).value() == std::vector<std::int64_t>{0, 1, 2});  // page 0, slots 0..2
    CHECK(pool.take_page_copies().empty());
  }
  std::size_t copies = 0;
  for (const std::uint32_t seed : {4u, 5u}) {
    CAPTURE(seed);
    // Two pools given the same calls: `ref` keeps its pages, `acct` only the accounts, whose
    // pages `store` keeps as a GPU cache would. They must make the same choices of pages, and
    // `store` must read as `ref` after every step.
    BlockPool ref = BlockPool::create(own).value(), acct = BlockPool::create(outside).value();
    OutsideStore store(outside);
    std::map<SequenceId, std::vector<std::int32_t>> ids;
    std::mt19937 rng(seed);
    auto value = [](std::int32_t id, std::size_t pos) { return static_cast<float>((id * 7 + static_cast<std::int32_t>(pos) * 3) % 200); };
    // Writes token `pos` of s in both: ref.write, and acct's slot + the copies applied + store.write.
    auto write = [&](SequenceId s, std::size_t pos, std::int32_t id) {
      bool ok = true;
      for (std::int64_t l = 0; l < 2; ++l) {
        const std::vector<float> k = k_of(l, value(id, pos));
        ok = ref.write(s, l, static_cast<std::int64_t>(pos), k, neg(k)).ok();
        auto slots = acct.prepare_write(s, static_cast<std::int64_t>(pos), 1);
        REQUIRE(slots.ok() == ok);
        if (!ok) return false;
        const auto made = acct.take_page_copies();
        copies += made.size();
        store.apply(made);
        store.write(l, (*slots)[0], k, neg(k));
      }
      return true;
    };
    auto pick = [&]() {
      auto it = ids.begin();
      std::advance(it, static_cast<long>(rng() % ids.size()));
      return it->first;
    };
    for (int step = 0; step < (kSanitized ? 200 : 800); ++step) {
      const unsigned op = ids.empty() ? 0 : rng() % 6;
      if (op == 0 && ids.size() < 5) {  // a prompt, partly from the prefix cache
        std::vector<std::int32_t> prompt = {1, 2, 3, 4, 5};
        for (unsigned extra = rng() % 6; extra > 0; --extra) prompt.push_back(static_cast<std::int32_t>(rng() % 4));
        const auto m = ref.create(prompt), n = acct.create(prompt);
        REQUIRE(m.seq == n.seq);
        REQUIRE(m.cached_tokens == n.cached_tokens);
        ids[m.seq].assign(prompt.begin(), prompt.begin() + m.cached_tokens);
        const std::int64_t more = static_cast<std::int64_t>(prompt.size()) - m.cached_tokens;
        const bool ok = ref.append(m.seq, more).ok();
        REQUIRE(acct.append(n.seq, more).ok() == ok);
        const auto made = acct.take_page_copies();
        copies += made.size();
        store.apply(made);
        for (std::size_t t = ids[m.seq].size(); ok && t < prompt.size(); ++t) {
          ids[m.seq].push_back(prompt[t]);
          if (!write(m.seq, t, prompt[t])) break;
        }
        if (!ok || ids[m.seq].size() < prompt.size()) {
          REQUIRE(ref.release(m.seq).ok());
          REQUIRE(acct.release(n.seq).ok());
          ids.erase(m.seq);
        } else {
          REQUIRE(ref.publish(m.seq, ids[m.seq]).ok());
          REQUIRE(acct.publish(n.seq, ids[n.seq]).ok());
        }
      } else if (op == 1) {  // a few more tokens
        const SequenceId s = pick();
        const std::int64_t more = 1 + static_cast<std::int64_t>(rng() % 4);
        const bool ok = ref.append(s, more).ok();
        REQUIRE(acct.append(s, more).ok() == ok);
        if (ok) {
          const auto made = acct.take_page_copies();  // a shared, partly filled last page is copied
          copies += made.size();
          store.apply(made);
          for (std::int64_t i = 0; i < more; ++i) {
            const auto id = static_cast<std::int32_t>(rng() % 4);
            ids[s].push_back(id);
            if (!write(s, ids[s].size() - 1, id)) {  // out of pages: roll the sequence back
              ids[s].pop_back();
              break;
            }
          }
          REQUIRE(ref.truncate(s, static_cast<std::int64_t>(ids[s].size())).ok());
          REQUIRE(acct.truncate(s, static_cast<std::int64_t>(ids[s].size())).ok());
        }
      } else if (op == 2) {
        const SequenceId s = pick();
        const SequenceId f = ref.fork(s).value();
        REQUIRE(acct.fork(s).value() == f);
        ids[f] = ids[s];
      } else if (op == 3) {  // overwrite a token (copy-on-write of a shared page)
        const SequenceId s = pick();
        if (!ids[s].empty()) {
          const std::size_t pos = rng() % ids[s].size();
          const auto id = static_cast<std::int32_t>(rng() % 4);
          if (write(s, pos, id)) ids[s][pos] = id;
        }
      } else if (op == 4) {
        const SequenceId s = pick();
        const std::int64_t n = ids[s].empty() ? 0 : static_cast<std::int64_t>(rng() % (ids[s].size() + 1));
        REQUIRE(ref.truncate(s, n).ok());
        REQUIRE(acct.truncate(s, n).ok());
        ids[s].resize(static_cast<std::size_t>(n));
      } else if (op == 5) {
        const SequenceId s = pick();
        REQUIRE(ref.release(s).ok());
        REQUIRE(acct.release(s).ok());
        ids.erase(s);
      }
      REQUIRE(acct.take_page_copies().empty());  // every copy was handed over where it was made
      for (const auto& [s, tokens] : ids) {
        REQUIRE(std::ranges::equal(ref.pages(s), acct.pages(s)));
        std::vector<float> k(8), v(8);
        for (std::size_t t = 0; t < tokens.size(); ++t)
          for (std::int64_t l = 0; l < 2; ++l) {
            REQUIRE(ref.read(s, l, static_cast<std::int64_t>(t), k, v).ok());
            const std::int64_t slot = static_cast<std::int64_t>(acct.pages(s)[t / 4]) * 4 + static_cast<std::int64_t>(t % 4);
            for (std::int64_t h = 0; h < 2; ++h)
              for (std::int64_t d = 0; d < 4; ++d) {
                const auto at = static_cast<std::size_t>(store.row(slot, h) * 4 + d);
                REQUIRE(store.kv[static_cast<std::size_t>(2 * l)][at] == k[static_cast<std::size_t>(h * 4 + d)]);
                REQUIRE(store.kv[static_cast<std::size_t>(2 * l + 1)][at] == v[static_cast<std::size_t>(h * 4 + d)]);
              }
          }
      }
    }
  }
  CHECK(copies > 0);  // copy-on-write happened and went through take_page_copies
}

TEST_CASE("BlockPool with INT8 pages: a scale per token and head, attention within the bounded quantization error") {
  BlockPoolOptions o;
  o.num_layers = 1;
  o.n_kv_heads = 2;
  o.head_dim = 64;
  o.page_size = 16;
  o.dtype = DType::i8;
  o.num_pages = 64;
  BlockPool pool = BlockPool::create(o).value();
  BlockPoolOptions of = o;
  of.dtype = DType::f32;
  BlockPool exact = BlockPool::create(of).value();
  std::mt19937 rng(11);
  std::normal_distribution<float> normal;
  std::vector<SequenceId> ids, exact_ids;
  double worst_row = 0;
  for (const std::int64_t len : {1, 37, 300}) {
    const SequenceId s = pool.create(), e = exact.create();
    REQUIRE(pool.append(s, len).ok());
    REQUIRE(exact.append(e, len).ok());
    for (std::int64_t t = 0; t < len; ++t) {
      std::vector<float> k(128), v(128), kb(128), vb(128);
      for (float& x : k) x = 2.f * normal(rng);
      for (float& x : v) x = normal(rng);
      if (t == 3) std::fill(k.begin(), k.begin() + 64, 0.f);  // a zero row: scale 0, read back as 0
      REQUIRE(pool.write(s, 0, t, k, v).ok());
      REQUIRE(exact.write(e, 0, t, k, v).ok());
      REQUIRE(pool.read(s, 0, t, kb, vb).ok());
      for (std::size_t h = 0; h < 2; ++h) {
        float amax = 0;
        for (std::size_t i = 0; i < 64; ++i) amax = std::max(amax, std::fabs(k[h * 64 + i]));
        for (std::size_t i = 0; i < 64; ++i) {
          const double err = std::fabs(kb[h * 64 + i] - k[h * 64 + i]);
          REQUIRE(err <= amax / 127.0 * 0.5 + 1e-6);  // half a step of the row's scale
          worst_row = std::max(worst_row, err / std::max(amax, 1e-30f));
        }
      }
    }
    ids.push_back(s);
    exact_ids.push_back(e);
  }
  MESSAGE("INT8 K: worst element error " << worst_row << " of the row's max |x| (bound 1/254)");
  Tensor<float> q({3, 4, 64});
  for (float& x : q.span()) x = normal(rng);
  Tensor<float> out({3, 4, 64}), want({3, 4, 64});
  REQUIRE(paged_decode_attention(q.view(), pool.k_pages_int8(0), pool.v_pages_int8(0), pool.page_table(ids).value().csr(), out.view()).ok());
  REQUIRE(paged_decode_attention(q.view(), exact.k_pages<float>(0), exact.v_pages<float>(0), exact.page_table(exact_ids).value().csr(),
                                 want.view())
              .ok());
  double max_err = 0;
  for (std::int64_t i = 0; i < out.numel(); ++i) max_err = std::max(max_err, std::fabs(double(out.data()[i]) - want.data()[i]));
  MESSAGE("decode attention, INT8 K/V against f32 K/V: max |error| " << max_err << " (outputs are ~N(0, 1) averages)");
  CHECK(max_err < 0.05);
  CHECK(max_err > 0);  // the INT8 path really ran
  // Mismatched scales are refused.
  Int8KvPages bad = pool.k_pages_int8(0);
  bad.scales = bad.scales.slice(0, 0, 3);
  CHECK(paged_decode_attention(q.view(), bad, pool.v_pages_int8(0), pool.page_table(ids).value().csr(), out.view()).code() ==
        errc::shape_mismatch);
  CHECK_THROWS_AS((void)exact.k_pages_int8(0), error);
}

namespace {

// The softmax probabilities (f64, scale 1 / sqrt(dim)) of query head vector q (dim values) over
// the tokens' keys ks of kv head kvh (each token n_kv_heads * dim values, head-major).
std::vector<double> reference_probs(const float* q, const std::vector<std::vector<float>>& ks, std::int64_t kvh, std::int64_t dim) {
  std::vector<double> s;
  for (const auto& k : ks) {
    double d = 0;
    for (std::int64_t i = 0; i < dim; ++i) d += static_cast<double>(q[i]) * k[static_cast<std::size_t>(kvh * dim + i)];
    s.push_back(d / std::sqrt(static_cast<double>(dim)));
  }
  double mx = -1e300, sum = 0;
  for (const double x : s) mx = std::max(mx, x);
  for (double& x : s) sum += (x = std::exp(x - mx));
  for (double& x : s) x /= sum;
  return s;
}

// f64 decode attention of q over the tokens' keys ks and values vs of kv head kvh.
std::vector<double> reference_attention(const float* q, const std::vector<std::vector<float>>& ks, const std::vector<std::vector<float>>& vs,
                                        std::int64_t kvh, std::int64_t dim) {
  const std::vector<double> p = reference_probs(q, ks, kvh, dim);
  std::vector<double> out(static_cast<std::size_t>(dim), 0.0);
  for (std::size_t t = 0; t < p.size(); ++t)
    for (std::int64_t i = 0; i < dim; ++i) out[static_cast<std::size_t>(i)] += p[t] * vs[t][static_cast<std::size_t>(kvh * dim + i)];
  return out;
}

BlockPoolOptions int4_options(std::int64_t head_dim, std::int64_t group, std::int64_t pages = 16) {
  BlockPoolOptions o;
  o.num_layers = 2;
  o.n_kv_heads = 2;
  o.head_dim = head_dim;
  o.page_size = 4;
  o.dtype = DType::i4;
  o.int4_group = group;
  o.num_pages = pages;
  return o;
}

// max |x| of group g of head h in a token row of n_kv_heads * head_dim values.
float group_amax(const std::vector<float>& x, std::int64_t head_dim, std::int64_t group, std::int64_t h, std::int64_t g) {
  float amax = 0;
  for (std::int64_t i = 0; i < group; ++i) amax = std::max(amax, std::fabs(x[static_cast<std::size_t>(h * head_dim + g * group + i)]));
  return amax;
}

}  // namespace

TEST_CASE("BlockPool with INT4 pages: group scales, round trip within half a step, zero and non-finite groups") {
  double worst_step = 0;  // worst |error| in units of the group's step (scale)
  for (const auto& head_dim_group : std::vector<std::pair<std::int64_t, std::int64_t>>{{64, 32}, {6, 3}, {16, 16}, {8, 2}}) {
    const std::int64_t head_dim = head_dim_group.first, group = head_dim_group.second;
    CAPTURE(head_dim);
    CAPTURE(group);
    BlockPool pool = BlockPool::create(int4_options(head_dim, group)).value();
    CHECK(pool.page_bytes() == 2 * 4 * head_dim / 2);
    const std::size_t row = static_cast<std::size_t>(2 * head_dim);
    const std::int64_t groups = head_dim / group;
    std::mt19937 rng(static_cast<std::uint32_t>(head_dim * 100 + group));
    std::normal_distribution<float> normal;
    const SequenceId s = pool.create();
    REQUIRE(pool.append(s, 9).ok());
    for (std::int64_t t = 0; t < 9; ++t)
      for (std::int64_t l = 0; l < 2; ++l) {
        std::vector<float> k(row), v(row), kb(row), vb(row);
        const float sigma = 0.25f * static_cast<float>(t + 1);
        for (float& x : k) x = sigma * normal(rng);
        for (float& x : v) x = sigma * normal(rng);
        if (t == 2) std::fill(k.begin(), k.begin() + group, 0.f);  // an all-zero group: scale 0, exact zeros
        REQUIRE(pool.write(s, l, t, k, v).ok());
        REQUIRE(pool.read(s, l, t, kb, vb).ok());
        const std::int32_t page = pool.pages(s)[static_cast<std::size_t>(t / 4)];
        const Int4KvPages kp = pool.k_pages_int4(l), vp = pool.v_pages_int4(l);
        REQUIRE(kp.scales.shape() == Shape{16, 2, 4, groups});
        for (std::int64_t h = 0; h < 2; ++h)
          for (std::int64_t g = 0; g < groups; ++g)
            for (const auto* which : {&k, &v}) {
              const bool is_k = which == &k;
              const std::vector<float>& x = *which;
              const std::vector<float>& back = is_k ? kb : vb;
              const Int4KvPages& pages = is_k ? kp : vp;
              const float amax = group_amax(x, head_dim, group, h, g);
              const float scale = amax / 7.f;
              REQUIRE(pages.scales(page, h, t % 4, g) == scale);  // the scale is stored as computed
              for (std::int64_t i = g * group; i < (g + 1) * group; ++i) {
                const auto e = static_cast<std::size_t>(h * head_dim + i);
                // The stored nibble is round(x * 7 / amax), and the value read back q * scale.
                const int q = amax > 0 ? static_cast<int>(std::nearbyint(x[e] * (7.f / amax))) : 0;
                REQUIRE(static_cast<int>(pages.values(page, h, t % 4, i)) == q);
                REQUIRE(back[e] == static_cast<float>(q) * scale);
                const double err = std::fabs(static_cast<double>(back[e]) - x[e]);
                REQUIRE(err <= 0.5 * scale * (1 + 1e-5) + 1e-30);  // half a step
                if (scale > 0) worst_step = std::max(worst_step, err / scale);
              }
            }
        if (t == 2) {
          CHECK(kp.scales(page, 0, 2, 0) == 0.f);
          for (std::int64_t i = 0; i < group; ++i) CHECK(kb[static_cast<std::size_t>(i)] == 0.f);
        }
      }
  }
  MESSAGE("INT4 K/V round trip: worst element error " << worst_step << " of its group's step (scale = max |x| / 7; bound 0.5)");
  CHECK(worst_step <= 0.5 + 1e-5);
  CHECK(worst_step > 0.4);  // the test really met near-midpoint values

  // Non-finite inputs, as quarry's activation quantizer: a NaN or an infinity makes its group's
  // scale NaN (the group reads back as NaN), other groups are untouched; a group whose 7 / amax
  // overflows gets scale 0 and reads back as zeros. The same for i8 rows.
  for (const DType t : {DType::i4, DType::i8}) {
    CAPTURE(dtype_name(t));
    BlockPoolOptions o = int4_options(8, 4);
    o.dtype = t;
    BlockPool pool = BlockPool::create(o).value();
    const SequenceId s = pool.create();
    REQUIRE(pool.append(s, 1).ok());
    std::vector<float> k(16, 1.f), v(16, -2.f), kb(16), vb(16);
    k[1] = std::numeric_limits<float>::quiet_NaN();          // head 0
    k[8 + 5] = std::numeric_limits<float>::infinity();       // head 1, i4 group 1
    for (std::size_t i = 0; i < 8; ++i) v[i] = 1e-39f;       // head 0: subnormal, 7 / amax overflows
    v[8] = -std::numeric_limits<float>::infinity();          // head 1, i4 group 0
    REQUIRE(pool.write(s, 0, 0, k, v).ok());
    REQUIRE(pool.read(s, 0, 0, kb, vb).ok());
    for (std::size_t i = 0; i < 16; ++i) {
      CAPTURE(i);
      // i8: a scale per head (8 elements); i4: one per group of 4.
      const bool k_nan = t == DType::i4 ? (i < 4 || i >= 12) : true;
      const bool v_nan = t == DType::i4 ? (i >= 8 && i < 12) : i >= 8;
      if (k_nan) CHECK(std::isnan(kb[i]));
      else CHECK(std::fabs(kb[i] - 1.f) < 1e-6f);
      if (v_nan) CHECK(std::isnan(vb[i]));
      else if (i < 8) CHECK(vb[i] == 0.f);
      else CHECK(std::fabs(vb[i] + 2.f) < 1e-6f);
    }
  }
}

TEST_CASE("BlockPool with INT4 pages: fork and copy-on-write carry the scales with the values") {
  BlockPool pool = BlockPool::create(int4_options(64, 32, 8)).value();
  std::mt19937 rng(21);
  std::normal_distribution<float> normal;
  const SequenceId a = pool.create();
  REQUIRE(pool.append(a, 6).ok());
  // A page that held other data before, so a copy that forgot the scales would read stale ones.
  const SequenceId junk = pool.create();
  REQUIRE(pool.append(junk, 4).ok());
  std::vector<float> k(128), v(128), kb(128), vb(128);
  for (float& x : k) x = 100.f * normal(rng);
  for (std::int64_t l = 0; l < 2; ++l)
    for (std::int64_t t = 0; t < 4; ++t) REQUIRE(pool.write(junk, l, t, k, k).ok());
  REQUIRE(pool.release(junk).ok());
  std::vector<std::vector<std::vector<float>>> before(6, std::vector<std::vector<float>>(2));  // [token][layer]: k then v, read back
  for (std::int64_t t = 0; t < 6; ++t)
    for (std::int64_t l = 0; l < 2; ++l) {
      for (float& x : k) x = normal(rng);
      for (float& x : v) x = normal(rng);
      REQUIRE(pool.write(a, l, t, k, v).ok());
      REQUIRE(pool.read(a, l, t, kb, vb).ok());
      auto& both = before[static_cast<std::size_t>(t)][static_cast<std::size_t>(l)];
      both = kb;
      both.insert(both.end(), vb.begin(), vb.end());
    }
  auto same_as_before = [&](SequenceId s, std::int64_t t, std::int64_t l) {
    REQUIRE(pool.read(s, l, t, kb, vb).ok());
    std::vector<float> both = kb;
    both.insert(both.end(), vb.begin(), vb.end());
    return both == before[static_cast<std::size_t>(t)][static_cast<std::size_t>(l)];
  };
  const SequenceId b = pool.fork(a).value();
  CHECK(pool.ref_count(pool.pages(a)[0]) == 2);
  // b writes token 1 of layer 0: page 0 is copied (every layer, values and scales) for b.
  for (float& x : k) x = 3.f * normal(rng);
  REQUIRE(pool.write(b, 0, 1, k, k).ok());
  CHECK(pool.pages(a)[0] != pool.pages(b)[0]);
  CHECK(pool.ref_count(pool.pages(a)[0]) == 1);
  REQUIRE(pool.read(b, 0, 1, kb, vb).ok());
  for (std::size_t i = 0; i < 128; ++i) {
    const float step = group_amax(k, 64, 32, static_cast<std::int64_t>(i / 64), static_cast<std::int64_t>(i % 64 / 32)) / 7.f;
    CHECK(std::fabs(kb[i] - k[i]) <= 0.5f * step * 1.0001f);
  }
  // b appends into the shared, half-full last page: copied too.
  REQUIRE(pool.append(b, 1).ok());
  CHECK(pool.pages(a)[1] != pool.pages(b)[1]);
  for (std::int64_t t = 0; t < 6; ++t)
    for (std::int64_t l = 0; l < 2; ++l) {
      CAPTURE(t);
      CAPTURE(l);
      CHECK(same_as_before(a, t, l));                       // the writer's copy left a alone
      if (t != 1 || l != 0) CHECK(same_as_before(b, t, l));  // and carried every other row exactly
    }
}

TEST_CASE("BlockPool with INT4 pages: decode attention equals the f64 attention of the values read back; the error against f32 pages is bounded") {
  BlockPoolOptions o;
  o.num_layers = 1;
  o.n_kv_heads = 2;
  o.head_dim = 128;
  o.page_size = 16;
  o.dtype = DType::i4;
  o.int4_group = 32;
  o.num_pages = 64;
  BlockPool pool = BlockPool::create(o).value();
  BlockPoolOptions of = o;
  of.dtype = DType::f32;
  BlockPool exact = BlockPool::create(of).value();
  std::mt19937 rng(12);
  std::normal_distribution<float> normal;
  std::vector<SequenceId> ids, exact_ids;
  std::vector<std::vector<std::vector<float>>> kd, vd;  // [seq][token][256]: dequantized, as read back
  for (const std::int64_t len : {1, 37, 300}) {
    const SequenceId s = pool.create(), e = exact.create();
    REQUIRE(pool.append(s, len).ok());
    REQUIRE(exact.append(e, len).ok());
    kd.emplace_back();
    vd.emplace_back();
    for (std::int64_t t = 0; t < len; ++t) {
      std::vector<float> k(256), v(256), kb(256), vb(256);
      for (float& x : k) x = normal(rng);
      for (float& x : v) x = normal(rng);
      REQUIRE(pool.write(s, 0, t, k, v).ok());
      REQUIRE(exact.write(e, 0, t, k, v).ok());
      REQUIRE(pool.read(s, 0, t, kb, vb).ok());
      kd.back().push_back(kb);
      vd.back().push_back(vb);
    }
    ids.push_back(s);
    exact_ids.push_back(e);
  }
  // A fork shares sequence 1's pages, so two rows of the batch read the same INT4 pages.
  ids.push_back(pool.fork(ids[1]).value());
  exact_ids.push_back(exact.fork(exact_ids[1]).value());
  kd.push_back(kd[1]);
  vd.push_back(vd[1]);
  Tensor<float> q({4, 4, 128});
  for (float& x : q.span()) x = normal(rng);
  Tensor<float> out({4, 4, 128}), want({4, 4, 128});
  const Tensor<float> q8 = int8_queries(q);
  const BlockPool::Table table = pool.page_table(ids).value();
  for (const std::int64_t chunk : {0, 32}) {
    CAPTURE(chunk);
    DecodeAttentionParams params;
    params.chunk_tokens = chunk;
    REQUIRE(paged_decode_attention(q.view(), pool.k_pages_int4(0), pool.v_pages_int4(0), table.csr(), out.view(), params).ok());
    double max_ref = 0, excess = -1;
    for (std::int64_t b = 0; b < 4; ++b)
      for (std::int64_t h = 0; h < 4; ++h) {
        // INT4 pages quantize the query to int8 (kv_kernels.hpp): the reference gets that query.
        const auto& ks = kd[static_cast<std::size_t>(b)];
        const auto& vs = vd[static_cast<std::size_t>(b)];
        const auto ref = reference_attention(&q8(b, h, 0), ks, vs, h / 2, 128);
        // Their weights of V are 8-bit integers per token and group of 32 (kv_kernels.hpp), each
        // off by at most half a step, 1/255 of the largest p * scale of its page (the scale of a
        // group: its max |v| / 7), which costs |v| / scale of that step per element.
        const std::vector<double> p = reference_probs(&q8(b, h, 0), ks, h / 2, 128);
        auto scale = [&](std::size_t t, std::int64_t c) {
          double m = 0;
          for (std::int64_t i = c * 32; i < (c + 1) * 32; ++i) m = std::max(m, std::fabs(static_cast<double>(vs[t][static_cast<std::size_t>(h / 2 * 128 + i)])));
          return m / 7;
        };
        std::vector<double> bound(128, 0.0);
        for (std::size_t page = 0; page * 16 < p.size(); ++page)
          for (std::int64_t c = 0; c < 4; ++c) {
            const std::size_t end = std::min(p.size(), page * 16 + 16);
            double top = 0;
            for (std::size_t t = page * 16; t < end; ++t) top = std::max(top, p[t] * scale(t, c));
            for (std::size_t t = page * 16; t < end; ++t)
              for (std::int64_t i = c * 32; i < (c + 1) * 32; ++i)
                if (scale(t, c) > 0)
                  bound[static_cast<std::size_t>(i)] += 0.5 * top / 255 * std::fabs(static_cast<double>(vs[t][static_cast<std::size_t>(h / 2 * 128 + i)])) / scale(t, c);
          }
        for (std::int64_t i = 0; i < 128; ++i) {
          const double err = std::fabs(out(b, h, i) - ref[static_cast<std::size_t>(i)]);
          max_ref = std::max(max_ref, err);
          excess = std::max(excess, err - bound[static_cast<std::size_t>(i)] - 2e-5);  // and float rounding
        }
      }
    MESSAGE("decode attention over INT4 pages (chunk " << chunk << ") against the f64 attention of their dequantized values: max |error| " << max_ref
                                                       << ", over the 8-bit weights' bound by " << excess);
    CHECK(excess <= 0);
  }
  REQUIRE(paged_decode_attention(q.view(), exact.k_pages<float>(0), exact.v_pages<float>(0), exact.page_table(exact_ids).value().csr(),
                                 want.view())
              .ok());
  REQUIRE(paged_decode_attention(q.view(), pool.k_pages_int4(0), pool.v_pages_int4(0), table.csr(), out.view()).ok());
  // Per sequence: with one token the output is that token's V, so the error is V's own
  // quantization error (up to half a step, max |v| / 14 of its group: ~0.25 for N(0, 1) groups
  // of 32); over many tokens the softmax averages the errors down.
  std::vector<double> max_err(4, 0.0), sq(4, 0.0);
  for (std::int64_t b = 0; b < 4; ++b)
    for (std::int64_t h = 0; h < 4; ++h)
      for (std::int64_t i = 0; i < 128; ++i) {
        const double d = std::fabs(double(out(b, h, i)) - want(b, h, i));
        max_err[static_cast<std::size_t>(b)] = std::max(max_err[static_cast<std::size_t>(b)], d);
        sq[static_cast<std::size_t>(b)] += d * d;
      }
  for (std::size_t b = 0; b < 4; ++b)
    MESSAGE("decode attention, INT4 g32 K/V against f32 K/V on N(0, 1) data, " << kd[b].size() << " tokens: max |error| " << max_err[b]
                                                                                << ", RMS " << std::sqrt(sq[b] / (4 * 128)));
  CHECK(max_err[0] < 0.3);  // one token: V's quantization error, at most max |v| / 14
  CHECK(max_err[1] < 0.2);   // 37 tokens
  CHECK(max_err[2] < 0.1);   // 300 tokens
  CHECK(max_err[3] < 0.2);   // 37 tokens (the fork's pages, another query)
  CHECK(max_err[2] > 0);  // the INT4 path really ran
  // The values-only view is the same storage; views of the wrong kind or layer throw.
  CHECK(pool.k_pages<int4>(0).storage() == pool.k_pages_int4(0).values.storage());
  CHECK(pool.k_pages<int4>(0).shape() == Shape{64, 2, 16, 128});
  CHECK_THROWS_AS((void)pool.k_pages_int8(0), error);
  CHECK_THROWS_AS((void)pool.v_pages_int4(1), error);
  CHECK_THROWS_AS((void)exact.k_pages_int4(0), error);
}
