// OpqRotation: optimized product quantization (Ge, He, Ke, Sun, "Optimized Product Quantization",
// 2013; the non-parametric method, as FAISS's OPQMatrix). An orthogonal matrix R [d, d] is learned
// so that the rows of x R are quantized by a product quantizer with less error than x itself:
// the rotation mixes correlated dimensions and spreads the variance over the sub-spaces, which
// plain PQ (fixed, contiguous sub-vectors) cannot do.
//
// Training works on a sample X of the training vectors. From a start R0 (see OpqInit) it trains
// PQ codebooks on X R0 by k-means and codes X R0, then repeats:
//   1. codes fixed: R = U V^T from the SVD U S V^T of X^T Y, where Y holds the decoded codes:
//      the orthogonal Procrustes solution, which minimises ||X R - Y|| over orthogonal R;
//   2. R fixed: Lloyd iterations of the codebooks on X R, warm-started from the current ones,
//      then the new codes Y of X R.
// Each step can only lower the mean squared quantization error ||X R - Y||^2 / n, so it falls
// monotonically (FAISS instead re-trains its codebooks from scratch at every step, which needs
// more k-means iterations and may rise). R may be a reflection (det -1); it is orthogonal.
//
// R is orthogonal, so distances, inner products and norms are unchanged by it: an index can
// rotate every vector and every query and work on x R in place of x.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "quarry/core/status.hpp"
#include "quarry/core/tensor.hpp"
#include "quarry/core/thread_pool.hpp"
#include "quarry/index/kmeans.hpp"

namespace quarry {

/// Where OPQ training starts. Training only descends from there, so the start matters: on
/// bigann10k (SIFT, whose natural sub-vectors already suit PQ) identity ends 3-5% below plain
/// PQ16x8 while eigenvalue_allocation and random_rotation end 1.5-2.6x above it; on data of low
/// intrinsic dimension (like embeddings) eigenvalue_allocation ends orders of magnitude below
/// identity. best_start, the default, tries both of those and keeps the better.
enum class OpqInit : std::uint8_t {
  /// Both identity and eigenvalue_allocation, keeping the one whose first codebooks quantize the
  /// sample with less error (costs one more k-means of the first codebooks)
  best_start,
  identity,         ///< R = I: the first codebooks are plain PQ's
  /// The parametric solution for Gaussian data (Ge et al., section 3.3): principal directions
  /// dealt out so that each sub-space's eigenvalues have a similar product
  eigenvalue_allocation,
  random_rotation,  ///< a random orthogonal matrix, uniform over rotations (FAISS's OPQMatrix)
};

/// Parameters of OpqRotation::train.
struct OpqTrainOptions {
  int iterations = 25;               ///< alternations of rotation update and codebook update (FAISS: 50)
  int pq_iterations = 1;             ///< warm-started Lloyd iterations per alternation (at least 1)
  int pq_initial_iterations = 20;    ///< k-means iterations of the first codebooks (FAISS: 40)
  KMeansInit pq_init = KMeansInit::kmeans_plus_plus;  ///< how k-means starts the first codebooks
  OpqInit init = OpqInit::best_start;  ///< the rotation the alternations start from
  /// Training vectors used: with more, a uniform sample of this many (FAISS: 65536); 0: all.
  std::int64_t max_training_points = 65536;
  std::uint64_t seed = 1234;         ///< fixes the sample, the initial rotation and the k-means starts
  ThreadPool* pool = nullptr;        ///< k-means, encoding and the large products run on it when set
};

/// A learned orthogonal rotation applied to vectors before product quantization.
/// Const member functions may be called from several threads at once.
class OpqRotation {
 public:
  /// An empty rotation (dimension 0); use train() or from_matrix().
  OpqRotation() = default;

  /// Learns R for a product quantizer of `m` sub-quantizers with `nbits`-bit codes from the rows
  /// of `x` [n, d] (any strides). The result depends only on the data, the options and the seed
  /// (not on the pool's thread count). Errors (invalid_argument / shape_mismatch): a shape other
  /// than [n, d], d outside 1..8192, d not a multiple of m, nbits other than 8 or 4, fewer than
  /// 2^nbits training vectors (after sampling), iterations < 0, pq_iterations < 1,
  /// pq_initial_iterations < 0, max_training_points < 0, an unknown init, a NaN or infinite
  /// value (naming its row and column). Cost: about 2 + 2 * iterations (more with pq_iterations)
  /// k-means iterations of a ProductQuantizer on the sample, plus a d x d SVD per iteration.
  static result<OpqRotation> train(TensorView<const float> x, std::int64_t m, int nbits, const OpqTrainOptions& options = {});

  /// A rotation made elsewhere, e.g. read from a file: `r` [d, d] (copied), used as x R. Errors:
  /// a shape other than square with d in 1..8192, a NaN or infinite value (naming its row), or
  /// R^T R farther than `tolerance` from the identity in some entry (naming it).
  static result<OpqRotation> from_matrix(TensorView<const float> r, double tolerance = 1e-4);

  /// d (0 for an empty rotation).
  std::int64_t dim() const noexcept { return d_; }
  /// R [d, d], applied to row vectors as x R (FAISS's OPQMatrix stores A = R^T and computes A x).
  TensorView<const float> matrix() const noexcept { return r_.view(); }
  /// The mean squared PQ reconstruction error of the training sample in the rotated space:
  /// entry 0 with the initial rotation and first codebooks, then one entry after each iteration
  /// (non-increasing, up to rounding). Empty for a rotation made by from_matrix().
  std::span<const double> training_history() const noexcept { return history_; }

  /// x R for the rows of `x` [n, d] (any strides): a new [n, d] tensor. Rows are multiplied in
  /// fixed blocks (in parallel on `pool` when given), so the result does not depend on the
  /// thread count. Throws quarry::error when empty, on a shape other than [n, d], or on a NaN or
  /// infinite value (naming its row and column).
  Tensor<float> apply(TensorView<const float> x, ThreadPool* pool = nullptr) const;
  /// out = v R for one vector (length d each; `out` must not overlap `v`). Agrees with apply() on
  /// a matrix up to rounding. Throws quarry::error when empty, on wrong lengths, overlapping
  /// spans, or a NaN or infinite value in `v`.
  void apply(std::span<const float> v, std::span<float> out) const;
  /// y R^T for the rows of `y` [n, d]: the inverse of apply(), e.g. to bring decoded vectors back
  /// to the original space. Throws as apply() does.
  Tensor<float> apply_inverse(TensorView<const float> y, ThreadPool* pool = nullptr) const;

 private:
  Tensor<float> rotate(TensorView<const float> x, bool transpose, ThreadPool* pool, const char* what) const;

  std::int64_t d_ = 0;
  Tensor<float> r_;              // [d, d]
  std::vector<double> history_;  // training error per iteration
};

}  // namespace quarry
