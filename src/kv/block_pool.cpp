#include "quarry/kv/block_pool.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <new>

#include <fmt/format.h>

#include "quarry/core/checked.hpp"

namespace quarry {

result<BlockPool> BlockPool::create(const BlockPoolOptions& o) {
  std::int64_t elem = 0;
  switch (o.dtype) {
    case DType::f32: elem = 4; break;
    case DType::f16:
    case DType::bf16: elem = 2; break;
    case DType::i8: elem = 1; break;
    default:
      return status(errc::invalid_argument, fmt::format("BlockPool: pages of {} are not supported; f32, f16, bf16 or i8", dtype_name(o.dtype)));
  }
  if (o.num_layers < 1 || o.n_kv_heads < 1 || o.head_dim < 1 || o.page_size < 1)
    return status(errc::invalid_argument, fmt::format("BlockPool: num_layers {}, n_kv_heads {}, head_dim {}, page_size {}: each must be >= 1",
                                                      o.num_layers, o.n_kv_heads, o.head_dim, o.page_size));
  if (o.max_sequence_length < 1) return status(errc::invalid_argument, "BlockPool: max_sequence_length must be >= 1");
  auto page = checked_mul(o.n_kv_heads, o.head_dim);
  if (page) page = checked_mul(*page, o.page_size);
  if (page) page = checked_mul(*page, elem);
  if (!page) return status(errc::out_of_range, "BlockPool: the page size in bytes overflows");
  BlockPoolOptions opts = o;
  // i8 pages carry a f32 scale per token and head.
  const std::int64_t scale_bytes = o.dtype == DType::i8 ? o.n_kv_heads * o.page_size * 4 : 0;
  auto per_page_all = checked_mul(*page + scale_bytes, 2 * o.num_layers);  // K and V of every layer
  if (!per_page_all) return status(errc::out_of_range, "BlockPool: the bytes per page over all layers overflow");
  if (opts.num_pages == 0) {
    if (o.memory_bytes <= 0) return status(errc::invalid_argument, "BlockPool: give num_pages or a memory_bytes budget");
    opts.num_pages = o.memory_bytes / *per_page_all;
    if (opts.num_pages < 1)
      return status(errc::invalid_argument, fmt::format("BlockPool: a budget of {} bytes holds no page of {} bytes (K and V of {} layers)",
                                                        o.memory_bytes, *per_page_all, o.num_layers));
  }
  if (opts.num_pages < 0 || opts.num_pages > 0x7fffffff)
    return status(errc::invalid_argument, fmt::format("BlockPool: num_pages {}; it must be 1..2^31-1", opts.num_pages));
  const auto total = checked_mul(*page * 2 * o.num_layers, opts.num_pages);
  const auto total_scales = checked_mul(scale_bytes * 2 * o.num_layers, opts.num_pages);
  if (!total || !total_scales) return status(errc::out_of_range, "BlockPool: the pool's size in bytes overflows");
  BlockPool p;
  p.opts_ = opts;
  p.page_bytes_ = *page;
  p.elem_bytes_ = elem;
  try {
    p.storage_ = AlignedBuffer(static_cast<std::size_t>(*total));
    if (*total_scales > 0) p.scales_ = AlignedBuffer(static_cast<std::size_t>(*total_scales));
  } catch (const std::bad_alloc&) {
    return status(errc::out_of_memory, fmt::format("BlockPool: {} bytes for {} pages", *total, opts.num_pages));
  }
  p.refs_.assign(static_cast<std::size_t>(opts.num_pages), 0);
  p.cached_.assign(static_cast<std::size_t>(opts.num_pages), 0);
  p.key_of_.assign(static_cast<std::size_t>(opts.num_pages), 0);
  p.lru_pos_.resize(static_cast<std::size_t>(opts.num_pages));
  p.free_.reserve(static_cast<std::size_t>(opts.num_pages));
  for (std::int64_t i = opts.num_pages - 1; i >= 0; --i) p.free_.push_back(static_cast<std::int32_t>(i));  // page 0 handed out first
  return p;
}

const BlockPool::Sequence* BlockPool::find(SequenceId seq) const noexcept {
  if (seq < 0 || seq >= static_cast<SequenceId>(seqs_.size()) || !seqs_[static_cast<std::size_t>(seq)].live) return nullptr;
  return &seqs_[static_cast<std::size_t>(seq)];
}
BlockPool::Sequence* BlockPool::find(SequenceId seq) noexcept {
  return const_cast<Sequence*>(std::as_const(*this).find(seq));
}

std::byte* BlockPool::page_ptr(std::int64_t layer, int kv, std::int32_t page) const noexcept {
  auto* base = const_cast<std::byte*>(storage_.data());
  return base + ((layer * 2 + kv) * opts_.num_pages + page) * page_bytes_;
}

float* BlockPool::scale_ptr(std::int64_t layer, int kv, std::int32_t page) const noexcept {
  auto* base = reinterpret_cast<float*>(const_cast<std::byte*>(scales_.data()));
  return base + ((layer * 2 + kv) * opts_.num_pages + page) * opts_.n_kv_heads * opts_.page_size;
}

Int8KvPages BlockPool::int8_view(std::int64_t layer, int kv) const {
  if (opts_.dtype != DType::i8)
    throw_error(errc::invalid_argument, fmt::format("BlockPool holds {} pages, not i8", dtype_name(opts_.dtype)));
  if (layer < 0 || layer >= opts_.num_layers) throw_error(errc::out_of_range, fmt::format("BlockPool: layer {} of {}", layer, opts_.num_layers));
  const Shape vs{opts_.num_pages, opts_.n_kv_heads, opts_.page_size, opts_.head_dim};
  return {TensorView<const std::int8_t>(reinterpret_cast<const std::int8_t*>(page_ptr(layer, kv, 0)), vs),
          TensorView<const float>(scale_ptr(layer, kv, 0), Shape{opts_.num_pages, opts_.n_kv_heads, opts_.page_size})};
}

void BlockPool::drop(std::int32_t page) noexcept {
  const auto i = static_cast<std::size_t>(page);
  if (--refs_[i] != 0) return;
  if (cached_[i]) lru_pos_[i] = lru_.insert(lru_.end(), page);  // most recently used at the back
  else free_.push_back(page);
}

std::int32_t BlockPool::take_page() {
  std::int32_t page = -1;
  if (!free_.empty()) {
    page = free_.back();
    free_.pop_back();
  } else if (!lru_.empty()) {
    page = lru_.front();
    lru_.pop_front();
    uncache(page);
    ++stats_.evictions;
  } else {
    return -1;
  }
  refs_[static_cast<std::size_t>(page)] = 1;
  return page;
}

void BlockPool::uncache(std::int32_t page) {
  const auto i = static_cast<std::size_t>(page);
  if (!cached_[i]) return;
  cache_.erase(key_of_[i]);
  cached_[i] = 0;
}

std::uint64_t BlockPool::page_key(std::uint64_t parent, std::span<const std::int32_t> tokens) const noexcept {
  // FNV-1a over the parent key and the token ids, then a splitmix64 finish.
  std::uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&h](std::uint64_t v) {
    for (int b = 0; b < 8; ++b) {
      h ^= (v >> (8 * b)) & 0xff;
      h *= 0x100000001b3ull;
    }
  };
  mix(parent);
  for (const std::int32_t t : tokens) mix(static_cast<std::uint32_t>(t));
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  return h ^ (h >> 31);
}

BlockPool::PrefixMatch BlockPool::create(std::span<const std::int32_t> prompt) {
  PrefixMatch m;
  m.seq = create();
  if (prompt.empty()) return m;
  const std::int64_t ps = opts_.page_size;
  const std::int64_t full = (static_cast<std::int64_t>(prompt.size()) - 1) / ps;  // keep one token to compute
  Sequence& s = seqs_[static_cast<std::size_t>(m.seq)];
  std::uint64_t parent = 0;
  std::int64_t i = 0;
  for (; i < full; ++i) {
    const auto toks = prompt.subspan(static_cast<std::size_t>(i * ps), static_cast<std::size_t>(ps));
    const std::uint64_t key = page_key(parent, toks);
    const auto it = cache_.find(key);
    if (it == cache_.end() || it->second.parent != parent || !std::equal(toks.begin(), toks.end(), it->second.tokens.begin()))
      break;
    const std::int32_t page = it->second.page;
    const auto pi = static_cast<std::size_t>(page);
    if (refs_[pi] == 0) lru_.erase(lru_pos_[pi]);
    ++refs_[pi];
    s.pages.push_back(page);
    parent = key;
  }
  s.length = i * ps;
  m.cached_tokens = s.length;
  stats_.hit_pages += i;
  stats_.miss_pages += full - i;
  return m;
}

status BlockPool::publish(SequenceId seq, std::span<const std::int32_t> tokens) {
  Sequence* s = find(seq);
  if (s == nullptr) return {errc::invalid_argument, fmt::format("publish: no sequence {}", seq)};
  if (static_cast<std::int64_t>(tokens.size()) != s->length)
    return {errc::shape_mismatch, fmt::format("publish: {} token ids for sequence {} of {} tokens", tokens.size(), seq, s->length)};
  const std::int64_t ps = opts_.page_size;
  std::uint64_t parent = 0;
  for (std::int64_t i = 0; i < s->length / ps; ++i) {
    const auto toks = tokens.subspan(static_cast<std::size_t>(i * ps), static_cast<std::size_t>(ps));
    const std::uint64_t key = page_key(parent, toks);
    const std::int32_t page = s->pages[static_cast<std::size_t>(i)];
    const auto pi = static_cast<std::size_t>(page);
    if (!cached_[pi] && cache_.find(key) == cache_.end()) {
      cache_.emplace(key, CacheEntry{page, parent, std::vector<std::int32_t>(toks.begin(), toks.end())});
      cached_[pi] = 1;
      key_of_[pi] = key;
    }
    parent = key;
  }
  return {};
}

SequenceId BlockPool::create() {
  SequenceId id;
  if (!free_ids_.empty()) {
    id = free_ids_.back();
    free_ids_.pop_back();
  } else {
    id = static_cast<SequenceId>(seqs_.size());
    seqs_.emplace_back();
  }
  Sequence& s = seqs_[static_cast<std::size_t>(id)];
  s.live = true;
  s.length = 0;
  s.pages.clear();
  return id;
}

result<SequenceId> BlockPool::fork(SequenceId seq) {
  if (find(seq) == nullptr) return status(errc::invalid_argument, fmt::format("fork: no sequence {}", seq));
  const SequenceId id = create();  // may reallocate seqs_: look the source up again
  const Sequence& src = *find(seq);
  Sequence& dst = seqs_[static_cast<std::size_t>(id)];
  dst.length = src.length;
  dst.pages = src.pages;
  for (const std::int32_t p : dst.pages) ++refs_[static_cast<std::size_t>(p)];
  return id;
}

status BlockPool::make_exclusive(Sequence& s, std::size_t i) {
  const std::int32_t old = s.pages[i];
  if (refs_[static_cast<std::size_t>(old)] == 1) {
    uncache(old);  // its contents are about to change
    return {};
  }
  const std::int32_t fresh = take_page();
  if (fresh < 0)
    return {errc::out_of_memory, fmt::format("BlockPool: no free page to copy a shared page into ({} pages, all in use)", opts_.num_pages)};
  for (std::int64_t l = 0; l < opts_.num_layers; ++l)
    for (int kv = 0; kv < 2; ++kv) {
      std::memcpy(page_ptr(l, kv, fresh), page_ptr(l, kv, old), static_cast<std::size_t>(page_bytes_));
      if (opts_.dtype == DType::i8)
        std::memcpy(scale_ptr(l, kv, fresh), scale_ptr(l, kv, old), static_cast<std::size_t>(opts_.n_kv_heads * opts_.page_size) * sizeof(float));
    }
  drop(old);
  s.pages[i] = fresh;
  return {};
}

status BlockPool::append(SequenceId seq, std::int64_t n) {
  Sequence* s = find(seq);
  if (s == nullptr) return {errc::invalid_argument, fmt::format("append: no sequence {} (never created, or released)", seq)};
  if (n < 0) return {errc::invalid_argument, fmt::format("append: {} tokens", n)};
  if (n > opts_.max_sequence_length - s->length)
    return {errc::out_of_range, fmt::format("append: sequence {} would hold {} tokens; the pool's maximum is {}", seq, s->length + n,
                                            opts_.max_sequence_length)};
  const std::int64_t ps = opts_.page_size;
  const std::int64_t have = static_cast<std::int64_t>(s->pages.size());
  const std::int64_t need = (s->length + n + ps - 1) / ps - have;
  // A partially filled, shared last page gets new tokens: it must be copied first.
  // New tokens landing in a partially filled last page change it: a shared one is copied first
  // (one more page), a cached one leaves the cache.
  const bool touch_last = n > 0 && s->length % ps != 0;
  const bool copy_last = touch_last && refs_[static_cast<std::size_t>(s->pages.back())] > 1;
  if (need + (copy_last ? 1 : 0) > available_pages())
    return {errc::out_of_memory, fmt::format("append: {} tokens for sequence {} need {} free pages; the pool has {} ({} free, {} evictable) of {}",
                                             n, seq, need + (copy_last ? 1 : 0), available_pages(), free_pages(), evictable_pages(),
                                             opts_.num_pages)};
  if (touch_last) {
    const status st = make_exclusive(*s, s->pages.size() - 1);
    if (!st.ok()) return st;
  }
  for (std::int64_t i = 0; i < need; ++i) s->pages.push_back(take_page());
  s->length += n;
  return {};
}

status BlockPool::truncate(SequenceId seq, std::int64_t n) {
  Sequence* s = find(seq);
  if (s == nullptr) return {errc::invalid_argument, fmt::format("truncate: no sequence {}", seq)};
  if (n < 0 || n > s->length)
    return {errc::out_of_range, fmt::format("truncate: sequence {} to {} tokens; it holds {}", seq, n, s->length)};
  const std::size_t keep = static_cast<std::size_t>((n + opts_.page_size - 1) / opts_.page_size);
  for (std::size_t i = keep; i < s->pages.size(); ++i) drop(s->pages[i]);
  s->pages.resize(keep);
  s->length = n;
  return {};
}

status BlockPool::release(SequenceId seq) {
  Sequence* s = find(seq);
  if (s == nullptr) return {errc::invalid_argument, fmt::format("release: no sequence {}", seq)};
  for (const std::int32_t p : s->pages) drop(p);
  s->pages.clear();
  s->length = 0;
  s->live = false;
  free_ids_.push_back(seq);
  return {};
}

std::int64_t BlockPool::length(SequenceId seq) const noexcept {
  const Sequence* s = find(seq);
  return s == nullptr ? -1 : s->length;
}

std::span<const std::int32_t> BlockPool::pages(SequenceId seq) const noexcept {
  const Sequence* s = find(seq);
  if (s == nullptr) return {};
  return s->pages;
}

namespace {

// i8: symmetric per row, as quarry's per-row activation quantizer: inv = 127 / amax,
// q = clamp(round_half_even(x * inv)), scale = amax / 127 (0 for a zero row).
void store(DType t, std::byte* dst, std::span<const float> src, float* scale) {
  switch (t) {
    case DType::i8: {
      float amax = 0.f;
      for (const float x : src) amax = std::max(amax, std::fabs(x));
      const float inv = amax > 0.f ? 127.f / amax : 0.f;
      for (std::size_t i = 0; i < src.size(); ++i)
        reinterpret_cast<std::int8_t*>(dst)[i] = static_cast<std::int8_t>(std::clamp(std::nearbyint(src[i] * inv), -127.f, 127.f));
      *scale = amax / 127.f;
      break;
    }
    case DType::f32: std::memcpy(dst, src.data(), src.size() * sizeof(float)); break;
    case DType::f16:
      for (std::size_t i = 0; i < src.size(); ++i) reinterpret_cast<f16*>(dst)[i] = f16(src[i]);
      break;
    default:
      for (std::size_t i = 0; i < src.size(); ++i) reinterpret_cast<bf16*>(dst)[i] = bf16(src[i]);
      break;
  }
}

void load(DType t, const std::byte* src, std::span<float> dst, const float* scale) {
  switch (t) {
    case DType::i8:
      for (std::size_t i = 0; i < dst.size(); ++i) dst[i] = static_cast<float>(reinterpret_cast<const std::int8_t*>(src)[i]) * *scale;
      break;
    case DType::f32: std::memcpy(dst.data(), src, dst.size() * sizeof(float)); break;
    case DType::f16:
      for (std::size_t i = 0; i < dst.size(); ++i) dst[i] = static_cast<float>(reinterpret_cast<const f16*>(src)[i]);
      break;
    default:
      for (std::size_t i = 0; i < dst.size(); ++i) dst[i] = static_cast<float>(reinterpret_cast<const bf16*>(src)[i]);
      break;
  }
}

}  // namespace

status BlockPool::write(SequenceId seq, std::int64_t layer, std::int64_t pos, std::span<const float> k, std::span<const float> v) {
  Sequence* s = find(seq);
  if (s == nullptr) return {errc::invalid_argument, fmt::format("write: no sequence {} (never created, or released)", seq)};
  if (layer < 0 || layer >= opts_.num_layers) return {errc::out_of_range, fmt::format("write: layer {} of {}", layer, opts_.num_layers)};
  if (pos < 0 || pos >= s->length)
    return {errc::out_of_range, fmt::format("write: position {} of sequence {}, which holds {} tokens (append first)", pos, seq, s->length)};
  const std::size_t row = static_cast<std::size_t>(opts_.n_kv_heads * opts_.head_dim);
  if (k.size() != row || v.size() != row)
    return {errc::shape_mismatch, fmt::format("write: k has {} and v {} values; a token of a layer has n_kv_heads * head_dim = {}", k.size(),
                                              v.size(), row)};
  const std::size_t slot = static_cast<std::size_t>(pos / opts_.page_size);
  QUARRY_RETURN_IF_ERROR(make_exclusive(*s, slot));
  const std::int32_t page = s->pages[slot];
  const std::int64_t off = pos % opts_.page_size;
  for (std::int64_t h = 0; h < opts_.n_kv_heads; ++h) {
    const std::int64_t at = ((h * opts_.page_size) + off) * opts_.head_dim * elem_bytes_;
    const auto part = static_cast<std::size_t>(h * opts_.head_dim);
    const std::int64_t si = h * opts_.page_size + off;  // the scale of (head, slot) in an i8 page
    float* ks = opts_.dtype == DType::i8 ? scale_ptr(layer, 0, page) + si : nullptr;
    float* vs = opts_.dtype == DType::i8 ? scale_ptr(layer, 1, page) + si : nullptr;
    store(opts_.dtype, page_ptr(layer, 0, page) + at, k.subspan(part, static_cast<std::size_t>(opts_.head_dim)), ks);
    store(opts_.dtype, page_ptr(layer, 1, page) + at, v.subspan(part, static_cast<std::size_t>(opts_.head_dim)), vs);
  }
  return {};
}

status BlockPool::read(SequenceId seq, std::int64_t layer, std::int64_t pos, std::span<float> k, std::span<float> v) const {
  const Sequence* s = find(seq);
  if (s == nullptr) return {errc::invalid_argument, fmt::format("read: no sequence {}", seq)};
  if (layer < 0 || layer >= opts_.num_layers) return {errc::out_of_range, fmt::format("read: layer {} of {}", layer, opts_.num_layers)};
  if (pos < 0 || pos >= s->length) return {errc::out_of_range, fmt::format("read: position {} of a sequence of {}", pos, s->length)};
  const std::size_t row = static_cast<std::size_t>(opts_.n_kv_heads * opts_.head_dim);
  if (k.size() != row || v.size() != row) return {errc::shape_mismatch, fmt::format("read: k and v must hold {} values", row)};
  const std::int32_t page = s->pages[static_cast<std::size_t>(pos / opts_.page_size)];
  const std::int64_t off = pos % opts_.page_size;
  for (std::int64_t h = 0; h < opts_.n_kv_heads; ++h) {
    const std::int64_t at = ((h * opts_.page_size) + off) * opts_.head_dim * elem_bytes_;
    const auto part = static_cast<std::size_t>(h * opts_.head_dim);
    const std::int64_t si = h * opts_.page_size + off;
    const float* ks = opts_.dtype == DType::i8 ? scale_ptr(layer, 0, page) + si : nullptr;
    const float* vs = opts_.dtype == DType::i8 ? scale_ptr(layer, 1, page) + si : nullptr;
    load(opts_.dtype, page_ptr(layer, 0, page) + at, k.subspan(part, static_cast<std::size_t>(opts_.head_dim)), ks);
    load(opts_.dtype, page_ptr(layer, 1, page) + at, v.subspan(part, static_cast<std::size_t>(opts_.head_dim)), vs);
  }
  return {};
}

result<BlockPool::Table> BlockPool::page_table(std::span<const SequenceId> batch) const {
  Table t;
  t.indptr.push_back(0);
  for (const SequenceId id : batch) {
    const Sequence* s = find(id);
    if (s == nullptr) return status(errc::invalid_argument, fmt::format("page_table: no sequence {}", id));
    t.indices.insert(t.indices.end(), s->pages.begin(), s->pages.end());
    t.indptr.push_back(static_cast<std::int32_t>(t.indices.size()));
    const std::int64_t rem = s->length % opts_.page_size;
    t.last_page_len.push_back(static_cast<std::int32_t>(s->length == 0 ? 0 : (rem == 0 ? opts_.page_size : rem)));
  }
  return t;
}

}  // namespace quarry
