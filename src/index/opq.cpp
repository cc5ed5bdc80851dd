#include "quarry/index/opq.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <Eigen/Core>
#include <Eigen/Eigenvalues>
#include <Eigen/QR>
#include <Eigen/SVD>
#include <fmt/format.h>

#include "quarry/core/eigen.hpp"
#include "quarry/index/pq.hpp"
#include "index/finite.hpp"

namespace quarry {

namespace {

constexpr std::int64_t kMaxDim = 8192;
// Rows per block of a rotation product: fixed, so results do not depend on the thread count.
constexpr std::int64_t kRotateBlock = 256;
// X^T Y is summed over at most this many fixed groups of rows (partial products in float, their
// sum in double, in group order).
constexpr std::int64_t kGramGroups = 8;

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
using Map = Eigen::Map<RowMatrix, Eigen::Unaligned, Eigen::OuterStride<>>;
using ConstMap = Eigen::Map<const RowMatrix, Eigen::Unaligned, Eigen::OuterStride<>>;

// out [n, d] = x R (or x R^T) for contiguous x and out, in blocks of kRotateBlock rows.
void rotate_rows(const float* x, std::int64_t n, std::int64_t d, const float* r, bool transpose, float* out, ThreadPool* pool) {
  const ConstMap rm(r, d, d, Eigen::OuterStride<>(d));
  const std::int64_t nblocks = (n + kRotateBlock - 1) / kRotateBlock;
  parallel_for(pool, 0, nblocks, [&](std::int64_t b0, std::int64_t b1) {
    for (std::int64_t b = b0; b < b1; ++b) {
      const std::int64_t lo = b * kRotateBlock, rows = std::min(kRotateBlock, n - lo);
      const ConstMap xb(x + lo * d, rows, d, Eigen::OuterStride<>(d));
      Map ob(out + lo * d, rows, d, Eigen::OuterStride<>(d));
      if (transpose) ob.noalias() = xb * rm.transpose();
      else ob.noalias() = xb * rm;
    }
  });
}

// X^T Y [d, d] in double for contiguous X, Y [n, d]: fixed groups of rows, each a float product,
// summed in group order.
Eigen::MatrixXd cross_product(const Tensor<float>& x, const Tensor<float>& y, ThreadPool* pool) {
  const std::int64_t n = x.dim(0), d = x.dim(1);
  const std::int64_t group = std::max<std::int64_t>(1024, (n + kGramGroups - 1) / kGramGroups);
  const std::int64_t ngroups = (n + group - 1) / group;
  std::vector<RowMatrix> partial(static_cast<std::size_t>(ngroups));
  parallel_for(pool, 0, ngroups, [&](std::int64_t g0, std::int64_t g1) {
    for (std::int64_t g = g0; g < g1; ++g) {
      const std::int64_t lo = g * group, rows = std::min(group, n - lo);
      const ConstMap xg(x.data() + lo * d, rows, d, Eigen::OuterStride<>(d));
      const ConstMap yg(y.data() + lo * d, rows, d, Eigen::OuterStride<>(d));
      partial[static_cast<std::size_t>(g)].noalias() = xg.transpose() * yg;
    }
  });
  Eigen::MatrixXd sum = Eigen::MatrixXd::Zero(d, d);
  for (const RowMatrix& p : partial) sum += p.cast<double>();
  return sum;
}

// A d x d orthogonal matrix drawn uniformly (Haar): the Q of the QR factorisation of a Gaussian
// matrix, with column signs fixed by the signs of R's diagonal (Mezzadri, 2007). The Gaussians
// come from Box-Muller on the raw 64-bit generator, so a seed gives the same matrix everywhere.
Eigen::MatrixXd random_rotation(std::int64_t d, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const auto uniform = [&] { return (static_cast<double>(rng() >> 11) + 0.5) * 0x1.0p-53; };  // (0, 1)
  Eigen::MatrixXd g(d, d);
  for (Eigen::Index i = 0; i < g.size(); i += 2) {
    const double r = std::sqrt(-2 * std::log(uniform())), t = 2 * 3.14159265358979323846 * uniform();
    g.data()[i] = r * std::cos(t);
    if (i + 1 < g.size()) g.data()[i + 1] = r * std::sin(t);
  }
  const Eigen::HouseholderQR<Eigen::MatrixXd> qr(g);
  Eigen::MatrixXd q = qr.householderQ();
  const Eigen::MatrixXd& packed = qr.matrixQR();
  for (Eigen::Index j = 0; j < d; ++j)
    if (packed(j, j) < 0) q.col(j) *= -1;
  return q;
}

// The parametric OPQ solution for Gaussian data (Ge et al., section 3.3, "eigenvalue allocation"):
// the principal directions of the sample, dealt out to the M sub-spaces largest eigenvalue first,
// each to the sub-space (not yet full) whose eigenvalues have the smallest product so far, so
// every sub-space gets a similar share of the variance. Columns of the result are those
// directions, sub-space by sub-space.
Eigen::MatrixXd eigenvalue_allocation(const Tensor<float>& x, std::int64_t msub, ThreadPool* pool) {
  const std::int64_t n = x.dim(0), d = x.dim(1), dsub = d / msub;
  Eigen::VectorXd mean = as_eigen(x).cast<double>().colwise().sum().transpose() / static_cast<double>(n);
  const Eigen::MatrixXd cov = (cross_product(x, x, pool) - static_cast<double>(n) * mean * mean.transpose()) / static_cast<double>(n);
  const Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es(cov);
  const Eigen::VectorXd& values = es.eigenvalues();  // ascending
  // A direction of (numerically) no variance counts as a tiny one, so the products stay finite.
  const double floor = std::max(values(d - 1), 1e-30) * 1e-12;
  std::vector<double> log_product(static_cast<std::size_t>(msub), 0.0);
  std::vector<std::int64_t> filled(static_cast<std::size_t>(msub), 0);
  Eigen::MatrixXd r(d, d);
  for (std::int64_t i = d - 1; i >= 0; --i) {
    std::int64_t best = -1;
    for (std::int64_t b = 0; b < msub; ++b) {
      const auto bs = static_cast<std::size_t>(b);
      if (filled[bs] == dsub) continue;
      // An empty sub-space comes first (its product is that of no eigenvalue at all).
      if (best < 0 || (filled[bs] == 0) > (filled[static_cast<std::size_t>(best)] == 0) ||
          ((filled[bs] == 0) == (filled[static_cast<std::size_t>(best)] == 0) && log_product[bs] < log_product[static_cast<std::size_t>(best)]))
        best = b;
    }
    const auto bb = static_cast<std::size_t>(best);
    r.col(best * dsub + filled[bb]) = es.eigenvectors().col(i);
    log_product[bb] += std::log(std::max(values(i), floor));
    ++filled[bb];
  }
  return r;
}

// One Lloyd update of every codebook with the codes fixed: each centroid becomes the mean of the
// sub-vectors coded by it; a centroid that codes none keeps its place.
Tensor<float> update_codebooks(const ProductQuantizer& pq, const Tensor<float>& xr, const Tensor<std::uint8_t>& codes, ThreadPool* pool) {
  const std::int64_t n = xr.dim(0), d = xr.dim(1), msub = pq.num_subquantizers(), k = pq.ksub(), dsub = pq.sub_dim();
  const std::int64_t cs = pq.code_size();
  Tensor<float> centroids = pq.centroids().contiguous();
  parallel_for(pool, 0, msub, [&](std::int64_t m0, std::int64_t m1) {
    std::vector<double> sums(static_cast<std::size_t>(k * dsub));
    std::vector<std::int64_t> counts(static_cast<std::size_t>(k));
    for (std::int64_t m = m0; m < m1; ++m) {
      std::fill(sums.begin(), sums.end(), 0.0);
      std::fill(counts.begin(), counts.end(), 0);
      for (std::int64_t i = 0; i < n; ++i) {
        const std::int64_t j = pq.sub_code(codes.data() + i * cs, m);
        const float* v = xr.data() + i * d + m * dsub;
        double* s = sums.data() + j * dsub;
        for (std::int64_t t = 0; t < dsub; ++t) s[t] += v[t];
        ++counts[static_cast<std::size_t>(j)];
      }
      for (std::int64_t j = 0; j < k; ++j) {
        const std::int64_t c = counts[static_cast<std::size_t>(j)];
        if (c == 0) continue;
        for (std::int64_t t = 0; t < dsub; ++t)
          centroids(m, j, t) = static_cast<float>(sums[static_cast<std::size_t>(j * dsub + t)] / static_cast<double>(c));
      }
    }
  });
  return centroids;
}

double mean_squared_error(const Tensor<float>& a, const Tensor<float>& b) {
  double s = 0;
  const float* pa = a.data();
  const float* pb = b.data();
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    const double e = static_cast<double>(pa[i]) - pb[i];
    s += e * e;
  }
  return a.dim(0) > 0 ? s / static_cast<double>(a.dim(0)) : 0.0;
}

}  // namespace

result<OpqRotation> OpqRotation::train(TensorView<const float> x, std::int64_t m, int nbits, const OpqTrainOptions& opt) {
  if (x.rank() != 2)
    return status(errc::shape_mismatch, fmt::format("OpqRotation::train: vectors {} must be a matrix [n, d]", x.shape()));
  const std::int64_t n = x.dim(0), d = x.dim(1);
  if (d < 1 || d > kMaxDim)
    return status(errc::invalid_argument, fmt::format("OpqRotation::train: dimension d = {} must be in 1..{} (R is d x d)", d, kMaxDim));
  auto made = ProductQuantizer::create(d, m, nbits);
  if (!made.ok()) return status(made.status().code(), "OpqRotation::train: " + made.status().message());
  ProductQuantizer pq = std::move(made).value();
  if (opt.iterations < 0)
    return status(errc::invalid_argument, fmt::format("OpqRotation::train: iterations = {} must not be negative", opt.iterations));
  if (opt.pq_iterations < 1)
    return status(errc::invalid_argument, fmt::format("OpqRotation::train: pq_iterations = {} must be at least 1", opt.pq_iterations));
  if (opt.pq_initial_iterations < 0)
    return status(errc::invalid_argument,
                  fmt::format("OpqRotation::train: pq_initial_iterations = {} must not be negative", opt.pq_initial_iterations));
  if (static_cast<int>(opt.init) > static_cast<int>(OpqInit::random_rotation))
    return status(errc::invalid_argument, fmt::format("OpqRotation::train: init = {} is not an OpqInit", static_cast<int>(opt.init)));
  if (opt.max_training_points < 0)
    return status(errc::invalid_argument,
                  fmt::format("OpqRotation::train: max_training_points = {} must not be negative (0: all)", opt.max_training_points));
  const std::int64_t k = pq.ksub();
  const std::int64_t keep = opt.max_training_points > 0 ? std::min(n, opt.max_training_points) : n;
  if (keep < k)
    return status(errc::invalid_argument,
                  fmt::format("OpqRotation::train: {} training vectors{}; {} centroids per sub-space need at least as many", keep,
                              keep < n ? fmt::format(" (max_training_points caps the {} given)", n) : std::string(), k));
  Tensor<float> owned;
  if (d > 1 && x.strides()[1] != 1) {
    owned = x.contiguous();
    x = owned.view();
  }
  QUARRY_RETURN_IF_ERROR(detail::check_finite_rows(x, "the training vectors"));

  // The sample X [keep, d], contiguous: a uniform choice of rows, kept in their order.
  Tensor<float> xs = Tensor<float>::uninitialized({keep, d});
  {
    std::vector<std::int64_t> idx(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) idx[static_cast<std::size_t>(i)] = i;
    if (keep < n) {
      std::mt19937_64 rng(opt.seed);
      for (std::int64_t i = 0; i < keep; ++i)
        std::swap(idx[static_cast<std::size_t>(i)], idx[static_cast<std::size_t>(std::uniform_int_distribution<std::int64_t>(i, n - 1)(rng))]);
      idx.resize(static_cast<std::size_t>(keep));
      std::sort(idx.begin(), idx.end());
    }
    for (std::int64_t i = 0; i < keep; ++i) xs[i].copy_from(x[idx[static_cast<std::size_t>(i)]]);
  }

  // A start: R0, the first codebooks trained on X R0, the codes Y of X R0 and their error.
  struct Start {
    Tensor<float> r, xr, y;
    Tensor<std::uint8_t> codes;
    ProductQuantizer pq;
    double error = 0;
  };
  PqTrainOptions po;
  po.iterations = opt.pq_initial_iterations;
  po.init = opt.pq_init;
  po.seed = opt.seed + 2;
  po.max_points_per_centroid = 0;  // the sample is already what we train on
  po.pool = opt.pool;
  const auto start_from = [&](const Eigen::MatrixXd& r0) -> result<Start> {
    Start st;
    st.r = Tensor<float>::uninitialized({d, d});
    st.xr = Tensor<float>::uninitialized({keep, d});
    st.pq = ProductQuantizer::create(d, m, nbits).value();  // checked above
    as_eigen(st.r) = r0.cast<float>();
    rotate_rows(xs.data(), keep, d, st.r.data(), false, st.xr.data(), opt.pool);
    QUARRY_RETURN_IF_ERROR(st.pq.train(st.xr.view(), po));
    QUARRY_ASSIGN_OR_RETURN(st.codes, st.pq.encode(st.xr.view(), opt.pool));
    st.y = st.pq.decode(st.codes.view());
    st.error = mean_squared_error(st.xr, st.y);
    return st;
  };
  Eigen::MatrixXd r0;
  switch (opt.init) {  // checked above
    case OpqInit::random_rotation: r0 = random_rotation(d, opt.seed + 1); break;
    case OpqInit::identity: r0 = Eigen::MatrixXd::Identity(d, d); break;
    case OpqInit::eigenvalue_allocation:
    case OpqInit::best_start: r0 = eigenvalue_allocation(xs, m, opt.pool); break;
  }
  QUARRY_ASSIGN_OR_RETURN(Start st, start_from(r0));
  if (opt.init == OpqInit::best_start) {
    QUARRY_ASSIGN_OR_RETURN(Start plain, start_from(Eigen::MatrixXd::Identity(d, d)));
    if (plain.error <= st.error) st = std::move(plain);
  }
  Tensor<float>& r = st.r;
  Tensor<float>& xr = st.xr;
  Tensor<float>& y = st.y;
  Tensor<std::uint8_t>& codes = st.codes;
  pq = std::move(st.pq);

  OpqRotation out;
  out.history_.reserve(static_cast<std::size_t>(opt.iterations) + 1);
  out.history_.push_back(st.error);
  for (int it = 0; it < opt.iterations; ++it) {
    // Codes fixed: R = U V^T minimises ||X R - Y|| (orthogonal Procrustes) where X^T Y = U S V^T.
    const Eigen::MatrixXd xty = cross_product(xs, y, opt.pool);
    const Eigen::BDCSVD<Eigen::MatrixXd> svd(xty, Eigen::ComputeFullU | Eigen::ComputeFullV);
    as_eigen(r) = (svd.matrixU() * svd.matrixV().transpose()).cast<float>();
    rotate_rows(xs.data(), keep, d, r.data(), false, xr.data(), opt.pool);
    // R fixed: Lloyd iterations from the current codebooks; the first reuses the current codes.
    for (int s = 0; s < opt.pq_iterations; ++s) {
      if (s > 0) {
        QUARRY_ASSIGN_OR_RETURN(codes, pq.encode(xr.view(), opt.pool));
      }
      const Tensor<float> centroids = update_codebooks(pq, xr, codes, opt.pool);
      QUARRY_RETURN_IF_ERROR(pq.set_centroids(centroids.view()));
    }
    QUARRY_ASSIGN_OR_RETURN(codes, pq.encode(xr.view(), opt.pool));
    y = pq.decode(codes.view());
    out.history_.push_back(mean_squared_error(xr, y));
  }
  out.d_ = d;
  out.r_ = std::move(r);
  return out;
}

result<OpqRotation> OpqRotation::from_matrix(TensorView<const float> r, double tolerance) {
  if (r.rank() != 2 || r.dim(0) != r.dim(1) || r.dim(0) < 1 || r.dim(0) > kMaxDim)
    return status(errc::shape_mismatch, fmt::format("OpqRotation::from_matrix: R {} must be square [d, d] with d in 1..{}", r.shape(), kMaxDim));
  Tensor<float> copy = r.contiguous();
  QUARRY_RETURN_IF_ERROR(detail::check_finite_rows(copy.view(), "the rotation R"));
  const std::int64_t d = copy.dim(0);
  const Eigen::MatrixXd rd = as_eigen(copy).cast<double>();
  const Eigen::MatrixXd gram = rd.transpose() * rd;
  Eigen::Index wi = 0, wj = 0;
  const double worst = (gram - Eigen::MatrixXd::Identity(d, d)).cwiseAbs().maxCoeff(&wi, &wj);
  if (!(worst <= tolerance))
    return status(errc::invalid_argument,
                  fmt::format("OpqRotation::from_matrix: R [{}, {}] is not orthogonal: entry ({}, {}) of R^T R is {:.6g}, "
                              "{:.3g} from the identity's (tolerance {:.3g})",
                              d, d, wi, wj, gram(wi, wj), worst, tolerance));
  OpqRotation out;
  out.d_ = d;
  out.r_ = std::move(copy);
  return out;
}

Tensor<float> OpqRotation::rotate(TensorView<const float> x, bool transpose, ThreadPool* pool, const char* what) const {
  if (d_ == 0) throw_error(errc::invalid_argument, fmt::format("OpqRotation::{} on an empty rotation; use train() or from_matrix()", what));
  if (x.rank() != 2 || x.dim(1) != d_)
    throw_error(errc::shape_mismatch, fmt::format("OpqRotation::{}: vectors {} must be [n, {}]", what, x.shape(), d_));
  Tensor<float> owned;
  if (!x.is_contiguous()) {
    owned = x.contiguous();
    x = owned.view();
  }
  const status finite = detail::check_finite_rows(x, "the vectors");
  if (!finite.ok()) throw_error(finite.code(), fmt::format("OpqRotation::{}: {}", what, finite.message()));
  const std::int64_t n = x.dim(0);
  Tensor<float> out = Tensor<float>::uninitialized({n, d_});
  if (n > 0) rotate_rows(x.data(), n, d_, r_.data(), transpose, out.data(), pool);
  return out;
}

Tensor<float> OpqRotation::apply(TensorView<const float> x, ThreadPool* pool) const { return rotate(x, false, pool, "apply"); }

Tensor<float> OpqRotation::apply_inverse(TensorView<const float> y, ThreadPool* pool) const {
  return rotate(y, true, pool, "apply_inverse");
}

void OpqRotation::apply(std::span<const float> v, std::span<float> out) const {
  if (d_ == 0) throw_error(errc::invalid_argument, "OpqRotation::apply on an empty rotation; use train() or from_matrix()");
  if (static_cast<std::int64_t>(v.size()) != d_ || static_cast<std::int64_t>(out.size()) != d_)
    throw_error(errc::shape_mismatch, fmt::format("OpqRotation::apply: a vector of length {} into {}; both must be d = {}", v.size(), out.size(), d_));
  if (v.data() < out.data() + out.size() && out.data() < v.data() + v.size())
    throw_error(errc::invalid_argument, "OpqRotation::apply: the output overlaps the input vector");
  for (std::size_t j = 0; j < v.size(); ++j)
    if (!std::isfinite(v[j]))
      throw_error(errc::invalid_argument, fmt::format("OpqRotation::apply: the vector has a {} value at column {}", std::isnan(v[j]) ? "NaN" : "infinite", j));
  const Eigen::Map<const Eigen::RowVectorXf> vm(v.data(), d_);
  Eigen::Map<Eigen::RowVectorXf> om(out.data(), d_);
  const ConstMap rm(r_.data(), d_, d_, Eigen::OuterStride<>(d_));
  om.noalias() = vm * rm;
}

}  // namespace quarry
