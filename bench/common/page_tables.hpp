// Page tables of a decode batch laid out in order, scattered over the pool, or as a BlockPool
// hands the pages out: what the paged attention benchmarks (CPU and CUDA) compare, paged
// against contiguous pages.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <stdexcept>
#include <vector>

#include <quarry/kv/block_pool.hpp>
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

/// `batch` sequences of `context` tokens as a fresh BlockPool of exactly their pages (default
/// options: extent_pages 8; accounts only) hands them out when the sequences grow together, a
/// page each in turn, as when they decode in step: each sequence's pages come in runs of 8.
inline BatchPageTable pool_batch_page_table(std::int64_t batch, std::int64_t context, std::int64_t page_size) {
  const std::int64_t per = (context + page_size - 1) / page_size;
  BlockPoolOptions o;
  o.page_size = page_size;
  o.num_pages = batch * per;
  o.max_sequence_length = std::max<std::int64_t>(context, 1);
  o.host_storage = false;
  BlockPool pool = BlockPool::create(o).value();
  std::vector<SequenceId> seqs;
  for (std::int64_t b = 0; b < batch; ++b) seqs.push_back(pool.create());
  for (std::int64_t p = 0; p < per; ++p)
    for (const SequenceId s : seqs)
      if (!pool.append(s, std::min(page_size, context - p * page_size)).ok()) throw std::logic_error("pool_batch_page_table: append failed");
  const BlockPool::Table t = pool.page_table(seqs).value();
  return {t.indptr, t.indices, t.last_page_len};
}

}  // namespace quarry::bench
