// The walk of the read_blocks_* yardstick loops, included by each ISA's translation unit. Its
// functions have internal linkage (static), so each unit keeps its own copy, compiled with its
// own flags (see peak_kernels.hpp).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

namespace quarry::bench::detail {

/// Walks blocks[0..count) of `block_bytes` bytes (a multiple of 512; block b at data + b *
/// block_bytes) two at a time, side by side, as the kv decode kernels read pages: 512 bytes of
/// one, then of the other; read(p) sums the 512 bytes at p. Meanwhile it asks for the pair
/// `ahead` blocks on (at least the next pair) into L2, 512 bytes per 512 read. (A plain sum of
/// shuffled 16 KiB blocks on Zen 4: 16-23% faster than one block after the other.)
template <class Read>
static void walk_block_pairs(const std::byte* data, const std::uint32_t* blocks, std::size_t count, std::size_t block_bytes,
                             std::size_t ahead, Read&& read) noexcept {
  const std::size_t lead = std::max<std::size_t>(2, (ahead + 1) / 2 * 2);
  auto at = [&](std::size_t j) -> const std::byte* { return j < count ? data + std::size_t{blocks[j]} * block_bytes : nullptr; };
  for (std::size_t j = 0; j < count; j += 2) {
    const std::byte* const p[2] = {at(j), at(j + 1)};
    const std::byte* const next[2] = {at(j + lead), at(j + lead + 1)};
    for (std::size_t i = 0; i < block_bytes; i += 512)
      for (int w = 0; w < 2; ++w) {
        if (p[w] == nullptr) continue;
        if (next[w] != nullptr)
          for (std::size_t l = 0; l < 512; l += 64) __builtin_prefetch(next[w] + i + l, 0, 2);  // prefetcht1
        read(p[w] + i);
      }
  }
}

}  // namespace quarry::bench::detail
