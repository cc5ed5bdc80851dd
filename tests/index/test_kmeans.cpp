// k-means: blobs recovered, objective never rises, empty clusters repaired, results independent
// of the thread count, sampling, bad input, assign_nearest against brute force, and bigann10k.
#include <doctest/doctest.h>

#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <quarry/index/kmeans.hpp>
#include <quarry/io/vecs.hpp>

#include "shared_data.hpp"

#include "test_util.hpp"

using namespace quarry;
using namespace quarry::testing;

namespace {

// `per` points around each of `centers` rows, Gaussian with standard deviation `sigma`,
// interleaved (point i belongs to center i % centers).
Tensor<float> blobs(const Tensor<float>& centers, std::int64_t per, float sigma, std::uint32_t seed) {
  const std::int64_t c = centers.dim(0), d = centers.dim(1);
  Tensor<float> noise = gaussian(c * per, d, seed, sigma);
  for (std::int64_t i = 0; i < c * per; ++i)
    for (std::int64_t j = 0; j < d; ++j) noise(i, j) += centers(i % c, j);
  return noise;
}

double brute_objective(const Tensor<float>& x, const Tensor<float>& c) {
  double obj = 0;
  for (std::int64_t i = 0; i < x.dim(0); ++i) {
    double best = std::numeric_limits<double>::infinity();
    for (std::int64_t j = 0; j < c.dim(0); ++j) {
      double s = 0;
      for (std::int64_t t = 0; t < x.dim(1); ++t) {
        const double e = double(x(i, t)) - double(c(j, t));
        s += e * e;
      }
      best = std::min(best, s);
    }
    obj += best;
  }
  return obj;
}

std::vector<std::int64_t> cluster_sizes(const Tensor<float>& x, const Tensor<float>& c) {
  std::vector<std::int64_t> labels(static_cast<std::size_t>(x.dim(0)));
  assign_nearest(x.view(), c.view(), labels, {});
  std::vector<std::int64_t> sizes(static_cast<std::size_t>(c.dim(0)));
  for (auto l : labels) ++sizes[static_cast<std::size_t>(l)];
  return sizes;
}

std::string error_of(const result<KMeansResult>& r) { return r.ok() ? "" : r.status().to_string(); }

}  // namespace

TEST_CASE("kmeans recovers well-separated Gaussian blobs") {
  const Tensor<float> centers = gaussian(6, 16, 11, 10.f);  // centers ~40 apart; blobs of radius ~4
  const Tensor<float> x = blobs(centers, 150, 1.f, 12);
  for (KMeansInit init : {KMeansInit::kmeans_plus_plus, KMeansInit::random}) {
    INFO("init " << (init == KMeansInit::random ? "random" : "kmeans++"));
    KMeansOptions opt;
    opt.k = 6;
    opt.init = init;
    opt.seed = 5;
    auto r = kmeans(x.view(), opt);
    REQUIRE(r.ok());
    CHECK(r->centroids.shape() == Shape{6, 16});
    CHECK(r->training_points == 900);
    // Every true center has a centroid within a fraction of sigma (the mean of 150 points).
    for (std::int64_t c = 0; c < 6; ++c) {
      double best = 1e30;
      for (std::int64_t j = 0; j < 6; ++j) {
        double s = 0;
        for (std::int64_t t = 0; t < 16; ++t) s += std::pow(double(centers(c, t)) - r->centroids(j, t), 2);
        best = std::min(best, std::sqrt(s));
      }
      CHECK(best < 0.6);
    }
    // The objective is ~ n * d * sigma^2 and equals a brute-force recomputation.
    CHECK(r->objective == doctest::Approx(brute_objective(x, r->centroids)).epsilon(1e-4));
    CHECK(r->objective / (900.0 * 16) == doctest::Approx(1.0).epsilon(0.1));
    for (auto s : cluster_sizes(x, r->centroids)) CHECK(s == 150);
  }
}

TEST_CASE("kmeans: the objective never rises from one iteration to the next") {
  const Tensor<float> x = gaussian(3000, 8, 21);
  for (KMeansInit init : {KMeansInit::kmeans_plus_plus, KMeansInit::random}) {
    KMeansOptions opt;
    opt.k = 40;
    opt.iterations = 30;
    opt.init = init;
    auto r = kmeans(x.view(), opt);
    REQUIRE(r.ok());
    const auto& h = r->objective_history;
    REQUIRE(h.size() >= 2);
    CHECK(h.size() <= 31);
    for (std::size_t i = 1; i < h.size(); ++i) {
      INFO("iteration " << i << ": " << h[i - 1] << " -> " << h[i]);
      CHECK(h[i] <= h[i - 1] * (1 + 1e-6));
    }
    CHECK(h.back() < 0.8 * h.front());
    CHECK(r->objective == h.back());
    CHECK(r->objective == doctest::Approx(brute_objective(x, r->centroids)).epsilon(1e-4));
  }
  // No iterations: the objective of the initial centroids.
  KMeansOptions zero;
  zero.k = 40;
  zero.iterations = 0;
  auto z = kmeans(x.view(), zero);
  REQUIRE(z.ok());
  CHECK(z->objective_history.size() == 1);
}

TEST_CASE("kmeans: empty clusters are split off the worst cluster") {
  // 4 blobs of 50 distinct points, and one point repeated 1800 times: a random initialisation
  // picks the repeated point several times, and all but one of those centroids come out empty.
  const Tensor<float> centers = gaussian(4, 4, 31, 20.f);
  const Tensor<float> spread = blobs(centers, 50, 1.f, 32);
  Tensor<float> x({2000, 4});
  x.slice(0, 0, 200).copy_from(spread.view());
  for (std::int64_t i = 200; i < 2000; ++i)
    for (std::int64_t j = 0; j < 4; ++j) x(i, j) = 100.f + float(j);
  KMeansOptions opt;
  opt.k = 12;
  opt.init = KMeansInit::random;
  opt.seed = 3;
  auto r = kmeans(x.view(), opt);
  REQUIRE(r.ok());
  MESSAGE("empty clusters split: " << r->empty_clusters_split << ", objective " << r->objective);
  CHECK(r->empty_clusters_split > 0);
  // Every centroid ends up owning points, and the repeated point is one centroid exactly.
  for (auto s : cluster_sizes(x, r->centroids)) CHECK(s > 0);
  CHECK(r->objective < 200 * 4);  // below what 4 centroids on the 4 blobs would give
  const auto& h = r->objective_history;
  for (std::size_t i = 1; i < h.size(); ++i) CHECK(h[i] <= h[i - 1] * (1 + 1e-6));

  // Fewer distinct points than k: nothing can be split; the result is still exact.
  Tensor<float> same = Tensor<float>::full({10, 3}, 2.5f);
  same(9, 0) = -1.f;
  KMeansOptions three;
  three.k = 3;
  auto s = kmeans(same.view(), three);
  REQUIRE(s.ok());
  CHECK(s->objective == 0.0);
}

TEST_CASE("kmeans: the same seed gives the same centroids on any thread count") {
  const Tensor<float> x = gaussian(5000, 12, 41);
  KMeansOptions opt;
  opt.k = 50;
  opt.iterations = 8;
  auto serial = kmeans(x.view(), opt);
  REQUIRE(serial.ok());
  for (unsigned threads : {1u, 2u, 3u}) {
    ThreadPool pool(threads);
    opt.pool = &pool;
    for (KMeansInit init : {KMeansInit::kmeans_plus_plus, KMeansInit::random}) {
      opt.init = init;
      auto a = kmeans(x.view(), opt);
      opt.pool = nullptr;
      auto b = kmeans(x.view(), opt);
      opt.pool = &pool;
      REQUIRE(a.ok());
      REQUIRE(b.ok());
      CHECK(std::memcmp(a->centroids.data(), b->centroids.data(), a->centroids.nbytes()) == 0);
      CHECK(a->objective == b->objective);
      if (init == KMeansInit::kmeans_plus_plus)
        CHECK(std::memcmp(a->centroids.data(), serial->centroids.data(), a->centroids.nbytes()) == 0);
    }
  }
  opt.pool = nullptr;
  opt.init = KMeansInit::kmeans_plus_plus;
  opt.seed = 99;
  auto other = kmeans(x.view(), opt);
  REQUIRE(other.ok());
  CHECK(std::memcmp(other->centroids.data(), serial->centroids.data(), other->centroids.nbytes()) != 0);
}

TEST_CASE("kmeans samples k * max_points_per_centroid points from a large set") {
  const Tensor<float> x = gaussian(5000, 4, 51);
  KMeansOptions opt;
  opt.k = 4;
  opt.iterations = 5;
  opt.max_points_per_centroid = 100;
  auto r = kmeans(x.view(), opt);
  REQUIRE(r.ok());
  CHECK(r->training_points == 400);
  opt.max_points_per_centroid = 0;
  auto all = kmeans(x.view(), opt);
  REQUIRE(all.ok());
  CHECK(all->training_points == 5000);
  // A column slice (row stride > d) clusters like its contiguous copy.
  const Tensor<float> wide = gaussian(300, 10, 52);
  const auto cols = wide.slice(1, 2, 6);
  const Tensor<float> packed = cols.contiguous();
  opt.k = 5;
  auto a = kmeans(cols, opt);
  auto b = kmeans(packed.view(), opt);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  CHECK(std::memcmp(a->centroids.data(), b->centroids.data(), a->centroids.nbytes()) == 0);
}

TEST_CASE("kmeans rejects bad input with a message naming it") {
  const Tensor<float> x = gaussian(20, 4, 61);
  KMeansOptions opt;
  opt.k = 0;
  CHECK(contains(error_of(kmeans(x.view(), opt)), "invalid_argument: kmeans: k = 0; it must be at least 1"));
  opt.k = 21;
  CHECK(contains(error_of(kmeans(x.view(), opt)), "k = 21 centroids but only 20 points [20, 4]"));
  opt.k = 2;
  const Tensor<float> empty_d({20, 0});
  CHECK(contains(error_of(kmeans(empty_d.view(), opt)), "points [20, 0] have dimension 0"));
  const Tensor<float> none({0, 4});
  CHECK(contains(error_of(kmeans(none.view(), opt)), "only 0 points"));
  const Tensor<float> flat({8});
  CHECK(contains(error_of(kmeans(flat.view(), opt)), "needs an [n, d] matrix; shape is [8]"));
  opt.iterations = -1;
  CHECK(contains(error_of(kmeans(x.view(), opt)), "iterations = -1 is negative"));
  opt.iterations = 5;
  Tensor<float> bad = x.clone();
  bad(7, 3) = std::numeric_limits<float>::quiet_NaN();
  CHECK(contains(error_of(kmeans(bad.view(), opt)), "row 7 of the points [20, 4] has a NaN value at column 3"));
  bad(7, 3) = 0.f;
  bad(19, 0) = std::numeric_limits<float>::infinity();
  CHECK(contains(error_of(kmeans(bad.view(), opt)), "row 19 of the points [20, 4] has a infinite value at column 0"));
  CHECK(contains(error_of(kmeans(x.t(), opt)), "needs unit column stride"));
}

TEST_CASE("assign_nearest equals brute force; ties go to the lower index") {
  const Tensor<float> x = gaussian(777, 9, 71);
  Tensor<float> c = gaussian(37, 9, 72);
  c[20].copy_from(c[5]);  // a duplicate centroid: its points belong to index 5
  std::vector<std::int64_t> labels(777);
  std::vector<float> dist(777);
  ThreadPool pool(2);
  assign_nearest(x.view(), c.view(), labels, dist, &pool);
  int near_ties = 0;
  for (std::int64_t i = 0; i < 777; ++i) {
    double best = 1e30, second = 1e30;
    std::int64_t arg = -1;
    for (std::int64_t j = 0; j < 37; ++j) {
      double s = 0;
      for (std::int64_t t = 0; t < 9; ++t) s += std::pow(double(x(i, t)) - c(j, t), 2);
      if (s < best) {
        second = best;
        best = s;
        arg = j;
      } else if (s < second && j != 20) {
        second = s;
      }
    }
    CHECK(labels[i] != 20);
    CHECK(dist[i] == doctest::Approx(best).epsilon(1e-4));
    if (second - best > 1e-3 * best) CHECK(labels[i] == arg);
    else ++near_ties;
  }
  CHECK(near_ties < 20);
  std::vector<std::int64_t> short_labels(5);
  CHECK(contains(thrown([&] { assign_nearest(x.view(), c.view(), short_labels, {}); }), "777 points but 5 labels"));
  const Tensor<float> other_d({3, 8});
  CHECK(contains(thrown([&] { assign_nearest(x.view(), other_d.view(), labels, {}); }), "points [777, 9] and centroids [3, 8]"));
}

TEST_CASE("kmeans on bigann10k (k = 64)") {
  QUARRY_REQUIRE_SHARED_DATA(base_path, "ann/bigann10k/base.bvecs");
  auto base = read_bvecs_as_float(base_path);
  REQUIRE(base.ok());
  ThreadPool pool(2);
  auto run = [&](KMeansInit init, int iterations) {
    KMeansOptions opt;
    opt.k = 64;
    opt.init = init;
    opt.iterations = iterations;
    opt.pool = &pool;
    const auto t0 = std::chrono::steady_clock::now();
    auto r = kmeans(base->view(), opt);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    REQUIRE(r.ok());
    const std::string name = init == KMeansInit::random ? "random" : "kmeans++";
    MESSAGE(name << ", " << iterations << " iterations: objective "
            << r->objective << " (" << r->objective_history.size() - 1 << " run), " << ms << " ms");
    return r->objective;
  };
  const double random0 = run(KMeansInit::random, 0);
  const double pp0 = run(KMeansInit::kmeans_plus_plus, 0);
  const int iterations = kSanitized ? 8 : 25;  // 8: within 1.1% of 25 (measured)
  const double random25 = run(KMeansInit::random, iterations);
  const double pp25 = run(KMeansInit::kmeans_plus_plus, iterations);
  CHECK(pp0 < random0);
  CHECK(pp25 < 0.8 * random0);
  CHECK(random25 < 0.8 * random0);
  // Both initialisations converge to objectives within a few percent of each other.
  CHECK(std::abs(pp25 - random25) < 0.03 * std::min(pp25, random25));
}
