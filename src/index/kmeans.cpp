#include "quarry/index/kmeans.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

#include <Eigen/Core>
#include <fmt/format.h>

#include "quarry/core/checked.hpp"
#include "quarry/core/eigen.hpp"
#include "index/finite.hpp"

namespace quarry {

namespace {

using RowMatrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Points per assignment block: one [block, k] tile of at most ~1 MiB (and at least 32 rows).
// It depends on k only, never on the thread count, so results do not either.
std::int64_t block_rows(std::int64_t k) noexcept { return std::clamp<std::int64_t>((std::int64_t{1} << 18) / k, 32, 1024); }

float squared_distance(const float* a, const float* b, std::int64_t d) noexcept {
  float s = 0;
  for (std::int64_t j = 0; j < d; ++j) {
    const float t = a[j] - b[j];
    s += t * t;
  }
  return s;
}

// Rows of a rank-2 float view with unit column stride.
struct Rows {
  const float* data;
  std::int64_t n, d, ld;
  const float* operator[](std::int64_t i) const noexcept { return data + i * ld; }
};

Rows rows_of(TensorView<const float> x) {
  return {x.data(), x.dim(0), x.dim(1), x.dim(0) > 1 ? x.strides()[0] : x.dim(1)};
}

// The index of the smallest of v[0, k) (the first one on ties), and that value in `best`: a
// SIMD min reduction (Eigen's), then a scan for the first element equal to it, which is faster
// than tracking the index in one pass that the compiler cannot vectorize.
std::int64_t argmin(const float* v, std::int64_t k, float& best) noexcept {
  best = Eigen::Map<const Eigen::VectorXf>(v, k).minCoeff();
  std::int64_t j = 0;
  while (j < k && v[j] != best) ++j;
  return j < k ? j : 0;  // not found: a NaN from overflowing products; any label will do
}

// The assignment step over rows [0, n) of x: labels, distances (may be null).
void assign(TensorView<const float> x, TensorView<const float> c, std::int64_t* labels, float* distances, ThreadPool* pool) {
  const std::int64_t n = x.dim(0), k = c.dim(0);
  const auto xm = as_eigen(x);
  const auto cm = as_eigen(c);
  const Eigen::RowVectorXf cnorm = cm.rowwise().squaredNorm().transpose();
  const RowMatrix minus2c = -2 * cm;  // exact: -2 (x.c) comes out of the product bit for bit
  const std::int64_t block = block_rows(k);
  const std::int64_t nblocks = (n + block - 1) / block;
  parallel_for(pool, 0, nblocks, [&](std::int64_t b0, std::int64_t b1) {
    RowMatrix tile(block, k);
    for (std::int64_t b = b0; b < b1; ++b) {
      const std::int64_t lo = b * block, rows = std::min(block, n - lo);
      // ||c||^2 - 2 x.c for the block; ||x||^2 is the same for every c, so it is added after
      // the argmin.
      auto t = tile.topRows(rows);
      t.noalias() = xm.middleRows(lo, rows) * minus2c.transpose();
      t.rowwise() += cnorm;
      for (std::int64_t i = 0; i < rows; ++i) {
        float best;
        labels[lo + i] = argmin(tile.data() + i * k, k, best);
        if (distances) distances[lo + i] = std::max(0.f, xm.row(lo + i).squaredNorm() + best);
      }
    }
  });
}

// k distinct indices of [0, n), chosen uniformly (partial Fisher-Yates), in increasing order.
std::vector<std::int64_t> sample_indices(std::int64_t n, std::int64_t k, std::mt19937_64& rng) {
  std::vector<std::int64_t> idx(static_cast<std::size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  for (std::int64_t i = 0; i < k; ++i) {
    std::uniform_int_distribution<std::int64_t> pick(i, n - 1);
    std::swap(idx[static_cast<std::size_t>(i)], idx[static_cast<std::size_t>(pick(rng))]);
  }
  idx.resize(static_cast<std::size_t>(k));
  std::sort(idx.begin(), idx.end());
  return idx;
}

// k-means++: each next centroid is a training point drawn with probability proportional to its
// squared distance to the nearest centroid so far.
void init_kmeans_plus_plus(const Rows& x, std::int64_t k, std::mt19937_64& rng, float* c, ThreadPool* pool) {
  const std::int64_t n = x.n, d = x.d;
  std::vector<float> mind(static_cast<std::size_t>(n), std::numeric_limits<float>::infinity());
  std::int64_t chosen = std::uniform_int_distribution<std::int64_t>(0, n - 1)(rng);
  for (std::int64_t ci = 0;; ++ci) {
    std::copy(x[chosen], x[chosen] + d, c + ci * d);
    if (ci + 1 == k) return;
    const Eigen::Map<const Eigen::RowVectorXf> cn(c + ci * d, d);
    parallel_for(pool, 0, n, [&](std::int64_t lo, std::int64_t hi) {
      const Eigen::Map<const RowMatrix, Eigen::Unaligned, Eigen::OuterStride<>> block(x[lo], hi - lo, d, Eigen::OuterStride<>(x.ld));
      Eigen::Map<Eigen::VectorXf> m(mind.data() + lo, hi - lo);
      m = m.cwiseMin((block.rowwise() - cn).rowwise().squaredNorm());
    }, 4096);
    double total = 0;
    for (float v : mind) total += v;
    if (total <= 0) {  // every point sits on a centroid: any point will do
      chosen = std::uniform_int_distribution<std::int64_t>(0, n - 1)(rng);
      continue;
    }
    const double r = std::uniform_real_distribution<double>(0, total)(rng);
    double acc = 0;
    chosen = -1;
    for (std::int64_t i = 0; i < n; ++i) {
      if (mind[i] <= 0) continue;
      acc += mind[i];
      chosen = i;
      if (acc > r) break;
    }
  }
}

}  // namespace

void assign_nearest(TensorView<const float> x, TensorView<const float> centroids, std::span<std::int64_t> labels,
                    std::span<float> distances, ThreadPool* pool) {
  if (x.rank() != 2 || centroids.rank() != 2 || x.dim(1) != centroids.dim(1))
    throw_error(errc::shape_mismatch, fmt::format("assign_nearest: points {} and centroids {} must be [n, d] and [k, d]", x.shape(), centroids.shape()));
  if (centroids.dim(0) == 0) throw_error(errc::invalid_argument, "assign_nearest: no centroids (k = 0)");
  const auto n = static_cast<std::size_t>(x.dim(0));
  if (labels.size() != n || (!distances.empty() && distances.size() != n))
    throw_error(errc::shape_mismatch, fmt::format("assign_nearest: {} points but {} labels and {} distances", n, labels.size(), distances.size()));
  if (n == 0) return;
  assign(x, centroids, labels.data(), distances.empty() ? nullptr : distances.data(), pool);
}

result<KMeansResult> kmeans(TensorView<const float> x, const KMeansOptions& opt) {
  if (x.rank() != 2) return status(errc::invalid_argument, fmt::format("kmeans needs an [n, d] matrix; shape is {}", x.shape()));
  const std::int64_t n = x.dim(0), d = x.dim(1), k = opt.k;
  if (d == 0) return status(errc::invalid_argument, fmt::format("kmeans: points {} have dimension 0", x.shape()));
  if (k <= 0) return status(errc::invalid_argument, fmt::format("kmeans: k = {}; it must be at least 1", k));
  if (k > n) return status(errc::invalid_argument, fmt::format("kmeans: k = {} centroids but only {} points {}", k, n, x.shape()));
  if (opt.iterations < 0) return status(errc::invalid_argument, fmt::format("kmeans: iterations = {} is negative", opt.iterations));
  if (d > 1 && x.strides()[1] != 1)
    return status(errc::invalid_argument, fmt::format("kmeans needs unit column stride; points {} have strides {}", x.shape(), x.strides()));
  QUARRY_RETURN_IF_ERROR(detail::check_finite_rows(x, "the points"));

  std::mt19937_64 rng(opt.seed);
  ThreadPool* pool = opt.pool;

  // Sample the training set down to k * max_points_per_centroid points.
  Tensor<float> sampled;
  TensorView<const float> train = x;
  if (opt.max_points_per_centroid > 0) {
    const auto cap = checked_mul(k, opt.max_points_per_centroid);
    if (cap && n > *cap) {
      const auto idx = sample_indices(n, *cap, rng);
      sampled = Tensor<float>::uninitialized({*cap, d});
      const Rows src = rows_of(x);
      for (std::int64_t i = 0; i < *cap; ++i) std::copy(src[idx[i]], src[idx[i]] + d, sampled.data() + i * d);
      train = sampled.view();
    }
  }
  const Rows xr = rows_of(train);
  const std::int64_t m = xr.n;

  KMeansResult out;
  out.training_points = m;
  out.centroids = Tensor<float>::uninitialized({k, d});
  float* c = out.centroids.data();
  if (opt.init == KMeansInit::random) {
    const auto idx = sample_indices(m, k, rng);
    for (std::int64_t i = 0; i < k; ++i) std::copy(xr[idx[i]], xr[idx[i]] + d, c + i * d);
  } else {
    init_kmeans_plus_plus(xr, k, rng, c, pool);
  }

  std::vector<std::int64_t> labels(static_cast<std::size_t>(m)), previous;
  std::vector<float> dist(static_cast<std::size_t>(m));
  std::vector<std::int64_t> count(static_cast<std::size_t>(k)), start(static_cast<std::size_t>(k) + 1), members(static_cast<std::size_t>(m));
  auto assign_all = [&] {
    assign(train, out.centroids.view(), labels.data(), dist.data(), pool);
    double obj = 0;
    for (float v : dist) obj += v;
    out.objective_history.push_back(obj);
  };

  bool converged = false;
  for (int it = 0; it < opt.iterations && !converged; ++it) {
    assign_all();
    if (labels == previous) {  // converged: another update would change nothing
      converged = true;
      if (opt.on_iteration) opt.on_iteration(opt.iterations, opt.iterations);
      break;
    }
    previous = labels;

    // Members of each cluster in index order (a counting sort), then each centroid is the mean
    // of its members, summed in double in that order.
    std::fill(count.begin(), count.end(), 0);
    for (std::int64_t l : labels) ++count[l];
    start[0] = 0;
    for (std::int64_t j = 0; j < k; ++j) start[j + 1] = start[j] + count[j];
    {
      std::vector<std::int64_t> pos(start.begin(), start.end() - 1);
      for (std::int64_t i = 0; i < m; ++i) members[pos[labels[i]]++] = i;
    }
    parallel_for(pool, 0, k, [&](std::int64_t j0, std::int64_t j1) {
      std::vector<double> sum(static_cast<std::size_t>(d));
      for (std::int64_t j = j0; j < j1; ++j) {
        if (count[j] == 0) continue;  // repaired below
        std::fill(sum.begin(), sum.end(), 0.0);
        for (std::int64_t p = start[j]; p < start[j + 1]; ++p) {
          const float* r = xr[members[p]];
          for (std::int64_t t = 0; t < d; ++t) sum[t] += r[t];
        }
        const double inv = 1.0 / static_cast<double>(count[j]);
        for (std::int64_t t = 0; t < d; ++t) c[j * d + t] = static_cast<float>(sum[t] * inv);
      }
    }, std::max<std::int64_t>(1, 4096 / d));

    // Empty clusters: split the cluster with the largest squared error by moving the empty
    // centroid onto its member farthest from its centroid. That point's cost drops to zero, so
    // the objective cannot rise (FAISS instead copies a random cluster's centroid, chosen in
    // proportion to size, and perturbs both copies; that cannot split a cluster of identical
    // points, nor a centroid with zero coordinates).
    if (std::find(count.begin(), count.end(), 0) != count.end()) {
      std::vector<double> sse(static_cast<std::size_t>(k), 0.0);
      std::vector<float> own(static_cast<std::size_t>(m));
      parallel_for(pool, 0, m, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t i = lo; i < hi; ++i) own[i] = squared_distance(xr[i], c + labels[i] * d, d);
      }, 1024);
      for (std::int64_t i = 0; i < m; ++i) sse[labels[i]] += own[i];
      for (std::int64_t e = 0; e < k; ++e) {
        if (count[e] != 0) continue;
        const auto worst = std::max_element(sse.begin(), sse.end()) - sse.begin();
        if (!(sse[worst] > 0)) break;  // every cluster is a set of identical points
        std::int64_t far = -1;
        for (std::int64_t p = start[worst]; p < start[worst + 1]; ++p)
          if (far < 0 || own[members[p]] > own[far]) far = members[p];
        if (!(own[far] > 0)) break;  // only points already taken are left
        std::copy(xr[far], xr[far] + d, c + e * d);
        sse[worst] -= own[far];
        own[far] = -1;  // never picked twice
        count[e] = 1;
        ++out.empty_clusters_split;
      }
    }
    if (opt.on_iteration) opt.on_iteration(it + 1, opt.iterations);
  }
  if (!converged) assign_all();
  out.objective = out.objective_history.back();
  return out;
}

}  // namespace quarry
