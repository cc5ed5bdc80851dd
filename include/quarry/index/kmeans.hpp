// k-means clustering (Lloyd's algorithm) for the coarse quantizer and the PQ sub-quantizers.
//
// Assignment computes ||x||^2 - 2 x.c + ||c||^2 with an Eigen matrix product over blocks of
// points, so memory stays bounded (one [block, k] distance tile per thread) whatever n is. As in
// FAISS, a training set larger than k * max_points_per_centroid is sampled down first. A cluster
// left empty by an iteration splits the cluster with the largest squared error: its centroid
// moves onto that cluster's point farthest from its centroid. (FAISS copies a centroid chosen at
// random in proportion to cluster size and perturbs both copies by a relative 1/1024; that cannot
// split a cluster of identical points, nor move a zero coordinate. Moving onto a point lowers the
// objective by that point's cost, so the objective never rises.)
//
// The result depends only on the data, the options and the seed: blocks of points have fixed
// boundaries and every sum is taken in a fixed order, so any thread count (or none) gives the
// same centroids, bit for bit.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "quarry/core/status.hpp"
#include "quarry/core/tensor.hpp"
#include "quarry/core/thread_pool.hpp"

namespace quarry {

/// How k-means picks its initial centroids.
enum class KMeansInit : std::uint8_t {
  kmeans_plus_plus,  ///< k-means++ (Arthur & Vassilvitskii): D^2 sampling; O(n k d) extra work
  random,            ///< k distinct training points chosen uniformly (FAISS's default)
};

/// Parameters of kmeans().
struct KMeansOptions {
  std::int64_t k = 0;                           ///< number of centroids, 1 <= k <= training points
  int iterations = 25;                          ///< Lloyd iterations after the initialisation (FAISS: 25)
  KMeansInit init = KMeansInit::kmeans_plus_plus;  ///< how the initial centroids are picked
  std::uint64_t seed = 1234;                    ///< fixes sampling, initialisation and nothing else
  /// Training points kept per centroid: with more than k * this many points, a uniform sample of
  /// that size is used (FAISS: 256). 0 means never sample.
  std::int64_t max_points_per_centroid = 256;
  ThreadPool* pool = nullptr;                   ///< runs assignment and updates in parallel when set
  /// Called after each Lloyd iteration with (iterations done, iterations at most); a converged
  /// run reports (iterations, iterations) once when it stops early.
  std::function<void(int done, int total)> on_iteration;
};

/// What kmeans() found.
struct KMeansResult {
  Tensor<float> centroids;             ///< [k, d]
  /// Sum over the training points of the squared L2 distance to the nearest returned centroid.
  double objective = 0;
  /// objective_history[i]: the same sum for the centroids after i iterations (entry 0: the
  /// initial centroids; the last entry equals `objective`). Shorter than iterations + 1 when the
  /// assignment stopped changing: later iterations would change nothing.
  std::vector<double> objective_history;
  std::int64_t training_points = 0;    ///< points used (after sampling)
  std::int64_t empty_clusters_split = 0;  ///< how many times an empty cluster was repaired
};

/// Clusters the rows of the [n, d] matrix `x` (unit column stride; any row stride) into
/// `options.k` centroids. Errors (invalid_argument): k = 0, k > n, d = 0, a rank other than 2,
/// iterations < 0, a NaN or infinite value (naming its row and column), a column stride other
/// than 1. Fewer distinct points than k is not an error: some centroids then own no points.
result<KMeansResult> kmeans(TensorView<const float> x, const KMeansOptions& options);

/// For each row of `x` [n, d], the index of the nearest row of `centroids` [k, d] in squared L2
/// distance (ties to the lower index) into `labels` (length n), and that squared distance into
/// `distances` (length n, clamped at 0; may be empty when not wanted). Rows are processed in
/// blocks with an Eigen product, in parallel on `pool` when given. Throws quarry::error when the
/// shapes disagree or k = 0.
void assign_nearest(TensorView<const float> x, TensorView<const float> centroids, std::span<std::int64_t> labels,
                    std::span<float> distances, ThreadPool* pool = nullptr);

}  // namespace quarry
