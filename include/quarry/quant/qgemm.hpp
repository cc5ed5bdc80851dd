// Quantized matrix products: qgemv (one activation row: decode, memory-bound) and qgemm (many
// rows: prefill and batches, compute-bound). Two kernels, chosen from the weights' scheme and
// QGemmOptions::activations:
//   W8A8   int8 per_tensor / per_channel weights (symmetric int8, or asymmetric uint8 with a
//          zero point), activations quantized to int8 per row (below). The default for int8 weights.
//   W4A32  int4 per_group weights (group 32/64/128, symmetric int4 or asymmetric uint4 with
//          uint8 zero points, f16 or f32 scales) times float activations (f32, or f16 / bf16
//          converted to f32 per row first: "W4A16"). The default for int4 weights.
//   W4A8   int4 per_group weights with activations quantized to int8 per row as in W8A8, exact
//          int32 sums per 8 columns; asked for with ActivationMode::int8. The fastest decode path
//          for int4 weights (it streams them at memory speed; W4A32 converts each nibble to float).
//   W8A8 grouped   int8 per_group weights (GGUF Q8_0 is int8 per_group(32) with f16 scales),
//          activations as in W8A8, exact int32 sums per 4 columns (below).
// W8A16 (int8 weights with float activations) is not implemented: asking for it is
// errc::unsupported, and the message names the scheme.
//
// ---- W8A8 ----
//
//   y[i][j] = output_scale * sx[i] * sw[j] * sum_k qx[i][k] * (qw[j][k] - zw[j])  +  bias[j]
//
// The activations x are quantized per row on the fly: symmetric int8 in -127..127 with scale
// sx = max|x| / 127, q = round_half_even(x * 127 / max|x|). The products are exact int32
// (AVX-512 VNNI vpdpbusd where the CPU has it, AVX2 vpmaddubsw otherwise, a scalar loop
// elsewhere: all give the same integers); the rescale is one float fma, fma(acc, output_scale * sx *
// sw, bias), so every ISA, thread count and tiling gives bit-identical outputs.
//
// Weights: int8 per_tensor or per_channel, f32 or f16 scales, symmetric (zw = 0) or asymmetric
// (uint8 values with a uint8 zero point zw; quantize() with QuantScheme::int8_per_channel(false)).
// VNNI multiplies the uint8 weights as they are and subtracts zw * sum qx; AVX2 works on u - 128.
//
// Edge cases, the same on every ISA:
//   - an activation row of zeros (or with max|x| below ~1e-37) gives y = bias for that row;
//   - an activation row holding a NaN or an infinity gives a row of NaN;
//   - a weight row whose scale is 0 (all its weights were zero) gives y = bias there;
//   - weights are finite by construction (quantize() rejects NaN and infinity).
// Summing K products in int32 is exact while K * 127 * 128 < 2^31 (K < 132,104); asymmetric
// weights (|q - z| up to 255) while K < 66,313. Beyond, the sums wrap modulo 2^32, the same on
// every ISA.
//
// ---- W8A8 grouped (int8 per_group) ----
//   dot[b] = sum_{c in block b} qx[i][c] * (qw[j][c] - zw[j][g])  exact in int32, blocks of 4 columns
//   t[b mod 16] = fma(float(dot[b]), sw[j][g], t[b mod 16]);  y = fma(tree(t), output_scale * sx[i], bias[j])
// with the W4A8 lanes and tree (below): bit-identical on every ISA and thread count.
//
// ---- W4A32 / W4A16 ----
//   y[i][j] = output_scale * sum_g s[j][g] * (sum_{c in g} (q[j][c] - z[j][g]) * x[i][c]) + bias[j]
// in float: each group summed in float, then scaled and added to the row's total; one fma
// applies output_scale and the bias. The SIMD kernels sum lane-wise, so ISAs differ in the last
// bits; each output is within
//   |y - exact| <= (K + 2 K / group + 4) * 2^-24 * (|output_scale| * sum_c |s (q - z) x_c| + |bias_j|)
// (first order in 2^-24), and one ISA gives bit-identical results for every thread count.
// Edge cases: an all-zero group (scale 0, zero point 0) adds exactly 0, never NaN; an activation
// row holding a NaN gives a row of NaN; one holding an infinity gives non-finite outputs (an
// infinity, or NaN where it meets a zero weight); K = 0 gives y = bias.
//
// ---- W4A8 ----
//   dot[b] = sum_{c in block b} (q[j][c] - z[j][g]) * qx[i][c]   exact in int32, blocks of 8 columns
//   t[b mod 16] = fma(float(dot[b]), s[j][g], t[b mod 16])       16 float lanes, blocks in order
//   y[i][j] = fma(tree(t), output_scale * sx[i], bias[j])         tree: lane l + l+8, + l+4, + l+2, + l+1
// (g = the group of block b). The lanes are the SIMD kernels' own (a 512-bit vpdpbusd over 64
// packed bytes gives 16 lanes of 8 columns each; AVX2 and the scalar loop do the same sums), so
// the result is bit-identical on every ISA and thread count while no group needs a horizontal
// sum: this is the path that streams int4 weights at memory speed on the decode step.
// Activation rows are quantized as in W8A8, with the same edge cases (a zero row gives the
// bias, a row with a NaN or an infinity gives NaN); an all-zero group adds exactly 0.
//
// ---- On panels (QuantizedPanels): W4A8 and W8A8 ----
// The same weights rearranged once (QuantizedPanels::pack) into panels of 16 rows, the fastest
// path for decode and prefill alike. Activations quantized as in W8A8, with the same edge cases.
//   per group (int4: W4A8; int8 per_group, GGUF Q8_0: W8A8): a group's dot stays in int32
//   until it is complete:
//     dot[g] = sum_{c in group g} (q[j][c] - z[j][g]) * qx[i][c]   exact in int32
//     t = fma(float(dot[g]), s[j][g], t) over the groups in order, from t = 0
//     y[i][j] = fma(t, output_scale * sx[i], bias[j])
//   bit-identical on every ISA and thread count (not to the row-major kernels' 16-lane bits).
//   int8 per tensor / channel (W8A8): the W8A8 product above, bit-identical to it on the
//   row-major QuantizedTensor.
#pragma once

#include <cstdint>
#include <span>

#include "quarry/core/float16.hpp"
#include "quarry/core/tensor.hpp"
#include "quarry/core/thread_pool.hpp"
#include "quarry/quant/quantized_panels.hpp"
#include "quarry/quant/quantized_tensor.hpp"

namespace quarry {

/// How qgemv / qgemm treat the activations.
enum class ActivationMode : std::uint8_t {
  automatic,  ///< int8 weights: int8 activations (W8A8); int4 weights: float activations (W4A32)
  int8,       ///< quantize activations to int8 per row (W8A8, W4A8)
  float32,    ///< keep activations in float (W4A32 / W4A16; int4 weights only)
};

/// Options of qgemv / qgemm: what is fused into the output, and where the work runs.
struct QGemmOptions {
  std::span<const float> bias;  ///< [N] added to every output row; empty for none
  float output_scale = 1.f;     ///< multiplies the product (before the bias is added)
  ThreadPool* pool = nullptr;   ///< output rows (N) in parallel on this pool; null: the caller's thread
  ActivationMode activations = ActivationMode::automatic;  ///< which kernel: see the top of this header
};

/// y[M, N] = output_scale * x[M, K] . dequantized(w[N, K])^T + bias, with x quantized to int8 per
/// row on the fly. x may have any strides, y any row stride. Errors (quarry::error): shapes that
/// do not agree (the message names them), a bias not of length N, or an unsupported scheme.
void qgemm(TensorView<const float> x, const QuantizedTensor<cpu>& w, TensorView<float> y, const QGemmOptions& options = {});

/// qgemm with f16 / bf16 activations, each row converted to f32 first (exact); int4 weights only
/// unless activations = int8 (then as the f32 overload).
///@{
void qgemm(TensorView<const f16> x, const QuantizedTensor<cpu>& w, TensorView<float> y, const QGemmOptions& options = {});
void qgemm(TensorView<const bf16> x, const QuantizedTensor<cpu>& w, TensorView<float> y, const QGemmOptions& options = {});
///@}

/// y[N] = output_scale * w[N, K] . x[K] + bias: qgemm with one activation row (the decode step),
/// streaming the weights once.
void qgemv(std::span<const float> x, const QuantizedTensor<cpu>& w, std::span<float> y, const QGemmOptions& options = {});
/// qgemv with f16 / bf16 activations (W4A16), converted to f32 first.
///@{
void qgemv(std::span<const f16> x, const QuantizedTensor<cpu>& w, std::span<float> y, const QGemmOptions& options = {});
void qgemv(std::span<const bf16> x, const QuantizedTensor<cpu>& w, std::span<float> y, const QGemmOptions& options = {});
///@}

/// qgemm / qgemv on weights in panels: W4A8 (int4) or W8A8 (int8, per channel or per group),
/// activations quantized to int8 per row, the products described above. ActivationMode::automatic and int8 both mean that;
/// float32 is errc::unsupported (W4A32 takes the row-major QuantizedTensor). Errors as the
/// overloads above.
///@{
void qgemm(TensorView<const float> x, const QuantizedPanels& w, TensorView<float> y, const QGemmOptions& options = {});
void qgemv(std::span<const float> x, const QuantizedPanels& w, std::span<float> y, const QGemmOptions& options = {});
///@}

/// Whether qgemv / qgemm take weights of this scheme with these activations.
constexpr bool qgemm_supports(const QuantScheme& s, ActivationMode a = ActivationMode::automatic) noexcept {
  const bool w8a8 = s.bits == 8;
  const bool w4 = s.bits == 4 && s.granularity == Granularity::per_group;
  return (w8a8 && a != ActivationMode::float32) || w4;
}

}  // namespace quarry
