// Quantize a float matrix to a QuantizedTensor, and dequantize it back.
//
// Rounding is to nearest, ties to even (as std::nearbyint and the SIMD cvtps2dq do), then the
// integer is clamped to the scheme's range (quarry/quant/scheme.hpp). Scales are rounded to their
// storage type (f16 or f32) before the integers are computed, so the stored scale is the one the
// integers were made for. A block whose weights are all zero gets scale 0 (and zero point 0):
// it dequantizes to exact zeros, never NaN.
#pragma once

#include <span>

#include "quarry/core/float16.hpp"
#include "quarry/core/tensor.hpp"
#include "quarry/core/thread_pool.hpp"
#include "quarry/quant/quantized_tensor.hpp"
#include "quarry/quant/scheme.hpp"

namespace quarry {

/// Quantizes the [rows, cols] matrix `w` (any strides) with `scheme`, rows in parallel on `pool`
/// when given. Errors: an invalid scheme or a shape it cannot hold (K not a multiple of the
/// group, odd K for int4), a rank other than 2, a NaN or infinite weight (the error names its
/// row and column), or an f16 scale that would overflow (|w| beyond ~8.3e6 for int8).
result<QuantizedTensor<cpu>> quantize(TensorView<const float> w, const QuantScheme& scheme, ThreadPool* pool = nullptr);
/// quantize() of an f16 matrix (converted to f32 first; exact).
result<QuantizedTensor<cpu>> quantize(TensorView<const f16> w, const QuantScheme& scheme, ThreadPool* pool = nullptr);
/// quantize() of a bf16 matrix (converted to f32 first; exact).
result<QuantizedTensor<cpu>> quantize(TensorView<const bf16> w, const QuantScheme& scheme, ThreadPool* pool = nullptr);

/// Row `row` of `q` read back as floats into `out` (length q.cols()).
void dequantize_row(const QuantizedTensor<cpu>& q, std::int64_t row, std::span<float> out);
/// All of `q` read back as a [rows, cols] float matrix, rows in parallel on `pool` when given.
Tensor<float> dequantize(const QuantizedTensor<cpu>& q, ThreadPool* pool = nullptr);

}  // namespace quarry
