// Element conversion between f32 and f16 / bf16 on a CUDA device. Part of quarry::cuda.
//
// The device counterpart of quarry/core/convert.hpp, bit-exact with the scalar reference of
// quarry/core/float16.hpp (f16/bf16 -> f32 exact; f32 -> f16/bf16 round to nearest even, NaN
// made quiet keeping sign and top payload bits, f16 overflow to inf), so the conformance test
// compares it with the CPU bit for bit. Calls return when the kernel has finished.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "quarry/core/cuda_tensor.hpp"
#include "quarry/core/float16.hpp"

namespace quarry {

/// dst = float(src), element-wise on the device, exact. Shapes must be equal and both tensors
/// on one device; throws quarry::error naming the shapes, or the CUDA error.
void convert(const Tensor<f16, cuda>& src, Tensor<float, cuda>& dst);
/// dst = f16(src), element-wise on the device, round to nearest even.
void convert(const Tensor<float, cuda>& src, Tensor<f16, cuda>& dst);
/// dst = float(src), element-wise on the device, exact.
void convert(const Tensor<bf16, cuda>& src, Tensor<float, cuda>& dst);
/// dst = bf16(src), element-wise on the device, round to nearest even.
void convert(const Tensor<float, cuda>& src, Tensor<bf16, cuda>& dst);

/// True for the (To, From) pairs the CUDA backend converts: f32 <-> f16, f32 <-> bf16, and
/// any type to itself.
template <class To, class From>
inline constexpr bool cuda_convertible_v =
    std::is_same_v<To, From> ||
    (std::is_same_v<To, float> && (std::is_same_v<From, f16> || std::is_same_v<From, bf16>)) ||
    (std::is_same_v<From, float> && (std::is_same_v<To, f16> || std::is_same_v<To, bf16>));

/// A new device tensor, on src's device, holding src's elements converted to To
/// (`cast<float>(halves)`); casting to the same type is clone().
template <Element To, Element From>
  requires cuda_convertible_v<To, From>
Tensor<To, cuda> cast(const Tensor<From, cuda>& src) {
  if constexpr (std::is_same_v<To, From>) {
    return src.clone();
  } else {
    Tensor<To, cuda> out = Tensor<To, cuda>::uninitialized(src.shape(), src.device());
    convert(src, out);
    return out;
  }
}

namespace detail {

/// The raw kernels behind convert(): `n` elements between device pointers on the current
/// device, returning when done. Errors (device_error) name the CUDA error.
status cuda_convert_f16_to_f32(const f16* src, float* dst, std::size_t n);
/// See cuda_convert_f16_to_f32.
status cuda_convert_f32_to_f16(const float* src, f16* dst, std::size_t n);
/// See cuda_convert_f16_to_f32.
status cuda_convert_bf16_to_f32(const bf16* src, float* dst, std::size_t n);
/// See cuda_convert_f16_to_f32.
status cuda_convert_f32_to_bf16(const float* src, bf16* dst, std::size_t n);

}  // namespace detail

}  // namespace quarry
