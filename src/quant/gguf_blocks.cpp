#include "quarry/quant/gguf_blocks.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "quarry/core/checked.hpp"
#include "quarry/core/float16.hpp"

namespace quarry {

namespace {

constexpr std::int64_t kQK = kGgufBlockElems;

// What differs between the two block types, for the shared checks and messages.
template <class Block>
struct BlockInfo;
template <>
struct BlockInfo<BlockQ8_0> {
  static constexpr const char* name = "Q8_0";
  static constexpr QuantScheme scheme = kGgufQ8_0Scheme;
};
template <>
struct BlockInfo<BlockQ4_0> {
  static constexpr const char* name = "Q4_0";
  static constexpr QuantScheme scheme = kGgufQ4_0Scheme;
};

// Checks a [rows, cols] shape for blocks of 32 and returns the block count rows * cols / 32.
template <class Block>
result<std::int64_t> block_count(const char* fn, std::int64_t rows, std::int64_t cols) {
  const char* name = BlockInfo<Block>::name;
  if (rows < 0 || cols < 0)
    return status(errc::shape_mismatch, fmt::format("{}: shape [rows = {}, cols = {}] is negative", fn, rows, cols));
  if (cols % kQK != 0)
    return status(errc::shape_mismatch,
                  fmt::format("{}: cols = {} is not a multiple of the {} block size {}", fn, cols, name, kQK));
  const auto n = checked_mul(rows, cols / kQK);
  const auto bytes = n ? checked_mul(*n, static_cast<std::int64_t>(sizeof(Block))) : std::nullopt;
  if (!bytes)
    return status(errc::out_of_range, fmt::format("{}: shape [{}, {}] has more {} blocks than fit in 64 bits", fn, rows, cols, name));
  return *n;
}

// A scale that is inf or NaN: ggml's ggml_validate_row_data rejects such blocks, and so does quarry.
bool f16_bits_finite(std::uint16_t bits) noexcept { return (bits & 0x7c00u) != 0x7c00u; }

// Reads the scale bits of the block at `p` (no alignment assumed; GGUF is little-endian).
std::uint16_t load_d(const std::byte* p) noexcept {
  return static_cast<std::uint16_t>(std::to_integer<unsigned>(p[0]) | (std::to_integer<unsigned>(p[1]) << 8));
}

// Both imports: blocks are read from raw bytes so that any alignment works.
template <class Block>
result<QuantizedTensor<cpu>> import_blocks(const char* fn, const std::byte* data, std::int64_t rows, std::int64_t cols) {
  const char* name = BlockInfo<Block>::name;
  QUARRY_ASSIGN_OR_RETURN(QuantizedTensor<cpu> q, QuantizedTensor<cpu>::create(BlockInfo<Block>::scheme, rows, cols));
  const std::int64_t per_row = cols / kQK;
  TensorView<f16> scales = q.scales_f16();
  for (std::int64_t r = 0; r < rows; ++r) {
    std::uint8_t* out = q.value_bytes().data() + r * q.row_bytes();
    for (std::int64_t b = 0; b < per_row; ++b) {
      const std::byte* blk = data + (r * per_row + b) * static_cast<std::int64_t>(sizeof(Block));
      const std::uint16_t d = load_d(blk);
      if (!f16_bits_finite(d))
        return status(errc::corrupt_data, fmt::format("{}: the scale d of {} block {} (row {}, columns {}..{}) is {} (f16 bits 0x{:04x})",
                                                      fn, name, r * per_row + b, r, b * kQK, b * kQK + kQK - 1,
                                                      float(f16::from_bits(d)), d));
      scales(r, b) = f16::from_bits(d);
      const std::byte* qs = blk + 2;
      if constexpr (std::is_same_v<Block, BlockQ8_0>) {
        // int8 as is: quarry's symmetric int8 storage is the same two's complement byte.
        std::memcpy(out + b * kQK, qs, kQK);
      } else {
        // Q4_0 has elements j and j + 16 in one byte; quarry has columns 2i and 2i + 1. The
        // stored signed nibble is nibble - 8, i.e. the nibble with its top bit flipped.
        auto nibble = [&](int j) -> unsigned {
          const unsigned byte = std::to_integer<unsigned>(qs[j & 15]);
          return (j < 16 ? byte : byte >> 4) & 0xfu;
        };
        std::uint8_t* dst = out + b * (kQK / 2);
        for (int i = 0; i < kQK / 2; ++i)
          dst[i] = static_cast<std::uint8_t>((nibble(2 * i) ^ 8u) | ((nibble(2 * i + 1) ^ 8u) << 4));
      }
    }
  }
  return q;
}

template <class Block>
result<QuantizedTensor<cpu>> import_from_bytes(const char* fn, std::span<const std::byte> bytes, std::int64_t rows, std::int64_t cols) {
  QUARRY_ASSIGN_OR_RETURN(const std::int64_t n, block_count<Block>(fn, rows, cols));
  const std::int64_t want = n * static_cast<std::int64_t>(sizeof(Block));
  if (static_cast<std::int64_t>(bytes.size()) != want)
    return status(errc::shape_mismatch,
                  fmt::format("{}: bytes = {}, but a [{}, {}] {} tensor is {} blocks * {} bytes = {} bytes", fn, bytes.size(),
                              rows, cols, BlockInfo<Block>::name, n, sizeof(Block), want));
  return import_blocks<Block>(fn, bytes.data(), rows, cols);
}

template <class Block>
result<QuantizedTensor<cpu>> import_from_blocks(const char* fn, std::span<const Block> blocks, std::int64_t rows, std::int64_t cols) {
  QUARRY_ASSIGN_OR_RETURN(const std::int64_t n, block_count<Block>(fn, rows, cols));
  if (static_cast<std::int64_t>(blocks.size()) != n)
    return status(errc::shape_mismatch, fmt::format("{}: blocks = {}, but a [{}, {}] {} tensor is {} rows * {} blocks = {} blocks", fn,
                                                    blocks.size(), rows, cols, BlockInfo<Block>::name, rows, cols / kQK, n));
  return import_blocks<Block>(fn, reinterpret_cast<const std::byte*>(blocks.data()), rows, cols);
}

template <class Block>
result<std::vector<Block>> export_blocks(const char* fn, const QuantizedTensor<cpu>& q) {
  const char* name = BlockInfo<Block>::name;
  const QuantScheme want = BlockInfo<Block>::scheme;
  if (q.scheme() != want)
    return status(errc::invalid_argument, fmt::format("{}: GGUF {} is {}; the tensor is {}", fn, name, want.to_string(), q.scheme().to_string()));
  const std::int64_t rows = q.rows(), per_row = q.cols() / kQK;
  std::vector<Block> out(static_cast<std::size_t>(rows * per_row));
  TensorView<const f16> scales = q.scales_f16();
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::uint8_t* in = q.value_bytes().data() + r * q.row_bytes();
    for (std::int64_t b = 0; b < per_row; ++b) {
      Block& blk = out[static_cast<std::size_t>(r * per_row + b)];
      blk.d = scales(r, b).bits;
      if (!f16_bits_finite(blk.d))
        return status(errc::invalid_argument, fmt::format("{}: the scale of row {}, block {} is {}; GGUF {} needs finite scales", fn, r, b,
                                                          float(scales(r, b)), name));
      if constexpr (std::is_same_v<Block, BlockQ8_0>) {
        std::memcpy(blk.qs, in + b * kQK, kQK);
      } else {
        // Column c of the block is nibble (c & 1) of byte c / 2 in quarry; GGUF wants element j
        // (< 16) low and j + 16 high in qs[j]. nibble = stored int4 + 8 = pattern ^ 8.
        const std::uint8_t* src = in + b * (kQK / 2);
        auto column = [&](int c) -> unsigned { return ((src[c >> 1] >> ((c & 1) * 4)) & 0xfu) ^ 8u; };
        for (int j = 0; j < kQK / 2; ++j) blk.qs[j] = static_cast<std::uint8_t>(column(j) | (column(j + 16) << 4));
      }
    }
  }
  return out;
}

// ggml's reference quantizers, one block of 32 floats at a time. The arithmetic follows
// quantize_row_q8_0_ref / quantize_row_q4_0_ref operation for operation in f32, so the bytes
// are the same.
void quantize_block(const float* x, BlockQ8_0& y) noexcept {
  float amax = 0.0f;
  for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  y.d = f16(d).bits;
  for (int j = 0; j < kQK; ++j) {
    const float v = std::round(x[j] * id);  // roundf: halves away from zero
    // |v| <= 127 whenever id is finite. ggml converts out-of-range or NaN values with undefined
    // behaviour (0 on x86); that happens only when d is too small to invert (all |x| < ~4e-37),
    // where the f16 scale is 0 anyway. Take 0 as x86 does.
    y.qs[j] = (v >= -128.0f && v <= 127.0f) ? static_cast<std::int8_t>(v) : std::int8_t{0};
  }
}

void quantize_block(const float* x, BlockQ4_0& y) noexcept {
  float amax = 0.0f, max = 0.0f;
  for (int j = 0; j < kQK; ++j) {
    if (amax < std::fabs(x[j])) {  // strictly greater: the first of equal magnitudes wins
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  const float d = max / -8.0f;
  const float id = d != 0.0f ? 1.0f / d : 0.0f;
  y.d = f16(d).bits;
  auto nibble = [&](float v) -> unsigned {
    // Two roundings, product then sum, as ggml's reference states it. The volatile keeps a
    // compiler from fusing them into one FMA (GCC contracts by default where FMA is baseline,
    // e.g. AArch64), which would move a few weights that sit on a rounding boundary.
    volatile float product = v * id;
    const float t = product + 8.5f;
    // In [~0.5, ~16.5] whenever id is finite; truncation toward zero, then min 15. Non-finite t
    // (d too small to invert, see above) gives 0 as ggml does on x86.
    return (t >= 0.0f && t < 128.0f) ? static_cast<unsigned>(std::min(15, static_cast<int>(t))) : 0u;
  };
  for (int j = 0; j < kQK / 2; ++j) y.qs[j] = static_cast<std::uint8_t>(nibble(x[j]) | (nibble(x[j + 16]) << 4));
}

template <class Block>
result<std::vector<Block>> quantize_blocks(const char* fn, TensorView<const float> w, ThreadPool* pool) {
  const char* name = BlockInfo<Block>::name;
  if (w.rank() != 2)
    return status(errc::shape_mismatch, fmt::format("{}: w must be a [rows, cols] matrix; its shape is {}", fn, w.shape()));
  const std::int64_t rows = w.dim(0), cols = w.dim(1);
  QUARRY_ASSIGN_OR_RETURN(const std::int64_t n, block_count<Block>(fn, rows, cols));
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c)
      if (!std::isfinite(w(r, c)))
        return status(errc::invalid_argument, fmt::format("{}: weight ({}, {}) of the [{}, {}] matrix is {}; {} needs finite values", fn, r,
                                                          c, rows, cols, w(r, c), name));
  Tensor<float> staged;
  const float* base = nullptr;
  if (w.is_contiguous() && rows > 0 && cols > 0) {
    base = w.data();
  } else {
    staged = w.contiguous();
    base = staged.data();
  }
  std::vector<Block> out(static_cast<std::size_t>(n));
  const std::int64_t per_row = cols / kQK;
  parallel_for(pool, 0, rows, [&](std::int64_t r0, std::int64_t r1) {
    for (std::int64_t r = r0; r < r1; ++r)
      for (std::int64_t b = 0; b < per_row; ++b)
        quantize_block(base + r * cols + b * kQK, out[static_cast<std::size_t>(r * per_row + b)]);
  }, 16);
  // An f16 scale that overflowed to inf would make a block ggml refuses to load.
  for (std::int64_t i = 0; i < n; ++i)
    if (!f16_bits_finite(out[static_cast<std::size_t>(i)].d)) {
      const std::int64_t r = i / per_row, b = i % per_row;
      float amax = 0;
      for (std::int64_t c = b * kQK; c < (b + 1) * kQK; ++c) amax = std::max(amax, std::fabs(base[r * cols + c]));
      return status(errc::out_of_range, fmt::format("{}: the f16 scale of row {}, block {} (columns {}..{}, max |w| = {}) overflows; "
                                                    "the weights are too large for {}",
                                                    fn, r, b, b * kQK, b * kQK + kQK - 1, amax, name));
    }
  return out;
}

}  // namespace

result<QuantizedTensor<cpu>> import_gguf_q8_0(std::span<const BlockQ8_0> blocks, std::int64_t rows, std::int64_t cols) {
  return import_from_blocks<BlockQ8_0>("import_gguf_q8_0", blocks, rows, cols);
}
result<QuantizedTensor<cpu>> import_gguf_q8_0(std::span<const std::byte> bytes, std::int64_t rows, std::int64_t cols) {
  return import_from_bytes<BlockQ8_0>("import_gguf_q8_0", bytes, rows, cols);
}
result<QuantizedTensor<cpu>> import_gguf_q4_0(std::span<const BlockQ4_0> blocks, std::int64_t rows, std::int64_t cols) {
  return import_from_blocks<BlockQ4_0>("import_gguf_q4_0", blocks, rows, cols);
}
result<QuantizedTensor<cpu>> import_gguf_q4_0(std::span<const std::byte> bytes, std::int64_t rows, std::int64_t cols) {
  return import_from_bytes<BlockQ4_0>("import_gguf_q4_0", bytes, rows, cols);
}

result<std::vector<BlockQ8_0>> export_gguf_q8_0(const QuantizedTensor<cpu>& q) { return export_blocks<BlockQ8_0>("export_gguf_q8_0", q); }
result<std::vector<BlockQ4_0>> export_gguf_q4_0(const QuantizedTensor<cpu>& q) { return export_blocks<BlockQ4_0>("export_gguf_q4_0", q); }

result<std::vector<BlockQ8_0>> quantize_gguf_q8_0(TensorView<const float> w, ThreadPool* pool) {
  return quantize_blocks<BlockQ8_0>("quantize_gguf_q8_0", w, pool);
}
result<std::vector<BlockQ4_0>> quantize_gguf_q4_0(TensorView<const float> w, ThreadPool* pool) {
  return quantize_blocks<BlockQ4_0>("quantize_gguf_q4_0", w, pool);
}

}  // namespace quarry
