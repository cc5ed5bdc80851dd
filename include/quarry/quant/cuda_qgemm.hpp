// Quantized matrix products on a CUDA device: y = output_scale * (x . w^T) + bias, with w a
// QuantizedTensor<cuda> of N rows (output channels) and K columns. Part of quarry::cuda.
//
// Two kernel families, chosen by the weights' scheme (cuda_qgemm_supports says which are in):
//   W4A16  int4 per_group weights (group 32/64/128, symmetric or with zero points, f16 or f32
//          scales) times f16 or f32 activations as given; float accumulation. Reference:
//          sum_k dequantize(w)[n, k] * float(x[m, k]), to float rounding.
//   W8A8   int8 symmetric per_tensor / per_channel weights (f16 or f32 scales), as the CPU qgemm
//          (quarry/quant/qgemm.hpp) takes them and with its arithmetic: the activations are
//          quantized per row on the device (quantize_rows_int8), the products summed exactly in
//          int32 (__dp4a or cuBLAS's int8 GEMM), and y = fma(float(acc), (x_scale[m] * output_scale) * w_scale[n],
//          bias[n] or 0), each step rounded to f32: the same bits as the CPU qgemm.
//
// Edge cases. W4A16: a NaN or infinity in the activations propagates as float arithmetic does
// (a NaN at x[m, k] makes every y[m, n] NaN, even where w[n, k] is 0). W8A8: a NaN or infinity
// anywhere in row m makes that row's scale NaN, so all of y[m, :] is NaN; a row of zeros gives
// y = bias. A weight block with scale 0 (all its weights were zero) contributes exactly 0 for
// finite activations, never NaN.
//
// Kernels and performance (sm_90; src/cuda/quant_kernels.cu; measured on an H200 with
// bench/cuda/bench_cuda_qgemm, figures in bench/cuda/README.md):
//   W4A16, f16 activations: tensor cores (mma.sync m16n8k16, f16 x exact q - z, f32 sums, each
//          group's sum scaled in f32), in passes of 32 activation rows that read the weights once
//          each. M <= 32 is memory-bound: M = 8 runs ~1.8x faster than cuBLAS's f16 GEMM on the
//          same shape; M = 1 reaches 0.28-0.42 of the HBM read bandwidth (instruction-bound
//          unpacking the nibbles). Large M re-reads the weights per 32 rows (~0.1x cuBLAS f16 at
//          M = 512): a tiled tensor-core GEMM is future work.
//   W4A32 (f32 activations): SIMT kernels in f32 (GEMV with 16-byte loads, a shared-memory tile
//          for M > 1); correct for every shape, far below the tensor cores.
//   W8A8:  M = 1 a __dp4a GEMV (0.5-0.73 of HBM); M > 1 cuBLAS's int8 tensor-core GEMM with
//          int32 output (exact, so the same bits) and the epilogue in place, when K and N are
//          multiples of 4, else a __dp4a SIMT tile.
//
// Calls run on the legacy default stream of the tensors' device and, by default, return when
// the kernels have finished. Errors throw quarry::error: shapes and schemes are checked first and
// the message names them (shape_mismatch, invalid_argument); CUDA errors are device_error.
#pragma once

#include <cstdint>

#include "quarry/core/cuda_tensor.hpp"
#include "quarry/core/float16.hpp"
#include "quarry/core/status.hpp"
#include "quarry/quant/cuda_quantized_tensor.hpp"
#include "quarry/quant/scheme.hpp"

namespace quarry {

/// What the CUDA quantized products do besides x . w^T.
struct CudaQGemmOptions {
  /// [N] values added to every output row, on the weights' device; null for none.
  const Tensor<float, cuda>* bias = nullptr;
  /// Multiplies x . w^T before the bias is added.
  float output_scale = 1.0f;
  /// true: return when the kernels have finished (errors of the run are reported here). false:
  /// return after the launch, as a benchmark loop wants; errors of the run then surface at the
  /// next synchronising call. (W8A8 from float activations frees a temporary, which waits
  /// anyway; quantize once with quantize_rows_int8 and call the int8 overload to avoid it.)
  bool wait = true;
};

/// Ok when the CUDA kernels take weights of `scheme` (W4A16: int4 per_group; W8A8: int8
/// symmetric per_tensor / per_channel); otherwise invalid_argument saying what is supported.
status cuda_qgemm_supports(const QuantScheme& scheme);

/// y [N] = w . x for one activation vector x [K] (or [1, K]; y then [N] or [1, N]): the decode
/// case, memory-bound. f32 activations.
void qgemv(const Tensor<float, cuda>& x, const QuantizedTensor<cuda>& w, Tensor<float, cuda>& y, const CudaQGemmOptions& options = {});
/// qgemv with f16 activations.
void qgemv(const Tensor<f16, cuda>& x, const QuantizedTensor<cuda>& w, Tensor<float, cuda>& y, const CudaQGemmOptions& options = {});

/// y [M, N] = x [M, K] . w^T: the prefill case. M == 1 runs the qgemv kernels. f32 activations.
void qgemm(const Tensor<float, cuda>& x, const QuantizedTensor<cuda>& w, Tensor<float, cuda>& y, const CudaQGemmOptions& options = {});
/// qgemm with f16 activations.
void qgemm(const Tensor<f16, cuda>& x, const QuantizedTensor<cuda>& w, Tensor<float, cuda>& y, const CudaQGemmOptions& options = {});

/// W8A8 with activations already quantized (by quantize_rows_int8, or elsewhere), e.g. to share
/// one quantization between several weight matrices: xq [M, K] int8 with per-row scales
/// x_scales [M]; w must be an int8 W8A8 scheme. y [M, N].
void qgemm(const Tensor<std::int8_t, cuda>& xq, const Tensor<float, cuda>& x_scales, const QuantizedTensor<cuda>& w,
           Tensor<float, cuda>& y, const CudaQGemmOptions& options = {});

/// Per-row symmetric int8 quantization of x [M, K] (or [K]), as the W8A8 path and the CPU qgemm
/// do it: with amax = max_k |x[m, k]|, scale[m] = amax / 127 and xq[m, k] = clamp(round_half_even(
/// x[m, k] * (127 / amax)), -127, 127), IEEE f32 throughout. A row holding a NaN or an infinity
/// gets scale NaN and zeros; a row whose 127 / amax overflows (all zero, or amax below ~3.7e-37)
/// gets scale 0 and zeros. xq must have x's shape and row_scales be [M]. Returns when done.
void quantize_rows_int8(const Tensor<float, cuda>& x, Tensor<std::int8_t, cuda>& xq, Tensor<float, cuda>& row_scales);
/// quantize_rows_int8 of f16 activations (converted to f32 first, exactly).
void quantize_rows_int8(const Tensor<f16, cuda>& x, Tensor<std::int8_t, cuda>& xq, Tensor<float, cuda>& row_scales);

}  // namespace quarry
