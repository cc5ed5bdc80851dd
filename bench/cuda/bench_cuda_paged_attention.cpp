// bench_cuda_paged_attention: paged decode attention on the GPU (quarry/kv/cuda_paged_attention.hpp)
// against the machine's measured HBM read bandwidth, and paged against contiguous pages.
//
// Shape (issue 5): 32 query heads, 8 KV heads, head_dim 128, pages of 16 tokens, K/V f16 (and
// bf16, f32 and INT8 at batch 16, 16k; INT8 also as speedup_vs_f16, f16 time / INT8 time), contexts 1k / 4k / 16k / 32k, batch 1 and 16. "paged": each sequence's
// pages scattered over the pool in a random order; "contiguous": the same kernel on pages laid
// out in order, one sequence after another (what a contiguous per-sequence cache reads).
// Figures: us per call (CUDA events over back-to-back calls, best of 5 rounds), gbps = K and V
// bytes read / time, bw_ratio = gbps / the HBM read yardstick (target >= 0.7 on a GPU, issue 5),
// and on paged rows paged_vs_contiguous = contiguous time / paged time. Every page holds the same
// values, so both orders must give the same output: a WARNING line says where they do not (or it
// is not finite). --tiny: contexts of 40
// and 300 tokens, one timed call per row, a 64 MiB yardstick (what the test suite runs on the
// SIMT emulator).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <type_traits>
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

// Best of `rounds` rounds of `calls` back-to-back calls, in us per call; call(options) runs one.
template <class Call>
double time_us(Call&& call, int calls, int rounds) {
  CudaAttentionOptions async;
  async.wait = false;
  call(CudaAttentionOptions{});  // warm-up (and the workspace pool)
  cudaEvent_t e0, e1;
  check(cudaEventCreate(&e0), "cudaEventCreate");
  check(cudaEventCreate(&e1), "cudaEventCreate");
  double best = 1e300;
  for (int round = 0; round < rounds; ++round) {
    check(cudaEventRecord(e0, nullptr), "cudaEventRecord");
    for (int i = 0; i < calls; ++i) call(async);
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

// Fills a device tensor of pages by copying one random page (the timing does not depend on the
// values; small and NaN-free is what matters).
template <class T, class Gen>
void fill_pages(Tensor<T, cuda>& t, std::int64_t page_elems, Gen&& gen) {
  std::vector<T> page(static_cast<std::size_t>(page_elems));
  for (T& x : page) x = gen();
  const std::size_t bytes = page.size() * sizeof(T);
  for (std::int64_t p = 0; p < t.shape()[0]; ++p)
    check(cudaMemcpy(reinterpret_cast<char*>(t.data()) + p * bytes, page.data(), bytes, cudaMemcpyHostToDevice), "cudaMemcpy");
}

// Times paged and contiguous page tables for one shape; KV: f16, bf16, float or std::int8_t
// (INT8 pages, a scale per token and head). Returns the paged time in us.
template <class KV>
double run_shape(BenchReport& report, std::int64_t batch, std::int64_t context, double hbm_gbps, const char* type,
                 const CudaBenchOptions& options, double f16_paged_us = 0) {
  constexpr bool kInt8 = std::is_same_v<KV, std::int8_t>;
  const std::int64_t per = (context + kPage - 1) / kPage, pages = batch * per;
  Tensor<KV, cuda> k = Tensor<KV, cuda>::uninitialized({pages, kKvHeads, kPage, kDim});
  Tensor<KV, cuda> v = Tensor<KV, cuda>::uninitialized({pages, kKvHeads, kPage, kDim});
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  auto value = [&] {
    if constexpr (kInt8) return static_cast<std::int8_t>(std::lround(u(rng) * 127.f));
    else return KV(u(rng));
  };
  fill_pages(k, kKvHeads * kPage * kDim, value);
  fill_pages(v, kKvHeads * kPage * kDim, value);
  Tensor<float, cuda> scales = Tensor<float, cuda>::full(kInt8 ? Shape{pages, kKvHeads, kPage} : Shape{1}, 1.f / 127.f);
  const Tensor<float, cuda> q = Tensor<float, cuda>::full({batch, kHeads, kDim}, 0.01f);
  Tensor<float, cuda> out({batch, kHeads, kDim});
  const double row_bytes = kInt8 ? kDim + sizeof(float) : kDim * sizeof(KV);  // values and, for INT8, the scale
  const double kv_bytes = 2.0 * static_cast<double>(batch * context * kKvHeads) * row_bytes;
  const int calls = options.tiny ? 1 : options.common.quick ? 3 : std::max(3, static_cast<int>(2e9 / kv_bytes));
  const int rounds = options.tiny ? 1 : 5;
  double times[2] = {0, 0};
  Tensor<float> results[2];  // every page holds the same values: both orders give the same output
  for (const bool shuffled : {false, true}) {
    const BatchPageTable s = make_batch_page_table(batch, context, kPage, shuffled, 11);
    const CudaPageTable table = CudaPageTable::upload(s.csr(), pages, kPage).value();
    const double us = time_us(
        [&](const CudaAttentionOptions& o) {
          if constexpr (kInt8) paged_decode_attention(q, CudaInt8KvPages{k, scales}, CudaInt8KvPages{v, scales}, table, out, {}, o);
          else paged_decode_attention(q, k, v, table, out, {}, o);
        },
        calls, rounds);
    times[shuffled ? 1 : 0] = us;
    results[shuffled ? 1 : 0] = out.to_host();
    const double gbps = kv_bytes / (us * 1e-6) / 1e9;
    BenchRow r(fmt::format("decode {} ctx {} batch {} ({})", type, context, batch, shuffled ? "paged" : "contiguous"), "quarry", 1);
    r.set("context", context).set("batch", batch).set("us", us).set("gbps", gbps).set("bw_ratio", gbps / hbm_gbps);
    if (shuffled) r.set("paged_vs_contiguous", times[0] / times[1]);
    if (shuffled && f16_paged_us > 0) r.set("speedup_vs_f16", f16_paged_us / us);
    report.rows.push_back(std::move(r));
    fmt::print("  {} ctx {:6} batch {:2} {:11}: {:9.1f} us, {:6.0f} GB/s, {:.3f} of HBM{}{}\n", type, context, batch,
               shuffled ? "paged" : "contiguous", us, gbps, gbps / hbm_gbps,
               shuffled ? fmt::format(", paged/contiguous speed {:.3f}", times[0] / times[1]) : std::string(),
               shuffled && f16_paged_us > 0 ? fmt::format(", {:.2f}x f16's speed", f16_paged_us / us) : std::string());
    std::fflush(stdout);
  }
  // A check that the timed calls computed something: finite, and the same in both page orders.
  const auto a = results[0].span(), b = results[1].span();
  for (std::size_t i = 0; i < a.size(); ++i)
    if (!std::isfinite(a[i]) || !(std::fabs(a[i] - b[i]) <= 1e-5f * (1.f + std::fabs(a[i])))) {
      fmt::print("WARNING: {} ctx {} batch {}: output element {} is {} with pages in order and {} with pages shuffled; the figures "
                 "are suspect\n", type, context, batch, i, a[i], b[i]);
      break;
    }
  return times[1];
}

}  // namespace

int main(int argc, char** argv) {
  const CudaBenchOptions options =
      cuda_bench_options(argc, argv, "bench_cuda_paged_attention", "quarry paged decode attention on a GPU vs HBM bandwidth");
  if (no_cuda_device("bench_cuda_paged_attention")) return 0;
  const bool quick = options.common.quick, tiny = options.tiny;
  try {
    check(cudaSetDevice(0), "cudaSetDevice(0)");
    BenchReport report;
    report.machine = identify_machine(options.common.threads);
    report.machine.threads = 1;
    quarry_bench_hbm_result hbm{};
    const std::size_t hbm_bytes = tiny ? std::size_t{64} << 20 : quick ? std::size_t{512} << 20 : std::size_t{2} << 30;
    check(quarry_bench_hbm_measure(hbm_bytes, tiny ? 1 : quick ? 3 : 10, &hbm), "HBM yardstick");
    {
      BenchRow r(fmt::format("hbm read {} MiB", hbm.read_bytes >> 20), "hbm", 1);
      r.set("gbps", hbm.read_gbps);
      report.rows.push_back(std::move(r));
    }
    fmt::print("hbm read yardstick: {:.0f} GB/s\n", hbm.read_gbps);
    const std::vector<std::int64_t> contexts = tiny    ? std::vector<std::int64_t>{40, 300}
                                               : quick ? std::vector<std::int64_t>{1024, 4096}
                                                       : std::vector<std::int64_t>{1024, 4096, 16384, 32768};
    // bf16, f32 and INT8 at batch 16 and 16k (--quick, --tiny: their longest context); INT8 against f16's time there.
    const std::int64_t big = std::min<std::int64_t>(16384, contexts.back());
    double f16_big_us = 0;
    for (const std::int64_t batch : {1, 16})
      for (const std::int64_t ctx : contexts) {
        const double us = run_shape<f16>(report, batch, ctx, hbm.read_gbps, "f16", options);
        if (batch == 16 && ctx == big) f16_big_us = us;
      }
    run_shape<bf16>(report, 16, big, hbm.read_gbps, "bf16", options);
    run_shape<float>(report, 16, big, hbm.read_gbps, "f32", options);
    run_shape<std::int8_t>(report, 16, big, hbm.read_gbps, "i8", options, f16_big_us);
    return output_report(report, options.common.json_path);
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_cuda_paged_attention: {}\n", e.what());
    return 1;
  }
}
