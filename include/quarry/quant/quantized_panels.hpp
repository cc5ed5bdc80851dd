// QuantizedPanels: quantized weights rearranged once for the CPU's products, as llama.cpp
// repacks Q4_0 for its CPU kernels and oneDNN reorders weights for a matmul. The same values,
// scales and zero points as the QuantizedTensor they came from (int4 per_group; int8 per
// tensor, per channel or per group as GGUF's Q8_0), in another order:
//
//   values  panels of 16 rows (the last one padded with zero rows), each a run of 64-byte blocks
//           holding 16 rows x 4 bytes: row r of the panel in bytes 4r .. 4r + 3.
//             int4: block b covers columns 8b .. 8b + 7; byte 4r + i holds column 8b + i in its
//                   low nibble and 8b + 4 + i in its high one, both unsigned (symmetric int4 q as
//                   q + 8, asymmetric uint4 as is). K / 8 blocks per panel.
//             int8: block b covers columns 4b .. 4b + 3, bytes as stored (int8, or uint8 when
//                   asymmetric); K rounded up to 4 with zero columns, (K + 3) / 4 blocks.
//           The panels are stored in quads of 4, block by block ([blocks][4 panels][64] bytes:
//           the decode kernels' 64 rows in flight are one sequential stream), the first
//           panels / 4 rounded down of them; the rest one after the other ([blocks][64] each).
//   scales  per group (int4, int8): a group's 16 scales of a panel side by side (the scheme's
//           type, f16 or f32) in the same units: [K / group][4 panels][16] per quad,
//           [K / group][16] per single. int8 per tensor / channel: one f32 per row,
//           [panels x 16] (per_tensor repeated, f16 widened: exact).
//   zeros   uint8, laid out as the scales; asymmetric schemes only.
// detail::panel_block_offset and detail::panel_group_slot (quant_kernels.hpp) compute these.
//
// One 512-bit vpdpbusd then multiplies 16 rows' 4 columns by 4 broadcast activations, and a
// panel's sums stay in int32 lanes, one per row: no horizontal sums, one sequential stream.
//   per group (int4: W4A8; int8 per_group: W8A8): a group's dot stays in int32 until it is
//                complete and takes one conversion and one fma per 16 rows, where the row-major
//                layout takes them per 8 (int4) or 4 (int8) columns of each row. The product
//                (qgemm / qgemv on QuantizedPanels, in qgemm.hpp) is defined per group:
//                  dot[g] = sum_{c in g} (q[j][c] - z[j][g]) * qx[i][c]  exact in int32,
//                  t = 0;  t = fma(float(dot[g]), s[j][g], t) for each group g in order,
//                  y[i][j] = fma(t, output_scale * sx[i], bias[j] or 0),
//                bit-identical on every ISA, tiling and thread count (not to the row-major
//                kernels' bits, whose float sums run in 16 lanes: two roundings of one sum).
//   int8 per tensor / channel (W8A8): the row-major W8A8 product exactly (the same int32 sums,
//                the same epilogue): bit-identical to qgemm on the QuantizedTensor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "quarry/core/status.hpp"
#include "quarry/core/tensor.hpp"
#include "quarry/core/thread_pool.hpp"
#include "quarry/quant/quantized_tensor.hpp"

namespace quarry {

/// Quantized weights in panels of 16 rows for the CPU's W4A8 and W8A8 kernels (see above).
/// Move-only; immutable once packed, so any number of threads may multiply with one at once.
class QuantizedPanels {
 public:
  /// Rows of one panel.
  static constexpr std::int64_t kPanelRows = 16;

  /// An empty 0 x 0 matrix.
  QuantizedPanels() = default;
  /// Whether pack() takes weights of this scheme: int4 per_group, or int8 of any granularity.
  static constexpr bool supports(const QuantScheme& s) noexcept {
    return s.bits == 8 || (s.bits == 4 && s.granularity == Granularity::per_group);
  }
  /// The panels of `w`: any scheme supports() takes, symmetric or not, f16 or f32 scales;
  /// errc::unsupported names any other.
  /// Panels are rearranged in parallel on `pool` when given.
  static result<QuantizedPanels> pack(const QuantizedTensor<cpu>& w, ThreadPool* pool = nullptr);
  /// The row-major QuantizedTensor back, equal to the one packed.
  QuantizedTensor<cpu> unpack() const;

  QuantizedPanels(QuantizedPanels&&) noexcept = default;
  QuantizedPanels& operator=(QuantizedPanels&&) noexcept = default;
  QuantizedPanels(const QuantizedPanels&) = delete;
  QuantizedPanels& operator=(const QuantizedPanels&) = delete;

  const QuantScheme& scheme() const noexcept { return scheme_; }  ///< the packed tensor's scheme
  std::int64_t rows() const noexcept { return rows_; }            ///< N, output rows
  std::int64_t cols() const noexcept { return cols_; }            ///< K, the reduction dimension
  /// Panels: rows / 16 rounded up.
  std::int64_t panels() const noexcept { return (rows_ + kPanelRows - 1) / kPanelRows; }
  /// Groups per row: cols / group_size (per_group); 0 for int8 per tensor / channel.
  std::int64_t groups() const noexcept {
    return scheme_.granularity == Granularity::per_group && scheme_.group_size > 0 ? cols_ / scheme_.group_size : 0;
  }
  /// 64-byte blocks per panel: K / 8 (int4), K / 4 rounded up (int8).
  std::int64_t blocks() const noexcept { return scheme_.bits == 4 ? cols_ / 8 : (cols_ + 3) / 4; }
  /// Bytes of values, scales and zero points (the last panel's padding rows included).
  std::size_t nbytes() const noexcept { return values_.nbytes() + scales_.nbytes() + zeros_.nbytes(); }
  /// The memory the panels occupy: values, scales and (asymmetric) zero points.
  std::vector<std::span<const std::byte>> buffers() const;

  /// Raw storage, in the layout described above.
  ///@{
  const std::uint8_t* value_data() const noexcept { return values_.data(); }
  const void* scale_data() const noexcept { return scales_.data(); }  ///< int8 per tensor / channel: f32 per row
  const std::uint8_t* zero_data() const noexcept { return scheme_.symmetric ? nullptr : zeros_.data(); }
  ///@}

 private:
  void pack_int8(const QuantizedTensor<cpu>& w, ThreadPool* pool);

  QuantScheme scheme_{};
  std::int64_t rows_ = 0;
  std::int64_t cols_ = 0;
  Tensor<std::uint8_t> values_{Shape{0}};
  Tensor<std::uint8_t> scales_{Shape{0}};  // per group: f16 bits or f32, per the scheme; else f32 per row
  Tensor<std::uint8_t> zeros_{Shape{0}};
};

}  // namespace quarry
