#include "quarry/index/pq.hpp"

#include <algorithm>
#include <random>
#include <vector>

#include <Eigen/Core>
#include <fmt/format.h>

#include "quarry/core/checked.hpp"
#include "index/finite.hpp"

namespace quarry {

result<ProductQuantizer> ProductQuantizer::create(std::int64_t d, std::int64_t m, int nbits) {
  constexpr std::int64_t kMaxDim = std::int64_t{1} << 20;
  if (d <= 0 || d > kMaxDim)
    return status(errc::invalid_argument, fmt::format("ProductQuantizer: dimension d = {} must be in 1..{}", d, kMaxDim));
  if (m <= 0) return status(errc::invalid_argument, fmt::format("ProductQuantizer: M = {} sub-quantizers; it must be positive", m));
  if (d % m != 0)
    return status(errc::invalid_argument, fmt::format("ProductQuantizer: d = {} is not a multiple of M = {} (each sub-vector needs d / M values)", d, m));
  if (nbits != 8 && nbits != 4)
    return status(errc::invalid_argument, fmt::format("ProductQuantizer: nbits must be 8 or 4, not {}", nbits));
  ProductQuantizer pq;
  pq.d_ = d;
  pq.m_ = m;
  pq.nbits_ = nbits;
  pq.centroids_ = Tensor<float>({m, std::int64_t{1} << nbits, d / m});
  return pq;
}

status ProductQuantizer::train(TensorView<const float> x, const PqTrainOptions& opt) {
  if (m_ == 0) return status(errc::invalid_argument, "ProductQuantizer::train on an empty quantizer; make one with create()");
  if (x.rank() != 2 || x.dim(1) != d_)
    return status(errc::shape_mismatch, fmt::format("ProductQuantizer::train: vectors {} must be [n, {}]", x.shape(), d_));
  const std::int64_t n = x.dim(0), k = ksub(), dsub = sub_dim();
  if (n < k)
    return status(errc::invalid_argument, fmt::format("ProductQuantizer::train: {} training vectors; {} centroids per sub-space need at least as many", n, k));
  if (d_ > 1 && x.strides()[1] != 1)
    return status(errc::invalid_argument, fmt::format("ProductQuantizer::train needs unit column stride; vectors {} have strides {}", x.shape(), x.strides()));
  QUARRY_RETURN_IF_ERROR(detail::check_finite_rows(x, "the training vectors"));

  // One sample of rows for every sub-space, as FAISS does.
  Tensor<float> sampled;
  TensorView<const float> train = x;
  const auto cap = opt.max_points_per_centroid > 0 ? checked_mul(k, opt.max_points_per_centroid) : std::nullopt;
  if (cap && n > *cap) {
    std::mt19937_64 rng(opt.seed);
    std::vector<std::int64_t> idx(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) idx[i] = i;
    for (std::int64_t i = 0; i < *cap; ++i) std::swap(idx[i], idx[std::uniform_int_distribution<std::int64_t>(i, n - 1)(rng)]);
    idx.resize(static_cast<std::size_t>(*cap));
    std::sort(idx.begin(), idx.end());
    sampled = Tensor<float>::uninitialized({*cap, d_});
    for (std::int64_t i = 0; i < *cap; ++i) sampled[i].copy_from(x[idx[i]]);
    train = sampled.view();
  }

  Tensor<float> centroids({m_, k, dsub});
  for (std::int64_t m = 0; m < m_; ++m) {
    KMeansOptions ko;
    ko.k = k;
    ko.iterations = opt.iterations;
    ko.init = opt.init;
    ko.seed = opt.seed + static_cast<std::uint64_t>(m);
    ko.max_points_per_centroid = 0;
    ko.pool = opt.pool;
    if (opt.progress) {
      const std::int64_t per = std::max(1, opt.iterations), total = m_ * per;
      // By value: the callable outlives this block (it lives in ko).
      ko.on_iteration = [&opt, m, per, total](int done, int) { opt.progress(m * per + done, total); };
    }
    QUARRY_ASSIGN_OR_RETURN(KMeansResult r, kmeans(train.slice(1, m * dsub, (m + 1) * dsub), ko));
    centroids[m].copy_from(r.centroids.view());
  }
  centroids_ = std::move(centroids);
  trained_ = true;
  return {};
}

status ProductQuantizer::set_centroids(TensorView<const float> c) {
  const Shape want{m_, ksub(), sub_dim()};
  if (m_ == 0) return status(errc::invalid_argument, "ProductQuantizer::set_centroids on an empty quantizer; make one with create()");
  if (c.shape() != want)
    return status(errc::shape_mismatch, fmt::format("ProductQuantizer::set_centroids: centroids {} must be {}", c.shape(), want));
  Tensor<float> copy = c.contiguous();
  QUARRY_RETURN_IF_ERROR(detail::check_finite_rows(copy.reshape({m_ * ksub(), sub_dim()}), "the centroids (as [M * ksub, d / M])"));
  centroids_ = std::move(copy);
  trained_ = true;
  return {};
}

void ProductQuantizer::require_trained(const char* what) const {
  if (!trained_) throw_error(errc::invalid_argument, fmt::format("ProductQuantizer::{} before train()", what));
}

result<Tensor<std::uint8_t>> ProductQuantizer::encode(TensorView<const float> x, ThreadPool* pool) const {
  if (!trained_) return status(errc::invalid_argument, "ProductQuantizer::encode before train()");
  if (x.rank() != 2 || x.dim(1) != d_)
    return status(errc::shape_mismatch, fmt::format("ProductQuantizer::encode: vectors {} must be [n, {}]", x.shape(), d_));
  if (d_ > 1 && x.strides()[1] != 1)
    return status(errc::invalid_argument, fmt::format("ProductQuantizer::encode needs unit column stride; vectors {} have strides {}", x.shape(), x.strides()));
  QUARRY_RETURN_IF_ERROR(detail::check_finite_rows(x, "the vectors to encode"));
  const std::int64_t n = x.dim(0), dsub = sub_dim(), cs = code_size();
  Tensor<std::uint8_t> codes({n, cs});
  if (n == 0) return codes;
  std::vector<std::int64_t> labels(static_cast<std::size_t>(n));
  std::uint8_t* out = codes.data();
  for (std::int64_t m = 0; m < m_; ++m) {
    assign_nearest(x.slice(1, m * dsub, (m + 1) * dsub), centroids_[m], labels, {}, pool);
    if (nbits_ == 8) {
      for (std::int64_t i = 0; i < n; ++i) out[i * cs + m] = static_cast<std::uint8_t>(labels[i]);
    } else {
      const int shift = static_cast<int>(m & 1) * 4;
      for (std::int64_t i = 0; i < n; ++i) out[i * cs + (m >> 1)] |= static_cast<std::uint8_t>(labels[i] << shift);
    }
  }
  return codes;
}

Tensor<float> ProductQuantizer::decode(TensorView<const std::uint8_t> codes) const {
  require_trained("decode");
  if (codes.rank() != 2 || codes.dim(1) != code_size())
    throw_error(errc::shape_mismatch, fmt::format("ProductQuantizer::decode: codes {} must be [n, {}]", codes.shape(), code_size()));
  const Tensor<std::uint8_t> packed = codes.contiguous();
  const std::int64_t n = codes.dim(0), dsub = sub_dim(), k = ksub(), cs = code_size();
  Tensor<float> out = Tensor<float>::uninitialized({n, d_});
  const float* c = centroids_.data();
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint8_t* code = packed.data() + i * cs;
    float* row = out.data() + i * d_;
    for (std::int64_t m = 0; m < m_; ++m) {
      const float* src = c + (m * k + sub_code(code, m)) * dsub;
      std::copy(src, src + dsub, row + m * dsub);
    }
  }
  return out;
}

void ProductQuantizer::compute_distance_table(std::span<const float> query, Metric metric, TensorView<float> table) const {
  require_trained("compute_distance_table");
  const std::int64_t k = ksub(), dsub = sub_dim();
  if (static_cast<std::int64_t>(query.size()) != d_)
    throw_error(errc::shape_mismatch, fmt::format("ProductQuantizer::compute_distance_table: query of length {}; d = {}", query.size(), d_));
  if (table.shape() != Shape{m_, k} || !table.is_contiguous())
    throw_error(errc::shape_mismatch, fmt::format("ProductQuantizer::compute_distance_table: table {} must be a contiguous [{}, {}]", table.shape(), m_, k));
  const float* c = centroids_.data();
  float* t = table.data();
  if (metric != Metric::l2) {  // inner products: one matrix-vector product per sub-space
    using RowMajor = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    for (std::int64_t m = 0; m < m_; ++m) {
      const Eigen::Map<const RowMajor> cb(c + m * k * dsub, k, dsub);
      const Eigen::Map<const Eigen::VectorXf> q(query.data() + m * dsub, dsub);
      Eigen::Map<Eigen::VectorXf>(t + m * k, k).noalias() = cb * q;
    }
    return;
  }
  for (std::int64_t m = 0; m < m_; ++m) {
    const float* q = query.data() + m * dsub;
    for (std::int64_t j = 0; j < k; ++j) {
      const float* cj = c + (m * k + j) * dsub;
      float s = 0;
      if (metric == Metric::l2) {
        for (std::int64_t t2 = 0; t2 < dsub; ++t2) {
          const float e = q[t2] - cj[t2];
          s += e * e;
        }
      } else {
        for (std::int64_t t2 = 0; t2 < dsub; ++t2) s += q[t2] * cj[t2];
      }
      t[m * k + j] = s;
    }
  }
}

Tensor<float> ProductQuantizer::compute_distance_table(std::span<const float> query, Metric metric) const {
  Tensor<float> table = Tensor<float>::uninitialized({m_, ksub()});
  compute_distance_table(query, metric, table.view());
  return table;
}

void ProductQuantizer::adc_distances(TensorView<const float> table, TensorView<const std::uint8_t> codes, std::span<float> out) const {
  if (table.shape() != Shape{m_, ksub()} || !table.is_contiguous())
    throw_error(errc::shape_mismatch, fmt::format("ProductQuantizer::adc_distances: table {} must be a contiguous [{}, {}]", table.shape(), m_, ksub()));
  if (codes.rank() != 2 || codes.dim(1) != code_size() || !codes.is_contiguous())
    throw_error(errc::shape_mismatch, fmt::format("ProductQuantizer::adc_distances: codes {} must be a contiguous [n, {}]", codes.shape(), code_size()));
  if (static_cast<std::int64_t>(out.size()) != codes.dim(0))
    throw_error(errc::shape_mismatch, fmt::format("ProductQuantizer::adc_distances: {} codes but {} outputs", codes.dim(0), out.size()));
  const float* t = table.data();
  const std::uint8_t* c = codes.data();
  const std::int64_t cs = code_size();
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = adc_distance(t, c + static_cast<std::int64_t>(i) * cs);
}

}  // namespace quarry
