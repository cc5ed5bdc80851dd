#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <unistd.h>
#include <limits>
#include <mutex>
#include <numeric>
#include <random>
#include <shared_mutex>
#include <thread>
#include <tuple>
#include <vector>

#include <quarry/index/ivf_pq.hpp>
#include <quarry/io/mapped_file.hpp>
#include <quarry/io/section_file.hpp>
#include <quarry/io/vecs.hpp>

#include "shared_data.hpp"
#include "test_util.hpp"

using namespace quarry;
using quarry::testing::gaussian;

namespace {

// Clustered data: `clusters` Gaussian blobs in d dimensions.
Tensor<float> blobs(std::int64_t n, std::int64_t d, std::int64_t clusters, std::uint32_t seed) {
  const Tensor<float> centers = gaussian(clusters, d, seed, 4.f);
  Tensor<float> x = gaussian(n, d, seed + 1);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < d; ++j) x(i, j) += centers(i % clusters, j);
  return x;
}

// Exact top-k by brute force, (distance, id) ordered as the index orders its results.
std::vector<std::int64_t> brute_force(const Tensor<float>& x, std::span<const float> q, std::int64_t k, Metric metric) {
  const std::int64_t n = x.dim(0), d = x.dim(1);
  double qn = 0;
  for (float v : q) qn += double(v) * v;
  std::vector<std::pair<double, std::int64_t>> all;
  for (std::int64_t i = 0; i < n; ++i) {
    double dist = 0, ip = 0, xn = 0;
    for (std::int64_t j = 0; j < d; ++j) {
      const double e = double(x(i, j)) - q[static_cast<std::size_t>(j)];
      dist += e * e;
      ip += double(x(i, j)) * q[static_cast<std::size_t>(j)];
      xn += double(x(i, j)) * x(i, j);
    }
    const double key = metric == Metric::l2 ? dist : (metric == Metric::inner_product ? -ip : -ip / std::sqrt(xn * qn));
    all.push_back({key, i});
  }
  std::sort(all.begin(), all.end());
  std::vector<std::int64_t> ids;
  for (std::int64_t r = 0; r < k; ++r) ids.push_back(all[static_cast<std::size_t>(r)].second);
  return ids;
}

// A fresh folder under the system's temp directory for this process.
std::string temp_dir(const std::string& name) {
  const auto p = std::filesystem::temp_directory_path() / ("quarry_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::create_directories(p);
  return p.string();
}

IvfPqIndex<cpu> trained_index(const Tensor<float>& x, IvfPqOptions o) {
  auto idx = IvfPqIndex<cpu>::create(x.dim(1), o);
  REQUIRE(idx.ok());
  REQUIRE(idx->train(x.view()).ok());
  REQUIRE(idx->add(x.view()).ok());
  return std::move(idx).value();
}

}  // namespace

TEST_CASE("IvfPqIndex: with every list probed and every vector re-ranked, results are exact (l2, ip, cosine; 8 and 4 bits)") {
  const Tensor<float> x = blobs(600, 32, 12, 5);
  const Tensor<float> queries = blobs(20, 32, 12, 99);
  for (Metric metric : {Metric::l2, Metric::inner_product, Metric::cosine}) {
    for (int nbits : {8, 4}) {
      INFO("metric " << metric_name(metric) << " nbits " << nbits);
      auto idx = trained_index(x, {.nlist = 8, .m = 8, .nbits = nbits, .metric = metric, .store_vectors = true});
      CHECK(idx.size() == 600);
      const auto res = idx.search_batch(queries.view(), 10, {.nprobe = 8, .refine_factor = 60});
      REQUIRE(res.ok());
      for (std::int64_t q = 0; q < 20; ++q) {
        const auto want = brute_force(x, {&queries(q, 0), 32}, 10, metric);
        for (std::int64_t r = 0; r < 10; ++r) CHECK(res->id(q, r) == want[static_cast<std::size_t>(r)]);
        for (std::int64_t r = 1; r < 10; ++r) {
          if (metric == Metric::l2) CHECK(res->distance(q, r - 1) <= res->distance(q, r));
          else CHECK(res->distance(q, r - 1) >= res->distance(q, r));
        }
      }
    }
  }
}

TEST_CASE("IvfPqIndex: without re-ranking, the results are exactly the best ADC distances (fast-scan prunes nothing it should keep)") {
  const Tensor<float> x = blobs(3000, 32, 20, 7);
  const Tensor<float> queries = blobs(25, 32, 20, 70);
  for (int nbits : {8, 4}) {
    for (Metric metric : {Metric::l2, Metric::inner_product}) {
      INFO("nbits " << nbits << " metric " << metric_name(metric));
      // one list: its residual tables and codes can be rebuilt here from the public parts
      auto idx = trained_index(x, {.nlist = 1, .m = 8, .nbits = nbits, .metric = metric});
      for (const bool terms : {true, false}) {  // l2: tables from precomputed terms, and from the residuals
      INFO("precomputed terms allowed: " << terms);
      idx.set_max_precomputed_floats(terms ? std::int64_t{1} << 26 : 0);
      CHECK(idx.uses_precomputed_terms() == (terms && metric == Metric::l2));
      const auto c = idx.centroids();
      Tensor<float> residuals({3000, 32});
      for (std::int64_t i = 0; i < 3000; ++i)
        for (std::int64_t j = 0; j < 32; ++j) residuals(i, j) = x(i, j) - c(0, j);
      const auto codes = idx.pq().encode(residuals.view());
      REQUIRE(codes.ok());
      const auto res = idx.search_batch(queries.view(), 10, {.nprobe = 1});
      REQUIRE(res.ok());
      for (std::int64_t q = 0; q < 25; ++q) {
        std::vector<float> qr(32);
        float qc = 0;
        for (std::int64_t j = 0; j < 32; ++j) {
          qr[static_cast<std::size_t>(j)] = metric == Metric::l2 ? queries(q, j) - c(0, j) : queries(q, j);
          qc += queries(q, j) * c(0, j);
        }
        const Tensor<float> table = idx.pq().compute_distance_table(qr, metric);
        std::vector<std::pair<float, std::int64_t>> all;
        for (std::int64_t i = 0; i < 3000; ++i) {
          const float s = idx.pq().adc_distance(table.data(), &(*codes)(i, 0));
          all.push_back({metric == Metric::l2 ? s : -qc - s, i});
        }
        std::sort(all.begin(), all.end());
        // The index sums its tables in another order (l2: precomputed terms), so distances may
        // differ in the last bits: every result must be within rounding of the true 10 best.
        std::vector<float> ref(3000);
        for (const auto& [dist, i] : all) ref[static_cast<std::size_t>(i)] = dist;
        const float tenth = all[9].first, tol = 1e-4f * (std::fabs(tenth) + 1.f);
        for (std::int64_t r = 0; r < 10; ++r) {
          REQUIRE(res->id(q, r) >= 0);
          CHECK(ref[static_cast<std::size_t>(res->id(q, r))] <= tenth + tol);
          CHECK(std::fabs(res->distance(q, r) - (metric == Metric::l2 ? 1.f : -1.f) * all[static_cast<std::size_t>(r)].first) <= tol);
        }
      }
      }
    }
  }
}

TEST_CASE("IvfPqIndex: l2 without precomputed terms (per-list residual tables) gives the results of the terms, over many lists") {
  const Tensor<float> x = blobs(4000, 32, 40, 17);
  const Tensor<float> queries = blobs(40, 32, 40, 170);
  for (int nbits : {8, 4}) {
    INFO("nbits " << nbits);
    auto idx = trained_index(x, {.nlist = 16, .m = 8, .nbits = nbits});
    REQUIRE(idx.uses_precomputed_terms());
    const auto with = idx.search_batch(queries.view(), 10, {.nprobe = 5}).value();
    idx.set_max_precomputed_floats(16 * 8 * idx.pq().ksub() - 1);  // one float short: no terms
    REQUIRE_FALSE(idx.uses_precomputed_terms());
    const auto without = idx.search_batch(queries.view(), 10, {.nprobe = 5}).value();
    std::int64_t same = 0;
    for (std::int64_t i = 0; i < 400; ++i) {
      same += with.ids[static_cast<std::size_t>(i)] == without.ids[static_cast<std::size_t>(i)];
      CHECK(std::fabs(with.distances[static_cast<std::size_t>(i)] - without.distances[static_cast<std::size_t>(i)]) <=
            1e-4f * (std::fabs(with.distances[static_cast<std::size_t>(i)]) + 1.f));
    }
    CHECK(same >= 396);  // equal but for near-ties at float rounding
    idx.set_max_precomputed_floats(std::int64_t{1} << 26);
    CHECK(idx.uses_precomputed_terms());
  }
}

TEST_CASE("IvfPqIndex: filters are applied during the scan, so k results still come back") {
  const Tensor<float> x = blobs(800, 16, 8, 11);
  for (int nbits : {8, 4}) {
    auto idx = trained_index(x, {.nlist = 4, .m = 4, .nbits = nbits, .store_vectors = true});
    const std::vector<float> q(&x(3, 0), &x(3, 0) + 16);
    IvfPqSearchParams even;
    even.nprobe = 4;
    even.filter = [](std::int64_t id) { return id % 2 == 0; };
    auto res = idx.search(q, 20, even);
    REQUIRE(res.ok());
    for (std::int64_t r = 0; r < 20; ++r) {
      CHECK(res->id(0, r) >= 0);
      CHECK(res->id(0, r) % 2 == 0);
    }
    std::vector<std::uint64_t> bits((800 + 63) / 64, 0);
    for (std::int64_t id : {5, 17, 500, 799}) bits[static_cast<std::size_t>(id / 64)] |= std::uint64_t{1} << (id % 64);
    IvfPqSearchParams only;
    only.nprobe = 4;
    only.allowed_ids = bits;
    res = idx.search(q, 6, only);
    REQUIRE(res.ok());
    std::vector<std::int64_t> got(res->ids.begin(), res->ids.begin() + 4);
    std::sort(got.begin(), got.end());
    CHECK(got == std::vector<std::int64_t>{5, 17, 500, 799});
    CHECK(res->id(0, 4) == -1);  // only four pass: padded
    CHECK(res->distance(0, 5) == std::numeric_limits<float>::infinity());
    // both together: the predicate and the bitset
    only.filter = [](std::int64_t id) { return id > 100; };
    res = idx.search(q, 6, only);
    REQUIRE(res.ok());
    CHECK(res->id(0, 2) == -1);
  }
}

TEST_CASE("IvfPqIndex: removed ids never come back, their space is reused, and ids can be added again") {
  const Tensor<float> x = blobs(400, 16, 4, 13);
  for (int nbits : {8, 4}) {
    auto idx = trained_index(x, {.nlist = 4, .m = 4, .nbits = nbits, .store_vectors = true});
    std::vector<std::int64_t> gone;
    for (std::int64_t id = 0; id < 400; id += 3) gone.push_back(id);
    gone.push_back(12345);  // not in the index: ignored
    CHECK(idx.remove(gone) == static_cast<std::int64_t>(gone.size()) - 1);
    CHECK(idx.size() == 400 - 134);
    std::int64_t held = 0;
    for (std::int64_t l = 0; l < 4; ++l) held += idx.list_size(l);
    CHECK(held == idx.size());
    for (std::int64_t q = 0; q < 400; q += 7) {
      const std::vector<float> qv(&x(q, 0), &x(q, 0) + 16);
      auto res = idx.search(qv, 30, {.nprobe = 4, .refine_factor = 3});
      REQUIRE(res.ok());
      for (std::int64_t id : res->ids) CHECK((id >= 0 && id % 3 != 0));
      if (q % 3 != 0) CHECK(res->id(0, 0) == q);  // a vector still present finds itself first (exact re-ranking)
    }
    // the removed ids go back in with other vectors
    Tensor<float> again({2, 16});
    for (std::int64_t j = 0; j < 16; ++j) again(0, j) = again(1, j) = 100.f;
    const std::vector<std::int64_t> ids = {0, 3};
    REQUIRE(idx.add_with_ids(again.view(), ids).ok());
    const std::vector<float> far(16, 100.f);
    auto res = idx.search(far, 2, {.nprobe = 4});
    REQUIRE(res.ok());
    CHECK(res->id(0, 0) == 0);  // equal distances: the smaller id first
    CHECK(res->id(0, 1) == 3);
  }
}

TEST_CASE("IvfPqIndex: k beyond the vectors, an empty index, ties by id") {
  const Tensor<float> x = blobs(300, 8, 3, 17);
  auto idx = IvfPqIndex<cpu>::create(8, {.nlist = 2, .m = 2, .nbits = 4});
  REQUIRE(idx.ok());
  REQUIRE(idx->train(x.view()).ok());
  const std::vector<float> q(8, 0.f);
  auto res = idx->search(q, 5);  // trained but empty
  REQUIRE(res.ok());
  for (std::int64_t r = 0; r < 5; ++r) {
    CHECK(res->id(0, r) == -1);
    CHECK(res->distance(0, r) == std::numeric_limits<float>::infinity());
  }
  Tensor<float> dup({3, 8});
  for (std::int64_t i = 0; i < 3; ++i)
    for (std::int64_t j = 0; j < 8; ++j) dup(i, j) = 1.f;
  const std::vector<std::int64_t> ids = {42, 7, 19};
  REQUIRE(idx->add_with_ids(dup.view(), ids).ok());
  res = idx->search(q, 10, {.nprobe = 2});
  REQUIRE(res.ok());
  CHECK(res->id(0, 0) == 7);
  CHECK(res->id(0, 1) == 19);
  CHECK(res->id(0, 2) == 42);
  CHECK(res->id(0, 3) == -1);
  CHECK(idx->next_id() == 43);
}

TEST_CASE("IvfPqIndex: bad input gets a clear error") {
  using quarry::testing::contains;
  CHECK(contains(IvfPqIndex<cpu>::create(30, {.nlist = 4, .m = 8}).status(), "multiple"));
  const Tensor<float> tiny = gaussian(10, 16, 1), five = gaussian(5, 15, 1), two = gaussian(2, 16, 3), one = gaussian(1, 16, 3);
  CHECK_FALSE(IvfPqIndex<cpu>::create(32, {.nlist = 0, .m = 8}).ok());
  CHECK_FALSE(IvfPqIndex<cpu>::create(32, {.nlist = 4, .m = 8, .nbits = 6}).ok());
  auto idx = IvfPqIndex<cpu>::create(16, {.nlist = 4, .m = 4, .nbits = 8, .metric = Metric::cosine});
  REQUIRE(idx.ok());
  const std::vector<float> q(16, 1.f);
  CHECK(contains(idx->search(q, 3).status(), "not trained"));
  Tensor<float> x = blobs(300, 16, 4, 19);
  CHECK(contains(idx->add(x.view()), "not trained"));
  CHECK(contains(idx->train(tiny.view()), "10 training vectors"));
  Tensor<float> bad = x.clone();
  bad(123, 5) = std::numeric_limits<float>::quiet_NaN();
  CHECK(contains(idx->train(bad.view()), "row 123"));
  for (std::int64_t j = 0; j < 16; ++j) bad(77, j) = 0.f;
  bad(123, 5) = 1.f;
  CHECK(contains(idx->train(bad.view()), "row 77 is a zero vector"));
  REQUIRE(idx->train(x.view()).ok());
  CHECK(contains(idx->add(five.view()), "dimension 16"));
  CHECK(contains(idx->search(std::vector<float>(15, 1.f), 3).status(), "dimension 16"));
  CHECK(contains(idx->search(q, 0).status(), "k = 0"));
  CHECK(contains(idx->search(q, 3, {.nprobe = 0}).status(), "nprobe"));
  CHECK(contains(idx->search(std::vector<float>(16, 0.f), 3).status(), "zero vector"));
  std::vector<float> inf_q(16, 1.f);
  inf_q[2] = std::numeric_limits<float>::infinity();
  CHECK(contains(idx->search(inf_q, 3).status(), "infinite"));
  const std::vector<std::int64_t> neg = {0, -5};
  CHECK(contains(idx->add_with_ids(two.view(), neg), "negative"));
  const std::vector<std::int64_t> twice = {9, 9};
  CHECK(contains(idx->add_with_ids(two.view(), twice), "twice"));
  CHECK(idx->size() == 0);  // a failed add changes nothing
  REQUIRE(idx->add(x.view()).ok());
  const std::vector<std::int64_t> taken = {4};
  CHECK(contains(idx->add_with_ids(one.view(), taken), "already"));
}

TEST_CASE("IvfPqIndex: search_batch on a pool equals one search at a time") {
  const Tensor<float> x = blobs(1000, 32, 10, 23);
  const Tensor<float> queries = blobs(40, 32, 10, 24);
  auto idx = trained_index(x, {.nlist = 10, .m = 8, .nbits = 4, .store_vectors = true});
  ThreadPool pool(3);
  const auto batch = idx.search_batch(queries.view(), 7, {.nprobe = 3, .refine_factor = 2}, &pool);
  REQUIRE(batch.ok());
  for (std::int64_t q = 0; q < 40; ++q) {
    const auto one = idx.search({&queries(q, 0), 32}, 7, {.nprobe = 3, .refine_factor = 2});
    REQUIRE(one.ok());
    for (std::int64_t r = 0; r < 7; ++r) {
      CHECK(one->id(0, r) == batch->id(q, r));
      CHECK(one->distance(0, r) == batch->distance(q, r));
    }
  }
}

TEST_CASE("IvfPqIndex: many threads search while a writer adds and removes under an exclusive lock") {
  const Tensor<float> x = blobs(1200, 16, 6, 29);
  auto idx = IvfPqIndex<cpu>::create(16, {.nlist = 6, .m = 4, .nbits = 4, .store_vectors = true}).value();
  REQUIRE(idx.train(x.view()).ok());
  REQUIRE(idx.add(TensorView<const float>(x.data(), Shape{600, 16})).ok());
  std::shared_mutex mutex;
  std::atomic<bool> stop{false};
  std::atomic<std::int64_t> searches{0}, bad{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t)
    readers.emplace_back([&, t] {
      std::int64_t q = t;
      while (!stop) {
        std::shared_lock lock(mutex);
        const auto res = idx.search({&x(q % 1200, 0), 16}, 5, {.nprobe = 6});
        if (!res.ok()) ++bad;
        for (std::int64_t r = 0; res.ok() && r < 5; ++r)
          if (res->id(0, r) < -1 || res->id(0, r) >= 1200) ++bad;
        ++searches;
        q += 3;
        lock.unlock();
        std::this_thread::sleep_for(std::chrono::microseconds(50));  // glibc's rwlock prefers readers: let the writer in
      }
    });
  for (std::int64_t b = 600; b < 1200; b += 50) {
    // let the readers search between the writes (bounded wait: a stuck reader fails the checks below)
    const std::int64_t seen = searches;
    for (int spin = 0; spin < 20000 && searches <= seen; ++spin) std::this_thread::sleep_for(std::chrono::microseconds(50));
    std::unique_lock lock(mutex);
    REQUIRE(idx.add(TensorView<const float>(&x(b, 0), Shape{50, 16})).ok());
    std::vector<std::int64_t> gone = {b - 600, b - 599};
    CHECK(idx.remove(gone) == 2);
  }
  stop = true;
  for (auto& r : readers) r.join();
  CHECK(bad == 0);
  CHECK(searches >= 12);  // readers ran between every write
  CHECK(idx.size() == 1200 - 24);
}

TEST_CASE("IvfPqIndex on real SIFT vectors (bigann10k): recall at nprobe 8, with and without re-ranking") {
  QUARRY_REQUIRE_SHARED_DATA(base_path, "ann/bigann10k/base.bvecs");
  QUARRY_REQUIRE_SHARED_DATA(query_path, "ann/bigann10k/query.bvecs");
  QUARRY_REQUIRE_SHARED_DATA(gt_path, "ann/bigann10k/groundtruth.ivecs");
  auto base = read_bvecs_as_float(base_path);
  auto queries = read_bvecs_as_float(query_path);
  auto gt = read_ivecs(gt_path);
  REQUIRE(base.ok());
  REQUIRE(queries.ok());
  REQUIRE(gt.ok());
  const std::int64_t nq = queries->dim(0);
  for (int nbits : {8, 4}) {
    if (testing::kSanitized && nbits == 8) continue;  // Eigen is ~20x slower there: one variant is enough
    auto made = IvfPqIndex<cpu>::create(128, {.nlist = 64, .m = nbits == 8 ? 16 : 32, .nbits = nbits, .store_vectors = true});
    REQUIRE(made.ok());
    auto& idx = *made;
    IvfPqTrainOptions to;
    if (testing::kSanitized) to.coarse_iterations = to.pq_iterations = 6;
    REQUIRE(idx.train(base->view(), to).ok());
    REQUIRE(idx.add(base->view()).ok());
    for (std::int64_t refine : {1, 8}) {
      const auto res = idx.search_batch(queries->view(), 10, {.nprobe = 8, .refine_factor = refine});
      REQUIRE(res.ok());
      double r1 = 0, r10 = 0;
      for (std::int64_t q = 0; q < nq; ++q) {
        const std::int64_t truth = (*gt)(q, 0);
        r1 += res->id(q, 0) == truth;
        for (std::int64_t r = 0; r < 10; ++r) r10 += res->id(q, r) == truth;
      }
      r1 /= double(nq);
      r10 /= double(nq);
      MESSAGE("bigann10k nlist 64 nprobe 8, " << nbits << "-bit PQ, refine x" << refine << ": recall@1 " << r1 << ", recall@10 " << r10);
      CHECK(r10 >= 0.85);
      if (refine > 1) CHECK(r1 >= 0.85);
    }
  }
}

TEST_CASE("IvfPqIndex: save and load (copied or memory-mapped) give the same results; the file is checked") {
  const Tensor<float> x = blobs(700, 16, 7, 31);
  const Tensor<float> queries = blobs(12, 16, 7, 32);
  const std::string dir = temp_dir("ivfpq");
  for (int nbits : {8, 4}) {
    for (bool store : {false, true}) {
      INFO("nbits " << nbits << " store_vectors " << store);
      auto idx = trained_index(x, {.nlist = 5, .m = 4, .nbits = nbits, .metric = Metric::cosine, .store_vectors = store});
      std::vector<std::int64_t> gone = {1, 2, 3, 500};
      idx.remove(gone);
      const std::string path = dir + "/index.qry";
      REQUIRE(idx.save(path).ok());
      const auto want = idx.search_batch(queries.view(), 8, {.nprobe = 3, .refine_factor = 2});
      REQUIRE(want.ok());
      for (bool mmap : {false, true}) {
        auto loaded = IvfPqIndex<cpu>::load(path, {.mmap = mmap});
        REQUIRE(loaded.ok());
        CHECK(loaded->size() == idx.size());
        CHECK(loaded->next_id() == idx.next_id());
        CHECK_FALSE(loaded->contains(2));
        const auto got = loaded->search_batch(queries.view(), 8, {.nprobe = 3, .refine_factor = 2});
        REQUIRE(got.ok());
        CHECK(got->ids == want->ids);
        CHECK(got->distances == want->distances);
        // a mapped index copies a list on its first change, and goes on working
        std::vector<std::int64_t> more = {10, 11};
        CHECK(loaded->remove(more) == 2);
        REQUIRE(loaded->add(queries.view()).ok());
        CHECK(loaded->size() == idx.size() - 2 + 12);
      }
    }
  }
}

TEST_CASE("IvfPqIndex::load: a file cut at any byte or with any bit flipped is a clear error, never a crash") {
  const Tensor<float> x = blobs(300, 8, 3, 33);
  auto idx = trained_index(x, {.nlist = 2, .m = 2, .nbits = 4, .store_vectors = true});
  std::vector<std::int64_t> few;
  for (std::int64_t i = 20; i < 300; ++i) few.push_back(i);
  idx.remove(few);  // a small file: 20 vectors
  const std::string path = temp_dir("ivfpq_bad") + "/index.qry";
  REQUIRE(idx.save(path).ok());
  std::vector<std::byte> bytes;
  {
    auto mapped = MappedFile::open(path);
    REQUIRE(mapped.ok());
    bytes.assign(mapped->bytes().begin(), mapped->bytes().end());
  }
  REQUIRE(IvfPqIndex<cpu>::load_bytes(bytes).ok());
  for (std::size_t cut = 0; cut < bytes.size(); ++cut) {
    const auto r = IvfPqIndex<cpu>::load_bytes(std::span<const std::byte>(bytes).first(cut));
    REQUIRE_FALSE(r.ok());
  }
  std::size_t flips = 0;
  for (std::size_t at = 0; at < bytes.size(); ++at) {
    for (int bit = 0; bit < 8; ++bit) {
      std::vector<std::byte> bad = bytes;
      bad[at] ^= std::byte(1u << bit);
      const auto r = IvfPqIndex<cpu>::load_bytes(bad);
      REQUIRE_FALSE(r.ok());
      REQUIRE(r.status().message().find("IVF-PQ") != std::string::npos);
      ++flips;
    }
  }
  MESSAGE(bytes.size() << "-byte file: every cut and " << flips << " bit flips rejected");
  // a file of another kind
  CHECK(quarry::testing::contains(IvfPqIndex<cpu>::load(path + ".missing").status(), "missing"));
}

TEST_CASE("IvfPqIndex::load: files with valid checksums but inconsistent contents are rejected by name") {
  using quarry::testing::contains;
  const Tensor<float> x = blobs(300, 8, 3, 35);
  auto idx = trained_index(x, {.nlist = 2, .m = 2, .nbits = 8});
  const std::string path = temp_dir("ivfpq_crafted") + "/index.qry";
  REQUIRE(idx.save(path).ok());
  auto file = SectionFile::open(path, FileFormat{"QRYIVFPQ", 1, 0});
  REQUIRE(file.ok());
  // Rebuilds the file with one section replaced (checksums recomputed by the writer).
  auto rebuilt = [&](std::string_view tag, std::vector<std::byte> replacement) {
    SectionFileWriter w(FileFormat{"QRYIVFPQ", 1, 0});
    for (const SectionInfo& s : file->sections()) {
      if (s.tag == tag) {
        w.add(s.tag, std::move(replacement));
      } else {
        const auto b = file->section(s.tag).value();
        w.add(s.tag, std::vector<std::byte>(b.begin(), b.end()));
      }
    }
    return w.to_bytes().value();
  };
  auto meta = [&](auto edit) {
    const auto b = file->section("META").value();
    std::vector<std::byte> m(b.begin(), b.end());
    edit(m);
    return m;
  };
  auto put64 = [](std::vector<std::byte>& m, std::size_t at, std::int64_t v) { std::memcpy(m.data() + at, &v, 8); };
  auto put32 = [](std::vector<std::byte>& m, std::size_t at, std::int32_t v) { std::memcpy(m.data() + at, &v, 4); };
  auto load = [](const std::vector<std::byte>& bytes) { return IvfPqIndex<cpu>::load_bytes(bytes).status(); };
  // META: d, nlist, m, next_id, ntotal (int64 at 0, 8, 16, 24, 32), nbits, metric, store, trained (int32 at 40..52)
  CHECK(contains(load(rebuilt("META", meta([&](auto& m) { put64(m, 8, std::int64_t{1} << 40); }))), "nlist"));
  CHECK(contains(load(rebuilt("META", meta([&](auto& m) { put64(m, 32, std::int64_t{1} << 62); }))), "ntotal"));
  // in range but far larger than the file: refused by the section sizes before any allocation
  // (a fuzzer found the allocation this used to make)
  CHECK(contains(load(rebuilt("META", meta([&](auto& m) {
          put64(m, 0, std::int64_t{1} << 20);  // d
          put64(m, 8, std::int64_t{1} << 24);  // nlist
          put64(m, 16, 1);                     // m
        }))),
        "CENT"));
  CHECK(contains(load(rebuilt("META", meta([&](auto& m) { put64(m, 32, 299); }))), "IDS_"));
  CHECK(contains(load(rebuilt("META", meta([&](auto& m) { put64(m, 16, 3); }))), "m 3 does not divide"));
  CHECK(contains(load(rebuilt("META", meta([&](auto& m) { put32(m, 44, 9); }))), "metric"));
  CHECK(contains(load(rebuilt("META", meta([&](auto& m) { put64(m, 24, 5); }))), "outside"));
  CHECK(contains(load(rebuilt("META", {})), "META"));
  {  // a NaN centroid
    const auto b = file->section("CENT").value();
    std::vector<std::byte> c(b.begin(), b.end());
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::memcpy(c.data() + 12, &nan, 4);
    CHECK(contains(load(rebuilt("CENT", c)), "not finite"));
  }
  {  // list sizes that do not add up, and a negative one
    const auto b = file->section("LSIZ").value();
    std::vector<std::byte> l(b.begin(), b.end());
    put64(l, 0, 5);
    CHECK(contains(load(rebuilt("LSIZ", l)), "LSIZ"));
    put64(l, 0, -1);
    CHECK(contains(load(rebuilt("LSIZ", l)), "LSIZ"));
  }
  {  // a repeated id
    const auto b = file->section("IDS_").value();
    std::vector<std::byte> ids(b.begin(), b.end());
    std::memcpy(ids.data() + 8, ids.data(), 8);
    CHECK(contains(load(rebuilt("IDS_", ids)), "twice"));
  }
}

TEST_CASE("IvfPqIndex with OPQ: vectors and queries rotated, better recall on correlated data, saved as version 1.1") {
  // anisotropic data (a few strong directions), rotated at random: plain PQ splits it badly
  const std::int64_t n = 2000, d = 32;
  Tensor<float> x = gaussian(n, d, 41);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < d; ++j) x(i, j) *= j < 4 ? 10.f : 0.3f;
  const Tensor<float> r = gaussian(d, d, 42);  // a random mixing (not orthogonal: correlates the columns)
  Tensor<float> mixed({n, d});
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < d; ++j) {
      float acc = 0;
      for (std::int64_t t = 0; t < d; ++t) acc += x(i, t) * r(t, j);
      mixed(i, j) = acc;
    }
  // held-out queries from the same distribution, and their true nearest neighbours
  Tensor<float> qx = gaussian(50, d, 43);
  Tensor<float> queries({50, d});
  for (std::int64_t i = 0; i < 50; ++i)
    for (std::int64_t j = 0; j < d; ++j) {
      float acc = 0;
      for (std::int64_t t = 0; t < d; ++t) acc += qx(i, t) * (t < 4 ? 10.f : 0.3f) * r(t, j);
      queries(i, j) = acc;
    }
  std::vector<std::int64_t> truth;
  for (std::int64_t q = 0; q < 50; ++q) truth.push_back(brute_force(mixed, {&queries(q, 0), static_cast<std::size_t>(d)}, 1, Metric::l2)[0]);
  double recall[2] = {0, 0};
  for (int with_opq = 0; with_opq < 2; ++with_opq) {
    auto made = IvfPqIndex<cpu>::create(d, {.nlist = 4, .m = 8, .nbits = 4, .opq = with_opq == 1});
    REQUIRE(made.ok());
    IvfPqTrainOptions to;
    to.opq_iterations = testing::kSanitized ? 2 : 6;
    std::vector<std::string> stages;
    to.progress = [&](const char* stage, std::int64_t done, std::int64_t) {
      if (done == 0) stages.push_back(stage);
    };
    REQUIRE(made->train(mixed.view(), to).ok());
    CHECK(stages.front() == (with_opq ? "opq" : "coarse"));
    REQUIRE(made->add(mixed.view()).ok());
    const auto res = made->search_batch(queries.view(), 10, {.nprobe = 4});
    REQUIRE(res.ok());
    for (std::int64_t q = 0; q < 50; ++q)
      for (std::int64_t k = 0; k < 10; ++k) recall[with_opq] += res->id(q, k) == truth[static_cast<std::size_t>(q)];
    recall[with_opq] /= 50;
    if (with_opq) {
      const std::string path = temp_dir("ivfpq_opq") + "/index.qry";
      REQUIRE(made->save(path).ok());
      auto file = SectionFile::open(path, FileFormat{"QRYIVFPQ", 1, 1});
      REQUIRE(file.ok());
      CHECK(file->minor() == 1);
      CHECK(file->contains("OPQR"));
      auto loaded = IvfPqIndex<cpu>::load(path);
      REQUIRE(loaded.ok());
      CHECK(loaded->options().opq);
      const auto again = loaded->search_batch(queries.view(), 10, {.nprobe = 4});
      REQUIRE(again.ok());
      CHECK(again->ids == res->ids);
      CHECK(again->distances == res->distances);
    }
  }
  MESSAGE("recall@10 on mixed anisotropic data, PQ8x4: plain " << recall[0] << ", with OPQ " << recall[1]);
  CHECK(recall[1] >= recall[0]);
}

TEST_CASE("IvfPqIndex: one thread searching indexes of different PQ shapes with the same table size") {
  const Tensor<float> x = blobs(600, 32, 4, 51);
  auto a = trained_index(x, {.nlist = 2, .m = 2, .nbits = 8});   // tables [2, 256]
  auto b = trained_index(x, {.nlist = 2, .m = 32, .nbits = 4});  // tables [32, 16]: as many entries
  const std::vector<float> q(&x(5, 0), &x(5, 0) + 32);
  for (int round = 0; round < 2; ++round) {
    REQUIRE(a.search(q, 3, {.nprobe = 2}).ok());
    REQUIRE(b.search(q, 3, {.nprobe = 2}).ok());
  }
}

TEST_CASE("IvfPqIndex::train reports progress per k-means iteration: coarse, then pq, each ending with done == total") {
  const Tensor<float> x = blobs(2000, 16, 10, 41);
  auto idx = IvfPqIndex<cpu>::create(16, {.nlist = 8, .m = 4, .nbits = 8}).value();
  IvfPqTrainOptions to;
  to.coarse_iterations = 5;
  to.pq_iterations = 3;
  std::vector<std::tuple<std::string, std::int64_t, std::int64_t>> calls;
  to.progress = [&](const char* stage, std::int64_t done, std::int64_t total) { calls.emplace_back(stage, done, total); };
  REQUIRE(idx.train(x.view(), to).ok());
  std::int64_t coarse = 0, pq = 0;
  std::string last_stage;
  std::int64_t last_done = -1;
  for (const auto& [stage, done, total] : calls) {
    CHECK(done <= total);
    if (stage == last_stage) CHECK(done >= last_done);  // never backwards within a stage
    last_stage = stage;
    last_done = done;
    if (stage == "coarse") {
      CHECK(total == 5);
      ++coarse;
    } else {
      CHECK(stage == "pq");
      CHECK(total == 4 * 3);
      ++pq;
    }
  }
  CHECK(std::get<0>(calls.front()) == "coarse");
  CHECK(coarse >= 3);  // the start, at least one iteration (k-means may converge early), the end
  CHECK(pq >= 2 + 4);  // the start, at least one step per sub-space, the end
  CHECK(std::get<1>(calls.back()) == std::get<2>(calls.back()));
}

TEST_CASE("IvfPqIndex::load_bytes: an index whose codebook overflows the distance tables (found by fuzz_ivf_pq_load) loads and searches") {
  // The fuzzer's input, kept as found: a minor-version byte, then per section tag (META, CENT,
  // PQCB, LSIZ, IDS_, CODE, OPQR, VECS) a u32 length (0xffffffff: absent) and the payload. It is
  // a valid 4-bit index whose PQ codebook holds 2e32, so |r|^2 overflows to inf and the search's
  // fast-scan table gets inf entries; the scalar kernel then converted NaN (inf * 0) to an
  // integer (undefined behaviour, caught by UBSan under libFuzzer).
  const std::string hex =
      "0138000000080000000000000002000000000000000200000000000000140000000000000014000000000000000400000000000000000000"
      "000100000040000000d37f533fb1b0333ec06f4abd1edf863e58ef793e1666743da81ada3dcfe216be6e4f5cbfeb3aa33dba38813cbb5292"
      "bd6e97f1beeea1b93c9a3b27bdc01c0b3d000200004a4da7bee877d73e48369abf57383dbe8a04243f55fa64be53fd6d3eac1e963e5a9c32"
      "bf37dd913ee812f13efc299abd1a5f7a3e993fbdbf8bec133fd6df823f2a38683d59c244bfb944d33f00c602b95eafd53e1061893fb05732"
      "bed901f6bfe7145a3fab27fcbfbaa4dcbe1d7d2fbf13c8423ba7188e3fd23296be2ff7653fea9790bfd92a2abefe0ed1be3f2cca3f7a2952"
      "3fc5e2b43ebda14b3f1dd75cbf95b21fbf25abf73f40da493ffab1a33e0de9a0be267354bf6303e1beb81132bf56d5fd3eb4818a3f69a625"
      "bede94f3be2fa2bebddb84a23e96181cc0e239adbe7bf939bf340e2c3e1d0d7c3f33200b3fae97a63efcef20bf81bf6fbff76c173f188050"
      "3f265f0f3feec5bdbfd79ce93eb2a7023e5ae5a3bfb14125bfb01b38be2cae5b3fa34e843f3f0ec53ea037aebe63f488bfb1332a3f310a98"
      "bf07debbbee4c000c0e09cdcbed2509c3fc0ecda3fa49de8be90f89f3f48dbad3e433f2075fe3d7181833ff8428ebf08dd90bf6f3ee13c88"
      "b9a33ffe01a23fc5da4c3f13c15abf529d8cbda394d94cee3ee911efbea7ec0bbf0de6c93f04e082bd4b0678bfee70243fb4a164bfa1e6a4"
      "3f1717053f27765b3f690c40bbf74febbddaca633f5dd16bbe98b6613f55f5ad3fc20eeabcf34c8b40e3a5e2be7291b43e42ce98be499e8b"
      "bfee3093bffb9051bfb1c35d3fd7d2603e44f51dbfa57550c2213c40bf100000000b000000000000000900000000000000a0000000020000"
      "000000000003000000000000000400000000000000060000000000000007000000000000000a000000000000000c000000000000000e0000"
      "00000000000f0000000000000011000000000000001300000000000000000000000000000001000000000000000500000000000000080000"
      "000000000009000000000000000b000000000000000d00000000000000100000000000000012000000000000004000000004090f0109010b"
      "0f0b020200000000000a0b0b0108050f0a0202060000000000010800020f0e0e0007000000000000000b0a0a000e08030106000000000000"
      "0000010000b001123eb5e5ae3d986dbcbe03ec88bd515105bf260e3b3e0fcd143f8832df3ef654293f22bed1be4530c13e712b273eb6a591"
      "bc0c2ba2bd00e6bf3e1a868fbea182eebe0b8a66beb3d156befa0177bebfd49a3e1d06233d22a2143fb5f6e4be160589bdd28244bd2e93ac"
      "bdc296863e2353d0be257e2e3f615c55bebea0fcbeec9430bea6efcdbe8d46d0be7bffe73e4a2e9dbeaa3410bf276304be6abec6bd27bd8e"
      "3ef41443be8e9d02bf0096a53eac63193f03f5a73eae487bbd0b87663ee048cf3d97541ebfdfa008beec4f29bf4e5d09be2adad63d8110aa"
      "be7cb7e63de8a9e63e1bf2df3e3032f4bee5319dbe1d2175bcc42677be785fd0bd537dedbeffffffff";
  std::vector<std::uint8_t> in(hex.size() / 2);
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<std::uint8_t>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  SectionFileWriter w(FileFormat{"QRYIVFPQ", 1, static_cast<std::uint16_t>(in[0] & 1)});
  std::size_t at = 1;
  for (const char* tag : {"META", "CENT", "PQCB", "LSIZ", "IDS_", "CODE", "OPQR", "VECS"}) {
    if (in.size() - at < 4) break;
    std::uint32_t len;
    std::memcpy(&len, in.data() + at, 4);
    at += 4;
    if (len == 0xffffffffu) continue;
    len = static_cast<std::uint32_t>(std::min<std::size_t>(len, in.size() - at));
    const auto* p = reinterpret_cast<const std::byte*>(in.data() + at);
    w.add(tag, std::vector<std::byte>(p, p + len));
    at += len;
  }
  const auto bytes = w.to_bytes();
  REQUIRE(bytes.ok());
  for (bool mmap : {false, true}) {
    auto index = IvfPqIndex<cpu>::load_bytes(*bytes, {.mmap = mmap});
    REQUIRE_MESSAGE(index.ok(), index.status().to_string());
    std::vector<float> q(static_cast<std::size_t>(index->dim()), 0.5f);
    CHECK(index->search(q, 3, {.nprobe = 2, .refine_factor = 2}).ok());
  }
}
