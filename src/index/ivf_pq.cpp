#include "quarry/index/ivf_pq.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <unordered_set>
#include <utility>

#include <fmt/format.h>

#include "index/finite.hpp"
#include "quarry/core/checked.hpp"
#include "quarry/core/dot.hpp"
#include "quarry/index/detail/index_kernels.hpp"
#include "quarry/io/section_file.hpp"

namespace quarry {

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// A candidate: its internal distance (smaller is nearer: L2, or minus the inner product), its id
// and where its code is. Ordered by (distance, id): the ties rule of the results.
struct Candidate {
  float dist;
  std::int64_t id;
  std::int32_t list;
  std::int64_t pos;
};
bool nearer(const Candidate& a, const Candidate& b) noexcept { return a.dist < b.dist || (a.dist == b.dist && a.id < b.id); }
// nearer as a type, so that the heap and sort algorithms inline it (a function pointer is not).
struct Nearer {
  bool operator()(const Candidate& a, const Candidate& b) const noexcept { return nearer(a, b); }
};

// The best `cap` candidates seen so far: a max-heap with the worst on top.
class TopK {
 public:
  void reset(std::size_t cap) {
    cap_ = cap;
    heap_.clear();
  }
  bool full() const noexcept { return heap_.size() == cap_; }
  // The distance a new candidate must beat (ties resolved by id in push).
  float bound() const noexcept { return full() ? heap_.front().dist : kInf; }
  void push(const Candidate& c) {
    if (!full()) {
      heap_.push_back(c);
      std::push_heap(heap_.begin(), heap_.end(), Nearer{});
    } else if (nearer(c, heap_.front())) {
      std::pop_heap(heap_.begin(), heap_.end(), Nearer{});
      heap_.back() = c;
      std::push_heap(heap_.begin(), heap_.end(), Nearer{});
    }
  }
  std::vector<Candidate>& sorted() {
    std::sort_heap(heap_.begin(), heap_.end(), Nearer{});
    return heap_;
  }

 private:
  std::size_t cap_ = 0;
  std::vector<Candidate> heap_;
};

// A list probed by a fast-scan search: where its codes and float table are, and the constant
// added to its table sums (l2: ||q - c||^2; inner products: -q.c).
struct Probe {
  std::int32_t list;
  float base;
  // its float table [m, 16], entry i = ta[i] + alpha * tb[i] (ta null: alpha * tb[i]), computed
  // when needed as fastscan_lut computes it (alpha a power of two: the same float), so no table
  // is stored per probed list (l2: the terms and -2 times the query's codeword products)
  const float* ta;
  const float* tb;
  float alpha;
  const FastScanCodes* codes;
  const std::int64_t* ids;
  float entry(std::int64_t i) const noexcept { return ta ? ta[i] + alpha * tb[i] : alpha * tb[i]; }
};

// Where a fast-scan candidate of the first pass is: its probe (index into the probes) and its
// position in that list.
struct BoundedRef {
  std::int64_t pos;
  std::int32_t probe;
};

// The first pass of a fast-scan search, exact: every vector that gets through the SIMD threshold
// is kept with its interval, and bound() is a value that at least keep upper ends seen are at or
// below (so at least the keep-th nearest distance): no vector whose lower end exceeds it can be
// among the keep nearest. Two ways to keep the bound, by the cost of their branch mispredictions:
// - keep <= kHeapKeep: a max-heap of the keep smallest upper ends (the bound is exact at once;
//   an update costs a few mispredicted branches per level);
// - larger keep: the buffer is compacted each time it doubles (first at keep items, as FAISS's
//   ReservoirTopN): the bound is lowered to within 1/4096 of the upper ends' spread above the
//   keep-th smallest by bisection with branch-free counts (a comparison-based selection
//   mispredicts about every other branch on such data), then items whose lower end is above it
//   are dropped.
class BoundedCandidates {
 public:
  static constexpr std::size_t kHeapKeep = 16;

  void reset(std::size_t keep) {
    keep_ = keep;
    lbs_.clear();
    ubs_.clear();
    refs_.clear();
    heap_.clear();
    bound_ = min_ub_ = min_width_ = kInf;
    next_ = keep <= kHeapKeep ? 4096 : keep;
  }
  float bound() const noexcept { return bound_; }
  // Adds a candidate with interval [lb, ub] (lb <= bound()); true when the bound has changed.
  bool push(float lb, float ub, std::int32_t probe, std::int64_t pos) {
    lbs_.push_back(lb);
    ubs_.push_back(ub);
    refs_.push_back({pos, probe});
    if (keep_ > kHeapKeep) {
      min_ub_ = ub < min_ub_ ? ub : min_ub_;  // (never dropped by a compaction: its lb <= ub <= bound)
      min_width_ = ub - lb < min_width_ ? ub - lb : min_width_;
      if (lbs_.size() < next_) return false;
      const float before = bound_;
      compact();
      return bound_ != before;
    }
    if (lbs_.size() >= next_) compact();
    if (heap_.size() < keep_) {
      heap_.push_back(ub);
      std::push_heap(heap_.begin(), heap_.end());
      if (heap_.size() < keep_) return false;
    } else {
      if (!(ub < heap_.front())) return false;
      std::pop_heap(heap_.begin(), heap_.end());
      heap_.back() = ub;
      std::push_heap(heap_.begin(), heap_.end());
    }
    bound_ = heap_.front();
    return true;
  }
  // Lowers the bound (bisection, large keep) and drops the items whose lower end is above it.
  void compact() {
    const std::size_t n = lbs_.size();
    if (keep_ > kHeapKeep && n > keep_) {
      const float* ub = ubs_.data();
      // invariant: at least keep upper ends are <= hi (the bound: the items that set it are
      // still here); fewer than keep are <= lo. Stop at 1/8 of the narrowest interval: a finer
      // bound changes little.
      float lo = min_ub_, hi = bound_;
      for (int it = 0; it < 12; ++it) {
        const float mid = lo + (hi - lo) * 0.5f;
        if (!(mid > lo && mid < hi) || hi - lo < 0.125f * min_width_) break;
        std::uint32_t count = 0;  // 32 bits: the loop vectorises
        for (std::size_t i = 0; i < n; ++i) count += ub[i] <= mid ? 1u : 0u;
        (count >= keep_ ? hi : lo) = mid;
        if (count == keep_) break;
      }
      bound_ = std::min(bound_, hi);
    } else if (keep_ > kHeapKeep && n == keep_ && bound_ == kInf) {  // the first bound: the largest upper end
      float hi = ubs_[0];
      for (std::size_t i = 1; i < n; ++i) hi = ubs_[i] > hi ? ubs_[i] : hi;
      bound_ = hi;
    }
    // without a branch per item, and from locals (a float store could alias bound_, which the
    // loop would then reload every time)
    const float bound = bound_;
    float* const lb = lbs_.data();
    float* const ub = ubs_.data();
    BoundedRef* const rf = refs_.data();
    std::size_t w = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const float l = lb[i], u = ub[i];
      const BoundedRef r = rf[i];
      lb[w] = l;
      ub[w] = u;
      rf[w] = r;
      w += l <= bound ? 1 : 0;
    }
    lbs_.resize(w);
    ubs_.resize(w);
    refs_.resize(w);
    next_ = keep_ > kHeapKeep ? std::max<std::size_t>(2 * keep_, 2 * w) : std::max<std::size_t>(4096, 2 * w);
  }
  std::size_t size() const noexcept { return lbs_.size(); }
  const BoundedRef& ref(std::size_t i) const noexcept { return refs_[i]; }

 private:
  std::size_t keep_ = 0, next_ = 0;
  float bound_ = kInf, min_ub_ = kInf, min_width_ = kInf;
  std::vector<float> lbs_, ubs_;   // the items' intervals, contiguous for the counts
  std::vector<BoundedRef> refs_;
  std::vector<float> heap_;        // keep <= kHeapKeep: max-heap of the keep smallest upper ends
};

// The float ADC sums of two vectors (i of probe x, k of probe y), straight from their blocks:
// byte i % 16 of each sub-quantizer's 16, low nibble for vectors 0..15 of the block, high for
// 16..31. Each sum is two alternating chains (s0 over even, s1 over odd sub-quantizers, then
// s0 + s1); two vectors at once keep four chains in flight.
std::pair<float, float> fastscan_table_sums(const Probe& x, std::int64_t i, const Probe& y, std::int64_t k, std::int64_t m) noexcept {
  const std::uint8_t* bx = x.codes->data() + (i / 32) * x.codes->block_bytes() + (i % 16);
  const std::uint8_t* by = y.codes->data() + (k / 32) * y.codes->block_bytes() + (k % 16);
  const int sx = (i % 32) < 16 ? 0 : 4, sy = (k % 32) < 16 ? 0 : 4;
  float x0 = 0.f, x1 = 0.f, y0 = 0.f, y1 = 0.f;
  std::int64_t j = 0;
  for (; j + 2 <= m; j += 2) {
    x0 += x.entry(j * 16 + ((bx[j * 16] >> sx) & 0xf));
    y0 += y.entry(j * 16 + ((by[j * 16] >> sy) & 0xf));
    x1 += x.entry((j + 1) * 16 + ((bx[(j + 1) * 16] >> sx) & 0xf));
    y1 += y.entry((j + 1) * 16 + ((by[(j + 1) * 16] >> sy) & 0xf));
  }
  if (j < m) {
    x0 += x.entry(j * 16 + ((bx[j * 16] >> sx) & 0xf));
    y0 += y.entry(j * 16 + ((by[j * 16] >> sy) & 0xf));
  }
  return {x0 + x1, y0 + y1};
}

// Fast-scan's first pass over one probed list: the vectors whose quantized sum q puts their
// distance interval's lower end at or below the running bound, and that pass the filter, go into
// `out`. With d the float distance, |d - (lo + q / scale)| <= h / scale, where h is the rounding of
// the m table entries (m / 2 units) plus a margin for float arithmetic.
template <class Passes>
void scan_bounds(const Probe& probe, std::int32_t probe_index, const FastScanLut& lut, const Passes& passes, BoundedCandidates& out) {
  const float m = static_cast<float>(lut.m), scale = lut.scale, inv = 1.f / lut.scale;
  const float lo = probe.base + lut.bias;
  const float h = 0.5f * m + 1.f + m * 1e-6f * ((std::fabs(probe.base) + std::fabs(lut.bias)) * scale + 255.f * m);
  // the smallest q whose lower end exceeds the bound, as the kernel's strict threshold
  auto threshold_for = [&](float bound) -> std::uint16_t {
    if (!(bound < kInf)) return 65535;
    const float x = (bound - lo) * scale + h;
    if (!(x >= 0.f)) return 0;
    return x >= 65533.f ? std::uint16_t{65535} : static_cast<std::uint16_t>(static_cast<std::uint32_t>(x) + 2);
  };
  std::uint16_t threshold = threshold_for(out.bound());
  fastscan_for_each_below(*probe.codes, lut, threshold, [&](std::int64_t i, std::uint16_t q) {
    const float lb = lo + (static_cast<float>(q) - h) * inv;
    if (lb > out.bound()) return;
    if (!passes(probe.ids[i])) return;
    if (out.push(lb, lo + (static_cast<float>(q) + h) * inv, probe_index, i)) threshold = threshold_for(out.bound());
  });
}

// Fast-scan's second pass: the float ADC distance of every candidate left whose interval reaches
// down to the bound, and the keep nearest of them into `out`, sorted unless `sort` is false (when
// re-ranking sorts them anyway).
void rescore_bounded(BoundedCandidates& bounded, std::span<const Probe> probes, std::int64_t m, float sign, std::size_t keep,
                     bool sort, std::vector<Candidate>& out) {
  bounded.compact();
  out.clear();
  // (after compact, every item's lower end is at or below the bound)
  const std::size_t n = bounded.size();
  for (std::size_t i = 0; i < n; i += 2) {
    const BoundedRef& x = bounded.ref(i);
    const BoundedRef& y = bounded.ref(i + 1 < n ? i + 1 : i);  // the last one twice when n is odd
    const Probe& px = probes[static_cast<std::size_t>(x.probe)];
    const Probe& py = probes[static_cast<std::size_t>(y.probe)];
    const auto [sx, sy] = fastscan_table_sums(px, x.pos, py, y.pos, m);
    out.push_back({px.base + sign * sx, px.ids[x.pos], px.list, x.pos});
    if (i + 1 < n) out.push_back({py.base + sign * sy, py.ids[y.pos], py.list, y.pos});
  }
  if (out.size() > keep) {
    std::nth_element(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(keep - 1), out.end(), Nearer{});
    out.resize(keep);
  }
  if (sort) std::sort(out.begin(), out.end(), Nearer{});
}

// The n smallest of keys[0..count) by (key, index) into out[0..n), the 4 smallest of them first
// in order (they give the fast-scan bound its first, tightest values; the order of the rest
// changes no result). A comparison-based selection over all keys (nth_element, partial_sort)
// mispredicts about every other branch: half the query time at nlist 512, nprobe 1. Instead a
// threshold found by bisection with branch-free counts leaves n to n + 16 keys (more only with
// ties), and only those are selected by comparison.
void select_nearest(const float* keys, std::int64_t count, std::int64_t n, std::vector<std::pair<float, std::int32_t>>& out) {
  if (out.size() < static_cast<std::size_t>(count)) out.resize(static_cast<std::size_t>(count));  // never shrunk: no refill
  float hi = kInf;  // invariant: at least n keys are <= hi
  if (n < count) {
    float lo4[4] = {keys[0], keys[0], keys[0], keys[0]}, hi4[4] = {keys[0], keys[0], keys[0], keys[0]};
    std::int64_t i = 0;
    for (; i + 4 <= count; i += 4)  // four independent chains
      for (int u = 0; u < 4; ++u) {
        lo4[u] = keys[i + u] < lo4[u] ? keys[i + u] : lo4[u];
        hi4[u] = keys[i + u] > hi4[u] ? keys[i + u] : hi4[u];
      }
    for (; i < count; ++i) {
      lo4[0] = keys[i] < lo4[0] ? keys[i] : lo4[0];
      hi4[0] = keys[i] > hi4[0] ? keys[i] : hi4[0];
    }
    float lo = std::min(std::min(lo4[0], lo4[1]), std::min(lo4[2], lo4[3]));
    hi = std::max(std::max(hi4[0], hi4[1]), std::max(hi4[2], hi4[3]));
    for (int it = 0; it < 32; ++it) {
      const float mid = lo + (hi - lo) * 0.5f;
      if (!(mid > lo && mid < hi)) break;
      std::uint32_t c = 0;  // 32 bits: the loop vectorises
      for (std::int64_t j = 0; j < count; ++j) c += keys[j] <= mid ? 1u : 0u;
      if (c < static_cast<std::uint64_t>(n)) {
        lo = mid;
      } else {
        hi = mid;
        if (c <= static_cast<std::uint64_t>(n) + 16) break;
      }
    }
  }
  std::size_t w = 0;  // the keys <= hi, in index order, without a branch per key
  for (std::int64_t i = 0; i < count; ++i) {
    out[w] = {keys[i], static_cast<std::int32_t>(i)};
    w += keys[i] <= hi ? 1 : 0;
  }
  const auto first = out.begin(), last = out.begin() + static_cast<std::ptrdiff_t>(w);
  if (static_cast<std::int64_t>(w) > n) std::nth_element(first, first + (n - 1), last);
  std::partial_sort(first, first + std::min<std::int64_t>(n, 4), first + n);
}

}  // namespace

// Per-search buffers, reused across the queries a thread runs.
struct IvfPqIndex<cpu>::Scratch {
  std::vector<float> normalized;   // the query, normalised (cosine)
  std::vector<float> residual;     // query - centroid (l2)
  Tensor<float> table;             // [m, ksub]
  Tensor<float> qtable;            // [m, ksub]: query . codewords (l2 with precomputed terms)
  FastScanLut lut;                 // the quantized table of the list being scanned (4-bit)
  std::vector<float> tables;       // [nprobe, m, 16]: each probed list's residual table (4-bit, l2 without terms)
  std::vector<Probe> probes;       // the lists a fast-scan search probed
  BoundedCandidates bounded;       // fast-scan's first pass
  std::vector<Candidate> rescored; // fast-scan's second pass
  std::vector<std::pair<float, std::int32_t>> coarse;
  std::vector<float> coarse_ip;    // [queries of a block, nlist]: q.c
  TopK top;
};

void IvfPqIndex<cpu>::List::own() {
  if (codes_view.data()) {
    codes.assign(codes_view.begin(), codes_view.end());
    codes_view = {};
  }
  if (vectors_view.data()) {
    vectors.assign(vectors_view.begin(), vectors_view.end());
    vectors_view = {};
  }
}

result<IvfPqIndex<cpu>> IvfPqIndex<cpu>::create(std::int64_t d, const IvfPqOptions& options) {
  if (options.nlist < 1)
    return status(errc::invalid_argument, fmt::format("IvfPqIndex: nlist = {}; at least one list is needed", options.nlist));
  if (options.nbits == 4 && options.m > 256)
    return status(errc::invalid_argument, fmt::format("IvfPqIndex: {} sub-quantizers; fast-scan (nbits 4) takes at most 256", options.m));
  auto pq = ProductQuantizer::create(d, options.m, options.nbits);
  if (!pq.ok()) return status(pq.status().code(), "IvfPqIndex: " + pq.status().message());
  IvfPqIndex index;
  index.d_ = d;
  index.opts_ = options;
  index.pq_ = std::move(pq).value();
  index.centroids_ = Tensor<float>({options.nlist, d});
  index.centroid_norms_.assign(static_cast<std::size_t>(options.nlist), 0.f);
  index.lists_.resize(static_cast<std::size_t>(options.nlist));
  for (auto& l : index.lists_)
    if (options.nbits == 4) l.fast = FastScanCodes(options.m);
  return index;
}

// Checks a [n, d] matrix of vectors (values finite; under cosine, no zero row) and, under cosine,
// normalises a copy into `normalized`; `use` is what to read afterwards.
status IvfPqIndex<cpu>::prepare_rows(TensorView<const float> x, const char* what, Tensor<float>& normalized,
                                     TensorView<const float>& use, ThreadPool* pool) const {
  QUARRY_RETURN_IF_ERROR(normalize_rows(x, what, normalized, use));
  if (opq_.dim() == 0 || use.dim(0) == 0) return {};
  Tensor<float> rotated = opq_.apply(use, pool);  // after the checks: finite, and normalised for cosine
  normalized = std::move(rotated);
  use = normalized.view();
  return {};
}

status IvfPqIndex<cpu>::normalize_rows(TensorView<const float> x, const char* what, Tensor<float>& normalized,
                                       TensorView<const float>& use) const {
  if (x.rank() != 2 || x.dim(1) != d_)
    return status(errc::shape_mismatch, fmt::format("IvfPqIndex::{}: vectors {} for an index of dimension {}; expected [n, {}]", what,
                                                    x.shape(), d_, d_));
  if (x.dim(0) > 0 && x.strides()[1] != 1) {
    normalized = x.contiguous();
    x = normalized.view();
  }
  QUARRY_RETURN_IF_ERROR(detail::check_finite_rows(x, what));
  use = x;
  if (opts_.metric != Metric::cosine) return {};
  Tensor<float> out = Tensor<float>::uninitialized({x.dim(0), d_});
  for (std::int64_t i = 0; i < x.dim(0); ++i) {
    const std::span<const float> row(&x(i, 0), static_cast<std::size_t>(d_));
    const double norm = std::sqrt(static_cast<double>(dot(row, row)));
    if (norm == 0)
      return status(errc::invalid_argument, fmt::format("IvfPqIndex::{}: row {} is a zero vector, which has no direction (cosine)", what, i));
    for (std::int64_t j = 0; j < d_; ++j) out(i, j) = static_cast<float>(row[static_cast<std::size_t>(j)] / norm);
  }
  normalized = std::move(out);
  use = normalized.view();
  return {};
}

status IvfPqIndex<cpu>::train(TensorView<const float> x, const IvfPqTrainOptions& options) {
  Tensor<float> owned;
  TensorView<const float> xs;
  opq_ = OpqRotation();
  QUARRY_RETURN_IF_ERROR(prepare_rows(x, "train", owned, xs));
  if (opts_.opq) {
    if (options.progress) options.progress("opq", 0, 1);
    OpqTrainOptions oo;
    oo.iterations = options.opq_iterations;
    oo.max_training_points = options.opq_max_points;
    oo.seed = options.seed + 2;
    oo.pool = options.pool;
    auto rot = OpqRotation::train(xs, opts_.m, opts_.nbits, oo);
    if (!rot.ok()) return status(rot.status().code(), "IvfPqIndex::train (OPQ): " + rot.status().message());
    Tensor<float> rotated = rot->apply(xs, options.pool);
    owned = std::move(rotated);
    xs = owned.view();
    opq_ = std::move(rot).value();
    if (options.progress) options.progress("opq", 1, 1);
  }
  const std::int64_t n = xs.dim(0);
  if (n < opts_.nlist)
    return status(errc::invalid_argument, fmt::format("IvfPqIndex::train: {} training vectors for {} lists", n, opts_.nlist));
  if (n < pq_.ksub())
    return status(errc::invalid_argument, fmt::format("IvfPqIndex::train: {} training vectors for {} PQ centroids", n, pq_.ksub()));
  const std::int64_t coarse_total = std::max(1, options.coarse_iterations);
  if (options.progress) options.progress("coarse", 0, coarse_total);
  KMeansOptions ko;
  ko.k = opts_.nlist;
  ko.iterations = options.coarse_iterations;
  ko.seed = options.seed;
  ko.max_points_per_centroid = options.max_points_per_centroid;
  ko.pool = options.pool;
  if (options.progress) ko.on_iteration = [&](int done, int) { options.progress("coarse", done, coarse_total); };
  auto km = kmeans(xs, ko);
  if (!km.ok()) return status(km.status().code(), "IvfPqIndex::train (coarse quantizer): " + km.status().message());
  Tensor<float> centroids = std::move(km.value().centroids);
  if (options.progress) options.progress("coarse", coarse_total, coarse_total);

  // PQ on the residuals of (a sample of) the training vectors.
  const std::int64_t keep = options.max_points_per_centroid > 0 ? std::min(n, pq_.ksub() * options.max_points_per_centroid) : n;
  const std::int64_t step_num = n, step_den = keep;  // every (n / keep)-th vector, evenly spread
  Tensor<float> sample = Tensor<float>::uninitialized({keep, d_});
  for (std::int64_t i = 0; i < keep; ++i) {
    const std::int64_t src = i * step_num / step_den;
    std::memcpy(&sample(i, 0), &xs(src, 0), static_cast<std::size_t>(d_) * sizeof(float));
  }
  std::vector<std::int64_t> labels(static_cast<std::size_t>(keep));
  assign_nearest(sample.view(), centroids.view(), labels, {}, options.pool);
  for (std::int64_t i = 0; i < keep; ++i)
    for (std::int64_t j = 0; j < d_; ++j) sample(i, j) -= centroids(labels[static_cast<std::size_t>(i)], j);
  const std::int64_t pq_total = opts_.m * std::max(1, options.pq_iterations);
  if (options.progress) options.progress("pq", 0, pq_total);
  PqTrainOptions po;
  po.iterations = options.pq_iterations;
  po.seed = options.seed + 1;
  po.max_points_per_centroid = options.max_points_per_centroid;
  po.pool = options.pool;
  if (options.progress) po.progress = [&](std::int64_t done, std::int64_t total) { options.progress("pq", done, total); };
  QUARRY_RETURN_IF_ERROR(pq_.train(sample.view(), po));
  if (options.progress) options.progress("pq", pq_total, pq_total);

  centroids_ = std::move(centroids);
  for (std::int64_t l = 0; l < opts_.nlist; ++l) {
    const std::span<const float> c(&centroids_(l, 0), static_cast<std::size_t>(d_));
    centroid_norms_[static_cast<std::size_t>(l)] = dot(c, c);
  }
  for (auto& list : lists_) {
    list = List();
    if (opts_.nbits == 4) list.fast = FastScanCodes(opts_.m);
  }
  where_.clear();
  next_id_ = 0;
  mapped_.reset();
  trained_ = true;
  build_terms();
  return {};
}

status IvfPqIndex<cpu>::add(TensorView<const float> x, ThreadPool* pool) {
  if (x.rank() != 2) return add_with_ids(x, {}, pool);  // the shape error
  std::vector<std::int64_t> ids(static_cast<std::size_t>(x.dim(0)));
  for (std::size_t i = 0; i < ids.size(); ++i) ids[i] = next_id_ + static_cast<std::int64_t>(i);
  return add_with_ids(x, ids, pool);
}

status IvfPqIndex<cpu>::add_with_ids(TensorView<const float> x, std::span<const std::int64_t> ids, ThreadPool* pool) {
  if (!trained_) return status(errc::invalid_argument, "IvfPqIndex::add: the index is not trained; call train() first");
  Tensor<float> owned;
  TensorView<const float> xs;
  QUARRY_RETURN_IF_ERROR(prepare_rows(x, "add", owned, xs, pool));
  const std::int64_t n = xs.dim(0);
  if (static_cast<std::int64_t>(ids.size()) != n)
    return status(errc::shape_mismatch, fmt::format("IvfPqIndex::add_with_ids: {} vectors but {} ids", n, ids.size()));
  std::unordered_set<std::int64_t> fresh;
  fresh.reserve(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    const std::int64_t id = ids[i];
    if (id < 0) return status(errc::invalid_argument, fmt::format("IvfPqIndex::add_with_ids: id {} of row {} is negative", id, i));
    if (where_.count(id)) return status(errc::invalid_argument, fmt::format("IvfPqIndex::add_with_ids: id {} of row {} is already in the index", id, i));
    if (!fresh.insert(id).second) return status(errc::invalid_argument, fmt::format("IvfPqIndex::add_with_ids: id {} appears twice (row {})", id, i));
  }
  if (n == 0) return {};

  std::vector<std::int64_t> labels(static_cast<std::size_t>(n));
  assign_nearest(xs, centroids_.view(), labels, {}, pool);
  Tensor<float> residuals = Tensor<float>::uninitialized({n, d_});
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < d_; ++j) residuals(i, j) = xs(i, j) - centroids_(labels[static_cast<std::size_t>(i)], j);
  auto codes = pq_.encode(residuals.view(), pool);
  if (!codes.ok()) return codes.status();
  const std::int64_t cs = pq_.code_size();
  where_.reserve(where_.size() + static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) {
    const auto l = static_cast<std::int32_t>(labels[static_cast<std::size_t>(i)]);
    List& list = lists_[static_cast<std::size_t>(l)];
    list.own();
    const std::uint8_t* code = &(*codes)(i, 0);
    const auto pos = static_cast<std::int64_t>(list.ids.size());
    list.ids.push_back(ids[static_cast<std::size_t>(i)]);
    if (opts_.nbits == 8) list.codes.insert(list.codes.end(), code, code + cs);
    else (void)list.fast.append({code, static_cast<std::size_t>(cs)}, 1);
    if (opts_.store_vectors) list.vectors.insert(list.vectors.end(), &xs(i, 0), &xs(i, 0) + d_);
    where_[ids[static_cast<std::size_t>(i)]] = Location{l, pos};
    next_id_ = std::max(next_id_, ids[static_cast<std::size_t>(i)] + 1);
  }
  return {};
}

std::int64_t IvfPqIndex<cpu>::remove(std::span<const std::int64_t> ids) {
  std::int64_t removed = 0;
  const std::int64_t cs = pq_.code_size();
  for (const std::int64_t id : ids) {
    const auto it = where_.find(id);
    if (it == where_.end()) continue;
    const Location at = it->second;
    List& list = lists_[static_cast<std::size_t>(at.list)];
    list.own();
    const auto last = static_cast<std::int64_t>(list.ids.size()) - 1;
    if (at.pos != last) {  // the list's last vector fills the hole
      const std::int64_t moved = list.ids[static_cast<std::size_t>(last)];
      list.ids[static_cast<std::size_t>(at.pos)] = moved;
      if (opts_.nbits == 8)
        std::memcpy(list.codes.data() + at.pos * cs, list.codes.data() + last * cs, static_cast<std::size_t>(cs));
      else list.fast.move(last, at.pos);
      if (opts_.store_vectors)
        std::memcpy(list.vectors.data() + at.pos * d_, list.vectors.data() + last * d_, static_cast<std::size_t>(d_) * sizeof(float));
      where_[moved].pos = at.pos;
    }
    list.ids.pop_back();
    if (opts_.nbits == 8) list.codes.resize(static_cast<std::size_t>(last * cs));
    else list.fast.truncate(last);
    if (opts_.store_vectors) list.vectors.resize(static_cast<std::size_t>(last * d_));
    where_.erase(it);
    ++removed;
  }
  return removed;
}

void IvfPqIndex<cpu>::set_max_precomputed_floats(std::int64_t floats) {
  max_term_floats_ = floats < 0 ? 0 : floats;
  if (trained_) build_terms();
}

void IvfPqIndex<cpu>::build_terms() {
  terms_.clear();
  const std::int64_t m = opts_.m, ksub = pq_.ksub(), dsub = pq_.sub_dim();
  codebook_t_.resize(static_cast<std::size_t>(m * dsub * ksub));
  for (std::int64_t j = 0; j < m; ++j)
    for (std::int64_t c = 0; c < ksub; ++c)
      for (std::int64_t t = 0; t < dsub; ++t)
        codebook_t_[static_cast<std::size_t>((j * dsub + t) * ksub + c)] = pq_.centroids().data()[(j * ksub + c) * dsub + t];
  if (opts_.metric != Metric::l2 || opts_.nlist * m * ksub > max_term_floats_) return;
  terms_.resize(static_cast<std::size_t>(opts_.nlist * m * ksub));
  const float* cb = pq_.centroids().data();  // [m, ksub, dsub]
  for (std::int64_t l = 0; l < opts_.nlist; ++l)
    for (std::int64_t j = 0; j < m; ++j)
      for (std::int64_t c = 0; c < ksub; ++c) {
        const float* r = cb + (j * ksub + c) * dsub;
        const float* cl = &centroids_(l, j * dsub);
        float rr = 0.f, cr = 0.f;
        for (std::int64_t t = 0; t < dsub; ++t) {
          rr += r[t] * r[t];
          cr += cl[t] * r[t];
        }
        terms_[static_cast<std::size_t>((l * m + j) * ksub + c)] = rr + 2.f * cr;
      }
}

void IvfPqIndex<cpu>::inner_product_table(const float* query, float* table) const noexcept {
  detail::kernels<detail::IndexKernels>().codeword_products(query, codebook_t_.data(), static_cast<std::size_t>(opts_.m),
                                                            static_cast<std::size_t>(pq_.sub_dim()), static_cast<std::size_t>(pq_.ksub()), table);
}

double IvfPqIndex<cpu>::bytes_per_vector() const noexcept {
  return static_cast<double>(pq_.code_size()) + sizeof(std::int64_t) + (opts_.store_vectors ? 4.0 * static_cast<double>(d_) : 0.0);
}

void IvfPqIndex<cpu>::search_one(const float* q, float* coarse_ip, std::int64_t k, const IvfPqSearchParams& params, Scratch& s,
                                 float* out_dist, std::int64_t* out_ids) const {
  const bool l2 = opts_.metric == Metric::l2;
  const std::int64_t nlist = opts_.nlist, m = opts_.m, ksub = pq_.ksub();
  const std::span<const float> query(q, static_cast<std::size_t>(d_));

  // The nprobe nearest lists: L2 ranks by ||c||^2 - 2 q.c, inner products by q.c.
  float* key = coarse_ip;  // in place: the coarse ranking key
  for (std::int64_t l = 0; l < nlist; ++l) key[l] = l2 ? centroid_norms_[static_cast<std::size_t>(l)] - 2 * key[l] : -key[l];
  const std::int64_t nprobe = std::min(params.nprobe, nlist);
  select_nearest(key, nlist, nprobe, s.coarse);

  const auto passes = [&](std::int64_t id) {
    if (!params.allowed_ids.empty()) {
      const auto word = static_cast<std::uint64_t>(id) / 64;
      if (word >= params.allowed_ids.size() || !((params.allowed_ids[word] >> (id % 64)) & 1)) return false;
    }
    return !params.filter || params.filter(id);
  };

  const std::int64_t keep = k * params.refine_factor;
  s.top.reset(static_cast<std::size_t>(keep));
  if (s.table.shape() != Shape{m, ksub}) s.table = Tensor<float>::uninitialized({m, ksub});
  float* table = s.table.data();
  // Inner products: one table for every list. L2 with the precomputed terms: the query's
  // products with the codewords, once; each list's table is then its terms minus twice those.
  const bool precomputed = l2 && !terms_.empty();
  if (!l2) inner_product_table(q, table);
  if (precomputed) {
    if (s.qtable.shape() != Shape{m, ksub}) s.qtable = Tensor<float>::uninitialized({m, ksub});
    inner_product_table(q, s.qtable.data());
  }
  const float qnorm = l2 ? dot(query, query) : 0.f;
  FastScanLut& lut = s.lut;
  if (opts_.nbits == 4) {
    s.probes.clear();
    s.bounded.reset(static_cast<std::size_t>(keep));
    if (l2 && !precomputed) s.tables.resize(static_cast<std::size_t>(nprobe * m * ksub));
  }
  if (!l2 && opts_.nbits == 4) {
    detail::build_fastscan_lut(nullptr, table, -1.f, m, nullptr, lut);  // minus the products: smaller is nearer
  }

  for (std::int64_t p = 0; p < nprobe; ++p) {
    const std::int32_t l = s.coarse[static_cast<std::size_t>(p)].second;
    const List& list = lists_[static_cast<std::size_t>(l)];
    if (list.ids.empty()) continue;
    // L2: the table of the query's residual to this list's centroid; inner products: the shared
    // table plus the constant q.c of the list (the internal distance is minus the product).
    // Fast-scan's second pass re-scores from each probed list's float table (Probe).
    float base = 0.f;
    float* list_table = table;
    if (opts_.nbits == 4 && l2 && !precomputed) list_table = s.tables.data() + p * m * ksub;
    Probe probe{l, 0.f, nullptr, table, 1.f, &list.fast, list.ids.data()};  // (fast-scan) inner products: the shared table
    if (precomputed) {
      // ||q - c - r||^2 = ||q - c||^2 + (||r||^2 + 2 c.r) - 2 q.r, the middle term per list
      const float* terms = terms_.data() + static_cast<std::size_t>(l) * static_cast<std::size_t>(m * ksub);
      const float* qt = s.qtable.data();
      if (opts_.nbits == 4) {
        detail::build_fastscan_lut(terms, qt, -2.f, m, nullptr, lut);  // the table's quantization, one pass
        probe.ta = terms;
        probe.tb = qt;
        probe.alpha = -2.f;
      } else {
        for (std::int64_t t = 0; t < m * ksub; ++t) list_table[t] = terms[t] - 2.f * qt[t];
      }
      base = std::max(0.f, qnorm + s.coarse[static_cast<std::size_t>(p)].first);
    } else if (l2) {
      s.residual.resize(static_cast<std::size_t>(d_));
      for (std::int64_t j = 0; j < d_; ++j) s.residual[static_cast<std::size_t>(j)] = q[j] - centroids_(l, j);
      pq_.compute_distance_table(s.residual, Metric::l2, TensorView<float>(list_table, Shape{m, ksub}));
      if (opts_.nbits == 4) detail::quantize_fastscan_lut_into(list_table, m, lut);
      probe.tb = list_table;
    } else {
      base = s.coarse[static_cast<std::size_t>(p)].first;  // -q.c
    }
    if (opts_.nbits == 4) {
      probe.base = base;
      s.probes.push_back(probe);
      scan_bounds(s.probes.back(), static_cast<std::int32_t>(s.probes.size() - 1), lut, passes, s.bounded);
      continue;
    }
    const float sign = l2 ? 1.f : -1.f;

    {
      const std::uint8_t* code = list.code_data();
      const auto count = static_cast<std::int64_t>(list.ids.size());
      for (std::int64_t i = 0; i < count; ++i, code += m) {
        // four independent chains of table lookups (one serial chain is latency-bound)
        float s0 = 0.f, s1 = 0.f, s2 = 0.f, s3 = 0.f;
        std::int64_t j = 0;
        for (; j + 4 <= m; j += 4) {
          s0 += table[j * 256 + code[j]];
          s1 += table[(j + 1) * 256 + code[j + 1]];
          s2 += table[(j + 2) * 256 + code[j + 2]];
          s3 += table[(j + 3) * 256 + code[j + 3]];
        }
        for (; j < m; ++j) s0 += table[j * 256 + code[j]];
        const float sum = (s0 + s1) + (s2 + s3);
        const float dist = base + sign * sum;
        if (dist > s.top.bound()) continue;
        const std::int64_t id = list.ids[static_cast<std::size_t>(i)];
        if (!passes(id)) continue;
        s.top.push({dist, id, l, i});
      }
    }
  }

  if (opts_.nbits == 4) rescore_bounded(s.bounded, s.probes, m, l2 ? 1.f : -1.f, static_cast<std::size_t>(keep), !opts_.store_vectors, s.rescored);
  std::vector<Candidate>& cand = opts_.nbits == 4 ? s.rescored : s.top.sorted();
  if (opts_.store_vectors) {  // exact distances on the full vectors
    // the vectors are scattered over the store (cache misses, not arithmetic, bound this):
    // request all their lines first so the misses overlap
    const std::size_t bytes = static_cast<std::size_t>(d_) * sizeof(float);
    for (const Candidate& c : cand) {
      const char* v = reinterpret_cast<const char*>(lists_[static_cast<std::size_t>(c.list)].vector_data() + c.pos * d_);
      for (std::size_t off = 0; off < bytes; off += 64) __builtin_prefetch(v + off);
    }
    for (Candidate& c : cand) {
      const float* v = lists_[static_cast<std::size_t>(c.list)].vector_data() + c.pos * d_;
      const std::span<const float> vec(v, static_cast<std::size_t>(d_));
      c.dist = l2 ? l2_sqr(query, vec) : -dot(query, vec);
    }
    // only the k nearest are returned
    const auto top = cand.begin() + std::min<std::ptrdiff_t>(static_cast<std::ptrdiff_t>(k), static_cast<std::ptrdiff_t>(cand.size()));
    std::partial_sort(cand.begin(), top, cand.end(), Nearer{});
  }
  const std::int64_t found = std::min<std::int64_t>(k, static_cast<std::int64_t>(cand.size()));
  for (std::int64_t r = 0; r < k; ++r) {
    if (r < found) {
      out_ids[r] = cand[static_cast<std::size_t>(r)].id;
      out_dist[r] = l2 ? cand[static_cast<std::size_t>(r)].dist : -cand[static_cast<std::size_t>(r)].dist;
    } else {
      out_ids[r] = -1;
      out_dist[r] = l2 ? kInf : -kInf;
    }
  }
}

result<SearchResults> IvfPqIndex<cpu>::search(std::span<const float> query, std::int64_t k, const IvfPqSearchParams& params) const {
  return search_batch(TensorView<const float>(query.data(), Shape{1, static_cast<std::int64_t>(query.size())}), k, params);
}

result<SearchResults> IvfPqIndex<cpu>::search_batch(TensorView<const float> queries, std::int64_t k, const IvfPqSearchParams& params,
                                                    ThreadPool* pool) const {
  if (!trained_) return status(errc::invalid_argument, "IvfPqIndex::search: the index is not trained");
  if (k < 1) return status(errc::invalid_argument, fmt::format("IvfPqIndex::search: k = {}; at least 1", k));
  if (params.nprobe < 1) return status(errc::invalid_argument, fmt::format("IvfPqIndex::search: nprobe = {}; at least 1", params.nprobe));
  if (params.refine_factor < 1)
    return status(errc::invalid_argument, fmt::format("IvfPqIndex::search: refine_factor = {}; at least 1", params.refine_factor));
  Tensor<float> owned;
  TensorView<const float> qs;
  QUARRY_RETURN_IF_ERROR(prepare_rows(queries, "search", owned, qs, pool));
  SearchResults out;
  out.nq = qs.dim(0);
  out.k = k;
  out.distances.resize(static_cast<std::size_t>(out.nq * k));
  out.ids.resize(static_cast<std::size_t>(out.nq * k));
  const std::int64_t ld = out.nq > 1 ? qs.strides()[0] : d_;
  // The coarse products q.c of up to 8 queries at a time, so the centroids are read from memory
  // once per 8 queries, not once per query (at nlist 512 they are 256 KiB, past L1 and L2 speed).
  const std::int64_t nlist = opts_.nlist;
  parallel_for(pool, 0, out.nq, [&](std::int64_t q0, std::int64_t q1) {
    thread_local Scratch s;
    for (std::int64_t b0 = q0; b0 < q1; b0 += 8) {
      const std::int64_t nb = std::min<std::int64_t>(8, q1 - b0);
      s.coarse_ip.resize(static_cast<std::size_t>(nb * nlist));
      detail::kernels<detail::IndexKernels>().inner_products(centroids_.data(), static_cast<std::size_t>(nlist), static_cast<std::size_t>(d_),
                                                             static_cast<std::size_t>(d_), qs.data() + b0 * ld, static_cast<std::size_t>(nb),
                                                             static_cast<std::size_t>(ld), s.coarse_ip.data());
      for (std::int64_t q = b0; q < b0 + nb; ++q)
        search_one(qs.data() + q * ld, s.coarse_ip.data() + (q - b0) * nlist, k, params, s, out.distances.data() + q * k,
                   out.ids.data() + q * k);
    }
  });
  return out;
}

// ---- Files ----

namespace {

// 1.0; an index with OPQ is written as 1.1 (its OPQR section changes what every vector means).
const FileFormat kIvfPqFormat{"QRYIVFPQ", 1, 0};
const FileFormat kIvfPqFormatOpq{"QRYIVFPQ", 1, 1};

// META: the index's shape, fixed-width fields in native byte order (the section file's
// endianness tag rejects the other order).
struct Meta {
  std::int64_t d, nlist, m, next_id, ntotal;
  std::int32_t nbits, metric, store_vectors, trained;
};
static_assert(sizeof(Meta) == 56 && std::is_trivially_copyable_v<Meta>);

template <class T>
std::span<const std::byte> as_bytes_of(const std::vector<T>& v) {
  return std::as_bytes(std::span<const T>(v));
}

}  // namespace

status IvfPqIndex<cpu>::save(const std::string& path) const {
  SectionFileWriter w(opq_.dim() ? kIvfPqFormatOpq : kIvfPqFormat);
  const Meta meta{d_, opts_.nlist, opts_.m, next_id_, size(), opts_.nbits, static_cast<std::int32_t>(opts_.metric),
                  opts_.store_vectors ? 1 : 0, trained_ ? 1 : 0};
  std::vector<std::byte> meta_bytes(sizeof(Meta));
  std::memcpy(meta_bytes.data(), &meta, sizeof(Meta));
  w.add("META", std::move(meta_bytes));
  w.add("CENT", std::as_bytes(centroids_.span()));
  w.add("PQCB", std::as_bytes(pq_.centroids().span()));
  std::vector<std::int64_t> sizes;
  for (const List& l : lists_) sizes.push_back(static_cast<std::int64_t>(l.ids.size()));
  w.add("LSIZ", as_bytes_of(sizes));
  w.add_stream("IDS_", [this](SectionSink& out) -> status {
    for (const List& l : lists_) QUARRY_RETURN_IF_ERROR(out.write_array(std::span<const std::int64_t>(l.ids)));
    return {};
  });
  w.add_stream("CODE", [this](SectionSink& out) -> status {
    const std::int64_t cs = pq_.code_size();
    for (const List& l : lists_) {
      if (opts_.nbits == 8) QUARRY_RETURN_IF_ERROR(out.write_array(std::span<const std::uint8_t>(l.code_data(), l.ids.size() * cs)));
      else QUARRY_RETURN_IF_ERROR(out.write_array(l.fast.bytes()));
    }
    return {};
  });
  if (opq_.dim()) w.add("OPQR", std::as_bytes(opq_.matrix().span()));
  if (opts_.store_vectors)
    w.add_stream("VECS", [this](SectionSink& out) -> status {
      for (const List& l : lists_)
        QUARRY_RETURN_IF_ERROR(out.write_array(std::span<const float>(l.vector_data(), l.ids.size() * static_cast<std::size_t>(d_))));
      return {};
    });
  return w.write(path);
}

namespace {

// The whole of a section (checked against its expected size), its checksum verified unless lazy.
result<std::span<const std::byte>> section_of(const SectionFile& f, std::string_view tag, std::uint64_t expected, bool lazy) {
  std::span<const std::byte> bytes;
  if (lazy) {
    const auto it = std::find_if(f.sections().begin(), f.sections().end(), [&](const SectionInfo& s) { return s.tag == tag; });
    if (it == f.sections().end()) return status(errc::corrupt_data, fmt::format("{}: no {} section", f.what(), tag));
    bytes = f.bytes().subspan(static_cast<std::size_t>(it->offset), static_cast<std::size_t>(it->size));
  } else {
    auto got = f.section(tag);
    if (!got.ok()) return status(errc::corrupt_data, got.status().message());
    bytes = *got;
  }
  if (bytes.size() != expected)
    return status(errc::corrupt_data, fmt::format("{}: section {} holds {} bytes; the index's shape needs {}", f.what(), tag, bytes.size(), expected));
  return bytes;
}

status check_finite(std::span<const float> v, const std::string& what, std::string_view tag) {
  for (std::size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i])) return status(errc::corrupt_data, fmt::format("{}: section {} value {} is not finite", what, tag, i));
  return {};
}

}  // namespace

result<IvfPqIndex<cpu>> IvfPqIndex<cpu>::load(const std::string& path, const IvfPqLoadOptions& options) {
  SectionFileOptions so;
  so.verify = options.verify_all ? SectionVerify::on_open : SectionVerify::on_first_access;
  QUARRY_ASSIGN_OR_RETURN(SectionFile f, SectionFile::open(path, kIvfPqFormatOpq, so));
  auto file = std::make_shared<SectionFile>(std::move(f));
  return from_file(file, options);
}

result<IvfPqIndex<cpu>> IvfPqIndex<cpu>::load_bytes(std::span<const std::byte> bytes, const IvfPqLoadOptions& options) {
  SectionFileOptions so;
  so.verify = options.verify_all ? SectionVerify::on_open : SectionVerify::on_first_access;
  QUARRY_ASSIGN_OR_RETURN(SectionFile f, SectionFile::parse(bytes, kIvfPqFormatOpq, "IVF-PQ index bytes", so));
  auto file = std::make_shared<SectionFile>(std::move(f));
  return from_file(file, options);
}

result<IvfPqIndex<cpu>> IvfPqIndex<cpu>::from_file(const std::shared_ptr<const SectionFile>& file, const IvfPqLoadOptions& options) {
  const SectionFile& f = *file;
  const std::string& what = f.what();
  auto bad = [&](const std::string& m) { return status(errc::corrupt_data, what + ": " + m); };
  QUARRY_ASSIGN_OR_RETURN(auto meta_bytes, section_of(f, "META", sizeof(Meta), false));
  Meta meta;
  std::memcpy(&meta, meta_bytes.data(), sizeof(Meta));
  if (meta.metric < 0 || meta.metric > static_cast<std::int32_t>(Metric::cosine)) return bad(fmt::format("META metric {} is unknown", meta.metric));
  if (meta.store_vectors != 0 && meta.store_vectors != 1) return bad(fmt::format("META store_vectors is {}", meta.store_vectors));
  if (meta.trained != 1) return bad("META says the index was saved untrained");
  if (meta.nlist < 1 || meta.nlist > (std::int64_t{1} << 24)) return bad(fmt::format("META nlist {} is out of range 1..2^24", meta.nlist));
  if (meta.ntotal < 0 || meta.next_id < 0) return bad(fmt::format("META ntotal {} / next_id {} is negative", meta.ntotal, meta.next_id));
  // The shape, then the sizes of the sections it implies against the sections' real sizes,
  // before anything is allocated from META's numbers (found by fuzzing: a 100-byte file could
  // ask for 2^24 lists of 2^20 floats).
  if (meta.d < 1 || meta.d > (std::int64_t{1} << 20)) return bad(fmt::format("META d {} is out of range 1..2^20", meta.d));
  if (meta.nbits != 4 && meta.nbits != 8) return bad(fmt::format("META nbits is {}, not 4 or 8", meta.nbits));
  if (meta.m < 1 || meta.d % meta.m != 0) return bad(fmt::format("META m {} does not divide d {}", meta.m, meta.d));
  const std::int64_t d = meta.d, nlist = meta.nlist, ksub = std::int64_t{1} << meta.nbits;
  const std::uint64_t cent_bytes = static_cast<std::uint64_t>(nlist * d) * 4;  // <= 2^24 * 2^20 * 4
  const std::uint64_t pq_bytes = static_cast<std::uint64_t>(ksub * d) * 4;
  const auto ids_bytes = checked_mul(meta.ntotal, 8);
  if (!ids_bytes) return bad(fmt::format("META ntotal {} overflows", meta.ntotal));
  QUARRY_ASSIGN_OR_RETURN(auto cent, section_of(f, "CENT", cent_bytes, false));
  QUARRY_ASSIGN_OR_RETURN(auto pqcb, section_of(f, "PQCB", pq_bytes, false));
  IvfPqOptions o{meta.nlist, meta.m, meta.nbits, static_cast<Metric>(meta.metric), meta.store_vectors == 1};
  auto made = create(meta.d, o);  // checks d, m, nbits and their fit
  if (!made.ok()) return bad("META describes no valid index: " + made.status().message());
  IvfPqIndex idx = std::move(made).value();
  const std::int64_t cs = idx.pq_.code_size();

  QUARRY_ASSIGN_OR_RETURN(auto lsiz, section_of(f, "LSIZ", static_cast<std::uint64_t>(nlist) * 8, false));
  QUARRY_ASSIGN_OR_RETURN(auto idsb, section_of(f, "IDS_", static_cast<std::uint64_t>(*ids_bytes), false));
  std::vector<std::int64_t> sizes(static_cast<std::size_t>(nlist));
  std::memcpy(sizes.data(), lsiz.data(), lsiz.size());
  std::int64_t total = 0;
  std::uint64_t code_bytes = 0;
  for (std::int64_t l = 0; l < nlist; ++l) {
    const std::int64_t n = sizes[static_cast<std::size_t>(l)];
    const auto sum = n < 0 ? std::nullopt : checked_add(total, n);
    if (!sum || *sum > meta.ntotal)
      return bad(fmt::format("LSIZ list {} holds {} vectors: the lists add up to more than META's {}", l, n, meta.ntotal));
    total = *sum;
    // bounded: n <= ntotal, whose 8 bytes per id the file holds
    code_bytes += meta.nbits == 8 ? static_cast<std::uint64_t>(n * cs)
                                  : static_cast<std::uint64_t>((n + 31) / 32 * idx.lists_[0].fast.block_bytes());
  }
  if (total != meta.ntotal) return bad(fmt::format("LSIZ lists add up to {}, META says {}", total, meta.ntotal));
  const bool lazy = options.mmap && !options.verify_all;
  QUARRY_ASSIGN_OR_RETURN(auto codeb, section_of(f, "CODE", code_bytes, lazy));
  std::span<const std::byte> vecb;
  if (o.store_vectors) {
    const auto floats = checked_mul(meta.ntotal, d);
    const auto vbytes = floats ? checked_mul(*floats, 4) : std::nullopt;
    if (!vbytes) return bad("VECS size overflows");
    const auto vec_bytes = static_cast<std::uint64_t>(*vbytes);
    QUARRY_ASSIGN_OR_RETURN(vecb, section_of(f, "VECS", vec_bytes, lazy));
  }

  // Centroids and codebooks: finite values.
  std::memcpy(idx.centroids_.data(), cent.data(), cent.size());
  QUARRY_RETURN_IF_ERROR(check_finite(idx.centroids_.span(), what, "CENT"));
  Tensor<float> cb = Tensor<float>::uninitialized({meta.m, ksub, d / meta.m});
  std::memcpy(cb.data(), pqcb.data(), pqcb.size());
  QUARRY_RETURN_IF_ERROR(check_finite(cb.span(), what, "PQCB"));
  QUARRY_RETURN_IF_ERROR(idx.pq_.set_centroids(cb.view()));
  for (std::int64_t l = 0; l < nlist; ++l) {
    const std::span<const float> c(&idx.centroids_(l, 0), static_cast<std::size_t>(d));
    idx.centroid_norms_[static_cast<std::size_t>(l)] = dot(c, c);
  }

  // OPQ rotation: in 1.1 files that have it; a 1.0 file has none.
  if (f.contains("OPQR")) {
    if (f.minor() < 1) return bad("an OPQR section in a version 1.0 file");
    QUARRY_ASSIGN_OR_RETURN(auto rb, section_of(f, "OPQR", static_cast<std::uint64_t>(d * d) * 4, false));
    Tensor<float> r = Tensor<float>::uninitialized({d, d});
    std::memcpy(r.data(), rb.data(), rb.size());
    auto rot = OpqRotation::from_matrix(r.view());
    if (!rot.ok()) return bad("OPQR: " + rot.status().message());
    idx.opq_ = std::move(rot).value();
    idx.opts_.opq = true;
  }

  // Lists: ids (unique, >= 0, below next_id), codes, vectors.
  const auto* ids = reinterpret_cast<const std::byte*>(idsb.data());
  std::size_t id_at = 0, code_at = 0, vec_at = 0;
  idx.where_.reserve(static_cast<std::size_t>(meta.ntotal));
  for (std::int64_t l = 0; l < nlist; ++l) {
    List& list = idx.lists_[static_cast<std::size_t>(l)];
    const std::int64_t n = sizes[static_cast<std::size_t>(l)];
    list.ids.resize(static_cast<std::size_t>(n));
    std::memcpy(list.ids.data(), ids + id_at * 8, static_cast<std::size_t>(n) * 8);
    id_at += static_cast<std::size_t>(n);
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int64_t id = list.ids[static_cast<std::size_t>(i)];
      if (id < 0 || id >= meta.next_id) return bad(fmt::format("IDS_ id {} in list {} is outside 0..{}", id, l, meta.next_id - 1));
      if (!idx.where_.emplace(id, Location{static_cast<std::int32_t>(l), i}).second)
        return bad(fmt::format("IDS_ id {} appears twice", id));
    }
    const auto* cbytes = reinterpret_cast<const std::uint8_t*>(codeb.data()) + code_at;
    if (meta.nbits == 8) {
      const std::size_t nb = static_cast<std::size_t>(n * cs);
      if (options.mmap) list.codes_view = {cbytes, nb};
      else list.codes.assign(cbytes, cbytes + nb);
      code_at += nb;
    } else {
      const std::size_t nb = static_cast<std::size_t>((n + 31) / 32 * list.fast.block_bytes());
      const std::span<const std::uint8_t> blocks(cbytes, nb);
      QUARRY_RETURN_IF_ERROR(options.mmap ? list.fast.view_blocks(blocks, n) : list.fast.assign_blocks(blocks, n));
      code_at += nb;
    }
    if (o.store_vectors) {
      const std::size_t nv = static_cast<std::size_t>(n * d);
      const auto* v = reinterpret_cast<const float*>(vecb.data()) + vec_at;
      if (options.mmap) list.vectors_view = {v, nv};
      else list.vectors.assign(v, v + nv);
      if (!lazy) QUARRY_RETURN_IF_ERROR(check_finite({v, nv}, what, "VECS"));
      vec_at += nv;
    }
  }
  // 8-bit codes index 256-entry tables: any byte is valid. 4-bit nibbles likewise.
  idx.next_id_ = meta.next_id;
  idx.trained_ = true;
  idx.build_terms();
  if (options.mmap) idx.mapped_ = file;
  return idx;
}

}  // namespace quarry
