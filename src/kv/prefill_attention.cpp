// Prefill attention over a paged K/V cache (quarry/kv/prefill_attention.hpp), flash-attention
// style on the CPU: a unit of work is (sequence, kv head, block of query rows) with all the query
// heads of the kv head's GQA group stacked into one Q tile; the unit walks the key tiles its rows
// can see (whole pages, widened to f32 in per-thread scratch, read once per unit), computes the
// score block Q K^T and the product P V with the ISA's tile product (KvKernels::tile_gemm: scalar,
// AVX2, AVX-512), and keeps an online softmax (running max and sum per row, the accumulator
// rescaled once per tile: KvKernels::tile_softmax). Tiles outside the causal / window range
// are never visited; only the tiles that cross the diagonal or the window's edge are masked.
#include "quarry/kv/prefill_attention.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "quarry/kv/detail/kv_kernels.hpp"
#include <fmt/format.h>

#include "quarry/core/aligned_buffer.hpp"
#include "quarry/core/convert.hpp"
#include "quarry/core/thread_pool.hpp"

namespace quarry {

namespace {

constexpr std::int64_t round_up(std::int64_t x, std::int64_t m) noexcept { return (x + m - 1) / m * m; }

// ---- Page sources: load `count` consecutive token rows of one page and head, starting at row
// index `row` ((page * n_kv + head) * page_size + slot), as f32 rows of `ld` floats. ----

template <class T>
struct PlainSource {
  TensorView<const T> pages;
  const Shape& shape() const { return pages.shape(); }
  bool contiguous() const { return pages.is_contiguous(); }
  void load(std::int64_t row, std::int64_t count, std::int64_t dim, float* dst, std::int64_t ld) const noexcept {
    const T* src = pages.data() + row * dim;
    if constexpr (std::is_same_v<T, float>) {
      if (ld == dim) {
        std::memcpy(dst, src, static_cast<std::size_t>(count * dim) * sizeof(float));
      } else {
        for (std::int64_t j = 0; j < count; ++j) std::memcpy(dst + j * ld, src + j * dim, static_cast<std::size_t>(dim) * sizeof(float));
      }
    } else {
      // quarry's SIMD conversion kernels (F16C / AVX-512 where present).
      if (ld == dim) {
        convert(std::span<const T>(src, static_cast<std::size_t>(count * dim)), std::span<float>(dst, static_cast<std::size_t>(count * dim)));
      } else {
        for (std::int64_t j = 0; j < count; ++j)
          convert(std::span<const T>(src + j * dim, static_cast<std::size_t>(dim)), std::span<float>(dst + j * ld, static_cast<std::size_t>(dim)));
      }
    }
  }
};

struct Int8Source {
  const Int8KvPages& pages;
  const Shape& shape() const { return pages.values.shape(); }
  bool contiguous() const { return pages.values.is_contiguous() && pages.scales.is_contiguous(); }
  void load(std::int64_t row, std::int64_t count, std::int64_t dim, float* dst, std::int64_t ld) const noexcept {
    for (std::int64_t j = 0; j < count; ++j) {
      const std::int8_t* src = pages.values.data() + (row + j) * dim;
      const float s = pages.scales.data()[row + j];
      float* d = dst + j * ld;
      for (std::int64_t i = 0; i < dim; ++i) d[i] = static_cast<float>(src[i]) * s;
    }
  }
};

struct Int4Source {
  const Int4KvPages& pages;
  std::int64_t groups = 1;  // scales per row
  const Shape& shape() const { return pages.values.shape(); }
  bool contiguous() const { return pages.values.is_contiguous() && pages.scales.is_contiguous(); }
  void load(std::int64_t row, std::int64_t count, std::int64_t dim, float* dst, std::int64_t ld) const noexcept {
    const std::int64_t group = dim / groups;
    for (std::int64_t j = 0; j < count; ++j) {
      const std::uint8_t* src = pages.values.data() + (row + j) * dim / 2;
      const float* s = pages.scales.data() + (row + j) * groups;
      float* d = dst + j * ld;
      for (std::int64_t g = 0; g < groups; ++g) {
        const float sg = s[g];
        // Element by element: a group may be odd (dim 6 in 2 groups), splitting a byte.
        for (std::int64_t i = g * group; i < (g + 1) * group; ++i) {
          const int nib = (src[i / 2] >> ((i & 1) * 4)) & 0xf;
          d[i] = static_cast<float>((nib ^ 8) - 8) * sg;
        }
      }
    }
  }
};

// The fixed geometry of one call.
struct Geometry {
  std::int64_t n_heads = 0, n_kv = 0, group = 0, page_size = 0, dim = 0;
  std::int64_t ld = 0;        // floats per row of the Q / K / V / accumulator tiles (dim rounded up to 16)
  std::int64_t block_k = 0;   // tokens per key tile
  std::int64_t ld_s = 0;      // floats per row of the score tile (block_k rounded up to 16)
  std::int64_t block_q = 0;   // query rows (tokens) per unit; a unit's tiles have block_q * group rows
  std::int64_t window = 0;
  float scale = 1.f;
};

// A unit of work: query rows [row0, row0 + rows) of sequence b (row0 counted within the
// sequence), kv head kv_head; cost orders the units, heaviest first.
struct Unit {
  std::int64_t b = 0, row0 = 0, rows = 0, kv_head = 0, cost = 0;
};

// Per-thread scratch, every tile 64-byte aligned with rows of a multiple of 16 floats, so the
// data layout (and with it every kernel's order of sums) is the same on every thread.
class Scratch {
 public:
  explicit Scratch(const Geometry& g) {
    const std::int64_t m = g.block_q * g.group;
    acc_ = m * g.ld;
    s_ = acc_ + m * g.ld;
    k_ = s_ + m * g.ld_s;
    v_ = k_ + g.block_k * g.ld;
    kt_transposed_ = v_ + g.block_k * g.ld;
    max_ = kt_transposed_ + g.dim * g.ld_s;
    sum_ = max_ + round_up(m, 16);
    buf_ = AlignedBuffer(static_cast<std::size_t>(sum_ + round_up(m, 16)) * sizeof(float));
    visible_.resize(2 * static_cast<std::size_t>(g.block_q));
  }
  float* base() noexcept { return reinterpret_cast<float*>(buf_.data()); }
  float* q() noexcept { return base(); }
  float* acc() noexcept { return base() + acc_; }
  float* s() noexcept { return base() + s_; }
  float* k() noexcept { return base() + k_; }
  float* v() noexcept { return base() + v_; }
  float* k_transposed() noexcept { return base() + kt_transposed_; }
  float* row_max() noexcept { return base() + max_; }
  float* row_sum() noexcept { return base() + sum_; }
  std::int64_t* visible_lo() noexcept { return visible_.data(); }
  std::int64_t* visible_hi() noexcept { return visible_.data() + visible_.size() / 2; }

 private:
  AlignedBuffer buf_;
  std::vector<std::int64_t> visible_;  // per query row of a unit: its tile's visible columns [lo, hi)
  std::int64_t acc_ = 0, s_ = 0, k_ = 0, v_ = 0, kt_transposed_ = 0, max_ = 0, sum_ = 0;
};

// Widens tokens [t0, t1) of one head of a sequence (pages in token order) into dst, row t - t0.
template <class Source>
void load_tokens(const Source& src, const Geometry& g, const std::int32_t* pages, std::int64_t kv_head, std::int64_t t0,
                 std::int64_t t1, float* dst) noexcept {
  for (std::int64_t t = t0; t < t1;) {
    const std::int64_t slot = t % g.page_size;
    const std::int64_t run = std::min(g.page_size - slot, t1 - t);
    const std::int64_t row = (static_cast<std::int64_t>(pages[t / g.page_size]) * g.n_kv + kv_head) * g.page_size + slot;
    src.load(row, run, g.dim, dst + (t - t0) * g.ld, g.ld);
    t += run;
  }
}

template <class Source>
void run_unit(const Unit& u, const float* q, const std::int32_t* qo_indptr, const Source& k_src, const Source& v_src,
              const PageTableCsr& table, const Geometry& g, float* out, Scratch& scratch) noexcept {
  const std::int64_t len = table.length(u.b, g.page_size);
  const std::int64_t n_b = qo_indptr[u.b + 1] - qo_indptr[u.b];
  const std::int64_t pos0 = len - n_b + u.row0;  // position of the unit's first query row
  const std::int64_t pos_last = pos0 + u.rows - 1;
  const std::int64_t m = u.rows * g.group;  // tile rows: (query row i, head g) at i * group + g
  const std::int32_t* pages = table.indices.data() + table.indptr[static_cast<std::size_t>(u.b)];
  const std::int64_t first_row = qo_indptr[u.b] + u.row0;  // the unit's first row of q and out

  float* qt = scratch.q();
  float* acc = scratch.acc();
  float* s = scratch.s();
  float* kt = scratch.k();
  float* vt = scratch.v();
  float* kT = scratch.k_transposed();
  const detail::KvKernels& kernels = detail::kernels<detail::KvKernels>();
  float* row_max = scratch.row_max();
  float* row_sum = scratch.row_sum();
  std::int64_t* visible_lo = scratch.visible_lo();
  std::int64_t* visible_hi = scratch.visible_hi();

  // The Q tile, pre-scaled: S = (scale q) k^T.
  for (std::int64_t i = 0; i < u.rows; ++i) {
    const float* src = q + ((first_row + i) * g.n_heads + u.kv_head * g.group) * g.dim;
    for (std::int64_t h = 0; h < g.group; ++h) {
      float* dst = qt + (i * g.group + h) * g.ld;
      for (std::int64_t d = 0; d < g.dim; ++d) dst[d] = src[h * g.dim + d] * g.scale;
    }
  }
  for (std::int64_t r = 0; r < m; ++r) std::fill(acc + r * g.ld, acc + r * g.ld + g.dim, 0.f);
  std::fill(row_max, row_max + m, -std::numeric_limits<float>::infinity());
  std::fill(row_sum, row_sum + m, 0.f);

  // Tokens any row of the unit sees: [t_begin, pos_last]; key tiles are aligned to block_k.
  const std::int64_t t_begin = g.window > 0 ? std::max<std::int64_t>(0, pos0 - g.window + 1) : 0;
  const std::int64_t t_end = pos_last + 1;
  for (std::int64_t t0 = t_begin / g.block_k * g.block_k; t0 < t_end; t0 += g.block_k) {
    const std::int64_t t1 = std::min(t0 + g.block_k, t_end);
    const std::int64_t n = t1 - t0;
    load_tokens(k_src, g, pages, u.kv_head, t0, t1, kt);
    load_tokens(v_src, g, pages, u.kv_head, t0, t1, vt);
    // S = (scale Q) K^T through the ISA's tile product, on K's tile transposed ([dim, n]).
    for (std::int64_t j = 0; j < n; ++j)
      for (std::int64_t d = 0; d < g.dim; ++d) kT[d * g.ld_s + j] = kt[j * g.ld + d];
    detail::TileGemmArgs qk;
    qk.m = m;
    qk.n = n;
    qk.k = g.dim;
    qk.a = qt;
    qk.lda = g.ld;
    qk.b = kT;
    qk.ldb = g.ld_s;
    qk.c = s;
    qk.ldc = g.ld_s;
    kernels.tile_gemm(qk);

    // The online softmax of the tile's rows (alpha = 0 on a row's first visible tile). Only
    // tiles that cross the diagonal or the window's lower edge need a mask.
    detail::TileSoftmaxArgs sm;
    sm.m = m;
    sm.n = n;
    sm.s = s;
    sm.lds = g.ld_s;
    sm.group = g.group;
    sm.row_max = row_max;
    sm.row_sum = row_sum;
    sm.acc = acc;
    sm.ld_acc = g.ld;
    sm.dim = g.dim;
    if (t1 - 1 > pos0 || (g.window > 0 && t0 < pos_last - g.window + 1)) {
      for (std::int64_t i = 0; i < u.rows; ++i) {  // visible columns of query row i
        const std::int64_t p = pos0 + i;
        visible_hi[i] = std::clamp<std::int64_t>(p + 1 - t0, 0, n);
        visible_lo[i] = g.window > 0 ? std::clamp<std::int64_t>(p - g.window + 1 - t0, 0, n) : 0;
      }
      sm.lo = visible_lo;
      sm.hi = visible_hi;
    }
    kernels.tile_softmax(sm);
    detail::TileGemmArgs pv;  // acc += P V
    pv.m = m;
    pv.n = g.dim;
    pv.k = n;
    pv.a = s;
    pv.lda = g.ld_s;
    pv.b = vt;
    pv.ldb = g.ld;
    pv.c = acc;
    pv.ldc = g.ld;
    pv.accumulate = true;
    kernels.tile_gemm(pv);
  }

  for (std::int64_t i = 0; i < u.rows; ++i) {
    float* dst = out + ((first_row + i) * g.n_heads + u.kv_head * g.group) * g.dim;
    for (std::int64_t h = 0; h < g.group; ++h) {
      const std::int64_t r = i * g.group + h;
      const float inv = 1.f / row_sum[r];  // > 0: every row sees at least its own token
      const float* a = acc + r * g.ld;
      for (std::int64_t d = 0; d < g.dim; ++d) dst[h * g.dim + d] = a[d] * inv;
    }
  }
}

// q and out [total_q, n_heads, head_dim], k and v [num_pages, n_kv_heads, page_size, head_dim].
status check_prefill_shapes(const Shape& q, const Shape& k, const Shape& v, const Shape& out) {
  if (k.rank() != 4)
    return {errc::shape_mismatch, fmt::format("k_pages is {}; it must be [num_pages, n_kv_heads, page_size, head_dim]", k)};
  if (v != k) return {errc::shape_mismatch, fmt::format("v_pages is {} but k_pages is {}; they must be equal", v, k)};
  if (k[1] < 1 || k[2] < 1 || k[3] < 1)
    return {errc::invalid_argument, fmt::format("k_pages is {}: n_kv_heads, page_size and head_dim must be >= 1", k)};
  if (q.rank() != 3 || q[2] != k[3])
    return {errc::shape_mismatch, fmt::format("q is {}; it must be [total_q, n_heads, head_dim = {}] (k_pages is {})", q, k[3], k)};
  if (q[1] < 1 || q[1] % k[1] != 0)
    return {errc::invalid_argument,
            fmt::format("q has {} heads and the pages {} kv heads; n_heads must be a positive multiple of n_kv_heads", q[1], k[1])};
  if (out != q) return {errc::shape_mismatch, fmt::format("out is {} but must be q's shape {}", out, q)};
  return {};
}

status check_qo_indptr(std::span<const std::int32_t> qo_indptr, const PageTableCsr& table, std::int64_t total_q,
                       std::int64_t page_size) {
  const std::int64_t batch = table.batch();
  if (static_cast<std::int64_t>(qo_indptr.size()) != batch + 1)
    return {errc::shape_mismatch, fmt::format("qo_indptr has {} entries; it must have batch + 1 = {} (the page table's batch is {})",
                                              qo_indptr.size(), batch + 1, batch)};
  if (qo_indptr[0] != 0) return {errc::invalid_argument, fmt::format("qo_indptr[0] is {}, not 0", qo_indptr[0])};
  for (std::int64_t b = 0; b < batch; ++b) {
    const std::int64_t lo = qo_indptr[static_cast<std::size_t>(b)], hi = qo_indptr[static_cast<std::size_t>(b) + 1];
    if (hi < lo) return {errc::invalid_argument, fmt::format("qo_indptr decreases at sequence {} ({} then {})", b, lo, hi)};
  }
  if (qo_indptr.back() != total_q)
    return {errc::shape_mismatch, fmt::format("qo_indptr ends at {} but q has {} rows (total_q); they must be equal", qo_indptr.back(), total_q)};
  for (std::int64_t b = 0; b < batch; ++b) {
    const std::int64_t n_b = qo_indptr[static_cast<std::size_t>(b) + 1] - qo_indptr[static_cast<std::size_t>(b)];
    const std::int64_t len = table.length(b, page_size);
    if (n_b == 0)
      return {errc::invalid_argument, fmt::format("sequence {} of the batch has no query rows in qo_indptr; prefill needs at least one", b)};
    if (n_b > len)
      return {errc::invalid_argument,
              fmt::format("sequence {} of the batch has {} query rows in qo_indptr but only {} tokens in its pages; the query rows "
                          "are its last tokens, so they must be at most its length", b, n_b, len)};
  }
  return {};
}

template <class Source>
status prefill_impl(TensorView<const float> q, std::span<const std::int32_t> qo_indptr, const Source& k_src, const Source& v_src,
                    const PageTableCsr& table, TensorView<float> out, const PrefillAttentionParams& params) {
  QUARRY_RETURN_IF_ERROR(check_prefill_shapes(q.shape(), k_src.shape(), v_src.shape(), out.shape()));
  if (!q.is_contiguous() || !k_src.contiguous() || !v_src.contiguous() || !out.is_contiguous())
    return {errc::invalid_argument, "paged_prefill_attention: q, k_pages, v_pages and out must be contiguous"};
  const Shape& ks = k_src.shape();
  Geometry g;
  g.n_kv = ks[1];
  g.page_size = ks[2];
  g.dim = ks[3];
  g.n_heads = q.dim(1);
  g.group = g.n_heads / g.n_kv;
  QUARRY_RETURN_IF_ERROR(check_page_table(table, ks[0], g.page_size));
  QUARRY_RETURN_IF_ERROR(check_qo_indptr(qo_indptr, table, q.dim(0), g.page_size));
  if (params.sliding_window < 0)
    return {errc::invalid_argument, fmt::format("sliding_window is {}; it must be >= 0", params.sliding_window)};
  g.window = params.sliding_window;
  g.scale = attention_scale(params.scale, g.dim);
  g.ld = round_up(g.dim, 16);
  // Key tiles of whole pages, about 64 tokens; sub-page tiles of 64 for bigger pages.
  g.block_k = g.page_size <= 64 ? 64 / g.page_size * g.page_size : 64;
  g.ld_s = round_up(g.block_k, 16);
  // About 128 tile rows (query rows x heads of the group), at most 64 query rows.
  g.block_q = std::clamp<std::int64_t>(128 / g.group, 1, 64);

  // Units, heaviest (most keys visited) first so that the last ones to run are short.
  const std::int64_t batch = table.batch();
  std::vector<Unit> units;
  for (std::int64_t b = 0; b < batch; ++b) {
    const std::int64_t len = table.length(b, g.page_size);
    const std::int64_t n_b = qo_indptr[static_cast<std::size_t>(b) + 1] - qo_indptr[static_cast<std::size_t>(b)];
    for (std::int64_t r0 = 0; r0 < n_b; r0 += g.block_q) {
      const std::int64_t rows = std::min(g.block_q, n_b - r0);
      const std::int64_t last = len - n_b + r0 + rows - 1;
      const std::int64_t first = g.window > 0 ? std::max<std::int64_t>(0, len - n_b + r0 - g.window + 1) : 0;
      for (std::int64_t h = 0; h < g.n_kv; ++h) units.push_back({b, r0, rows, h, (last + 1 - first) * rows});
    }
  }
  std::stable_sort(units.begin(), units.end(), [](const Unit& a, const Unit& b) { return a.cost > b.cost; });

  const float* qd = q.data();
  float* od = out.data();
  parallel_for(params.pool, 0, static_cast<std::int64_t>(units.size()), [&](std::int64_t lo, std::int64_t hi) {
    Scratch scratch(g);
    for (std::int64_t i = lo; i < hi; ++i)
      run_unit(units[static_cast<std::size_t>(i)], qd, qo_indptr.data(), k_src, v_src, table, g, od, scratch);
  });
  return {};
}

}  // namespace

status paged_prefill_attention(TensorView<const float> q, std::span<const std::int32_t> qo_indptr, TensorView<const float> k_pages,
                               TensorView<const float> v_pages, const PageTableCsr& table, TensorView<float> out,
                               const PrefillAttentionParams& params) {
  return prefill_impl(q, qo_indptr, PlainSource<float>{k_pages}, PlainSource<float>{v_pages}, table, out, params);
}
status paged_prefill_attention(TensorView<const float> q, std::span<const std::int32_t> qo_indptr, TensorView<const f16> k_pages,
                               TensorView<const f16> v_pages, const PageTableCsr& table, TensorView<float> out,
                               const PrefillAttentionParams& params) {
  return prefill_impl(q, qo_indptr, PlainSource<f16>{k_pages}, PlainSource<f16>{v_pages}, table, out, params);
}
status paged_prefill_attention(TensorView<const float> q, std::span<const std::int32_t> qo_indptr, TensorView<const bf16> k_pages,
                               TensorView<const bf16> v_pages, const PageTableCsr& table, TensorView<float> out,
                               const PrefillAttentionParams& params) {
  return prefill_impl(q, qo_indptr, PlainSource<bf16>{k_pages}, PlainSource<bf16>{v_pages}, table, out, params);
}
status paged_prefill_attention(TensorView<const float> q, std::span<const std::int32_t> qo_indptr, const Int8KvPages& k_pages,
                               const Int8KvPages& v_pages, const PageTableCsr& table, TensorView<float> out,
                               const PrefillAttentionParams& params) {
  QUARRY_RETURN_IF_ERROR(check_int8_pages(k_pages, v_pages));
  return prefill_impl(q, qo_indptr, Int8Source{k_pages}, Int8Source{v_pages}, table, out, params);
}
status paged_prefill_attention(TensorView<const float> q, std::span<const std::int32_t> qo_indptr, const Int4KvPages& k_pages,
                               const Int4KvPages& v_pages, const PageTableCsr& table, TensorView<float> out,
                               const PrefillAttentionParams& params) {
  QUARRY_RETURN_IF_ERROR(check_int4_pages(k_pages, v_pages));
  const std::int64_t groups = k_pages.scales.shape().rank() == 4 ? k_pages.scales.dim(3) : 1;
  return prefill_impl(q, qo_indptr, Int4Source{k_pages, groups}, Int4Source{v_pages, groups}, table, out, params);
}

}  // namespace quarry
