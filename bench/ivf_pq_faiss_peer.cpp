// FAISS's IVF-PQ as bench_ivf_pq's peer. FAISS parallelises with OpenMP and its k-means uses
// OpenBLAS (the OpenMP variant); both take their thread count from the calling thread's
// omp_set_num_threads, so every entry point sets it before calling FAISS.
#include "ivf_pq_faiss_peer.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <vector>

#include <omp.h>

#include <faiss/Index.h>
#include <faiss/IndexFlat.h>
#include <faiss/IndexIVFPQ.h>
#include <faiss/IndexIVFPQFastScan.h>
#include <faiss/IndexRefine.h>
#include <faiss/invlists/BlockInvertedLists.h>
#include <faiss/utils/utils.h>

#include <fmt/format.h>

#include "common/timing.hpp"

namespace quarry::bench {

namespace {

void set_threads(unsigned threads) { omp_set_num_threads(static_cast<int>(std::max(1u, threads))); }

}  // namespace

struct FaissIvfPq::Impl {
  FaissIvfPqConfig config;
  std::unique_ptr<faiss::IndexFlatL2> quantizer;
  std::unique_ptr<faiss::IndexIVF> ivf;            // IndexIVFPQ or IndexIVFPQFastScan
  std::unique_ptr<faiss::IndexRefineFlat> refine;  // wraps *ivf (not owned by it)
};

FaissIvfPq::FaissIvfPq(const FaissIvfPqConfig& c) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.config = c;
  s.quantizer = std::make_unique<faiss::IndexFlatL2>(c.d);
  faiss::ProductQuantizer* pq = nullptr;
  if (c.nbits == 4) {
    auto fs = std::make_unique<faiss::IndexIVFPQFastScan>(s.quantizer.get(), c.d, c.nlist, c.m, 4);
    pq = &fs->pq;
    s.ivf = std::move(fs);
  } else {
    auto ivfpq = std::make_unique<faiss::IndexIVFPQ>(s.quantizer.get(), c.d, c.nlist, c.m, c.nbits);
    pq = &ivfpq->pq;
    s.ivf = std::move(ivfpq);
  }
  s.ivf->cp.niter = c.coarse_iterations;
  s.ivf->cp.max_points_per_centroid = static_cast<int>(c.max_points_per_centroid);
  s.ivf->cp.seed = c.seed;
  pq->cp.niter = c.pq_iterations;
  pq->cp.max_points_per_centroid = static_cast<int>(c.max_points_per_centroid);
  pq->cp.seed = c.seed + 1;
  // Only silences FAISS's warning for fewer than 39 training points per centroid (bigann10k has
  // 9,900 for 256); quarry warns about nothing of the kind.
  pq->cp.min_points_per_centroid = 1;
  s.ivf->verbose = false;
}

FaissIvfPq::~FaissIvfPq() = default;

double FaissIvfPq::train(const float* x, long n, unsigned threads) {
  set_threads(threads);
  const auto t0 = Clock::now();
  impl_->ivf->train(n, x);
  return seconds_since(t0);
}

double FaissIvfPq::add(const float* x, long n, unsigned threads) {
  set_threads(threads);
  const auto t0 = Clock::now();
  impl_->ivf->add(n, x);
  return seconds_since(t0);
}

double FaissIvfPq::enable_refine(const float* x) {
  const auto t0 = Clock::now();
  impl_->refine = std::make_unique<faiss::IndexRefineFlat>(impl_->ivf.get(), x);
  return seconds_since(t0);
}

void FaissIvfPq::search(const float* queries, long nq, long k, long nprobe, bool refine, float k_factor, unsigned threads,
                        float* distances, std::int64_t* ids) const {
  static_assert(sizeof(faiss::idx_t) == sizeof(std::int64_t));
  set_threads(threads);
  faiss::SearchParametersIVF ivf_params;
  ivf_params.nprobe = static_cast<std::size_t>(nprobe);
  auto* labels = reinterpret_cast<faiss::idx_t*>(ids);
  if (refine && impl_->refine) {
    faiss::IndexRefineSearchParameters params;
    params.k_factor = k_factor;
    params.base_index_params = &ivf_params;
    impl_->refine->search(nq, queries, k, distances, labels, &params);
  } else {
    impl_->ivf->search(nq, queries, k, distances, labels, &ivf_params);
  }
}

void FaissIvfPq::coarse_lists(const float* x, long n, long nprobe, std::int64_t* lists) const {
  set_threads(1);
  std::vector<float> dist(static_cast<std::size_t>(n * nprobe));
  impl_->quantizer->search(n, x, nprobe, dist.data(), reinterpret_cast<faiss::idx_t*>(lists));
}

std::int64_t FaissIvfPq::list_size(long l) const {
  return static_cast<std::int64_t>(impl_->ivf->invlists->list_size(static_cast<std::size_t>(l)));
}

double FaissIvfPq::bytes_per_vector(bool refine) const {
  const auto& c = impl_->config;
  const double code = static_cast<double>((c.m * c.nbits + 7) / 8);
  return code + sizeof(std::int64_t) + (refine ? 4.0 * static_cast<double>(c.d) : 0.0);
}

double FaissIvfPq::bytes_per_vector_held(bool refine) const {
  const faiss::IndexIVF& ivf = *impl_->ivf;
  const faiss::InvertedLists& inv = *ivf.invlists;
  double bytes = 0;
  const auto* block = dynamic_cast<const faiss::BlockInvertedLists*>(&inv);
  for (std::size_t l = 0; l < inv.nlist; ++l) {
    const std::size_t n = inv.list_size(l);
    bytes += static_cast<double>(n * sizeof(faiss::idx_t));
    if (block) bytes += static_cast<double>((n + block->n_per_block - 1) / block->n_per_block * block->block_size);
    else bytes += static_cast<double>(n * inv.code_size);
  }
  const double n = ivf.ntotal > 0 ? static_cast<double>(ivf.ntotal) : 1.0;
  return bytes / n + (refine ? 4.0 * static_cast<double>(impl_->config.d) : 0.0);
}

std::string FaissIvfPq::version() {
  return fmt::format("FAISS {}.{}.{}", FAISS_VERSION_MAJOR, FAISS_VERSION_MINOR, FAISS_VERSION_PATCH);
}

std::string FaissIvfPq::compile_options() {
  std::string s = faiss::get_compile_options();
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

std::string FaissIvfPq::build() {
  const std::string s = faiss::get_compile_options();
  if (s.find("AVX512") != std::string::npos) return "avx512";
  if (s.find("AVX2") != std::string::npos) return "avx2";
  return "generic";
}

}  // namespace quarry::bench
