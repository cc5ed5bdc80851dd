// bench_cuda_paged_attention: paged decode attention on the GPU (quarry/kv/cuda_paged_attention.hpp)
// against the machine's measured HBM read bandwidth, and paged against contiguous pages.
//
// Shape (issue 5): 32 query heads, 8 KV heads, head_dim 128, pages of 16 tokens, K/V f16 (and
// bf16, f32 at 16k), contexts 1k / 4k / 16k / 32k, batch 1 and 16. "paged": each sequence's
// pages scattered over the pool in a random order; "contiguous": the same kernel on pages laid
// out in order, one sequence after another (what a contiguous per-sequence cache reads).
// Figures: us per call (CUDA events over back-to-back calls, best of 5 rounds), gbps = K and V
// bytes read / time, bw_ratio = gbps / the HBM read yardstick (target >= 0.7 on a GPU, issue 5),
// and on paged rows paged_vs_contiguous = contiguous time / paged time.
#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include <quarry/cuda.hpp>

#include "../common/machine.hpp"
#include "../common/options.hpp"
#include "../common/page_tables.hpp"
#include "../common/report.hpp"
#include "cuda_device.hpp"
#include "hbm_yardstick.h"

namespace {

using namespace quarry;
using namespace quarry::bench;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw std::runtime_error(fmt::format("{}: {}", what, cudaGetErrorString(e)));
}

constexpr std::int64_t kHeads = 32, kKvHeads = 8, kDim = 128, kPage = 16;

template <class KV>
double time_us(const Tensor<float, cuda>& q, const Tensor<KV, cuda>& k, const Tensor<KV, cuda>& v, const CudaPageTable& table,
               Tensor<float, cuda>& out, int calls) {
  CudaAttentionOptions async;
  async.wait = false;
  paged_decode_attention(q, k, v, table, out, {}, {});  // warm-up (and the workspace pool)
  cudaEvent_t e0, e1;
  check(cudaEventCreate(&e0), "cudaEventCreate");
  check(cudaEventCreate(&e1), "cudaEventCreate");
  double best = 1e300;
  for (int round = 0; round < 5; ++round) {
    check(cudaEventRecord(e0, nullptr), "cudaEventRecord");
    for (int i = 0; i < calls; ++i) paged_decode_attention(q, k, v, table, out, {}, async);
    check(cudaEventRecord(e1, nullptr), "cudaEventRecord");
    check(cudaEventSynchronize(e1), "cudaEventSynchronize");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, e0, e1), "cudaEventElapsedTime");
    best = std::min(best, 1e3 * ms / calls);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return best;
}

template <class KV>
void run_shape(BenchReport& report, std::int64_t batch, std::int64_t context, double hbm_gbps, const char* type, bool quick) {
  const std::int64_t per = (context + kPage - 1) / kPage, pages = batch * per;
  Tensor<KV, cuda> k = Tensor<KV, cuda>::uninitialized({pages, kKvHeads, kPage, kDim});
  Tensor<KV, cuda> v = Tensor<KV, cuda>::uninitialized({pages, kKvHeads, kPage, kDim});
  // Small random values (the timing does not depend on them; NaN-free matters).
  {
    Tensor<KV> page({1, kKvHeads, kPage, kDim});
    std::mt19937 rng(7);
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    for (KV& x : page.span()) x = KV(u(rng));
    const std::size_t bytes = page.nbytes();
    for (std::int64_t p = 0; p < pages; ++p) {
      check(cudaMemcpy(reinterpret_cast<char*>(k.data()) + p * bytes, page.data(), bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
      check(cudaMemcpy(reinterpret_cast<char*>(v.data()) + p * bytes, page.data(), bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
    }
  }
  const Tensor<float, cuda> q = Tensor<float, cuda>::full({batch, kHeads, kDim}, 0.01f);
  Tensor<float, cuda> out({batch, kHeads, kDim});
  const double kv_bytes = 2.0 * static_cast<double>(batch * context * kKvHeads * kDim) * sizeof(KV);
  const int calls = quick ? 3 : std::max(3, static_cast<int>(2e9 / kv_bytes));
  double times[2] = {0, 0};
  for (const bool shuffled : {false, true}) {
    const BatchPageTable s = make_batch_page_table(batch, context, kPage, shuffled, 11);
    const CudaPageTable table = CudaPageTable::upload(s.csr(), pages, kPage).value();
    const double us = time_us(q, k, v, table, out, calls);
    times[shuffled ? 1 : 0] = us;
    const double gbps = kv_bytes / (us * 1e-6) / 1e9;
    BenchRow r(fmt::format("decode {} ctx {} batch {} ({})", type, context, batch, shuffled ? "paged" : "contiguous"), "quarry", 1);
    r.set("context", context).set("batch", batch).set("us", us).set("gbps", gbps).set("bw_ratio", gbps / hbm_gbps);
    if (shuffled) r.set("paged_vs_contiguous", times[0] / times[1]);
    report.rows.push_back(std::move(r));
    fmt::print("  {} ctx {:6} batch {:2} {:11}: {:9.1f} us, {:6.0f} GB/s, {:.3f} of HBM{}\n", type, context, batch,
               shuffled ? "paged" : "contiguous", us, gbps, gbps / hbm_gbps,
               shuffled ? fmt::format(", paged/contiguous speed {:.3f}", times[0] / times[1]) : std::string());
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const BenchOptions options = bench_options_from_command_line(argc, argv, "quarry paged decode attention on a GPU vs HBM bandwidth");
  if (no_cuda_device("bench_cuda_paged_attention")) return 0;
  try {
    check(cudaSetDevice(0), "cudaSetDevice(0)");
    BenchReport report;
    report.machine = identify_machine(options.threads);
    report.machine.threads = 1;
    quarry_bench_hbm_result hbm{};
    check(quarry_bench_hbm_measure(options.quick ? std::size_t{512} << 20 : std::size_t{2} << 30, options.quick ? 3 : 10, &hbm), "HBM yardstick");
    {
      BenchRow r(fmt::format("hbm read {} MiB", hbm.read_bytes >> 20), "hbm", 1);
      r.set("gbps", hbm.read_gbps);
      report.rows.push_back(std::move(r));
    }
    fmt::print("hbm read yardstick: {:.0f} GB/s\n", hbm.read_gbps);
    const std::vector<std::int64_t> contexts = options.quick ? std::vector<std::int64_t>{1024, 4096} : std::vector<std::int64_t>{1024, 4096, 16384, 32768};
    for (const std::int64_t batch : {1, 16})
      for (const std::int64_t ctx : contexts) run_shape<f16>(report, batch, ctx, hbm.read_gbps, "f16", options.quick);
    run_shape<bf16>(report, 16, 16384, hbm.read_gbps, "bf16", options.quick);
    run_shape<float>(report, 16, 16384, hbm.read_gbps, "f32", options.quick);
    return output_report(report, options.json_path);
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_cuda_paged_attention: {}\n", e.what());
    return 1;
  }
}
