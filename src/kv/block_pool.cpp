#include "quarry/kv/block_pool.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <new>
#include <optional>

#include <fmt/format.h>

#include "quarry/core/checked.hpp"

namespace quarry {

result<BlockPool> BlockPool::create(const BlockPoolOptions& o) {
  switch (o.dtype) {
    case DType::f32:
    case DType::f16:
    case DType::bf16:
    case DType::i8:
    case DType::i4: break;
    default:
      return status(errc::invalid_argument,
                    fmt::format("BlockPool: pages of {} are not supported; f32, f16, bf16, i8 or i4", dtype_name(o.dtype)));
  }
  if (o.num_layers < 1 || o.n_kv_heads < 1 || o.head_dim < 1 || o.page_size < 1)
    return status(errc::invalid_argument, fmt::format("BlockPool: num_layers {}, n_kv_heads {}, head_dim {}, page_size {}: each must be >= 1",
                                                      o.num_layers, o.n_kv_heads, o.head_dim, o.page_size));
  if (o.max_sequence_length < 1) return status(errc::invalid_argument, "BlockPool: max_sequence_length must be >= 1");
  if (o.extent_pages < 1 || o.extent_pages > detail::FreePages::kMaxExtent)
    return status(errc::invalid_argument,
                  fmt::format("BlockPool: extent_pages is {}; it must be in 1 .. {}", o.extent_pages, detail::FreePages::kMaxExtent));
  // Bytes of one token-head row of values, and the f32 scales that go with it.
  std::int64_t elem_bytes = 0, scales_per_row = 0;
  switch (o.dtype) {
    case DType::f32: elem_bytes = 4; break;
    case DType::f16:
    case DType::bf16: elem_bytes = 2; break;
    case DType::i8:
      elem_bytes = 1;
      scales_per_row = 1;
      break;
    default:  // i4
      if (o.head_dim % 2 != 0)
        return status(errc::invalid_argument, fmt::format("BlockPool: i4 pages need an even head_dim (two values per byte); it is {}", o.head_dim));
      if (o.int4_group < 1 || o.head_dim % o.int4_group != 0)
        return status(errc::invalid_argument, fmt::format("BlockPool: int4_group {} (elements per INT4 scale) must be >= 1 and divide head_dim {}",
                                                          o.int4_group, o.head_dim));
      scales_per_row = o.head_dim / o.int4_group;
      break;
  }
  const auto row_bytes = o.dtype == DType::i4 ? std::optional<std::int64_t>(o.head_dim / 2) : checked_mul(o.head_dim, elem_bytes);
  auto page = checked_mul(o.n_kv_heads, o.page_size);
  auto scale_bytes = page;
  if (page && row_bytes) page = checked_mul(*page, *row_bytes);
  if (scale_bytes) scale_bytes = checked_mul(*scale_bytes, scales_per_row);
  if (scale_bytes) scale_bytes = checked_mul(*scale_bytes, 4);
  if (!row_bytes || !page || !scale_bytes) return status(errc::out_of_range, "BlockPool: the page size in bytes overflows");
  BlockPoolOptions opts = o;
  auto per_page_all = checked_add(*page, *scale_bytes);
  if (per_page_all) per_page_all = checked_mul(*per_page_all, 2 * o.num_layers);  // K and V of every layer
  if (!per_page_all) return status(errc::out_of_range, "BlockPool: the bytes per page over all layers overflow");
  if (opts.num_pages == 0) {
    if (o.memory_bytes <= 0) return status(errc::invalid_argument, "BlockPool: give num_pages or a memory_bytes budget");
    opts.num_pages = o.memory_bytes / *per_page_all;
    if (opts.num_pages < 1)
      return status(errc::invalid_argument,
                    fmt::format("BlockPool: a budget of {} bytes holds no page of {} bytes (K and V of {} layers, scales included)",
                                o.memory_bytes, *per_page_all, o.num_layers));
  }
  if (opts.num_pages < 0 || opts.num_pages > 0x7fffffff)
    return status(errc::invalid_argument, fmt::format("BlockPool: num_pages {}; it must be 1..2^31-1", opts.num_pages));
  const auto total = checked_mul(*page * 2 * o.num_layers, opts.num_pages);
  const auto total_scales = checked_mul(*scale_bytes * 2 * o.num_layers, opts.num_pages);
  if (!total || !total_scales) return status(errc::out_of_range, "BlockPool: the pool's size in bytes overflows");
  BlockPool p;
  p.opts_ = opts;
  p.page_bytes_ = *page;
  p.row_bytes_ = *row_bytes;
  p.scales_per_row_ = scales_per_row;
  try {
    if (opts.host_storage) {
      p.storage_ = AlignedBuffer(static_cast<std::size_t>(*total));
      if (*total_scales > 0) p.scales_ = AlignedBuffer(static_cast<std::size_t>(*total_scales));
    }
  } catch (const std::bad_alloc&) {
    return status(errc::out_of_memory, fmt::format("BlockPool: {} bytes for {} pages", *total + *total_scales, opts.num_pages));
  }
  p.refs_.assign(static_cast<std::size_t>(opts.num_pages), 0);
  p.cached_.assign(static_cast<std::size_t>(opts.num_pages), 0);
  p.key_of_.assign(static_cast<std::size_t>(opts.num_pages), 0);
  p.lru_pos_.resize(static_cast<std::size_t>(opts.num_pages));
  p.free_ = detail::FreePages(opts.num_pages, opts.extent_pages);  // page 0 handed out first
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
  return base + ((layer * 2 + kv) * opts_.num_pages + page) * opts_.n_kv_heads * opts_.page_size * scales_per_row_;
}

void BlockPool::check_view(DType t, std::int64_t layer) const {
  if (!opts_.host_storage)
    throw_error(errc::unsupported, "BlockPool: this pool keeps no pages (host_storage is false); its storage holds them");
  if (t != opts_.dtype)
    throw_error(errc::invalid_argument, fmt::format("BlockPool holds {} pages, not {}", dtype_name(opts_.dtype), dtype_name(t)));
  if (layer < 0 || layer >= opts_.num_layers) throw_error(errc::out_of_range, fmt::format("BlockPool: layer {} of {}", layer, opts_.num_layers));
}

Int8KvPages BlockPool::int8_view(std::int64_t layer, int kv) const {
  check_view(DType::i8, layer);
  const Shape vs{opts_.num_pages, opts_.n_kv_heads, opts_.page_size, opts_.head_dim};
  return {TensorView<const std::int8_t>(reinterpret_cast<const std::int8_t*>(page_ptr(layer, kv, 0)), vs),
          TensorView<const float>(scale_ptr(layer, kv, 0), Shape{opts_.num_pages, opts_.n_kv_heads, opts_.page_size})};
}

Int4KvPages BlockPool::int4_view(std::int64_t layer, int kv) const {
  check_view(DType::i4, layer);
  const Shape vs{opts_.num_pages, opts_.n_kv_heads, opts_.page_size, opts_.head_dim};
  return {TensorView<const int4>(reinterpret_cast<const std::uint8_t*>(page_ptr(layer, kv, 0)), vs),
          TensorView<const float>(scale_ptr(layer, kv, 0), Shape{opts_.num_pages, opts_.n_kv_heads, opts_.page_size, scales_per_row_})};
}

void BlockPool::drop(std::int32_t page) noexcept {
  const auto i = static_cast<std::size_t>(page);
  if (--refs_[i] != 0) return;
  if (cached_[i]) lru_pos_[i] = lru_.insert(lru_.end(), page);  // most recently used at the back
  else free_.put(page);
}

std::int32_t BlockPool::take_page(std::int32_t after) {
  std::int32_t page = free_.take(after);
  if (page < 0) {
    if (lru_.empty()) return -1;
    page = lru_.front();
    lru_.pop_front();
    uncache(page);
    ++stats_.evictions;
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
  const std::int32_t fresh = take_page(i > 0 ? s.pages[i - 1] : -1);
  if (fresh < 0)
    return {errc::out_of_memory, fmt::format("BlockPool: no free page to copy a shared page into ({} pages, all in use)", opts_.num_pages)};
  if (!opts_.host_storage) {
    copies_.push_back({old, fresh});  // the storage elsewhere copies it
  } else {
    for (std::int64_t l = 0; l < opts_.num_layers; ++l)
      for (int kv = 0; kv < 2; ++kv) {
        std::memcpy(page_ptr(l, kv, fresh), page_ptr(l, kv, old), static_cast<std::size_t>(page_bytes_));
        if (scales_per_row_ > 0)  // i8 and i4: the scales travel with the values
          std::memcpy(scale_ptr(l, kv, fresh), scale_ptr(l, kv, old),
                      static_cast<std::size_t>(opts_.n_kv_heads * opts_.page_size * scales_per_row_) * sizeof(float));
      }
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
  for (std::int64_t i = 0; i < need; ++i) s->pages.push_back(take_page(s->pages.empty() ? -1 : s->pages.back()));
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

// Symmetric quantization of one row (i8) or group (i4) x to integers in [qmin, qmax] (i8:
// -127..127, i4: -8..7), as quarry's per-row activation quantizer: inv = qmax / amax,
// q = clamp(round_half_even(x * inv)), scale = amax / qmax. put(i, q) stores element i.
// Returns the scale: 0 (and q = 0) when qmax / amax overflows (all zero, or amax tiny); NaN (and
// q = 0) when x holds a NaN or an infinity, so the group reads back as NaN.
template <class Put>
float quantize_symmetric(std::span<const float> x, float qmax, float qmin, Put&& put) noexcept {
  float amax = 0.f;
  bool finite = true;
  for (const float v : x) {
    finite = finite && std::isfinite(v);
    amax = std::max(amax, std::fabs(v));
  }
  const float inv = finite ? qmax / amax : 0.f;
  if (!finite || !std::isfinite(inv)) {
    for (std::size_t i = 0; i < x.size(); ++i) put(i, 0);
    return finite ? 0.f : std::numeric_limits<float>::quiet_NaN();
  }
  for (std::size_t i = 0; i < x.size(); ++i) put(i, static_cast<int>(std::clamp(std::nearbyint(x[i] * inv), qmin, qmax)));
  return amax / qmax;
}

// Stores one token-head row (head_dim values) in the pool's dtype; `scales` are its
// scales_per_row scales (i8: 1, i4: head_dim / group; unused otherwise).
void store(DType t, std::byte* dst, std::span<const float> src, float* scales, std::int64_t scales_per_row) noexcept {
  switch (t) {
    case DType::i8: {
      auto* q = reinterpret_cast<std::int8_t*>(dst);
      *scales = quantize_symmetric(src, 127.f, -127.f, [q](std::size_t i, int v) { q[i] = static_cast<std::int8_t>(v); });
      break;
    }
    case DType::i4: {
      // Packed two per byte, low nibble first (quarry's int4 layout). A group may start in the
      // middle of a byte (odd group sizes), so nibbles are set one by one.
      auto* q = reinterpret_cast<std::uint8_t*>(dst);
      const std::size_t group = src.size() / static_cast<std::size_t>(scales_per_row);
      for (std::size_t g = 0; g < static_cast<std::size_t>(scales_per_row); ++g)
        scales[g] = quantize_symmetric(src.subspan(g * group, group), 7.f, -8.f, [q, base = g * group](std::size_t i, int v) {
          const std::size_t e = base + i;
          const int shift = e % 2 == 0 ? 0 : 4;
          q[e / 2] = static_cast<std::uint8_t>((q[e / 2] & ~(0xf << shift)) | (int4(v).nibble() << shift));
        });
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

void load(DType t, const std::byte* src, std::span<float> dst, const float* scales, std::int64_t scales_per_row) noexcept {
  switch (t) {
    case DType::i8:
      for (std::size_t i = 0; i < dst.size(); ++i) dst[i] = static_cast<float>(reinterpret_cast<const std::int8_t*>(src)[i]) * *scales;
      break;
    case DType::i4: {
      const auto* q = reinterpret_cast<const std::uint8_t*>(src);
      const std::size_t group = dst.size() / static_cast<std::size_t>(scales_per_row);
      for (std::size_t i = 0; i < dst.size(); ++i) {
        const int v = int4::from_nibble(static_cast<std::uint8_t>((q[i / 2] >> (i % 2 == 0 ? 0 : 4)) & 0xf));
        dst[i] = static_cast<float>(v) * scales[i / group];
      }
      break;
    }
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

result<std::vector<std::int64_t>> BlockPool::prepare_write(SequenceId seq, std::int64_t pos, std::int64_t count) {
  Sequence* s = find(seq);
  if (s == nullptr) return status(errc::invalid_argument, fmt::format("prepare_write: no sequence {} (never created, or released)", seq));
  if (pos < 0 || count < 0 || count > s->length - pos)
    return status(errc::out_of_range, fmt::format("prepare_write: rows [{}, {}) of sequence {}, which holds {} tokens (append first)", pos,
                                                  pos + count, seq, s->length));
  std::vector<std::int64_t> slots(static_cast<std::size_t>(count));
  const std::int64_t ps = opts_.page_size;
  for (std::int64_t t = pos; t < pos + count; ++t) {
    const std::size_t i = static_cast<std::size_t>(t / ps);
    if (t == pos || t % ps == 0) QUARRY_RETURN_IF_ERROR(make_exclusive(*s, i));  // once per page
    slots[static_cast<std::size_t>(t - pos)] = static_cast<std::int64_t>(s->pages[i]) * ps + t % ps;
  }
  return slots;
}

status BlockPool::write(SequenceId seq, std::int64_t layer, std::int64_t pos, std::span<const float> k, std::span<const float> v) {
  if (!opts_.host_storage) return {errc::unsupported, "write: this pool keeps no pages (host_storage is false); write to its storage"};
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
  const bool scaled = scales_per_row_ > 0;
  for (std::int64_t h = 0; h < opts_.n_kv_heads; ++h) {
    const std::int64_t r = h * opts_.page_size + off;  // the (head, slot) row of the page
    const auto part = static_cast<std::size_t>(h * opts_.head_dim);
    float* ks = scaled ? scale_ptr(layer, 0, page) + r * scales_per_row_ : nullptr;
    float* vs = scaled ? scale_ptr(layer, 1, page) + r * scales_per_row_ : nullptr;
    store(opts_.dtype, page_ptr(layer, 0, page) + r * row_bytes_, k.subspan(part, static_cast<std::size_t>(opts_.head_dim)), ks, scales_per_row_);
    store(opts_.dtype, page_ptr(layer, 1, page) + r * row_bytes_, v.subspan(part, static_cast<std::size_t>(opts_.head_dim)), vs, scales_per_row_);
  }
  return {};
}

status BlockPool::read(SequenceId seq, std::int64_t layer, std::int64_t pos, std::span<float> k, std::span<float> v) const {
  if (!opts_.host_storage) return {errc::unsupported, "read: this pool keeps no pages (host_storage is false); read its storage"};
  const Sequence* s = find(seq);
  if (s == nullptr) return {errc::invalid_argument, fmt::format("read: no sequence {}", seq)};
  if (layer < 0 || layer >= opts_.num_layers) return {errc::out_of_range, fmt::format("read: layer {} of {}", layer, opts_.num_layers)};
  if (pos < 0 || pos >= s->length) return {errc::out_of_range, fmt::format("read: position {} of a sequence of {}", pos, s->length)};
  const std::size_t row = static_cast<std::size_t>(opts_.n_kv_heads * opts_.head_dim);
  if (k.size() != row || v.size() != row) return {errc::shape_mismatch, fmt::format("read: k and v must hold {} values", row)};
  const std::int32_t page = s->pages[static_cast<std::size_t>(pos / opts_.page_size)];
  const std::int64_t off = pos % opts_.page_size;
  const bool scaled = scales_per_row_ > 0;
  for (std::int64_t h = 0; h < opts_.n_kv_heads; ++h) {
    const std::int64_t r = h * opts_.page_size + off;
    const auto part = static_cast<std::size_t>(h * opts_.head_dim);
    const float* ks = scaled ? scale_ptr(layer, 0, page) + r * scales_per_row_ : nullptr;
    const float* vs = scaled ? scale_ptr(layer, 1, page) + r * scales_per_row_ : nullptr;
    load(opts_.dtype, page_ptr(layer, 0, page) + r * row_bytes_, k.subspan(part, static_cast<std::size_t>(opts_.head_dim)), ks, scales_per_row_);
    load(opts_.dtype, page_ptr(layer, 1, page) + r * row_bytes_, v.subspan(part, static_cast<std::size_t>(opts_.head_dim)), vs, scales_per_row_);
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
