// bench_cuda_ivf_pq: IvfPqIndex<cuda> search against IvfPqIndex<cpu> on the same trained index,
// in one run: QPS and recall for a batch of queries at several nprobe, and the GPU / CPU QPS
// ratio (the CPU on all the host's threads).
//
// Data: the generated embedding-like set of bench/common/synthetic_embeddings.hpp (a mixture of
// Gaussians in a 12-dimensional latent space mapped into 128 dimensions, plus noise), n base
// vectors (default 1,000,000; --quick 100,000) and 10,000 queries (--quick 1,000) with exact
// ground truth by brute force. The index: IVF (nlist = 4 sqrt(n) rounded to a power of two),
// PQ16x8 and PQ32x4 (the GPU scans 4-bit codes as packed nibbles), and PQ16x8 with the full
// vectors stored, searched with refine_factor 4.
//
// Rows: per configuration and nprobe, "quarry" on the GPU and on the CPU (threads = all), with
// qps (the whole query batch in one search_batch call, best of several), recall1, recall10_10
// (10-recall@10), and on GPU rows cpu_qps_ratio = GPU qps / CPU qps. Train and add time and the
// index's bytes on the device are rows of their own. The GPU searches the same index as the CPU,
// so their recalls should agree: a WARNING line names a row where they differ by more than 0.01.
// --tiny: 4,000 base vectors, 100 queries, nprobe 1 and 8, one timed search (what the test suite
// runs on the SIMT emulator; the figures mean nothing there). Without a device it prints one line
// and exits 0.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <quarry/core/thread_pool.hpp>
#include <quarry/cuda.hpp>
#include <quarry/index/cuda_ivf_pq.hpp>
#include <quarry/index/ivf_pq.hpp>

#include "../common/machine.hpp"
#include "../common/options.hpp"
#include "../common/report.hpp"
#include "../common/synthetic_embeddings.hpp"
#include "../common/timing.hpp"
#include "cuda_device.hpp"

namespace {

using namespace quarry;
using namespace quarry::bench;

void must(const status& st, const char* what) {
  if (!st.ok()) throw std::runtime_error(fmt::format("{}: {}", what, st.message()));
}

struct Config {
  std::string name;
  std::int64_t m;
  int nbits;
  bool refine;
};

// recall1: the true nearest neighbour ranked first; recall10_10: the share of the true 10 nearest
// found in the top 10.
struct Recall {
  double r1 = 0, r10_10 = 0;
};

Recall recall_of(const SearchResults& res, const std::vector<std::int32_t>& gt, std::int64_t gt_k, std::int64_t nq) {
  Recall r;
  for (std::int64_t q = 0; q < nq; ++q) {
    const std::int64_t* ids = res.ids.data() + q * res.k;
    const std::int32_t* truth = gt.data() + q * gt_k;
    if (ids[0] == truth[0]) r.r1 += 1;
    std::int64_t hit = 0;
    for (std::int64_t i = 0; i < 10; ++i)
      for (std::int64_t j = 0; j < 10; ++j)
        if (ids[j] == truth[i]) {
          ++hit;
          break;
        }
    r.r10_10 += static_cast<double>(hit) / 10.0;
  }
  r.r1 /= static_cast<double>(nq);
  r.r10_10 /= static_cast<double>(nq);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  const CudaBenchOptions options = cuda_bench_options(argc, argv, "bench_cuda_ivf_pq",
                                                     "quarry IvfPqIndex<cuda> search vs IvfPqIndex<cpu> on the same index (QPS, recall)");
  if (no_cuda_device("bench_cuda_ivf_pq")) return 0;
  try {
    const bool quick = options.common.quick, tiny = options.tiny;
    const unsigned threads = options.common.threads > 0 ? options.common.threads : default_threads();
    ThreadPool pool(threads);
    const CudaDeviceInfo gpu = cuda_device_info(0).value();

    BenchReport report;
    report.machine = identify_machine(threads);
    {
      BenchRow r("gpu", "machine", 1);
      r.set("gpu", gpu.name).set("sms", gpu.sm_count).set("mem_gib", static_cast<double>(gpu.total_memory_bytes) / (1u << 30));
      report.rows.push_back(std::move(r));
    }

    SyntheticSpec spec;
    spec.n = tiny ? 4'000 : quick ? 100'000 : 1'000'000;
    spec.nq = tiny ? 100 : quick ? 1'000 : 10'000;
    const SyntheticEmbeddings gen(spec);
    auto t0 = Clock::now();
    const Tensor<float> base = gen.base(&pool);
    const Tensor<float> queries = gen.queries(&pool);
    constexpr std::int64_t kGtK = 10;
    const std::vector<std::int32_t> gt = brute_force_knn(base.view(), queries.view(), kGtK, &pool);
    fmt::print("data: {} x {} base, {} queries ({}), ground truth by brute force; {:.1f} s\n", spec.n, spec.d, spec.nq, spec.key(),
               seconds_since(t0));
    std::fflush(stdout);

    std::int64_t nlist = 1;
    while (nlist * 2 <= static_cast<std::int64_t>(4.0 * std::sqrt(static_cast<double>(spec.n)))) nlist *= 2;
    const std::vector<std::int64_t> nprobes = tiny    ? std::vector<std::int64_t>{1, 8}
                                              : quick ? std::vector<std::int64_t>{1, 8, 32}
                                                      : std::vector<std::int64_t>{1, 4, 16, 64, 128};
    const std::vector<Config> configs = {{"PQ16x8", 16, 8, false}, {"PQ32x4", 32, 4, false}, {"PQ16x8,RFlat", 16, 8, true}};
    const int reps = tiny ? 1 : quick ? 2 : 5;
    bool recalls_agree = true;
    constexpr std::int64_t kK = 10;

    for (const Config& c : configs) {
      const std::string cname = fmt::format("IVF{},{}", nlist, c.name);
      IvfPqOptions io;
      io.nlist = nlist;
      io.m = c.m;
      io.nbits = c.nbits;
      io.store_vectors = c.refine;
      auto index = IvfPqIndex<cpu>::create(spec.d, io).value();
      IvfPqTrainOptions to;
      to.pool = &pool;
      t0 = Clock::now();
      must(index.train(base.view(), to), "train");
      const double train_s = seconds_since(t0);
      t0 = Clock::now();
      must(index.add(base.view(), &pool), "add");
      const double add_s = seconds_since(t0);
      t0 = Clock::now();
      auto dev = IvfPqIndex<cuda>::from_cpu(index).value();
      const double copy_s = seconds_since(t0);
      {
        BenchRow r(cname + " build", "quarry", threads);
        r.set("train_ms", train_s * 1e3).set("add_ms", add_s * 1e3).set("to_device_ms", copy_s * 1e3);
        r.set("device_bytes", static_cast<std::int64_t>(dev.device_bytes()));
        report.rows.push_back(std::move(r));
      }
      fmt::print("{}: trained in {:.1f} s, added in {:.1f} s, copied to the device in {:.2f} s ({:.0f} MiB there)\n", cname, train_s,
                 add_s, copy_s, static_cast<double>(dev.device_bytes()) / (1u << 20));
      std::fflush(stdout);

      for (const std::int64_t nprobe : nprobes) {
        if (nprobe > nlist) continue;
        IvfPqSearchParams p;
        p.nprobe = nprobe;
        p.refine_factor = c.refine ? 4 : 1;
        SearchResults cpu_res, gpu_res;
        // Best-of-`reps` wall time of one search_batch over all queries, after one warm-up call.
        const auto cpu_search = [&] { cpu_res = index.search_batch(queries.view(), kK, p, &pool).value(); };
        const auto gpu_search = [&] { gpu_res = dev.search_batch(queries.view(), kK, p).value(); };
        cpu_search();
        gpu_search();
        const double cpu_s = best_seconds(reps, cpu_search), gpu_s = best_seconds(reps, gpu_search);
        const Recall rc = recall_of(cpu_res, gt, kGtK, spec.nq), rg = recall_of(gpu_res, gt, kGtK, spec.nq);
        const double cpu_qps = static_cast<double>(spec.nq) / cpu_s, gpu_qps = static_cast<double>(spec.nq) / gpu_s;
        BenchRow rcpu(fmt::format("{} nprobe {} (cpu)", cname, nprobe), "quarry", threads);
        rcpu.set("nprobe", nprobe).set("qps", cpu_qps).set("recall1", rc.r1).set("recall10_10", rc.r10_10);
        BenchRow rgpu(fmt::format("{} nprobe {} (gpu)", cname, nprobe), "quarry", 1);
        rgpu.set("nprobe", nprobe).set("qps", gpu_qps).set("recall1", rg.r1).set("recall10_10", rg.r10_10);
        rgpu.set("cpu_qps_ratio", gpu_qps / cpu_qps);
        report.rows.push_back(std::move(rcpu));
        report.rows.push_back(std::move(rgpu));
        fmt::print("  nprobe {:4}: cpu {:9.0f} qps (R@1 {:.3f}, 10-R@10 {:.3f}) | gpu {:9.0f} qps (R@1 {:.3f}, 10-R@10 {:.3f}) | gpu/cpu {:.2f}\n",
                   nprobe, cpu_qps, rc.r1, rc.r10_10, gpu_qps, rg.r1, rg.r10_10, gpu_qps / cpu_qps);
        if (!(std::fabs(rg.r1 - rc.r1) <= 0.01 && std::fabs(rg.r10_10 - rc.r10_10) <= 0.01)) {
          recalls_agree = false;
          fmt::print("WARNING: {} nprobe {}: the GPU's recall differs from the CPU's on the same index by more than 0.01\n", cname, nprobe);
        }
        std::fflush(stdout);
      }
    }
    if (!recalls_agree) fmt::print("WARNING: the GPU and the CPU disagree on some rows (see above); the GPU index is suspect\n");
    return output_report(report, options.common.json_path);
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_cuda_ivf_pq: {}\n", e.what());
    return 1;
  }
}
