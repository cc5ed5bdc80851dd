#include "quarry/kv/paged_attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <fmt/format.h>

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

// Running softmax state of one query head: max score, sum of exp(score - max), sum of
// exp(score - max) * v.
struct SoftmaxState {
  float max = -std::numeric_limits<float>::infinity();
  float sum = 0.f;
  std::vector<float> acc;
};

// Merges `part` into `into` by log-sum-exp.
void merge(SoftmaxState& into, const SoftmaxState& part) {
  if (part.sum == 0.f) return;
  const float m = std::max(into.max, part.max);
  const float a = into.sum == 0.f ? 0.f : std::exp(into.max - m), b = std::exp(part.max - m);
  for (std::size_t i = 0; i < into.acc.size(); ++i) into.acc[i] = into.acc[i] * a + part.acc[i] * b;
  into.sum = into.sum * a + part.sum * b;
  into.max = m;
}

// Token rows of pages as floats: row r = (page * n_kv + head) * page_size + slot.
template <class T>
struct PlainPages {
  TensorView<const T> pages;
  const Shape& shape() const { return pages.shape(); }
  bool contiguous() const { return pages.is_contiguous(); }
  void row(std::int64_t r, std::int64_t dim, float* out) const {
    const T* p = pages.data() + r * dim;
    for (std::int64_t i = 0; i < dim; ++i) out[i] = static_cast<float>(p[i]);
  }
};
struct Int8Pages {
  const Int8KvPages& pages;
  const Shape& shape() const { return pages.values.shape(); }
  bool contiguous() const { return pages.values.is_contiguous() && pages.scales.is_contiguous(); }
  void row(std::int64_t r, std::int64_t dim, float* out) const {
    const std::int8_t* p = pages.values.data() + r * dim;
    const float s = pages.scales.data()[r];
    for (std::int64_t i = 0; i < dim; ++i) out[i] = static_cast<float>(p[i]) * s;
  }
};

struct Int4Pages {
  const Int4KvPages& pages;
  std::int64_t groups = 1;  // scales per row
  const Shape& shape() const { return pages.values.shape(); }
  bool contiguous() const { return pages.values.is_contiguous() && pages.scales.is_contiguous(); }
  void row(std::int64_t r, std::int64_t dim, float* out) const {
    const std::uint8_t* p = pages.values.data() + r * dim / 2;
    const float* s = pages.scales.data() + r * groups;
    const std::int64_t group = dim / groups;
    for (std::int64_t i = 0; i < dim; i += 2) {
      const int lo = static_cast<int>(p[i / 2] & 0xf), hi = static_cast<int>(p[i / 2] >> 4);
      out[i] = static_cast<float>((lo ^ 8) - 8) * s[i / group];
      out[i + 1] = static_cast<float>((hi ^ 8) - 8) * s[(i + 1) / group];
    }
  }
};

template <class Pages>
status decode_impl(TensorView<const float> q, const Pages& k_pages, const Pages& v_pages, const PageTableCsr& table,
                   TensorView<float> out, const DecodeAttentionParams& params) {
  const std::int64_t batch = table.batch();
  QUARRY_RETURN_IF_ERROR(check_decode_attention_shapes(q.shape(), k_pages.shape(), v_pages.shape(), out.shape(), batch));
  if (!q.is_contiguous() || !k_pages.contiguous() || !v_pages.contiguous() || !out.is_contiguous())
    return {errc::invalid_argument, "paged_decode_attention: q, k_pages, v_pages and out must be contiguous"};
  const Shape& ks = k_pages.shape();
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
  const std::int64_t chunk = params.chunk_tokens > 0 ? params.chunk_tokens : 256;

  const float* qd = q.data();
  float* od = out.data();
  std::vector<float> scores, krow(static_cast<std::size_t>(dim)), vrow(static_cast<std::size_t>(dim));
  for (std::int64_t b = 0; b < batch; ++b) {
    const std::int64_t len = table.length(b, page_size);
    const std::int64_t first = params.sliding_window > 0 ? std::max<std::int64_t>(0, len - params.sliding_window) : 0;
    const std::int32_t* pages = table.indices.data() + table.indptr[static_cast<std::size_t>(b)];
    for (std::int64_t kvh = 0; kvh < n_kv; ++kvh) {
      // Token t's row of head kvh.
      auto row = [&](std::int64_t t) { return (pages[t / page_size] * n_kv + kvh) * page_size + t % page_size; };
      for (std::int64_t g = 0; g < group; ++g) {
        const std::int64_t h = kvh * group + g;
        const float* qh = qd + (b * n_heads + h) * dim;
        SoftmaxState total;
        total.acc.assign(static_cast<std::size_t>(dim), 0.f);
        for (std::int64_t c0 = first; c0 < len; c0 += chunk) {
          const std::int64_t c1 = std::min(len, c0 + chunk);
          SoftmaxState part;
          part.acc.assign(static_cast<std::size_t>(dim), 0.f);
          scores.resize(static_cast<std::size_t>(c1 - c0));
          for (std::int64_t t = c0; t < c1; ++t) {
            k_pages.row(row(t), dim, krow.data());
            float dot = 0.f;
            for (std::int64_t i = 0; i < dim; ++i) dot += qh[i] * krow[static_cast<std::size_t>(i)];
            const float s = dot * scale;
            scores[static_cast<std::size_t>(t - c0)] = s;
            part.max = std::max(part.max, s);
          }
          for (std::int64_t t = c0; t < c1; ++t) {
            const float p = std::exp(scores[static_cast<std::size_t>(t - c0)] - part.max);
            part.sum += p;
            v_pages.row(row(t), dim, vrow.data());
            for (std::int64_t i = 0; i < dim; ++i) part.acc[static_cast<std::size_t>(i)] += p * vrow[static_cast<std::size_t>(i)];
          }
          merge(total, part);
        }
        float* oh = od + (b * n_heads + h) * dim;
        for (std::int64_t i = 0; i < dim; ++i) oh[i] = total.acc[static_cast<std::size_t>(i)] / total.sum;
      }
    }
  }
  return {};
}

}  // namespace

status paged_decode_attention(TensorView<const float> q, TensorView<const float> k_pages, TensorView<const float> v_pages,
                              const PageTableCsr& table, TensorView<float> out, const DecodeAttentionParams& params) {
  return decode_impl(q, PlainPages<float>{k_pages}, PlainPages<float>{v_pages}, table, out, params);
}
status paged_decode_attention(TensorView<const float> q, TensorView<const f16> k_pages, TensorView<const f16> v_pages,
                              const PageTableCsr& table, TensorView<float> out, const DecodeAttentionParams& params) {
  return decode_impl(q, PlainPages<f16>{k_pages}, PlainPages<f16>{v_pages}, table, out, params);
}
status paged_decode_attention(TensorView<const float> q, TensorView<const bf16> k_pages, TensorView<const bf16> v_pages,
                              const PageTableCsr& table, TensorView<float> out, const DecodeAttentionParams& params) {
  return decode_impl(q, PlainPages<bf16>{k_pages}, PlainPages<bf16>{v_pages}, table, out, params);
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
  return decode_impl(q, Int8Pages{k_pages}, Int8Pages{v_pages}, table, out, params);
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
  const std::int64_t groups = k_pages.scales.shape().rank() == 4 ? k_pages.scales.dim(3) : 1;
  return decode_impl(q, Int4Pages{k_pages, groups}, Int4Pages{v_pages, groups}, table, out, params);
}

}  // namespace quarry
