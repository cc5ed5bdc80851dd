// Bulk element conversion between f32 and f16 / bf16, and dtype casts of whole tensors.
// Runs the active ISA's kernel (F16C, AVX-512 where present); bit-exact with the scalar
// conversions of quarry/core/float16.hpp on every ISA.
#pragma once

#include <span>

#include <fmt/format.h>

#include "quarry/core/detail/core_kernels.hpp"
#include "quarry/core/float16.hpp"
#include "quarry/core/tensor.hpp"

namespace quarry {

namespace detail {
inline void check_same_size(std::size_t src, std::size_t dst, const char* what) {
  if (src != dst) throw_error(errc::shape_mismatch, fmt::format("{}: source has {} elements, destination {}", what, src, dst));
}
/// A value of an element type as the arithmetic type that holds it exactly.
template <class T>
constexpr auto widen(T v) noexcept {
  if constexpr (std::is_same_v<T, f16> || std::is_same_v<T, bf16>) return static_cast<float>(v);
  else if constexpr (is_packed_v<T>) return static_cast<int>(v);
  else return v;
}
/// An arithmetic value as element type To (C++ conversion rules; 4-bit types keep the low nibble).
template <class To, class V>
constexpr To narrow_to(V v) noexcept {
  if constexpr (std::is_same_v<To, f16> || std::is_same_v<To, bf16>) return To(static_cast<float>(v));
  else if constexpr (is_packed_v<To>) return To(static_cast<int>(v));
  else return static_cast<To>(v);
}
}  // namespace detail

/// dst[i] = float(src[i]), exact. The sizes must be equal.
inline void convert(std::span<const f16> src, std::span<float> dst) {
  detail::check_same_size(src.size(), dst.size(), "convert f16 -> f32");
  detail::kernels<detail::CoreKernels>().f16_to_f32(reinterpret_cast<const std::uint16_t*>(src.data()), dst.data(), src.size());
}
/// dst[i] = f16(src[i]), round to nearest even. The sizes must be equal.
inline void convert(std::span<const float> src, std::span<f16> dst) {
  detail::check_same_size(src.size(), dst.size(), "convert f32 -> f16");
  detail::kernels<detail::CoreKernels>().f32_to_f16(src.data(), reinterpret_cast<std::uint16_t*>(dst.data()), src.size());
}
/// dst[i] = float(src[i]), exact. The sizes must be equal.
inline void convert(std::span<const bf16> src, std::span<float> dst) {
  detail::check_same_size(src.size(), dst.size(), "convert bf16 -> f32");
  detail::kernels<detail::CoreKernels>().bf16_to_f32(reinterpret_cast<const std::uint16_t*>(src.data()), dst.data(), src.size());
}
/// dst[i] = bf16(src[i]), round to nearest even. The sizes must be equal.
inline void convert(std::span<const float> src, std::span<bf16> dst) {
  detail::check_same_size(src.size(), dst.size(), "convert f32 -> bf16");
  detail::kernels<detail::CoreKernels>().f32_to_bf16(src.data(), reinterpret_cast<std::uint16_t*>(dst.data()), src.size());
}

/// A new contiguous tensor holding `src`'s elements converted to To. f32 <-> f16/bf16 use the
/// SIMD kernels; other pairs convert element by element with static_cast (float -> integer
/// truncates toward zero, as C++ does; callers quantizing should use quarry/quant instead).
template <Element To, Element From>
Tensor<To> cast(TensorView<From> src) {
  using F = std::remove_const_t<From>;
  if constexpr (std::is_same_v<To, F>) {
    return src.contiguous();
  } else {
    Tensor<F> packed_src = src.contiguous();
    Tensor<To> out = Tensor<To>::uninitialized(src.shape());
    const auto n = static_cast<std::size_t>(out.numel());
    constexpr bool to_float = std::is_same_v<To, float>, from_float = std::is_same_v<F, float>;
    if constexpr (to_float && (std::is_same_v<F, f16> || std::is_same_v<F, bf16>)) {
      convert(std::span<const F>(packed_src.data(), n), out.span());
    } else if constexpr (from_float && (std::is_same_v<To, f16> || std::is_same_v<To, bf16>)) {
      convert(std::span<const float>(packed_src.data(), n), out.span());
    } else {
      auto s = packed_src.view();
      auto d = out.view();
      const auto sflat = s.reshape({-1});
      const auto dflat = d.reshape({-1});
      for (std::int64_t i = 0; i < static_cast<std::int64_t>(n); ++i) dflat(i) = detail::narrow_to<To>(detail::widen(F(sflat(i))));
    }
    return out;
  }
}

/// cast() of a whole tensor.
template <Element To, Element From>
Tensor<To> cast(const Tensor<From>& src) {
  return cast<To>(src.view());
}

}  // namespace quarry
