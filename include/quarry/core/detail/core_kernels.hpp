// The kernel table of the core module: element conversion and vector products.
// Front-ends are in quarry/core/convert.hpp and quarry/core/dot.hpp; bodies in
// src/cpu/kernels/core.hpp; the scalar bodies are the reference (src/cpu/kernels/reference.hpp).
#pragma once

#include <cstddef>
#include <cstdint>

#include "quarry/core/detail/dispatch.hpp"

namespace quarry::detail {

/// Core kernels for one ISA. Pointers are never null; every kernel accepts n == 0 and any
/// alignment, and is noexcept and allocation-free.
struct CoreKernels {
  /// binary16 -> binary32, exact.
  void (*f16_to_f32)(const std::uint16_t* src, float* dst, std::size_t n) noexcept;
  /// binary32 -> binary16, round to nearest even, NaN kept quiet, overflow to inf.
  void (*f32_to_f16)(const float* src, std::uint16_t* dst, std::size_t n) noexcept;
  /// bfloat16 -> binary32, exact.
  void (*bf16_to_f32)(const std::uint16_t* src, float* dst, std::size_t n) noexcept;
  /// binary32 -> bfloat16, round to nearest even, NaN kept quiet.
  void (*f32_to_bf16)(const float* src, std::uint16_t* dst, std::size_t n) noexcept;
  /// sum a[i] * b[i] in float (summation order differs by ISA).
  float (*dot_f32)(const float* a, const float* b, std::size_t n) noexcept;
  /// sum (a[i] - b[i])^2 in float.
  float (*l2_sqr_f32)(const float* a, const float* b, std::size_t n) noexcept;
  /// sum a[i] * b[i] of int8 values, exact modulo 2^32 (exact whenever it fits in int32,
  /// which holds for n <= 131072).
  std::int32_t (*dot_i8)(const std::int8_t* a, const std::int8_t* b, std::size_t n) noexcept;
};

QUARRY_DECLARE_KERNEL_TABLES(CoreKernels)

}  // namespace quarry::detail
