// Test support for paged attention (tests/kv, tests/cuda): random pages and page tables with
// pages scattered over the pool, and the f64 reference of decode attention.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include <quarry/core/tensor.hpp>
#include <quarry/kv/paged_attention.hpp>

namespace quarry::testing {

/// A batch of sequences laid out in a page pool, with the CSR table in owned vectors.
struct PagedBatch {
  std::int64_t num_pages = 0, n_kv = 0, page_size = 0, dim = 0, n_heads = 0;
  std::vector<std::int32_t> indptr, indices, last;
  Tensor<float> k, v;  ///< [num_pages, n_kv, page_size, dim]
  Tensor<float> q;     ///< [batch, n_heads, dim]

  PageTableCsr table() const { return {indptr, indices, last}; }
  std::int64_t batch() const { return static_cast<std::int64_t>(indptr.size()) - 1; }
};

/// Sequences of the given lengths (>= 1) in pages taken in a shuffled order from a pool with
/// `spare` unused pages; K, V and q ~ N(0, 1) (K scaled by `k_scale` to sharpen the softmax).
inline PagedBatch make_paged_batch(const std::vector<std::int64_t>& lengths, std::int64_t n_heads, std::int64_t n_kv,
                                   std::int64_t page_size, std::int64_t dim, std::uint32_t seed, std::int64_t spare = 3,
                                   float k_scale = 1.f) {
  PagedBatch pb;
  pb.n_kv = n_kv;
  pb.page_size = page_size;
  pb.dim = dim;
  pb.n_heads = n_heads;
  std::int64_t need = 0;
  for (const std::int64_t len : lengths) need += (len + page_size - 1) / page_size;
  pb.num_pages = need + spare;
  std::mt19937 rng(seed);
  std::vector<std::int32_t> order(static_cast<std::size_t>(pb.num_pages));
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  pb.indptr.push_back(0);
  std::size_t next = 0;
  for (const std::int64_t len : lengths) {
    const std::int64_t pages = (len + page_size - 1) / page_size;
    for (std::int64_t p = 0; p < pages; ++p) pb.indices.push_back(order[next++]);
    pb.indptr.push_back(static_cast<std::int32_t>(pb.indices.size()));
    pb.last.push_back(static_cast<std::int32_t>(len - (pages - 1) * page_size));
  }
  std::normal_distribution<float> normal(0.f, 1.f);
  pb.k = Tensor<float>({pb.num_pages, n_kv, page_size, dim});
  pb.v = Tensor<float>({pb.num_pages, n_kv, page_size, dim});
  pb.q = Tensor<float>({static_cast<std::int64_t>(lengths.size()), n_heads, dim});
  for (float& x : pb.k.span()) x = normal(rng) * k_scale;
  for (float& x : pb.v.span()) x = normal(rng);
  for (float& x : pb.q.span()) x = normal(rng);
  return pb;
}

/// Row of token t of sequence b in kv head kvh.
inline std::int64_t token_row(const PagedBatch& pb, std::int64_t b, std::int64_t kvh, std::int64_t t) {
  const std::int32_t* pages = pb.indices.data() + pb.indptr[static_cast<std::size_t>(b)];
  return (pages[t / pb.page_size] * pb.n_kv + kvh) * pb.page_size + t % pb.page_size;
}

/// The softmax probabilities of query qh (dim floats) over tokens [first, len) of sequence b in kv
/// head kvh, in double, from K as `KV` would hold it.
template <class KV = float>
std::vector<double> reference_probs(const PagedBatch& pb, std::int64_t b, std::int64_t kvh, const float* qh, double scale, std::int64_t first,
                                    std::int64_t len) {
  const std::int64_t dim = pb.dim;
  std::vector<double> s;
  for (std::int64_t t = first; t < len; ++t) {
    const float* kr = pb.k.data() + token_row(pb, b, kvh, t) * dim;
    double dot = 0;
    for (std::int64_t i = 0; i < dim; ++i) dot += static_cast<double>(qh[i]) * static_cast<double>(static_cast<float>(KV(kr[i])));
    s.push_back(dot * scale);
  }
  const double mx = *std::max_element(s.begin(), s.end());
  double sum = 0;
  for (double& x : s) sum += (x = std::exp(x - mx));
  for (double& x : s) x /= sum;
  return s;
}

/// Calls f(b, h, first, len, p) for each sequence b and query head h of pb's decode batch: p are
/// the head's probabilities (reference_probs) over tokens [first, len), the last `window` (0: all).
template <class KV = float, class F>
void for_each_decode_head(const PagedBatch& pb, double scale, std::int64_t window, F&& f) {
  for (std::int64_t b = 0; b < pb.batch(); ++b) {
    const std::int64_t len = pb.table().length(b, pb.page_size);
    const std::int64_t first = window > 0 ? std::max<std::int64_t>(0, len - window) : 0;
    for (std::int64_t h = 0; h < pb.n_heads; ++h)
      f(b, h, first, len, reference_probs<KV>(pb, b, h / (pb.n_heads / pb.n_kv), pb.q.data() + (b * pb.n_heads + h) * pb.dim, scale, first, len));
  }
}

/// Decode attention in double from K/V as `KV` would hold them (rounded through KV), naive
/// (no chunks): out [batch, n_heads, dim].
template <class KV = float>
std::vector<double> reference_decode(const PagedBatch& pb, double scale, std::int64_t window = 0) {
  const std::int64_t dim = pb.dim, group = pb.n_heads / pb.n_kv;
  std::vector<double> out(static_cast<std::size_t>(pb.batch() * pb.n_heads * dim), 0.0);
  for_each_decode_head<KV>(pb, scale, window, [&](std::int64_t b, std::int64_t h, std::int64_t first, std::int64_t len, const std::vector<double>& p) {
    double* oh = out.data() + (b * pb.n_heads + h) * dim;
    for (std::int64_t t = first; t < len; ++t) {
      const float* vr = pb.v.data() + token_row(pb, b, h / group, t) * dim;
      for (std::int64_t i = 0; i < dim; ++i) oh[i] += p[static_cast<std::size_t>(t - first)] * static_cast<double>(static_cast<float>(KV(vr[i])));
    }
  });
  return out;
}

/// Per output element of decode attention over INT8 or INT4 pages, the most its result may differ
/// from reference_decode of the pages' values (`deq`, with the int8 query) by the rounding of its
/// weights of V to 8 bits (the contract in quarry/kv/detail/kv_kernels.hpp): each token's weight
/// (INT4: per group of V's elements, `v_scales` [pages, n_kv, page_size, groups]) is off by at
/// most half a step, a step being 1/255 of the largest weight (softmax probability times V's scale)
/// of its run and group, and a run lies within a page. So token t adds at most
/// 0.5 * max_page(P * sv) / 255 * |vi_t[i]| to element i's error, vi_t = V_t / sv_t its integers.
inline std::vector<double> int8_weight_bound(const PagedBatch& deq, const Tensor<float>& v_scales, double scale, std::int64_t window = 0) {
  const std::int64_t dim = deq.dim, group = deq.n_heads / deq.n_kv;
  const std::int64_t groups = v_scales.numel() / (deq.num_pages * deq.n_kv * deq.page_size), size = dim / groups;
  std::vector<double> bound(static_cast<std::size_t>(deq.batch() * deq.n_heads * dim), 0.0);
  for_each_decode_head(deq, scale, window, [&](std::int64_t b, std::int64_t h, std::int64_t first, std::int64_t len, const std::vector<double>& p) {
    auto row = [&](std::int64_t t) { return token_row(deq, b, h / group, t); };
    auto sv = [&](std::int64_t t, std::int64_t c) { return static_cast<double>(v_scales.data()[row(t) * groups + c]); };
    std::vector<double> page_max(static_cast<std::size_t>((len / deq.page_size + 1) * groups), 0.0);  // of P * sv, per group
    for (std::int64_t t = first; t < len; ++t)
      for (std::int64_t c = 0; c < groups; ++c) {
        double& m = page_max[static_cast<std::size_t>(t / deq.page_size * groups + c)];
        m = std::max(m, p[static_cast<std::size_t>(t - first)] * sv(t, c));
      }
    double* bh = bound.data() + (b * deq.n_heads + h) * dim;
    for (std::int64_t t = first; t < len; ++t)
      for (std::int64_t i = 0; i < dim; ++i) {
        const std::int64_t c = i / size;
        if (sv(t, c) <= 0) continue;
        const double half_step = 0.5 * page_max[static_cast<std::size_t>(t / deq.page_size * groups + c)] / 255.0;
        bh[i] += half_step * std::fabs(deq.v.data()[row(t) * dim + i]) / sv(t, c);
      }
  });
  return bound;
}

/// The largest amount by which |got - want| exceeds `bound` + `slack` (<= 0: within it everywhere).
inline double excess_over_bound(const float* got, const std::vector<double>& want, const std::vector<double>& bound, double slack) {
  double worst = -slack;
  for (std::size_t i = 0; i < want.size(); ++i)
    worst = std::max(worst, std::fabs(static_cast<double>(got[i]) - want[i]) - bound[i] - slack);
  return worst;
}

/// INT8 pages of `pages` (symmetric, one scale per page, head and token). The dequantized values
/// are written back into `pages`, so a reference over them sees what the kernel reads.
struct Int8Owned {
  Tensor<std::int8_t> values;
  Tensor<float> scales;
  Int8KvPages view() const { return {values.view(), scales.view()}; }
};
inline Int8Owned quantize_int8(Tensor<float>& pages) {
  const Shape& s = pages.shape();
  const std::int64_t dim = s[3], rows = s[0] * s[1] * s[2];
  Int8Owned o{Tensor<std::int8_t>(s), Tensor<float>({s[0], s[1], s[2]})};
  for (std::int64_t r = 0; r < rows; ++r) {
    float* x = pages.data() + r * dim;
    float amax = 0.f;
    for (std::int64_t i = 0; i < dim; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float scale = amax > 0.f ? amax / 127.f : 1.f;
    o.scales.data()[r] = scale;
    for (std::int64_t i = 0; i < dim; ++i) {
      const auto v = static_cast<std::int8_t>(std::clamp(std::lround(x[i] / scale), -127L, 127L));
      o.values.data()[r * dim + i] = v;
      x[i] = static_cast<float>(v) * scale;
    }
  }
  return o;
}

/// INT4 pages of `pages` (symmetric, one scale per group of `group` elements of a token and head,
/// packed two per byte, low nibble first); the dequantized values are written back.
struct Int4Owned {
  Tensor<int4> values;
  Tensor<float> scales;
  Int4KvPages view() const { return {values.view(), scales.view()}; }
};
inline Int4Owned quantize_int4(Tensor<float>& pages, std::int64_t group) {
  const Shape& s = pages.shape();
  const std::int64_t dim = s[3], rows = s[0] * s[1] * s[2], groups = dim / group;
  Int4Owned o{Tensor<int4>(s), Tensor<float>({s[0], s[1], s[2], groups})};
  std::uint8_t* bytes = o.values.data();
  for (std::int64_t r = 0; r < rows; ++r) {
    float* x = pages.data() + r * dim;
    for (std::int64_t g = 0; g < groups; ++g) {
      float amax = 0.f;
      for (std::int64_t i = g * group; i < (g + 1) * group; ++i) amax = std::max(amax, std::fabs(x[i]));
      const float scale = amax > 0.f ? amax / 7.f : 1.f;
      o.scales.data()[r * groups + g] = scale;
      for (std::int64_t i = g * group; i < (g + 1) * group; ++i) {
        const int v = static_cast<int>(std::clamp(std::lround(x[i] / scale), -8L, 7L));
        const std::int64_t e = r * dim + i;
        bytes[e / 2] = static_cast<std::uint8_t>(bytes[e / 2] | ((v & 0xf) << ((e & 1) * 4)));
        x[i] = static_cast<float>(v) * scale;
      }
    }
  }
  return o;
}

/// The query as decode attention over INT8 pages uses it (the contract in
/// quarry/kv/detail/kv_kernels.hpp): each head rounded to int8 steps of max|q| / 127.
inline Tensor<float> int8_queries(const Tensor<float>& q) {
  Tensor<float> out = q.clone();
  const std::int64_t dim = q.shape()[q.rank() - 1], heads = q.numel() / dim;
  for (std::int64_t h = 0; h < heads; ++h) {
    float* x = out.data() + h * dim;
    float amax = 0.f;
    for (std::int64_t i = 0; i < dim; ++i) amax = std::max(amax, std::fabs(x[i]));
    const float inv = amax > 0.f ? 127.f / amax : 0.f;
    for (std::int64_t i = 0; i < dim; ++i) x[i] = std::nearbyint(x[i] * inv) * (amax / 127.f);
  }
  return out;
}

/// The largest |got - want| over all elements.
inline double max_abs_diff(const float* got, const std::vector<double>& want) {
  double worst = 0;
  for (std::size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(got[i]) - want[i]));
  return worst;
}

/// The pages converted to KV (f16 / bf16 rounding).
template <class KV>
Tensor<KV> pages_as(const Tensor<float>& pages) {
  Tensor<KV> out(pages.shape());
  const float* src = pages.data();
  KV* dst = out.data();
  for (std::int64_t i = 0; i < pages.numel(); ++i) dst[i] = KV(src[i]);
  return out;
}

// ---- Prefill attention (quarry/kv/prefill_attention.hpp) ----

/// The query rows of a prefill batch: rows[b] rows for sequence b (its last rows[b] tokens),
/// q [total_q, n_heads, dim] ~ N(0, 1), grouped by qo_indptr [batch + 1].
struct PrefillQueries {
  std::vector<std::int32_t> qo_indptr;
  Tensor<float> q;
  std::int64_t total() const { return qo_indptr.back(); }
};

inline PrefillQueries make_prefill_queries(const std::vector<std::int64_t>& rows, std::int64_t n_heads, std::int64_t dim,
                                           std::uint32_t seed) {
  PrefillQueries pq;
  pq.qo_indptr.push_back(0);
  for (const std::int64_t n : rows) pq.qo_indptr.push_back(static_cast<std::int32_t>(pq.qo_indptr.back() + n));
  pq.q = Tensor<float>({pq.qo_indptr.back(), n_heads, dim});
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  for (float& x : pq.q.span()) x = normal(rng);
  return pq;
}

/// Causal prefill attention in double, naive, over pb's K/V rounded through KV; query row
/// qo_indptr[b] + i of sequence b (length len, n rows) sits at position len - n + i and sees
/// tokens [max(0, p - window + 1) when window > 0 else 0, p]. Out [total_q, n_heads, dim].
template <class KV = float>
std::vector<double> reference_prefill(const PagedBatch& pb, const PrefillQueries& pq, double scale, std::int64_t window = 0) {
  const std::int64_t dim = pb.dim, group = pb.n_heads / pb.n_kv;
  std::vector<double> out(static_cast<std::size_t>(pq.total() * pb.n_heads * dim), 0.0);
  for (std::int64_t b = 0; b < pb.batch(); ++b) {
    const std::int64_t len = pb.table().length(b, pb.page_size);
    const std::int64_t n = pq.qo_indptr[static_cast<std::size_t>(b) + 1] - pq.qo_indptr[static_cast<std::size_t>(b)];
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int64_t p = len - n + i, r = pq.qo_indptr[static_cast<std::size_t>(b)] + i;
      const std::int64_t first = window > 0 ? std::max<std::int64_t>(0, p - window + 1) : 0;
      for (std::int64_t h = 0; h < pb.n_heads; ++h) {
        const std::int64_t kvh = h / group;
        const std::vector<double> w = reference_probs<KV>(pb, b, kvh, pq.q.data() + (r * pb.n_heads + h) * dim, scale, first, p + 1);
        double* oh = out.data() + (r * pb.n_heads + h) * dim;
        for (std::int64_t t = first; t <= p; ++t) {
          const float* vr = pb.v.data() + token_row(pb, b, kvh, t) * dim;
          for (std::int64_t d = 0; d < dim; ++d) oh[d] += w[static_cast<std::size_t>(t - first)] * static_cast<double>(static_cast<float>(KV(vr[d])));
        }
      }
    }
  }
  return out;
}

}  // namespace quarry::testing
