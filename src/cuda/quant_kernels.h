// The launch functions of the quantized matrix-product kernels (quant_kernels.cu).
//
// The seam between CUDA C++17 and quarry's C++20 (as convert_kernels.h): plain structs of device
// pointers and sizes cross it, and each function returns the CUDA error of its launch. Kernels
// run on the legacy default stream of the current device; the caller checks shapes and schemes
// (quant.cpp), synchronises and turns errors into quarry::error. Layouts are those of
// quarry/quant/quantized_tensor.hpp; every matrix is row-major and densely packed.
//
// Every product computes  y[m, n] = output_scale * sum_k x[m, k] * w[n, k]  (+ bias[n]).
#pragma once

#include <cstddef>
#include <cstdint>

#include <driver_types.h>  // cudaError_t

namespace quarry::cuda_kernels {

/// An int4 group-wise weight matrix [n, k] in device memory (W4A16).
struct Int4GroupedWeights {
  const std::uint8_t* values = nullptr;  ///< [n, k / 2]; column 2j in the low nibble of byte j
  const void* scales = nullptr;          ///< [n, k / group_size], f16 bits or f32
  const std::uint8_t* zeros = nullptr;   ///< [n, k / group_size]; null for symmetric weights
  std::int64_t n = 0;
  std::int64_t k = 0;          ///< a multiple of group_size
  int group_size = 32;         ///< 32, 64 or 128
  bool symmetric = true;       ///< nibbles are int4 (-8..7); else uint4 (0..15) with zero points
  bool scales_f16 = false;     ///< scales are binary16 bits, else f32
};

/// A symmetric int8 weight matrix [n, k] in device memory (W8A8).
struct Int8Weights {
  const std::int8_t* values = nullptr;  ///< [n, k]
  const void* scales = nullptr;         ///< [n] per channel or [1] per tensor, f16 bits or f32
  std::int64_t n = 0;
  std::int64_t k = 0;
  bool per_channel = true;  ///< false: one scale for the whole matrix
  bool scales_f16 = false;  ///< scales are binary16 bits, else f32
};

/// What is done to each output element after the reduction.
struct Epilogue {
  float output_scale = 1.0f;     ///< multiplies the product
  const float* bias = nullptr;   ///< [n], added last; null for none
};

/// W4A16 / W4A32: y [m, n] (f32) = x [m, k] (f16 bits when x_f16, else f32) times the int4
/// weights, transposed; float accumulation. f16 activations run on the tensor cores (passes of
/// up to 32 rows); f32 activations run the SIMT GEMV kernel (m == 1) or the tiled kernel (m > 1).
cudaError_t launch_w4a16_gemm(const void* x, bool x_f16, std::int64_t m, const Int4GroupedWeights& w,
                              const Epilogue& epilogue, float* y) noexcept;

/// Per-row symmetric int8 quantization of x [m, k] (f16 bits when x_f16, else f32), as W8A8 uses
/// for its activations and as the CPU reference does it (src/cpu/kernels/quant.hpp): inv = 127 /
/// amax, scale = amax / 127, xq = clamp(round_half_even(x * inv), -127, 127). A row with a NaN or
/// an infinity gets scale NaN and xq 0; a row whose 127 / amax overflows (all zero, or amax below
/// ~3.7e-37) gets scale 0 and xq 0.
cudaError_t launch_quantize_rows_int8(const void* x, bool x_f16, std::int64_t m, std::int64_t k, std::int8_t* xq,
                                      float* row_scales) noexcept;

/// W8A8: y [m, n] = fma(float(acc), (x_scales[m] * output_scale) * w_scale[n], bias[n] or 0),
/// each step rounded to f32 as the CPU reference does it, where acc = sum_k xq[m, k] * w[n, k] in int32 (exact while
/// k * 127 * 128 < 2^31). m == 1 runs the GEMV kernel, m > 1 the tiled kernel; both use __dp4a.
cudaError_t launch_w8a8_gemm(const std::int8_t* xq, const float* x_scales, std::int64_t m, const Int8Weights& w,
                             const Epilogue& epilogue, float* y) noexcept;

/// The W8A8 epilogue in place: y [m, n] holds the exact int32 products (as int32 bits, written
/// there by cuBLAS's int8 GEMM), and each becomes w8a8's output as launch_w8a8_gemm computes it.
cudaError_t launch_w8a8_epilogue_in_place(float* y, const float* x_scales, std::int64_t m, const Int8Weights& w,
                                          const Epilogue& epilogue) noexcept;

}  // namespace quarry::cuda_kernels
