#include "common/synthetic_embeddings.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <numbers>
#include <system_error>
#include <utility>

#include <Eigen/Core>
#include <fmt/format.h>

#include <quarry/io/crc32c.hpp>
#include <quarry/io/section_file.hpp>

#include "common/detail/splitmix64.hpp"

namespace quarry::bench {

namespace {

// Bumped whenever the generator's output for a given spec changes, so old caches are refused.
constexpr int kGeneratorVersion = 1;

constexpr std::uint64_t kStreamMap = 0, kStreamCenters = 1, kStreamBase = 2, kStreamQueries = 3;

// SplitMix64 (common/detail/splitmix64.hpp), so row i's numbers depend on (seed, stream, i) only,
// with the distributions the generator draws from.
struct EmbeddingRng : detail::SplitMix64 {
  using detail::SplitMix64::SplitMix64;
  // Uniform in (0, 1]: never 0, so log() is finite.
  double uniform() noexcept { return (static_cast<double>(next() >> 11) + 1.0) * 0x1.0p-53; }
  // Two independent N(0, 1) by Box-Muller.
  std::pair<float, float> normal_pair() noexcept {
    const double r = std::sqrt(-2.0 * std::log(uniform()));
    const double a = 2.0 * std::numbers::pi * uniform();
    return {static_cast<float>(r * std::cos(a)), static_cast<float>(r * std::sin(a))};
  }
  // Approximately N(0, 1), cheap: the sum of four 16-bit uniforms, centred and scaled (Irwin-Hall
  // with n = 4; tails end at +-3.5). Only for the small isotropic noise.
  float rough_normal() noexcept {
    const std::uint64_t r = next();
    const std::uint32_t s = static_cast<std::uint32_t>(r & 0xffff) + static_cast<std::uint32_t>((r >> 16) & 0xffff) +
                            static_cast<std::uint32_t>((r >> 32) & 0xffff) + static_cast<std::uint32_t>(r >> 48);
    constexpr float kScale = 1.7320508f / 65536.f;  // sqrt(3) / 2^16: unit variance
    return (static_cast<float>(s) - 131070.f) * kScale;
  }
};

void fill_normal(EmbeddingRng& rng, float* out, std::size_t count, float scale) {
  for (std::size_t i = 0; i < count; i += 2) {
    const auto [a, b] = rng.normal_pair();
    out[i] = scale * a;
    if (i + 1 < count) out[i + 1] = scale * b;
  }
}

using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

}  // namespace

std::string SyntheticSpec::key() const {
  return fmt::format("n={} nq={} d={} latent={} clusters={} center_scale={} noise={} seed={} gen={}", n, nq, d, latent,
                     clusters, center_scale, noise, seed, kGeneratorVersion);
}

std::string SyntheticSpec::hash() const { return fmt::format("{:08x}", crc32c(key())); }

SyntheticEmbeddings::SyntheticEmbeddings(const SyntheticSpec& spec) : spec_(spec) {
  if (spec.n < 1 || spec.nq < 1 || spec.d < 1 || spec.latent < 1 || spec.clusters < 1 || spec.clusters >= (std::int64_t{1} << 32) ||
      !(spec.noise >= 0.f))
    throw error(errc::invalid_argument, fmt::format("SyntheticSpec {}: every count must be positive", spec.key()));
  const auto d = static_cast<std::size_t>(spec.d), latent = static_cast<std::size_t>(spec.latent);
  map_t_.resize(latent * d);
  EmbeddingRng map_rng(spec.seed, kStreamMap, 0);
  fill_normal(map_rng, map_t_.data(), map_t_.size(), 1.f / std::sqrt(static_cast<float>(spec.latent)));
  centers_.resize(static_cast<std::size_t>(spec.clusters) * latent);
  EmbeddingRng center_rng(spec.seed, kStreamCenters, 0);
  fill_normal(center_rng, centers_.data(), centers_.size(), spec.center_scale);
}

void SyntheticEmbeddings::rows(std::uint64_t stream, std::int64_t row0, std::int64_t count, float* out, ThreadPool* pool) const {
  const std::int64_t d = spec_.d, latent = spec_.latent;
  const auto clusters = static_cast<std::uint64_t>(spec_.clusters);  // < 2^32 (checked at construction)
  parallel_for(pool, 0, count, [&](std::int64_t lo, std::int64_t hi) {
    std::vector<float> z(static_cast<std::size_t>(latent));
    for (std::int64_t i = lo; i < hi; ++i) {
      EmbeddingRng rng(spec_.seed, stream, static_cast<std::uint64_t>(row0 + i));
      const auto c = static_cast<std::int64_t>(((rng.next() >> 32) * clusters) >> 32);
      fill_normal(rng, z.data(), z.size(), 1.f);
      for (std::int64_t j = 0; j < latent; ++j) z[static_cast<std::size_t>(j)] += centers_[static_cast<std::size_t>(c * latent + j)];
      float* row = out + i * d;
      for (std::int64_t r = 0; r < d; ++r) row[r] = spec_.noise * rng.rough_normal();
      // The latent point mapped into d dimensions, one latent coordinate at a time (a fixed
      // summation order, so a row does not depend on how the rows are chunked).
      for (std::int64_t j = 0; j < latent; ++j) {
        const float zj = z[static_cast<std::size_t>(j)];
        const float* m = map_t_.data() + j * d;
        for (std::int64_t r = 0; r < d; ++r) row[r] += m[r] * zj;
      }
    }
  }, 1024);
}

void SyntheticEmbeddings::base_rows(std::int64_t row0, std::int64_t count, float* out, ThreadPool* pool) const {
  rows(kStreamBase, row0, count, out, pool);
}

void SyntheticEmbeddings::query_rows(std::int64_t row0, std::int64_t count, float* out, ThreadPool* pool) const {
  rows(kStreamQueries, row0, count, out, pool);
}

Tensor<float> SyntheticEmbeddings::base(ThreadPool* pool) const {
  auto t = Tensor<float>::uninitialized({spec_.n, spec_.d});
  base_rows(0, spec_.n, t.data(), pool);
  return t;
}

Tensor<float> SyntheticEmbeddings::queries(ThreadPool* pool) const {
  auto t = Tensor<float>::uninitialized({spec_.nq, spec_.d});
  query_rows(0, spec_.nq, t.data(), pool);
  return t;
}

std::vector<std::int32_t> brute_force_knn(TensorView<const float> base, TensorView<const float> queries, std::int64_t k,
                                          ThreadPool* pool) {
  const std::int64_t n = base.dim(0), nq = queries.dim(0), d = base.dim(1);
  if (queries.dim(1) != d) throw error(errc::shape_mismatch, fmt::format("brute_force_knn: base {} and queries {}", base.shape(), queries.shape()));
  k = std::min(k, n);
  const std::int64_t keep = std::min(n, k + 32);
  constexpr std::int64_t kQueryBlock = 64, kBaseBlock = 4096;
  const Eigen::Map<const RowMajor> b_all(base.data(), n, d), q_all(queries.data(), nq, d);
  std::vector<float> norms(static_cast<std::size_t>(n));
  parallel_for(pool, 0, n, [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t i = lo; i < hi; ++i) norms[static_cast<std::size_t>(i)] = b_all.row(i).squaredNorm();
  }, 4096);
  std::vector<std::int32_t> out(static_cast<std::size_t>(nq * k));
  const std::int64_t blocks = (nq + kQueryBlock - 1) / kQueryBlock;
  parallel_for(pool, 0, blocks, [&](std::int64_t blo, std::int64_t bhi) {
    using Candidate = std::pair<float, std::int32_t>;  // max-heap on (distance, id)
    std::vector<std::vector<Candidate>> heaps(static_cast<std::size_t>(kQueryBlock));
    RowMajor dots;
    for (std::int64_t blk = blo; blk < bhi; ++blk) {
      const std::int64_t q0 = blk * kQueryBlock, qn = std::min(kQueryBlock, nq - q0);
      for (auto& h : heaps) h.clear();
      for (std::int64_t b0 = 0; b0 < n; b0 += kBaseBlock) {
        const std::int64_t bn = std::min(kBaseBlock, n - b0);
        dots.noalias() = q_all.middleRows(q0, qn) * b_all.middleRows(b0, bn).transpose();
        for (std::int64_t q = 0; q < qn; ++q) {
          auto& h = heaps[static_cast<std::size_t>(q)];
          const float* row = dots.data() + q * bn;
          for (std::int64_t i = 0; i < bn; ++i) {
            const Candidate c{norms[static_cast<std::size_t>(b0 + i)] - 2.f * row[i], static_cast<std::int32_t>(b0 + i)};
            if (static_cast<std::int64_t>(h.size()) < keep) {
              h.push_back(c);
              std::push_heap(h.begin(), h.end());
            } else if (c < h.front()) {
              std::pop_heap(h.begin(), h.end());
              h.back() = c;
              std::push_heap(h.begin(), h.end());
            }
          }
        }
      }
      // Re-rank the candidates by exact distances (double), ties by id.
      for (std::int64_t q = 0; q < qn; ++q) {
        std::vector<std::pair<double, std::int32_t>> exact;
        exact.reserve(heaps[static_cast<std::size_t>(q)].size());
        const float* qv = queries.data() + (q0 + q) * d;
        for (const Candidate& c : heaps[static_cast<std::size_t>(q)]) {
          const float* bv = base.data() + static_cast<std::int64_t>(c.second) * d;
          double s = 0;
          for (std::int64_t j = 0; j < d; ++j) {
            const double diff = static_cast<double>(qv[j]) - static_cast<double>(bv[j]);
            s += diff * diff;
          }
          exact.emplace_back(s, c.second);
        }
        std::sort(exact.begin(), exact.end());
        for (std::int64_t r = 0; r < k; ++r) out[static_cast<std::size_t>((q0 + q) * k + r)] = exact[static_cast<std::size_t>(r)].second;
      }
    }
  });
  return out;
}

std::uint32_t checksum(TensorView<const float> t) {
  return crc32c(std::as_bytes(std::span<const float>(t.data(), static_cast<std::size_t>(t.numel()))));
}

namespace {

const FileFormat kGroundTruthFormat{"QRYBCHGT", 1, 0};

}  // namespace

std::string ground_truth_cache_path(const std::string& dir, const SyntheticSpec& spec) {
  return (std::filesystem::path(dir) / fmt::format("synth-{}-{}.gt", spec.n, spec.hash())).string();
}

result<CachedGroundTruth> load_ground_truth(const std::string& path, const SyntheticSpec& spec, TensorView<const float> base,
                                            TensorView<const float> queries, std::int64_t min_k) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return status(errc::not_found, fmt::format("{}: no such file", path));
  QUARRY_ASSIGN_OR_RETURN(SectionFile file, SectionFile::open(path, kGroundTruthFormat));
  QUARRY_ASSIGN_OR_RETURN(std::span<const std::byte> key_bytes, file.section("SPEC"));
  const std::string key(reinterpret_cast<const char*>(key_bytes.data()), key_bytes.size());
  if (key != spec.key())
    return status(errc::invalid_argument, fmt::format("{}: made for \"{}\", not \"{}\"", path, key, spec.key()));
  QUARRY_ASSIGN_OR_RETURN(std::span<const std::uint32_t> crcs, file.array<std::uint32_t>("DCRC"));
  const std::uint32_t base_crc = checksum(base), query_crc = checksum(queries);
  if (crcs.size() != 2 || crcs[0] != base_crc || crcs[1] != query_crc)
    return status(errc::invalid_argument,
                  fmt::format("{}: computed on other vectors (checksums differ: this system's generator output differs)", path));
  QUARRY_ASSIGN_OR_RETURN(std::span<const std::int64_t> shape, file.array<std::int64_t>("SHAP"));
  if (shape.size() != 2 || shape[0] != queries.dim(0) || shape[1] < 1)
    return status(errc::corrupt_data, fmt::format("{}: SHAP does not describe {} queries", path, queries.dim(0)));
  if (shape[1] < std::min(min_k, base.dim(0)))
    return status(errc::invalid_argument, fmt::format("{}: {} neighbours per query, {} wanted", path, shape[1], min_k));
  QUARRY_ASSIGN_OR_RETURN(std::span<const std::int32_t> ids, file.array<std::int32_t>("GTID"));
  if (static_cast<std::int64_t>(ids.size()) != shape[0] * shape[1])
    return status(errc::corrupt_data, fmt::format("{}: GTID holds {} ids, SHAP says {} x {}", path, ids.size(), shape[0], shape[1]));
  for (const std::int32_t id : ids)
    if (id < 0 || id >= base.dim(0)) return status(errc::corrupt_data, fmt::format("{}: id {} outside the base", path, id));
  CachedGroundTruth gt;
  gt.k = shape[1];
  gt.ids.assign(ids.begin(), ids.end());
  return gt;
}

status save_ground_truth(const std::string& path, const SyntheticSpec& spec, TensorView<const float> base,
                         TensorView<const float> queries, std::int64_t k, const std::vector<std::int32_t>& ids) {
  if (static_cast<std::int64_t>(ids.size()) != queries.dim(0) * k)
    return status(errc::invalid_argument, fmt::format("save_ground_truth: {} ids for {} queries x {}", ids.size(), queries.dim(0), k));
  std::error_code ec;
  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  if (ec) return status(errc::io_error, fmt::format("{}: cannot create the directory: {}", dir.string(), ec.message()));
  const std::string key = spec.key();
  const std::vector<std::uint32_t> crcs = {checksum(base), checksum(queries)};
  const std::vector<std::int64_t> shape = {queries.dim(0), k};
  SectionFileWriter w(kGroundTruthFormat);
  w.add("SPEC", std::as_bytes(std::span<const char>(key.data(), key.size())));
  w.add_array<std::uint32_t>("DCRC", crcs);
  w.add_array<std::int64_t>("SHAP", shape);
  w.add_array<std::int32_t>("GTID", ids);
  return w.write(path);
}

}  // namespace quarry::bench
