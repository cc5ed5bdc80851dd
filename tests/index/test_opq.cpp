// OpqRotation: orthogonality, distances preserved, lower PQ error than plain PQ on correlated
// data and on bigann10k, determinism, loading a matrix, and bad input.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include <Eigen/Core>
#include <Eigen/QR>

#include <quarry/core/eigen.hpp>
#include <quarry/index/opq.hpp>
#include <quarry/index/pq.hpp>
#include <quarry/io/vecs.hpp>

#include "shared_data.hpp"

#include "test_util.hpp"

using namespace quarry;
using namespace quarry::testing;

namespace {

// Anisotropic Gaussian data seen through a random rotation: coordinate j of the latent has
// standard deviation 0.85^j, and Q mixes every latent dimension into every output dimension.
// Plain PQ's fixed sub-vectors then each hold a correlated mix of all the variance; OPQ can undo Q.
Tensor<float> rotated_anisotropic(std::int64_t n, std::int64_t d, std::uint32_t seed) {
  Tensor<float> z = gaussian(n, d, seed);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < d; ++j) z(i, j) *= static_cast<float>(std::pow(0.85, static_cast<double>(j)));
  const Tensor<float> g = gaussian(d, d, seed + 1);
  const Eigen::HouseholderQR<Eigen::MatrixXf> qr(as_eigen(g));
  const Eigen::MatrixXf q = qr.householderQ();
  Tensor<float> x({n, d});
  as_eigen(x) = as_eigen(z) * q.transpose();
  return x;
}

double mse(const Tensor<float>& a, const Tensor<float>& b) {
  double s = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) s += std::pow(double(a.span()[i]) - b.span()[i], 2);
  return s / static_cast<double>(a.dim(0));
}

// The PQ reconstruction error of `x` with codebooks trained on `x` itself (on a sample of
// ksub * max_points_per_centroid of its rows when it has more).
double pq_error(const Tensor<float>& x, std::int64_t m, int nbits, int iterations, ThreadPool* pool = nullptr,
                std::int64_t max_points_per_centroid = 256) {
  auto pq = ProductQuantizer::create(x.dim(1), m, nbits);
  REQUIRE(pq.ok());
  PqTrainOptions opt;
  opt.iterations = iterations;
  if (kSanitized) opt.init = KMeansInit::random;  // k-means++ costs a few iterations more
  opt.max_points_per_centroid = max_points_per_centroid;
  opt.pool = pool;
  REQUIRE(pq->train(x.view(), opt).ok());
  auto codes = pq->encode(x.view(), pool);
  REQUIRE(codes.ok());
  return mse(x, pq->decode(codes->view()));
}

double max_abs_diff(const Tensor<float>& a, const Tensor<float>& b) {
  double w = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) w = std::max(w, std::abs(double(a.span()[i]) - b.span()[i]));
  return w;
}

std::string error_of(const status& s) { return s.ok() ? "" : s.to_string(); }

OpqTrainOptions quick(int iterations = kSanitized ? 4 : 10) {
  OpqTrainOptions opt;
  opt.iterations = iterations;
  opt.pq_iterations = 1;
  opt.pq_initial_iterations = kSanitized ? 2 : 10;
  if (kSanitized) opt.pq_init = KMeansInit::random;
  return opt;
}

}  // namespace

TEST_CASE("OPQ: R is orthogonal, preserves distances, and apply() agrees with itself") {
  const Tensor<float> x = rotated_anisotropic(2000, 32, 1);
  auto opq = OpqRotation::train(x.view(), 8, 4, quick());
  REQUIRE(opq.ok());
  CHECK(opq->dim() == 32);
  const auto r = opq->matrix();
  REQUIRE(r.shape() == Shape{32, 32});
  // R^T R = I.
  double worst = 0;
  for (std::int64_t i = 0; i < 32; ++i)
    for (std::int64_t j = 0; j < 32; ++j) {
      double s = 0;
      for (std::int64_t t = 0; t < 32; ++t) s += double(r(t, i)) * r(t, j);
      worst = std::max(worst, std::abs(s - (i == j ? 1.0 : 0.0)));
    }
  MESSAGE("max |R^T R - I| = " << worst);
  CHECK(worst < 1e-4);

  // Pairwise distances and norms are unchanged.
  const Tensor<float> xr = opq->apply(x.view());
  REQUIRE(xr.shape() == Shape{2000, 32});
  for (std::int64_t i = 0; i < 50; ++i) {
    const std::int64_t a = i * 37 % 2000, b = (i * 101 + 7) % 2000;
    double before = 0, after = 0, na = 0, nb = 0;
    for (std::int64_t j = 0; j < 32; ++j) {
      before += std::pow(double(x(a, j)) - x(b, j), 2);
      after += std::pow(double(xr(a, j)) - xr(b, j), 2);
      na += std::pow(double(x(a, j)), 2);
      nb += std::pow(double(xr(a, j)), 2);
    }
    CHECK(after == doctest::Approx(before).epsilon(1e-4));
    CHECK(nb == doctest::Approx(na).epsilon(1e-4));
  }
  // One vector at a time gives the same as the matrix product (up to rounding); the inverse
  // brings the vectors back; a strided view is rotated like its contiguous copy.
  std::vector<float> one(32);
  for (std::int64_t i = 0; i < 2000; i += 97) {
    opq->apply(x[i].span(), one);
    for (std::int64_t j = 0; j < 32; ++j) CHECK(one[static_cast<std::size_t>(j)] == doctest::Approx(xr(i, j)).epsilon(1e-5).scale(1));
  }
  CHECK(max_abs_diff(opq->apply_inverse(xr.view()), x) < 1e-4);
  const auto every_other = x.view().slice(0, 0, 2000, 2);
  const Tensor<float> packed = every_other.contiguous();
  const Tensor<float> strided = opq->apply(every_other), copied = opq->apply(packed.view());
  CHECK(std::memcmp(strided.data(), copied.data(), strided.nbytes()) == 0);
  // A pool changes nothing.
  ThreadPool pool(2);
  const Tensor<float> pooled = opq->apply(x.view(), &pool);
  CHECK(std::memcmp(pooled.data(), xr.data(), xr.nbytes()) == 0);
}

namespace {

const char* name_of(OpqInit init) {
  switch (init) {
    case OpqInit::best_start: return "best_start";
    case OpqInit::identity: return "identity";
    case OpqInit::eigenvalue_allocation: return "eigenvalue_allocation";
    case OpqInit::random_rotation: return "random_rotation";
  }
  return "?";
}

// Trains OPQ from `init` and returns the PQ error of x R (fresh codebooks, as plain PQ's), after
// checking that the training error never rose.
double opq_pq_error(const Tensor<float>& x, std::int64_t m, int nbits, OpqInit init, int iterations, int pq_iterations) {
  OpqTrainOptions opt = quick(iterations);
  opt.init = init;
  const auto t0 = std::chrono::steady_clock::now();
  auto opq = OpqRotation::train(x.view(), m, nbits, opt);
  const auto t1 = std::chrono::steady_clock::now();
  REQUIRE(opq.ok());
  const auto h = opq->training_history();
  REQUIRE(h.size() == static_cast<std::size_t>(opt.iterations) + 1);
  for (std::size_t i = 1; i < h.size(); ++i) CHECK(h[i] <= h[i - 1] * (1 + 1e-5));
  const double e = pq_error(opq->apply(x.view()), m, nbits, pq_iterations);
  MESSAGE(std::string(name_of(init)) << ": PQ" << m << "x" << nbits << " MSE after OPQ " << e << " (training history " << h.front() << " -> "
                        << h.back() << ", " << std::chrono::duration<double, std::milli>(t1 - t0).count() << " ms)");
  return e;
}

}  // namespace

TEST_CASE("OPQ: on rotated anisotropic data, OPQ + PQ has a clearly lower error than PQ alone") {
  // Measured (Release, 15 iterations): PQ8x4 alone 0.856; after OPQ from best_start (which
  // picked eigenvalue_allocation) 0.196, identity 0.226, random_rotation 0.275.
  const Tensor<float> x = rotated_anisotropic(4000, 32, 2);
  const int pq_iters = kSanitized ? 6 : 15;
  const double plain = pq_error(x, 8, 4, pq_iters);
  MESSAGE("PQ8x4 MSE alone " << plain);
  for (OpqInit init : {OpqInit::best_start, OpqInit::identity, OpqInit::eigenvalue_allocation, OpqInit::random_rotation})
    CHECK(opq_pq_error(x, 8, 4, init, kSanitized ? 6 : 15, pq_iters) < 0.5 * plain);
}

TEST_CASE("OPQ: on data of low intrinsic dimension, eigenvalue allocation finds what identity cannot") {
  // A 4-d latent mapped into 32 dimensions plus small noise, as real embeddings (low intrinsic
  // dimension) are. Eigenvalue allocation gives each latent direction a sub-space of its own, a
  // 1-d problem for 256 centroids; from the identity, every sub-space holds a 4-d Gaussian.
  // Measured (Release): PQ8x8 alone 3.47; after OPQ from identity 1.88, from
  // eigenvalue_allocation and best_start 0.0043 (the noise floor is 0.0032).
  const Tensor<float> z = gaussian(2000, 4, 7), a = gaussian(4, 32, 8);
  Tensor<float> x = gaussian(2000, 32, 9, 0.01f);
  as_eigen(x) += as_eigen(z) * as_eigen(a);
  const int pq_iters = kSanitized ? 2 : 10;
  const double plain = pq_error(x, 8, 8, pq_iters);
  MESSAGE("PQ8x8 MSE alone " << plain);
  const double identity = opq_pq_error(x, 8, 8, OpqInit::identity, kSanitized ? 2 : 6, pq_iters);
  const double eigen = opq_pq_error(x, 8, 8, OpqInit::eigenvalue_allocation, kSanitized ? 2 : 6, pq_iters);
  const double best = opq_pq_error(x, 8, 8, OpqInit::best_start, kSanitized ? 2 : 6, pq_iters);
  CHECK(identity <= plain);
  CHECK(eigen < 0.1 * identity);
  CHECK(best == eigen);  // the same start, so the same rotation
}

TEST_CASE("OPQ: training is deterministic per seed and independent of the pool") {
  const Tensor<float> x = rotated_anisotropic(1500, 16, 3);
  OpqTrainOptions opt = quick(4);
  opt.max_training_points = 1000;  // sampled
  auto a = OpqRotation::train(x.view(), 4, 4, opt);
  auto b = OpqRotation::train(x.view(), 4, 4, opt);
  ThreadPool pool(2);
  opt.pool = &pool;
  auto c = OpqRotation::train(x.view(), 4, 4, opt);
  opt.seed = 99;
  auto e = OpqRotation::train(x.view(), 4, 4, opt);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  REQUIRE(c.ok());
  REQUIRE(e.ok());
  const std::size_t bytes = 16 * 16 * sizeof(float);
  CHECK(std::memcmp(a->matrix().data(), b->matrix().data(), bytes) == 0);
  CHECK(std::memcmp(a->matrix().data(), c->matrix().data(), bytes) == 0);
  CHECK(std::memcmp(a->matrix().data(), e->matrix().data(), bytes) != 0);
  // No iterations from the identity: R stays the identity.
  OpqTrainOptions none = quick(0);
  none.init = OpqInit::identity;
  auto id = OpqRotation::train(x.view(), 4, 8, none);
  REQUIRE(id.ok());
  CHECK(id->training_history().size() == 1);
  for (std::int64_t i = 0; i < 16; ++i)
    for (std::int64_t j = 0; j < 16; ++j) CHECK(id->matrix()(i, j) == (i == j ? 1.f : 0.f));
}

TEST_CASE("OPQ: from_matrix loads an orthogonal matrix and rejects anything else") {
  const Tensor<float> x = rotated_anisotropic(600, 8, 4);
  auto trained = OpqRotation::train(x.view(), 2, 4, quick(3));
  REQUIRE(trained.ok());
  const Tensor<float> saved = trained->matrix().contiguous();
  auto loaded = OpqRotation::from_matrix(saved.view());
  REQUIRE(loaded.ok());
  CHECK(loaded->dim() == 8);
  CHECK(loaded->training_history().empty());
  CHECK(std::memcmp(loaded->apply(x.view()).data(), trained->apply(x.view()).data(), 600 * 8 * sizeof(float)) == 0);
  // A permutation with a sign flip is orthogonal; a scaled one is not.
  Tensor<float> perm({3, 3}, {0, 1, 0, 0, 0, -1, 1, 0, 0});
  auto p = OpqRotation::from_matrix(perm.view());
  REQUIRE(p.ok());
  std::vector<float> out(3);
  const std::vector<float> v{1.f, 2.f, 3.f};
  p->apply(v, out);
  CHECK(out == std::vector<float>{3.f, 1.f, -2.f});
  perm(1, 2) = -1.01f;
  CHECK(contains(error_of(OpqRotation::from_matrix(perm.view()).status()),
                 "invalid_argument: OpqRotation::from_matrix: R [3, 3] is not orthogonal: entry (2, 2) of R^T R is 1.0201"));
  CHECK(OpqRotation::from_matrix(perm.view(), 0.05).ok());
  const Tensor<float> rect({3, 4});
  CHECK(contains(error_of(OpqRotation::from_matrix(rect.view()).status()), "shape_mismatch: OpqRotation::from_matrix: R [3, 4] must be square"));
  Tensor<float> nan = saved.clone();
  nan(5, 2) = std::numeric_limits<float>::quiet_NaN();
  CHECK(contains(error_of(OpqRotation::from_matrix(nan.view()).status()), "row 5 of the rotation R [8, 8] has a NaN value at column 2"));
}

TEST_CASE("OPQ: bad input to train and apply") {
  const Tensor<float> x = rotated_anisotropic(300, 16, 5);
  const auto train_error = [&](TensorView<const float> v, std::int64_t m, int nbits, const OpqTrainOptions& o) {
    return error_of(OpqRotation::train(v, m, nbits, o).status());
  };
  const OpqTrainOptions opt = quick(2);
  CHECK(contains(train_error(x.view(), 5, 4, opt), "invalid_argument: OpqRotation::train: ProductQuantizer: d = 16 is not a multiple of M = 5"));
  CHECK(contains(train_error(x.view(), 4, 6, opt), "nbits must be 8 or 4, not 6"));
  CHECK(contains(train_error(x.view().slice(0, 0, 200), 4, 8, opt), "200 training vectors; 256 centroids per sub-space need at least as many"));
  CHECK(contains(train_error(x.view().reshape({300, 4, 4}), 4, 4, opt), "shape_mismatch: OpqRotation::train: vectors [300, 4, 4] must be a matrix [n, d]"));
  const Tensor<float> no_columns({20, 0});
  CHECK(contains(train_error(no_columns.view(), 1, 4, opt), "dimension d = 0 must be in 1..8192"));
  Tensor<float> bad = x.clone();
  bad(271, 9) = std::numeric_limits<float>::infinity();
  CHECK(contains(train_error(bad.view(), 4, 4, opt), "row 271 of the training vectors [300, 16] has a infinite value at column 9"));
  OpqTrainOptions o = opt;
  o.iterations = -1;
  CHECK(contains(train_error(x.view(), 4, 4, o), "iterations = -1 must not be negative"));
  o = opt;
  o.pq_iterations = 0;
  CHECK(contains(train_error(x.view(), 4, 4, o), "pq_iterations = 0 must be at least 1"));
  o = opt;
  o.init = static_cast<OpqInit>(9);
  CHECK(contains(train_error(x.view(), 4, 4, o), "init = 9 is not an OpqInit"));
  o = opt;
  o.max_training_points = -1;
  CHECK(contains(train_error(x.view(), 4, 4, o), "max_training_points = -1 must not be negative (0: all)"));
  o = opt;
  o.max_training_points = 10;
  CHECK(contains(train_error(x.view(), 4, 4, o), "10 training vectors (max_training_points caps the 300 given); 16 centroids"));

  const OpqRotation empty;
  CHECK(contains(thrown([&] { (void)empty.apply(x.view()); }), "OpqRotation::apply on an empty rotation"));
  auto opq = OpqRotation::train(x.view(), 4, 4, opt);
  REQUIRE(opq.ok());
  const Tensor<float> narrow = gaussian(3, 15, 1);
  CHECK(contains(thrown([&] { (void)opq->apply(narrow.view()); }), "shape_mismatch: OpqRotation::apply: vectors [3, 15] must be [n, 16]"));
  CHECK(contains(thrown([&] { (void)opq->apply_inverse(narrow.view()); }), "OpqRotation::apply_inverse: vectors [3, 15] must be [n, 16]"));
  CHECK(contains(thrown([&] { (void)opq->apply(bad.view()); }), "OpqRotation::apply: row 271 of the vectors [300, 16] has a infinite value at column 9"));
  std::vector<float> v(16, 1.f), out(16), shorter(15);
  CHECK(contains(thrown([&] { opq->apply(v, shorter); }), "a vector of length 16 into 15; both must be d = 16"));
  CHECK(contains(thrown([&] { opq->apply(v, v); }), "the output overlaps the input vector"));
  v[3] = std::numeric_limits<float>::quiet_NaN();
  CHECK(contains(thrown([&] { opq->apply(v, out); }), "the vector has a NaN value at column 3"));
  const Tensor<float> none({0, 16});
  CHECK(opq->apply(none.view()).shape() == Shape{0, 16});
}

TEST_CASE("OPQ on bigann10k: OPQ + PQ16x8 error no higher than PQ16x8 alone") {
  QUARRY_REQUIRE_SHARED_DATA(base_path, "ann/bigann10k/base.bvecs");
  // Under ASan, the first 4096 vectors only.
  auto base = read_bvecs_as_float(base_path, kSanitized ? 4096 : kAllRows);
  REQUIRE(base.ok());
  ThreadPool pool(2);
  // Codebooks trained on 4096 of the 9,900 vectors (2048 of 4096 under ASan), the error measured
  // on all. Measured (Release, 2 threads): 10825 alone, 10527 after OPQ (-2.8%; OPQ's training
  // error 9182 -> 8588; best_start kept the identity), about 0.35 + 0.8 + 0.35 s.
  const int pq_iters = kSanitized ? 3 : 8;
  const std::int64_t per_centroid = kSanitized ? 8 : 16;
  const auto t0 = std::chrono::steady_clock::now();
  const double plain = pq_error(*base, 16, 8, pq_iters, &pool, per_centroid);
  const auto t1 = std::chrono::steady_clock::now();
  OpqTrainOptions opt;  // the default start (best_start)
  opt.iterations = kSanitized ? 2 : 6;
  opt.pq_iterations = 1;
  opt.pq_initial_iterations = kSanitized ? 2 : 6;
  if (kSanitized) opt.pq_init = KMeansInit::random;
  opt.max_training_points = 256 * per_centroid;
  opt.pool = &pool;
  auto opq = OpqRotation::train(base->view(), 16, 8, opt);
  REQUIRE(opq.ok());
  const auto t2 = std::chrono::steady_clock::now();
  const double rotated = pq_error(opq->apply(base->view(), &pool), 16, 8, pq_iters, &pool, per_centroid);
  const auto t3 = std::chrono::steady_clock::now();
  auto ms = [](auto a, auto b) { return std::chrono::duration<double, std::milli>(b - a).count(); };
  MESSAGE("bigann10k PQ16x8 MSE: " << plain << " alone, " << rotated << " after OPQ (training history " << opq->training_history().front()
                                   << " -> " << opq->training_history().back() << "); PQ " << ms(t0, t1) << " ms, OPQ training "
                                   << ms(t1, t2) << " ms, PQ on rotated " << ms(t2, t3) << " ms");
  CHECK(rotated <= plain);
}
