// Vector products on the active ISA: the building blocks of distances and GEMV.
#pragma once

#include <cstdint>
#include <span>

#include <fmt/format.h>

#include "quarry/core/detail/core_kernels.hpp"
#include "quarry/core/status.hpp"

namespace quarry {

namespace detail {
inline void check_same_length(std::size_t a, std::size_t b, const char* what) {
  if (a != b) throw_error(errc::shape_mismatch, fmt::format("{}: vectors have lengths {} and {}", what, a, b));
}
}  // namespace detail

/// sum a[i] * b[i], accumulated in float (SIMD lanes, then a tree sum).
inline float dot(std::span<const float> a, std::span<const float> b) {
  detail::check_same_length(a.size(), b.size(), "dot");
  return detail::kernels<detail::CoreKernels>().dot_f32(a.data(), b.data(), a.size());
}

/// sum a[i] * b[i] of int8 vectors, exact in int32 (modulo 2^32 beyond n = 131072).
inline std::int32_t dot(std::span<const std::int8_t> a, std::span<const std::int8_t> b) {
  detail::check_same_length(a.size(), b.size(), "dot");
  return detail::kernels<detail::CoreKernels>().dot_i8(a.data(), b.data(), a.size());
}

/// sum (a[i] - b[i])^2: the squared Euclidean distance.
inline float l2_sqr(std::span<const float> a, std::span<const float> b) {
  detail::check_same_length(a.size(), b.size(), "l2_sqr");
  return detail::kernels<detail::CoreKernels>().l2_sqr_f32(a.data(), b.data(), a.size());
}

}  // namespace quarry
