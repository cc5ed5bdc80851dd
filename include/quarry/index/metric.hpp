// Distance metrics of the index module.
#pragma once

#include <cstdint>
#include <string_view>

namespace quarry {

/// How two vectors are compared.
enum class Metric : std::uint8_t {
  l2,             ///< squared Euclidean distance: smaller is nearer
  inner_product,  ///< dot product: larger is nearer
  cosine,         ///< dot product of L2-normalised vectors: larger is nearer
};

/// "l2", "inner_product" or "cosine".
constexpr std::string_view metric_name(Metric m) noexcept {
  switch (m) {
    case Metric::l2: return "l2";
    case Metric::inner_product: return "inner_product";
    case Metric::cosine: return "cosine";
  }
  return "unknown";
}

}  // namespace quarry
