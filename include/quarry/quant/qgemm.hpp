// W8A8 matrix products with int8 weights: qgemv (one activation row: decode, memory-bound) and
// qgemm (many rows: prefill and batches, compute-bound).
//
//   y[i][j] = output_scale * sx[i] * sw[j] * sum_k qx[i][k] * qw[j][k]  +  bias[j]
//
// The activations x are quantized per row on the fly: symmetric int8 in -127..127 with scale
// sx = max|x| / 127, q = round_half_even(x * 127 / max|x|). The products are exact int32
// (AVX-512 VNNI vpdpbusd where the CPU has it, AVX2 vpmaddubsw otherwise, a scalar loop
// elsewhere: all give the same integers); the rescale is one float fma, fma(acc, output_scale * sx *
// sw, bias), so every ISA, thread count and tiling gives bit-identical outputs.
//
// Weights: int8 symmetric, per_tensor or per_channel, f32 or f16 scales (quantize() with
// QuantScheme::int8_per_channel() or int8_per_tensor()). Other schemes (per_group, asymmetric,
// int4) are rejected with errc::unsupported.
//
// Edge cases, the same on every ISA:
//   - an activation row of zeros (or with max|x| below ~1e-37) gives y = bias for that row;
//   - an activation row holding a NaN or an infinity gives a row of NaN;
//   - a weight row whose scale is 0 (all its weights were zero) gives y = bias there;
//   - weights are finite by construction (quantize() rejects NaN and infinity).
// Summing K products in int32 is exact while K * 127 * 128 < 2^31 (K < 132,104).
#pragma once

#include <span>

#include "quarry/core/tensor.hpp"
#include "quarry/core/thread_pool.hpp"
#include "quarry/quant/quantized_tensor.hpp"

namespace quarry {

/// Options of qgemv / qgemm: what is fused into the output, and where the work runs.
struct QGemmOptions {
  std::span<const float> bias;  ///< [N] added to every output row; empty for none
  float output_scale = 1.f;     ///< multiplies the product (before the bias is added)
  ThreadPool* pool = nullptr;   ///< output rows (N) in parallel on this pool; null: the caller's thread
};

/// y[M, N] = output_scale * x[M, K] . dequantized(w[N, K])^T + bias, with x quantized to int8 per
/// row on the fly. x may have any strides, y any row stride. Errors (quarry::error): shapes that
/// do not agree (the message names them), a bias not of length N, or an unsupported scheme.
void qgemm(TensorView<const float> x, const QuantizedTensor<cpu>& w, TensorView<float> y, const QGemmOptions& options = {});

/// y[N] = output_scale * w[N, K] . x[K] + bias: qgemm with one activation row (the decode step),
/// streaming the weights once.
void qgemv(std::span<const float> x, const QuantizedTensor<cpu>& w, std::span<float> y, const QGemmOptions& options = {});

/// Whether qgemv / qgemm take weights of this scheme.
constexpr bool qgemm_supports(const QuantScheme& s) noexcept {
  return s.bits == 8 && s.symmetric && (s.granularity == Granularity::per_tensor || s.granularity == Granularity::per_channel);
}

}  // namespace quarry
