// The counter-based random generator of the synthetic data sets (synthetic_embeddings.cpp,
// synthetic_llama.cpp): the numbers of row i of a stream depend on (seed, stream, i) only, so
// rows can be generated in any order, on any thread, and again the same.
#pragma once

#include <cstdint>

namespace quarry::bench::detail {

/// SplitMix64 (Steele, Lea, Flood 2014), started at (seed, stream, index).
struct SplitMix64 {
  std::uint64_t state;
  static std::uint64_t mix(std::uint64_t z) noexcept {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  SplitMix64(std::uint64_t seed, std::uint64_t stream, std::uint64_t index) noexcept
      : state(mix(mix(seed ^ (stream * 0x9e3779b97f4a7c15ULL)) + index)) {}
  /// The next 64 random bits.
  std::uint64_t next() noexcept { return mix(state += 0x9e3779b97f4a7c15ULL); }
};

}  // namespace quarry::bench::detail
