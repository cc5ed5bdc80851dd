// Internal: rejecting NaN and infinite input rows with an error that names them.
#pragma once

#include <cmath>
#include <cstdint>

#include <fmt/format.h>

#include "quarry/core/status.hpp"
#include "quarry/core/tensor.hpp"

namespace quarry::detail {

/// Ok when every value of the [n, d] matrix `x` (unit column stride) is finite; otherwise an
/// invalid_argument error naming the first bad row and column: "row 7 of <name> [n, d] has a NaN
/// value at column 3".
inline status check_finite_rows(TensorView<const float> x, const char* name) {
  const std::int64_t n = x.dim(0), d = x.dim(1);
  if (n == 0 || d == 0) return {};
  const std::int64_t ld = n > 1 ? x.strides()[0] : d;
  const float* base = x.data();
  for (std::int64_t i = 0; i < n; ++i) {
    const float* r = base + i * ld;
    for (std::int64_t j = 0; j < d; ++j)
      if (!std::isfinite(r[j]))
        return status(errc::invalid_argument, fmt::format("row {} of {} [{}, {}] has a {} value at column {}", i, name, n, d,
                                                          std::isnan(r[j]) ? "NaN" : "infinite", j));
  }
  return {};
}

}  // namespace quarry::detail
