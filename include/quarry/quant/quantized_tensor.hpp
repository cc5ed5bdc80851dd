// QuantizedTensor<Backend>: a [rows, cols] matrix of 8- or 4-bit integers with its scales, zero
// points and scheme. Rows are output channels (N), columns the reduction dimension (K).
//
// Storage (the layout kernels and importers rely on):
//   values  [rows, row_bytes] bytes, row-major. 8-bit: one byte per weight (int8 for symmetric,
//           uint8 for asymmetric). 4-bit: two weights per byte, column 2j in the low nibble of
//           byte j and column 2j+1 in the high nibble (quarry's packed int4/uint4).
//   scales  [scale_rows, scales_per_row] in f32 or f16 (scheme.scale_dtype): [1, 1] per tensor,
//           [rows, 1] per channel, [rows, cols / group_size] per group.
//   zeros   same shape as scales, one uint8 each; present only for asymmetric schemes.
// A weight reads back as (q - z) * s.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <variant>

#include <fmt/format.h>

#include "quarry/core/backend.hpp"
#include "quarry/core/tensor.hpp"
#include "quarry/quant/scheme.hpp"

namespace quarry {

template <class B = cpu>
class QuantizedTensor;

/// A quantized matrix in host memory. Move-only; clone() copies.
template <>
class QuantizedTensor<cpu> {
 public:
  /// An empty 0 x 0 matrix.
  QuantizedTensor() = default;

  /// A [rows, cols] matrix of the given scheme with every value, scale and zero point 0 (it
  /// dequantizes to zeros). Errors: an invalid scheme, or a shape the scheme cannot hold.
  static result<QuantizedTensor> create(const QuantScheme& scheme, std::int64_t rows, std::int64_t cols) {
    QUARRY_RETURN_IF_ERROR(scheme.validate_for(rows, cols));
    QuantizedTensor q;
    q.scheme_ = scheme;
    q.rows_ = rows;
    q.cols_ = cols;
    q.values_ = Tensor<std::uint8_t>({rows, scheme.bits == 8 ? cols : cols / 2});
    const Shape scale_shape{scheme.scale_rows(rows), scheme.scales_per_row(cols)};
    if (scheme.scale_dtype == DType::f16) q.scales_ = Tensor<f16>(scale_shape);
    else q.scales_ = Tensor<float>(scale_shape);
    if (!scheme.symmetric) q.zeros_ = Tensor<std::uint8_t>(scale_shape);
    return q;
  }

  /// Moves the memory; the source is left empty.
  ///@{
  QuantizedTensor(QuantizedTensor&&) noexcept = default;
  QuantizedTensor& operator=(QuantizedTensor&&) noexcept = default;
  ///@}
  QuantizedTensor(const QuantizedTensor&) = delete;
  QuantizedTensor& operator=(const QuantizedTensor&) = delete;
  /// A deep copy.
  QuantizedTensor clone() const {
    QuantizedTensor q;
    q.scheme_ = scheme_;
    q.rows_ = rows_;
    q.cols_ = cols_;
    q.values_ = values_.clone();
    q.scales_ = std::visit([](const auto& t) -> ScaleStorage { return t.clone(); }, scales_);
    q.zeros_ = zeros_.clone();
    return q;
  }

  const QuantScheme& scheme() const noexcept { return scheme_; }  ///< how it is quantized
  std::int64_t rows() const noexcept { return rows_; }            ///< N, output rows
  std::int64_t cols() const noexcept { return cols_; }            ///< K, the reduction dimension
  Shape shape() const { return {rows_, cols_}; }                  ///< [rows, cols]
  /// Bytes per row of values (cols for 8 bits, cols / 2 for 4 bits).
  std::int64_t row_bytes() const noexcept { return values_.rank() == 2 ? values_.dim(1) : 0; }
  /// Bytes of values, scales and zero points together: what a GEMV streams from memory.
  std::size_t nbytes() const noexcept {
    return values_.nbytes() + std::visit([](const auto& t) { return t.nbytes(); }, scales_) + zeros_.nbytes();
  }
  /// Storage bits per weight, scales and zero points included (e.g. 4.125 for int4 g128 f16).
  double bits_per_weight() const noexcept {
    return rows_ > 0 && cols_ > 0 ? 8.0 * static_cast<double>(nbytes()) / static_cast<double>(rows_ * cols_) : 0.0;
  }

  /// The values as raw bytes, [rows, row_bytes].
  ///@{
  TensorView<std::uint8_t> value_bytes() noexcept { return values_.view(); }
  TensorView<const std::uint8_t> value_bytes() const noexcept { return values_.view(); }
  ///@}
  /// The values as their element type T (int8_t, uint8_t, int4 or uint4: the scheme's
  /// value_dtype()), shape [rows, cols]; throws quarry::error on a type mismatch.
  ///@{
  template <Element T>
  TensorView<T> values() {
    check_value_type<T>();
    return TensorView<T>(reinterpret_cast<typename TensorView<T>::storage_type*>(values_.data()), shape());
  }
  template <Element T>
  TensorView<const T> values() const {
    check_value_type<T>();
    return TensorView<const T>(reinterpret_cast<typename TensorView<const T>::storage_type*>(values_.data()), shape());
  }
  ///@}

  /// Shape of the scale (and zero point) matrix.
  Shape scales_shape() const { return std::visit([](const auto& t) { return t.shape(); }, scales_); }
  /// The scales when stored as f32 (throws otherwise).
  ///@{
  TensorView<float> scales_f32() { return std::get<Tensor<float>>(checked_scales(DType::f32)).view(); }
  TensorView<const float> scales_f32() const { return std::get<Tensor<float>>(checked_scales(DType::f32)).view(); }
  ///@}
  /// The scales when stored as f16 (throws otherwise).
  ///@{
  TensorView<f16> scales_f16() { return std::get<Tensor<f16>>(checked_scales(DType::f16)).view(); }
  TensorView<const f16> scales_f16() const { return std::get<Tensor<f16>>(checked_scales(DType::f16)).view(); }
  ///@}
  /// Raw pointer to the scales (f32 or f16 per the scheme), row-major.
  ///@{
  const void* scales_data() const noexcept { return std::visit([](const auto& t) -> const void* { return t.data(); }, scales_); }
  void* scales_data() noexcept { return std::visit([](auto& t) -> void* { return t.data(); }, scales_); }
  ///@}
  /// Zero points, same shape as the scales; empty for symmetric schemes.
  ///@{
  TensorView<std::uint8_t> zeros() noexcept { return zeros_.view(); }
  TensorView<const std::uint8_t> zeros() const noexcept { return zeros_.view(); }
  ///@}

  /// Index of the scale of weight (r, c) in the scale matrix: (scale row, scale column).
  std::pair<std::int64_t, std::int64_t> scale_index(std::int64_t r, std::int64_t c) const noexcept {
    switch (scheme_.granularity) {
      case Granularity::per_tensor: return {0, 0};
      case Granularity::per_channel: return {r, 0};
      case Granularity::per_group: return {r, c / scheme_.group_size};
    }
    return {0, 0};
  }
  /// The scale of block (sr, sc) as a float.
  float scale(std::int64_t sr, std::int64_t sc) const noexcept {
    return std::visit([&](const auto& t) { return static_cast<float>(t(sr, sc)); }, scales_);
  }
  /// The zero point of block (sr, sc) (0 for symmetric schemes).
  int zero(std::int64_t sr, std::int64_t sc) const noexcept { return scheme_.symmetric ? 0 : zeros_(sr, sc); }
  /// The stored integer of weight (r, c); unchecked.
  int value(std::int64_t r, std::int64_t c) const noexcept {
    const std::uint8_t* row = values_.data() + r * row_bytes();
    if (scheme_.bits == 8) return scheme_.symmetric ? static_cast<int>(static_cast<std::int8_t>(row[c])) : row[c];
    const int nib = (row[c >> 1] >> ((c & 1) * 4)) & 0xf;
    return scheme_.symmetric ? (nib ^ 8) - 8 : nib;  // sign-extend the nibble
  }
  /// Weight (r, c) read back as a float: (q - z) * s.
  float dequantized(std::int64_t r, std::int64_t c) const noexcept {
    const auto [sr, sc] = scale_index(r, c);
    return static_cast<float>(value(r, c) - zero(sr, sc)) * scale(sr, sc);
  }

 private:
  using ScaleStorage = std::variant<Tensor<float>, Tensor<f16>>;

  template <class T>
  void check_value_type() const {
    if (dtype_of<T> != scheme_.value_dtype())
      throw_error(errc::invalid_argument, fmt::format("values<{}>() of a {} tensor, whose values are {}", dtype_name(dtype_of<T>),
                                                      scheme_.to_string(), dtype_name(scheme_.value_dtype())));
  }
  const ScaleStorage& checked_scales(DType want) const {
    if (scheme_.scale_dtype != want)
      throw_error(errc::invalid_argument, fmt::format("scales_{}() of a tensor with {} scales", dtype_name(want), dtype_name(scheme_.scale_dtype)));
    return scales_;
  }
  ScaleStorage& checked_scales(DType want) { return const_cast<ScaleStorage&>(std::as_const(*this).checked_scales(want)); }

  QuantScheme scheme_{};
  std::int64_t rows_ = 0;
  std::int64_t cols_ = 0;
  Tensor<std::uint8_t> values_{Shape{0, 0}};
  ScaleStorage scales_{Tensor<float>(Shape{0, 0})};
  Tensor<std::uint8_t> zeros_;
};

}  // namespace quarry
