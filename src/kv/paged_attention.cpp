#include "quarry/kv/paged_attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include <fmt/format.h>

#include "quarry/core/thread_pool.hpp"
#include "quarry/kv/detail/kv_kernels.hpp"

namespace quarry {

status check_page_table(const PageTableCsr& table, std::int64_t num_pages, std::int64_t page_size) {
  if (table.indptr.empty()) return {errc::invalid_argument, "page table: indptr is empty; it must hold batch + 1 offsets"};
  const std::int64_t batch = table.batch();
  if (static_cast<std::int64_t>(table.last_page_len.size()) != batch)
    return {errc::shape_mismatch, fmt::format("page table: last_page_len has {} entries for a batch of {} (indptr has {})",
                                              table.last_page_len.size(), batch, table.indptr.size())};
  if (table.indptr[0] != 0) return {errc::invalid_argument, fmt::format("page table: indptr[0] is {}, not 0", table.indptr[0])};
  for (std::int64_t b = 0; b < batch; ++b) {
    const std::int32_t lo = table.indptr[static_cast<std::size_t>(b)], hi = table.indptr[static_cast<std::size_t>(b) + 1];
    if (hi < lo) return {errc::invalid_argument, fmt::format("page table: indptr decreases at sequence {} ({} then {})", b, lo, hi)};
    if (hi > static_cast<std::int64_t>(table.indices.size()))
      return {errc::out_of_range,
              fmt::format("page table: sequence {} ends at page slot {} but indices has {} entries", b, hi, table.indices.size())};
    const std::int32_t last = table.last_page_len[static_cast<std::size_t>(b)];
    if (hi > lo && (last < 1 || last > page_size))
      return {errc::invalid_argument, fmt::format("page table: last_page_len of sequence {} is {}; it must be 1..{} (the page size)", b, last, page_size)};
    for (std::int32_t i = lo; i < hi; ++i) {
      const std::int32_t page = table.indices[static_cast<std::size_t>(i)];
      if (page < 0 || page >= num_pages)
        return {errc::out_of_range, fmt::format("page table: sequence {} names page {} (slot {}); the pages are 0..{}", b, page, i, num_pages - 1)};
    }
  }
  if (table.indptr.back() != static_cast<std::int64_t>(table.indices.size()))
    return {errc::shape_mismatch,
            fmt::format("page table: indptr ends at {} but indices has {} entries", table.indptr.back(), table.indices.size())};
  return {};
}

status check_decode_attention_shapes(const Shape& q, const Shape& k, const Shape& v, const Shape& out, std::int64_t batch) {
  if (k.rank() != 4)
    return {errc::shape_mismatch, fmt::format("k_pages is {}; it must be [num_pages, n_kv_heads, page_size, head_dim]", k)};
  if (v != k) return {errc::shape_mismatch, fmt::format("v_pages is {} but k_pages is {}; they must be equal", v, k)};
  if (k[1] < 1 || k[2] < 1 || k[3] < 1)
    return {errc::invalid_argument, fmt::format("k_pages is {}: n_kv_heads, page_size and head_dim must be >= 1", k)};
  if (q.rank() != 3 || q[0] != batch || q[2] != k[3])
    return {errc::shape_mismatch,
            fmt::format("q is {}; it must be [batch = {}, n_heads, head_dim = {}] (k_pages is {})", q, batch, k[3], k)};
  if (q[1] < 1 || q[1] % k[1] != 0)
    return {errc::invalid_argument,
            fmt::format("q has {} heads and the pages {} kv heads; n_heads must be a positive multiple of n_kv_heads", q[1], k[1])};
  if (out != q) return {errc::shape_mismatch, fmt::format("out is {} but must be q's shape {}", out, q)};
  return {};
}

namespace {

using detail::KvElem;
using detail::KvPagesRef;

// What decode needs to know of a tensor of pages, whatever its element type.
struct PagesDesc {
  Shape shape;
  bool contiguous = false;
  KvElem elem = KvElem::f32;
  KvPagesRef ref;
  std::int64_t groups = 1;  // i4: scales per row
};

template <class T>
PagesDesc plain_pages(TensorView<const T> pages, KvElem elem) {
  return {pages.shape(), pages.is_contiguous(), elem, {pages.data(), nullptr}, 1};
}
PagesDesc int8_pages(const Int8KvPages& p) {
  return {p.values.shape(), p.values.is_contiguous() && p.scales.is_contiguous(), KvElem::i8, {p.values.data(), p.scales.data()}, 1};
}
PagesDesc int4_pages(const Int4KvPages& p) {
  return {p.values.shape(), p.values.is_contiguous() && p.scales.is_contiguous(), KvElem::i4,
          {p.values.data(), p.scales.data()}, p.scales.shape().rank() == 4 ? p.scales.dim(3) : 1};
}

// Calls that read fewer K/V elements than this run on the caller's thread (about 0.5 MiB of f16:
// tens of microseconds of work, as long as waking the pool's threads takes).
constexpr std::int64_t kMinPoolElements = std::int64_t{1} << 18;

// The tokens per chunk: the caller's, else 256, growing for sequences over 4,096 tokens so one
// has at most about 16 chunks, up to 4,096 tokens (a rule of the length only: the result never
// depends on the thread count). Fewer, longer chunks start fewer passes over pages (16k tokens,
// INT8, 1 thread on Zen 4: chunks of 1,024 tokens 2-4% faster than of 512); 16 chunks of each
// sequence's kv heads still give many threads work.
std::int64_t chunk_for(std::int64_t tokens, std::int64_t requested) {
  if (requested > 0) return requested;
  const std::int64_t by_count = (tokens + 15) / 16;
  return std::clamp<std::int64_t>((by_count + 15) / 16 * 16, 256, 4096);
}

status decode_impl(TensorView<const float> q, const PagesDesc& k_pages, const PagesDesc& v_pages, const PageTableCsr& table,
                   TensorView<float> out, const DecodeAttentionParams& params) {
  const std::int64_t batch = table.batch();
  QUARRY_RETURN_IF_ERROR(check_decode_attention_shapes(q.shape(), k_pages.shape, v_pages.shape, out.shape(), batch));
  if (!q.is_contiguous() || !k_pages.contiguous || !v_pages.contiguous || !out.is_contiguous())
    return {errc::invalid_argument, "paged_decode_attention: q, k_pages, v_pages and out must be contiguous"};
  const Shape& ks = k_pages.shape;
  const std::int64_t num_pages = ks[0], n_kv = ks[1], page_size = ks[2], dim = ks[3];
  const std::int64_t n_heads = q.dim(1), group = n_heads / n_kv;
  QUARRY_RETURN_IF_ERROR(check_page_table(table, num_pages, page_size));
  if (params.sliding_window < 0)
    return {errc::invalid_argument, fmt::format("sliding_window is {}; it must be >= 0", params.sliding_window)};
  if (params.chunk_tokens < 0) return {errc::invalid_argument, fmt::format("chunk_tokens is {}; it must be >= 0", params.chunk_tokens)};
  for (std::int64_t b = 0; b < batch; ++b)
    if (table.length(b, page_size) == 0)
      return {errc::invalid_argument, fmt::format("sequence {} of the batch has no tokens; decode attention needs at least one", b)};
  const float scale = attention_scale(params.scale, dim);

  // Units of work: (sequence, block of kv heads, chunk), numbered sequence-major; unit_start[b]
  // is the first unit of sequence b, whose chunks cover [first, len) from `first`. A unit reads
  // its heads of a page in one sweep (they lie side by side); blocks are all kv heads unless that
  // leaves too few units for the pool's threads. Heads are computed independently, so the block
  // size (and with it the thread count) never changes a result.
  struct SeqWork {
    std::int64_t first = 0, len = 0, chunk = 0, chunks = 0;
  };
  std::vector<SeqWork> work(static_cast<std::size_t>(batch));
  std::int64_t max_chunk = 1, total_chunks = 0;
  for (std::int64_t b = 0; b < batch; ++b) {
    SeqWork& w = work[static_cast<std::size_t>(b)];
    w.len = table.length(b, page_size);
    w.first = params.sliding_window > 0 ? std::max<std::int64_t>(0, w.len - params.sliding_window) : 0;
    w.chunk = chunk_for(w.len - w.first, params.chunk_tokens);
    w.chunks = (w.len - w.first + w.chunk - 1) / w.chunk;
    max_chunk = std::max(max_chunk, std::min(w.chunk, w.len - w.first));
    total_chunks += w.chunks;
  }
  // A small call (a small model's heads, short contexts) runs on the caller's thread: waking the
  // pool costs more than it does. Results do not depend on the thread count either way.
  std::int64_t elements = 0;  // K and V elements the call reads
  for (const SeqWork& w : work) elements += 2 * (w.len - w.first) * n_kv * dim;
  ThreadPool* const pool = params.pool != nullptr && params.pool->size() > 1 && elements >= kMinPoolElements ? params.pool : nullptr;
  const std::int64_t threads = pool != nullptr ? static_cast<std::int64_t>(pool->size()) : 1;
  std::int64_t head_block = n_kv;
  while (head_block > 1 && total_chunks * (n_kv / head_block) < 4 * threads) {
    std::int64_t next = head_block - 1;
    while (n_kv % next != 0) --next;
    head_block = next;
  }
  const std::int64_t blocks = n_kv / head_block;
  std::vector<std::int64_t> unit_start(static_cast<std::size_t>(batch) + 1, 0);
  for (std::int64_t b = 0; b < batch; ++b)
    unit_start[static_cast<std::size_t>(b) + 1] = unit_start[static_cast<std::size_t>(b)] + blocks * work[static_cast<std::size_t>(b)].chunks;
  const std::int64_t units = unit_start.back();
  const std::int64_t head_floats = group * (dim + 2);  // one kv head's partial results
  const std::int64_t part_floats = head_block * head_floats;
  // Not zeroed: every unit writes all of its part. (A zeroed vector cost 2-3% of a 16k-token
  // INT8 call: a pass over several MiB.)
  const std::unique_ptr<float[]> partials_buffer = std::make_unique_for_overwrite<float[]>(static_cast<std::size_t>(units * part_floats));
  float* const partials = partials_buffer.get();

  const detail::KvKernels& kernels = detail::kernels<detail::KvKernels>();
  const float* qd = q.data();
  // The arguments of unit u; b, a sequence at or before u's, is advanced to it.
  auto unit_args = [&](std::int64_t u, std::int64_t& b, float* scratch) {
    while (u >= unit_start[static_cast<std::size_t>(b) + 1]) ++b;
    const SeqWork& w = work[static_cast<std::size_t>(b)];
    const std::int64_t local = u - unit_start[static_cast<std::size_t>(b)];
    const std::int64_t block = local / w.chunks, c = local % w.chunks;
    detail::DecodeChunkArgs a;
    a.elem = k_pages.elem;
    a.k = k_pages.ref;
    a.v = v_pages.ref;
    a.n_kv = n_kv;
    a.page_size = page_size;
    a.dim = dim;
    a.groups = k_pages.groups;
    a.pages = table.indices.data() + table.indptr[static_cast<std::size_t>(b)];
    a.kv_head = block * head_block;
    a.kv_heads = head_block;
    a.t0 = w.first + c * w.chunk;
    a.t1 = std::min(w.len, a.t0 + w.chunk);
    a.q = qd + (b * n_heads + a.kv_head * group) * dim;
    a.group = group;
    a.scale = scale;
    a.scratch = scratch;
    a.out = partials + u * part_floats;
    return a;
  };
  auto run_units = [&](std::int64_t lo, std::int64_t hi) {
    if (lo >= hi) return;
    std::vector<float> scratch(detail::decode_chunk_scratch(head_block * group, max_chunk, dim));
    std::int64_t b = std::upper_bound(unit_start.begin(), unit_start.end(), lo) - unit_start.begin() - 1;
    // Each unit is told the one that follows it here (DecodeChunkArgs::then).
    detail::DecodeChunkArgs cur = unit_args(lo, b, scratch.data()), following;
    for (std::int64_t u = lo; u < hi; ++u) {
      cur.then = nullptr;
      if (u + 1 < hi) {
        following = unit_args(u + 1, b, scratch.data());
        cur.then = &following;
      }
      kernels.decode_chunk(cur);
      cur = following;
    }
  };
  // Merges the chunks of (sequence, kv head) pairs in chunk order, by log-sum-exp.
  float* od = out.data();
  auto merge_pairs = [&](std::int64_t lo, std::int64_t hi) {
    for (std::int64_t pair = lo; pair < hi; ++pair) {
      const std::int64_t b = pair / n_kv, kvh = pair % n_kv;
      const SeqWork& w = work[static_cast<std::size_t>(b)];
      const std::int64_t first_unit = unit_start[static_cast<std::size_t>(b)] + (kvh / head_block) * w.chunks;
      const float* first_part = partials + first_unit * part_floats + (kvh % head_block) * head_floats;
      for (std::int64_t g = 0; g < group; ++g) {
        float m = -std::numeric_limits<float>::infinity();
        for (std::int64_t c = 0; c < w.chunks; ++c) m = std::max(m, first_part[c * part_floats + g * (dim + 2)]);
        float* o = od + (b * n_heads + kvh * group + g) * dim;
        std::fill(o, o + dim, 0.f);
        float total = 0.f;
        for (std::int64_t c = 0; c < w.chunks; ++c) {
          const float* part = first_part + c * part_floats + g * (dim + 2);
          const float f = std::exp(part[0] - m);
          total += part[1] * f;
          for (std::int64_t i = 0; i < dim; ++i) o[i] += part[2 + i] * f;
        }
        const float inv = 1.f / total;
        for (std::int64_t i = 0; i < dim; ++i) o[i] *= inv;
      }
    }
  };
  if (pool != nullptr) {
    pool->parallel_for(0, units, run_units);
    pool->parallel_for(0, batch * n_kv, merge_pairs);
  } else {
    run_units(0, units);
    merge_pairs(0, batch * n_kv);
  }
  return {};
}

}  // namespace

status paged_decode_attention(TensorView<const float> q, TensorView<const float> k_pages, TensorView<const float> v_pages,
                              const PageTableCsr& table, TensorView<float> out, const DecodeAttentionParams& params) {
  return decode_impl(q, plain_pages(k_pages, KvElem::f32), plain_pages(v_pages, KvElem::f32), table, out, params);
}
status paged_decode_attention(TensorView<const float> q, TensorView<const f16> k_pages, TensorView<const f16> v_pages,
                              const PageTableCsr& table, TensorView<float> out, const DecodeAttentionParams& params) {
  return decode_impl(q, plain_pages(k_pages, KvElem::f16), plain_pages(v_pages, KvElem::f16), table, out, params);
}
status paged_decode_attention(TensorView<const float> q, TensorView<const bf16> k_pages, TensorView<const bf16> v_pages,
                              const PageTableCsr& table, TensorView<float> out, const DecodeAttentionParams& params) {
  return decode_impl(q, plain_pages(k_pages, KvElem::bf16), plain_pages(v_pages, KvElem::bf16), table, out, params);
}

status check_int8_pages(const Int8KvPages& k_pages, const Int8KvPages& v_pages) {
  for (const Int8KvPages* p : {&k_pages, &v_pages}) {
    const Shape& vs = p->values.shape();
    if (vs.rank() == 4 && p->scales.shape() != Shape{vs[0], vs[1], vs[2]})
      return {errc::shape_mismatch, fmt::format("INT8 pages {} need scales [{}, {}, {}], one per token and head; they are {}", vs, vs[0],
                                                vs[1], vs[2], p->scales.shape())};
  }
  return {};
}

status paged_decode_attention(TensorView<const float> q, const Int8KvPages& k_pages, const Int8KvPages& v_pages,
                              const PageTableCsr& table, TensorView<float> out, const DecodeAttentionParams& params) {
  QUARRY_RETURN_IF_ERROR(check_int8_pages(k_pages, v_pages));
  return decode_impl(q, int8_pages(k_pages), int8_pages(v_pages), table, out, params);
}

status check_int4_pages(const Int4KvPages& k_pages, const Int4KvPages& v_pages) {
  for (const Int4KvPages* p : {&k_pages, &v_pages}) {
    const Shape& vs = p->values.shape();
    if (vs.rank() != 4) continue;  // the shape check names it
    if (vs[3] % 2 != 0) return {errc::invalid_argument, fmt::format("INT4 pages {}: head_dim must be even (two values per byte)", vs)};
    const Shape& ss = p->scales.shape();
    if (ss.rank() != 4 || ss[0] != vs[0] || ss[1] != vs[1] || ss[2] != vs[2] || ss[3] < 1 || vs[3] % ss[3] != 0)
      return {errc::shape_mismatch, fmt::format("INT4 pages {} need scales [{}, {}, {}, G] with G dividing {} (one per group of a token "
                                                "and head); they are {}", vs, vs[0], vs[1], vs[2], vs[3], ss)};
  }
  if (k_pages.scales.shape() != v_pages.scales.shape())
    return {errc::shape_mismatch, fmt::format("INT4 K scales are {} but V scales {}; they must be equal", k_pages.scales.shape(),
                                              v_pages.scales.shape())};
  return {};
}

status paged_decode_attention(TensorView<const float> q, const Int4KvPages& k_pages, const Int4KvPages& v_pages,
                              const PageTableCsr& table, TensorView<float> out, const DecodeAttentionParams& params) {
  QUARRY_RETURN_IF_ERROR(check_int4_pages(k_pages, v_pages));
  return decode_impl(q, int4_pages(k_pages), int4_pages(v_pages), table, out, params);
}

}  // namespace quarry
