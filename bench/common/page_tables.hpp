// Page tables of a decode batch laid out in order, scattered over the pool, or as a BlockPool
// hands the pages out (fresh, or while other requests come and go): what the paged attention
// benchmarks (CPU and CUDA) compare, paged against contiguous pages.
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

/// `batch` sequences of `context` tokens grown in step (a page each in turn, as when they decode
/// together) in a BlockPool of exactly their pages (default options: extent_pages 8; accounts
/// only), as it hands them out. With others_share > 0, other requests keep taking and freeing
/// pages meanwhile, as in a server that batches requests as they come: while they hold less than
/// others_share of the pages the batch does not, new requests start, each with a prompt of 1 to 32
/// pages (at once) and then 1 to 64 pages more, a page at a time with probability 1/2 per step,
/// ending when done; when a batch sequence needs a page and none is free, one of them (at random,
/// from `seed`) is ended, as a scheduler preempts a request.
inline BatchPageTable grown_batch_page_table(std::int64_t batch, std::int64_t context, std::int64_t page_size, double others_share,
                                             std::uint32_t seed) {
  const std::int64_t per = (context + page_size - 1) / page_size;
  BlockPoolOptions o;
  o.page_size = page_size;
  o.num_pages = batch * per;
  o.max_sequence_length = std::max<std::int64_t>(context, (32 + 64) * page_size);  // the others: at most 32 + 64 pages
  o.host_storage = false;
  BlockPool pool = BlockPool::create(o).value();
  std::mt19937 rng(seed);
  const auto uniform = [&](std::int64_t lo, std::int64_t hi) { return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng); };
  struct Request {
    SequenceId id;
    std::int64_t pages, left;  // pages held, pages still to come
  };
  std::vector<Request> others;
  std::int64_t others_pages = 0, batch_pages = 0;
  const auto end_other = [&](std::size_t i) {
    if (!pool.release(others[i].id).ok()) throw std::logic_error("grown_batch_page_table: release failed");
    others_pages -= others[i].pages;
    others[i] = others.back();
    others.pop_back();
  };
  const auto grow = [&](SequenceId s, std::int64_t tokens) {
    if (!pool.append(s, tokens).ok()) throw std::logic_error("grown_batch_page_table: append failed");
  };
  std::vector<SequenceId> seqs;
  for (std::int64_t b = 0; b < batch; ++b) seqs.push_back(pool.create());
  for (std::int64_t p = 0; p < per; ++p) {
    for (const SequenceId s : seqs) {
      if (pool.free_pages() == 0) end_other(static_cast<std::size_t>(uniform(0, static_cast<std::int64_t>(others.size()) - 1)));
      grow(s, std::min(page_size, context - p * page_size));
      ++batch_pages;
    }
    for (std::size_t i = 0; i < others.size();) {
      Request& r = others[i];
      if (r.left == 0) {
        end_other(i);
        continue;
      }
      if (uniform(0, 1) == 1 && pool.free_pages() > 0) {
        grow(r.id, page_size);
        ++r.pages, --r.left, ++others_pages;
      }
      ++i;
    }
    while (pool.free_pages() > 0 && static_cast<double>(others_pages) < others_share * static_cast<double>(o.num_pages - batch_pages)) {
      const std::int64_t prompt = std::min(uniform(1, 32), pool.free_pages());
      others.push_back({pool.create(), prompt, uniform(1, 64)});
      grow(others.back().id, prompt * page_size);
      others_pages += prompt;
    }
  }
  const BlockPool::Table t = pool.page_table(seqs).value();
  return {t.indptr, t.indices, t.last_page_len};
}

/// The batch's pages as a fresh BlockPool hands them out (grown_batch_page_table, nobody else in
/// the pool): each sequence's pages come in runs of 8.
inline BatchPageTable pool_batch_page_table(std::int64_t batch, std::int64_t context, std::int64_t page_size) {
  return grown_batch_page_table(batch, context, page_size, 0.0, 0);
}

/// The batch's pages as a BlockPool hands them out while other requests hold up to 3/4 of the
/// pages the batch does not (grown_batch_page_table). Their pages come back one request at a time,
/// wherever the pool had put them, so the batch's runs are shorter than from a fresh pool.
inline BatchPageTable churned_batch_page_table(std::int64_t batch, std::int64_t context, std::int64_t page_size, std::uint32_t seed) {
  return grown_batch_page_table(batch, context, page_size, 0.75, seed);
}

/// The mean length of the runs of consecutive pages in a table's sequences.
inline double mean_page_run(const BatchPageTable& t) {
  std::int64_t runs = 0;
  for (std::size_t s = 0; s + 1 < t.indptr.size(); ++s)
    for (std::int32_t i = t.indptr[s]; i < t.indptr[s + 1]; ++i)
      runs += i == t.indptr[s] || t.indices[static_cast<std::size_t>(i)] != t.indices[static_cast<std::size_t>(i) - 1] + 1;
  return runs == 0 ? 0.0 : static_cast<double>(t.indices.size()) / static_cast<double>(runs);
}

}  // namespace quarry::bench
