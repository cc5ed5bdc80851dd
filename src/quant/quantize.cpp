#include "quarry/quant/quantize.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include <fmt/format.h>

#include "quarry/core/convert.hpp"
#include "quarry/quant/error_metrics.hpp"

namespace quarry {

namespace {

// Round to nearest, ties to even (the default floating-point environment), like cvtps2dq.
inline int round_even(float x) noexcept { return static_cast<int>(std::nearbyint(x)); }

// A block's scale and zero point, the scale already rounded to its storage type.
struct BlockParams {
  float scale = 0;
  int zero = 0;
};

float round_to_storage(float s, DType scale_dtype) noexcept {
  return scale_dtype == DType::f16 ? static_cast<float>(f16(s)) : s;
}

// Scale and zero point for a block whose values span [lo, hi] (lo <= 0 <= hi for asymmetric).
BlockParams block_params(float lo, float hi, const QuantScheme& s) noexcept {
  BlockParams p;
  if (s.symmetric) {
    const float amax = std::max(-lo, hi);
    p.scale = round_to_storage(amax / static_cast<float>(s.qmax_symmetric()), s.scale_dtype);
  } else {
    lo = std::min(lo, 0.f);
    hi = std::max(hi, 0.f);
    p.scale = round_to_storage((hi - lo) / static_cast<float>(s.qmax()), s.scale_dtype);
    if (p.scale > 0) p.zero = std::clamp(round_even(-lo / p.scale), 0, s.qmax());
  }
  return p;
}

// Writes the integers of cols [c0, c1) of one row for one block.
void quantize_block(const float* w, std::int64_t c0, std::int64_t c1, BlockParams p, const QuantScheme& s,
                    std::uint8_t* row_bytes) noexcept {
  const float inv = p.scale > 0 ? 1.f / p.scale : 0.f;
  for (std::int64_t c = c0; c < c1; ++c) {
    const int q = std::clamp(round_even(w[c] * inv) + p.zero, s.qmin(), s.qmax());
    if (s.bits == 8) {
      row_bytes[c] = static_cast<std::uint8_t>(q);
    } else {
      const auto nib = static_cast<std::uint8_t>(q & 0xf);
      std::uint8_t& byte = row_bytes[c >> 1];
      byte = (c & 1) ? static_cast<std::uint8_t>((byte & 0x0f) | (nib << 4)) : static_cast<std::uint8_t>((byte & 0xf0) | nib);
    }
  }
}

void store_scale(QuantizedTensor<cpu>& q, std::int64_t sr, std::int64_t sc, BlockParams p) {
  if (q.scheme().scale_dtype == DType::f16) q.scales_f16()(sr, sc) = f16(p.scale);
  else q.scales_f32()(sr, sc) = p.scale;
  if (!q.scheme().symmetric) q.zeros()(sr, sc) = static_cast<std::uint8_t>(p.zero);
}

// The first non-finite element of w, as an error naming it; ok when all are finite.
status check_finite(TensorView<const float> w) {
  for (std::int64_t r = 0; r < w.dim(0); ++r)
    for (std::int64_t c = 0; c < w.dim(1); ++c)
      if (!std::isfinite(w(r, c)))
        return {errc::invalid_argument, fmt::format("weight ({}, {}) of the [{}, {}] matrix is {}; quantize needs finite values",
                                                    r, c, w.dim(0), w.dim(1), w(r, c))};
  return {};
}

}  // namespace

result<QuantizedTensor<cpu>> quantize(TensorView<const float> w, const QuantScheme& scheme, ThreadPool* pool) {
  if (w.rank() != 2)
    return status(errc::shape_mismatch, fmt::format("quantize needs a [rows, cols] matrix; shape is {}", w.shape()));
  QUARRY_ASSIGN_OR_RETURN(QuantizedTensor<cpu> q, QuantizedTensor<cpu>::create(scheme, w.dim(0), w.dim(1)));
  QUARRY_RETURN_IF_ERROR(check_finite(w));
  const std::int64_t rows = w.dim(0), cols = w.dim(1);
  Tensor<float> dense = w.contiguous();  // unit-stride rows for the loops below

  BlockParams tensor_params;
  if (scheme.granularity == Granularity::per_tensor) {
    float lo = 0, hi = 0;
    for (float v : dense.span()) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    tensor_params = block_params(lo, hi, scheme);
    if (!std::isfinite(tensor_params.scale))
      return status(errc::out_of_range, fmt::format("the {} scale of range [{}, {}] overflows", dtype_name(scheme.scale_dtype), lo, hi));
    store_scale(q, 0, 0, tensor_params);
  }

  const std::int64_t block = scheme.granularity == Granularity::per_group ? scheme.group_size : cols;
  std::atomic<bool> overflow{false};
  parallel_for(pool, 0, rows, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) {
      const float* row = dense.data() + r * cols;
      std::uint8_t* out = q.value_bytes().data() + r * q.row_bytes();
      for (std::int64_t c0 = 0; c0 < cols; c0 += block) {
        const std::int64_t c1 = std::min(cols, c0 + block);
        BlockParams p = tensor_params;
        if (scheme.granularity != Granularity::per_tensor) {
          float lo = 0, hi = 0;
          for (std::int64_t c = c0; c < c1; ++c) {
            lo = std::min(lo, row[c]);
            hi = std::max(hi, row[c]);
          }
          p = block_params(lo, hi, scheme);
          if (!std::isfinite(p.scale)) overflow = true;
          store_scale(q, r, c0 / block, p);
        }
        quantize_block(row, c0, c1, p, scheme, out);
      }
    }
  }, 16);
  if (overflow)
    return status(errc::out_of_range, fmt::format("a {} scale overflows for {}; the weights are too large for f16 scales",
                                                  dtype_name(scheme.scale_dtype), scheme.to_string()));
  return q;
}

result<QuantizedTensor<cpu>> quantize(TensorView<const f16> w, const QuantScheme& scheme, ThreadPool* pool) {
  Tensor<float> f = cast<float>(w);
  return quantize(f.view(), scheme, pool);
}

result<QuantizedTensor<cpu>> quantize(TensorView<const bf16> w, const QuantScheme& scheme, ThreadPool* pool) {
  Tensor<float> f = cast<float>(w);
  return quantize(f.view(), scheme, pool);
}

void dequantize_row(const QuantizedTensor<cpu>& q, std::int64_t row, std::span<float> out) {
  if (row < 0 || row >= q.rows())
    throw_error(errc::out_of_range, fmt::format("dequantize_row {} of a matrix with {} rows", row, q.rows()));
  if (static_cast<std::int64_t>(out.size()) != q.cols())
    throw_error(errc::shape_mismatch, fmt::format("dequantize_row: output has {} elements, the row {}", out.size(), q.cols()));
  for (std::int64_t c = 0; c < q.cols(); ++c) out[static_cast<std::size_t>(c)] = q.dequantized(row, c);
}

Tensor<float> dequantize(const QuantizedTensor<cpu>& q, ThreadPool* pool) {
  Tensor<float> out = Tensor<float>::uninitialized({q.rows(), q.cols()});
  const auto cols = static_cast<std::size_t>(q.cols());
  parallel_for(pool, 0, q.rows(), [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r) dequantize_row(q, r, std::span<float>(out.data() + r * q.cols(), cols));
  }, 16);
  return out;
}

QuantError quant_error(TensorView<const float> reference, TensorView<const float> approx) {
  if (reference.shape() != approx.shape())
    throw_error(errc::shape_mismatch, fmt::format("quant_error: reference shape {} differs from approximation shape {}", reference.shape(), approx.shape()));
  QuantError e;
  double signal = 0, noise = 0;
  const Tensor<float> a = reference.contiguous(), b = approx.contiguous();
  const std::size_t n = static_cast<std::size_t>(a.numel());
  for (std::size_t i = 0; i < n; ++i) {
    const double x = a.data()[i], d = x - double(b.data()[i]);
    signal += x * x;
    noise += d * d;
    e.max_abs = std::isnan(d) ? d : std::max(e.max_abs, std::fabs(d));
  }
  e.count = static_cast<std::int64_t>(n);
  e.rmse = n ? std::sqrt(noise / static_cast<double>(n)) : 0.0;
  e.snr_db = noise == 0 ? std::numeric_limits<double>::infinity() : 10.0 * std::log10(signal / noise);
  if (std::isnan(noise)) e.max_abs = e.rmse = e.snr_db = std::numeric_limits<double>::quiet_NaN();
  return e;
}

QuantError quant_error(TensorView<const float> reference, const QuantizedTensor<cpu>& q) {
  const Tensor<float> back = dequantize(q);
  return quant_error(reference, back.view());
}

}  // namespace quarry
