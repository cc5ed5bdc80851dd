// QuantizedTensor<cuda>: a quantized [rows, cols] matrix in CUDA device memory. Part of
// quarry::cuda.
//
// The same storage as QuantizedTensor<cpu> (quarry/quant/quantized_tensor.hpp), byte for byte:
// values [rows, row_bytes], scales f32 or f16 [scale_rows, scales_per_row], zero points uint8 of
// the scales' shape for asymmetric schemes. Made on the device with to_device() and brought back
// with to_host(); the kernels (quarry/quant/cuda_qgemm.hpp) read it through the device pointers.
// Move-only; clone() copies on the device. Errors throw quarry::error naming the operation, the
// shape and the CUDA error. No CUDA header is included here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <variant>

#include <fmt/format.h>

#include "quarry/core/backend.hpp"
#include "quarry/core/cuda_tensor.hpp"
#include "quarry/core/float16.hpp"
#include "quarry/quant/quantized_tensor.hpp"
#include "quarry/quant/scheme.hpp"

namespace quarry {

/// A quantized matrix in the memory of one CUDA device. Move-only; clone() copies.
template <>
class QuantizedTensor<cuda> {
 public:
  /// The host type with the same layout.
  using host_type = QuantizedTensor<cpu>;

  /// An empty 0 x 0 matrix; holds no device memory.
  QuantizedTensor() = default;

  /// A device copy of the host matrix `q` on the current device.
  static QuantizedTensor from_host(const host_type& q) {
    QuantizedTensor d;
    d.scheme_ = q.scheme();
    d.rows_ = q.rows();
    d.cols_ = q.cols();
    d.values_ = Tensor<std::uint8_t, cuda>::from_host(q.value_bytes());
    if (q.scheme().scale_dtype == DType::f16) d.scales_ = Tensor<f16, cuda>::from_host(q.scales_f16());
    else d.scales_ = Tensor<float, cuda>::from_host(q.scales_f32());
    if (!q.scheme().symmetric) d.zeros_ = Tensor<std::uint8_t, cuda>::from_host(q.zeros());
    return d;
  }

  /// Moves the device memory; the source is left empty.
  ///@{
  QuantizedTensor(QuantizedTensor&&) noexcept = default;
  QuantizedTensor& operator=(QuantizedTensor&&) noexcept = default;
  ///@}
  QuantizedTensor(const QuantizedTensor&) = delete;
  QuantizedTensor& operator=(const QuantizedTensor&) = delete;
  ~QuantizedTensor() = default;

  /// A deep copy on the same device.
  QuantizedTensor clone() const {
    QuantizedTensor d;
    d.scheme_ = scheme_;
    d.rows_ = rows_;
    d.cols_ = cols_;
    d.values_ = values_.clone();
    d.scales_ = std::visit([](const auto& t) -> ScaleStorage { return t.clone(); }, scales_);
    d.zeros_ = zeros_.clone();
    return d;
  }

  /// A host copy, identical byte for byte to the QuantizedTensor<cpu> this was made from.
  host_type to_host() const {
    if (values_.rank() != 2) return host_type{};  // default-constructed
    auto made = host_type::create(scheme_, rows_, cols_);
    if (!made.ok()) detail::throw_in_context(made.status(), "QuantizedTensor<cuda>::to_host");
    host_type q = std::move(*made);
    values_.copy_to_host(q.value_bytes());
    if (scheme_.scale_dtype == DType::f16) std::get<Tensor<f16, cuda>>(scales_).copy_to_host(q.scales_f16());
    else std::get<Tensor<float, cuda>>(scales_).copy_to_host(q.scales_f32());
    if (!scheme_.symmetric) zeros_.copy_to_host(q.zeros());
    return q;
  }

  const QuantScheme& scheme() const noexcept { return scheme_; }  ///< how it is quantized
  std::int64_t rows() const noexcept { return rows_; }            ///< N, output rows
  std::int64_t cols() const noexcept { return cols_; }            ///< K, the reduction dimension
  Shape shape() const { return {rows_, cols_}; }                  ///< [rows, cols]
  /// Bytes per row of values (cols for 8 bits, cols / 2 for 4 bits).
  std::int64_t row_bytes() const noexcept { return values_.rank() == 2 ? values_.shape()[1] : 0; }
  /// Bytes of values, scales and zero points together: what a GEMV streams from memory.
  std::size_t nbytes() const noexcept {
    return values_.nbytes() + std::visit([](const auto& t) { return t.nbytes(); }, scales_) + zeros_.nbytes();
  }
  /// The ordinal of the device holding the data; -1 when nothing is held (an empty matrix).
  int device() const noexcept { return values_.device(); }

  /// The values as raw bytes [rows, row_bytes], in device memory.
  const Tensor<std::uint8_t, cuda>& value_bytes() const noexcept { return values_; }
  /// Device pointer to the values (null when empty).
  const std::uint8_t* values_data() const noexcept { return values_.data(); }
  /// Shape of the scale (and zero point) matrix.
  Shape scales_shape() const { return std::visit([](const auto& t) { return t.shape(); }, scales_); }
  /// Device pointer to the scales, f32 or f16 per scheme().scale_dtype, row-major.
  const void* scales_data() const noexcept { return std::visit([](const auto& t) -> const void* { return t.data(); }, scales_); }
  /// Device pointer to the zero points (same shape as the scales); null for symmetric schemes.
  const std::uint8_t* zeros_data() const noexcept { return zeros_.data(); }

 private:
  using ScaleStorage = std::variant<Tensor<float, cuda>, Tensor<f16, cuda>>;

  QuantScheme scheme_{};
  std::int64_t rows_ = 0;
  std::int64_t cols_ = 0;
  Tensor<std::uint8_t, cuda> values_;
  ScaleStorage scales_;
  Tensor<std::uint8_t, cuda> zeros_;
};

/// A device copy of the quantized host matrix `q`, on the current device.
inline QuantizedTensor<cuda> to_device(const QuantizedTensor<cpu>& q) { return QuantizedTensor<cuda>::from_host(q); }
/// A host copy of the quantized device matrix `q`.
inline QuantizedTensor<cpu> to_host(const QuantizedTensor<cuda>& q) { return q.to_host(); }

}  // namespace quarry
