// bench_ivf_pq: quarry's IvfPqIndex against FAISS on the same data, with the same parameters, in
// one run (issue 4, "Benchmarks").
//
// Sets (--set NAME[,NAME...]; default bigann10k):
//   bigann10k  ../shared/data/ann/bigann10k: 9,900 SIFT vectors (uint8), 100 queries, exact
//              100-NN ground truth (a generated 10k set when the files are missing)
//   synth1M    a generated 1,000,000 x 128 set that behaves like real embeddings (a mixture of
//              1,000 Gaussians in a 12-d latent space mapped linearly into 128-d, plus noise of std 0.5;
//              bench/common/synthetic_embeddings.hpp), 1,000 queries from the same mixture, exact
//              100-NN ground truth by brute force, computed once and cached under the build tree
//              (--cache-dir, default <build>/bench/data: synth-<n>-<spec hash>.gt, checked against
//              the generator's parameters and a checksum of the vectors before use). The check that
//              the data is embedding-like: PQ16x8's recall1 at the largest nprobe, printed after the
//              table (about 0.5 here, as SIFT1M's ~0.45 with 16-byte IVFADC codes; full-rank
//              isotropic clusters would give ~0.005).
//   dram20M    the scan-from-DRAM figure: 20M codes of 16 B (320 MB, 10x this machine's 32 MB L3)
//              in an IVF with 16 lists trained on a 64k sample, searched with nprobe 16 so every
//              query scans every code; vectors generated and added in chunks (never all in
//              memory). No ground truth: it measures the scan rate, codes/s and bytes/s over the
//              measured DRAM read bandwidth (bw_ratio), for a batch of queries and for one query
//              at a time. --dram-codes N changes the count.
//   files      --base / --query [--gt] (.fvecs or .bvecs; without --gt, brute force), or
//   --synthetic N: a generated set of N vectors as synth1M (ground truth cached alike).
// --quick: a smoke run of a few minutes at most: synth1M becomes synth100k, dram20M dram4M
// (still larger than the L3), fewer nprobes, one measurement per row, no 1-thread builds.
//
// Recall sets: nlist = 4 sqrt(n) rounded to a power of two (512 for bigann10k, 4096 for 1M;
// --nlist N), nprobe 1, 2, 4, ... up to clamp(nlist / 32, 32, 128) (--nprobe LIST). Both libraries
// train on the same first min(n, max(40 nlist, 65536)) base vectors (--train-sample N; 40 per list
// is above FAISS's minimum of 39) with the same k-means iterations (coarse 20, or 10 above 200k
// vectors as FAISS's IndexIVF default; PQ 25; at most 256 training points per centroid), then add
// all n.
// Configurations:
//   IVFn,PQ16x8        FAISS IndexIVFPQ;           quarry nbits 8
//   IVFn,PQ32x4fs      FAISS IndexIVFPQFastScan;   quarry nbits 4 (fast-scan)
//   ...,RFlat          re-ranking of k * 4 candidates with exact L2 on the full vectors:
//                      FAISS IndexRefineFlat (k_factor 4) wrapping the same populated IVF-PQ;
//                      quarry an index with store_vectors, searched with refine_factor 4
// each at every nprobe, k = 10, on 1 thread and on all threads (--threads N).
//
// Figures per search row: nn_probed (the share of queries whose true nearest neighbour is in one
// of the lists probed: what the coarse quantizer allows), recall1 (it is ranked first), recall10
// (it is within the top 10), recall10_10 (10-recall@10: the share of the true 10 nearest found in
// the top 10), qps (the whole query set searched as one batch, repeated for at least 0.2 s per
// measurement; quarry and FAISS measured alternately, best of several), gcodes_s (PQ codes in the
// probed lists per second, 1e9), gbps (those codes' bytes per second, 1e9) and bw_ratio (gbps over
// the measured DRAM read bandwidth on as many threads: the share of the memory-bandwidth bound;
// above 1 where the codes sit in the cache), bytes_per_vector (code + 8-byte id, + 4d with the
// full vectors; the same count for both), and on quarry rows faiss_qps_ratio = quarry qps / FAISS
// qps for the same set, configuration, nprobe and threads. Train and add times are rows of their
// own ("ms"; on all threads, and on 1 thread too for sets up to 200k vectors).
//
// The FAISS peer is compiled when bench/CMakeLists.txt found FAISS (QUARRY_BENCH_FAISS, configure
// with -Dfaiss_DIR=<prefix>/share/faiss); otherwise the benchmark says so and runs quarry alone.
// Run with OMP_WAIT_POLICY=passive where other processes share the cores.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <quarry/core/dot.hpp>
#include <quarry/core/tensor.hpp>
#include <quarry/core/thread_pool.hpp>
#include <quarry/index/ivf_pq.hpp>
#include <quarry/io/vecs.hpp>

#include "common/machine.hpp"
#include "common/options.hpp"
#include "common/report.hpp"
#include "common/synthetic_embeddings.hpp"
#include "common/timing.hpp"
#include "common/yardsticks.hpp"
#if QUARRY_BENCH_HAS_FAISS
#include "ivf_pq_faiss_peer.hpp"
#endif

#ifndef QUARRY_BENCH_CACHE_DIR
#define QUARRY_BENCH_CACHE_DIR "bench-data"
#endif

namespace {

using namespace quarry;
using namespace quarry::bench;

constexpr const char* kDefaultDataDir = "/work/shared/data/ann/bigann10k";
constexpr std::int64_t kK = 10;
constexpr std::int64_t kRefineFactor = 4;
constexpr int kCoarseIterations = 20;       // sets up to kBuild1ThreadMaxN vectors
constexpr int kCoarseIterationsLarge = 10;  // larger sets (FAISS's IndexIVF default)
constexpr int kPqIterations = 25;
constexpr std::int64_t kMaxPointsPerCentroid = 256;
constexpr std::int64_t kBuild1ThreadMaxN = 200'000;  // larger sets are built on all threads only
constexpr std::int64_t kDramNlist = 16;
constexpr std::int64_t kDramTrainSample = 65'536;

// ---------------------------------------------------------------------------------------------
// Command line: the options below are this benchmark's own; the rest goes to
// bench_options_from_command_line (--json, --quick, --threads).

struct Args {
  std::vector<std::string> sets;  // bigann10k, synth1M, dram20M; empty: from the other options
  std::string base, query, gt;
  std::int64_t synthetic = 0;     // > 0: a generated set of this many base vectors
  std::int64_t queries = 1000;    // queries of a generated set
  std::int64_t nlist = 0;         // 0: 4 sqrt(n) rounded to a power of two
  std::vector<std::int64_t> nprobes;  // empty: 1, 2, 4, ... (see the top)
  std::int64_t train_sample = 0;  // 0: min(n, max(40 nlist, 65536))
  std::int64_t dram_codes = 20'000'000;
  std::string cache_dir = QUARRY_BENCH_CACHE_DIR;
};

constexpr const char* kWhat =
    "quarry IvfPqIndex vs FAISS IVF-PQ / IVF-PQ fast-scan (+ refine): recall, QPS, codes/s, scan from DRAM";

std::vector<const char*> take_args(int argc, char** argv, Args& a) {
  const std::string_view program = program_name(argc, argv, "bench_ivf_pq");
  const auto own_usage = [] {
    return fmt::format(
        "  --set LIST         sets to run, comma-separated: bigann10k, synth1M, dram20M, all (default bigann10k)\n"
        "  --base FILE        base vectors (.fvecs or .bvecs) instead of a named set\n"
        "  --query FILE       query vectors (.fvecs or .bvecs), with --base\n"
        "  --gt FILE          ground-truth neighbour ids (.ivecs); without it, computed by brute force\n"
        "  --synthetic N      a generated set of N base vectors (as synth1M)\n"
        "  --queries N        queries of a generated set (default 1000)\n"
        "  --nlist N          inverted lists of the recall sets (default 4 sqrt(n) rounded to a power of two)\n"
        "  --nprobe LIST      nprobe values, comma-separated (default 1, 2, 4, ... up to clamp(nlist/32, 32, 128))\n"
        "  --train-sample N   train on the first N base vectors (default min(n, max(40 nlist, 65536)))\n"
        "  --dram-codes N     codes in the dram set (default 20000000)\n"
        "  --cache-dir DIR    where generated sets' ground truth is cached (default {})\n"
        "  bigann10k is read from {}\n",
        QUARRY_BENCH_CACHE_DIR, kDefaultDataDir);
  };
  const auto count = [&](std::string_view name, const std::string& value, std::int64_t lo, std::int64_t hi) {
    return parse_count(program, name, value, lo, hi);
  };
  const OwnOption options[] = {
      {"--set", true,
       [&](const std::string& value) {
         for (const std::string& s : split_commas(value)) {
           if (s == "all") {
             a.sets.insert(a.sets.end(), {"bigann10k", "synth1M", "dram20M"});
           } else if (s == "bigann10k" || s == "synth1M" || s == "dram20M") {
             a.sets.push_back(s);
           } else {
             usage_error(program, fmt::format("--set: unknown set '{}' (bigann10k, synth1M, dram20M, all)", s));
           }
         }
       }},
      {"--base", true, [&](const std::string& value) { a.base = value; }},
      {"--query", true, [&](const std::string& value) { a.query = value; }},
      {"--gt", true, [&](const std::string& value) { a.gt = value; }},
      {"--synthetic", true, [&](const std::string& value) { a.synthetic = count("--synthetic", value, 1000, 100'000'000); }},
      {"--queries", true, [&](const std::string& value) { a.queries = count("--queries", value, 1, 1'000'000); }},
      {"--nlist", true, [&](const std::string& value) { a.nlist = count("--nlist", value, 1, 1 << 20); }},
      {"--nprobe", true,
       [&](const std::string& value) {
         for (const std::string& s : split_commas(value)) a.nprobes.push_back(count("--nprobe", s, 1, 1 << 20));
         if (a.nprobes.empty()) usage_error(program, "--nprobe wants a list of counts");
       }},
      {"--train-sample", true, [&](const std::string& value) { a.train_sample = count("--train-sample", value, 256, 1'000'000'000); }},
      {"--dram-codes", true, [&](const std::string& value) { a.dram_codes = count("--dram-codes", value, 100'000, 1'000'000'000); }},
      {"--cache-dir", true, [&](const std::string& value) { a.cache_dir = value; }},
  };
  std::vector<const char*> rest = take_own_options(argc, argv, program, kWhat, own_usage, options);
  if (!a.base.empty() != !a.query.empty()) usage_error(program, "--base and --query go together");
  if (!a.gt.empty() && a.base.empty()) usage_error(program, "--gt needs --base and --query");
  if (a.synthetic > 0 && !a.base.empty()) usage_error(program, "--synthetic and --base exclude each other");
  return rest;
}

// ---------------------------------------------------------------------------------------------
// Data

struct Dataset {
  std::string name;              // the set's name in row names: "bigann10k", "synth1M", ...
  std::string source;            // what it is, for the header line
  Tensor<float> base;            // [n, d]
  Tensor<float> queries;         // [nq, d]
  std::vector<std::int32_t> gt;  // [nq, gt_k] nearest first
  std::int64_t gt_k = 0;
};

result<Tensor<float>> read_vectors(const std::string& path) {
  if (path.ends_with(".bvecs")) return read_bvecs_as_float(path);
  if (path.ends_with(".fvecs")) return read_fvecs(path);
  return status(errc::invalid_argument, fmt::format("{}: not .fvecs or .bvecs", path));
}

// "1M", "100k", "9900".
std::string count_name(std::int64_t n) {
  if (n % 1'000'000 == 0) return fmt::format("{}M", n / 1'000'000);
  if (n % 1000 == 0) return fmt::format("{}k", n / 1000);
  return fmt::format("{}", n);
}

// The embedding-like generated set of n vectors (issue 4): 1,000 Gaussians (n / 10 for small n)
// in a 12-d latent space, mapped into 128-d, plus noise.
SyntheticSpec synthetic_spec(std::int64_t n, std::int64_t nq) {
  SyntheticSpec spec;
  spec.n = n;
  spec.nq = nq;
  spec.clusters = std::clamp<std::int64_t>(n / 10, 10, 1000);
  return spec;
}

// A generated set with its ground truth, from the cache when it holds one for these vectors.
Dataset generated_set(const SyntheticSpec& spec, const std::string& cache_dir, ThreadPool* pool) {
  Dataset data;
  data.name = "synth" + count_name(spec.n);
  auto t0 = Clock::now();
  const SyntheticEmbeddings gen(spec);
  data.base = gen.base(pool);
  data.queries = gen.queries(pool);
  const double gen_s = seconds_since(t0);
  data.source = fmt::format("{}: {} x {}, {} queries, a mixture of {} Gaussians in a {}-d latent space + noise {} (generated in {:.1f} s)",
                            data.name, spec.n, spec.d, spec.nq, spec.clusters, spec.latent, spec.noise, gen_s);
  const std::int64_t want_k = std::min<std::int64_t>(100, spec.n);
  const std::string path = ground_truth_cache_path(cache_dir, spec);
  auto cached = load_ground_truth(path, spec, data.base.view(), data.queries.view(), want_k);
  if (cached.ok()) {
    data.gt_k = cached->k;
    data.gt = std::move(cached->ids);
    data.source += fmt::format(", ground truth ({}-NN) from the cache {}", data.gt_k, path);
    return data;
  }
  if (cached.status().code() != errc::not_found)
    fmt::print("cache: not using {}: {}\n", path, cached.status().to_string());
  progress("{}: brute-force ground truth ({} queries x {} vectors)", data.name, spec.nq, spec.n);
  t0 = Clock::now();
  data.gt_k = want_k;
  data.gt = brute_force_knn(data.base.view(), data.queries.view(), want_k, pool);
  const double gt_s = seconds_since(t0);
  if (const status st = save_ground_truth(path, spec, data.base.view(), data.queries.view(), want_k, data.gt); st.ok())
    data.source += fmt::format(", ground truth ({}-NN) by brute force in {:.1f} s, cached in {}", want_k, gt_s, path);
  else
    data.source += fmt::format(", ground truth ({}-NN) by brute force in {:.1f} s, NOT cached: {}", want_k, gt_s, st.to_string());
  return data;
}

Dataset read_set(const std::string& base, const std::string& query, const std::string& gt, ThreadPool* pool) {
  Dataset data;
  auto b = read_vectors(base);
  auto q = read_vectors(query);
  if (!b.ok() || !q.ok()) {
    fmt::print(stderr, "cannot read the data: {}\n", (!b.ok() ? b.status() : q.status()).to_string());
    std::exit(1);
  }
  data.base = std::move(b).value();
  data.queries = std::move(q).value();
  if (data.base.dim(1) != data.queries.dim(1) || data.base.dim(0) < 1 || data.queries.dim(0) < 1) {
    fmt::print(stderr, "base {} and queries {} do not match\n", data.base.shape(), data.queries.shape());
    std::exit(1);
  }
  data.name = std::filesystem::path(base).stem().string();
  data.source = fmt::format("{} ({} x {}), queries {} ({})", base, data.base.dim(0), data.base.dim(1), query, data.queries.dim(0));
  if (!gt.empty()) {
    auto g = read_ivecs(gt);
    if (!g.ok()) {
      fmt::print(stderr, "cannot read the ground truth: {}\n", g.status().to_string());
      std::exit(1);
    }
    if (g->dim(0) != data.queries.dim(0) || g->dim(1) < 1) {
      fmt::print(stderr, "ground truth {} for {} queries\n", g->shape(), data.queries.dim(0));
      std::exit(1);
    }
    data.gt_k = g->dim(1);
    data.gt.assign(g->data(), g->data() + g->numel());
    for (const std::int32_t id : data.gt)
      if (id < 0 || id >= data.base.dim(0)) {
        fmt::print(stderr, "ground truth id {} outside the base (0..{})\n", id, data.base.dim(0) - 1);
        std::exit(1);
      }
    data.source += fmt::format(", ground truth {} ({}-NN)", gt, data.gt_k);
  } else {
    const auto t0 = Clock::now();
    data.gt_k = std::min<std::int64_t>(100, data.base.dim(0));
    data.gt = brute_force_knn(data.base.view(), data.queries.view(), data.gt_k, pool);
    data.source += fmt::format(", ground truth by brute force ({}-NN, {:.2f} s)", data.gt_k, seconds_since(t0));
  }
  return data;
}

Dataset bigann10k(const std::string& cache_dir, ThreadPool* pool) {
  const std::filesystem::path dir = kDefaultDataDir;
  if (std::filesystem::exists(dir / "base.bvecs") && std::filesystem::exists(dir / "query.bvecs") &&
      std::filesystem::exists(dir / "groundtruth.ivecs")) {
    Dataset data = read_set((dir / "base.bvecs").string(), (dir / "query.bvecs").string(), (dir / "groundtruth.ivecs").string(), pool);
    data.name = "bigann10k";
    return data;
  }
  fmt::print("data: {} not found (base.bvecs, query.bvecs, groundtruth.ivecs); using a generated 10k set instead\n",
             kDefaultDataDir);
  return generated_set(synthetic_spec(10'000, 100), cache_dir, pool);
}

// ---------------------------------------------------------------------------------------------
// Recall and timing

struct Recall {
  double r1 = 0, r10 = 0, r10_10 = 0;
};

Recall recall_of(const Dataset& data, const std::int64_t* ids, std::int64_t k) {
  const std::int64_t nq = data.queries.dim(0);
  const std::int64_t top = std::min<std::int64_t>(10, k);
  const std::int64_t gt_top = std::min<std::int64_t>(10, data.gt_k);
  double r1 = 0, r10 = 0, inter = 0;
  for (std::int64_t q = 0; q < nq; ++q) {
    const std::int32_t* g = data.gt.data() + q * data.gt_k;
    const std::int64_t* r = ids + q * k;
    if (r[0] == g[0]) r1 += 1;
    for (std::int64_t j = 0; j < top; ++j)
      if (r[j] == g[0]) {
        r10 += 1;
        break;
      }
    for (std::int64_t j = 0; j < top; ++j)
      for (std::int64_t t = 0; t < gt_top; ++t)
        if (r[j] == g[t]) {
          inter += 1;
          break;
        }
  }
  const auto n = static_cast<double>(nq);
  return {r1 / n, r10 / n, inter / (n * static_cast<double>(gt_top))};
}

// Seconds per call of f(): calls it until at least `min_seconds` have passed (once at least).
template <class F>
double seconds_per_call(double min_seconds, F&& f) {
  int calls = 0;
  const auto t0 = Clock::now();
  double t = 0;
  do {
    f();
    ++calls;
    t = seconds_since(t0);
  } while (t < min_seconds);
  return t / calls;
}

// A pause after every measurement: OpenMP's workers (libgomp, under FAISS) spin a while after each
// parallel region before they sleep, and would take those cores from whatever runs next.
[[maybe_unused]] void settle() { std::this_thread::sleep_for(std::chrono::milliseconds(30)); }

// The `nprobe` lists of `index` nearest (L2) to each of the n vectors x [n, d], nearest first,
// into lists [n, nprobe]: the lists IvfPqIndex::search scans (it ranks by ||c||^2 - 2 q.c, the
// same order) and, with nprobe 1, the list IvfPqIndex::add puts a vector in.
void quarry_coarse_lists(const IvfPqIndex<cpu>& index, const float* x, std::int64_t n, std::int64_t nprobe, std::int64_t* lists) {
  const TensorView<const float> c = index.centroids();
  const std::int64_t nlist = c.dim(0), d = c.dim(1);
  std::vector<std::pair<float, std::int64_t>> ranked(static_cast<std::size_t>(nlist));
  for (std::int64_t q = 0; q < n; ++q) {
    const std::span<const float> qv(x + q * d, static_cast<std::size_t>(d));
    for (std::int64_t l = 0; l < nlist; ++l) ranked[static_cast<std::size_t>(l)] = {l2_sqr(qv, {&c(l, 0), static_cast<std::size_t>(d)}), l};
    std::partial_sort(ranked.begin(), ranked.begin() + nprobe, ranked.end());
    for (std::int64_t p = 0; p < nprobe; ++p) lists[q * nprobe + p] = ranked[static_cast<std::size_t>(p)].second;
  }
}

// What the coarse quantizer of one index does for the query set at `nprobe`: the PQ codes in the
// lists it probes (per query, on average), and the share of queries whose true nearest
// neighbour is in one of those lists (the recall the PQ scan cannot exceed).
struct ProbeStats {
  double codes_per_query = 0;
  double nn_probed = 0;
};

template <class CoarseLists, class ListSize>
ProbeStats probe_stats(const Dataset& data, std::int64_t nprobe, CoarseLists&& coarse_lists, ListSize&& list_size) {
  const std::int64_t nq = data.queries.dim(0), d = data.queries.dim(1);
  std::vector<std::int64_t> probed(static_cast<std::size_t>(nq * nprobe)), home(static_cast<std::size_t>(nq));
  coarse_lists(data.queries.data(), nq, nprobe, probed.data());
  std::vector<float> nn(static_cast<std::size_t>(nq * d));
  for (std::int64_t q = 0; q < nq; ++q)
    std::copy_n(data.base.data() + static_cast<std::int64_t>(data.gt[static_cast<std::size_t>(q * data.gt_k)]) * d, d, nn.data() + q * d);
  coarse_lists(nn.data(), nq, 1, home.data());
  ProbeStats st;
  for (std::int64_t q = 0; q < nq; ++q)
    for (std::int64_t p = 0; p < nprobe; ++p) {
      const std::int64_t l = probed[static_cast<std::size_t>(q * nprobe + p)];
      if (l < 0) continue;
      st.codes_per_query += static_cast<double>(list_size(l));
      if (l == home[static_cast<std::size_t>(q)]) st.nn_probed += 1;
    }
  st.codes_per_query /= static_cast<double>(nq);
  st.nn_probed /= static_cast<double>(nq);
  return st;
}

// Everything the measurements share.
struct Run {
  BenchReport report;
  ThreadPool* pool = nullptr;         // all threads; null with one thread
  unsigned nthreads = 1;
  std::vector<unsigned> thread_counts;  // 1, and nthreads when > 1
  bool quick = false;
  double min_seconds = 0.2;
  int reps = 5;
  std::string faiss_build;
  std::vector<std::string> notes;     // printed after the table

  ThreadPool* pool_for(unsigned threads) const { return threads > 1 ? pool : nullptr; }
  // The scan's share of the DRAM-bandwidth bound: bytes of codes per second over the measured
  // DRAM read bandwidth on as many threads.
  double bw_ratio(double gbps, unsigned threads) const {
    return report.yardsticks ? gbps / report.yardsticks->dram_gbps_for(threads) : 0.0;
  }
};

// Adds gcodes_s, gbps and bw_ratio for `codes_per_s` codes of `code_bytes` bytes per second.
void set_scan_rate(BenchRow& row, const Run& run, double codes_per_s, double code_bytes, unsigned threads) {
  const double gbps = codes_per_s * code_bytes / 1e9;
  row.set("gcodes_s", codes_per_s / 1e9).set("gbps", gbps).set("bw_ratio", run.bw_ratio(gbps, threads));
}

struct PqConfig {
  std::int64_t nlist;
  std::int64_t m;
  int nbits;
  int coarse_iterations = kCoarseIterations;
  std::string name() const { return fmt::format("IVF{},PQ{}x{}{}", nlist, m, nbits, nbits == 4 ? "fs" : ""); }
  double code_bytes() const { return static_cast<double>((m * nbits + 7) / 8); }
};

// One search row: the configuration `name` at `nprobe` run by `lib` on `threads` threads.
BenchRow search_row(const Run& run, const std::string& name, const char* lib, unsigned threads, std::int64_t nprobe,
                    const ProbeStats& probes, const Recall& recall, double qps, double code_bytes, double bytes_per_vector) {
  BenchRow row(fmt::format("{} nprobe={}", name, nprobe), lib, threads);
  row.set("nprobe", nprobe).set("nn_probed", probes.nn_probed);
  row.set("recall1", recall.r1).set("recall10", recall.r10).set("recall10_10", recall.r10_10);
  row.set("qps", qps);
  set_scan_rate(row, run, probes.codes_per_query * qps, code_bytes, threads);
  row.set("bytes_per_vector", bytes_per_vector);
  return row;
}

IvfPqIndex<cpu> create_quarry(std::int64_t d, const PqConfig& cfg, bool store_vectors) {
  IvfPqOptions o;
  o.nlist = cfg.nlist;
  o.m = cfg.m;
  o.nbits = cfg.nbits;
  o.metric = Metric::l2;
  o.store_vectors = store_vectors;
  auto index = IvfPqIndex<cpu>::create(d, o);
  if (!index.ok()) {
    fmt::print(stderr, "quarry {}: {}\n", cfg.name(), index.status().to_string());
    std::exit(1);
  }
  return std::move(index).value();
}

// Trains `index` on x; returns the seconds it took.
double train_quarry(IvfPqIndex<cpu>& index, const PqConfig& cfg, TensorView<const float> x, ThreadPool* pool) {
  IvfPqTrainOptions to;
  to.coarse_iterations = cfg.coarse_iterations;
  to.pq_iterations = kPqIterations;
  to.max_points_per_centroid = kMaxPointsPerCentroid;
  to.pool = pool;
  const auto t0 = Clock::now();
  if (const status st = index.train(x, to); !st.ok()) {
    fmt::print(stderr, "quarry {} train: {}\n", cfg.name(), st.to_string());
    std::exit(1);
  }
  return seconds_since(t0);
}

// Adds the rows of x; returns the seconds it took.
double add_quarry(IvfPqIndex<cpu>& index, const PqConfig& cfg, TensorView<const float> x, ThreadPool* pool) {
  const auto t0 = Clock::now();
  if (const status st = index.add(x, pool); !st.ok()) {
    fmt::print(stderr, "quarry {} add: {}\n", cfg.name(), st.to_string());
    std::exit(1);
  }
  return seconds_since(t0);
}

#if QUARRY_BENCH_HAS_FAISS
FaissIvfPqConfig faiss_config(std::int64_t d, const PqConfig& cfg) {
  FaissIvfPqConfig fc;
  fc.d = static_cast<long>(d);
  fc.nlist = static_cast<long>(cfg.nlist);
  fc.m = static_cast<long>(cfg.m);
  fc.nbits = cfg.nbits;
  fc.coarse_iterations = cfg.coarse_iterations;
  fc.pq_iterations = kPqIterations;
  fc.max_points_per_centroid = kMaxPointsPerCentroid;
  return fc;
}
#endif

// ---------------------------------------------------------------------------------------------
// A set with ground truth: recall and QPS per configuration and nprobe

struct AnnPlan {
  std::int64_t nlist = 0;
  std::vector<std::int64_t> nprobes;
  std::int64_t train_n = 0;    // train on the first train_n base vectors
  bool build_1thread = false;  // also time train and add on 1 thread
  int coarse_iterations = kCoarseIterations;
};

// 4 sqrt(n) rounded to the nearest power of two (in log scale), at least 1.
std::int64_t default_nlist(std::int64_t n) {
  const double target = 4.0 * std::sqrt(static_cast<double>(n));
  return std::int64_t{1} << std::max(0L, std::lround(std::log2(target)));
}

AnnPlan plan_for(const Dataset& data, const Args& args, bool quick) {
  const std::int64_t n = data.base.dim(0);
  AnnPlan plan;
  plan.nlist = args.nlist > 0 ? args.nlist : default_nlist(n);
  if (!args.nprobes.empty()) {
    plan.nprobes = args.nprobes;
  } else {
    const std::int64_t top = std::min(plan.nlist, std::clamp<std::int64_t>(plan.nlist / 32, 32, 128));
    for (std::int64_t p = 1; p <= top; p *= quick ? 4 : 2) plan.nprobes.push_back(p);
    if (plan.nprobes.back() != top) plan.nprobes.push_back(top);
  }
  plan.train_n = std::min(n, args.train_sample > 0 ? args.train_sample : std::max<std::int64_t>(40 * plan.nlist, 65'536));
  plan.build_1thread = !quick && n <= kBuild1ThreadMaxN;
  plan.coarse_iterations = n <= kBuild1ThreadMaxN ? kCoarseIterations : kCoarseIterationsLarge;
  return plan;
}

void run_ann_set(const Dataset& data, const AnnPlan& plan, Run& run) {
  const std::int64_t n = data.base.dim(0), nq = data.queries.dim(0), d = data.base.dim(1);
  if (plan.train_n < std::max<std::int64_t>(plan.nlist, 256)) {
    fmt::print(stderr, "{}: {} training vectors, too few for {} lists and 256-centroid PQ codebooks\n", data.name, plan.train_n,
               plan.nlist);
    std::exit(1);
  }
  const TensorView<const float> qview = data.queries.view();
  const TensorView<const float> train_view(data.base.data(), {plan.train_n, d});
  fmt::print("{}: IVF{}, trained on the first {} of {} vectors ({} coarse k-means iterations), nprobe {}\n", data.name, plan.nlist,
             plan.train_n, n, plan.coarse_iterations, fmt::join(plan.nprobes, "/"));
  std::vector<unsigned> build_threads = {run.nthreads};
  if (plan.build_1thread && run.nthreads > 1) build_threads.insert(build_threads.begin(), 1u);

  for (PqConfig cfg : {PqConfig{plan.nlist, 16, 8, plan.coarse_iterations}, PqConfig{plan.nlist, 32, 4, plan.coarse_iterations}}) {
    if (d % cfg.m != 0) {
      fmt::print("skipping {}: d = {} is not a multiple of M = {}\n", cfg.name(), d, cfg.m);
      continue;
    }
    const std::string base_name = data.name + " " + cfg.name();
    // ---- build: both libraries (on 1 thread too for small sets; the last build is searched) ----
    std::optional<IvfPqIndex<cpu>> plain;
#if QUARRY_BENCH_HAS_FAISS
    const FaissIvfPqConfig fc = faiss_config(d, cfg);
    std::unique_ptr<FaissIvfPq> faiss_index;
#endif
    for (const unsigned t : build_threads) {
      ThreadPool* p = run.pool_for(t);
      progress("{}: build on {} thread(s)", base_name, t);
      plain.reset();
      plain.emplace(create_quarry(d, cfg, false));
      const double qt = train_quarry(*plain, cfg, train_view, p);
      const double qa = add_quarry(*plain, cfg, data.base.view(), p);
      run.report.rows.push_back(BenchRow(base_name + " train", "quarry", t).set("ms", qt * 1e3));
      run.report.rows.push_back(BenchRow(base_name + " add", "quarry", t).set("ms", qa * 1e3));
#if QUARRY_BENCH_HAS_FAISS
      faiss_index.reset();
      faiss_index = std::make_unique<FaissIvfPq>(fc);
      const double ft = faiss_index->train(data.base.data(), static_cast<long>(plan.train_n), t);
      const double fa = faiss_index->add(data.base.data(), static_cast<long>(n), t);
      run.report.rows.push_back(BenchRow(base_name + " train", "faiss", t).set("ms", ft * 1e3).set("build", run.faiss_build));
      run.report.rows.push_back(BenchRow(base_name + " add", "faiss", t).set("ms", fa * 1e3).set("build", run.faiss_build));
      settle();
#endif
    }
    progress("{},RFlat: build on {} thread(s)", base_name, run.nthreads);
    IvfPqIndex<cpu> refined = create_quarry(d, cfg, true);
    const double rt = train_quarry(refined, cfg, train_view, run.pool);
    const double ra = add_quarry(refined, cfg, data.base.view(), run.pool);
    run.report.rows.push_back(BenchRow(base_name + ",RFlat train", "quarry", run.nthreads).set("ms", rt * 1e3));
    run.report.rows.push_back(BenchRow(base_name + ",RFlat add", "quarry", run.nthreads).set("ms", ra * 1e3));
#if QUARRY_BENCH_HAS_FAISS
    // FAISS's refine wraps the IVF-PQ built above: no training of its own; its add is the copy of
    // the full vectors (after the IVF-PQ's add above).
    FaissIvfPq& faiss = *faiss_index;
    const double fr = faiss.enable_refine(data.base.data());
    run.report.rows.push_back(BenchRow(base_name + ",RFlat add (wrap)", "faiss", 1).set("ms", fr * 1e3).set("build", run.faiss_build));
#endif

    for (const bool refine : {false, true}) {
      const IvfPqIndex<cpu>& index = refine ? refined : *plain;
      const std::string name = base_name + (refine ? ",RFlat" : "");
      progress("{}: search", name);
      std::map<std::int64_t, ProbeStats> q_probes, f_probes;  // by nprobe: the same on any thread count
      for (const unsigned t : run.thread_counts) {
        ThreadPool* p = run.pool_for(t);
        for (const std::int64_t nprobe : plan.nprobes) {
          IvfPqSearchParams sp;
          sp.nprobe = nprobe;
          sp.refine_factor = refine ? kRefineFactor : 1;
          std::vector<std::int64_t> q_ids;
          const auto run_quarry = [&] {
            auto r = index.search_batch(qview, kK, sp, p);
            if (!r.ok()) {
              fmt::print(stderr, "quarry {} search: {}\n", name, r.status().to_string());
              std::exit(1);
            }
            if (q_ids.empty()) q_ids = std::move(r->ids);
          };
          run_quarry();  // warm-up; keeps the ids for recall
          const Recall qr = recall_of(data, q_ids.data(), kK);
          if (!q_probes.contains(nprobe))
            q_probes[nprobe] = probe_stats(
                data, std::min(nprobe, plan.nlist),
                [&](const float* x, std::int64_t rows, std::int64_t np, std::int64_t* out) { quarry_coarse_lists(index, x, rows, np, out); },
                [&](std::int64_t l) { return index.list_size(l); });
          double q_best = 1e30;
#if QUARRY_BENCH_HAS_FAISS
          std::vector<float> f_dist(static_cast<std::size_t>(nq * kK));
          std::vector<std::int64_t> f_ids(static_cast<std::size_t>(nq * kK));
          const auto run_faiss = [&] {
            faiss.search(data.queries.data(), static_cast<long>(nq), kK, static_cast<long>(nprobe), refine,
                         static_cast<float>(kRefineFactor), t, f_dist.data(), f_ids.data());
          };
          run_faiss();  // warm-up
          settle();
          const Recall fr_ = recall_of(data, f_ids.data(), kK);
          if (!f_probes.contains(nprobe))
            f_probes[nprobe] = probe_stats(
                data, std::min(nprobe, plan.nlist),
                [&](const float* x, std::int64_t rows, std::int64_t np, std::int64_t* out) {
                  faiss.coarse_lists(x, static_cast<long>(rows), static_cast<long>(np), out);
                },
                [&](std::int64_t l) { return faiss.list_size(static_cast<long>(l)); });
          double f_best = 1e30;
          for (int r = 0; r < run.reps; ++r) {
            q_best = std::min(q_best, seconds_per_call(run.min_seconds, run_quarry));
            settle();
            f_best = std::min(f_best, seconds_per_call(run.min_seconds, run_faiss));
            settle();
          }
#else
          for (int r = 0; r < run.reps; ++r) q_best = std::min(q_best, seconds_per_call(run.min_seconds, run_quarry));
#endif
          const double q_qps = static_cast<double>(nq) / q_best;
          BenchRow qrow = search_row(run, name, "quarry", t, nprobe, q_probes[nprobe], qr, q_qps, cfg.code_bytes(), index.bytes_per_vector());
#if QUARRY_BENCH_HAS_FAISS
          const double f_qps = static_cast<double>(nq) / f_best;
          qrow.set("faiss_qps_ratio", q_qps / f_qps);
          run.report.rows.push_back(std::move(qrow));
          BenchRow frow = search_row(run, name, "faiss", t, nprobe, f_probes[nprobe], fr_, f_qps, cfg.code_bytes(), faiss.bytes_per_vector(refine));
          frow.set("build", run.faiss_build);
          run.report.rows.push_back(std::move(frow));
          if (cfg.nbits == 8 && !refine && t == 1 && nprobe == plan.nprobes.back())
            run.notes.push_back(fmt::format(
                "{}: PQ16x8 recall1 at nprobe {} (nn_probed {:.3f}): quarry {:.3f}, FAISS {:.3f} (embedding-like data: 0.3 to 0.5, "
                "SIFT1M IVFADC 16 B about 0.45; full-rank isotropic clusters about 0.005)",
                base_name, nprobe, q_probes[nprobe].nn_probed, qr.r1, fr_.r1));
#else
          run.report.rows.push_back(std::move(qrow));
          if (cfg.nbits == 8 && !refine && t == 1 && nprobe == plan.nprobes.back())
            run.notes.push_back(fmt::format("{}: PQ16x8 recall1 at nprobe {} (nn_probed {:.3f}): quarry {:.3f} (embedding-like data: 0.3 to 0.5)",
                                            base_name, nprobe, q_probes[nprobe].nn_probed, qr.r1));
#endif
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// A set larger than the last-level cache: the scan rate from DRAM

void run_dram_set(std::int64_t codes, Run& run) {
  const std::string set = "dram" + count_name(codes);
  const std::int64_t batch = run.quick ? 4 : 16;  // queries per search_batch
  const std::int64_t singles = std::min<std::int64_t>(batch, 4);  // queries searched one per call
  const SyntheticSpec spec = synthetic_spec(codes, batch);
  const SyntheticEmbeddings gen(spec);
  const std::int64_t d = spec.d;
  const std::int64_t chunk = std::min<std::int64_t>(codes, run.quick ? 262'144 : 1'048'576);
  const std::size_t llc = last_level_cache_bytes();
  fmt::print("{}: {} vectors generated in chunks of {} and added to IVF{} indexes trained on the first {} (nprobe {}: every code "
             "scanned by every query); codes {:.0f} MB of 16 B each, last-level cache {:.0f} MB{}\n",
             set, codes, chunk, kDramNlist, kDramTrainSample, kDramNlist, static_cast<double>(codes) * 16 / 1e6,
             static_cast<double>(llc) / 1e6,
             llc > 0 && static_cast<double>(codes) * 16 < 4.0 * static_cast<double>(llc)
                 ? " (WARNING: under 4x the cache, not a DRAM figure)"
                 : "");
  Tensor<float> queries = gen.queries(run.pool);
  Tensor<float> sample = Tensor<float>::uninitialized({std::min(kDramTrainSample, codes), d});
  gen.base_rows(0, sample.dim(0), sample.data(), run.pool);
  Tensor<float> buf = Tensor<float>::uninitialized({chunk, d});

  for (const PqConfig cfg : {PqConfig{kDramNlist, 16, 8}, PqConfig{kDramNlist, 32, 4}}) {
    const std::string name = set + " " + cfg.name();
    progress("{}: train", name);
    IvfPqIndex<cpu> index = create_quarry(d, cfg, false);
    const double qt = train_quarry(index, cfg, sample.view(), run.pool);
    run.report.rows.push_back(BenchRow(name + " train", "quarry", run.nthreads).set("ms", qt * 1e3));
#if QUARRY_BENCH_HAS_FAISS
    FaissIvfPq faiss(faiss_config(d, cfg));
    const double ft = faiss.train(sample.data(), static_cast<long>(sample.dim(0)), run.nthreads);
    run.report.rows.push_back(BenchRow(name + " train", "faiss", run.nthreads).set("ms", ft * 1e3).set("build", run.faiss_build));
    double fa = 0;
#endif
    double qa = 0, gen_s = 0;
    progress("{}: add {} vectors", name, codes);
    for (std::int64_t r0 = 0; r0 < codes; r0 += chunk) {
      const std::int64_t rows = std::min(chunk, codes - r0);
      const auto t0 = Clock::now();
      gen.base_rows(r0, rows, buf.data(), run.pool);
      gen_s += seconds_since(t0);
      qa += add_quarry(index, cfg, TensorView<const float>(buf.data(), {rows, d}), run.pool);
#if QUARRY_BENCH_HAS_FAISS
      fa += faiss.add(buf.data(), static_cast<long>(rows), run.nthreads);
      settle();
#endif
    }
    run.report.rows.push_back(BenchRow(name + " add", "quarry", run.nthreads).set("ms", qa * 1e3).set("codes", codes));
#if QUARRY_BENCH_HAS_FAISS
    run.report.rows.push_back(BenchRow(name + " add", "faiss", run.nthreads).set("ms", fa * 1e3).set("codes", codes).set("build", run.faiss_build));
#endif
    run.notes.push_back(fmt::format("{}: generating the {} vectors took {:.1f} s (not in the add times)", name, codes, gen_s));
    std::int64_t q_scanned = 0;
    for (std::int64_t l = 0; l < kDramNlist; ++l) q_scanned += index.list_size(l);

    IvfPqSearchParams sp;
    sp.nprobe = kDramNlist;
    const int reps = run.quick ? 1 : 3;
    // One measurement: `nq` queries from row q0 searched in calls of `per_call` on `threads` threads.
    const auto measure = [&](unsigned threads, std::int64_t nq, std::int64_t per_call, const std::string& what) {
      ThreadPool* p = run.pool_for(threads);
      const auto run_quarry = [&] {
        for (std::int64_t q0 = 0; q0 < nq; q0 += per_call) {
          auto r = index.search_batch(TensorView<const float>(queries.data() + q0 * d, {per_call, d}), kK, sp, p);
          if (!r.ok()) {
            fmt::print(stderr, "quarry {} search: {}\n", name, r.status().to_string());
            std::exit(1);
          }
        }
      };
      run_quarry();  // warm-up
      double q_best = 1e30;
#if QUARRY_BENCH_HAS_FAISS
      std::vector<float> f_dist(static_cast<std::size_t>(per_call * kK));
      std::vector<std::int64_t> f_ids(static_cast<std::size_t>(per_call * kK));
      const auto run_faiss = [&] {
        for (std::int64_t q0 = 0; q0 < nq; q0 += per_call)
          faiss.search(queries.data() + q0 * d, static_cast<long>(per_call), kK, static_cast<long>(kDramNlist), false, 1.f, threads,
                       f_dist.data(), f_ids.data());
      };
      run_faiss();  // warm-up
      settle();
      double f_best = 1e30;
      for (int r = 0; r < reps; ++r) {
        q_best = std::min(q_best, seconds_per_call(0.0, run_quarry));
        settle();
        f_best = std::min(f_best, seconds_per_call(0.0, run_faiss));
        settle();
      }
#else
      for (int r = 0; r < reps; ++r) q_best = std::min(q_best, seconds_per_call(0.0, run_quarry));
#endif
      const auto row = [&](const char* lib, double qps, std::int64_t scanned, double bytes_per_vector) {
        BenchRow out(fmt::format("{} nprobe={} {}", name, kDramNlist, what), lib, threads);
        out.set("nprobe", kDramNlist).set("codes", scanned).set("qps", qps);
        set_scan_rate(out, run, qps * static_cast<double>(scanned), cfg.code_bytes(), threads);
        out.set("bytes_per_vector", bytes_per_vector);
        return out;
      };
      const double q_qps = static_cast<double>(nq) / q_best;
      BenchRow qrow = row("quarry", q_qps, q_scanned, index.bytes_per_vector());
#if QUARRY_BENCH_HAS_FAISS
      std::int64_t f_scanned = 0;
      for (long l = 0; l < static_cast<long>(kDramNlist); ++l) f_scanned += faiss.list_size(l);
      const double f_qps = static_cast<double>(nq) / f_best;
      qrow.set("faiss_qps_ratio", q_qps / f_qps);
      run.report.rows.push_back(std::move(qrow));
      run.report.rows.push_back(row("faiss", f_qps, f_scanned, faiss.bytes_per_vector(false)).set("build", run.faiss_build));
#else
      run.report.rows.push_back(std::move(qrow));
#endif
    };
    progress("{}: search", name);
    measure(1, singles, 1, "1 query/call");
    for (const unsigned t : run.thread_counts) measure(t, batch, batch, fmt::format("batch={}", batch));
  }
}

// ---------------------------------------------------------------------------------------------

}  // namespace

int main(int argc, char** argv) {
  Args args;
  const std::vector<const char*> rest = take_args(argc, argv, args);
  const BenchOptions options = bench_options_from_command_line(static_cast<int>(rest.size()), rest.data(), kWhat);

  Run run;
  run.report.machine = identify_machine(options.threads);
  run.nthreads = run.report.machine.threads;
  ThreadPool pool(run.nthreads);
  run.pool = run.nthreads > 1 ? &pool : nullptr;
  run.thread_counts = row_thread_counts(run.nthreads);
  run.quick = options.quick;
  run.min_seconds = run.quick ? 0.05 : 0.2;
  run.reps = run.quick ? 1 : 5;

#if QUARRY_BENCH_HAS_FAISS
  fmt::print("peer: {} (faiss::get_compile_options(): \"{}\")\n", FaissIvfPq::version(), FaissIvfPq::compile_options());
  run.faiss_build = FaissIvfPq::build();
  if (run.nthreads > 1) {
    const char* policy = std::getenv("OMP_WAIT_POLICY");
    if (policy == nullptr)
      fmt::print("note: FAISS's OpenMP threads spin while they wait (libgomp's default, OMP_WAIT_POLICY unset); where other "
                 "processes share the cores this slows FAISS's {}-thread rows and training many-fold: run with "
                 "OMP_WAIT_POLICY=passive there\n",
                 run.nthreads);
    else
      fmt::print("OMP_WAIT_POLICY={}\n", policy);
  }
#else
  fmt::print("FAISS peer not built: {}; quarry runs alone\n", QUARRY_BENCH_FAISS_MISSING);
#endif

  // The sets, in the order given (each once).
  std::vector<std::string> sets;
  for (const std::string& s : args.sets)
    if (std::find(sets.begin(), sets.end(), s) == sets.end()) sets.push_back(s);
  if (!args.base.empty()) sets.push_back("files");
  if (args.synthetic > 0) sets.push_back("synthetic");
  if (sets.empty()) sets.push_back("bigann10k");
  if (run.quick) fmt::print("--quick: synth1M runs as synth100k (200 queries), dram20M as dram4M; figures not for publishing\n");

  run.report.yardsticks = measure_yardsticks(run.nthreads, options.effort());
  const auto t_all = Clock::now();
  for (const std::string& set : sets) {
    const auto t_set = Clock::now();
    if (set == "dram20M") {
      run_dram_set(run.quick ? std::min<std::int64_t>(args.dram_codes, 4'000'000) : args.dram_codes, run);
    } else {
      Dataset data;
      if (set == "bigann10k") {
        data = bigann10k(args.cache_dir, run.pool);
      } else if (set == "files") {
        data = read_set(args.base, args.query, args.gt, run.pool);
      } else {
        const std::int64_t n = set == "synth1M" ? (run.quick ? 100'000 : 1'000'000) : args.synthetic;
        const std::int64_t nq = run.quick ? std::min<std::int64_t>(args.queries, 200) : args.queries;
        progress("generating {} vectors", n);
        data = generated_set(synthetic_spec(n, nq), args.cache_dir, run.pool);
      }
      fmt::print("data: {}\n", data.source);
      run_ann_set(data, plan_for(data, args, run.quick), run);
    }
    run.notes.push_back(fmt::format("set {} took {:.0f} s", set, seconds_since(t_set)));
  }

  const int rc = output_report(run.report, options.json_path);
  for (const std::string& note : run.notes) fmt::print("{}\n", note);
  fmt::print("all sets took {:.0f} s\n", seconds_since(t_all));
  fmt::print(
      "nn_probed: share of queries whose true nearest neighbour is in a probed list; recall1: it is ranked first; "
      "recall10: it is in the top {0}; recall10_10: share of the true {0} nearest in the top {0}; qps: the query set "
      "searched as one batch, best of {1} measurements of >= {2} s (dram sets: best of {3} calls), quarry and FAISS (when "
      "built) alternating; gcodes_s: PQ codes in the probed lists per second (1e9); gbps: their bytes per second (1e9); "
      "bw_ratio: gbps / the DRAM read bandwidth measured on as many threads (above 1: the codes come from the cache); "
      "codes: codes scanned per query; bytes_per_vector: code + 8-byte id (+ 4d for the full vectors of RFlat), block "
      "padding of fast-scan not counted; faiss_qps_ratio: quarry qps / FAISS qps for the same row; train/add: ms. RFlat: "
      "the best k x {4} candidates re-ranked by exact L2.\n",
      kK, run.reps, run.min_seconds, run.quick ? 1 : 3, kRefineFactor);
  return rc;
}
