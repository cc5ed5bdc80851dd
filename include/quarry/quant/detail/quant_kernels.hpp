// The kernel table of the quant module: the W8A8 activation quantizer, the int8 x int8 ->
// int32 matrix product with its float epilogue, and the W4A32 product (packed int4 per_group
// weights times f32 activations) and the W4A8 product (int4 weights times int8 activations). Front-end in quarry/quant/qgemm.hpp; bodies in
// src/cpu/kernels/quant.hpp, whose scalar bodies are the reference.
#pragma once

#include <cstddef>
#include <cstdint>

#include "quarry/core/detail/dispatch.hpp"

namespace quarry::detail {

/// Operands of one W8A8 product  y[i][j] = fma(float(acc[i][j]), a_scale[i] * w_scale[j], bias[j])
/// with acc[i][j] = sum_k a[i][k] * (w[j][k] - z[j]) in int32 (exact modulo 2^32): symmetric
/// weights are int8 with z = 0; asymmetric ones (w_zero given) uint8 with their zero point.
struct QGemmArgs {
  const std::int8_t* a = nullptr;      ///< [m, k] activations, row stride lda; values in -127..127
  std::size_t lda = 0;
  const std::int32_t* a_sum = nullptr; ///< [m] sum_k a[i][k] (the VNNI kernel's u8 compensation)
  const float* a_scale = nullptr;      ///< [m] per-row scale (any fused output scale folded in)
  const std::int8_t* w = nullptr;      ///< [n, k] weights, row stride ldw; any int8 (-128 too), or uint8 bytes when w_zero is given
  std::size_t ldw = 0;
  const float* w_scale = nullptr;      ///< scale of weight row j at w_scale[j * w_scale_stride]
  std::size_t w_scale_stride = 0;      ///< 1 per channel, 0 per tensor
  const std::uint8_t* w_zero = nullptr; ///< asymmetric: zero point of row j at w_zero[j * w_scale_stride]; null: symmetric
  const float* bias = nullptr;         ///< [n], or null for none
  float* y = nullptr;                  ///< [m, n] output, row stride ldy
  std::size_t ldy = 0;
  std::size_t m = 0, n = 0, k = 0;
  // Optional, for the AVX-512 prefill kernel (packed weight panels); without them it uses the
  // unpacked tiles. Results are the same bits either way.
  const std::uint8_t* a_u8 = nullptr;  ///< [m, lda] the activations + 128 (a ^ 0x80), lda >= k rounded up to 4; symmetric weights
  std::uint8_t* scratch = nullptr;     ///< >= qgemm_s8_scratch_bytes(k) bytes, 64-byte aligned, this call's own
};

/// Scratch bytes gemm_s8 may use for one packed panel of 32 weight rows (QGemmArgs::scratch).
constexpr std::size_t qgemm_s8_scratch_bytes(std::size_t k) noexcept { return (k + 3) / 4 * 128 + 128; }

/// Operands of one W4A32 product with int4 per_group weights:
///   y[i][j] = fma(output_scale, sum_g s[j][g] * acc[i][j][g], bias[j] or 0),
///   acc[i][j][g] = sum_{c in group g} float(q[j][c] - z[j][g]) * x[i][c]   (float accumulation)
/// Symmetric weights are int4 (-8..7, z = 0); asymmetric ones uint4 (0..15) with a uint8 zero
/// point per group. The summation order inside a sum is the kernel's own (see QuantKernels).
struct Q4GemmArgs {
  const float* x = nullptr;          ///< [m, k] activations, row stride ldx
  std::size_t ldx = 0;
  const std::uint8_t* w = nullptr;   ///< [n, k / 2] packed nibbles (column 2c low, 2c + 1 high), row stride ldw bytes
  std::size_t ldw = 0;
  const void* w_scale = nullptr;     ///< [n, k / group] scales, f32 or f16 bits (scale_f16), row stride ld_scale
  std::size_t ld_scale = 0;
  bool scale_f16 = false;
  const std::uint8_t* w_zero = nullptr;  ///< [n, k / group] zero points, row stride ld_scale; null: symmetric int4
  std::size_t group = 32;            ///< 32, 64 or 128; k is a multiple of it
  const float* bias = nullptr;       ///< [n], or null for none
  float output_scale = 1.f;
  float* y = nullptr;                ///< [m, n] output, row stride ldy
  std::size_t ldy = 0;
  std::size_t m = 0, n = 0, k = 0;

  // W4A8 only (gemm_w4_s8): int8 activations quantized per row, as W8A8's, in the W4A8 order.
  const std::int8_t* a = nullptr;       ///< [m, lda] int8 activations (-127..127) in the W4A8 order (pack_w4a8_activations)
  std::size_t lda = 0;                  ///< >= w4a8_padded_k(k)
  const std::int32_t* a_bsum = nullptr; ///< [m, ld_bsum] sums of each 8-column block of a row (natural order), zero-padded
  std::size_t ld_bsum = 0;              ///< >= w4a8_padded_k(k) / 8
  const float* a_scale = nullptr;       ///< [m] per-row scale, output_scale folded in (output_scale is unused)
};

/// Operands of the per_group products on weights in panels of 16 rows (quarry::QuantizedPanels,
/// whose header gives the layout and the arithmetic: int4, or int8 per_group as GGUF's Q8_0):
/// y[i][j] for the rows j < n of the panels. The
/// operand's panels are ceil(n / 16) in the layout of panel_place: a call on part of a matrix
/// starts at a multiple of 4 panels of the whole (then its quads are the whole's).
struct Q4PanelArgs {
  const std::int8_t* a = nullptr;        ///< [m, k] int8 activations (-127..127), natural order, row stride lda
  std::size_t lda = 0;
  const std::int32_t* a_gsum = nullptr;  ///< [m, k / group] the sum of each group of a row, row stride ld_gsum
  std::size_t ld_gsum = 0;
  const float* a_scale = nullptr;        ///< [m] per-row scale, any output scale folded in
  const std::uint8_t* w = nullptr;       ///< the panels' values (panel_block_offset)
  const void* w_scale = nullptr;         ///< the panels' scales (panel_group_slot), f32 or f16 bits (scale_f16)
  bool scale_f16 = false;
  const std::uint8_t* w_zero = nullptr;  ///< zero points (panel_group_slot); null: symmetric
  std::size_t group = 32;                ///< 32, 64 or 128; k is a multiple of it
  int bits = 4;                          ///< 4 (int4 nibbles) or 8 (int8 bytes; uint8 with zero points)
  const float* bias = nullptr;           ///< [n], or null for none
  float* y = nullptr;                    ///< [m, n] output, row stride ldy
  std::size_t ldy = 0;
  std::size_t m = 0, n = 0, k = 0;
};

/// Where panel p of a panel operand with `panels` panels lives (quarry::QuantizedPanels): the panels
/// are stored in quads of 4 interleaved block by block (the first 4 * floor(panels / 4)), so
/// that the decode kernel's 4 panels in flight are one sequential stream, then one by one.
/// `base` is the first panel of p's unit, `width` the unit's panels (4 or 1), `sub` p's place in it.
struct PanelPlace {
  std::size_t base, width, sub;
};
constexpr PanelPlace panel_place(std::size_t p, std::size_t panels) noexcept {
  return p < panels / 4 * 4 ? PanelPlace{p / 4 * 4, 4, p % 4} : PanelPlace{p, 1, 0};
}
/// Byte offset of 64-byte block b of panel p, `blocks` blocks per panel (K / 8 for int4, K / 4
/// rounded up for int8).
constexpr std::size_t panel_block_offset(std::size_t p, std::size_t panels, std::size_t blocks, std::size_t b) noexcept {
  const PanelPlace u = panel_place(p, panels);
  return (u.base * blocks + b * u.width + u.sub) * 64;
}
/// Index of the first of the 16 scales (zero points) of group gr of panel p (`groups` per row).
constexpr std::size_t panel_group_slot(std::size_t p, std::size_t panels, std::size_t groups, std::size_t gr) noexcept {
  const PanelPlace u = panel_place(p, panels);
  return (u.base * groups + gr * u.width + u.sub) * 16;
}

/// Quant kernels for one ISA. Pointers are never null; kernels accept empty sizes and any
/// alignment, and are noexcept and allocation-free.
struct QuantKernels {
  /// Quantizes x[0..k) to symmetric int8 (-127..127): q = clamp(round_even(x * (127 / amax))),
  /// amax = max |x|. Returns the scale amax / 127 and writes sum(q) to *q_sum. A row whose amax
  /// is 0 or so small that 127 / amax overflows gives q = 0 and scale 0; a row holding a NaN or
  /// an infinity gives q = 0 and scale NaN (its outputs become NaN). Identical on every ISA.
  float (*quantize_row_s8)(const float* x, std::size_t k, std::int8_t* q, std::int32_t* q_sum) noexcept;
  /// The W8A8 product described by QGemmArgs, y = fma(float(acc), a_scale * w_scale, bias or 0):
  /// bit-identical on every ISA and for every tiling.
  void (*gemm_s8)(const QGemmArgs& args) noexcept;
  /// The W4A32 product described by Q4GemmArgs. Not bit-identical across ISAs (the SIMD kernels
  /// sum each group lane-wise); every output of every ISA is within the bound
  ///   |y - y_exact| <= (k + 2 * k / group + 4) * 2^-24 * (|output_scale| * sum_c |s (q - z) x_c| + |bias|)
  /// (first order), and one ISA gives bit-identical outputs for every tiling and thread split.
  /// A NaN activation makes its row's outputs NaN; scale 0 (an all-zero group) adds 0.
  void (*gemm_w4_f32)(const Q4GemmArgs& args) noexcept;
  /// The W4A8 product, in 16 float lanes so that every ISA computes the same bits. Column block
  /// b (columns 8b .. 8b + 7, all in group gr = 8b / group) gives the exact integer
  ///   dot[b] = sum_{c in b} (q[j][c] - z[j][gr]) * a[i][c],
  /// and lane l = b mod 16 accumulates  t[l] = fma(float(dot[b]), s[j][gr], t[l])  over its blocks in
  /// order (lanes without blocks stay 0). The lanes are summed in a fixed tree,
  ///   total = ((t + t>>8) + >>4) + >>2) + >>1   (lane i with lane i + 8, then i + 4, i + 2, i + 1),
  /// and y = fma(total, a_scale[i], bias or 0). Bit-identical on every ISA and for every tiling.
  /// Uses a, lda, a_bsum, a_scale (not x, output_scale).
  void (*gemm_w4_s8)(const Q4GemmArgs& args) noexcept;
  /// W8A8 with per_group int8 weights (GGUF Q8_0 and the like), through Q4GemmArgs with these
  /// differences: w holds [n, k] int8 bytes (uint8 when w_zero is given), row stride ldw; a is
  /// in natural order (row stride lda, any padding); a_bsum holds the sums of each 4-column block
  /// of a row, zero-padded to whole 64-column chunks (ld_bsum >= s8g_bsum_count(k)). The same
  /// lane scheme as gemm_w4_s8 with 4-column blocks: block b (columns 4b .. 4b + 3, group
  /// gr = 4b / group) gives dot[b] = sum (w - z) * a exactly, lane l = b mod 16 accumulates
  /// t[l] = fma(float(dot[b]), s[j][gr], t[l]) in order, total = the same fixed tree, and
  /// y = fma(total, a_scale[i], bias or 0). Bit-identical on every ISA and for every tiling.
  void (*gemm_s8_grouped)(const Q4GemmArgs& args) noexcept;
  /// The per_group products on panels (Q4PanelArgs: int4 W4A8, or int8 per_group W8A8 as GGUF's
  /// Q8_0): per row, the exact int32 dot of each group,
  /// t = fma(float(dot[g]), s[j][g], t) over the groups in order from t = 0, and
  /// y = fma(t, a_scale[i], bias or 0). Bit-identical on every ISA and for every tiling.
  void (*gemm_grouped_panels)(const Q4PanelArgs& args) noexcept;
  /// The W8A8 product of gemm_s8 on int8 weights in panels (quarry::QuantizedPanels): w holds
  /// ceil(n / 16) panels of (k + 3) / 4 blocks (panel_block_offset; a call on part of a matrix
  /// starts at a multiple of 4 panels of the whole), w_scale and w_zero one entry per row
  /// (w_scale_stride 1), ldw unused; a rows need zeros from k to k rounded up to 4; a_u8 and
  /// scratch unused. Bit-identical to gemm_s8 on the same weights row-major.
  void (*gemm_s8_panels)(const QGemmArgs& args) noexcept;
};

QUARRY_DECLARE_KERNEL_TABLES(QuantKernels)

/// Entries of a gemm_s8_grouped a_bsum row: one per 4 columns of k rounded up to 64 columns.
constexpr std::size_t s8g_bsum_count(std::size_t k) noexcept { return (k + 63) / 64 * 16; }

/// Columns of a W4A8 activation row: k rounded up to whole 128-column chunks.
constexpr std::size_t w4a8_padded_k(std::size_t k) noexcept { return (k + 127) / 128 * 128; }

/// Lays out one quantized activation row (q[0..k), natural order) as gemm_w4_s8 reads it: each
/// 128-column chunk as its 64 even columns, then its 64 odd columns (the low and high nibbles of
/// 64 packed weight bytes), zero-padded to w4a8_padded_k(k); bsum[b] = sum of q over columns
/// 8b .. 8b + 7, zero-padded to w4a8_padded_k(k) / 8 entries. Not an ISA kernel: plain code.
void pack_w4a8_activations(const std::int8_t* q, std::size_t k, std::int8_t* out, std::int32_t* bsum) noexcept;

}  // namespace quarry::detail
