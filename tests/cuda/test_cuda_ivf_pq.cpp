// quarry/index/cuda_ivf_pq.hpp: IvfPqIndex<cuda> returns what IvfPqIndex<cpu> returns for the
// same trained index and parameters: l2, inner product and cosine; 8-bit and 4-bit codes with
// code sizes that take each of the scan's load paths (16-byte, 4-byte, bytewise, odd m); tables
// in default, opt-in and too little shared memory; l2 with and without the CPU's precomputed
// terms; allowed-id bitsets; k > candidates (padding); re-ranking on stored vectors; exact ties
// (duplicated vectors) broken by id; removed ids; a memory-mapped CPU index; passes of a few
// queries; single queries over long lists (split scans); concurrent searches; and the errors.
//
// How "the same" is checked. Most of the ADC arithmetic is the CPU's, but the coarse products
// q.c, the query-codeword products q.r and the re-ranking distances are summed in another order
// on the GPU, so they agree to float rounding (see the header). Per query and rank, the
// distances must agree to 1e-5 of the data's scale, the ids must be equal at all but a handful
// of ranks (near-ties, at most 1% + 2), and a query whose nprobe-th and (nprobe+1)-th centroids
// are within rounding of each other is left out (the two sides may scan different lists; none
// is expected here).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <unistd.h>

#include <quarry/cuda.hpp>
#include <quarry/index/ivf_pq.hpp>

#include "test_util.hpp"

using namespace quarry;
using quarry::testing::contains;
using quarry::testing::gaussian;

namespace {

// `clusters` Gaussian blobs in d dimensions (as tests/index/test_ivf_pq.cpp makes them).
Tensor<float> blobs(std::int64_t n, std::int64_t d, std::int64_t clusters, std::uint32_t seed) {
  const Tensor<float> centers = gaussian(clusters, d, seed, 4.f);
  Tensor<float> x = gaussian(n, d, seed + 1);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < d; ++j) x(i, j) += centers(i % clusters, j);
  return x;
}

// Queries near the data: rows of x plus noise.
Tensor<float> queries_near(const Tensor<float>& x, std::int64_t nq, std::uint32_t seed) {
  Tensor<float> q = gaussian(nq, x.dim(1), seed, 0.5f);
  for (std::int64_t i = 0; i < nq; ++i)
    for (std::int64_t j = 0; j < x.dim(1); ++j) q(i, j) += x((i * 29) % x.dim(0), j);
  return q;
}

IvfPqTrainOptions quick_training() {
  IvfPqTrainOptions t;
  t.coarse_iterations = 8;
  t.pq_iterations = 8;
  return t;
}

IvfPqIndex<cpu> cpu_index(const Tensor<float>& x, const IvfPqOptions& o, IvfPqTrainOptions t = quick_training()) {
  auto idx = IvfPqIndex<cpu>::create(x.dim(1), o);
  REQUIRE_MESSAGE(idx.ok(), idx.status().to_string());
  const status trained = idx->train(x.view(), t);
  REQUIRE_MESSAGE(trained.ok(), trained.to_string());
  const status added = idx->add(x.view());
  REQUIRE_MESSAGE(added.ok(), added.to_string());
  return std::move(idx).value();
}

IvfPqIndex<cuda> gpu_copy(const IvfPqIndex<cpu>& c) {
  auto g = IvfPqIndex<cuda>::from_cpu(c);
  REQUIRE_MESSAGE(g.ok(), g.status().to_string());
  return std::move(g).value();
}

// The CPU search runs on a thread of its own: IvfPqIndex<cpu> keeps per-thread scratch
// (thread_local) that is resized by element count only, so one thread searching indexes of
// tables [2, 256] and then [32, 16] trips its shape check.
SearchResults run(const IvfPqIndex<cpu>& idx, const Tensor<float>& q, std::int64_t k, const IvfPqSearchParams& p) {
  result<SearchResults> r = status(errc::internal, "not run");
  std::thread([&] {
    try {
      r = idx.search_batch(q.view(), k, p);
    } catch (const error& e) {
      r = status(e.code(), e.what());
    }
  }).join();
  REQUIRE_MESSAGE(r.ok(), r.status().to_string());
  return std::move(r).value();
}
SearchResults run(const IvfPqIndex<cuda>& idx, const Tensor<float>& q, std::int64_t k, const IvfPqSearchParams& p) {
  auto r = idx.search_batch(q.view(), k, p);
  REQUIRE_MESSAGE(r.ok(), r.status().to_string());
  return std::move(r).value();
}

std::vector<double> prepared(const IvfPqIndex<cpu>& idx, const Tensor<float>& q, std::int64_t i) {
  std::vector<double> v(static_cast<std::size_t>(q.dim(1)));
  double n2 = 0;
  for (std::int64_t j = 0; j < q.dim(1); ++j) {
    v[static_cast<std::size_t>(j)] = q(i, j);
    n2 += double(q(i, j)) * q(i, j);
  }
  if (idx.options().metric == Metric::cosine)
    for (double& e : v) e /= std::sqrt(n2);
  return v;
}

// A bound on the magnitude of every distance and coarse value of these queries and this index:
// 2 max ||q||^2 + 2 max(||c||^2, ||x||^2) (1 + that for normalised data).
double scale_of(const IvfPqIndex<cpu>& idx, const Tensor<float>& q, const Tensor<float>* x) {
  double qmax = 0, cmax = 0;
  for (std::int64_t i = 0; i < q.dim(0); ++i) {
    const auto v = prepared(idx, q, i);
    qmax = std::max(qmax, std::inner_product(v.begin(), v.end(), v.begin(), 0.0));
  }
  const auto c = idx.centroids();
  for (std::int64_t l = 0; l < c.dim(0); ++l) {
    double s = 0;
    for (std::int64_t j = 0; j < c.dim(1); ++j) s += double(c(l, j)) * c(l, j);
    cmax = std::max(cmax, s);
  }
  if (x != nullptr && idx.options().metric != Metric::cosine)
    for (std::int64_t i = 0; i < x->dim(0); ++i) {
      double s = 0;
      for (std::int64_t j = 0; j < x->dim(1); ++j) s += double((*x)(i, j)) * (*x)(i, j);
      cmax = std::max(cmax, s);
    }
  return 2 * qmax + 2 * cmax + 1;
}

// Whether query i's nprobe-th and (nprobe + 1)-th nearest centroids are within rounding of each
// other, so that the CPU and the GPU may probe different lists.
bool coarse_ambiguous(const IvfPqIndex<cpu>& idx, const Tensor<float>& q, std::int64_t i, std::int64_t nprobe, double scale) {
  const std::int64_t nlist = idx.options().nlist;
  if (nprobe >= nlist) return false;
  const auto v = prepared(idx, q, i);
  const auto c = idx.centroids();
  std::vector<double> s;
  for (std::int64_t l = 0; l < nlist; ++l) {
    double ip = 0, cc = 0;
    for (std::int64_t j = 0; j < c.dim(1); ++j) {
      ip += v[static_cast<std::size_t>(j)] * c(l, j);
      cc += double(c(l, j)) * c(l, j);
    }
    s.push_back(idx.options().metric == Metric::l2 ? cc - 2 * ip : -ip);
  }
  std::sort(s.begin(), s.end());
  return s[static_cast<std::size_t>(nprobe)] - s[static_cast<std::size_t>(nprobe - 1)] <= 1e-5 * scale;
}

// Checks the GPU's results against the CPU's (see the top of the file).
void expect_same(const IvfPqIndex<cpu>& idx, const Tensor<float>& q, const SearchResults& cpu, const SearchResults& gpu,
                 std::int64_t nprobe, double scale, const std::string& what) {
  INFO(what);
  REQUIRE(gpu.nq == cpu.nq);
  REQUIRE(gpu.k == cpu.k);
  REQUIRE(gpu.ids.size() == cpu.ids.size());
  REQUIRE(gpu.distances.size() == cpu.distances.size());
  const double tol = 1e-5 * scale;
  std::int64_t compared = 0, swapped = 0, skipped = 0, bad_dist = 0, bad_pad = 0;
  for (std::int64_t i = 0; i < cpu.nq; ++i) {
    if (coarse_ambiguous(idx, q, i, std::min(nprobe, idx.options().nlist), scale)) {
      ++skipped;
      continue;
    }
    for (std::int64_t r = 0; r < cpu.k; ++r) {
      ++compared;
      const std::int64_t ic = cpu.id(i, r), ig = gpu.id(i, r);
      const float dc = cpu.distance(i, r), dg = gpu.distance(i, r);
      if (ic == -1 || ig == -1) {
        if (ic != ig || dc != dg) {
          ++bad_pad;
          if (bad_pad <= 5) MESSAGE(fmt::format("query {} rank {}: cpu ({}, {}), gpu ({}, {})", i, r, ic, dc, ig, dg));
        }
        continue;
      }
      if (ic != ig) ++swapped;
      if (!(std::abs(double(dc) - double(dg)) <= tol)) {
        ++bad_dist;
        if (bad_dist <= 5) MESSAGE(fmt::format("query {} rank {}: cpu ({}, {}), gpu ({}, {}), tolerance {}", i, r, ic, dc, ig, dg, tol));
      }
    }
  }
  MESSAGE(fmt::format("{}: {} ranks compared, {} ids differ (near-ties), {} queries left out", what, compared, swapped, skipped));
  CHECK(bad_pad == 0);
  CHECK(bad_dist == 0);
  CHECK(swapped <= compared / 100 + 2);
  CHECK(skipped <= cpu.nq / 20);
  CHECK(compared > 0);
}

void compare(const IvfPqIndex<cpu>& c, const IvfPqIndex<cuda>& g, const Tensor<float>& q, std::int64_t k, const IvfPqSearchParams& p,
             const Tensor<float>* x, const std::string& what) {
  const SearchResults rc = run(c, q, k, p);
  const SearchResults rg = run(g, q, k, p);
  expect_same(c, q, rc, rg, p.nprobe, scale_of(c, q, x), what);
}


std::vector<std::uint64_t> bitset(std::int64_t n_ids, const std::function<bool(std::int64_t)>& allow) {
  std::vector<std::uint64_t> bits(static_cast<std::size_t>((n_ids + 63) / 64), 0);
  for (std::int64_t id = 0; id < n_ids; ++id)
    if (allow(id)) bits[static_cast<std::size_t>(id / 64)] |= std::uint64_t{1} << (id % 64);
  return bits;
}

}  // namespace

TEST_CASE("IvfPqIndex<cuda>: the CPU index's results for l2, ip and cosine, 8 and 4 bits, every code-load path") {
  const Tensor<float> x = blobs(6000, 64, 24, 11);
  const Tensor<float> q = queries_near(x, 200, 12);
  struct Shape {
    int nbits;
    std::int64_t m;
  };
  // 8 bits: code 16 B (16-byte loads), 8 B (4-byte loads), 2 B (bytes). 4 bits: 16 B, 8 B, and
  // m = 1 (one nibble: 16 codes, so many exact ties, broken by id).
  const Shape shapes[] = {{8, 16}, {8, 8}, {8, 2}, {4, 32}, {4, 16}, {4, 1}};
  for (const Metric metric : {Metric::l2, Metric::inner_product, Metric::cosine})
    for (const Shape s : shapes) {
      IvfPqOptions o;
      o.nlist = 32;
      o.m = s.m;
      o.nbits = s.nbits;
      o.metric = metric;
      const IvfPqIndex<cpu> c = cpu_index(x, o);
      const IvfPqIndex<cuda> g = gpu_copy(c);
      CHECK(g.size() == c.size());
      CHECK(g.dim() == c.dim());
      CHECK(g.device() == 0);
      for (std::int64_t l = 0; l < o.nlist; ++l) CHECK(g.list_size(l) == c.list_size(l));
      IvfPqSearchParams p;
      p.nprobe = 6;
      compare(c, g, q, 10, p, &x, fmt::format("{} PQ{}x{} nprobe 6 k 10", metric_name(metric), s.m, s.nbits));
      p.nprobe = 32;
      compare(c, g, q, 50, p, &x, fmt::format("{} PQ{}x{} nprobe 32 k 50", metric_name(metric), s.m, s.nbits));
    }
}

TEST_CASE("IvfPqIndex<cuda>: odd m with 4 bits (the last high nibble is padding)") {
  const Tensor<float> x = blobs(3000, 36, 12, 21);
  const Tensor<float> q = queries_near(x, 100, 22);
  for (const Metric metric : {Metric::l2, Metric::inner_product}) {
    IvfPqOptions o;
    o.nlist = 16;
    o.m = 9;
    o.nbits = 4;
    o.metric = metric;
    const IvfPqIndex<cpu> c = cpu_index(x, o);
    const IvfPqIndex<cuda> g = gpu_copy(c);
    IvfPqSearchParams p;
    p.nprobe = 4;
    compare(c, g, q, 10, p, &x, fmt::format("{} PQ9x4", metric_name(metric)));
  }
}

TEST_CASE("IvfPqIndex<cuda>: tables in opt-in shared memory, in global memory, and l2 without precomputed terms") {
  IvfPqTrainOptions t = quick_training();
  t.coarse_iterations = 4;
  t.pq_iterations = 3;
  SUBCASE("PQ256x8 at d = 256: a 256 KiB table, more than a block's shared memory") {
    const Tensor<float> x = blobs(2000, 256, 8, 31);
    const Tensor<float> q = queries_near(x, 40, 32);
    for (const Metric metric : {Metric::l2, Metric::inner_product}) {
      IvfPqOptions o;
      o.nlist = 8;
      o.m = 256;
      o.metric = metric;
      const IvfPqIndex<cpu> c = cpu_index(x, o, t);
      const IvfPqIndex<cuda> g = gpu_copy(c);
      IvfPqSearchParams p;
      p.nprobe = 3;
      compare(c, g, q, 10, p, &x, fmt::format("{} PQ256x8 (global tables)", metric_name(metric)));
    }
  }
  SUBCASE("PQ128x8 with 2049 lists: a 128 KiB table; nlist * m * 256 > 2^26, so l2 tables of the residual") {
    const Tensor<float> x = blobs(4200, 128, 64, 33);
    const Tensor<float> q = queries_near(x, 40, 34);
    IvfPqOptions o;
    o.nlist = 2049;
    o.m = 128;
    const IvfPqIndex<cpu> c = cpu_index(x, o, t);
    const IvfPqIndex<cuda> g = gpu_copy(c);
    IvfPqSearchParams p;
    p.nprobe = 64;
    compare(c, g, q, 10, p, &x, "l2 PQ128x8, 2049 lists (residual tables)");
  }
}

TEST_CASE("IvfPqIndex<cuda>: allowed-id bitsets; a predicate is refused") {
  const Tensor<float> x = blobs(5000, 32, 16, 41);
  const Tensor<float> q = queries_near(x, 100, 42);
  for (const int nbits : {8, 4}) {
    IvfPqOptions o;
    o.nlist = 20;
    o.m = 8;
    o.nbits = nbits;
    const IvfPqIndex<cpu> c = cpu_index(x, o);
    const IvfPqIndex<cuda> g = gpu_copy(c);
    IvfPqSearchParams p;
    p.nprobe = 5;

    const auto thirds = bitset(5000, [](std::int64_t id) { return id % 3 == 0; });
    p.allowed_ids = thirds;
    compare(c, g, q, 10, p, &x, fmt::format("PQ8x{} every third id", nbits));
    const SearchResults r = run(g, q, 10, p);
    for (const std::int64_t id : r.ids) CHECK((id == -1 || id % 3 == 0));

    // A bitset shorter than the ids: the ids past its end are excluded.
    const auto short_set = bitset(1000, [](std::int64_t) { return true; });
    p.allowed_ids = short_set;
    compare(c, g, q, 10, p, &x, fmt::format("PQ8x{} ids below 1000", nbits));
    for (const std::int64_t id : run(g, q, 10, p).ids) CHECK(id < 1000);

    // Five allowed ids: five results, then padding (when their lists are probed).
    const auto five = bitset(5000, [](std::int64_t id) { return id % 1000 == 7; });
    p.allowed_ids = five;
    p.nprobe = 20;
    compare(c, g, q, 10, p, &x, fmt::format("PQ8x{} five ids", nbits));
    const SearchResults r5 = run(g, q, 10, p);
    for (std::int64_t i = 0; i < r5.nq; ++i) {
      for (std::int64_t rank = 0; rank < 5; ++rank) CHECK(r5.id(i, rank) % 1000 == 7);
      for (std::int64_t rank = 5; rank < 10; ++rank) {
        CHECK(r5.id(i, rank) == -1);
        CHECK(r5.distance(i, rank) == std::numeric_limits<float>::infinity());
      }
    }

    // Nothing allowed.
    const std::vector<std::uint64_t> none(80, 0);
    p.allowed_ids = none;
    for (const std::int64_t id : run(g, q, 10, p).ids) CHECK(id == -1);

    IvfPqSearchParams with_predicate;
    with_predicate.filter = [](std::int64_t id) { return id % 2 == 0; };
    const auto refused = g.search_batch(q.view(), 10, with_predicate);
    REQUIRE(!refused.ok());
    CHECK(refused.status().code() == errc::unsupported);
    CHECK(contains(refused.status(), "allowed_ids"));
  }
}

TEST_CASE("IvfPqIndex<cuda>: k beyond the candidates is padded with -1 and +inf / -inf") {
  const Tensor<float> x = blobs(300, 16, 4, 51);
  const Tensor<float> q = queries_near(x, 30, 52);
  for (const Metric metric : {Metric::l2, Metric::inner_product}) {
    IvfPqOptions o;
    o.nlist = 4;
    o.m = 4;
    o.metric = metric;
    IvfPqTrainOptions t = quick_training();
    const IvfPqIndex<cpu> c = cpu_index(x, o, t);
    const IvfPqIndex<cuda> g = gpu_copy(c);
    IvfPqSearchParams p;
    p.nprobe = 1;
    compare(c, g, q, 500, p, &x, fmt::format("{} k 500 over one list", metric_name(metric)));
    const SearchResults r = run(g, q, 500, p);
    const float pad = metric == Metric::l2 ? std::numeric_limits<float>::infinity() : -std::numeric_limits<float>::infinity();
    for (std::int64_t i = 0; i < r.nq; ++i) {
      std::int64_t found = 0;
      while (found < 500 && r.id(i, found) != -1) ++found;
      CHECK(found < 300);
      for (std::int64_t rank = found; rank < 500; ++rank) {
        CHECK(r.id(i, rank) == -1);
        CHECK(r.distance(i, rank) == pad);
      }
    }
    p.nprobe = 4;
    compare(c, g, q, 400, p, &x, fmt::format("{} k 400 over every list", metric_name(metric)));
  }
}

TEST_CASE("IvfPqIndex<cuda>: re-ranking on stored vectors (refine_factor 1, 4; k * refine_factor up to 4000)") {
  const Tensor<float> x = blobs(5000, 32, 20, 61);
  const Tensor<float> q = queries_near(x, 100, 62);
  for (const Metric metric : {Metric::l2, Metric::inner_product, Metric::cosine})
    for (const int nbits : {8, 4}) {
      IvfPqOptions o;
      o.nlist = 16;
      o.m = 8;
      o.nbits = nbits;
      o.metric = metric;
      o.store_vectors = true;
      const IvfPqIndex<cpu> c = cpu_index(x, o);
      const IvfPqIndex<cuda> g = gpu_copy(c);
      IvfPqSearchParams p;
      p.nprobe = 4;
      for (const std::int64_t refine : {1, 4}) {
        p.refine_factor = refine;
        compare(c, g, q, 10, p, &x, fmt::format("{} PQ8x{} refine {}", metric_name(metric), nbits, refine));
      }
      p.nprobe = 16;
      p.refine_factor = 4;
      const Tensor<float> few = queries_near(x, 10, 63);
      compare(c, g, few, 1000, p, &x, fmt::format("{} PQ8x{} k 1000 refine 4", metric_name(metric), nbits));
    }
}

TEST_CASE("IvfPqIndex<cuda>: exact ties (each vector four times, ids shuffled) are broken by the smaller id, as on the CPU") {
  const Tensor<float> base = blobs(600, 16, 6, 71);
  Tensor<float> x = Tensor<float>::uninitialized({2400, 16});
  for (std::int64_t i = 0; i < 2400; ++i)
    for (std::int64_t j = 0; j < 16; ++j) x(i, j) = base(i / 4, j);
  std::vector<std::int64_t> ids(2400);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(72));
  const Tensor<float> q = queries_near(base, 60, 73);
  for (const bool store : {false, true})
    for (const int nbits : {8, 4}) {
      IvfPqOptions o;
      o.nlist = 8;
      o.m = 4;
      o.nbits = nbits;
      o.store_vectors = store;
      auto made = IvfPqIndex<cpu>::create(16, o);
      REQUIRE(made.ok());
      IvfPqIndex<cpu> c = std::move(made).value();
      REQUIRE(c.train(x.view(), quick_training()).ok());
      REQUIRE(c.add_with_ids(x.view(), ids).ok());
      const IvfPqIndex<cuda> g = gpu_copy(c);
      IvfPqSearchParams p;
      p.nprobe = 3;
      p.refine_factor = store ? 2 : 1;
      compare(c, g, q, 7, p, &x, fmt::format("duplicates PQ4x{} store {}", nbits, store));
      // Within a group of equal distances the ids ascend.
      const SearchResults r = run(g, q, 7, p);
      for (std::int64_t i = 0; i < r.nq; ++i)
        for (std::int64_t rank = 1; rank < 7; ++rank)
          if (r.distance(i, rank) == r.distance(i, rank - 1)) CHECK(r.id(i, rank) > r.id(i, rank - 1));
    }
}

TEST_CASE("IvfPqIndex<cuda>: a copy after remove(), and a copy of a memory-mapped CPU index") {
  const Tensor<float> x = blobs(3000, 32, 12, 81);
  const Tensor<float> q = queries_near(x, 80, 82);
  for (const int nbits : {8, 4}) {
    IvfPqOptions o;
    o.nlist = 12;
    o.m = 8;
    o.nbits = nbits;
    o.store_vectors = true;
    IvfPqIndex<cpu> c = cpu_index(x, o);
    std::vector<std::int64_t> gone;  // two ids in five (blobs() puts row i in cluster i % 12)
    for (std::int64_t id = 0; id < 3000; ++id)
      if (id % 5 < 2) gone.push_back(id);
    CHECK(c.remove(gone) == 1200);
    const IvfPqIndex<cuda> g = gpu_copy(c);
    CHECK(g.size() == 1800);
    IvfPqSearchParams p;
    p.nprobe = 4;
    p.refine_factor = 2;
    compare(c, g, q, 10, p, &x, fmt::format("after remove PQ8x{}", nbits));
    for (const std::int64_t id : run(g, q, 10, p).ids) CHECK(id % 5 >= 2);

    const auto dir = std::filesystem::temp_directory_path() / ("quarry_test_cuda_ivf_pq_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    const std::string path = (dir / fmt::format("index{}.qry", nbits)).string();
    REQUIRE(c.save(path).ok());
    IvfPqLoadOptions lo;
    lo.mmap = true;
    auto mapped = IvfPqIndex<cpu>::load(path, lo);
    REQUIRE_MESSAGE(mapped.ok(), mapped.status().to_string());
    const IvfPqIndex<cuda> gm = gpu_copy(*mapped);
    compare(*mapped, gm, q, 10, p, &x, fmt::format("memory-mapped PQ8x{}", nbits));
    const SearchResults a = run(g, q, 10, p), b = run(gm, q, 10, p);
    CHECK(a.ids == b.ids);
    CHECK(a.distances == b.distances);
    std::filesystem::remove_all(dir);
  }
}

TEST_CASE("IvfPqIndex<cuda>: passes of a few queries, single queries, long lists split over blocks, concurrent searches") {
  const Tensor<float> x = blobs(20000, 16, 8, 91);
  const Tensor<float> q = queries_near(x, 50, 92);
  IvfPqOptions o;
  o.nlist = 2;  // lists of ~10000: a single query's scan is split over several blocks
  o.m = 4;
  const IvfPqIndex<cpu> c = cpu_index(x, o);
  IvfPqIndex<cuda> g = gpu_copy(c);
  IvfPqSearchParams p;
  p.nprobe = 1;
  const SearchResults all = run(g, q, 20, p);
  compare(c, g, q, 20, p, &x, "two long lists");

  for (std::int64_t i = 0; i < q.dim(0); ++i) {
    auto one = g.search(std::span<const float>(&q(i, 0), 16), 20, p);
    REQUIRE(one.ok());
    for (std::int64_t r = 0; r < 20; ++r) {
      CHECK(one->id(0, r) == all.id(i, r));
      CHECK(one->distance(0, r) == all.distance(i, r));
    }
  }

  g.set_max_queries_per_pass(7);
  const SearchResults passes = run(g, q, 20, p);
  CHECK(passes.ids == all.ids);
  CHECK(passes.distances == all.distances);
  g.set_max_queries_per_pass(0);

  std::vector<SearchResults> got(4);
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < got.size(); ++t)
    threads.emplace_back([&, t] {
      auto r = g.search_batch(q.view(), 20, p);
      if (r.ok()) got[t] = std::move(r).value();
    });
  for (auto& t : threads) t.join();
  for (const SearchResults& r : got) {
    CHECK(r.ids == all.ids);
    CHECK(r.distances == all.distances);
  }
}

TEST_CASE("IvfPqIndex<cuda>: an empty index, strided queries, and zero queries") {
  const Tensor<float> x = blobs(1000, 16, 4, 101);
  IvfPqOptions o;
  o.nlist = 4;
  o.m = 4;
  auto made = IvfPqIndex<cpu>::create(16, o);
  REQUIRE(made.ok());
  IvfPqIndex<cpu> c = std::move(made).value();
  REQUIRE(c.train(x.view(), quick_training()).ok());
  const IvfPqIndex<cuda> empty = gpu_copy(c);
  const Tensor<float> q = queries_near(x, 5, 102);
  const SearchResults r = run(empty, q, 3, {});
  for (std::size_t i = 0; i < r.ids.size(); ++i) {
    CHECK(r.ids[i] == -1);
    CHECK(r.distances[i] == std::numeric_limits<float>::infinity());
  }

  REQUIRE(c.add(x.view()).ok());
  const IvfPqIndex<cuda> g = gpu_copy(c);
  // Every other column of a [5, 32] matrix: a strided view.
  Tensor<float> wide = Tensor<float>::uninitialized({5, 32});
  for (std::int64_t i = 0; i < 5; ++i)
    for (std::int64_t j = 0; j < 16; ++j) {
      wide(i, 2 * j) = q(i, j);
      wide(i, 2 * j + 1) = 1e9f;
    }
  const TensorView<const float> strided(wide.data(), Shape{5, 16}, Strides{32, 2});
  auto a = g.search_batch(strided, 5, {});
  REQUIRE_MESSAGE(a.ok(), a.status().to_string());
  const SearchResults b = run(g, q, 5, {});
  CHECK(a->ids == b.ids);
  CHECK(a->distances == b.distances);

  auto none = g.search_batch(TensorView<const float>(q.data(), Shape{0, 16}), 5, {});
  REQUIRE(none.ok());
  CHECK(none->nq == 0);
  CHECK(none->ids.empty());
}

TEST_CASE("IvfPqIndex<cuda>: errors") {
  const Tensor<float> x = blobs(1000, 16, 4, 111);
  IvfPqOptions o;
  o.nlist = 4;
  o.m = 4;
  o.metric = Metric::cosine;
  auto untrained = IvfPqIndex<cpu>::create(16, o);
  REQUIRE(untrained.ok());
  const auto from_untrained = IvfPqIndex<cuda>::from_cpu(*untrained);
  REQUIRE(!from_untrained.ok());
  CHECK(from_untrained.status().code() == errc::invalid_argument);
  CHECK(contains(from_untrained.status(), "not trained"));

  const IvfPqIndex<cpu> c = cpu_index(x, o);
  const auto no_device = IvfPqIndex<cuda>::from_cpu(c, 999);
  REQUIRE(!no_device.ok());
  CHECK(contains(no_device.status(), "999"));

  const IvfPqIndex<cuda> g = gpu_copy(c);
  const Tensor<float> q = queries_near(x, 3, 112);
  auto code_of = [&](std::int64_t k, const IvfPqSearchParams& p) { return g.search_batch(q.view(), k, p).status().code(); };
  IvfPqSearchParams p;
  CHECK(code_of(0, p) == errc::invalid_argument);
  p.nprobe = 0;
  CHECK(code_of(5, p) == errc::invalid_argument);
  p.nprobe = 2;
  p.refine_factor = 0;
  CHECK(code_of(5, p) == errc::invalid_argument);
  p.refine_factor = 5;
  CHECK(code_of(1000, p) == errc::unsupported);  // 5000 candidates
  CHECK(code_of(819, p) == errc::ok);            // 4095
  p.refine_factor = 1;
  CHECK(code_of(4096, p) == errc::ok);
  CHECK(code_of(4097, p) == errc::unsupported);

  const Tensor<float> wrong = gaussian(2, 15, 113);
  const auto shape = g.search_batch(wrong.view(), 5, {});
  REQUIRE(!shape.ok());
  CHECK(shape.status().code() == errc::shape_mismatch);

  Tensor<float> bad = q.clone();
  bad(1, 3) = std::numeric_limits<float>::quiet_NaN();
  const auto nan = g.search_batch(bad.view(), 5, {});
  REQUIRE(!nan.ok());
  CHECK(nan.status().code() == errc::invalid_argument);
  CHECK(contains(nan.status(), "row 1"));

  Tensor<float> zero = q.clone();
  for (std::int64_t j = 0; j < 16; ++j) zero(2, j) = 0.f;
  const auto zq = g.search_batch(zero.view(), 5, {});
  REQUIRE(!zq.ok());
  CHECK(zq.status().code() == errc::invalid_argument);
  CHECK(contains(zq.status(), "row 2"));

  const IvfPqIndex<cuda> nothing;
  CHECK(nothing.device() == -1);
  const auto from_nothing = nothing.search_batch(q.view(), 5, {});
  REQUIRE(!from_nothing.ok());
  CHECK(from_nothing.status().code() == errc::invalid_argument);
}
