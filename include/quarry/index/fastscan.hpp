// 4-bit PQ fast-scan (André, Kermarrec, Le Scouarnec, "Cache locality is not enough", 2015; as
// in FAISS's IndexPQFastScan): codes of 16-centroid sub-quantizers are stored in blocks of 32
// vectors, the query's distance table is quantized to uint8, and in-register byte shuffles
// look up 16 or 32 distances per instruction (AVX2 / AVX-512; a scalar loop elsewhere). The
// uint8 sums are exact in uint16, so every ISA returns the same integers.
//
// A quantized distance q relates to the float ADC distance as  d ~ bias + q / scale, with
// |d - (bias + q / scale)| <= M / (2 scale) (rounding of each table entry); callers rank by q,
// then re-rank the best candidates with exact float distances.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "quarry/core/status.hpp"

namespace quarry {

/// 4-bit PQ codes laid out for fast-scan (see quarry/index/detail/index_kernels.hpp): vectors in
/// blocks of 32, each block m_pad * 16 bytes. The last block is padded with code 0.
class FastScanCodes {
 public:
  FastScanCodes() = default;
  /// An empty set for codes of `m` 4-bit sub-quantizers (1..256).
  explicit FastScanCodes(std::int64_t m);

  /// Appends `n` codes in ProductQuantizer's 4-bit layout ((m + 1) / 2 bytes each, sub-quantizer
  /// 2j in the low nibble of byte j). Errors: a byte count other than n * (m + 1) / 2.
  status append(std::span<const std::uint8_t> pq_codes, std::int64_t n);
  /// The code of vector i, sub-quantizer j (0..15); unchecked.
  std::uint8_t code(std::int64_t i, std::int64_t j) const noexcept {
    const std::uint8_t b = data()[(i / 32) * block_bytes() + j * 16 + (i % 16)];
    return (i % 32) < 16 ? static_cast<std::uint8_t>(b & 0xf) : static_cast<std::uint8_t>(b >> 4);
  }
  /// Moves vector `from` into slot `to` (compaction after deletes); unchecked.
  void move(std::int64_t from, std::int64_t to);
  /// Keeps the first n vectors (n <= size()); the rest of the last block is zeroed.
  void truncate(std::int64_t n);
  /// Removes every vector (truncate(0)).
  void clear() { truncate(0); }

  std::int64_t size() const noexcept { return n_; }                    ///< vectors
  std::int64_t m() const noexcept { return m_; }                       ///< sub-quantizers
  std::int64_t m_pad() const noexcept { return (m_ + 1) / 2 * 2; }     ///< m rounded up to even
  std::int64_t block_bytes() const noexcept { return m_pad() * 16; }   ///< bytes per block of 32
  std::int64_t num_blocks() const noexcept { return (n_ + 31) / 32; }  ///< blocks of 32 vectors
  /// The first block's bytes (in a mapped file when the codes were loaded with mmap).
  const std::uint8_t* data() const noexcept { return view_.data() ? view_.data() : blocks_.data(); }
  /// All blocks' bytes, num_blocks() * block_bytes().
  std::span<const std::uint8_t> bytes() const noexcept {
    return {data(), static_cast<std::size_t>(num_blocks() * block_bytes())};
  }
  /// Replaces the content with `n` vectors' blocks as bytes() gave them (e.g. read from a file).
  /// Errors: a byte count other than num_blocks(n) * block_bytes().
  status assign_blocks(std::span<const std::uint8_t> blocks, std::int64_t n);
  /// Like assign_blocks, but without copying: the codes read `blocks` (e.g. a memory-mapped
  /// file), which must outlive this object or its next change; the first append, move or
  /// truncate copies them into memory of its own.
  status view_blocks(std::span<const std::uint8_t> blocks, std::int64_t n);
  /// Whether the codes are a view of someone else's bytes (view_blocks).
  bool is_view() const noexcept { return view_.data() != nullptr; }

 private:
  void set(std::int64_t i, std::int64_t j, std::uint8_t c) noexcept;
  void own();  // copies viewed blocks into blocks_

  std::int64_t m_ = 0, n_ = 0;
  std::vector<std::uint8_t> blocks_;
  std::span<const std::uint8_t> view_;
};

/// A distance table quantized to uint8 for fast-scan: d ~ bias + q / scale.
struct FastScanLut {
  std::vector<std::uint8_t> table;  ///< [m_pad, 16]; rows past m are zero
  float scale = 1.f;                ///< quantized units per distance unit
  float bias = 0.f;                 ///< sum over sub-quantizers of their smallest entry
  std::int64_t m = 0;               ///< sub-quantizers (rows of the table in use)

  /// The float distance a quantized sum stands for.
  float distance(std::uint32_t q) const noexcept { return bias + static_cast<float>(q) / scale; }
  /// The smallest quantized sum whose distance is at least d (for thresholds), clamped to 0..65535.
  std::uint32_t quantized_at_least(float d) const noexcept;
};

/// Quantizes the float table `lut` [m, 16] (row-major; smaller is nearer, so pass negated inner
/// products) to uint8: each row is shifted by its minimum and all rows share one scale, the
/// largest row range mapped to 255 (rounded to nearest, ties to even; the SIMD kernel of
/// quarry/index/detail/index_kernels.hpp, the same on every ISA). Errors: a size other than m * 16, m outside 1..256, a NaN
/// or infinite entry.
result<FastScanLut> quantize_fastscan_lut(std::span<const float> lut, std::int64_t m);

/// The quantized sums of every vector of `codes` under `lut` into `out` (length codes.size());
/// the padding of the last block is not written. Throws quarry::error on mismatched m or size.
void fastscan_distances(const FastScanCodes& codes, const FastScanLut& lut, std::span<std::uint16_t> out);

/// Calls visit(i, q) for every vector i in [0, codes.size()) whose quantized sum q is below
/// `threshold`, in order; `threshold` may be lowered by the callback through the reference (a
/// running top-k). Blocks are scanned with the SIMD kernel; only candidates reach the callback.
template <class Visit>
void fastscan_for_each_below(const FastScanCodes& codes, const FastScanLut& lut, std::uint16_t& threshold, Visit&& visit);

namespace detail {
/// quantize_fastscan_lut without checks into `out`, reusing its buffer (m in 1..256, entries
/// finite).
void quantize_fastscan_lut_into(const float* lut, std::int64_t m, FastScanLut& out) noexcept;
/// The float table t = a + alpha * b ([m, 16]; a null for zeros; alpha a power of two, so every
/// ISA rounds t alike) into `table` (unless null) and its quantization into `out`, in one pass of
/// the SIMD kernel: the search's per-list step (l2: terms - 2 q.r). m in 1..256, t finite.
void build_fastscan_lut(const float* a, const float* b, float alpha, std::int64_t m, float* table, FastScanLut& out) noexcept;
/// One kernel call over blocks [b0, b0 + nb): sums into out (32 per block) and masks of sums < threshold.
void fastscan_blocks(const FastScanCodes& codes, const FastScanLut& lut, std::int64_t b0, std::int64_t nb,
                     std::uint16_t* out, std::uint32_t* mask, std::uint16_t threshold) noexcept;
}  // namespace detail

template <class Visit>
void fastscan_for_each_below(const FastScanCodes& codes, const FastScanLut& lut, std::uint16_t& threshold, Visit&& visit) {
  constexpr std::int64_t kChunk = 8;  // blocks per kernel call: the sums stay in L1
  std::uint16_t sums[kChunk * 32];
  std::uint32_t masks[kChunk];
  const std::int64_t nblocks = codes.num_blocks(), n = codes.size();
  for (std::int64_t b0 = 0; b0 < nblocks; b0 += kChunk) {
    const std::int64_t nb = nblocks - b0 < kChunk ? nblocks - b0 : kChunk;
    detail::fastscan_blocks(codes, lut, b0, nb, sums, masks, threshold);
    for (std::int64_t b = 0; b < nb; ++b) {
      for (std::uint32_t mk = masks[b]; mk != 0; mk &= mk - 1) {
        const int v = __builtin_ctz(mk);
        const std::int64_t i = (b0 + b) * 32 + v;
        const std::uint16_t q = sums[b * 32 + v];
        if (i < n && q < threshold) visit(i, q);
      }
    }
  }
}

}  // namespace quarry
