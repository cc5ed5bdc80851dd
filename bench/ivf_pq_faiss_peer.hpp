// The FAISS peer of bench_ivf_pq: FAISS's IndexIVFPQ (8-bit codes) or IndexIVFPQFastScan (4-bit
// codes) over an IndexFlatL2 coarse quantizer, optionally searched through an IndexRefineFlat that
// wraps the same populated IVF-PQ. Built only when bench/CMakeLists.txt found FAISS (it defines
// QUARRY_BENCH_HAS_FAISS=1 then); this header names no FAISS type, so bench_ivf_pq.cpp needs no
// FAISS headers or OpenMP flags.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace quarry::bench {

/// The shape and training parameters of the FAISS IVF-PQ (L2 metric).
struct FaissIvfPqConfig {
  long d = 0;
  long nlist = 0;
  long m = 0;                  ///< PQ sub-quantizers
  int nbits = 8;               ///< 8: IndexIVFPQ; 4: IndexIVFPQFastScan (blocks of 32)
  int coarse_iterations = 20;  ///< k-means iterations of the coarse quantizer (FAISS cp.niter)
  int pq_iterations = 25;      ///< k-means iterations per PQ sub-space (FAISS pq.cp.niter)
  long max_points_per_centroid = 256;
  int seed = 1234;
};

/// One FAISS IVF-PQ index. Every call sets the OpenMP thread count of the calling thread
/// (omp_set_num_threads) first, so FAISS and OpenBLAS (OpenMP variant) run on `threads` threads.
class FaissIvfPq {
 public:
  explicit FaissIvfPq(const FaissIvfPqConfig& config);
  ~FaissIvfPq();
  FaissIvfPq(const FaissIvfPq&) = delete;
  FaissIvfPq& operator=(const FaissIvfPq&) = delete;

  /// Trains the coarse quantizer and the PQ on the rows of x [n, d]; returns the seconds it took.
  double train(const float* x, long n, unsigned threads);
  /// Adds the rows of x [n, d] with ids 0, 1, ...; returns the seconds it took. Keeps nothing of x.
  double add(const float* x, long n, unsigned threads);
  /// Wraps the populated IVF-PQ in an IndexRefineFlat holding a copy of x [ntotal, d] (the vectors
  /// added, in order), for search(..., refine = true). Returns the seconds it took.
  double enable_refine(const float* x);

  /// The k nearest of each of the nq queries [nq, d] into distances / ids [nq, k]: the IVF-PQ with
  /// `nprobe`, or with refine, the IVF-PQ's k * k_factor best re-ranked by exact L2.
  void search(const float* queries, long nq, long k, long nprobe, bool refine, float k_factor, unsigned threads,
              float* distances, std::int64_t* ids) const;

  /// The `nprobe` lists the coarse quantizer picks for each of the n vectors x [n, d], nearest
  /// first, into lists [n, nprobe].
  void coarse_lists(const float* x, long n, long nprobe, std::int64_t* lists) const;
  /// The vectors in list l.
  std::int64_t list_size(long l) const;

  /// Bytes per vector by quarry's count: the PQ code, the 8-byte id, and d floats with refine.
  double bytes_per_vector(bool refine) const;
  /// Bytes per vector the inverted lists actually hold (codes, block padding of fast-scan, ids),
  /// plus d floats with refine.
  double bytes_per_vector_held(bool refine) const;

  /// "FAISS 1.15.0".
  static std::string version();
  /// faiss::get_compile_options(), trimmed: e.g. "OPTIMIZE AVX512".
  static std::string compile_options();
  /// The DESIGN.md "build" word for the row: "avx512", "avx2" or "generic".
  static std::string build();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace quarry::bench
