// The portable yardstick loops: what runs when the CPU has neither AVX2 nor AVX-512 (or is not
// x86-64). Compiled with the project's ordinary flags.
#include "common/detail/peak_kernels.hpp"
#include "common/detail/block_pairs.hpp"

#include <cstring>

namespace quarry::bench::detail {

std::uint64_t read_sum_portable(const std::byte* data, std::size_t bytes) noexcept {
  // Eight independent sums, so the loop is bound by loads, not by one add chain.
  std::uint64_t s[8] = {};
  std::size_t i = 0;
  for (; i + 64 <= bytes; i += 64) {
    std::uint64_t w[8];
    std::memcpy(w, data + i, sizeof w);
    for (int k = 0; k < 8; ++k) s[k] += w[k];
  }
  for (; i < bytes; ++i) s[0] += static_cast<std::uint64_t>(data[i]);
  return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

std::uint64_t read_blocks_portable(const std::byte* data, const std::uint32_t* blocks, std::size_t count, std::size_t block_bytes,
                                   std::size_t ahead) noexcept {
  std::uint64_t s[8] = {};
  walk_block_pairs(data, blocks, count, block_bytes, ahead, [&](const std::byte* p) {
    for (std::size_t o = 0; o < 512; o += 64) {
      std::uint64_t w[8];
      std::memcpy(w, p + o, sizeof w);
      for (int k = 0; k < 8; ++k) s[k] += w[k];
    }
  });
  return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

float fma_chains_portable(std::uint64_t iterations) noexcept {
  // acc = acc * 0.999999 + 1e-6 converges to 1: no overflow, no denormals, never constant.
  float acc[8] = {0.f, 0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f};
  const float mul = 0.999999f;
  const float add = 1e-6f;
  for (std::uint64_t it = 0; it < iterations; ++it)
    for (float& a : acc) a = a * mul + add;
  return acc[0] + acc[1] + acc[2] + acc[3] + acc[4] + acc[5] + acc[6] + acc[7];
}

}  // namespace quarry::bench::detail
