// QuantizedPanels: int4 per_group weights rearranged for the CPU's W4A8 product, as llama.cpp
// repacks Q4_0 for its CPU kernels and oneDNN reorders weights once for a matmul. The same
// values, scales and zero points as the QuantizedTensor they came from, in another order:
//
//   values  panels of 16 rows (the last one padded with zero rows). A panel's 8-column block b
//           is 64 bytes: for row r of the panel, bytes 4r .. 4r + 3, byte 4r + i holding column
//           8b + i in its low nibble and column 8b + 4 + i in its high nibble, both unsigned
//           (symmetric int4 q is stored as q + 8, asymmetric uint4 as is). The panels are stored
//           in quads of 4, block by block ([K / 8][4 panels][64] bytes: the decode kernel's 64
//           rows in flight are one sequential stream), the last panels / 4 rounded down of them;
//           the rest one after the other ([K / 8][64] bytes each).
//   scales  a group's 16 scales of a panel side by side (the scheme's scale type, f16 or f32),
//           in the same units: [K / group][4 panels][16] per quad, [K / group][16] per single.
//   zeros   uint8, laid out as the scales; asymmetric schemes only (symmetric: z = 8).
// detail::panel_block_offset and detail::panel_group_slot (quant_kernels.hpp) compute these.
//
// One 512-bit vpdpbusd then multiplies 16 rows' 4 columns by 4 broadcast activations, so a
// group's dot stays in int32 until it is complete and takes one conversion and one fma per 16
// rows, where the row-major layout takes them per 8 columns of each row: fewer instructions per
// weight byte, so decode keeps up with memory with room to spare and prefill gets faster. The
// product it takes part in (qgemm / qgemv on QuantizedPanels, in qgemm.hpp) is defined per group:
//   dot[g] = sum_{c in g} (q[j][c] - z[j][g]) * qx[i][c]  exact in int32,
//   t = 0;  t = fma(float(dot[g]), s[j][g], t) for each group g in order,
//   y[i][j] = fma(t, output_scale * sx[i], bias[j] or 0),
// bit-identical on every ISA, tiling and thread count (not to the row-major W4A8's bits, whose
// float sums run in 16 lanes of 8 columns: the two are different roundings of the same sum).
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

/// int4 per_group weights in panels of 16 rows for the CPU's W4A8 kernels (see above).
/// Move-only.
class QuantizedPanels {
 public:
  /// Rows of one panel.
  static constexpr std::int64_t kPanelRows = 16;

  /// An empty 0 x 0 matrix.
  QuantizedPanels() = default;
  /// The panels of `w`, which must be int4 per_group (any group size, symmetric or not, f16 or
  /// f32 scales): errc::unsupported names any other scheme. Panels are rearranged in parallel
  /// on `pool` when given.
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
  /// Groups per row: cols / group_size.
  std::int64_t groups() const noexcept { return scheme_.group_size > 0 ? cols_ / scheme_.group_size : 0; }
  /// Bytes of values, scales and zero points (the last panel's padding rows included).
  std::size_t nbytes() const noexcept { return values_.nbytes() + scales_.nbytes() + zeros_.nbytes(); }
  /// The memory the panels occupy: values, scales and (asymmetric) zero points.
  std::vector<std::span<const std::byte>> buffers() const;

  /// Raw storage, in the layout described above.
  ///@{
  const std::uint8_t* value_data() const noexcept { return values_.data(); }
  const void* scale_data() const noexcept { return scales_.data(); }
  const std::uint8_t* zero_data() const noexcept { return scheme_.symmetric ? nullptr : zeros_.data(); }
  ///@}

 private:
  QuantScheme scheme_{};
  std::int64_t rows_ = 0;
  std::int64_t cols_ = 0;
  Tensor<std::uint8_t> values_{Shape{0}};
  Tensor<std::uint8_t> scales_{Shape{0}};  // f16 bits or f32, per the scheme
  Tensor<std::uint8_t> zeros_{Shape{0}};
};

}  // namespace quarry
