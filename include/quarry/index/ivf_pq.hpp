// IvfPqIndex: an inverted-file index over product-quantized residuals (IVF-PQ, as FAISS's
// IndexIVFPQ and IndexIVFPQFastScan), with re-ranking on full vectors, filters and deletes.
//
// A coarse k-means quantizer of `nlist` centroids splits the vectors into lists; each vector is
// stored in its nearest centroid's list as the PQ code of its residual (vector - centroid). A
// search ranks the centroids, scans the `nprobe` nearest lists with asymmetric distance tables
// (8-bit codes: float table lookups; 4-bit codes: fast-scan with uint8 tables in SIMD registers,
// then the float table for the candidates it lets through), keeps the best k * refine_factor,
// and, when the index stores the full vectors, re-ranks those with exact distances. L2 tables
// come from terms precomputed per list, as FAISS's precomputed tables:
//   ||q - c - r||^2 = ||q - c||^2 + (||r||^2 + 2 c.r) - 2 q.r,
// so a probed list costs m * ksub additions, not d * ksub multiply-adds.
//
// The 4-bit search runs in two passes and still returns exactly the best float ADC distances.
// First pass, per probed list: the table is built and quantized in one SIMD kernel, the codes
// are summed in uint16, and every vector whose sum gets through the threshold is kept with an
// interval that holds its float distance (the quantization moves a sum by at most m/2 units);
// the threshold follows a bound, the keep-th smallest upper end so far, so most blocks are
// rejected by one SIMD compare. Second pass: the float ADC distance of the vectors whose interval
// reaches down to the final bound, and the keep nearest of them.
//
// Metrics: l2 (squared Euclidean; smaller is nearer), inner_product (larger is nearer), cosine
// (inner product of L2-normalised vectors: vectors are normalised when added, queries when
// searched; a zero vector is an error). Results are sorted nearest first, ties broken by the
// smaller id; when fewer than k vectors qualify, the rest is padded with id -1 and distance +inf
// (l2) or -inf (inner_product, cosine).
//
// Thread safety: search() and search_batch() are const and may run from any number of threads at
// once. train(), add(), add_with_ids(), remove() and load need exclusive access: the caller must
// not run them while any other call on the same index is in progress (e.g. a std::shared_mutex:
// shared for searches, exclusive for writes).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "quarry/core/backend.hpp"
#include "quarry/core/status.hpp"
#include "quarry/core/tensor.hpp"
#include "quarry/core/thread_pool.hpp"
#include "quarry/index/fastscan.hpp"
#include "quarry/index/kmeans.hpp"
#include "quarry/index/metric.hpp"
#include "quarry/index/opq.hpp"
#include "quarry/index/pq.hpp"

namespace quarry {

class SectionFile;

/// The shape of an IVF-PQ index, fixed at creation.
struct IvfPqOptions {
  std::int64_t nlist = 0;           ///< coarse centroids (inverted lists)
  std::int64_t m = 0;               ///< PQ sub-quantizers; d must be a multiple
  int nbits = 8;                    ///< bits per sub-code: 8 (256 centroids) or 4 (16, fast-scan)
  Metric metric = Metric::l2;       ///< how vectors are compared
  bool store_vectors = false;       ///< keep the full vectors (d floats each) for re-ranking
  /// Learn an OPQ rotation (quarry/index/opq.hpp) at train() and apply it to every vector and
  /// query before the coarse quantizer and PQ ("OPQ,IVF,PQ" in FAISS's terms). Distances are
  /// unchanged by the rotation; the quantization error drops on correlated data.
  bool opq = false;
};

/// Parameters of IvfPqIndex::train.
struct IvfPqTrainOptions {
  int coarse_iterations = 20;       ///< k-means iterations of the coarse quantizer
  int pq_iterations = 25;           ///< k-means iterations per PQ sub-space
  std::int64_t max_points_per_centroid = 256;  ///< training sample per centroid (FAISS's default)
  std::uint64_t seed = 1234;        ///< fixes the training samples and initialisations
  ThreadPool* pool = nullptr;       ///< runs the k-means steps in parallel when set
  int opq_iterations = 8;           ///< OPQ alternations (with IvfPqOptions::opq)
  std::int64_t opq_max_points = 16384;  ///< OPQ training sample
  /// Called with (stage, done, total) as training proceeds: stage "opq" (with OPQ; start and
  /// end), "coarse" (after each k-means iteration, total = coarse_iterations) and "pq" (after
  /// each iteration of each sub-space, total = m * pq_iterations); done == total ends a stage.
  std::function<void(const char* stage, std::int64_t done, std::int64_t total)> progress;
};

/// Parameters of one search.
struct IvfPqSearchParams {
  std::int64_t nprobe = 8;          ///< lists scanned (clamped to nlist)
  /// Candidates kept from the scan, k * refine_factor; with stored vectors they are re-ranked
  /// with exact distances (1: no re-ranking).
  std::int64_t refine_factor = 1;
  /// Only ids for which this returns true are returned (checked during the scan, so k results
  /// still come back when enough vectors pass). Empty: all.
  std::function<bool(std::int64_t id)> filter;
  /// Only ids whose bit is set are returned (bit id % 64 of word id / 64; ids past the end are
  /// excluded). Empty: all. Combined with `filter` when both are given.
  std::span<const std::uint64_t> allowed_ids;
};

/// How IvfPqIndex::load reads a file.
struct IvfPqLoadOptions {
  /// Keep the file memory-mapped and read the codes and the stored vectors from the map instead
  /// of copying them (the first add or remove touching a list copies that list). Ids are copied.
  bool mmap = false;
  /// Verify every section's CRC32C while loading. false (with mmap): the CODE and VECS sections
  /// are not read at load at all, so opening a huge file is instant; a flipped bit in them then
  /// goes undetected (their sizes are still checked). Every other section is always verified.
  bool verify_all = true;
};

/// Results of nq queries, k each, nearest first.
struct SearchResults {
  /// Queries, and results per query.
  ///@{
  std::int64_t nq = 0, k = 0;
  ///@}
  std::vector<float> distances;      ///< [nq, k]
  std::vector<std::int64_t> ids;     ///< [nq, k]; -1 where fewer than k vectors qualified
  /// The distance of query q's r-th nearest result (r = 0: the nearest).
  float distance(std::int64_t q, std::int64_t r) const { return distances[static_cast<std::size_t>(q * k + r)]; }
  /// The id of query q's r-th nearest result; -1 when fewer than r + 1 vectors qualified.
  std::int64_t id(std::int64_t q, std::int64_t r) const { return ids[static_cast<std::size_t>(q * k + r)]; }
};

template <class Backend = cpu>
class IvfPqIndex;

/// The CPU IVF-PQ index.
template <>
class IvfPqIndex<cpu> {
 public:
  IvfPqIndex() = default;
  /// An empty, untrained index for vectors of dimension d. Errors (invalid_argument): d outside
  /// 1..2^20, nlist < 1, m < 1, d not a multiple of m, nbits other than 8 or 4, more than 256
  /// sub-quantizers with nbits 4.
  static result<IvfPqIndex> create(std::int64_t d, const IvfPqOptions& options);

  /// Learns the coarse centroids and the PQ codebooks (on residuals) from the rows of x [n, d].
  /// Errors: a shape other than [n, d], n < nlist or n < the PQ's centroids, a NaN or infinite
  /// value, a zero row under cosine (each naming the row).
  status train(TensorView<const float> x, const IvfPqTrainOptions& options = {});
  /// Adds the rows of x [n, d] with ids next_id(), next_id() + 1, ...
  status add(TensorView<const float> x, ThreadPool* pool = nullptr);
  /// Adds the rows of x [n, d] with the given ids (>= 0, not already in the index, no repeats).
  /// Errors leave the index unchanged: untrained, shape, bad values (named by row), bad ids.
  status add_with_ids(TensorView<const float> x, std::span<const std::int64_t> ids, ThreadPool* pool = nullptr);
  /// Removes the vectors with these ids (ids not in the index are ignored); their space is
  /// reclaimed at once (the last vector of a list moves into the hole). Returns how many were removed.
  std::int64_t remove(std::span<const std::int64_t> ids);

  /// The k nearest vectors to one query (length d). Errors: untrained, k < 1, a wrong length, a
  /// NaN or infinite value, a zero query under cosine, nprobe < 1, refine_factor < 1.
  result<SearchResults> search(std::span<const float> query, std::int64_t k, const IvfPqSearchParams& params = {}) const;
  /// search() for every row of queries [nq, d], in parallel on `pool` when given.
  result<SearchResults> search_batch(TensorView<const float> queries, std::int64_t k, const IvfPqSearchParams& params = {},
                                     ThreadPool* pool = nullptr) const;

  /// L2 tables come from terms precomputed per list (||r||^2 + 2 c.r, nlist * m * ksub floats)
  /// while that many floats are at most `floats` (default 2^26, 256 MiB); past it each probed
  /// list's table is computed from its residual (d * ksub multiply-adds per list, no memory).
  /// Results agree to float rounding either way. Rebuilds or drops the terms; needs exclusive
  /// access. The limit is not saved in files.
  void set_max_precomputed_floats(std::int64_t floats);
  /// True when searches use precomputed l2 terms.
  bool uses_precomputed_terms() const noexcept { return !terms_.empty(); }

  std::int64_t dim() const noexcept { return d_; }  ///< the vectors' dimension d
  const IvfPqOptions& options() const noexcept { return opts_; }  ///< the options given to create()
  bool is_trained() const noexcept { return trained_; }  ///< true after train() (or load)
  std::int64_t size() const noexcept { return static_cast<std::int64_t>(where_.size()); }  ///< vectors held
  std::int64_t next_id() const noexcept { return next_id_; }  ///< the id add() gives the next vector
  bool contains(std::int64_t id) const noexcept { return where_.count(id) != 0; }  ///< true when `id` is in the index
  /// Vectors in list l.
  std::int64_t list_size(std::int64_t l) const noexcept { return static_cast<std::int64_t>(lists_[static_cast<std::size_t>(l)].ids.size()); }
  /// Bytes per vector held in memory: the code, the id, and the full vector when stored.
  double bytes_per_vector() const noexcept;
  /// The product quantizer of the residuals (its codebooks).
  const ProductQuantizer& pq() const noexcept { return pq_; }
  /// The coarse centroids [nlist, d].
  TensorView<const float> centroids() const noexcept { return centroids_.view(); }
  /// Read access to list l (0 <= l < nlist, unchecked), for device copies (IvfPqIndex<cuda>): its
  /// ids in scan order; its codes, [list_size(l), m] bytes (nbits 8; empty with nbits 4); its
  /// fast-scan codes (nbits 4); its full vectors, [list_size(l), d] (store_vectors; else empty).
  ///@{
  std::span<const std::int64_t> list_ids(std::int64_t l) const noexcept { return lists_[static_cast<std::size_t>(l)].ids; }
  std::span<const std::uint8_t> list_codes(std::int64_t l) const noexcept { return {lists_[static_cast<std::size_t>(l)].code_data(), opts_.nbits == 8 ? lists_[static_cast<std::size_t>(l)].ids.size() * static_cast<std::size_t>(opts_.m) : 0}; }
  const FastScanCodes& list_fast_codes(std::int64_t l) const noexcept { return lists_[static_cast<std::size_t>(l)].fast; }
  std::span<const float> list_vectors(std::int64_t l) const noexcept { return {lists_[static_cast<std::size_t>(l)].vector_data(), opts_.store_vectors ? lists_[static_cast<std::size_t>(l)].ids.size() * static_cast<std::size_t>(d_) : 0}; }
  ///@}

  /// Writes the index to `path` atomically (a temp file beside it, fsync, rename, fsync of the
  /// folder): quarry's section file "QRYIVFPQ" 1.0 (quarry/io/section_file.hpp) with sections
  /// META, CENT (coarse centroids), PQCB (codebooks), LSIZ (list sizes), IDS_, CODE and, with
  /// stored vectors, VECS, each with a CRC32C; an index with OPQ writes version 1.1 with an OPQR
  /// section (the rotation), which 1.0 readers refuse. Errors: the file system's, naming the path.
  status save(const std::string& path) const;
  /// Reads an index written by save(). Trusts nothing: the format, every field's range and
  /// every section's size are checked (with overflow-checked arithmetic) against each other and
  /// the file before anything is allocated, the checksums are verified, values must be finite
  /// and ids unique; the error names the file, the section and the field.
  static result<IvfPqIndex> load(const std::string& path, const IvfPqLoadOptions& options = {});
  /// load() from bytes in memory (tests, fuzzing); with options.mmap the index reads `bytes`,
  /// which must outlive it.
  static result<IvfPqIndex> load_bytes(std::span<const std::byte> bytes, const IvfPqLoadOptions& options = {});


 private:
  struct List {
    std::vector<std::int64_t> ids;
    std::vector<std::uint8_t> codes;   // nbits 8: [n, m]
    FastScanCodes fast;                // nbits 4
    std::vector<float> vectors;        // [n, d] when store_vectors
    std::span<const std::uint8_t> codes_view;  // codes in a mapped file (load with mmap)
    std::span<const float> vectors_view;       // vectors in a mapped file
    const std::uint8_t* code_data() const noexcept { return codes_view.data() ? codes_view.data() : codes.data(); }
    const float* vector_data() const noexcept { return vectors_view.data() ? vectors_view.data() : vectors.data(); }
    void own();  // copies mapped codes and vectors into the list's own memory
  };
  struct Location {
    std::int32_t list;
    std::int64_t pos;
  };
  struct Scratch;

  static result<IvfPqIndex> from_file(const std::shared_ptr<const SectionFile>& file, const IvfPqLoadOptions& options);
  Metric pq_metric() const noexcept { return opts_.metric == Metric::l2 ? Metric::l2 : Metric::inner_product; }
  status prepare_rows(TensorView<const float> x, const char* what, Tensor<float>& normalized, TensorView<const float>& use,
                      ThreadPool* pool = nullptr) const;
  status normalize_rows(TensorView<const float> x, const char* what, Tensor<float>& normalized, TensorView<const float>& use) const;
  // One query; coarse_ip: its products with the nlist centroids (overwritten).
  void search_one(const float* query, float* coarse_ip, std::int64_t k, const IvfPqSearchParams& params, Scratch& s,
                  float* out_dist, std::int64_t* out_ids) const;

  std::int64_t d_ = 0;
  IvfPqOptions opts_;
  bool trained_ = false;
  Tensor<float> centroids_;             // [nlist, d]
  std::vector<float> centroid_norms_;   // ||c||^2
  ProductQuantizer pq_;
  OpqRotation opq_;                     // dim() 0: none
  std::vector<List> lists_;
  std::unordered_map<std::int64_t, Location> where_;
  std::int64_t next_id_ = 0;
  std::shared_ptr<const void> mapped_;  // keeps a mapped file alive while lists view it
  // L2: per list, sub-quantizer and codeword, ||r||^2 + 2 c.r (FAISS's precomputed tables), so a
  // probed list's table costs m * ksub additions instead of d * ksub multiply-adds. Left empty
  // past max_term_floats_ (then each list's residual table is computed).
  std::int64_t max_term_floats_ = std::int64_t{1} << 26;  // 256 MiB; set_max_precomputed_floats
  std::vector<float> terms_;
  // The codebooks transposed, [m, dsub, ksub], so a query's inner-product table is dsub
  // contiguous multiply-adds per sub-quantizer (SIMD over the ksub centroids).
  std::vector<float> codebook_t_;
  void build_terms();  // terms_ and codebook_t_, after train and load
  void inner_product_table(const float* query, float* table) const noexcept;  // [m, ksub]: query . codewords
};

}  // namespace quarry
