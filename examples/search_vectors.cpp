// search_vectors: the index module's user story. Builds an IVF-PQ index from a .fvecs/.bvecs file
// (or from a clustered data set it generates), shows a progress bar while training and adding,
// then prints recall against the ground truth, queries per second and bytes per vector.
//
// Usage: search_vectors [--base FILE.fvecs|.bvecs] [--query FILE] [--gt FILE.ivecs] [--nlist N]
//                       [--m M] [--nbits 8|4] [--nprobe P] [--k K] [--refine R]
//                       [--metric l2|ip|cosine] [--threads T] [--save FILE] [--quick]
//   e.g. with D = ../shared/data/ann/bigann10k:
//     search_vectors --base $D/base.bvecs --query $D/query.bvecs --gt $D/groundtruth.ivecs --nbits 4 --refine 8
//   Without --base it generates its data. --save FILE also writes the index, loads it back and
//   checks the loaded copy gives the same results.
// Exit status: 0 done, 1 a file or the library refused the input (its message on stderr), 2 bad
// command line (usage on stderr).
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#if defined(_WIN32)
#include <io.h>
#define QUARRY_ISATTY(f) _isatty(_fileno(f))
#else
#include <unistd.h>
#define QUARRY_ISATTY(f) isatty(fileno(f))
#endif

#include <fmt/core.h>

#include <quarry/index/ivf_pq.hpp>
#include <quarry/quarry.hpp>

using namespace quarry;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

// ---------------------------------------------------------------------------------------------
// The command line

constexpr const char* kSynopsis =
    "usage: search_vectors [--base FILE.fvecs|.bvecs] [--query FILE] [--gt FILE.ivecs] [--nlist N] [--m M]\n"
    "                      [--nbits 8|4] [--nprobe P] [--k K] [--refine R] [--metric l2|ip|cosine] [--threads T]\n"
    "                      [--save FILE] [--quick]\n";
constexpr const char* kUsage = R"(
Builds an IVF-PQ index, searches it, and prints recall, queries per second and bytes per vector.
Without --base it generates a clustered data set (20000 x 64, 100 queries) and its exact ground
truth, so it runs anywhere in a few seconds.

  --base FILE      base vectors, .fvecs (float32) or .bvecs (uint8)
  --query FILE     query vectors, .fvecs or .bvecs (default: the last 100 base vectors, held out)
  --gt FILE        ground truth, .ivecs: each query's nearest base ids, nearest first
                   (default: computed by brute force)
  --nlist N        inverted lists (default: about sqrt(n))
  --m M            PQ sub-quantizers, a divisor of d (default: about d/4)
  --nbits 8|4      bits per sub-code; 4 scans with fast-scan (default 8)
  --nprobe P       lists scanned per query (default: several, to show the trade-off)
  --k K            neighbours per query (default 10)
  --refine R       keep k*R candidates and re-rank them on stored full vectors
                   (default 1: no re-ranking, no full vectors kept)
  --metric M       l2, ip (inner product) or cosine (default l2)
  --threads T      threads for training, adding and the multi-threaded QPS (default: all)
  --save FILE      write the index to FILE, load it back (copied, then memory-mapped) and check
                   that both give the same results as the index built here
  --quick          a smaller generated set, fewer training iterations (for the tests)
  -h, --help       this text
Exit status: 0 done, 1 a file or the index refused the input, 2 bad command line.
)";

struct Options {
  std::string base, query, gt, save;
  std::optional<std::int64_t> nlist, m, nprobe;
  int nbits = 8;
  std::int64_t k = 10, refine = 1, threads = 0;
  Metric metric = Metric::l2;
  bool quick = false;
};

struct UsageError {
  std::string what;
};

std::int64_t parse_int(std::string_view flag, std::string_view s, std::int64_t lo, std::int64_t hi) {
  std::int64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || end != s.data() + s.size() || s.empty())
    throw UsageError{fmt::format("{} takes a whole number, not '{}'", flag, s)};
  if (v < lo || v > hi) throw UsageError{fmt::format("{} must be in {}..{}, not {}", flag, lo, hi, v)};
  return v;
}

bool ends_with(std::string_view s, std::string_view tail) {
  return s.size() >= tail.size() && s.substr(s.size() - tail.size()) == tail;
}

void check_vectors_name(std::string_view flag, const std::string& path) {
  if (!ends_with(path, ".fvecs") && !ends_with(path, ".bvecs"))
    throw UsageError{fmt::format("{} takes a .fvecs or .bvecs file, not '{}'", flag, path)};
}

Options parse_args(int argc, char** argv) {
  Options o;
  constexpr std::int64_t kBig = std::int64_t{1} << 40;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kSynopsis, stdout);
      std::fputs(kUsage, stdout);
      std::exit(0);
    }
    if (a == "--quick") {
      o.quick = true;
      continue;
    }
    if (a.substr(0, 2) != "--") throw UsageError{fmt::format("unexpected argument '{}'", a)};
    if (i + 1 >= argc) throw UsageError{fmt::format("{} needs a value", a)};
    const std::string_view v = argv[++i];
    if (a == "--base") o.base = v;
    else if (a == "--query") o.query = v;
    else if (a == "--gt") o.gt = v;
    else if (a == "--save") o.save = v;
    else if (a == "--nlist") o.nlist = parse_int(a, v, 1, kBig);
    else if (a == "--m") o.m = parse_int(a, v, 1, kBig);
    else if (a == "--nbits") {
      o.nbits = static_cast<int>(parse_int(a, v, 0, 64));
      if (o.nbits != 8 && o.nbits != 4) throw UsageError{fmt::format("--nbits must be 8 or 4, not {}", o.nbits)};
    } else if (a == "--nprobe") o.nprobe = parse_int(a, v, 1, kBig);
    else if (a == "--k") o.k = parse_int(a, v, 1, 100000);
    else if (a == "--refine") o.refine = parse_int(a, v, 1, 100000);
    else if (a == "--threads") o.threads = parse_int(a, v, 1, 4096);
    else if (a == "--metric") {
      if (v == "l2") o.metric = Metric::l2;
      else if (v == "ip" || v == "inner_product") o.metric = Metric::inner_product;
      else if (v == "cosine") o.metric = Metric::cosine;
      else throw UsageError{fmt::format("--metric must be l2, ip or cosine, not '{}'", v)};
    } else {
      throw UsageError{fmt::format("unknown option '{}'", a)};
    }
  }
  if (!o.base.empty()) check_vectors_name("--base", o.base);
  if (!o.query.empty()) check_vectors_name("--query", o.query);
  if (o.base.empty() && (!o.query.empty() || !o.gt.empty()))
    throw UsageError{"--query and --gt need --base (without --base the data is generated)"};
  if (!o.gt.empty() && o.query.empty()) throw UsageError{"--gt needs --query (the ground truth is per query)"};
  if (!o.gt.empty() && !ends_with(o.gt, ".ivecs")) throw UsageError{fmt::format("--gt takes an .ivecs file, not '{}'", o.gt)};
  return o;
}

// A failure the library reported: printed with its message, exit status 1.
struct Failure {
  std::string what;
};

template <class T>
T take(result<T> r, std::string_view doing) {
  if (!r.ok()) throw Failure{fmt::format("{}: {}", doing, r.status().to_string())};
  return std::move(r).value();
}

void check(const status& s, std::string_view doing) {
  if (!s.ok()) throw Failure{fmt::format("{}: {}", doing, s.to_string())};
}

// ---------------------------------------------------------------------------------------------
// Progress on stderr: a bar redrawn in place on a terminal (a ticker keeps the elapsed time
// moving through stages that report rarely), one line per finished stage anywhere else.

class Progress {
 public:
  Progress() : tty_(QUARRY_ISATTY(stderr) != 0) {
    if (tty_) ticker_ = std::thread([this] { tick(); });
  }
  ~Progress() {
    finish();
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    if (ticker_.joinable()) ticker_.join();
  }
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Begins a stage (finishing the previous one).
  void start(std::string label, std::int64_t total) {
    finish();
    std::lock_guard lock(mutex_);
    label_ = std::move(label);
    total_ = std::max<std::int64_t>(total, 1);
    done_ = 0;
    active_ = true;
    t0_ = Clock::now();
    std::fflush(stdout);  // keep stdout and stderr in order in a merged log
    if (tty_) draw();
  }
  void update(std::int64_t done, std::int64_t total) {
    std::lock_guard lock(mutex_);
    if (!active_) return;
    done_ = done;
    total_ = std::max<std::int64_t>(total, 1);
    if (tty_) draw();
  }
  // Ends the current stage; returns its seconds (0 when none was running).
  double finish() {
    std::lock_guard lock(mutex_);
    if (!active_) return 0;
    active_ = false;
    const double s = seconds_since(t0_);
    if (tty_) {
      done_ = total_;
      draw();
      std::fputc('\n', stderr);
    } else {
      std::fprintf(stderr, "  %s: done in %.2f s\n", label_.c_str(), s);
    }
    std::fflush(stderr);
    return s;
  }

 private:
  void draw() {  // mutex_ held
    constexpr int kWidth = 30, kBlock = 4;
    const double elapsed = seconds_since(t0_);
    std::string bar(kWidth, '.'), pct = "    ";
    if (total_ == 1 && done_ == 0) {  // a stage that reports only its start and end: a block bounces to
      const int period = 2 * (kWidth - kBlock);  // show it is alive
      const int step = static_cast<int>(elapsed * 20) % period, pos = step < period / 2 ? step : period - step;
      bar.replace(static_cast<std::size_t>(pos), kBlock, kBlock, '#');
    } else {
      const double frac = std::clamp(static_cast<double>(done_) / static_cast<double>(total_), 0.0, 1.0);
      bar.replace(0, static_cast<std::size_t>(frac * kWidth + 0.5), static_cast<std::size_t>(frac * kWidth + 0.5), '#');
      pct = fmt::format("{:3.0f}%", 100 * frac);
    }
    std::string line = fmt::format("  {:<40} [{}] {} {:6.1f} s", label_, bar, pct, elapsed);
    const std::size_t len = line.size();
    if (len < drawn_) line.append(drawn_ - len, ' ');
    drawn_ = len;
    std::fprintf(stderr, "\r%s", line.c_str());
    std::fflush(stderr);
  }
  void tick() {
    std::unique_lock lock(mutex_);
    while (!stop_) {
      wake_.wait_for(lock, std::chrono::milliseconds(100));
      if (active_ && !stop_) draw();
    }
  }

  const bool tty_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::thread ticker_;
  bool stop_ = false, active_ = false;
  std::string label_;
  std::int64_t done_ = 0, total_ = 1;
  std::size_t drawn_ = 0;
  Clock::time_point t0_;
};

// ---------------------------------------------------------------------------------------------
// Data

struct DataSet {
  std::string source;      // in words
  Tensor<float> base;      // [n, d]
  Tensor<float> queries;   // [nq, d]
  Tensor<std::int32_t> gt; // [nq, >= 1] nearest base ids, or empty
  std::string gt_source;
};

// Vectors that behave like real embeddings (low intrinsic dimension): a mixture of Gaussians in
// a 12-dimensional latent space, mapped linearly into d dimensions, plus a little noise. Base and
// queries come from the same distribution.
DataSet generate(std::int64_t n, std::int64_t nq, std::int64_t d, std::int64_t clusters, std::uint64_t seed) {
  constexpr std::int64_t kLatent = 12;
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  Tensor<float> map = Tensor<float>::uninitialized({d, kLatent});
  for (float& v : map.span()) v = normal(rng) / std::sqrt(static_cast<float>(kLatent));
  Tensor<float> centers = Tensor<float>::uninitialized({clusters, kLatent});
  for (float& v : centers.span()) v = normal(rng);
  std::uniform_int_distribution<std::int64_t> pick(0, clusters - 1);
  auto fill = [&](Tensor<float>& x) {
    float z[kLatent];
    for (std::int64_t i = 0; i < x.dim(0); ++i) {
      const std::int64_t c = pick(rng);
      for (std::int64_t l = 0; l < kLatent; ++l) z[l] = centers(c, l) + normal(rng);  // clusters as wide as their spread: they overlap
      for (std::int64_t j = 0; j < d; ++j) {
        float s = 0.02f * normal(rng);
        for (std::int64_t l = 0; l < kLatent; ++l) s += map(j, l) * z[l];
        x(i, j) = s;
      }
    }
  };
  DataSet ds;
  ds.base = Tensor<float>::uninitialized({n, d});
  ds.queries = Tensor<float>::uninitialized({nq, d});
  fill(ds.base);
  fill(ds.queries);
  ds.source = fmt::format("generated: {} clusters in a {}-d latent space mapped into {} dimensions, plus noise (seed {})",
                          clusters, kLatent, d, seed);
  return ds;
}

Tensor<float> read_vectors(const std::string& path, std::string_view flag) {
  const std::string doing = fmt::format("reading {}", flag);
  if (ends_with(path, ".bvecs")) return take(read_bvecs_as_float(path), doing);
  return take(read_fvecs(path), doing);
}

// Exact nearest neighbours (k per query, nearest first, ties to the smaller id) by brute force.
Tensor<std::int32_t> brute_force(TensorView<const float> base, TensorView<const float> queries, std::int64_t k, Metric metric,
                                 ThreadPool* pool) {
  const std::int64_t n = base.dim(0), d = base.dim(1), nq = queries.dim(0);
  k = std::min(k, n);
  std::vector<float> base_norm(static_cast<std::size_t>(n), 1.f);
  if (metric == Metric::cosine)
    for (std::int64_t i = 0; i < n; ++i) {
      const std::span<const float> row(&base(i, 0), static_cast<std::size_t>(d));
      base_norm[static_cast<std::size_t>(i)] = std::sqrt(dot(row, row));
    }
  Tensor<std::int32_t> gt({nq, k});
  parallel_for(pool, 0, nq, [&](std::int64_t lo, std::int64_t hi) {
    std::vector<std::pair<float, std::int64_t>> scored(static_cast<std::size_t>(n));
    for (std::int64_t q = lo; q < hi; ++q) {
      const float* qv = &queries(q, 0);
      for (std::int64_t i = 0; i < n; ++i) {
        const float* x = &base(i, 0);
        float s = 0;
        if (metric == Metric::l2) {
          for (std::int64_t j = 0; j < d; ++j) s += (x[j] - qv[j]) * (x[j] - qv[j]);
        } else {  // larger is nearer: rank by the negated product (cosine: the query's norm changes nothing)
          for (std::int64_t j = 0; j < d; ++j) s += x[j] * qv[j];
          s = -s / (base_norm[static_cast<std::size_t>(i)] > 0 ? base_norm[static_cast<std::size_t>(i)] : 1.f);
        }
        scored[static_cast<std::size_t>(i)] = {s, i};
      }
      std::partial_sort(scored.begin(), scored.begin() + k, scored.end());
      for (std::int64_t r = 0; r < k; ++r) gt(q, r) = static_cast<std::int32_t>(scored[static_cast<std::size_t>(r)].second);
    }
  }, 4);
  return gt;
}

// ---------------------------------------------------------------------------------------------
// Search and measurement

struct Measured {
  SearchResults results;
  double qps = 0;
};

// search_batch over all queries, repeated until `min_seconds` have passed (at least once).
Measured measure(const IvfPqIndex<cpu>& index, TensorView<const float> queries, std::int64_t k, const IvfPqSearchParams& params,
                 ThreadPool* pool, double min_seconds) {
  Measured m;
  std::int64_t runs = 0;
  const auto t0 = Clock::now();
  double elapsed = 0;
  do {
    m.results = take(index.search_batch(queries, k, params, pool), "searching");
    ++runs;
    elapsed = seconds_since(t0);
  } while (elapsed < min_seconds);
  m.qps = static_cast<double>(runs * queries.dim(0)) / elapsed;
  return m;
}

struct Recall {
  double at1 = 0, atk = 0, k_at_k = -1;  // k_at_k < 0: the ground truth has fewer than k columns
};

Recall recall(const SearchResults& res, TensorView<const std::int32_t> gt) {
  Recall r;
  const std::int64_t nq = res.nq, k = res.k;
  const bool intersect = gt.dim(1) >= k;
  double inter = 0;
  for (std::int64_t q = 0; q < nq; ++q) {
    const std::int64_t truth = gt(q, 0);
    r.at1 += res.id(q, 0) == truth;
    for (std::int64_t j = 0; j < k; ++j) r.atk += res.id(q, j) == truth;
    if (intersect)
      for (std::int64_t j = 0; j < k; ++j)
        for (std::int64_t t = 0; t < k; ++t) inter += res.id(q, j) == gt(q, t);
  }
  r.at1 /= static_cast<double>(nq);
  r.atk /= static_cast<double>(nq);
  if (intersect) r.k_at_k = inter / static_cast<double>(nq * k);
  return r;
}

std::string thousands(double v) {
  std::string s = fmt::format("{:.0f}", v), out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i > 0 && (s.size() - i) % 3 == 0) out += ',';
    out += s[i];
  }
  return out;
}

std::string stage_label(const char* stage, const IvfPqIndex<cpu>& index) {
  const std::string_view s = stage;
  if (s == "coarse") return fmt::format("training coarse quantizer ({} lists)", index.options().nlist);
  if (s == "pq") return fmt::format("training PQ codebooks ({} x {})", index.options().m, std::int64_t{1} << index.options().nbits);
  return fmt::format("training: {}", s);
}

// Saves the index, loads it back (copied and memory-mapped), and checks that every query gets the
// same ids and distances from the loaded index as from the one built here, at every nprobe.
void save_and_check(const IvfPqIndex<cpu>& index, const std::string& path, TensorView<const float> queries, std::int64_t k,
                    std::int64_t refine, const std::vector<std::int64_t>& probes, ThreadPool* pool) {
  auto t0 = Clock::now();
  check(index.save(path), "saving the index");
  const double save_s = seconds_since(t0);
  std::error_code ec;
  const auto bytes = std::filesystem::file_size(path, ec);
  fmt::print("save    : {} in {:.3f} s ({:.2f} MB, {:.1f} B per vector on disk)\n", path, save_s, ec ? 0.0 : static_cast<double>(bytes) / 1e6,
             ec || index.size() == 0 ? 0.0 : static_cast<double>(bytes) / static_cast<double>(index.size()));
  std::string loads;
  for (const bool mmap : {false, true}) {
    t0 = Clock::now();
    const IvfPqIndex<cpu> loaded = take(IvfPqIndex<cpu>::load(path, {.mmap = mmap}), fmt::format("loading {} back", path));
    loads += fmt::format("{}{} in {:.3f} s", loads.empty() ? "" : ", ", mmap ? "memory-mapped" : "copied", seconds_since(t0));
    for (const std::int64_t p : probes) {
      IvfPqSearchParams sp;
      sp.nprobe = p;
      sp.refine_factor = refine;
      const SearchResults a = take(index.search_batch(queries, k, sp, pool), "searching");
      const SearchResults b = take(loaded.search_batch(queries, k, sp, pool), "searching the loaded index");
      if (a.ids != b.ids || a.distances != b.distances)
        throw Failure{fmt::format("the index loaded from {} ({}) gives other results than the one saved (nprobe {})", path,
                                  mmap ? "memory-mapped" : "copied", p)};
    }
  }
  fmt::print("load    : {}; both give the same ids and distances for all {} queries at nprobe {}\n", loads, queries.dim(0),
             [&] {
               std::string s;
               for (const std::int64_t p : probes) s += fmt::format("{}{}", s.empty() ? "" : ", ", p);
               return s;
             }());
}

int run(const Options& opt) {
  const unsigned hw = std::max(1u, std::thread::hardware_concurrency());
  const unsigned threads = opt.threads > 0 ? static_cast<unsigned>(opt.threads) : hw;
  std::optional<ThreadPool> pool_storage;
  if (threads > 1) pool_storage.emplace(threads);
  ThreadPool* pool = pool_storage ? &*pool_storage : nullptr;

  fmt::print("IVF-PQ vector search with quarry {} ({} kernels, {} thread{})\n\n", QUARRY_VERSION_STRING, isa_name(active_isa()),
             threads, threads == 1 ? "" : "s");

  // --- data
  DataSet ds;
  if (opt.base.empty()) {
    ds = opt.quick ? generate(2000, 50, 16, 20, 1) : generate(20000, 100, 64, 100, 1);
  } else {
    ds.base = read_vectors(opt.base, "--base");
    ds.source = fmt::format("{} ({})", opt.base, ends_with(opt.base, ".bvecs") ? "uint8, read as float" : "float32");
    if (ds.base.dim(0) < 2) throw Failure{fmt::format("{} holds {} vector(s): too few to index", opt.base, ds.base.dim(0))};
    if (opt.query.empty()) {  // hold the last vectors out as queries
      const std::int64_t n = ds.base.dim(0), nq = std::min<std::int64_t>(100, std::max<std::int64_t>(1, n / 10));
      ds.queries = ds.base.slice(0, n - nq, n).contiguous();
      Tensor<float> kept = ds.base.slice(0, 0, n - nq).contiguous();
      ds.base = std::move(kept);
      ds.source += fmt::format("; queries: its last {} vectors, held out of the index", nq);
    } else {
      ds.queries = read_vectors(opt.query, "--query");
      if (ds.queries.dim(0) > 0 && ds.queries.dim(1) != ds.base.dim(1))
        throw Failure{fmt::format("{} has dimension {} but {} has dimension {}", opt.query, ds.queries.dim(1), opt.base, ds.base.dim(1))};
      ds.source += fmt::format("; queries: {}", opt.query);
    }
    if (ds.queries.dim(0) == 0) throw Failure{fmt::format("{} holds no query vectors", opt.query)};
    if (!opt.gt.empty()) {
      ds.gt = take(read_ivecs(opt.gt), "reading --gt");
      if (ds.gt.dim(0) < ds.queries.dim(0))
        throw Failure{fmt::format("{} has ground truth for {} queries, but there are {}", opt.gt, ds.gt.dim(0), ds.queries.dim(0))};
      for (std::int64_t q = 0; q < ds.queries.dim(0); ++q)
        if (ds.gt(q, 0) < 0 || ds.gt(q, 0) >= ds.base.dim(0))
          throw Failure{fmt::format("{}: query {}'s nearest neighbour is id {}, but the base has {} vectors (ground truth for another file?)",
                                    opt.gt, q, ds.gt(q, 0), ds.base.dim(0))};
      ds.gt_source = fmt::format("{} ({} neighbours per query)", opt.gt, ds.gt.dim(1));
      if (opt.metric != Metric::l2) ds.gt_source += fmt::format(" -- make sure it was computed with the {} metric", metric_name(opt.metric));
    }
  }
  const std::int64_t n = ds.base.dim(0), d = ds.base.dim(1), nq = ds.queries.dim(0);
  fmt::print("data    : {}\n", ds.source);
  fmt::print("          {} base vectors and {} queries of dimension {} ({:.1f} MB as float32)\n", n, nq, d,
             4.0 * static_cast<double>(n) * static_cast<double>(d) / 1e6);

  if (ds.gt.numel() == 0) {
    const double work = static_cast<double>(n) * static_cast<double>(nq) * static_cast<double>(d);
    if (work <= 2e11 / 4) {  // well under a minute
      const auto t0 = Clock::now();
      ds.gt = brute_force(ds.base.view(), ds.queries.view(), opt.k, opt.metric, pool);
      ds.gt_source = fmt::format("exact {} nearest neighbours by brute force ({}, {:.2f} s)", ds.gt.dim(1), metric_name(opt.metric),
                                 seconds_since(t0));
    } else {
      ds.gt_source = "none (give --gt FILE.ivecs; brute force over this many vectors would take too long): no recall";
    }
  }
  fmt::print("truth   : {}\n", ds.gt_source);

  // --- index shape
  IvfPqOptions io;
  io.nlist = opt.nlist.value_or(std::clamp<std::int64_t>(std::llround(std::sqrt(static_cast<double>(n))), 1, n));
  if (opt.m) {
    io.m = *opt.m;
  } else {
    io.m = std::max<std::int64_t>(1, std::min<std::int64_t>(d / 4, opt.nbits == 4 ? 256 : d));
    while (io.m > 1 && d % io.m != 0) --io.m;
  }
  io.nbits = opt.nbits;
  io.metric = opt.metric;
  io.store_vectors = opt.refine > 1;
  IvfPqIndex<cpu> index = take(IvfPqIndex<cpu>::create(d, io), "creating the index");
  const auto& pq = index.pq();
  fmt::print("index   : IVF{},PQ{}x{}{} -- {} inverted lists; each vector stored as {} sub-codes of {} bits{}; metric {}\n",
             io.nlist, io.m, io.nbits, io.nbits == 4 ? "fs" : "", io.nlist, io.m, io.nbits, io.nbits == 4 ? " (4-bit fast-scan)" : "",
             metric_name(io.metric));
  const double f32_bytes = 4.0 * static_cast<double>(d);
  if (io.store_vectors) {
    fmt::print("memory  : {:.0f} B per vector = {} B code + 8 B id + {:.0f} B full float32 vector kept for re-ranking\n"
               "          (the codes alone are {:.1f}x smaller than float32's {:.0f} B)\n",
               index.bytes_per_vector(), pq.code_size(), f32_bytes, f32_bytes / static_cast<double>(pq.code_size()), f32_bytes);
  } else {
    fmt::print("memory  : {:.0f} B per vector = {} B code + 8 B id: {:.1f}x smaller than float32's {:.0f} B (codes alone: {:.1f}x)\n",
               index.bytes_per_vector(), pq.code_size(), f32_bytes / index.bytes_per_vector(), f32_bytes,
               f32_bytes / static_cast<double>(pq.code_size()));
  }
  fmt::print("\n");

  // --- train and add, with progress on stderr
  IvfPqTrainOptions to;
  to.pool = pool;
  if (opt.quick) to.coarse_iterations = to.pq_iterations = 6;
  double train_s = 0, add_s = 0;
  std::vector<std::pair<std::string, double>> stage_times;
  {
    Progress progress;
    std::string current;
    to.progress = [&](const char* stage, std::int64_t done, std::int64_t total) {
      if (current != stage) {
        if (!current.empty()) stage_times.emplace_back(current, progress.finish());
        current = stage;
        progress.start(stage_label(stage, index), total);
      }
      progress.update(done, total);
    };
    fmt::print("training on the {} base vectors, then adding them in chunks:\n", n);
    const auto t0 = Clock::now();
    check(index.train(ds.base.view(), to), "training");
    if (!current.empty()) stage_times.emplace_back(current, progress.finish());
    train_s = seconds_since(t0);

    const std::int64_t chunk = std::max<std::int64_t>(1000, n / 50);
    progress.start(fmt::format("adding {} vectors", n), n);
    const auto t1 = Clock::now();
    for (std::int64_t lo = 0; lo < n; lo += chunk) {
      const std::int64_t hi = std::min(n, lo + chunk);
      check(index.add(ds.base.slice(0, lo, hi), pool), "adding");
      progress.update(hi, n);
    }
    progress.finish();
    add_s = seconds_since(t1);
  }
  std::string stages;
  for (const auto& [name, s] : stage_times) stages += fmt::format("{}{} {:.2f} s", stages.empty() ? "" : ", ", name, s);
  fmt::print("train   : {:.2f} s{}\n", train_s, stages.empty() ? "" : " (" + stages + ")");
  fmt::print("add     : {:.2f} s ({} vectors/s); the index holds {} vectors\n", add_s,
             thousands(static_cast<double>(n) / std::max(add_s, 1e-9)), index.size());

  std::vector<std::int64_t> probes;
  if (opt.nprobe) {
    probes.push_back(*opt.nprobe);
  } else {
    for (std::int64_t p : {1, 4, 16, 64})
      if (p < io.nlist) probes.push_back(p);
    probes.push_back(io.nlist);  // every list: the PQ's own ceiling
  }
  if (!opt.save.empty()) save_and_check(index, opt.save, ds.queries.view(), opt.k, opt.refine, probes, pool);
  fmt::print("\n");

  // --- search
  const double min_s = opt.quick ? 0.0 : 0.2;
  const bool have_gt = ds.gt.numel() > 0;
  const std::int64_t k = opt.k;
  fmt::print("search  : {} queries as one batch (search_batch), k = {}{}; QPS on 1 thread{}\n", nq, k,
             opt.refine > 1 ? fmt::format(", {} candidates re-ranked with exact distances", k * opt.refine) : std::string(", no re-ranking"),
             pool ? fmt::format(" and on {} threads", threads) : std::string());
  if (have_gt)
    fmt::print("          recall@1 / recall@{0}: share of queries whose true nearest neighbour is ranked first / is in\n"
               "          the top {0}; {0}-recall@{0}: share of the true {0} nearest neighbours found in the top {0}\n",
               k);
  fmt::print("\n");
  const std::string ka = fmt::format("recall@{}", k), kk = fmt::format("{0}-recall@{0}", k);
  fmt::print("{:>8}  {:>9}  {:>10}  {:>13}  {:>12}", "nprobe", "recall@1", ka, kk, "QPS 1 thread");
  if (pool) fmt::print("  {:>12}", fmt::format("QPS {} thr.", threads));
  fmt::print("\n");
  for (const std::int64_t p : probes) {
    IvfPqSearchParams sp;
    sp.nprobe = p;
    sp.refine_factor = opt.refine;
    const Measured one = measure(index, ds.queries.view(), k, sp, nullptr, min_s);
    std::string rec;
    if (have_gt) {
      const Recall r = recall(one.results, ds.gt.view());
      fmt::print("{:>8}  {:>9.3f}  {:>10.3f}  {:>13}  {:>12}", p, r.at1, r.atk, r.k_at_k < 0 ? "-" : fmt::format("{:.3f}", r.k_at_k),
                 thousands(one.qps));
    } else {
      fmt::print("{:>8}  {:>9}  {:>10}  {:>13}  {:>12}", p, "-", "-", "-", thousands(one.qps));
    }
    if (pool) {
      const Measured many = measure(index, ds.queries.view(), k, sp, pool, min_s);
      if (many.results.ids != one.results.ids) throw Failure{fmt::format("nprobe {}: results on {} threads differ from 1 thread", p, threads)};
      fmt::print("  {:>12}", thousands(many.qps));
    }
    fmt::print("\n");
    std::fflush(stdout);
  }
  if (!opt.nprobe) {
    std::string tips = "Pick one with --nprobe";
    if (opt.refine == 1) tips += "; --refine 8 re-ranks candidates on full vectors";
    if (opt.nbits == 8) tips += "; --nbits 4 scans with fast-scan";
    fmt::print("\nA larger nprobe scans more lists: higher recall, fewer queries per second.\n{}.\n", tips);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  try {
    opt = parse_args(argc, argv);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "search_vectors: %s\n%s(--help describes the options)\n", e.what.c_str(), kSynopsis);
    return 2;
  }
  try {
    return run(opt);
  } catch (const Failure& f) {
    std::fflush(stdout);
    std::fprintf(stderr, "search_vectors: %s\n", f.what.c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "search_vectors: %s\n", e.what());
    return 1;
  }
}
