// Page tables of a decode batch laid out in order or scattered over the pool: what the paged
// attention benchmarks (CPU and CUDA) compare, paged against contiguous pages.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include <quarry/kv/paged_attention.hpp>

namespace quarry::bench {

/// A batch's page table in CSR form, owning its arrays (PageTableCsr's fields).
struct BatchPageTable {
  std::vector<std::int32_t> indptr, indices, last;
  /// A view of the arrays, valid while this table lives.
  PageTableCsr csr() const { return {indptr, indices, last}; }
};

/// `batch` sequences of `context` tokens over a pool of exactly their pages, `page_size` tokens
/// each: in order (sequence b's pages b * per .. (b + 1) * per - 1) or, when `shuffled`, a random
/// permutation of the pool drawn from `seed`.
inline BatchPageTable make_batch_page_table(std::int64_t batch, std::int64_t context, std::int64_t page_size, bool shuffled,
                                            std::uint32_t seed) {
  BatchPageTable s;
  const std::int64_t per = (context + page_size - 1) / page_size;
  std::vector<std::int32_t> order(static_cast<std::size_t>(batch * per));
  std::iota(order.begin(), order.end(), 0);
  if (shuffled) std::shuffle(order.begin(), order.end(), std::mt19937(seed));
  s.indptr.push_back(0);
  for (std::int64_t b = 0; b < batch; ++b) {
    for (std::int64_t p = 0; p < per; ++p) s.indices.push_back(order[static_cast<std::size_t>(b * per + p)]);
    s.indptr.push_back(static_cast<std::int32_t>(s.indices.size()));
    s.last.push_back(static_cast<std::int32_t>(context - (per - 1) * page_size));
  }
  return s;
}

}  // namespace quarry::bench
