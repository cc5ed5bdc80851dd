// BlockPool: the paged K/V cache of a transformer (issue 5): fixed-size pages of page_size
// tokens holding K and V for every layer, handed out to sequences through block tables, with
// copy-on-write sharing (fork) and reference counts.
//
// Storage. A page number names one page in every layer: layer l's K pages are a tensor
// [num_pages, n_kv_heads, page_size, head_dim] (the layout paged_decode_attention reads, see
// quarry/kv/paged_attention.hpp), and so are its V pages. Element types:
//   - f32, f16, bf16: stored as given (converted to f16/bf16), read back widened to f32;
//   - i8: one f32 scale per token and head (symmetric: scale = max |x| / 127,
//     q = clamp(round(x * 127 / max |x|), -127, 127)); k_pages_int8() gives values and scales.
//     Half an f16 cache plus 4 bytes per token and head;
//   - i4: packed two per byte (low nibble first; head_dim even) with one f32 scale per group of
//     int4_group consecutive elements of a token and head (symmetric: scale = max |x| / 7 over
//     the group, q = clamp(round(x * 7 / max |x|), -8, 7)); k_pages_int4() gives values and
//     scales [num_pages, n_kv_heads, page_size, head_dim / int4_group]. A quarter of an f16
//     cache plus 4 bytes per group (head_dim 128, group 32: 0.31 of f16).
// Quantized rows (i8) and groups (i4) follow quarry's per-row activation quantizer
// (quarry/quant/detail/quant_kernels.hpp): rounding to nearest, ties to even; all zeros, or a
// max |x| so small that 127 / max |x| (7 / max |x|) overflows, gives scale 0 and zeros (read
// back as exact zeros, never NaN); a NaN or an infinity anywhere in the row (group) gives scale
// NaN and zeros, so the whole row (group) reads back as NaN and attention over it gives NaN, as
// it would over f32 pages: bad values show, never turn silently into plausible numbers. Every
// page copy (copy-on-write) carries the scales with the values, and a memory_bytes budget
// counts them.
//
// Sequences. create() makes an empty sequence; append(seq, n) makes room for n more tokens
// (allocating pages as the last one fills); write(seq, layer, pos, k, v) stores one token's K/V
// [n_kv_heads, head_dim] of one layer; fork(seq) makes a sequence that shares every page of
// seq (reference counts go up; nothing is copied); the first write to a shared page copies it
// (all layers) for the writer ("copy on write"), as does an append that lands in a shared,
// partially filled last page. truncate(seq, n) keeps the first n tokens (speculative decoding
// rollback) and releases pages no longer used; release(seq) frees the sequence. page_table()
// builds the CSR table of a batch of sequences for the attention kernels. A sequence's new page
// is the one after its last when free, else the first free one of the extent of extent_pages
// pages with the most free pages, so that sequences growing together still get their pages side
// by side in runs, which attention reads faster than scattered pages; nothing is reserved
// (BlockPoolOptions::extent_pages).
//
// Storage elsewhere. With options.host_storage false the pool holds no K/V, only the accounts:
// a storage that lives elsewhere (a GPU's memory: CudaKvCache) gets the slots of the rows to
// write from prepare_write and the page copies that copy-on-write needs from take_page_copies,
// which is vLLM's split between its block manager and its cache engine.
//
// Errors are statuses, never aborts: an unknown or released sequence, a position out of range,
// a pool with no free page (out_of_memory; nothing is changed by the failed call).
//
// Prefix cache. publish(seq, tokens) registers the full pages of a sequence whose K/V are
// computed, each keyed by a hash of (its parent page's key, its token ids); create(tokens)
// starts a sequence on the longest chain of cached pages that matches the prompt (keys and the
// token ids themselves compared: a hash collision cannot alias), sharing them, so only the rest
// needs computing; it leaves at least one token uncached (the model needs the last token's
// output). A cached page whose last reference goes stays cached, "evictable"; when no free page
// is left, the least recently used evictable page is taken (evicted). Writing to a cached page
// removes it from the cache first (or copies it when shared). prefix_stats() counts hits,
// misses and evictions.
//
// Thread safety: a BlockPool has no locks and no hidden mutable state (no lazy caches, no
// mutable members); the standard library's rule for containers holds:
//   - const member functions (options, num_pages, free_pages, evictable_pages,
//     available_pages, page_bytes, ref_count, is_cached, prefix_stats, length, pages, read,
//     page_table, k_pages, v_pages, k_pages_int8, v_pages_int8, k_pages_int4, v_pages_int4)
//     may run concurrently with each other, from any number of threads;
//   - the mutating ones (both create, publish, fork, append, truncate, release, write,
//     prepare_write, take_page_copies, and move assignment) need exclusive access: no other
//     call of any kind on the same pool may run at the same time. A scheduler that shares
//     one pool between threads holds a mutex around every call (tests/kv/test_kv_threads.cpp
//     does so);
//   - attention reading a pool's pages (paged_decode_attention over the k_pages* / v_pages*
//     views with page_table() tables, also with params.pool) may run from many threads at
//     once, and beside the const calls above, as long as no mutating call runs meanwhile: a
//     mutation may rewrite page contents and scales, or hand a page to another sequence, under
//     the reader (tests/kv/test_kv_threads.cpp checks these results against one thread's).
// The views point into storage allocated once by create(options), which moves with the pool;
// they stay valid (though not unchanged) while the pool lives. A Table is a copy that goes
// stale, not invalid, when the pool changes; the span pages(seq) is valid until the next
// mutating call.
#pragma once

#include <cstdint>
#include <list>
#include <span>
#include <unordered_map>
#include <utility>
#include <vector>

#include "quarry/core/aligned_buffer.hpp"
#include "quarry/core/dtype.hpp"
#include "quarry/core/float16.hpp"
#include "quarry/core/status.hpp"
#include "quarry/core/tensor.hpp"
#include "quarry/kv/detail/free_pages.hpp"
#include "quarry/kv/paged_attention.hpp"

namespace quarry {

/// The shape of a pool, fixed at creation.
struct BlockPoolOptions {
  std::int64_t num_layers = 1;     ///< transformer layers (each page holds K and V of all)
  std::int64_t n_kv_heads = 1;     ///< K/V heads per layer
  std::int64_t head_dim = 64;      ///< elements per head and token
  /// Tokens per page (>= 1). Larger pages waste more of a sequence's last page but read faster
  /// when a busy pool has scattered them (CPU decode, INT8 and f16, 1 or 16 sequences x 16k tokens on
  /// Zen 4, in a pool that other requests keep taking and freeing: 16 tokens 0.90-0.97 of the speed
  /// over one contiguous buffer, worst row to median, 32 tokens 0.96-0.98; bench_paged_attention
  /// --page-size).
  std::int64_t page_size = 16;
  DType dtype = DType::f16;        ///< f32, f16, bf16, i8 (a scale per token and head) or i4 (a scale per group)
  /// i4 only: elements per scale along head_dim (consecutive elements of a token and head); it
  /// must divide head_dim. Ignored for other dtypes.
  std::int64_t int4_group = 32;
  std::int64_t num_pages = 0;      ///< pages; 0: as many as memory_bytes holds
  std::int64_t memory_bytes = 0;   ///< budget for K and V of all layers when num_pages is 0
  std::int64_t max_sequence_length = std::int64_t{1} << 20;  ///< append beyond this is an error
  /// Where a sequence's new page comes from: the page after its last one when free, else the
  /// first free page of the extent (pages k * extent_pages onwards) with the most free pages, a
  /// wholly free one when there is one; so that a sequence's pages lie side by side in runs of
  /// extent_pages or more, which attention reads faster than pages scattered one by one (INT8
  /// pages of 16 tokens, 16 sequences x 16k tokens, on Zen 4: decode about 3% slower than over
  /// one contiguous buffer in runs of 8 pages, 4-5% in runs of 4, 13-15% one by one), and in a
  /// pool that other sequences keep taking and freeing, runs where the freed pages allow.
  /// Nothing is reserved: any free page can go to any sequence. 1: the last freed page first.
  /// 1 .. 64.
  std::int64_t extent_pages = 8;
  /// false: the pool only keeps the accounts (pages, block tables, reference counts, the prefix
  /// cache) and holds no K/V itself: the pages live elsewhere, e.g. in a CudaKvCache on a GPU
  /// (quarry/kv/cuda_kv_cache.hpp), whose owner asks for rows with prepare_write and applies the
  /// copy-on-write copies that take_page_copies hands over. write, read and the page views are
  /// then errors. A memory_bytes budget still sizes the pages (of the storage elsewhere).
  bool host_storage = true;
};

/// A sequence handle (an index into the pool's sequence slots; reused after release).
using SequenceId = std::int64_t;

/// The paged K/V cache: fixed-size pages handed out to sequences through block tables, shared
/// by forks (copy-on-write) and by a prefix cache; see the top of this header.
class BlockPool {
 public:
  /// A pool for `options`. Errors: a dtype other than f32/f16/bf16/i8/i4, sizes < 1, for i4 an
  /// odd head_dim or an int4_group < 1 or not dividing head_dim, no budget, a budget too small
  /// for one page (scales included), sizes that overflow.
  static result<BlockPool> create(const BlockPoolOptions& options);

  /// Moves the pool (its storage and every sequence); views into it stay valid.
  ///@{
  BlockPool(BlockPool&&) noexcept = default;
  BlockPool& operator=(BlockPool&&) noexcept = default;
  ///@}

  const BlockPoolOptions& options() const noexcept { return opts_; }  ///< the options it was created with
  std::int64_t num_pages() const noexcept { return opts_.num_pages; }  ///< pages in all
  std::int64_t free_pages() const noexcept { return free_.size(); }  ///< pages held by nothing
  /// Bytes of one page's values in one layer for K (V the same); i8/i4 scales not included.
  std::int64_t page_bytes() const noexcept { return page_bytes_; }
  /// References held on page p (0: free).
  std::int32_t ref_count(std::int32_t page) const noexcept { return refs_[static_cast<std::size_t>(page)]; }

  /// Pages neither free nor in use: cached, and taken (evicted) when no free page is left.
  std::int64_t evictable_pages() const noexcept { return static_cast<std::int64_t>(lru_.size()); }
  /// Pages an append can still get: free_pages() + evictable_pages().
  std::int64_t available_pages() const noexcept { return free_pages() + evictable_pages(); }
  /// True when page p is in the prefix cache.
  bool is_cached(std::int32_t page) const noexcept { return cached_[static_cast<std::size_t>(page)] != 0; }

  /// A new, empty sequence.
  SequenceId create();

  /// What create(tokens) found.
  struct PrefixMatch {
    SequenceId seq = -1;             ///< the new sequence
    std::int64_t cached_tokens = 0;  ///< tokens whose K/V came from the cache (a multiple of page_size)
  };
  /// A new sequence holding the longest chain of cached full pages that starts `prompt` (at
  /// most (prompt.size() - 1) / page_size pages), shared; the caller appends and computes the
  /// tokens from cached_tokens on.
  PrefixMatch create(std::span<const std::int32_t> prompt);
  /// Registers the full pages of `seq` in the prefix cache; `tokens` are all its token ids
  /// (size == length(seq)). Pages already cached, or whose content another page already holds
  /// in the cache, are left as they are. Errors: unknown sequence, a size mismatch.
  status publish(SequenceId seq, std::span<const std::int32_t> tokens);

  /// Counters of the prefix cache since creation.
  struct PrefixStats {
    std::int64_t hit_pages = 0;    ///< pages create(prompt) took from the cache
    std::int64_t miss_pages = 0;   ///< full pages of those prompts it did not find
    std::int64_t evictions = 0;    ///< cached pages taken for other contents
    std::int64_t cached_pages = 0; ///< pages in the cache now
  };
  /// The prefix cache's counters now.
  PrefixStats prefix_stats() const noexcept {
    PrefixStats s = stats_;
    s.cached_pages = static_cast<std::int64_t>(cache_.size());
    return s;
  }
  /// A new sequence sharing every page (and token) of `seq`.
  result<SequenceId> fork(SequenceId seq);
  /// Room for n more tokens at the end of `seq`. Errors: unknown sequence, out_of_memory (no
  /// page changes), beyond max_sequence_length.
  status append(SequenceId seq, std::int64_t n);
  /// Keeps the first n tokens of `seq` (n <= length), releasing the pages past them.
  status truncate(SequenceId seq, std::int64_t n);
  /// Frees `seq`: its page references are dropped and the handle becomes unknown.
  status release(SequenceId seq);

  /// Tokens of `seq`; -1 for an unknown sequence.
  std::int64_t length(SequenceId seq) const noexcept;
  /// The pages of `seq` in token order (empty for an unknown one).
  std::span<const std::int32_t> pages(SequenceId seq) const noexcept;

  /// Stores the K and V of token `pos` of `seq` in `layer` (each n_kv_heads * head_dim values,
  /// head-major), converting to the pool's dtype (quantizing for i8/i4, see the top of this
  /// file); copies a shared page first. Errors: unknown sequence, pos not in [0, length), layer
  /// out of range, wrong sizes, out_of_memory (a copy).
  status write(SequenceId seq, std::int64_t layer, std::int64_t pos, std::span<const float> k, std::span<const float> v);
  /// Reads them back as f32, dequantized for i8/i4 (for tests and debugging).
  status read(SequenceId seq, std::int64_t layer, std::int64_t pos, std::span<float> k, std::span<float> v) const;

  /// For storage outside the pool (host_storage false, or any pool): rows [pos, pos + count) of
  /// `seq` are about to be written. Their pages are made exclusive as write() would (a shared
  /// page is copied: a PageCopy is recorded for take_page_copies when host_storage is false; a
  /// cached one leaves the cache), and their slots are returned, slot = page * page_size + pos %
  /// page_size, the row of a token within a layer's [num_pages * page_size] rows of a head.
  /// Errors: unknown sequence, [pos, pos + count) not within [0, length), out_of_memory (a copy;
  /// the pages made exclusive before it stay so).
  result<std::vector<std::int64_t>> prepare_write(SequenceId seq, std::int64_t pos, std::int64_t count);
  /// A page copy the storage must make: page `dst` of every layer's K and V (and their scales)
  /// gets the contents of page `src`.
  struct PageCopy {
    std::int32_t src = 0, dst = 0;
  };
  /// The copies recorded since the last call (host_storage false; in the order made), handed
  /// over and forgotten. The storage applies them in order, after the prepare_write calls that
  /// made them and before it writes those calls' rows or attention reads the pages; and it
  /// writes the rows of a prepare_write before the pool's next mutating call (which may copy,
  /// share or hand over the page).
  std::vector<PageCopy> take_page_copies() { return std::exchange(copies_, {}); }

  /// The CSR page table of `batch` (in order), as paged_decode_attention takes it. The Table owns
  /// its vectors: it describes the pool as it is now and goes stale (not invalid) when a call
  /// changes the sequences' pages. Errors: an unknown sequence.
  struct Table {
    /// As PageTableCsr's fields: page ranges per sequence, page numbers, tokens in last pages.
    ///@{
    std::vector<std::int32_t> indptr, indices, last_page_len;
    ///@}
    /// The table as the spans the attention calls take (valid while this Table lives).
    PageTableCsr csr() const { return {indptr, indices, last_page_len}; }
  };
  /// The Table of `batch`; see Table.
  result<Table> page_table(std::span<const SequenceId> batch) const;

  /// Layer l's K (or V) pages as a tensor view [num_pages, n_kv_heads, page_size, head_dim] of T
  /// (T must be the pool's dtype; throws otherwise). For i8 and i4 these are the values without
  /// their scales: attention takes k_pages_int8 / k_pages_int4.
  ///@{
  template <class T>
  TensorView<const T> k_pages(std::int64_t layer) const {
    return pages_view<T>(layer, 0);
  }
  template <class T>
  TensorView<const T> v_pages(std::int64_t layer) const {
    return pages_view<T>(layer, 1);
  }
  ///@}
  /// Layer l's INT8 K (or V) pages with their scales (the pool's dtype must be i8).
  ///@{
  Int8KvPages k_pages_int8(std::int64_t layer) const { return int8_view(layer, 0); }
  Int8KvPages v_pages_int8(std::int64_t layer) const { return int8_view(layer, 1); }
  ///@}
  /// Layer l's INT4 K (or V) pages with their group scales (the pool's dtype must be i4; throws
  /// otherwise), as paged_decode_attention's INT4 overload takes them.
  ///@{
  Int4KvPages k_pages_int4(std::int64_t layer) const { return int4_view(layer, 0); }
  Int4KvPages v_pages_int4(std::int64_t layer) const { return int4_view(layer, 1); }
  ///@}

 private:
  struct Sequence {
    bool live = false;
    std::int64_t length = 0;
    std::vector<std::int32_t> pages;
  };
  BlockPool() = default;
  const Sequence* find(SequenceId seq) const noexcept;
  Sequence* find(SequenceId seq) noexcept;
  std::byte* page_ptr(std::int64_t layer, int kv, std::int32_t page) const noexcept;
  /// The n_kv_heads * page_size * scales_per_row_ scales of a page (i8 and i4 pools).
  float* scale_ptr(std::int64_t layer, int kv, std::int32_t page) const noexcept;
  /// Throws unless the pool holds `t` pages and `layer` is one of its layers.
  void check_view(DType t, std::int64_t layer) const;
  Int8KvPages int8_view(std::int64_t layer, int kv) const;
  Int4KvPages int4_view(std::int64_t layer, int kv) const;
  /// Makes page slot i of `s` exclusively owned (copying when shared); out_of_memory when no page is free.
  status make_exclusive(Sequence& s, std::size_t i);
  void drop(std::int32_t page) noexcept;
  /// A page for new contents (ref count 1): a free one (FreePages::take, following `after`, the
  /// sequence's page before it; -1: none), else the least recently used evictable one; -1 when
  /// there is none.
  std::int32_t take_page(std::int32_t after);
  void uncache(std::int32_t page);
  std::uint64_t page_key(std::uint64_t parent, std::span<const std::int32_t> tokens) const noexcept;

  struct CacheEntry {
    std::int32_t page = -1;
    std::uint64_t parent = 0;
    std::vector<std::int32_t> tokens;
  };
  template <class T>
  TensorView<const T> pages_view(std::int64_t layer, int kv) const;

  BlockPoolOptions opts_;
  std::int64_t page_bytes_ = 0;  // one page of one layer, K or V
  std::int64_t row_bytes_ = 0;   // one token of one head: head_dim values
  std::int64_t scales_per_row_ = 0;  // per token and head: 1 (i8), head_dim / int4_group (i4), 0
  AlignedBuffer storage_;        // [num_layers][2][num_pages][page_bytes]
  AlignedBuffer scales_;         // i8/i4: [num_layers][2][num_pages][n_kv_heads][page_size][scales_per_row] f32
  std::vector<PageCopy> copies_;  // host_storage false: copies not yet handed over
  std::vector<std::int32_t> refs_;
  detail::FreePages free_;
  std::vector<Sequence> seqs_;
  std::vector<SequenceId> free_ids_;
  // Prefix cache: key -> entry; per page, whether cached and its key; idle cached pages in LRU
  // order (front: least recently used) with each one's position.
  std::unordered_map<std::uint64_t, CacheEntry> cache_;
  std::vector<std::uint8_t> cached_;
  std::vector<std::uint64_t> key_of_;
  std::list<std::int32_t> lru_;
  std::vector<std::list<std::int32_t>::iterator> lru_pos_;
  PrefixStats stats_;
};

template <class T>
TensorView<const T> BlockPool::pages_view(std::int64_t layer, int kv) const {
  check_view(dtype_of<T>, layer);
  using storage = typename TensorView<const T>::storage_type;  // uint8_t for packed int4
  return TensorView<const T>(reinterpret_cast<storage*>(page_ptr(layer, kv, 0)),
                             Shape{opts_.num_pages, opts_.n_kv_heads, opts_.page_size, opts_.head_dim});
}

}  // namespace quarry
