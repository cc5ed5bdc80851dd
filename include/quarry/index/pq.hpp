// ProductQuantizer: a vector of dimension d is cut into M sub-vectors of d / M values, and each
// sub-vector is replaced by the index of its nearest centroid in that sub-space's codebook of
// ksub = 2^nbits centroids (Jegou, Douze, Schmid, "Product quantization for nearest neighbor
// search", 2011). A 128-d float vector (512 bytes) becomes M bytes (nbits 8) or M / 2 bytes
// (nbits 4).
//
// Code layout: nbits 8, one byte per sub-quantizer; nbits 4, two per byte, sub-quantizer 2m in
// the low nibble of byte m and 2m + 1 in the high nibble (an odd M leaves the last high nibble 0).
//
// Search uses asymmetric distance computation (ADC): the query stays exact, a table holds its
// distance to every centroid of every sub-space, and a code's distance is the sum of M table
// entries. For L2 that sum is exactly the squared distance from the query to the decoded vector.
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "quarry/core/status.hpp"
#include "quarry/core/tensor.hpp"
#include "quarry/core/thread_pool.hpp"
#include "quarry/index/kmeans.hpp"
#include "quarry/index/metric.hpp"

namespace quarry {

/// Parameters of ProductQuantizer::train: the k-means run in each sub-space.
struct PqTrainOptions {
  int iterations = 25;                              ///< k-means iterations per sub-space
  KMeansInit init = KMeansInit::kmeans_plus_plus;  ///< how each sub-space's k-means starts
  std::uint64_t seed = 1234;                        ///< sub-space m uses seed + m
  /// Training vectors kept per centroid (the same sample for every sub-space); 0: all.
  std::int64_t max_points_per_centroid = 256;
  ThreadPool* pool = nullptr;                       ///< parallel k-means when set
  /// Called as training proceeds with (steps done, steps in all): one step per k-means
  /// iteration of each sub-space, M * iterations in all.
  std::function<void(std::int64_t done, std::int64_t total)> progress;
};

/// A product quantizer: M codebooks of ksub centroids of dimension d / M.
/// Const member functions may be called from several threads at once; train() and
/// set_centroids() need exclusive access.
class ProductQuantizer {
 public:
  /// An empty quantizer (dimension 0); use create().
  ProductQuantizer() = default;
  /// An untrained quantizer for vectors of dimension `d` cut into `m` sub-vectors with codes of
  /// `nbits` bits each. Errors (invalid_argument): d outside 1..2^20, m not positive, d not a
  /// multiple of m, nbits other than 8 or 4.
  static result<ProductQuantizer> create(std::int64_t d, std::int64_t m, int nbits);

  /// Learns the codebooks from the rows of `x` [n, d] by k-means in each sub-space. Errors:
  /// a shape other than [n, d], n < ksub, a NaN or infinite value (naming its row and column).
  status train(TensorView<const float> x, const PqTrainOptions& options = {});
  /// Installs codebooks made elsewhere (e.g. read from a file): `centroids` is [M, ksub, d / M].
  /// Errors: another shape, a NaN or infinite value.
  status set_centroids(TensorView<const float> centroids);

  bool is_trained() const noexcept { return trained_; }             ///< true once it has codebooks
  std::int64_t dim() const noexcept { return d_; }                  ///< d
  std::int64_t num_subquantizers() const noexcept { return m_; }    ///< M
  std::int64_t sub_dim() const noexcept { return m_ ? d_ / m_ : 0; } ///< d / M
  int nbits() const noexcept { return nbits_; }                      ///< bits per sub-code: 8 or 4
  std::int64_t ksub() const noexcept { return std::int64_t{1} << nbits_; }  ///< centroids per sub-space
  std::int64_t code_size() const noexcept { return (m_ * nbits_ + 7) / 8; }  ///< bytes per code
  /// The codebooks, [M, ksub, d / M] (zeros before training).
  TensorView<const float> centroids() const noexcept { return centroids_.view(); }

  /// The codes of the rows of `x` [n, d]: [n, code_size] bytes, each sub-vector's nearest
  /// centroid in L2 (ties to the lower index), rows in parallel on `pool`. Errors: untrained, a
  /// shape other than [n, d], a NaN or infinite value (naming its row and column).
  result<Tensor<std::uint8_t>> encode(TensorView<const float> x, ThreadPool* pool = nullptr) const;
  /// The vectors that `codes` [n, code_size] stand for, [n, d]. Throws quarry::error when
  /// untrained or when the shape is wrong.
  Tensor<float> decode(TensorView<const std::uint8_t> codes) const;

  /// Sub-code `m` of one code (code_size bytes); unchecked.
  std::int64_t sub_code(const std::uint8_t* code, std::int64_t m) const noexcept {
    if (nbits_ == 8) return code[m];
    return (code[m >> 1] >> ((m & 1) * 4)) & 0xf;
  }

  /// The ADC table of `query` (length d) into `table` [M, ksub]: entry (m, j) is the squared L2
  /// distance (Metric::l2) or the inner product (Metric::inner_product) between the query's
  /// sub-vector m and centroid j of sub-space m. Throws quarry::error when untrained or a shape
  /// is wrong.
  void compute_distance_table(std::span<const float> query, Metric metric, TensorView<float> table) const;
  /// compute_distance_table() into a new [M, ksub] tensor.
  Tensor<float> compute_distance_table(std::span<const float> query, Metric metric) const;

  /// The distance (or inner product) a table gives one code: the sum over m of
  /// table(m, sub_code(code, m)). Unchecked: `table` is [M, ksub] contiguous, `code` holds
  /// code_size bytes.
  float adc_distance(const float* table, const std::uint8_t* code) const noexcept {
    const std::int64_t k = ksub();
    float s = 0;
    for (std::int64_t m = 0; m < m_; ++m) s += table[m * k + sub_code(code, m)];
    return s;
  }
  /// adc_distance() of every row of `codes` [n, code_size] into `out` (length n). Throws
  /// quarry::error when a shape is wrong.
  void adc_distances(TensorView<const float> table, TensorView<const std::uint8_t> codes, std::span<float> out) const;

 private:
  void require_trained(const char* what) const;

  std::int64_t d_ = 0;
  std::int64_t m_ = 0;
  int nbits_ = 8;
  bool trained_ = false;
  Tensor<float> centroids_;  // [M, ksub, dsub]
};

}  // namespace quarry
