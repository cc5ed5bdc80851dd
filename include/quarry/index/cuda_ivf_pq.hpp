// IvfPqIndex<cuda>: a device copy of a trained CPU IVF-PQ index (quarry/index/ivf_pq.hpp) that
// searches on the GPU. Part of quarry::cuda; no CUDA header is included here.
//
//   auto cpu_index = IvfPqIndex<cpu>::create(d, options); ... train, add ...
//   auto gpu_index = IvfPqIndex<cuda>::from_cpu(*cpu_index);         // a snapshot
//   auto results = gpu_index->search_batch(queries, k, params);      // queries in host memory
//
// What it holds. from_cpu() copies the coarse centroids, the PQ codebooks, every list's codes
// and ids, and the full vectors when the CPU index stores them. It is a snapshot: later add()
// or remove() on the CPU index do not reach it; make a new copy. The lists lie one after the
// other in device memory. 8-bit codes are copied as they are ([n, m] bytes); 4-bit codes, which
// the CPU keeps in fast-scan blocks, are copied in ProductQuantizer's packed layout ((m + 1) / 2
// bytes per vector, sub-quantizer 2j in the low nibble of byte j) and the scan reads the
// nibbles: half the memory of one byte per sub-quantizer, and no fast-scan pre-filter (every
// probed code's float ADC distance is computed, which is what the CPU's fast-scan + float check
// amounts to).
//
// Search. The same contract as the CPU index's search_batch: nprobe lists (clamped to nlist), the
// k * refine_factor best candidates by ADC distance, re-ranked with exact distances when the
// index stores the vectors, results nearest first with ties broken by the smaller id, padded
// with id -1 and +inf (l2) / -inf (inner product, cosine). Queries are host memory; results come
// back in host memory. Filters: allowed_ids (a bitset) is applied in the scan on the device; a
// predicate (IvfPqSearchParams::filter) cannot run on a GPU and is refused (errc::unsupported).
// k * refine_factor may be at most max_candidates (4096).
//
// Equality with the CPU index. The l2 precomputed terms (||r||^2 + 2 c.r, used when the CPU
// index uses them, i.e. while nlist * m * ksub <= 2^26; else tables of the residual), the l2
// residual tables, the additions over the sub-quantizers (in the CPU's chains) and ||q||^2 (the
// CPU's own dot, on the host) are the CPU's float operations in the CPU's order, bit for bit.
// Summed in another order, so equal to float rounding only: the coarse products q.c (a GPU GEMM
// against the CPU's SIMD dot), which enter each list's constant (||q - c||^2 for l2 with terms,
// -q.c for inner products); the query's products with the codewords q.r (a sequential sum here,
// an Eigen matrix-vector product on the CPU), which make the inner-product tables and the q.r
// part of the precomputed l2 tables; and the exact re-ranking distances. Hence the ids equal the
// CPU's for the same index and parameters except where two centroids (at the nprobe-th place),
// two candidates, or two re-ranked candidates are within a few ulp of each other, and distances
// may differ from the CPU's in the last bits. Exact ties (equal codes in one list, equal stored
// vectors) stay exact and are broken by the smaller id on both. (The bit-for-bit parts assume
// an x86-64 build without FMA in the baseline flags, quarry's default.)
//
// Kernels (src/cuda/ivf_pq_kernels.cu): a tiled GEMM for the coarse distances, a block radix
// select for the probed lists, one block per (query, probed list) that builds the ADC table in
// shared memory and scans the list one thread per code, writing every distance to device
// memory, then one block per query that radix-selects and bitonic-sorts the best candidates and
// re-ranks them. Large batches run in passes sized to the free device memory.
//
// Thread safety: search() and search_batch() are const and may run from several host threads
// at once (each pass allocates its own buffers; kernels run in order on the device's legacy
// default stream). from_cpu() reads the CPU index as a search does. set_max_queries_per_pass()
// needs exclusive access. Move-only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "quarry/core/backend.hpp"
#include "quarry/core/cuda_tensor.hpp"
#include "quarry/core/status.hpp"
#include "quarry/core/tensor.hpp"
#include "quarry/index/ivf_pq.hpp"

namespace quarry {

/// The GPU IVF-PQ index: a device copy of a trained IvfPqIndex<cpu>.
template <>
class IvfPqIndex<cuda> {
 public:
  /// The most candidates (k * refine_factor) a search keeps per query.
  static constexpr std::int64_t max_candidates = 4096;

  /// An empty index holding no device memory; searching it is an error. Use from_cpu().
  IvfPqIndex() = default;
  /// Moves the device memory; the source is left empty (searching it is an error).
  ///@{
  IvfPqIndex(IvfPqIndex&&) noexcept = default;
  IvfPqIndex& operator=(IvfPqIndex&&) noexcept = default;
  ///@}
  IvfPqIndex(const IvfPqIndex&) = delete;
  IvfPqIndex& operator=(const IvfPqIndex&) = delete;
  ~IvfPqIndex() = default;

  /// A copy of the trained CPU index `index` in the memory of CUDA device `device`. Errors:
  /// invalid_argument (the CPU index is not trained), out_of_range / device_error (no such
  /// device, or no usable device, naming the CUDA error), unsupported (more than 2^31 - 1 lists),
  /// out_of_memory.
  static result<IvfPqIndex> from_cpu(const IvfPqIndex<cpu>& index, int device = 0);

  /// The k nearest vectors to one query (length d, host memory); see search_batch().
  result<SearchResults> search(std::span<const float> query, std::int64_t k, const IvfPqSearchParams& params = {}) const;
  /// The k nearest vectors to every row of `queries` [nq, d] (host memory, any strides), as
  /// IvfPqIndex<cpu>::search_batch. Errors: the CPU index's (k < 1, nprobe < 1, refine_factor < 1,
  /// a wrong shape, a NaN or infinite value or, under cosine, a zero row, each naming the row),
  /// invalid_argument for an index made by the default constructor or moved from, unsupported
  /// for a predicate filter or k * refine_factor > max_candidates, out_of_memory and
  /// device_error from the device.
  result<SearchResults> search_batch(TensorView<const float> queries, std::int64_t k, const IvfPqSearchParams& params = {}) const;

  /// At most this many queries go through the device in one pass (0, the default: as many as
  /// about half the free device memory holds, at most 65535). Needs exclusive access.
  void set_max_queries_per_pass(std::int64_t n) noexcept { max_queries_per_pass_ = n < 0 ? 0 : n; }

  std::int64_t dim() const noexcept { return d_; }                  ///< the vectors' dimension
  const IvfPqOptions& options() const noexcept { return opts_; }    ///< the CPU index's options
  std::int64_t size() const noexcept { return ntotal_; }  ///< vectors held
  /// Vectors in list l (0 <= l < nlist).
  std::int64_t list_size(std::int64_t l) const noexcept {
    return list_offsets_host_[static_cast<std::size_t>(l) + 1] - list_offsets_host_[static_cast<std::size_t>(l)];
  }
  /// The device holding the index; -1 for an empty (default-constructed or moved-from) index.
  int device() const noexcept { return device_; }
  /// Bytes of device memory the index holds.
  std::size_t device_bytes() const noexcept {
    return centroids_.size() + centroid_norms_.size() + codebooks_.size() + codes_.size() + ids_.size() + list_offsets_.size() +
           vectors_.size() + l2_terms_.size();
  }

 private:
  int device_ = -1;
  std::int64_t d_ = 0;
  IvfPqOptions opts_;
  std::int64_t code_size_ = 0;
  std::int64_t ntotal_ = 0;
  std::int64_t max_list_ = 0;                       // the longest list
  std::vector<std::int64_t> list_offsets_host_;     // [nlist + 1]
  std::vector<std::int64_t> largest_lists_prefix_;  // [nlist + 1]: sum of the p longest lists
  int sm_count_ = 1;
  std::size_t shared_per_block_ = 48 * 1024;        // the opt-in limit of dynamic shared memory
  std::int64_t max_queries_per_pass_ = 0;
  detail::DeviceBuffer centroids_;       // [nlist, d] f32
  detail::DeviceBuffer centroid_norms_;  // [nlist] f32
  detail::DeviceBuffer codebooks_;       // [m, ksub, d / m] f32
  detail::DeviceBuffer codes_;           // [ntotal, code_size] u8
  detail::DeviceBuffer ids_;             // [ntotal] i64
  detail::DeviceBuffer list_offsets_;    // [nlist + 1] i64
  detail::DeviceBuffer vectors_;         // [ntotal, d] f32, when stored
  detail::DeviceBuffer l2_terms_;        // [nlist, m, ksub] f32: l2, when the CPU index precomputes them too
};

}  // namespace quarry
