// Shape and Strides: small fixed-capacity lists of extents, with no heap allocation.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "quarry/core/checked.hpp"
#include "quarry/core/status.hpp"

namespace quarry {

/// The most dimensions a tensor may have.
inline constexpr int kMaxRank = 8;

/// A list of up to kMaxRank signed 64-bit extents (a shape) or element strides.
class Dims {
 public:
  constexpr Dims() noexcept = default;
  /// {2, 3, 4}; throws quarry::error when given more than kMaxRank values.
  constexpr Dims(std::initializer_list<std::int64_t> values) { assign(values.begin(), values.size()); }
  /// From any contiguous list of extents.
  explicit constexpr Dims(std::span<const std::int64_t> values) { assign(values.data(), values.size()); }

  /// Number of values (dimensions).
  ///@{
  constexpr int rank() const noexcept { return rank_; }
  constexpr int size() const noexcept { return rank_; }
  ///@}
  /// True for rank 0.
  constexpr bool empty() const noexcept { return rank_ == 0; }
  /// Value `i` (unchecked; 0 <= i < rank).
  ///@{
  constexpr std::int64_t& operator[](int i) noexcept { return v_[static_cast<std::size_t>(i)]; }
  constexpr std::int64_t operator[](int i) const noexcept { return v_[static_cast<std::size_t>(i)]; }
  ///@}
  /// Iteration over the rank() values.
  ///@{
  constexpr const std::int64_t* begin() const noexcept { return v_.data(); }
  constexpr const std::int64_t* end() const noexcept { return v_.data() + rank_; }
  constexpr std::int64_t* begin() noexcept { return v_.data(); }
  constexpr std::int64_t* end() noexcept { return v_.data() + rank_; }
  ///@}
  /// The values as a span of rank() elements.
  constexpr std::span<const std::int64_t> span() const noexcept { return {v_.data(), static_cast<std::size_t>(rank_)}; }

  /// Appends one extent; throws quarry::error past kMaxRank.
  constexpr void push_back(std::int64_t v) {
    if (rank_ == kMaxRank) throw_error(errc::out_of_range, fmt::format("more than {} dimensions", kMaxRank));
    v_[static_cast<std::size_t>(rank_++)] = v;
  }
  /// Removes dimension `i`.
  constexpr void erase(int i) noexcept {
    for (int k = i; k + 1 < rank_; ++k) v_[static_cast<std::size_t>(k)] = v_[static_cast<std::size_t>(k + 1)];
    --rank_;
  }

  /// Product of the extents (1 for rank 0); nullopt on a negative extent or overflow.
  constexpr std::optional<std::int64_t> checked_numel() const noexcept { return checked_product(span()); }

  /// Same rank and same values.
  friend constexpr bool operator==(const Dims& a, const Dims& b) noexcept {
    return std::equal(a.begin(), a.end(), b.begin(), b.end());
  }

  /// "[2, 3, 4]".
  std::string to_string() const { return fmt::format("[{}]", fmt::join(begin(), end(), ", ")); }

 private:
  constexpr void assign(const std::int64_t* p, std::size_t n) {
    if (n > static_cast<std::size_t>(kMaxRank))
      throw_error(errc::out_of_range, fmt::format("{} dimensions given; at most {} are supported", n, kMaxRank));
    std::copy(p, p + n, v_.begin());
    rank_ = static_cast<int>(n);
  }

  std::array<std::int64_t, kMaxRank> v_{};
  int rank_ = 0;
};

/// The extents of a tensor, outermost first.
using Shape = Dims;
/// Element strides of a tensor, one per dimension (in elements, not bytes).
using Strides = Dims;

/// Row-major (C order) strides for `shape`: the last dimension has stride 1.
constexpr Strides contiguous_strides(const Shape& shape) noexcept {
  Strides s;
  for (int i = 0; i < shape.rank(); ++i) s.push_back(1);
  std::int64_t acc = 1;
  for (int i = shape.rank() - 1; i >= 0; --i) {
    s[i] = acc;
    acc *= shape[i] > 0 ? shape[i] : 1;
  }
  return s;
}

/// The number of elements of `shape`; throws quarry::error naming the shape on a negative
/// extent or int64 overflow.
inline std::int64_t numel_of(const Shape& shape) {
  auto n = shape.checked_numel();
  if (!n) throw_error(errc::invalid_argument, fmt::format("shape {} has a negative extent or more than 2^63 elements", shape.to_string()));
  return *n;
}

}  // namespace quarry

/// \cond
template <>
struct fmt::formatter<quarry::Dims> : fmt::formatter<std::string> {
  auto format(const quarry::Dims& d, format_context& ctx) const {
    return fmt::formatter<std::string>::format(d.to_string(), ctx);
  }
};
/// \endcond
