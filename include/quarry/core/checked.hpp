// Overflow-checked integer arithmetic for sizes that come from users and files.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

namespace quarry {

/// a + b, or nullopt on signed 64-bit overflow.
constexpr std::optional<std::int64_t> checked_add(std::int64_t a, std::int64_t b) noexcept {
  std::int64_t r;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

/// a * b, or nullopt on signed 64-bit overflow.
constexpr std::optional<std::int64_t> checked_mul(std::int64_t a, std::int64_t b) noexcept {
  std::int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}

/// The product of `dims`, or nullopt when any is negative or the product overflows int64.
constexpr std::optional<std::int64_t> checked_product(std::span<const std::int64_t> dims) noexcept {
  std::int64_t p = 1;
  for (std::int64_t d : dims) {
    if (d < 0) return std::nullopt;
    auto next = checked_mul(p, d);
    if (!next) return std::nullopt;
    p = *next;
  }
  return p;
}

}  // namespace quarry
