// The kernel table of the index module: the 4-bit PQ fast-scan and its table quantization, and
// the float products a search starts with (coarse q.c, the query's codeword products). Front-end in
// quarry/index/fastscan.hpp; bodies in src/cpu/kernels/index.hpp, whose scalar bodies are the
// reference.
//
// Fast-scan layout (the "packed codes" of FastScanCodes): vectors in blocks of 32; a block holds,
// for each sub-quantizer m (0 .. m_pad - 1, m_pad even), 16 bytes: byte v (0..15) has the 4-bit
// code of vector v in its low nibble and that of vector v + 16 in its high nibble. A block is
// m_pad * 16 bytes. The lookup table is m_pad rows of 16 uint8 distances (row m, entry c: the
// quantized distance of sub-quantizer m's centroid c to the query). Rows past M are zero.
// 128-bit lanes of a SIMD register then hold one sub-quantizer's 16 table entries and 16 bytes
// of codes, so one in-register byte shuffle (pshufb) looks up 16 vectors at once.
#pragma once

#include <cstddef>
#include <cstdint>

#include "quarry/core/detail/dispatch.hpp"

namespace quarry::detail {

/// Operands of one fast-scan over whole blocks.
struct FastScanArgs {
  const std::uint8_t* codes = nullptr;  ///< [nblocks, m_pad * 16] packed blocks
  std::size_t nblocks = 0;
  std::size_t m_pad = 0;                ///< sub-quantizers, rounded up to even; at most 256
  const std::uint8_t* lut = nullptr;    ///< [m_pad, 16] quantized distance table
  std::uint16_t* out = nullptr;         ///< [nblocks * 32] sums, vector order; or null
  /// If not null: mask[b] bit v set when out[32 b + v] < threshold (the candidates to look at).
  std::uint32_t* mask = nullptr;
  std::uint16_t threshold = 0;
};

/// Operands of one fast-scan table build: the float table t = a + alpha * b ([m, 16], row-major)
/// and its quantization to uint8: row j is shifted by its minimum and every row shares one scale,
/// 255 / the largest row range (1 when every row is constant), entry = min(round(x), 255) with
/// x = (t - min_j) * scale and round to nearest, ties to even. alpha must be a power of two (or
/// 1), so alpha * b is exact and every ISA rounds t, and therefore everything else, alike.
struct FastScanLutArgs {
  const float* a = nullptr;      ///< [m, 16], or null for zeros
  const float* b = nullptr;      ///< [m, 16]; entries (and t) finite
  float alpha = 1.f;
  std::size_t m = 0;             ///< 1..256
  float* table = nullptr;        ///< [m, 16]: t, or null (not written)
  std::uint8_t* lut = nullptr;   ///< [m_pad, 16] (m_pad = m rounded up to even): quantized; rows past m zeroed
  float* row_min = nullptr;      ///< [m]: min_j
  float* scale = nullptr;        ///< the scale
};

/// Index kernels for one ISA. Kernels are noexcept, allocation-free, accept any alignment.
struct IndexKernels {
  /// out[32 b + v] = sum_m lut[m][code(b, v, m)] in uint16 (exact: m_pad * 255 < 65536), and the
  /// candidate masks if asked for. Identical on every ISA.
  void (*fastscan)(const FastScanArgs& args) noexcept;
  /// The table t and its quantization as FastScanLutArgs says; identical on every ISA.
  void (*fastscan_lut)(const FastScanLutArgs& args) noexcept;
  /// out[q * n + i] = sum_t rows[i * ld + t] * x[q * ldx + t] for q < nx, i < n, t < d (the
  /// coarse quantizer's q.c for nx queries: each row is read once per few queries), within float
  /// summation error of the reference (the order differs by ISA).
  void (*inner_products)(const float* rows, std::size_t n, std::size_t d, std::size_t ld, const float* x, std::size_t nx,
                         std::size_t ldx, float* out) noexcept;
  /// out[j * ksub + c] = sum_t x[j * dsub + t] * ct[(j * dsub + t) * ksub + c] for j < m, c < ksub
  /// (a multiple of 16), t < dsub: a query's products with PQ codewords from the codebook
  /// transposed to [m, dsub, ksub]; within float rounding of the reference (FMA or not).
  void (*codeword_products)(const float* x, const float* ct, std::size_t m, std::size_t dsub, std::size_t ksub, float* out) noexcept;
};

QUARRY_DECLARE_KERNEL_TABLES(IndexKernels)

}  // namespace quarry::detail
