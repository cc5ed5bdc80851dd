// A generated vector set that behaves like real embeddings, for benchmarks that need more data
// than ../shared/data holds: real embeddings have a low intrinsic dimension, so the set is a
// mixture of Gaussians in a small latent space mapped linearly into d dimensions, plus small
// isotropic noise (issue 4: on such data PQ16x8 gives R@1 near 0.3, as on SIFT; full-rank
// isotropic clusters would make every PQ useless).
//
// Every row is a function of the spec and its index alone (a counter-based generator), so any
// range of rows can be generated on demand, in any order and on any number of threads, without
// holding the whole set: a 20M x 128 set is produced chunk by chunk.
//
// Exact ground truth is brute force (GEMM distances, the best candidates re-ranked in double),
// computed once and cached in a quarry section file whose name carries a hash of the spec and
// whose content is checked against the spec and a checksum of the generated vectors before use.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <quarry/core/status.hpp>
#include <quarry/core/tensor.hpp>
#include <quarry/core/thread_pool.hpp>

namespace quarry::bench {

/// The generator's parameters. Two specs that compare equal produce the same vectors.
struct SyntheticSpec {
  std::int64_t n = 1'000'000;     ///< base vectors
  std::int64_t nq = 1000;         ///< query vectors (drawn from the same mixture, other rows)
  std::int64_t d = 128;           ///< dimension of the vectors
  std::int64_t latent = 12;       ///< dimension of the latent space the mixture lives in
  std::int64_t clusters = 1000;   ///< Gaussians in the mixture (unit variance, centres ~ N(0, center_scale^2))
  float center_scale = 4.f;       ///< spread of the cluster centres in the latent space
  /// Standard deviation of the isotropic noise added in d dimensions: about 1.5% of the variance,
  /// but as large as the distances between near neighbours, as in real data (which is not
  /// exactly low-rank). Measured: PQ16x8 R@1 0.50 at n = 1M, IVF4096, all lists probed (0.58
  /// with noise 0.05; 0.51 with latent 16; SIFT1M IVFADC with 16-byte codes: about 0.45).
  float noise = 0.5f;
  std::uint64_t seed = 20240601;  ///< seeds the map, the centres and every row

  /// "n=1000000 nq=1000 d=128 latent=12 clusters=1000 center_scale=4 noise=0.05 seed=20240601 gen=1":
  /// every parameter, and the generator's version; what a cache is checked against.
  std::string key() const;
  /// The CRC32C of key(), in hex: names cache files.
  std::string hash() const;

  bool operator==(const SyntheticSpec&) const = default;
};

/// The generator for one spec: holds the linear map [d, latent] and the centres.
class SyntheticEmbeddings {
 public:
  explicit SyntheticEmbeddings(const SyntheticSpec& spec);

  const SyntheticSpec& spec() const noexcept { return spec_; }

  /// Base rows [row0, row0 + rows) into out [rows, d]; any row0 >= 0 (rows past spec().n are
  /// generated too: the stream is unbounded). In parallel on `pool` when given.
  void base_rows(std::int64_t row0, std::int64_t rows, float* out, ThreadPool* pool = nullptr) const;
  /// Query rows [row0, row0 + rows) into out [rows, d] (a stream of their own).
  void query_rows(std::int64_t row0, std::int64_t rows, float* out, ThreadPool* pool = nullptr) const;

  /// The whole base set [n, d] and query set [nq, d].
  Tensor<float> base(ThreadPool* pool = nullptr) const;
  Tensor<float> queries(ThreadPool* pool = nullptr) const;

 private:
  void rows(std::uint64_t stream, std::int64_t row0, std::int64_t rows, float* out, ThreadPool* pool) const;

  SyntheticSpec spec_;
  std::vector<float> map_t_;    // [latent, d]: the linear map, transposed
  std::vector<float> centers_;  // [clusters, latent]
};

/// The k nearest base rows (L2, ties by id) of every query, nearest first, into [nq, k] (k is
/// clamped to n): squared distances ||b||^2 - 2 q.b by Eigen GEMM over blocks of the base, the
/// best k + 32 candidates of each query kept, then re-ranked by exact distances in double. In
/// parallel over query blocks on `pool`.
std::vector<std::int32_t> brute_force_knn(TensorView<const float> base, TensorView<const float> queries, std::int64_t k,
                                          ThreadPool* pool = nullptr);

/// The CRC32C of a tensor's bytes: what ties a cached ground truth to the vectors it was
/// computed on (the generator uses libm, whose last bits may differ between systems).
std::uint32_t checksum(TensorView<const float> t);

/// A cached ground truth: k nearest neighbours of nq queries.
struct CachedGroundTruth {
  std::int64_t k = 0;
  std::vector<std::int32_t> ids;  ///< [nq, k], nearest first
};

/// The cache file for `spec` in `dir`: "<dir>/synth-<n>-<spec.hash()>.gt".
std::string ground_truth_cache_path(const std::string& dir, const SyntheticSpec& spec);

/// Reads a ground truth written by save_ground_truth: a quarry section file ("QRYBCHGT" 1.0,
/// CRC32C per section) whose SPEC section equals spec.key(), whose DCRC section equals the
/// checksums of `base` and `queries`, with at least `min_k` neighbours per query, all ids in
/// range. not_found when there is no file; corrupt_data / invalid_argument, saying what does
/// not match, otherwise.
result<CachedGroundTruth> load_ground_truth(const std::string& path, const SyntheticSpec& spec, TensorView<const float> base,
                                            TensorView<const float> queries, std::int64_t min_k);

/// Writes the ground truth `ids` [nq, k] for `spec`, `base` and `queries` to `path`
/// atomically (temp file, fsync, rename), creating the directory when missing.
status save_ground_truth(const std::string& path, const SyntheticSpec& spec, TensorView<const float> base,
                         TensorView<const float> queries, std::int64_t k, const std::vector<std::int32_t>& ids);

}  // namespace quarry::bench
