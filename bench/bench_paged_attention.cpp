// bench_paged_attention: the kv module on the CPU (issue 5, "Benchmarks"): paged decode attention
// against this machine's measured DRAM read bandwidth, the prefix cache's time to first token,
// and the memory paging saves. The GPU counterpart is bench/cuda/bench_cuda_paged_attention.cpp
// (same shapes and row names).
//
// 1. decode   paged_decode_attention, 32 query heads, 8 KV heads (--kv-heads), head_dim 128, pages
//             of 16 tokens (--page-size); contexts 1k / 4k / 16k / 32k, batch 1 and 16, K/V f16
//             (every context), and bf16, f32, INT8 (f32 scale per token and head), INT4 (f32 scale
//             per group of 32) at 16k (--full-grid: every dtype at every context); 1 thread and all
//             threads (--threads N).
//             The pages of a batch live in a pool sized for that batch; "paged": each sequence's
//             pages are a random permutation of the pool's (as after churn), "contiguous": the same
//             pages in order, sequence after sequence (indices 0..n-1: one contiguous buffer, read
//             by the same kernel), "pool order": the same pages as a fresh BlockPool hands them to
//             the batch's sequences growing in step, a page each in turn (runs of extent_pages = 8
//             pages), "churned": as a BlockPool hands them out while other requests keep taking and
//             freeing pages (churned_batch_page_table: prompts of 1-32 pages, 1-64 pages decoded,
//             preempted when the batch needs their pages; runs of about 1.1-2 pages: churn_mean_run).
//             The four are timed alternately. Small rows rotate through several
//             copies of the pool (as a model's layers) so that every call reads at least 8x the
//             last-level cache: every row reads its K/V from DRAM.
//             Figures: ms per call (median of samples), gbps = K/V bytes read per call (values and
//             scales) / time, bw_ratio = gbps / the measured DRAM read bandwidth on as many threads
//             (target >= 0.8 at long contexts), gops = attention GFLOP/s (4 flops per query head and
//             K/V element pair) and peak_ratio = gops / the measured f32 FMA peak (decode with 4
//             query heads per KV head does 8 flops per K/V element: near the peak, a kernel is
//             compute-bound, not memory-bound), paged_vs_contiguous = contiguous time / paged time
//             (target >= 0.95, i.e. paged at most 5% slower), pool_vs_contiguous and
//             churn_vs_contiguous the same for the pool and churned orders, speedup_vs_f16 = f16
//             time / this dtype's time, same shape and threads, f16 pages timed in turn with this
//             dtype's (INT8 target >= 1.7 at 16k). The ratios are medians of the ratios of samples
//             taken back to back.
//             page_read_ratio = gbps / the read rate of the row's page size in random order (a
//             plain SIMD read of shuffled blocks of one page's K values, all kv heads, two side
//             by side as the kernels read them, measured per size: 32 KiB for f16 / bf16, 16 KiB
//             INT8, 8 KiB INT4, 64 KiB f32).
//             Each type also gets an "in cache" row: batch 1, 512 tokens, 1 thread, the same pages
//             every call: the kernels' arithmetic alone, as gops and peak_ratio, and (but f16)
//             against f16 the same way. f16's peak_ratio there bounds its 1-thread DRAM rows.
// 2. prefix   time to first token of 16 requests sharing a 1,024-token prefix plus 64 unique tokens,
//             one transformer layer's attention block, all threads: embedding rows -> QKV projection
//             (quarry qgemm, W8A8, fused 6144x4096 int8 weight) -> K/V written to a BlockPool (f16)
//             with write() -> paged_prefill_attention. Without the cache every request computes its
//             whole prompt; with it the first computes and publish()es, the others create(prompt),
//             share the prefix pages and compute their suffix only. The requests run in turn, the
//             two ways interleaved. Not included: RoPE, the output projection, the MLP, other
//             layers, the LM head (all per new token, so they would widen the gap).
// 3. memory   200 sequences, lengths log-normal (median 400, sigma 1.1) clamped to 16..4096, fixed
//             seed, allocated in a BlockPool (pages of 16, 32, 64 tokens): bytes allocated vs bytes
//             the tokens need, against contiguous per-sequence buffers of the maximum length 4096.
// 4. prefill  paged_prefill_attention over one 1,024-token prompt (every token a causal query
//             row), f16 pages of 16 tokens in a shuffled order, 32 / 8 heads, dim 128, 1 thread and
//             all threads: GFLOP/s (4 * head_dim flops per query head and visible key) and
//             peak_ratio = GFLOP/s / the measured f32 FMA peak (the kernels' work is dense tile
//             products: compute-bound).
//
// --quick: contexts 1k and 4k (the dtype comparison at 4k), 4 requests with a 512-token prefix,
// a 512-token prompt for prefill;
// figures not for publishing. Selection: --sections, --contexts, --batches, --dtypes, and
// --kv-heads for the decode section's GQA (default 8; 32: none) (see --help).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include <quarry/core/tensor.hpp>
#include <quarry/core/thread_pool.hpp>
#include <quarry/kv/block_pool.hpp>
#include <quarry/kv/paged_attention.hpp>
#include <quarry/kv/prefill_attention.hpp>
#include <quarry/quant/qgemm.hpp>
#include <quarry/quant/quantized_tensor.hpp>

#include "common/machine.hpp"
#include "common/options.hpp"
#include "common/page_tables.hpp"
#include "common/report.hpp"
#include "common/timing.hpp"
#include "common/yardsticks.hpp"

namespace {

using namespace quarry;
using namespace quarry::bench;

// The decode shape of issue 5 (a Llama-3-8B-like attention layer).
constexpr std::int64_t kHeads = 32, kKvHeads = 8, kDim = 128, kPage = 16;
// The decode section's pages: kv heads (--kv-heads) and tokens per page (--page-size).
struct PageShape {
  std::int64_t kv_heads = kKvHeads, tokens = kPage;
  std::int64_t pages_for(std::int64_t context) const { return (context + tokens - 1) / tokens; }
};
// What the decode section's row names add for a shape other than the default (" kv 32 page 64").
std::string shape_suffix(const PageShape& s) {
  return fmt::format("{}{}", s.kv_heads == kKvHeads ? "" : fmt::format(" kv {}", s.kv_heads), s.tokens == kPage ? "" : fmt::format(" page {}", s.tokens));
}
// INT4 pages: one f32 scale per group of this many elements of a token and head.
constexpr std::int64_t kInt4Group = 32;
// The in-cache comparison of the K/V types: 512 tokens (4 MiB of f16 K/V for one sequence).
constexpr std::int64_t kCachedContext = 512;

// Flops of one decode call: q . k and p * v for every query head, token and element, 4 flops per
// query head and K/V element pair; with 4 query heads per KV head that is 8 flops per K/V
// element, so the f32 FMA peak bounds the K/V elements per second a kernel can take.
double decode_flops(std::int64_t batch, std::int64_t context) { return 4.0 * static_cast<double>(batch * context * kHeads * kDim); }

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n == 0 ? 0.0 : (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]));
}

// ---------------------------------------------------------------------------------------------
// Command line: these options are this benchmark's own; the rest goes to
// bench_options_from_command_line (--json, --quick, --threads).

enum class Kv { f16, bf16, f32, i8, i4 };
constexpr Kv kAllKv[] = {Kv::f16, Kv::bf16, Kv::f32, Kv::i8, Kv::i4};

const char* kv_name(Kv t) {
  switch (t) {
    case Kv::f16: return "f16";
    case Kv::bf16: return "bf16";
    case Kv::f32: return "f32";
    case Kv::i8: return "i8";
    case Kv::i4: return "i4";
  }
  return "?";
}

struct Args {
  bool decode = true, prefix = true, memory = true, prefill = true;
  std::vector<std::int64_t> contexts;  // empty: the default (see the top)
  std::vector<std::int64_t> batches;   // empty: 1 and 16
  std::vector<Kv> dtypes;              // empty: all
  bool full_grid = false;              // every dtype at every context (default: f16 only)
  std::int64_t requests = 0;           // 0: 16 (quick: 4)
  std::int64_t prefix_tokens = 0;      // 0: 1024 (quick: 512)
  std::int64_t unique_tokens = 64;
  PageShape shape;                     // decode section (the prefix, memory and prefill sections keep the defaults)
};

constexpr const char* kWhat =
    "quarry paged decode attention vs DRAM bandwidth (paged vs contiguous, f16 / bf16 / f32 / INT8 / INT4 K/V), prefix-cache "
    "time to first token, prefill attention vs the FMA peak, paged vs contiguous memory";

std::vector<const char*> take_args(int argc, char** argv, Args& a) {
  const std::string_view program = program_name(argc, argv, "bench_paged_attention");
  const auto own_usage = [] {
    return std::string(
        "  --sections LIST    sections to run, comma-separated: decode, prefix, memory, prefill (default all)\n"
        "  --contexts LIST    decode contexts, e.g. 1k,4k,16k,32k (default; --quick: 1k,4k)\n"
        "  --batches LIST     decode batch sizes (default 1,16)\n"
        "  --kv-heads N       decode KV heads for the 32 query heads: 1, 2, 4, 8 (default), 16 or 32 (no GQA)\n"
        "  --page-size N      decode tokens per page (default 16)\n"
        "  --dtypes LIST      decode K/V types: f16, bf16, f32, i8, i4 (default all)\n"
        "  --full-grid        every dtype at every context (default: f16 at every context, the others\n"
        "                     at 16k, or the largest context given below it)\n"
        "  --requests N       prefix section: requests (default 16; --quick: 4)\n"
        "  --prefix N         prefix section: shared prompt tokens (default 1024; --quick: 512)\n"
        "  --unique N         prefix section: unique prompt tokens per request (default 64)\n");
  };
  // A count, also written as 1k / 4k / 16k / 32k (k = 1024).
  const auto count = [&](std::string_view name, const std::string& value, std::int64_t lo, std::int64_t hi) {
    return parse_count(program, name, value, lo, hi, CountSuffix::kibi);
  };
  const OwnOption options[] = {
      {"--full-grid", false, [&](const std::string&) { a.full_grid = true; }},
      {"--sections", true,
       [&](const std::string& value) {
         a.decode = a.prefix = a.memory = a.prefill = false;
         for (const std::string& s : split_commas(value)) {
           if (s == "decode") a.decode = true;
           else if (s == "prefix") a.prefix = true;
           else if (s == "memory") a.memory = true;
           else if (s == "prefill") a.prefill = true;
           else if (s == "all") a.decode = a.prefix = a.memory = a.prefill = true;
           else usage_error(program, fmt::format("--sections: unknown section '{}' (decode, prefix, memory, prefill, all)", s));
         }
       }},
      {"--contexts", true,
       [&](const std::string& value) {
         for (const std::string& s : split_commas(value)) a.contexts.push_back(count("--contexts", s, 16, 1 << 20));
       }},
      {"--batches", true,
       [&](const std::string& value) {
         for (const std::string& s : split_commas(value)) a.batches.push_back(count("--batches", s, 1, 1024));
       }},
      {"--dtypes", true,
       [&](const std::string& value) {
         for (const std::string& s : split_commas(value)) {
           const auto it = std::find_if(std::begin(kAllKv), std::end(kAllKv), [&](Kv t) { return s == kv_name(t); });
           if (it == std::end(kAllKv)) usage_error(program, fmt::format("--dtypes: unknown type '{}' (f16, bf16, f32, i8, i4)", s));
           if (std::find(a.dtypes.begin(), a.dtypes.end(), *it) == a.dtypes.end()) a.dtypes.push_back(*it);
         }
       }},
      {"--kv-heads", true,
       [&](const std::string& value) {
         a.shape.kv_heads = count("--kv-heads", value, 1, kHeads);
         if (kHeads % a.shape.kv_heads != 0)
           usage_error(program, fmt::format("--kv-heads: {} does not divide the {} query heads", a.shape.kv_heads, kHeads));
       }},
      {"--page-size", true, [&](const std::string& value) { a.shape.tokens = count("--page-size", value, 1, 1024); }},
      {"--requests", true, [&](const std::string& value) { a.requests = count("--requests", value, 2, 1024); }},
      {"--prefix", true, [&](const std::string& value) { a.prefix_tokens = count("--prefix", value, kPage, 1 << 16); }},
      {"--unique", true, [&](const std::string& value) { a.unique_tokens = count("--unique", value, 1, 1 << 16); }},
  };
  return take_own_options(argc, argv, program, kWhat, own_usage, options);
}

// Lines printed after the table: the ratios the targets are about, by topic.
struct Summary {
  enum Topic { bandwidth, dtype, paging, prefix, prefill, memory, topics };
  std::vector<std::string> lines[topics];
  template <class... A>
  void add(Topic topic, fmt::format_string<A...> f, A&&... args) {
    lines[topic].push_back(fmt::format(f, std::forward<A>(args)...));
  }
};

// ---------------------------------------------------------------------------------------------
// 1. Decode attention

// Bytes of one page of K (or V): values, then (INT8, INT4) the f32 scales.
std::int64_t page_value_bytes(Kv t, const PageShape& s) {
  const std::int64_t elems = s.kv_heads * s.tokens * kDim;
  switch (t) {
    case Kv::f16:
    case Kv::bf16: return elems * 2;
    case Kv::f32: return elems * 4;
    case Kv::i8: return elems;
    case Kv::i4: return elems / 2;
  }
  return 0;
}
std::int64_t page_scale_count(Kv t, const PageShape& s) {
  if (t == Kv::i8) return s.kv_heads * s.tokens;
  if (t == Kv::i4) return s.kv_heads * s.tokens * (kDim / kInt4Group);
  return 0;
}
// K and V bytes of one page, values and scales: what attention reads per page.
std::int64_t page_kv_bytes(Kv t, const PageShape& s) { return 2 * (page_value_bytes(t, s) + 4 * page_scale_count(t, s)); }

// The ceiling of a decode row: the read rate of shuffled blocks of its pages' size (one page's
// K values, all kv heads: what a kernel reads in one sweep), 1 thread and all, measured per page
// size (measure_scattered_read_gbps): smaller blocks read slower in random order (on Zen 4,
// INT8's 16 KiB pages 0.85-0.92 of f16's 32 KiB ones, 1 and 2 threads).
struct PageCeilings {
  std::map<std::int64_t, std::pair<double, double>> gbps;  // block bytes -> (1 thread, all threads)

  double for_size(std::int64_t bytes, unsigned threads) const {
    const auto& [one, all] = gbps.at(bytes);
    return threads <= 1 ? one : all;
  }
  double for_row(Kv t, const PageShape& s, unsigned threads) const { return for_size(page_value_bytes(t, s), threads); }
};

// K and V pages (values and scales) of `pages` pages of one type and shape, filled with random
// data.
struct KvArena {
  Kv type = Kv::f16;
  std::int64_t pages = 0;
  PageShape shape;
  Tensor<std::uint8_t> k, v;
  Tensor<float> k_scales, v_scales;

  KvArena(Kv t, std::int64_t n, const PageShape& s) : type(t), pages(n), shape(s) {
    const std::int64_t vb = page_value_bytes(t, s) * n, sc = std::max<std::int64_t>(1, page_scale_count(t, s) * n);
    k = Tensor<std::uint8_t>::uninitialized(Shape{vb});
    v = Tensor<std::uint8_t>::uninitialized(Shape{vb});
    k_scales = Tensor<float>::full(Shape{sc}, t == Kv::i8 ? 0.02f : 0.25f);
    v_scales = Tensor<float>::full(Shape{sc}, t == Kv::i8 ? 0.02f : 0.25f);
    if (t == Kv::i8 || t == Kv::i4) {
      fill_random_bytes(k.data(), vb, 1);
      fill_random_bytes(v.data(), vb, 2);
    } else if (t == Kv::f16) {
      fill_template<f16>();
    } else if (t == Kv::bf16) {
      fill_template<bf16>();
    } else {
      fill_template<float>();
    }
  }

 private:
  static void fill_random_bytes(std::uint8_t* p, std::int64_t n, std::uint64_t seed) {
    std::uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
    std::int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      const std::uint64_t r = s ^ (s >> 29);
      std::memcpy(p + i, &r, 8);
    }
    for (; i < n; ++i) p[i] = static_cast<std::uint8_t>(i * 131);
  }
  // 61 random pages (normal values), copied over every page of K and V at different phases: every
  // byte written (mapped), NaN-free, and far quicker than drawing gigabytes of normals.
  template <class T>
  void fill_template() {
    constexpr std::int64_t kTemplatePages = 61;
    const std::int64_t elems = shape.kv_heads * shape.tokens * kDim;
    std::vector<T> tmpl(static_cast<std::size_t>(kTemplatePages * elems));
    std::mt19937 rng(5);
    std::normal_distribution<float> d(0.f, 1.f);
    for (T& x : tmpl) x = T(d(rng));
    const std::size_t bytes = static_cast<std::size_t>(elems) * sizeof(T);
    for (std::int64_t p = 0; p < pages; ++p) {
      std::memcpy(k.data() + p * static_cast<std::int64_t>(bytes), tmpl.data() + (p % kTemplatePages) * elems, bytes);
      std::memcpy(v.data() + p * static_cast<std::int64_t>(bytes), tmpl.data() + ((p + 29) % kTemplatePages) * elems, bytes);
    }
  }
};

// One decode call over pages [first, first + pages) of the arena.
void decode_call(const KvArena& a, std::int64_t first, std::int64_t pages, TensorView<const float> q, const PageTableCsr& table,
                 TensorView<float> out, ThreadPool* pool) {
  DecodeAttentionParams params;
  params.pool = pool;
  const Shape vs{pages, a.shape.kv_heads, a.shape.tokens, kDim};
  const std::uint8_t* kb = a.k.data() + first * page_value_bytes(a.type, a.shape);
  const std::uint8_t* vb = a.v.data() + first * page_value_bytes(a.type, a.shape);
  status st;
  switch (a.type) {
    case Kv::f16:
      st = paged_decode_attention(q, TensorView<const f16>(reinterpret_cast<const f16*>(kb), vs),
                                  TensorView<const f16>(reinterpret_cast<const f16*>(vb), vs), table, out, params);
      break;
    case Kv::bf16:
      st = paged_decode_attention(q, TensorView<const bf16>(reinterpret_cast<const bf16*>(kb), vs),
                                  TensorView<const bf16>(reinterpret_cast<const bf16*>(vb), vs), table, out, params);
      break;
    case Kv::f32:
      st = paged_decode_attention(q, TensorView<const float>(reinterpret_cast<const float*>(kb), vs),
                                  TensorView<const float>(reinterpret_cast<const float*>(vb), vs), table, out, params);
      break;
    case Kv::i8: {
      const Shape ss{pages, a.shape.kv_heads, a.shape.tokens};
      const std::int64_t so = first * page_scale_count(a.type, a.shape);
      const Int8KvPages k{TensorView<const std::int8_t>(reinterpret_cast<const std::int8_t*>(kb), vs),
                          TensorView<const float>(a.k_scales.data() + so, ss)};
      const Int8KvPages v{TensorView<const std::int8_t>(reinterpret_cast<const std::int8_t*>(vb), vs),
                          TensorView<const float>(a.v_scales.data() + so, ss)};
      st = paged_decode_attention(q, k, v, table, out, params);
      break;
    }
    case Kv::i4: {
      const Shape ss{pages, a.shape.kv_heads, a.shape.tokens, kDim / kInt4Group};
      const std::int64_t so = first * page_scale_count(a.type, a.shape);
      const Int4KvPages k{TensorView<const int4>(kb, vs), TensorView<const float>(a.k_scales.data() + so, ss)};
      const Int4KvPages v{TensorView<const int4>(vb, vs), TensorView<const float>(a.v_scales.data() + so, ss)};
      st = paged_decode_attention(q, k, v, table, out, params);
      break;
    }
  }
  st.throw_if_error();
}

struct DecodeTiming {
  bool quick = false;
  std::int64_t rotation_bytes = 0;  // every row reads at least this much in rotation
};

// Copies of a batch's pool that rotate so that a row reads at least rotation_bytes.
std::int64_t rotation_copies(Kv t, const PageShape& s, std::int64_t batch, std::int64_t context, std::int64_t rotation_bytes) {
  const std::int64_t pages = batch * s.pages_for(context);
  const std::int64_t bytes = pages * page_kv_bytes(t, s);
  return std::max<std::int64_t>(1, (rotation_bytes + bytes - 1) / bytes);
}

struct DecodeResult {
  double paged_s = 0, contiguous_s = 0;  // medians, seconds per call
  double ratio = 0;                      // contiguous / paged: the median of the alternating samples' ratios
  double pool_s = 0, pool_ratio = 0;     // the same pages in a BlockPool's order: its median, contiguous / it
  double churn_s = 0, churn_ratio = 0;   // the same in a churned BlockPool's order
  double churn_run = 0;                  // the churned table's mean run of consecutive pages
  double f16_s = 0, speedup = 0;         // with an f16 reference: its paged median, the median of f16 / this ratios
  std::int64_t copies = 1, samples = 0;
};

// Times decode calls over a shuffled, an in-order and two BlockPool-ordered page tables of the
// same pages (pool_batch_page_table: the sequences grown in step from a fresh pool;
// churned_batch_page_table: the same while other requests come and go) and, when `f16` is
// given, the same shape over f16 pages (shuffled), in turn, sample after sample: every ratio
// compares samples taken back to back, under the same load from other processes.
DecodeResult time_decode(const KvArena& a, const KvArena* f16, std::int64_t batch, std::int64_t context, ThreadPool* pool,
                         const DecodeTiming& timing) {
  const std::int64_t page = a.shape.tokens, pages = batch * a.shape.pages_for(context);
  const BatchPageTable paged = make_batch_page_table(batch, context, page, true, static_cast<std::uint32_t>(11 + batch + context));
  const BatchPageTable contiguous = make_batch_page_table(batch, context, page, false, 0);
  const BatchPageTable pool_order = pool_batch_page_table(batch, context, page);
  const BatchPageTable churned = churned_batch_page_table(batch, context, page, static_cast<std::uint32_t>(5 + batch + context));
  const PageTableCsr paged_csr = paged.csr(), contiguous_csr = contiguous.csr(), pool_csr = pool_order.csr(), churn_csr = churned.csr();
  Tensor<float> q = Tensor<float>::uninitialized({batch, kHeads, kDim});
  {
    std::mt19937 rng(3);
    std::normal_distribution<float> d(0.f, 1.f);
    for (float& x : q.span()) x = d(rng);
  }
  Tensor<float> out({batch, kHeads, kDim});

  struct Variant {
    Variant(const KvArena* a, const PageTableCsr* t) : arena(a), table(t) {}
    const KvArena* arena;
    const PageTableCsr* table;
    std::int64_t copies = 1, next = 0, inner = 1;
    std::vector<double> seconds;
  };
  std::vector<Variant> vs = {{&a, &paged_csr}, {&a, &contiguous_csr}, {&a, &pool_csr}, {&a, &churn_csr}};
  if (f16 != nullptr) vs.push_back({f16, &paged_csr});
  for (Variant& v : vs) v.copies = std::min(v.arena->pages / pages, rotation_copies(v.arena->type, v.arena->shape, batch, context, timing.rotation_bytes));
  const auto sample = [&](Variant& v, std::int64_t inner) {
    const auto t0 = Clock::now();
    for (std::int64_t i = 0; i < inner; ++i) decode_call(*v.arena, (v.next++ % v.copies) * pages, pages, q, *v.table, out, pool);
    return seconds_since(t0) / static_cast<double>(inner);
  };
  // Warm-up, and the size of a sample: calls enough for a few milliseconds. Calls of over 0.3 s
  // (the largest rows with slow kernels) take 3 samples, to keep the run within minutes.
  double slowest = 0;
  for (Variant& v : vs) {
    const double s = sample(v, 1);
    slowest = std::max(slowest, s);
    v.inner = std::clamp<std::int64_t>(static_cast<std::int64_t>(std::ceil(0.004 / s)), 1, 64);
  }
  const std::size_t min_samples = timing.quick || slowest > 0.3 ? 3 : 5, max_samples = 41;
  const double min_time = (timing.quick ? 0.05 : 0.5) * static_cast<double>(vs.size());
  const auto t0 = Clock::now();
  while (vs[0].seconds.size() < max_samples && (vs[0].seconds.size() < min_samples || seconds_since(t0) < min_time))
    for (Variant& v : vs) v.seconds.push_back(sample(v, v.inner));

  // The median of a / b over the samples.
  const auto ratio = [](const std::vector<double>& a, const std::vector<double>& b) {
    std::vector<double> r;
    for (std::size_t i = 0; i < a.size(); ++i) r.push_back(a[i] / b[i]);
    return median(r);
  };
  DecodeResult r;
  r.copies = vs[0].copies;
  r.samples = static_cast<std::int64_t>(vs[0].seconds.size());
  r.paged_s = median(vs[0].seconds);
  r.contiguous_s = median(vs[1].seconds);
  r.ratio = ratio(vs[1].seconds, vs[0].seconds);
  r.pool_s = median(vs[2].seconds);
  r.pool_ratio = ratio(vs[1].seconds, vs[2].seconds);
  r.churn_s = median(vs[3].seconds);
  r.churn_ratio = ratio(vs[1].seconds, vs[3].seconds);
  r.churn_run = mean_page_run(churned);
  if (f16 != nullptr) {
    r.f16_s = median(vs[4].seconds);
    r.speedup = ratio(vs[4].seconds, vs[0].seconds);
  }
  return r;
}

// The decode section's K/V types: --dtypes, or all.
std::vector<Kv> decode_dtypes(const Args& args) {
  return args.dtypes.empty() ? std::vector<Kv>(std::begin(kAllKv), std::end(kAllKv)) : args.dtypes;
}

// The ceiling of every page size the decode rows use: f16's from the yardsticks (y), the others
// measured here; a row and a summary line each, per size and thread count.
PageCeilings page_ceilings(BenchReport& report, Summary& summary, const Args& args, const Yardsticks& y, unsigned nthreads,
                           const std::vector<unsigned>& thread_counts, Effort effort) {
  PageCeilings ceilings;
  ceilings.gbps[static_cast<std::int64_t>(y.scattered_block_bytes)] = {y.scattered_gbps_1thread, y.scattered_gbps};
  std::map<std::int64_t, std::string> types_of;  // page size -> the dtypes that have it
  for (const Kv t : decode_dtypes(args)) {
    std::string& names = types_of[page_value_bytes(t, args.shape)];
    names += fmt::format("{}{}", names.empty() ? "" : ", ", kv_name(t));
  }
  std::unique_ptr<DramReadBuffer> buffer;
  for (const auto& [bytes, names] : types_of) {
    if (ceilings.gbps.contains(bytes)) continue;
    if (buffer == nullptr) buffer = std::make_unique<DramReadBuffer>(effort, nthreads);
    progress("measuring the read rate of shuffled {} KiB pages ({})", bytes >> 10, names);
    const double one = measure_scattered_read_gbps(*buffer, static_cast<std::size_t>(bytes), 1, effort);
    ceilings.gbps[bytes] = {one, nthreads > 1 ? measure_scattered_read_gbps(*buffer, static_cast<std::size_t>(bytes), nthreads, effort) : one};
  }
  for (const auto& [bytes, names] : types_of) {
    for (const unsigned t : thread_counts) {
      const double gbps = ceilings.for_size(bytes, t);
      BenchRow row(fmt::format("read shuffled {} KiB pages (ceiling of {})", bytes >> 10, names), "machine", t);
      row.set("gbps", gbps).set("bw_ratio", gbps / y.dram_gbps_for(t));
      report.rows.push_back(std::move(row));
      summary.add(Summary::bandwidth, "  shuffled {:2} KiB pages ({}), a plain read, {} thread{}: {:.1f} GB/s, {:.2f} of DRAM (the ceiling of their rows)",
                  bytes >> 10, names, t, t > 1 ? "s" : " ", gbps, gbps / y.dram_gbps_for(t));
    }
  }
  return ceilings;
}

// The read rate of shuffled blocks of each row's page size (ceilings) bounds its bytes/s.
void run_decode(BenchReport& report, Summary& summary, const Args& args, const Yardsticks& y, const PageCeilings& ceilings, ThreadPool& pool,
                const std::vector<unsigned>& thread_counts, bool quick) {
  const PageShape& shape = args.shape;
  std::vector<std::int64_t> contexts = args.contexts;
  if (contexts.empty()) contexts = quick ? std::vector<std::int64_t>{1024, 4096} : std::vector<std::int64_t>{1024, 4096, 16384, 32768};
  const std::vector<std::int64_t> batches = args.batches.empty() ? std::vector<std::int64_t>{1, 16} : args.batches;
  std::vector<Kv> dtypes = decode_dtypes(args);
  // f16 first: its pages stay for the other types' comparison.
  std::stable_partition(dtypes.begin(), dtypes.end(), [](Kv t) { return t == Kv::f16; });
  // The dtype comparison's context: 16k when run, else the largest context below it, else the smallest.
  std::int64_t compare = 0;
  for (const std::int64_t c : contexts)
    if (c <= 16384) compare = std::max(compare, c);
  if (compare == 0) compare = *std::min_element(contexts.begin(), contexts.end());

  DecodeTiming timing;
  timing.quick = quick;
  const std::int64_t llc = static_cast<std::int64_t>(std::max<std::size_t>(last_level_cache_bytes(), std::size_t{32} << 20));
  timing.rotation_bytes = 8 * llc;
  if (const std::size_t phys = physical_memory_bytes(); phys > 0)
    timing.rotation_bytes = std::min<std::int64_t>(timing.rotation_bytes, static_cast<std::int64_t>(phys / 16));
  progress("decode: every row reads >= {} MiB per call in rotation (8x the {} MiB last-level cache)", timing.rotation_bytes >> 20,
           llc >> 20);

  // Contiguous / paged time of every row, per K/V type: pages shuffled, in a fresh BlockPool's
  // order, in a churned one's; and the churned tables' mean runs.
  std::map<Kv, std::vector<double>> paged_ratios, pool_ratios, churn_ratios;
  std::vector<double> churn_runs;
  std::unique_ptr<KvArena> f16_arena;  // the f16 pages, kept for the other types' speed-up
  for (const Kv type : dtypes) {
    std::vector<std::int64_t> ctxs = contexts;
    if (type != Kv::f16 && !args.full_grid) ctxs = {compare};
    std::int64_t arena_pages = 0;
    for (const std::int64_t b : batches)
      for (const std::int64_t c : ctxs)
        arena_pages = std::max(arena_pages, b * shape.pages_for(c) * rotation_copies(type, shape, b, c, timing.rotation_bytes));
    progress("decode {}: filling {} pages ({} MiB of K/V)", kv_name(type), arena_pages, (arena_pages * page_kv_bytes(type, shape)) >> 20);
    auto arena = std::make_unique<KvArena>(type, arena_pages, shape);
    for (const std::int64_t batch : batches) {
      for (const std::int64_t ctx : ctxs) {
        for (const unsigned t : thread_counts) {
          const DecodeResult r = time_decode(*arena, f16_arena.get(), batch, ctx, t > 1 ? &pool : nullptr, timing);
          const std::int64_t pages = batch * shape.pages_for(ctx);
          const double bytes = static_cast<double>(pages * page_kv_bytes(type, shape));
          const double dram = y.dram_gbps_for(t), ceiling = ceilings.for_row(type, shape, t);
          const double flops = decode_flops(batch, ctx);
          paged_ratios[type].push_back(r.ratio);
          pool_ratios[type].push_back(r.pool_ratio);
          churn_ratios[type].push_back(r.churn_ratio);
          churn_runs.push_back(r.churn_run);
          for (const bool paged : {false, true}) {
            const double s = paged ? r.paged_s : r.contiguous_s;
            const double gbps = bytes / s / 1e9;
            BenchRow row(fmt::format("decode {} ctx {} batch {}{} ({})", kv_name(type), ctx, batch, shape_suffix(shape), paged ? "paged" : "contiguous"),
                         "quarry", t);
            row.set("dtype", kv_name(type)).set("context", ctx).set("batch", batch).set("kv_heads", shape.kv_heads).set("page_tokens", shape.tokens).set("ms", s * 1e3).set("gbps", gbps);
            row.set("bw_ratio", gbps / dram).set("page_read_ratio", gbps / y.scattered_gbps_for(t)).set("gops", flops / s / 1e9).set("peak_ratio", flops / s / 1e9 / y.fma_gflops_for(t));
            row.set("set_mib", static_cast<std::int64_t>(bytes * static_cast<double>(r.copies)) >> 20);
            row.set("samples", r.samples);
            if (paged) {
              row.set("paged_vs_contiguous", r.ratio).set("pool_vs_contiguous", r.pool_ratio).set("pool_ms", r.pool_s * 1e3);
              row.set("churn_vs_contiguous", r.churn_ratio).set("churn_ms", r.churn_s * 1e3).set("churn_mean_run", r.churn_run);
              if (r.speedup > 0) {
                row.set("speedup_vs_f16", r.speedup).set("f16_ms", r.f16_s * 1e3);
                if (ctx == compare && (type == Kv::i8 || type == Kv::i4))
                  summary.add(Summary::dtype, "  {} vs f16 at ctx {}, batch {:2}, {} thread{}: {:.2f}x{}", kv_name(type), ctx, batch, t,
                              t > 1 ? "s" : " ", r.speedup,
                              type == Kv::i8 ? (r.speedup >= 1.7 ? "  (target >= 1.7: met)" : "  (target >= 1.7: NOT met)") : "");
              }
              if (ctx >= 16384)
                summary.add(Summary::bandwidth,
                            "  bw_ratio {:4} ctx {} batch {:2}, {} thread{}: {:.2f} ({:.1f} of {:.1f} GB/s; target >= 0.8{}); {:.2f} of the "
                            "shuffled-page read ceiling of its page size; {:.1f} GFLOP/s, {:.2f} of the f32 FMA peak",
                            kv_name(type), ctx, batch, t, t > 1 ? "s" : " ", gbps / dram, gbps, dram, gbps / dram >= 0.8 ? ": met" : ": NOT met",
                            gbps / ceiling, flops / s / 1e9, flops / s / 1e9 / y.fma_gflops_for(t));
            }
            report.rows.push_back(std::move(row));
          }
          progress("decode {} ctx {:5} batch {:2} threads {}: paged {:8.3f} ms ({:5.1f} GB/s, {:.2f} of DRAM), contiguous {:8.3f} ms, "
                   "contiguous/paged {:.3f}, /pool order {:.3f}, /churned {:.3f} (runs of {:.2f}){} ({} samples, {} copies)",
                   kv_name(type), ctx, batch, t, r.paged_s * 1e3, bytes / r.paged_s / 1e9, bytes / r.paged_s / 1e9 / dram, r.contiguous_s * 1e3,
                   r.ratio, r.pool_ratio, r.churn_ratio, r.churn_run, r.speedup > 0 ? fmt::format(", f16 {:.3f} ms: {:.2f}x", r.f16_s * 1e3, r.speedup) : std::string(), r.samples,
                   r.copies);
        }
      }
    }
    // The arithmetic alone: each type at a context whose pages stay in cache (no rotation), one
    // thread, against the FMA peak and (but f16) f16 at the same context, so that the DRAM rows
    // can be read against what the kernels compute (f16's is the most its 1-thread rows reach).
    if (type == Kv::f16 || f16_arena != nullptr) {
      DecodeTiming cached = timing;
      cached.rotation_bytes = 0;
      const DecodeResult r = time_decode(*arena, type == Kv::f16 ? nullptr : f16_arena.get(), 1, kCachedContext, nullptr, cached);
      const double gops = decode_flops(1, kCachedContext) / r.paged_s / 1e9, peak = gops / y.fma_gflops_for(1);
      BenchRow row(fmt::format("decode {} ctx {} batch 1{} (in cache)", kv_name(type), kCachedContext, shape_suffix(shape)), "quarry", 1);
      row.set("dtype", kv_name(type)).set("context", kCachedContext).set("batch", std::int64_t{1}).set("ms", r.paged_s * 1e3);
      row.set("gops", gops).set("peak_ratio", peak).set("samples", r.samples);
      if (type == Kv::f16) {
        summary.add(Summary::bandwidth, "  f16 in cache (ctx {}, batch  1, 1 thread; the arithmetic alone): {:.1f} GFLOP/s, {:.2f} of the f32 FMA peak",
                    kCachedContext, gops, peak);
        progress("decode f16 ctx {} batch 1 in cache: {:.3f} ms, {:.1f} GFLOP/s, {:.2f} of the FMA peak ({} samples)", kCachedContext, r.paged_s * 1e3,
                 gops, peak, r.samples);
      } else {
        row.set("speedup_vs_f16", r.speedup).set("f16_ms", r.f16_s * 1e3);
        summary.add(Summary::dtype, "  {} vs f16 in cache (ctx {}, batch  1, 1 thread; the arithmetic alone): {:.2f}x", kv_name(type),
                    kCachedContext, r.speedup);
        progress("decode {} ctx {} batch 1 in cache: {:.3f} ms, f16 {:.3f} ms: {:.2f}x ({} samples)", kv_name(type), kCachedContext,
                 r.paged_s * 1e3, r.f16_s * 1e3, r.speedup, r.samples);
      }
      report.rows.push_back(std::move(row));
    }
    if (type == Kv::f16) f16_arena = std::move(arena);
  }
  if (!paged_ratios.empty()) {
    // Over every row: the median, the worst, the count; and the median per K/V type ("f16 0.950, i8 0.880").
    struct Spread {
      double median = 0, worst = 0;
      std::size_t rows = 0;
      std::string per_type;
    };
    const auto spread = [](const std::map<Kv, std::vector<double>>& by_type) {
      Spread sp;
      std::vector<double> all;
      for (const auto& [type, v] : by_type) {
        all.insert(all.end(), v.begin(), v.end());
        sp.per_type += fmt::format("{}{} {:.3f}", sp.per_type.empty() ? "" : ", ", kv_name(type), median(v));
      }
      sp.median = median(all);
      sp.worst = *std::min_element(all.begin(), all.end());
      sp.rows = all.size();
      return sp;
    };
    const Spread shuffled = spread(paged_ratios), pooled = spread(pool_ratios), churn = spread(churn_ratios);
    summary.add(Summary::paging,
                "  paged vs contiguous (contiguous time / paged time; target >= 0.95, paged at most 5% slower): median {:.3f}, worst {:.3f} "
                "over {} rows{}",
                shuffled.median, shuffled.worst, shuffled.rows, shuffled.worst >= 0.95 ? "" : " (see the rows' paged_vs_contiguous)");
    summary.add(Summary::paging, "  paged vs contiguous, median per K/V type: {}", shuffled.per_type);
    summary.add(Summary::paging,
                "  paged in BlockPool order (a fresh pool's pages for sequences growing in step: runs of {} pages) vs contiguous: median "
                "{:.3f}, worst {:.3f} over {} rows; per K/V type: {}",
                BlockPoolOptions{}.extent_pages, pooled.median, pooled.worst, pooled.rows, pooled.per_type);
    summary.add(Summary::paging,
                "  paged in a churned BlockPool's order (other requests taking and freeing pages meanwhile: runs of {:.2f}-{:.2f} pages) vs "
                "contiguous: median {:.3f}, worst {:.3f} over {} rows; per K/V type: {}",
                *std::min_element(churn_runs.begin(), churn_runs.end()), *std::max_element(churn_runs.begin(), churn_runs.end()), churn.median,
                churn.worst, churn.rows, churn.per_type);
  }
}

// ---------------------------------------------------------------------------------------------
// 2. Prefix cache: time to first token

constexpr std::int64_t kHidden = 4096, kVocab = 1024;
constexpr std::int64_t kQkv = kHeads * kDim + 2 * kKvHeads * kDim;  // fused Q, K, V projection outputs

// One layer's attention block, enough to compute a prompt's K/V and attention output.
struct AttentionLayer {
  Tensor<float> embed;        // [kVocab, kHidden]: token id -> hidden state
  QuantizedTensor<cpu> wqkv;  // [kQkv, kHidden] int8 per channel: Q, then K, then V outputs

  AttentionLayer() : embed(Tensor<float>::uninitialized({kVocab, kHidden})), wqkv(QuantizedTensor<cpu>::create(QuantScheme::int8_per_channel(), kQkv, kHidden).value()) {
    std::mt19937 rng(17);
    std::normal_distribution<float> d(0.f, 1.f);
    for (float& x : embed.span()) x = d(rng);
    std::uint64_t s = 99;
    for (std::uint8_t& b : wqkv.value_bytes().span()) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      b = static_cast<std::uint8_t>(s >> 56);
    }
    // |q . k| / sqrt(128) of order 1 with these random weights: outputs of standard deviation ~1.
    for (float& sc : wqkv.scales_f32().span()) sc = 2e-4f;
  }
};

// Buffers of the longest prompt, allocated (and mapped) before anything is timed.
struct Workspace {
  Tensor<float> x, y, q, out;
  explicit Workspace(std::int64_t max_tokens)
      : x({max_tokens, kHidden}), y({max_tokens, kQkv}), q({max_tokens, kHeads, kDim}), out({max_tokens, kHeads, kDim}) {}
};

struct RequestResult {
  double total_s = 0, project_s = 0, write_s = 0, attention_s = 0;
  std::int64_t computed = 0;   // tokens whose K/V this request computed
  std::vector<float> first;    // the attention output of the prompt's last token [kHeads * kDim]
};

// Serves one request up to its first token's attention output: create (with the prefix cache: on
// the cached pages of its prompt), project the new tokens' hidden states to Q, K, V, write K and
// V to the pool, prefill attention; with the cache, publish the prompt's pages afterwards.
RequestResult serve(BlockPool& kv, const AttentionLayer& layer, Workspace& ws, std::span<const std::int32_t> prompt, bool use_cache,
                    ThreadPool* pool) {
  RequestResult r;
  const auto t0 = Clock::now();
  SequenceId seq = -1;
  std::int64_t cached = 0;
  if (use_cache) {
    const BlockPool::PrefixMatch m = kv.create(prompt);
    seq = m.seq;
    cached = m.cached_tokens;
  } else {
    seq = kv.create();
  }
  const std::int64_t len = static_cast<std::int64_t>(prompt.size()), n = len - cached;
  r.computed = n;
  kv.append(seq, n).throw_if_error();
  for (std::int64_t i = 0; i < n; ++i)
    std::memcpy(ws.x.data() + i * kHidden, layer.embed.data() + prompt[static_cast<std::size_t>(cached + i)] * kHidden, kHidden * sizeof(float));
  QGemmOptions qo;
  qo.pool = pool;
  qgemm(TensorView<const float>(ws.x.data(), Shape{n, kHidden}), layer.wqkv, TensorView<float>(ws.y.data(), Shape{n, kQkv}), qo);
  const auto t1 = Clock::now();
  for (std::int64_t i = 0; i < n; ++i) {
    const float* row = ws.y.data() + i * kQkv;
    std::memcpy(ws.q.data() + i * kHeads * kDim, row, kHeads * kDim * sizeof(float));
    kv.write(seq, 0, cached + i, std::span<const float>(row + kHeads * kDim, kKvHeads * kDim),
             std::span<const float>(row + kHeads * kDim + kKvHeads * kDim, kKvHeads * kDim))
        .throw_if_error();
  }
  const auto t2 = Clock::now();
  const BlockPool::Table table = kv.page_table(std::span<const SequenceId>(&seq, 1)).value();
  const std::int32_t qo_indptr[2] = {0, static_cast<std::int32_t>(n)};
  PrefillAttentionParams pp;
  pp.pool = pool;
  paged_prefill_attention(TensorView<const float>(ws.q.data(), Shape{n, kHeads, kDim}), qo_indptr, kv.k_pages<f16>(0), kv.v_pages<f16>(0),
                          table.csr(), TensorView<float>(ws.out.data(), Shape{n, kHeads, kDim}), pp)
      .throw_if_error();
  if (use_cache) kv.publish(seq, prompt).throw_if_error();
  const auto t3 = Clock::now();
  r.project_s = std::chrono::duration<double>(t1 - t0).count();
  r.write_s = std::chrono::duration<double>(t2 - t1).count();
  r.attention_s = std::chrono::duration<double>(t3 - t2).count();
  r.total_s = std::chrono::duration<double>(t3 - t0).count();
  const float* last = ws.out.data() + (n - 1) * kHeads * kDim;
  r.first.assign(last, last + kHeads * kDim);
  return r;
}

void run_prefix(BenchReport& report, Summary& summary, const Args& args, ThreadPool& pool, unsigned nthreads, bool quick) {
  const std::int64_t requests = args.requests > 0 ? args.requests : (quick ? 4 : 16);
  const std::int64_t prefix = args.prefix_tokens > 0 ? args.prefix_tokens : (quick ? 512 : 1024);
  const std::int64_t unique = args.unique_tokens;
  const std::int64_t len = prefix + unique;
  progress("prefix: {} requests of {} shared + {} unique tokens, {} thread{}", requests, prefix, unique, nthreads, nthreads > 1 ? "s" : "");

  // Prompts: one random prefix, a random suffix each (fixed seeds).
  std::mt19937 rng(2026);
  std::uniform_int_distribution<std::int32_t> tok(0, static_cast<std::int32_t>(kVocab - 1));
  std::vector<std::int32_t> shared(static_cast<std::size_t>(prefix));
  for (std::int32_t& t : shared) t = tok(rng);
  std::vector<std::vector<std::int32_t>> prompts(static_cast<std::size_t>(requests + 1));  // the last one: warm-up
  for (auto& p : prompts) {
    p = shared;
    for (std::int64_t i = 0; i < unique; ++i) p.push_back(tok(rng));
  }
  prompts.back()[0] ^= 1;  // the warm-up shares nothing with the others

  const AttentionLayer layer;
  Workspace ws(len);
  BlockPoolOptions o;
  o.num_layers = 1;
  o.n_kv_heads = kKvHeads;
  o.head_dim = kDim;
  o.page_size = kPage;
  o.dtype = DType::f16;
  o.num_pages = (requests + 1) * ((len + kPage - 1) / kPage) + 4;
  BlockPool without = BlockPool::create(o).value();
  BlockPool with = BlockPool::create(o).value();
  // Map every page of both pools before timing (a serving pool's pages have been written before).
  for (BlockPool* kv : {&without, &with}) {
    const SequenceId s = kv->create();
    kv->append(s, kv->num_pages() * kPage).throw_if_error();
    const std::vector<float> zeros(static_cast<std::size_t>(kKvHeads * kDim), 0.f);
    for (std::int64_t p = 0; p < kv->length(s); p += kPage) kv->write(s, 0, p, zeros, zeros).throw_if_error();
    kv->release(s).throw_if_error();
  }
  ThreadPool* tp = nthreads > 1 ? &pool : nullptr;
  (void)serve(without, layer, ws, prompts.back(), false, tp);  // warm-up, not timed (its pages stay allocated)

  std::vector<RequestResult> no_cache, cache;
  for (std::int64_t i = 0; i < requests; ++i) {
    const auto& p = prompts[static_cast<std::size_t>(i)];
    no_cache.push_back(serve(without, layer, ws, p, false, tp));
    cache.push_back(serve(with, layer, ws, p, true, tp));
    progress("prefix request {:2}: no cache {:8.2f} ms ({} tokens), prefix cache {:8.2f} ms ({} tokens)", i, no_cache.back().total_s * 1e3,
             no_cache.back().computed, cache.back().total_s * 1e3, cache.back().computed);
  }
  const auto mean = [](const std::vector<RequestResult>& v, double RequestResult::*f, std::size_t from = 0) {
    double s = 0;
    for (std::size_t i = from; i < v.size(); ++i) s += v[i].*f;
    return s / static_cast<double>(v.size() - from);
  };
  double max_diff = 0, max_abs = 0;
  for (std::size_t i = 0; i < cache.size(); ++i)
    for (std::size_t j = 0; j < cache[i].first.size(); ++j) {
      max_diff = std::max(max_diff, static_cast<double>(std::fabs(cache[i].first[j] - no_cache[i].first[j])));
      max_abs = std::max(max_abs, static_cast<double>(std::fabs(no_cache[i].first[j])));
    }
  const std::string what = fmt::format("{} req, {} shared + {} unique tokens, 1 layer: qkv qgemm w8a8 + kv write f16 + prefill attention", requests,
                                       prefix, unique);
  const double t_no = mean(no_cache, &RequestResult::total_s), t_yes = mean(cache, &RequestResult::total_s);
  {
    BenchRow r(fmt::format("ttft no prefix cache, {}", what), "quarry", nthreads);
    r.set("ms", t_no * 1e3).set("ms_project", mean(no_cache, &RequestResult::project_s) * 1e3);
    r.set("ms_write", mean(no_cache, &RequestResult::write_s) * 1e3).set("ms_attention", mean(no_cache, &RequestResult::attention_s) * 1e3);
    r.set("tokens_computed", static_cast<std::int64_t>(requests * len));
    report.rows.push_back(std::move(r));
  }
  const BlockPool::PrefixStats st = with.prefix_stats();
  {
    BenchRow r(fmt::format("ttft prefix cache, {}", what), "quarry", nthreads);
    r.set("ms", t_yes * 1e3).set("ms_project", mean(cache, &RequestResult::project_s) * 1e3);
    r.set("ms_write", mean(cache, &RequestResult::write_s) * 1e3).set("ms_attention", mean(cache, &RequestResult::attention_s) * 1e3);
    std::int64_t computed = 0;
    for (const auto& c : cache) computed += c.computed;
    r.set("tokens_computed", computed).set("ms_first", cache[0].total_s * 1e3).set("ms_hit", mean(cache, &RequestResult::total_s, 1) * 1e3);
    r.set("speedup", t_no / t_yes).set("hit_pages", st.hit_pages).set("miss_pages", st.miss_pages).set("cached_pages", st.cached_pages);
    r.set("evictions", st.evictions).set("max_diff", max_diff / std::max(max_abs, 1e-30));
    report.rows.push_back(std::move(r));
  }
  summary.add(Summary::prefix, "  prefix cache TTFT ({} requests, {} shared + {} unique tokens, {} threads): {:.2f} ms mean with vs {:.2f} ms without: {:.2f}x "
              "(first request {:.2f} ms, each hit {:.2f} ms); hit pages {}, miss pages {}; first-token outputs agree to {:.1e} (relative)",
              requests, prefix, unique, nthreads, t_yes * 1e3, t_no * 1e3, t_no / t_yes, cache[0].total_s * 1e3,
              mean(cache, &RequestResult::total_s, 1) * 1e3, st.hit_pages, st.miss_pages, max_diff / std::max(max_abs, 1e-30));
}

// ---------------------------------------------------------------------------------------------
// 4. Prefill attention: GFLOP/s over the FMA peak

void run_prefill(BenchReport& report, Summary& summary, const Yardsticks& y, ThreadPool& pool, const std::vector<unsigned>& thread_counts, bool quick) {
  const std::int64_t len = quick ? 512 : 1024, pages = (len + kPage - 1) / kPage;
  progress("prefill: one {}-token prompt, f16 pages", len);
  Tensor<f16> k({pages, kKvHeads, kPage, kDim}), v({pages, kKvHeads, kPage, kDim});
  Tensor<float> q({len, kHeads, kDim}), out({len, kHeads, kDim});
  std::mt19937 rng(77);
  std::normal_distribution<float> normal;
  for (f16& x : k.span()) x = f16(normal(rng));
  for (f16& x : v.span()) x = f16(normal(rng));
  for (float& x : q.span()) x = normal(rng);
  std::vector<std::int32_t> indices(static_cast<std::size_t>(pages));
  std::iota(indices.begin(), indices.end(), 0);
  std::shuffle(indices.begin(), indices.end(), rng);
  const std::vector<std::int32_t> indptr = {0, static_cast<std::int32_t>(pages)}, last = {static_cast<std::int32_t>(len - (pages - 1) * kPage)};
  const std::vector<std::int32_t> qo = {0, static_cast<std::int32_t>(len)};
  const PageTableCsr table{indptr, indices, last};
  const double flops = 4.0 * kHeads * kDim * (static_cast<double>(len) * static_cast<double>(len + 1) / 2);
  for (const unsigned t : thread_counts) {
    PrefillAttentionParams params;
    params.pool = t > 1 ? &pool : nullptr;
    const auto run = [&] { paged_prefill_attention(q.view(), qo, k.view(), v.view(), table, out.view(), params).throw_if_error(); };
    run();  // warm-up
    const double best = best_seconds(quick ? 1 : 5, run);
    const double gops = flops / best / 1e9;
    BenchRow r(fmt::format("prefill f16 {} tokens", len), "quarry", t);
    r.set("ms", best * 1e3).set("gops", gops).set("peak_ratio", gops / y.fma_gflops_for(t)).set("context", len);
    report.rows.push_back(std::move(r));
    summary.add(Summary::prefill, "  prefill attention, one {}-token prompt, f16 pages, {} thread{}: {:.1f} ms, {:.1f} GFLOP/s, {:.2f} of the f32 FMA peak", len,
                t, t > 1 ? "s" : " ", best * 1e3, gops, gops / y.fma_gflops_for(t));
  }
}

// ---------------------------------------------------------------------------------------------
// 3. Memory: pages wasted to fragmentation vs contiguous per-sequence buffers

void run_memory(BenchReport& report, Summary& summary) {
  constexpr std::int64_t kSequences = 200, kMaxLen = 4096, kMinLen = 16;
  std::mt19937 rng(4242);
  std::lognormal_distribution<double> d(std::log(400.0), 1.1);
  std::vector<std::int64_t> lengths(kSequences);
  for (std::int64_t& l : lengths) l = std::clamp<std::int64_t>(std::llround(d(rng)), kMinLen, kMaxLen);
  const std::int64_t tokens = std::accumulate(lengths.begin(), lengths.end(), std::int64_t{0});
  std::vector<std::int64_t> sorted = lengths;
  std::sort(sorted.begin(), sorted.end());
  const std::int64_t token_bytes = 2 * kKvHeads * kDim * 2;  // K and V, f16, one layer
  const double used = static_cast<double>(tokens * token_bytes);
  progress("memory: {} sequences, {} tokens (median {}, p90 {}, max {})", kSequences, tokens, sorted[kSequences / 2], sorted[kSequences * 9 / 10],
           sorted.back());

  const std::int64_t contiguous_bytes = kSequences * kMaxLen * token_bytes;
  for (const std::int64_t page : {std::int64_t{16}, std::int64_t{32}, std::int64_t{64}}) {
    BlockPoolOptions o;
    o.num_layers = 1;
    o.n_kv_heads = kKvHeads;
    o.head_dim = kDim;
    o.page_size = page;
    o.dtype = DType::f16;
    o.max_sequence_length = kMaxLen;
    o.num_pages = kSequences;  // one page of slack per sequence; pages are counted, never written
    for (const std::int64_t l : lengths) o.num_pages += (l + page - 1) / page;
    BlockPool kv = BlockPool::create(o).value();
    // Grown the way decoding grows them: every sequence by a token or a few at a time, in turn.
    std::vector<SequenceId> seqs;
    for (std::int64_t i = 0; i < kSequences; ++i) seqs.push_back(kv.create());
    for (bool grew = true; grew;) {
      grew = false;
      for (std::int64_t i = 0; i < kSequences; ++i) {
        const std::int64_t have = kv.length(seqs[static_cast<std::size_t>(i)]);
        const std::int64_t step = std::min<std::int64_t>(lengths[static_cast<std::size_t>(i)] - have, have == 0 ? 16 : 7);
        if (step > 0) {
          kv.append(seqs[static_cast<std::size_t>(i)], step).throw_if_error();
          grew = true;
        }
      }
    }
    const std::int64_t pages = kv.num_pages() - kv.free_pages();
    const double allocated = static_cast<double>(pages * 2 * kv.page_bytes());
    BenchRow r(fmt::format("memory paged p{} {} seqs len {}..{} (log-normal, median {})", page, kSequences, kMinLen, kMaxLen, sorted[kSequences / 2]),
               "quarry", 1);
    r.set("page_size", page).set("tokens", tokens).set("pages", pages).set("bytes_allocated", static_cast<std::int64_t>(allocated));
    r.set("bytes_used", static_cast<std::int64_t>(used)).set("wasted_bytes", static_cast<std::int64_t>(allocated - used));
    r.set("wasted_fraction", (allocated - used) / allocated).set("vs_contiguous", static_cast<double>(contiguous_bytes) / allocated);
    report.rows.push_back(std::move(r));
    summary.add(Summary::memory, "  memory, pages of {:2}: {:7.1f} MiB allocated for {:7.1f} MiB of K/V (one f16 layer): {:.2f}% wasted; {:.1f}x less than "
                "contiguous buffers at the maximum length",
                page, allocated / (1 << 20), used / (1 << 20), 100.0 * (allocated - used) / allocated,
                static_cast<double>(contiguous_bytes) / allocated);
  }
  BenchRow r(fmt::format("memory contiguous max-length {} seqs len {}..{} (log-normal, median {})", kSequences, kMinLen, kMaxLen, sorted[kSequences / 2]),
             "contiguous", 1);
  r.set("tokens", tokens).set("bytes_allocated", contiguous_bytes).set("bytes_used", static_cast<std::int64_t>(used));
  r.set("wasted_bytes", static_cast<std::int64_t>(static_cast<double>(contiguous_bytes) - used));
  r.set("wasted_fraction", (static_cast<double>(contiguous_bytes) - used) / static_cast<double>(contiguous_bytes));
  report.rows.push_back(std::move(r));
  summary.add(Summary::memory, "  memory, contiguous at max length {}: {:7.1f} MiB allocated for {:7.1f} MiB of K/V: {:.2f}% wasted", kMaxLen,
              static_cast<double>(contiguous_bytes) / (1 << 20), used / (1 << 20),
              100.0 * (static_cast<double>(contiguous_bytes) - used) / static_cast<double>(contiguous_bytes));
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  const std::vector<const char*> rest = take_args(argc, argv, args);
  const BenchOptions options = bench_options_from_command_line(static_cast<int>(rest.size()), rest.data(), kWhat);
  try {
    BenchReport report;
    report.machine = identify_machine(options.threads);
    const unsigned nthreads = report.machine.threads;
    ThreadPool pool(nthreads);
    const std::vector<unsigned> thread_counts = row_thread_counts(nthreads);
    if (options.quick) fmt::print("--quick: contexts 1k and 4k, the prefix section with 4 requests of 512 + 64 tokens, a 512-token prefill; figures not for publishing\n");

    Summary summary;
    if (args.decode || args.prefill) {
      progress("measuring the yardsticks");
      report.yardsticks = measure_yardsticks(nthreads, options.effort(), static_cast<std::size_t>(page_value_bytes(Kv::f16, args.shape)));
    }
    if (args.decode) {
      const Yardsticks& y = *report.yardsticks;
      const PageCeilings ceilings = page_ceilings(report, summary, args, y, nthreads, thread_counts, options.effort());
      run_decode(report, summary, args, y, ceilings, pool, thread_counts, options.quick);
    }
    if (args.prefix) run_prefix(report, summary, args, pool, nthreads, options.quick);
    if (args.prefill) run_prefill(report, summary, *report.yardsticks, pool, thread_counts, options.quick);
    if (args.memory) run_memory(report, summary);
    progress("done");

    const int rc = output_report(report, options.json_path);
    fmt::print("\nbw_ratio: gbps (K/V values and scales read per call) / measured DRAM read GB/s (1-thread figure for 1-thread rows); "
               "page_read_ratio: gbps / the read rate of shuffled pages of the row's size (a plain SIMD sum of blocks of one page of K, all kv "
               "heads, in random order, two side by side with the kernels' prefetching: the most a kernel reading scattered pages gets here); "
               "paged: pages shuffled over the pool, contiguous: the same pages in order; paged_vs_contiguous: contiguous time / paged "
               "time; pool_vs_contiguous: contiguous time / the time over the same pages in the order a fresh BlockPool hands them to "
               "sequences growing in step (pool_ms); churn_vs_contiguous: the same in a churned BlockPool's order, other requests taking and "
               "freeing pages meanwhile (churn_ms; churn_mean_run: its mean run of consecutive pages); speedup_vs_f16: f16 time / this type's, same shape and threads; gops: attention GFLOP/s (8 per K/V element at 4 query heads per KV head), peak_ratio: gops / measured f32 FMA peak; INT4 scales: one f32 per {} elements\n",
               kInt4Group);
    bool header = false;
    for (const auto& topic : summary.lines)
      for (const std::string& l : topic) {
        if (!header) fmt::print("issue 5's targets, measured in this run:\n");
        header = true;
        fmt::print("{}\n", l);
      }
    return rc;
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_paged_attention: {}\n", e.what());
    return 1;
  }
}
