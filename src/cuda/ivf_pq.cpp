// IvfPqIndex<cuda> (quarry/index/cuda_ivf_pq.hpp): the device copy of a CPU index, the argument
// checks of a search, the sizing of its passes and the kernels of ivf_pq_kernels.cu.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "cuda_error.hpp"
#include "ivf_pq_kernels.h"
#include "quarry/core/dot.hpp"
#include "quarry/index/cuda_ivf_pq.hpp"

namespace quarry {

namespace {

constexpr std::int64_t kMaxQueriesPerPass = 65535;  // gridDim.y of the scan
constexpr int kMaxSplits = 64;
static_assert(IvfPqIndex<cuda>::max_candidates == cuda_kernels::kIvfPqMaxKeep);

status from_cpu_error(const status& st, std::string_view what) {
  return status(st.code(), fmt::format("IvfPqIndex<cuda>::from_cpu: {}: {}", what, st.message()));
}

// A device buffer holding a copy of `bytes` bytes of host memory.
result<detail::DeviceBuffer> upload(const void* src, std::size_t bytes, int device, std::string_view what) {
  auto buffer = detail::DeviceBuffer::allocate(bytes, device);
  if (!buffer.ok()) return from_cpu_error(buffer.status(), what);
  if (bytes != 0) {
    const status st = detail::cuda_copy_host_to_device(buffer->data(), src, bytes, device);
    if (!st.ok()) return from_cpu_error(st, what);
  }
  return buffer;
}

template <class T>
result<detail::DeviceBuffer> upload(const std::vector<T>& v, int device, std::string_view what) {
  return upload(v.data(), v.size() * sizeof(T), device, what);
}

// Device scratch of one search, typed views into separately allocated buffers.
template <class T>
result<detail::DeviceBuffer> scratch(std::int64_t count, int device, std::string_view what) {
  auto buffer = detail::DeviceBuffer::allocate(static_cast<std::size_t>(count) * sizeof(T), device);
  if (!buffer.ok())
    return status(buffer.status().code(), fmt::format("IvfPqIndex<cuda>::search: {} ({} bytes): {}", what,
                                                      static_cast<std::size_t>(count) * sizeof(T), buffer.status().message()));
  return buffer;
}

}  // namespace

result<IvfPqIndex<cuda>> IvfPqIndex<cuda>::from_cpu(const IvfPqIndex<cpu>& index, int device) {
  if (!index.is_trained())
    return status(errc::invalid_argument, "IvfPqIndex<cuda>::from_cpu: the CPU index is not trained; train it (or load one) first");
  if (index.options().opq)
    return status(errc::unsupported, "IvfPqIndex<cuda>::from_cpu: indexes with an OPQ rotation are not supported on the device yet");
  if (const auto info = cuda_device_info(device); !info.ok()) return from_cpu_error(info.status(), fmt::format("device {}", device));
  const IvfPqOptions& o = index.options();
  const ProductQuantizer& pq = index.pq();
  const std::int64_t d = index.dim(), nlist = o.nlist, m = o.m, ksub = pq.ksub(), code_size = pq.code_size();
  if (nlist > std::numeric_limits<std::int32_t>::max())
    return status(errc::unsupported, fmt::format("IvfPqIndex<cuda>::from_cpu: {} lists; the device index takes at most 2^31 - 1", nlist));

  IvfPqIndex out;
  out.d_ = d;
  out.opts_ = o;
  out.code_size_ = code_size;

  // The lists one after the other.
  std::vector<std::int64_t> offsets(static_cast<std::size_t>(nlist) + 1, 0);
  std::vector<std::int64_t> sizes(static_cast<std::size_t>(nlist));
  for (std::int64_t l = 0; l < nlist; ++l) {
    sizes[static_cast<std::size_t>(l)] = index.list_size(l);
    offsets[static_cast<std::size_t>(l) + 1] = offsets[static_cast<std::size_t>(l)] + sizes[static_cast<std::size_t>(l)];
  }
  const std::int64_t ntotal = offsets.back();
  std::vector<std::int64_t> ids(static_cast<std::size_t>(ntotal));
  std::vector<std::uint8_t> codes(static_cast<std::size_t>(ntotal * code_size), 0);
  std::vector<float> vectors(o.store_vectors ? static_cast<std::size_t>(ntotal * d) : 0);
  for (std::int64_t l = 0; l < nlist; ++l) {
    const std::int64_t n = sizes[static_cast<std::size_t>(l)], at = offsets[static_cast<std::size_t>(l)];
    const auto list_ids = index.list_ids(l);
    if (static_cast<std::int64_t>(list_ids.size()) != n)
      return status(errc::internal, fmt::format("IvfPqIndex<cuda>::from_cpu: list {} has {} vectors but {} ids", l, n, list_ids.size()));
    std::copy(list_ids.begin(), list_ids.end(), ids.begin() + at);
    std::uint8_t* dst = codes.data() + at * code_size;
    if (o.nbits == 8) {
      const auto c = index.list_codes(l);
      if (static_cast<std::int64_t>(c.size()) != n * code_size)
        return status(errc::internal, fmt::format("IvfPqIndex<cuda>::from_cpu: list {} has {} code bytes for {} vectors", l, c.size(), n));
      if (n != 0) std::memcpy(dst, c.data(), c.size());
    } else {
      // Fast-scan blocks -> ProductQuantizer's packed layout: sub-quantizer j in byte j / 2, the
      // low nibble for even j.
      const FastScanCodes& fast = index.list_fast_codes(l);
      if (fast.size() != n)
        return status(errc::internal, fmt::format("IvfPqIndex<cuda>::from_cpu: list {} has {} fast-scan codes for {} vectors", l, fast.size(), n));
      for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t j = 0; j < m; ++j) {
          const auto c = static_cast<std::uint8_t>(fast.code(i, j) & 0xf);
          dst[i * code_size + j / 2] |= static_cast<std::uint8_t>((j & 1) ? c << 4 : c);
        }
    }
    if (o.store_vectors) {
      const auto v = index.list_vectors(l);
      if (static_cast<std::int64_t>(v.size()) != n * d)
        return status(errc::internal, fmt::format("IvfPqIndex<cuda>::from_cpu: list {} has {} vector values for {} vectors", l, v.size(), n));
      if (n != 0) std::memcpy(vectors.data() + at * d, v.data(), v.size() * sizeof(float));
    }
  }

  // Centroids, their squared norms as the CPU computes them (its dot), and the codebooks.
  const Tensor<float> centroids = index.centroids().contiguous();
  std::vector<float> norms(static_cast<std::size_t>(nlist));
  for (std::int64_t l = 0; l < nlist; ++l) {
    const std::span<const float> c(centroids.data() + l * d, static_cast<std::size_t>(d));
    norms[static_cast<std::size_t>(l)] = dot(c, c);
  }
  const Tensor<float> codebooks = pq.centroids().contiguous();  // [m, ksub, dsub]

  auto put = [&](detail::DeviceBuffer& to, result<detail::DeviceBuffer> r) -> status {
    if (!r.ok()) return r.status();
    to = std::move(*r);
    return {};
  };
  QUARRY_RETURN_IF_ERROR(put(out.centroids_, upload(centroids.data(), static_cast<std::size_t>(nlist * d) * sizeof(float), device, "centroids")));
  QUARRY_RETURN_IF_ERROR(put(out.centroid_norms_, upload(norms, device, "centroid norms")));
  QUARRY_RETURN_IF_ERROR(put(out.codebooks_, upload(codebooks.data(), static_cast<std::size_t>(codebooks.numel()) * sizeof(float), device, "codebooks")));
  QUARRY_RETURN_IF_ERROR(put(out.codes_, upload(codes, device, "codes")));
  QUARRY_RETURN_IF_ERROR(put(out.ids_, upload(ids, device, "ids")));
  QUARRY_RETURN_IF_ERROR(put(out.list_offsets_, upload(offsets, device, "list offsets")));
  QUARRY_RETURN_IF_ERROR(put(out.vectors_, upload(vectors, device, "vectors")));
  out.device_ = device;

  // The device copy precomputes the l2 terms exactly when the CPU index does, so both make the same tables.
  if (index.uses_precomputed_terms()) {
    auto terms = detail::DeviceBuffer::allocate(static_cast<std::size_t>(nlist * m * ksub) * sizeof(float), device);
    if (!terms.ok()) return from_cpu_error(terms.status(), "l2 terms");
    out.l2_terms_ = std::move(*terms);
    cuda_kernels::IvfPqDeviceIndex ix;
    ix.centroids = static_cast<const float*>(out.centroids_.data());
    ix.codebooks = static_cast<const float*>(out.codebooks_.data());
    ix.d = d;
    ix.nlist = nlist;
    ix.m = m;
    ix.nbits = o.nbits;
    const detail::ScopedDevice on(device);
    cudaError_t e = on.error();
    if (e == cudaSuccess) e = cuda_kernels::launch_ivf_pq_l2_terms(ix, static_cast<float*>(out.l2_terms_.data()));
    if (e == cudaSuccess) e = cudaStreamSynchronize(nullptr);
    if (e != cudaSuccess) return detail::cuda_failure(e, "IvfPqIndex<cuda>::from_cpu: the l2 terms kernel");
  }

  out.ntotal_ = ntotal;
  out.max_list_ = nlist > 0 ? *std::max_element(sizes.begin(), sizes.end()) : 0;
  out.list_offsets_host_ = std::move(offsets);
  std::sort(sizes.begin(), sizes.end(), std::greater<>());
  out.largest_lists_prefix_.assign(static_cast<std::size_t>(nlist) + 1, 0);
  for (std::int64_t p = 0; p < nlist; ++p)
    out.largest_lists_prefix_[static_cast<std::size_t>(p) + 1] = out.largest_lists_prefix_[static_cast<std::size_t>(p)] + sizes[static_cast<std::size_t>(p)];

  int sms = 0, shared = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) == cudaSuccess && sms > 0) out.sm_count_ = sms;
  if (cudaDeviceGetAttribute(&shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) == cudaSuccess && shared > 0)
    out.shared_per_block_ = static_cast<std::size_t>(shared);
  (void)cudaGetLastError();
  return out;
}

result<SearchResults> IvfPqIndex<cuda>::search(std::span<const float> query, std::int64_t k, const IvfPqSearchParams& params) const {
  return search_batch(TensorView<const float>(query.data(), Shape{1, static_cast<std::int64_t>(query.size())}), k, params);
}

result<SearchResults> IvfPqIndex<cuda>::search_batch(TensorView<const float> queries, std::int64_t k, const IvfPqSearchParams& params) const {
  constexpr const char* ctx = "IvfPqIndex<cuda>::search";
  if (device_ < 0)
    return status(errc::invalid_argument, fmt::format("{}: the index holds nothing (default-constructed or moved from); make it with from_cpu()", ctx));
  if (k < 1) return status(errc::invalid_argument, fmt::format("{}: k = {}; at least 1", ctx, k));
  if (params.nprobe < 1) return status(errc::invalid_argument, fmt::format("{}: nprobe = {}; at least 1", ctx, params.nprobe));
  if (params.refine_factor < 1)
    return status(errc::invalid_argument, fmt::format("{}: refine_factor = {}; at least 1", ctx, params.refine_factor));
  if (params.filter)
    return status(errc::unsupported,
                  fmt::format("{}: a predicate filter (IvfPqSearchParams::filter) cannot run on the GPU; pass the allowed ids as a "
                              "bitset (allowed_ids), or search the CPU index",
                              ctx));
  if (k > max_candidates / params.refine_factor)
    return status(errc::unsupported, fmt::format("{}: k * refine_factor = {} * {} candidates per query; the CUDA search keeps at most {}",
                                                 ctx, k, params.refine_factor, max_candidates));
  const std::int64_t keep = k * params.refine_factor;

  // The queries as the CPU index takes them: shape, finite values, normalised under cosine.
  if (queries.rank() != 2 || queries.dim(1) != d_)
    return status(errc::shape_mismatch,
                  fmt::format("{}: vectors {} for an index of dimension {}; expected [n, {}]", ctx, queries.shape(), d_, d_));
  const std::int64_t nq = queries.dim(0);
  std::vector<float> qs(static_cast<std::size_t>(nq * d_));
  for (std::int64_t i = 0; i < nq; ++i) {
    float* row = qs.data() + i * d_;
    for (std::int64_t j = 0; j < d_; ++j) {
      const float v = queries(i, j);
      if (!std::isfinite(v))
        return status(errc::invalid_argument, fmt::format("{}: row {} of search [{}, {}] has a {} value at column {}", ctx, i, nq, d_,
                                                          std::isnan(v) ? "NaN" : "infinite", j));
      row[j] = v;
    }
  }
  const bool l2 = opts_.metric == Metric::l2;
  if (opts_.metric == Metric::cosine) {
    for (std::int64_t i = 0; i < nq; ++i) {
      float* row = qs.data() + i * d_;
      const std::span<const float> r(row, static_cast<std::size_t>(d_));
      const double norm = std::sqrt(static_cast<double>(dot(r, r)));
      if (norm == 0)
        return status(errc::invalid_argument, fmt::format("{}: row {} is a zero vector, which has no direction (cosine)", ctx, i));
      for (std::int64_t j = 0; j < d_; ++j) row[j] = static_cast<float>(row[j] / norm);
    }
  }

  SearchResults out;
  out.nq = nq;
  out.k = k;
  out.distances.assign(static_cast<std::size_t>(nq * k), l2 ? std::numeric_limits<float>::infinity() : -std::numeric_limits<float>::infinity());
  out.ids.assign(static_cast<std::size_t>(nq * k), -1);
  if (nq == 0 || ntotal_ == 0) return out;

  const bool with_terms = l2_terms_.data() != nullptr;
  std::vector<float> qnorms;
  if (with_terms) {
    qnorms.resize(static_cast<std::size_t>(nq));
    for (std::int64_t i = 0; i < nq; ++i) {
      const std::span<const float> r(qs.data() + i * d_, static_cast<std::size_t>(d_));
      qnorms[static_cast<std::size_t>(i)] = dot(r, r);  // the CPU's ||q||^2, bit for bit
    }
  }

  const std::int64_t nlist = opts_.nlist, m = opts_.m, ksub = std::int64_t{1} << opts_.nbits;
  const std::int64_t nprobe = std::min(params.nprobe, nlist);
  const std::int64_t max_cand = largest_lists_prefix_[static_cast<std::size_t>(nprobe)];
  if (max_cand >= std::int64_t{1} << 32)
    return status(errc::unsupported, fmt::format("{}: nprobe = {} lists hold up to {} vectors; one query may scan at most 2^32 - 1 on the GPU",
                                                 ctx, nprobe, max_cand));
  const std::size_t table_bytes = static_cast<std::size_t>(m * ksub) * sizeof(float);
  const bool in_shared = table_bytes <= shared_per_block_;
  const bool need_ip_tables = !l2 || with_terms;

  const detail::ScopedDevice on(device_);
  if (on.error() != cudaSuccess) return detail::cuda_failure(on.error(), fmt::format("{}: cudaSetDevice({})", ctx, device_));

  // Queries per pass: what about half the free memory holds.
  int splits = 1;
  const auto per_query_bytes = [&](int s) {
    std::int64_t b = d_ * 4 + nlist * 4 + nprobe * 4 + (nprobe + 1) * 8 + max_cand * 4 + k * 12 + 4;
    if (need_ip_tables) b += m * ksub * 4;
    if (l2 && !in_shared) b += nprobe * s * m * ksub * 4;
    return b;
  };
  std::size_t free_bytes = 0, total_bytes = 0;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) {
    (void)cudaGetLastError();
    free_bytes = std::size_t{1} << 30;
  }
  const std::int64_t budget = static_cast<std::int64_t>(std::min<std::size_t>(free_bytes / 2, std::size_t{4} << 30));
  std::int64_t nc = std::max<std::int64_t>(1, budget / per_query_bytes(1));
  nc = std::min({nc, nq, kMaxQueriesPerPass});
  if (max_queries_per_pass_ > 0) nc = std::min(nc, max_queries_per_pass_);
  // Small batches: split long lists over several blocks, so the device has work for every SM.
  if (in_shared) {
    const std::int64_t blocks = nc * nprobe, target = 4 * static_cast<std::int64_t>(sm_count_);
    if (blocks < target)
      splits = static_cast<int>(std::clamp<std::int64_t>(std::min((target + blocks - 1) / blocks, (max_list_ + 1023) / 1024), 1, kMaxSplits));
  }

  // Buffers for nc queries.
  const std::int64_t size = m * ksub;
  auto b_queries = scratch<float>(nc * d_, device_, "queries");
  auto b_norms = scratch<float>(with_terms ? nc : 0, device_, "query norms");
  auto b_coarse = scratch<float>(nc * nlist, device_, "coarse distances");
  auto b_probes = scratch<std::int32_t>(nc * nprobe, device_, "probed lists");
  auto b_offsets = scratch<std::int64_t>(nc * (nprobe + 1), device_, "candidate offsets");
  auto b_keys = scratch<std::uint32_t>(nc * max_cand, device_, "candidate distances");
  auto b_ip = scratch<float>(need_ip_tables ? nc * size : 0, device_, "query tables");
  auto b_tables = scratch<float>(l2 && !in_shared ? nc * nprobe * splits * size : 0, device_, "list tables");
  auto b_dist = scratch<float>(nc * k, device_, "result distances");
  auto b_ids = scratch<std::int64_t>(nc * k, device_, "result ids");
  auto b_allowed = scratch<std::uint64_t>(static_cast<std::int64_t>(params.allowed_ids.size()), device_, "allowed ids");
  for (const auto* b : {&b_queries, &b_norms, &b_coarse, &b_probes, &b_offsets, &b_keys, &b_ip, &b_tables, &b_dist, &b_ids, &b_allowed})
    if (!b->ok()) return b->status();
  if (!params.allowed_ids.empty())
    QUARRY_RETURN_IF_ERROR(detail::cuda_copy_host_to_device(b_allowed->data(), params.allowed_ids.data(), params.allowed_ids.size_bytes(), device_));

  cuda_kernels::IvfPqDeviceIndex ix;
  ix.centroids = static_cast<const float*>(centroids_.data());
  ix.centroid_norms = static_cast<const float*>(centroid_norms_.data());
  ix.codebooks = static_cast<const float*>(codebooks_.data());
  ix.codes = static_cast<const std::uint8_t*>(codes_.data());
  ix.ids = static_cast<const std::int64_t*>(ids_.data());
  ix.list_offsets = static_cast<const std::int64_t*>(list_offsets_.data());
  ix.vectors = opts_.store_vectors ? static_cast<const float*>(vectors_.data()) : nullptr;
  ix.l2_terms = with_terms ? static_cast<const float*>(l2_terms_.data()) : nullptr;
  ix.d = d_;
  ix.nlist = nlist;
  ix.m = m;
  ix.code_size = code_size_;
  ix.nbits = opts_.nbits;
  ix.l2 = l2;

  cuda_kernels::IvfPqSearchPass ps;
  ps.queries = static_cast<const float*>(b_queries->data());
  ps.query_norms = with_terms ? static_cast<const float*>(b_norms->data()) : nullptr;
  ps.k = k;
  ps.keep = keep;
  ps.nprobe = nprobe;
  ps.max_candidates = max_cand;
  ps.splits = splits;
  ps.tables_in_shared = in_shared;
  ps.allowed = params.allowed_ids.empty() ? nullptr : static_cast<const std::uint64_t*>(b_allowed->data());
  ps.allowed_words = static_cast<std::int64_t>(params.allowed_ids.size());
  ps.coarse = static_cast<float*>(b_coarse->data());
  ps.probes = static_cast<std::int32_t*>(b_probes->data());
  ps.candidate_offsets = static_cast<std::int64_t*>(b_offsets->data());
  ps.candidate_keys = static_cast<std::uint32_t*>(b_keys->data());
  ps.ip_tables = need_ip_tables ? static_cast<float*>(b_ip->data()) : nullptr;
  ps.table_scratch = l2 && !in_shared ? static_cast<float*>(b_tables->data()) : nullptr;
  ps.distances = static_cast<float*>(b_dist->data());
  ps.ids = static_cast<std::int64_t*>(b_ids->data());

  for (std::int64_t q0 = 0; q0 < nq; q0 += nc) {
    const std::int64_t nb = std::min(nc, nq - q0);
    ps.nq = nb;
    QUARRY_RETURN_IF_ERROR(detail::cuda_copy_host_to_device(b_queries->data(), qs.data() + q0 * d_,
                                                            static_cast<std::size_t>(nb * d_) * sizeof(float), device_));
    if (with_terms)
      QUARRY_RETURN_IF_ERROR(detail::cuda_copy_host_to_device(b_norms->data(), qnorms.data() + q0, static_cast<std::size_t>(nb) * sizeof(float), device_));
    if (const cudaError_t e = cuda_kernels::launch_ivf_pq_search(ix, ps); e != cudaSuccess)
      return detail::cuda_failure(e, fmt::format("{}: kernel launch ({} queries from {})", ctx, nb, q0));
    // The copies wait for the kernels and report their errors.
    QUARRY_RETURN_IF_ERROR(detail::cuda_copy_device_to_host(out.distances.data() + q0 * k, b_dist->data(),
                                                            static_cast<std::size_t>(nb * k) * sizeof(float), device_));
    QUARRY_RETURN_IF_ERROR(detail::cuda_copy_device_to_host(out.ids.data() + q0 * k, b_ids->data(),
                                                            static_cast<std::size_t>(nb * k) * sizeof(std::int64_t), device_));
  }
  return out;
}

}  // namespace quarry
