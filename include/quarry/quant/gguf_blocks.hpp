// GGUF (ggml) Q8_0 and Q4_0 blocks: import into a QuantizedTensor, export from one, and quantize
// floats to them exactly as ggml's reference quantizers do.
//
// Layout, bit for bit as ggml stores it (little-endian, no padding):
//   BlockQ8_0  34 bytes: d (binary16 bits), then qs[32] int8.   element j = d * qs[j]
//   BlockQ4_0  18 bytes: d (binary16 bits), then qs[16] nibbles. element j (j < 16) is the LOW
//              nibble of qs[j], element j + 16 the HIGH nibble of qs[j]; value = d * (nibble - 8)
// A [rows, cols] tensor (cols = K, the reduction dimension, a multiple of 32) is rows runs of
// cols / 32 consecutive blocks; block b of row r covers columns 32b .. 32b + 31.
//
// In quarry's terms Q8_0 is QuantScheme::int8_grouped(32) (symmetric, f16 scales) with the full
// int8 range -128..127, and Q4_0 is QuantScheme::int4_grouped(32) (symmetric, f16 scales) with the
// stored signed nibble nibble - 8 in -8..7. Import and export are lossless both ways: the f16
// scale bits and every integer are kept, and the dequantized values are float(d) * q exactly.
// Only the nibble order differs: quarry packs column 2j in the low nibble of byte j, so Q4_0 is
// re-ordered on the way in and out.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <type_traits>
#include <vector>

#include "quarry/core/tensor.hpp"
#include "quarry/core/thread_pool.hpp"
#include "quarry/quant/quantized_tensor.hpp"
#include "quarry/quant/scheme.hpp"

namespace quarry {

/// Weights per Q8_0 / Q4_0 block (ggml's QK8_0 and QK4_0).
inline constexpr std::int64_t kGgufBlockElems = 32;

/// One GGUF Q8_0 block: 32 int8 weights sharing one f16 scale (ggml's block_q8_0).
struct BlockQ8_0 {
  std::uint16_t d;      ///< the scale, as binary16 bits
  std::int8_t qs[32];   ///< the weights: element j is d * qs[j]
};
/// One GGUF Q4_0 block: 32 4-bit weights sharing one f16 scale (ggml's block_q4_0).
struct BlockQ4_0 {
  std::uint16_t d;      ///< the scale, as binary16 bits
  std::uint8_t qs[16];  ///< element j: low nibble of qs[j]; element j + 16: high nibble; d * (nibble - 8)
};
static_assert(sizeof(BlockQ8_0) == 34 && alignof(BlockQ8_0) == 2 && std::is_trivially_copyable_v<BlockQ8_0>,
              "BlockQ8_0 must match ggml's 34-byte block_q8_0");
static_assert(sizeof(BlockQ4_0) == 18 && alignof(BlockQ4_0) == 2 && std::is_trivially_copyable_v<BlockQ4_0>,
              "BlockQ4_0 must match ggml's 18-byte block_q4_0");

/// The scheme a Q8_0 tensor imports to: int8 per_group(32) symmetric f16-scales.
inline constexpr QuantScheme kGgufQ8_0Scheme = QuantScheme::int8_grouped(32, true, DType::f16);
/// The scheme a Q4_0 tensor imports to: int4 per_group(32) symmetric f16-scales.
inline constexpr QuantScheme kGgufQ4_0Scheme = QuantScheme::int4_grouped(32, true, DType::f16);

/// A [rows, cols] QuantizedTensor (kGgufQ8_0Scheme) holding exactly the given Q8_0 blocks, rows
/// of cols / 32 blocks each. Errors: negative rows or cols, cols not a multiple of 32, a block
/// count other than rows * cols / 32, or a scale that is inf or NaN (ggml rejects those too);
/// each message names the field and the values.
result<QuantizedTensor<cpu>> import_gguf_q8_0(std::span<const BlockQ8_0> blocks, std::int64_t rows, std::int64_t cols);
/// import_gguf_q8_0 from raw tensor data (e.g. a memory-mapped GGUF file; any alignment). The
/// byte count must be rows * cols / 32 * 34; it is checked before anything else is read.
result<QuantizedTensor<cpu>> import_gguf_q8_0(std::span<const std::byte> bytes, std::int64_t rows, std::int64_t cols);
/// A [rows, cols] QuantizedTensor (kGgufQ4_0Scheme) holding exactly the given Q4_0 blocks: the
/// stored int4 of each weight is its nibble - 8. Errors as import_gguf_q8_0.
result<QuantizedTensor<cpu>> import_gguf_q4_0(std::span<const BlockQ4_0> blocks, std::int64_t rows, std::int64_t cols);
/// import_gguf_q4_0 from raw tensor data (any alignment); the byte count must be
/// rows * cols / 32 * 18, checked before anything else is read.
result<QuantizedTensor<cpu>> import_gguf_q4_0(std::span<const std::byte> bytes, std::int64_t rows, std::int64_t cols);

/// The Q8_0 blocks of `q`, row by row. `q` must have exactly kGgufQ8_0Scheme (every int8, -128
/// included, is kept) and finite scales; the error names the scheme or the bad scale otherwise.
result<std::vector<BlockQ8_0>> export_gguf_q8_0(const QuantizedTensor<cpu>& q);
/// The Q4_0 blocks of `q`, row by row: each stored int4 q (-8..7) becomes the nibble q + 8.
/// `q` must have exactly kGgufQ4_0Scheme and finite scales.
result<std::vector<BlockQ4_0>> export_gguf_q4_0(const QuantizedTensor<cpu>& q);

/// Quantizes the [rows, cols] matrix `w` (any strides) to Q8_0 blocks bit-exactly as ggml's
/// quantize_row_q8_0_ref: d = max|x| / 127 (stored as f16), q = roundf(x * (1 / d)) with the
/// unrounded d, ties away from zero. Rows run in parallel on `pool` when given. Errors: rank other than 2,
/// cols not a multiple of 32, a NaN or infinite weight (named by row and column), a scale that
/// overflows f16 (max|x| beyond ~8.3e6; named by row and block).
result<std::vector<BlockQ8_0>> quantize_gguf_q8_0(TensorView<const float> w, ThreadPool* pool = nullptr);
/// Quantizes `w` to Q4_0 blocks bit-exactly as ggml's quantize_row_q4_0_ref (what ggml does
/// without an importance matrix): m = the weight of largest |x| (the first one on ties), keeping
/// its sign; d = m / -8; nibble = min(15, trunc(x * (1 / d) + 8.5)) with the unrounded d, the
/// product and the sum each rounded to f32. (A ggml built with FMA contraction, e.g. GCC with
/// -march=native, fuses those two and differs in a rare nibble: 16 of 180k random blocks.)
/// Errors as quantize_gguf_q8_0 (f16 overflow beyond max|x| ~5.2e5).
result<std::vector<BlockQ4_0>> quantize_gguf_q4_0(TensorView<const float> w, ThreadPool* pool = nullptr);

}  // namespace quarry
