// The launch function of the IVF-PQ search kernels (ivf_pq_kernels.cu).
//
// The seam between CUDA C++17 and quarry's C++20 (as quant_kernels.h): plain structs of device
// pointers and sizes cross it, and the function returns the CUDA error of its launches. Kernels
// run on the legacy default stream of the current device; the caller (ivf_pq.cpp) checks the
// arguments, sizes and allocates the buffers, synchronises and turns errors into quarry::status.
//
// One pass searches nq queries (nq <= 65535) in five kernels:
//  1. coarse   [nq, nlist]: l2: ||c||^2 - 2 q.c; inner product (and cosine): -q.c  (a tiled SIMT
//              GEMM; smaller is nearer, as the CPU ranks them)
//  2. probes   per query, the nprobe smallest coarse values, ties to the smaller list (radix
//              select), as a set; then the candidate offsets: where each probed list's distances
//              go in the query's row of candidate_keys (a prefix sum of the list sizes)
//  3. tables   the query's inner products with the codewords, [m, ksub], into ip_tables: the ADC
//              table of inner products, and the query part of the precomputed l2 tables
//              (not needed for l2 without precomputed terms)
//  4. scan     one block per (query, probed list, split): the list's ADC table in shared memory,
//              then one thread per code: the sum of m table entries (in the CPU's order), plus
//              the list's constant; the distance goes to candidate_keys as an order-preserving
//              uint32 key, or "excluded" when the id is not in the allowed bitset. The table and
//              the constant, as the CPU index makes them:
//                inner product  ip_tables; constant -q.c (so the distance is -q.c - sum)
//                l2, terms      l2_terms[l] - 2 ip_tables; constant max(0, ||q||^2 + ||c||^2 - 2 q.c)
//                l2, no terms   the table of the residual q - c; constant 0
//  5. select   one block per query: the keep = k * refine_factor smallest (distance, id) of the
//              query's candidates (radix select on the keys, then on the ids among the keys equal
//              to the threshold), sorted (bitonic, shared memory); with stored vectors, their
//              exact distances, sorted again; the first k written out, padded with id -1 and
//              +inf (l2) / -inf (inner product, cosine).
#pragma once

#include <cstddef>
#include <cstdint>

#include <driver_types.h>  // cudaError_t

namespace quarry::cuda_kernels {

/// The most candidates (k * refine_factor) one query keeps: the select kernel sorts them in
/// shared memory, 20 bytes each, rounded up to a power of two (80 KiB at 4096).
constexpr std::int64_t kIvfPqMaxKeep = 4096;

/// A trained IVF-PQ index in device memory. Lists are stored one after the other: list l holds
/// positions list_offsets[l] .. list_offsets[l + 1] - 1 of codes, ids and vectors.
struct IvfPqDeviceIndex {
  const float* centroids = nullptr;          ///< [nlist, d]
  const float* centroid_norms = nullptr;     ///< [nlist], ||c||^2 as the CPU index computes it
  const float* codebooks = nullptr;          ///< [m, ksub, d / m]
  const std::uint8_t* codes = nullptr;       ///< [ntotal, code_size], ProductQuantizer's layout
  const std::int64_t* ids = nullptr;         ///< [ntotal]
  const std::int64_t* list_offsets = nullptr;  ///< [nlist + 1]
  const float* vectors = nullptr;            ///< [ntotal, d] (normalised under cosine); null: none
  /// l2: [nlist, m, ksub], entry (l, j, c) = ||r||^2 + 2 c_l.r for codeword r = (j, c), made by
  /// launch_ivf_pq_l2_terms; null: residual tables (always null for inner products).
  const float* l2_terms = nullptr;
  std::int64_t d = 0;
  std::int64_t nlist = 0;
  std::int64_t m = 0;                        ///< sub-quantizers
  std::int64_t code_size = 0;                ///< bytes per code: m (8 bits), (m + 1) / 2 (4 bits)
  int nbits = 8;                             ///< 8 or 4
  bool l2 = true;                            ///< false: inner product (cosine: on normalised data)
};

/// One pass of nq queries and the device buffers it uses.
struct IvfPqSearchPass {
  const float* queries = nullptr;            ///< [nq, d] (normalised under cosine)
  std::int64_t nq = 0;                       ///< 1..65535
  const float* query_norms = nullptr;        ///< [nq], ||q||^2 as the CPU computes it; l2 with terms only
  std::int64_t k = 0;                        ///< results per query (>= 1)
  std::int64_t keep = 0;                     ///< candidates kept, k * refine_factor (1..kIvfPqMaxKeep)
  std::int64_t nprobe = 0;                   ///< lists scanned, 1..nlist
  std::int64_t max_candidates = 0;           ///< row length of candidate_keys: >= any nprobe lists' sizes
  int splits = 1;                            ///< blocks per (query, probed list), 1..64
  bool tables_in_shared = true;              ///< the [m, ksub] table fits in a block's shared memory
  const std::uint64_t* allowed = nullptr;    ///< id bitset (bit id % 64 of word id / 64); null: all
  std::int64_t allowed_words = 0;
  // Scratch, all on the device.
  float* coarse = nullptr;                   ///< [nq, nlist]
  std::int32_t* probes = nullptr;            ///< [nq, nprobe]
  std::int64_t* candidate_offsets = nullptr; ///< [nq, nprobe + 1]
  std::uint32_t* candidate_keys = nullptr;   ///< [nq, max_candidates]
  float* ip_tables = nullptr;                ///< [nq, m, ksub]; inner product, and l2 with terms
  float* table_scratch = nullptr;            ///< [nq, nprobe, splits, m, ksub]; l2 without tables_in_shared only
  // Results.
  float* distances = nullptr;                ///< [nq, k]
  std::int64_t* ids = nullptr;               ///< [nq, k]
};

/// Fills terms [nlist, m, ksub] (index.l2_terms is ignored) with ||r||^2 + 2 c_l.r, summed over
/// the sub-dimensions in order with the CPU index's float operations.
cudaError_t launch_ivf_pq_l2_terms(const IvfPqDeviceIndex& index, float* terms) noexcept;

/// Runs the five kernels of one pass (see above). Returns the first launch error.
cudaError_t launch_ivf_pq_search(const IvfPqDeviceIndex& index, const IvfPqSearchPass& pass) noexcept;

}  // namespace quarry::cuda_kernels
