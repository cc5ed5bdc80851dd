// bench_ivf_pq: quarry's IvfPqIndex against FAISS on the same data, with the same parameters, in
// one run.
//
// Data: ../shared/data/ann/bigann10k (9,900 SIFT vectors, uint8, 100 queries, exact 100-NN ground
// truth), or files given with --base / --query / --gt (.fvecs or .bvecs by extension; without
// --gt the ground truth is computed by brute force), or, when no data is found or --synthetic N is
// given, a generated set that behaves like real embeddings (a mixture of Gaussians in a
// 12-dimensional latent space mapped linearly into 128 dimensions, plus small noise; issue 4) with
// its ground truth computed by brute force.
//
// Configurations, each built by both libraries from the base vectors with the same nlist / M /
// nbits and k-means iterations (coarse 20, PQ 25, at most 256 training points per centroid):
//   IVF64,PQ16x8          FAISS IndexIVFPQ;           quarry nbits 8
//   IVF64,PQ32x4fs        FAISS IndexIVFPQFastScan;   quarry nbits 4 (fast-scan)
//   ...,RFlat             re-ranking of k * 4 candidates with exact L2 on the full vectors:
//                         FAISS IndexRefineFlat (k_factor 4) wrapping the same populated IVF-PQ;
//                         quarry an index with store_vectors, searched with refine_factor 4
// each at nprobe 1, 4, 8, 16, 32, k = 10, on 1 thread and on all threads (--threads N).
//
// Figures per row: nn_probed (the share of queries whose true nearest neighbour is in one of the
// lists probed: what the coarse quantizer allows), recall1 (it is ranked first), recall10 (it is within the
// top 10), recall10_10 (10-recall@10: the share of the true 10 nearest found in the top 10), qps
// (the whole query set searched as one batch, repeated for at least 0.2 s per measurement; quarry
// and FAISS measured alternately, best of several), gcodes_s (PQ codes in the probed lists per
// second, 1e9), bytes_per_vector (code + 8-byte id, + 4d with the full vectors; the same count for
// both), and on quarry rows faiss_qps_ratio = quarry qps / FAISS qps for the same configuration,
// nprobe and threads. Train and add times (on 1 thread and on all threads) are rows of their own ("ms").
//
// The FAISS peer is compiled when bench/CMakeLists.txt found FAISS (QUARRY_BENCH_FAISS, configure
// with -Dfaiss_DIR=<prefix>/share/faiss); otherwise the benchmark says so and runs quarry alone.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
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
#include "common/yardsticks.hpp"
#if QUARRY_BENCH_HAS_FAISS
#include "ivf_pq_faiss_peer.hpp"
#endif

namespace {

using namespace quarry;
using namespace quarry::bench;
using Clock = std::chrono::steady_clock;

constexpr const char* kDefaultDataDir = "/work/shared/data/ann/bigann10k";
constexpr std::int64_t kNlist = 64;
constexpr std::int64_t kK = 10;
constexpr std::int64_t kRefineFactor = 4;
constexpr int kCoarseIterations = 20;
constexpr int kPqIterations = 25;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// ---------------------------------------------------------------------------------------------
// Command line: --base / --query / --gt / --synthetic are this benchmark's own; the rest goes to
// bench_options_from_command_line.

struct DataArgs {
  std::string base, query, gt;
  std::int64_t synthetic = 0;  // > 0: generate this many base vectors
};

[[noreturn]] void usage_error(std::string_view program, const std::string& message) {
  fmt::print(stderr, "{}\nrun {} --help for the usage\n", message, program);
  std::exit(2);
}

constexpr const char* kWhat =
    "quarry IvfPqIndex vs FAISS IVF-PQ / IVF-PQ fast-scan (+ refine) on the same data, recall and QPS";

std::vector<const char*> take_data_args(int argc, char** argv, DataArgs& data) {
  const std::string_view program = argc > 0 ? argv[0] : "bench_ivf_pq";
  std::vector<const char*> rest;
  if (argc > 0) rest.push_back(argv[0]);
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      fmt::print("{}", bench_usage(program, kWhat));
      fmt::print(
          "  --base FILE    base vectors (.fvecs or .bvecs); default {0}/base.bvecs\n"
          "  --query FILE   query vectors (.fvecs or .bvecs); default {0}/query.bvecs\n"
          "  --gt FILE      ground-truth neighbour ids (.ivecs); without it, computed by brute force\n"
          "  --synthetic N  generate N clustered 128-d base vectors (and 100 queries) instead of reading data\n",
          kDefaultDataDir);
      std::exit(0);
    }
    bool matched = false;
    for (const std::string_view name : {"--base", "--query", "--gt", "--synthetic"}) {
      std::string value;
      if (arg == name) {
        if (i + 1 >= argc) usage_error(program, fmt::format("{} wants a value", name));
        value = argv[++i];
      } else if (arg.size() > name.size() && arg.starts_with(name) && arg[name.size()] == '=') {
        value = std::string(arg.substr(name.size() + 1));
      } else {
        continue;
      }
      matched = true;
      if (value.empty()) usage_error(program, fmt::format("{} wants a value", name));
      if (name == "--base") data.base = value;
      else if (name == "--query") data.query = value;
      else if (name == "--gt") data.gt = value;
      else {
        char* end = nullptr;
        const long long n = std::strtoll(value.c_str(), &end, 10);
        if (*end != '\0' || n < 1000 || n > 100'000'000)
          usage_error(program, fmt::format("--synthetic wants a count from 1000 to 100000000, got '{}'", value));
        data.synthetic = n;
      }
      break;
    }
    if (!matched) rest.push_back(argv[i]);
  }
  if (!data.base.empty() != !data.query.empty()) usage_error(program, "--base and --query go together");
  if (!data.gt.empty() && data.base.empty()) usage_error(program, "--gt needs --base and --query");
  if (data.synthetic > 0 && !data.base.empty()) usage_error(program, "--synthetic and --base exclude each other");
  return rest;
}

// ---------------------------------------------------------------------------------------------
// Data

struct Dataset {
  std::string source;          // what it is, for the header line
  Tensor<float> base;          // [n, d]
  Tensor<float> queries;       // [nq, d]
  std::vector<std::int32_t> gt;  // [nq, gt_k] nearest first
  std::int64_t gt_k = 0;
};

result<Tensor<float>> read_vectors(const std::string& path) {
  if (path.ends_with(".bvecs")) return read_bvecs_as_float(path);
  if (path.ends_with(".fvecs")) return read_fvecs(path);
  return status(errc::invalid_argument, fmt::format("{}: not .fvecs or .bvecs", path));
}

// The `k` nearest base vectors (L2) of every query, by brute force, in parallel on `pool`.
std::vector<std::int32_t> brute_force_ground_truth(const Tensor<float>& base, const Tensor<float>& queries, std::int64_t k,
                                                   ThreadPool* pool) {
  const std::int64_t n = base.dim(0), nq = queries.dim(0), d = base.dim(1);
  k = std::min(k, n);
  std::vector<std::int32_t> gt(static_cast<std::size_t>(nq * k));
  parallel_for(pool, 0, nq, [&](std::int64_t q0, std::int64_t q1) {
    std::vector<std::pair<float, std::int32_t>> all(static_cast<std::size_t>(n));
    for (std::int64_t q = q0; q < q1; ++q) {
      const std::span<const float> qv(queries.data() + q * d, static_cast<std::size_t>(d));
      for (std::int64_t i = 0; i < n; ++i)
        all[static_cast<std::size_t>(i)] = {l2_sqr(qv, {base.data() + i * d, static_cast<std::size_t>(d)}), static_cast<std::int32_t>(i)};
      std::partial_sort(all.begin(), all.begin() + k, all.end());
      for (std::int64_t r = 0; r < k; ++r) gt[static_cast<std::size_t>(q * k + r)] = all[static_cast<std::size_t>(r)].second;
    }
  });
  return gt;
}

// A set that behaves like real embeddings (low intrinsic dimension): `clusters` Gaussians in a
// 12-dimensional latent space, mapped by one random linear map into d = 128, plus isotropic noise.
// Queries come from the same mixture.
void generate_synthetic(std::int64_t n, std::int64_t nq, Dataset& data) {
  constexpr std::int64_t d = 128, latent = 12;
  const std::int64_t clusters = std::clamp<std::int64_t>(n / 10, 10, 1000);
  std::mt19937_64 rng(20240601);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> map(static_cast<std::size_t>(d * latent));
  for (float& v : map) v = normal(rng) / std::sqrt(static_cast<float>(latent));
  std::vector<float> centers(static_cast<std::size_t>(clusters * latent));
  for (float& v : centers) v = 4.f * normal(rng);
  std::uniform_int_distribution<std::int64_t> pick(0, clusters - 1);
  auto fill = [&](Tensor<float>& t, std::int64_t rows) {
    t = Tensor<float>::uninitialized({rows, d});
    std::vector<float> z(static_cast<std::size_t>(latent));
    for (std::int64_t i = 0; i < rows; ++i) {
      const std::int64_t c = pick(rng);
      for (std::int64_t j = 0; j < latent; ++j)
        z[static_cast<std::size_t>(j)] = centers[static_cast<std::size_t>(c * latent + j)] + normal(rng);
      for (std::int64_t r = 0; r < d; ++r) {
        float v = 0.f;
        for (std::int64_t j = 0; j < latent; ++j) v += map[static_cast<std::size_t>(r * latent + j)] * z[static_cast<std::size_t>(j)];
        t.data()[i * d + r] = v + 0.05f * normal(rng);
      }
    }
  };
  fill(data.base, n);
  fill(data.queries, nq);
  data.source = fmt::format("synthetic: {} x 128, mixture of {} Gaussians in a 12-d latent space + noise", n, clusters);
}

Dataset load_data(const DataArgs& args, ThreadPool* pool) {
  Dataset data;
  std::string base = args.base, query = args.query, gt = args.gt;
  if (args.synthetic == 0 && base.empty()) {
    const std::filesystem::path dir = kDefaultDataDir;
    const bool present = std::filesystem::exists(dir / "base.bvecs") && std::filesystem::exists(dir / "query.bvecs") &&
                         std::filesystem::exists(dir / "groundtruth.ivecs");
    if (present) {
      base = (dir / "base.bvecs").string();
      query = (dir / "query.bvecs").string();
      gt = (dir / "groundtruth.ivecs").string();
    } else {
      fmt::print("data: {} not found (base.bvecs, query.bvecs, groundtruth.ivecs); using a generated set instead\n",
                 kDefaultDataDir);
    }
  }
  if (base.empty()) {
    generate_synthetic(args.synthetic > 0 ? args.synthetic : 10'000, 100, data);
  } else {
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
    }
  }
  if (data.gt.empty()) {
    const auto t0 = Clock::now();
    data.gt_k = std::min<std::int64_t>(100, data.base.dim(0));
    data.gt = brute_force_ground_truth(data.base, data.queries, data.gt_k, pool);
    data.source += fmt::format(", ground truth by brute force ({}-NN, {:.2f} s)", data.gt_k, seconds_since(t0));
  }
  return data;
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

// Seconds per call of f(): calls it until at least `min_seconds` have passed.
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

// One search row: the configuration `name` at `nprobe` run by `lib` on `threads` threads.
BenchRow search_row(const std::string& name, const char* lib, unsigned threads, std::int64_t nprobe, const ProbeStats& probes,
                    const Recall& recall, double qps, double bytes_per_vector) {
  BenchRow row(fmt::format("{} nprobe={}", name, nprobe), lib, threads);
  row.set("nprobe", nprobe).set("nn_probed", probes.nn_probed);
  row.set("recall1", recall.r1).set("recall10", recall.r10).set("recall10_10", recall.r10_10);
  row.set("qps", qps).set("gcodes_s", probes.codes_per_query * qps / 1e9);
  row.set("bytes_per_vector", bytes_per_vector);
  return row;
}

struct PqConfig {
  std::int64_t m;
  int nbits;
  std::string name() const { return fmt::format("IVF{},PQ{}x{}{}", kNlist, m, nbits, nbits == 4 ? "fs" : ""); }
};

IvfPqIndex<cpu> build_quarry(const Dataset& data, const PqConfig& cfg, bool store_vectors, ThreadPool* pool, double& train_s,
                             double& add_s) {
  IvfPqOptions o;
  o.nlist = kNlist;
  o.m = cfg.m;
  o.nbits = cfg.nbits;
  o.metric = Metric::l2;
  o.store_vectors = store_vectors;
  auto index = IvfPqIndex<cpu>::create(data.base.dim(1), o);
  if (!index.ok()) {
    fmt::print(stderr, "quarry {}: {}\n", cfg.name(), index.status().to_string());
    std::exit(1);
  }
  IvfPqTrainOptions to;
  to.coarse_iterations = kCoarseIterations;
  to.pq_iterations = kPqIterations;
  to.max_points_per_centroid = 256;
  to.pool = pool;
  auto t0 = Clock::now();
  if (const status st = index->train(data.base.view(), to); !st.ok()) {
    fmt::print(stderr, "quarry {} train: {}\n", cfg.name(), st.to_string());
    std::exit(1);
  }
  train_s = seconds_since(t0);
  t0 = Clock::now();
  if (const status st = index->add(data.base.view(), pool); !st.ok()) {
    fmt::print(stderr, "quarry {} add: {}\n", cfg.name(), st.to_string());
    std::exit(1);
  }
  add_s = seconds_since(t0);
  return std::move(index).value();
}

}  // namespace

int main(int argc, char** argv) {
  DataArgs data_args;
  const std::vector<const char*> rest = take_data_args(argc, argv, data_args);
  const BenchOptions options = bench_options_from_command_line(static_cast<int>(rest.size()), rest.data(), kWhat);

  BenchReport report;
  report.machine = identify_machine(options.threads);
  const unsigned nthreads = report.machine.threads;
  ThreadPool pool(nthreads);
  ThreadPool* all = nthreads > 1 ? &pool : nullptr;
  std::vector<unsigned> thread_counts = {1};
  if (nthreads > 1) thread_counts.push_back(nthreads);
  const bool quick = options.quick;
  const double min_seconds = quick ? 0.05 : 0.2;
  const int reps = quick ? 1 : 5;
  const std::vector<std::int64_t> nprobes = {1, 4, 8, 16, 32};

#if QUARRY_BENCH_HAS_FAISS
  fmt::print("peer: {} (faiss::get_compile_options(): \"{}\")\n", FaissIvfPq::version(), FaissIvfPq::compile_options());
  const std::string faiss_build = FaissIvfPq::build();
  if (nthreads > 1) {
    const char* policy = std::getenv("OMP_WAIT_POLICY");
    if (policy == nullptr)
      fmt::print("note: FAISS's OpenMP threads spin while they wait (libgomp's default, OMP_WAIT_POLICY unset); where other "
                 "processes share the cores this slows FAISS's {}-thread rows and training many-fold: run with "
                 "OMP_WAIT_POLICY=passive there\n",
                 nthreads);
    else
      fmt::print("OMP_WAIT_POLICY={}\n", policy);
  }
#else
  fmt::print("FAISS peer not built: {}; quarry runs alone\n", QUARRY_BENCH_FAISS_MISSING);
#endif

  const Dataset data = load_data(data_args, all);
  const std::int64_t n = data.base.dim(0), nq = data.queries.dim(0), d = data.base.dim(1);
  fmt::print("data: {}\n", data.source);
  if (n < 256 * 4) {
    fmt::print(stderr, "{} base vectors: too few to train {} lists and 256-centroid PQ codebooks\n", n, kNlist);
    return 1;
  }
  const TensorView<const float> qview = data.queries.view();
  report.yardsticks = measure_yardsticks(nthreads, options.effort());

  for (const PqConfig& cfg : {PqConfig{16, 8}, PqConfig{32, 4}}) {
    if (d % cfg.m != 0) {
      fmt::print("skipping {}: d = {} is not a multiple of M = {}\n", cfg.name(), d, cfg.m);
      continue;
    }
    // ---- build: both libraries, on 1 thread and on all threads (the last build is searched) ----
    std::optional<IvfPqIndex<cpu>> plain;
#if QUARRY_BENCH_HAS_FAISS
    FaissIvfPqConfig fc;
    fc.d = static_cast<long>(d);
    fc.nlist = kNlist;
    fc.m = static_cast<long>(cfg.m);
    fc.nbits = cfg.nbits;
    fc.coarse_iterations = kCoarseIterations;
    fc.pq_iterations = kPqIterations;
    fc.max_points_per_centroid = 256;
    std::unique_ptr<FaissIvfPq> faiss_index;
#endif
    for (const unsigned t : thread_counts) {
      ThreadPool* p = t > 1 ? &pool : nullptr;
      double qt = 0, qa = 0;
      plain.reset();
      plain.emplace(build_quarry(data, cfg, false, p, qt, qa));
      report.rows.push_back(BenchRow(cfg.name() + " train", "quarry", t).set("ms", qt * 1e3));
      report.rows.push_back(BenchRow(cfg.name() + " add", "quarry", t).set("ms", qa * 1e3));
#if QUARRY_BENCH_HAS_FAISS
      faiss_index.reset();
      faiss_index = std::make_unique<FaissIvfPq>(fc);
      const double ft = faiss_index->train(data.base.data(), static_cast<long>(n), t);
      const double fa = faiss_index->add(data.base.data(), static_cast<long>(n), t);
      report.rows.push_back(BenchRow(cfg.name() + " train", "faiss", t).set("ms", ft * 1e3).set("build", faiss_build));
      report.rows.push_back(BenchRow(cfg.name() + " add", "faiss", t).set("ms", fa * 1e3).set("build", faiss_build));
      settle();
#endif
    }
    double rt = 0, ra = 0;
    const IvfPqIndex<cpu> refined = build_quarry(data, cfg, true, all, rt, ra);
    report.rows.push_back(BenchRow(cfg.name() + ",RFlat train", "quarry", nthreads).set("ms", rt * 1e3));
    report.rows.push_back(BenchRow(cfg.name() + ",RFlat add", "quarry", nthreads).set("ms", ra * 1e3));
#if QUARRY_BENCH_HAS_FAISS
    // FAISS's refine wraps the IVF-PQ built above: no training of its own; its add is the copy of
    // the full vectors (after the IVF-PQ's add above).
    FaissIvfPq& faiss = *faiss_index;
    const double fr = faiss.enable_refine(data.base.data());
    report.rows.push_back(BenchRow(cfg.name() + ",RFlat add (wrap)", "faiss", 1).set("ms", fr * 1e3).set("build", faiss_build));
#endif

    for (const bool refine : {false, true}) {
      const IvfPqIndex<cpu>& index = refine ? refined : *plain;
      const std::string name = cfg.name() + (refine ? ",RFlat" : "");
      for (const unsigned t : thread_counts) {
        ThreadPool* p = t > 1 ? &pool : nullptr;
        for (const std::int64_t nprobe : nprobes) {
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
          const ProbeStats qp = probe_stats(
              data, std::min(nprobe, kNlist),
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
          const ProbeStats fp = probe_stats(
              data, std::min(nprobe, kNlist),
              [&](const float* x, std::int64_t rows, std::int64_t np, std::int64_t* out) {
                faiss.coarse_lists(x, static_cast<long>(rows), static_cast<long>(np), out);
              },
              [&](std::int64_t l) { return faiss.list_size(static_cast<long>(l)); });
          double f_best = 1e30;
          for (int r = 0; r < reps; ++r) {
            q_best = std::min(q_best, seconds_per_call(min_seconds, run_quarry));
            settle();
            f_best = std::min(f_best, seconds_per_call(min_seconds, run_faiss));
            settle();
          }
#else
          for (int r = 0; r < reps; ++r) q_best = std::min(q_best, seconds_per_call(min_seconds, run_quarry));
#endif
          const double q_qps = static_cast<double>(nq) / q_best;
          BenchRow qrow = search_row(name, "quarry", t, nprobe, qp, qr, q_qps, index.bytes_per_vector());
#if QUARRY_BENCH_HAS_FAISS
          const double f_qps = static_cast<double>(nq) / f_best;
          qrow.set("faiss_qps_ratio", q_qps / f_qps);
          report.rows.push_back(std::move(qrow));
          BenchRow frow = search_row(name, "faiss", t, nprobe, fp, fr_, f_qps, faiss.bytes_per_vector(refine));
          frow.set("build", faiss_build);
          report.rows.push_back(std::move(frow));
#else
          report.rows.push_back(std::move(qrow));
#endif
        }
      }
    }
  }

  const int rc = output_report(report, options.json_path);
  fmt::print(
      "nn_probed: share of queries whose true nearest neighbour is in a probed list; recall1: it is ranked first; "
      "recall10: it is in the top {0}; recall10_10: share of the true {0} nearest in the top {0}; qps: {1} queries "
      "searched as one batch, best of {2} measurements of >= {3} s, quarry and FAISS (when built) alternating; gcodes_s: "
      "PQ codes in the probed lists per second (1e9); bytes_per_vector: code + 8-byte id (+ 4d for the full vectors of "
      "RFlat), block padding of fast-scan not counted; faiss_qps_ratio: quarry qps / FAISS qps for the same row; "
      "train/add: ms (RFlat: on {4} threads). RFlat: the best k x {5} candidates re-ranked by exact L2.\n",
      kK, nq, reps, min_seconds, nthreads, kRefineFactor);
  return rc;
}
