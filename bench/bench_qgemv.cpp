// bench_qgemv: the W8A8 and W4 kernels against this machine's limits, with f32 peers in the same run.
//
// Shapes N x K = 4096x4096, 11008x4096, 4096x11008 (a Llama-7B layer's projections), M = 1, 8, 32
// and 512 activation rows.
//   qgemv (M = 1)  weight + scale bytes read per second (gbps), divided by the measured DRAM read
//                  bandwidth (bw_ratio). Several matrices in rotation, far more bytes than the
//                  last-level cache, so every call reads its weights from DRAM. Beside it:
//                  an f32 GEMV (quarry::dot per row) over f32 matrices in rotation, and the
//                  int4 g128 kernels (W4A32, W4A16 with f16 activations, W4A8) on int4 matrices
//                  in rotation (gbps of nibbles + scales).
//   qgemm (M > 1)  int8 GOP/s (2 ops per multiply-add) divided by the measured VNNI peak
//                  (peak_ratio), and gbps for the weights at M = 8 and 32. At M = 512 Eigen's
//                  f32 GEMM on the same shape runs beside it (GFLOP/s, over the f32 FMA peak),
//                  and, when bench/CMakeLists.txt found oneDNN, oneDNN's int8 matmul on the same
//                  weights, timed alternately with quarry's; quarry's row gets onednn_ratio.
//                  At M = 512, W4A8 g32 and grouped W8A8 (GGUF Q8_0's scheme) qgemm too, timed
//                  alternately with W8A8 per_channel on the same shape (w8a8_ratio: its time over
//                  theirs).
// Each on 1 thread and on all threads (--threads N). --quick: a smoke run of a few seconds.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <quarry/core/cpu_features.hpp>
#include <quarry/core/dot.hpp>
#include <quarry/core/thread_pool.hpp>
#include <quarry/quant/qgemm.hpp>

#include "common/machine.hpp"
#include "common/options.hpp"
#include "common/report.hpp"
#include "common/timing.hpp"
#include "common/yardsticks.hpp"
#if QUARRY_BENCH_HAS_ONEDNN
#include "qgemm_onednn_peer.hpp"
#endif

namespace quarry::bench {
void eigen_gemm_columns(const float* x, const float* w, float* y, long m, long n, long k, long n0, long n1);
}

namespace {

using namespace quarry;
using namespace quarry::bench;

struct Shape2 {
  std::int64_t n, k;
};

// Best times of `reps` runs each of f() and g(), alternating, after one untimed run of each: both
// see the same machine state (clock, other processes' load) over the same interval. A pause follows
// every run: OpenMP's workers (libgomp, under oneDNN) spin about 8 ms after each parallel region
// before they sleep, and would take those cores from whatever runs next.
template <class F, class G>
std::pair<double, double> best_seconds_alternating(int reps, F&& f, G&& g) {
  const auto settle = [] { std::this_thread::sleep_for(std::chrono::milliseconds(30)); };
  f();
  settle();
  g();
  settle();
  double bf = 1e30, bg = 1e30;
  for (int r = 0; r < reps; ++r) {
    bf = std::min(bf, best_seconds(1, f));
    settle();
    bg = std::min(bg, best_seconds(1, g));
    settle();
  }
  return {bf, bg};
}

// A random int8 per-channel matrix, made directly (quantizing f32 weights of this size is slow
// and needs 4x the memory); every page is written.
// A random matrix of `scheme` made directly (quantize() would take longer than the benchmark):
// random bytes as values, every scale 0.01 (f32 or f16).
QuantizedTensor<cpu> random_weights(QuantScheme scheme, std::int64_t n, std::int64_t k, std::uint64_t seed) {
  auto w = QuantizedTensor<cpu>::create(scheme, n, k).value();
  std::uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  for (std::uint8_t& b : w.value_bytes().span()) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    b = static_cast<std::uint8_t>(s >> 56);
  }
  if (scheme.scale_dtype == DType::f16)
    for (f16& sc : w.scales_f16().span()) sc = f16(0.01f);
  else
    for (float& sc : w.scales_f32().span()) sc = 0.01f;
  return w;
}

std::vector<float> random_floats(std::size_t count, std::uint32_t seed) {
  std::vector<float> v(count);
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  for (float& x : v) x = d(rng);
  return v;
}

std::string shape_name(Shape2 s) { return fmt::format("{}x{}", s.n, s.k); }

}  // namespace

int main(int argc, char** argv) {
  const BenchOptions options = bench_options_from_command_line(
      argc, argv, "W8A8 and W4 qgemv / qgemm vs DRAM bandwidth and VNNI peak, f32 GEMV and Eigen GEMM beside");
  BenchReport report;
  report.machine = identify_machine(options.threads);
  const Yardsticks y = measure_yardsticks(report.machine.threads, options.effort());
  report.yardsticks = y;
  const unsigned nthreads = y.threads;
  const bool quick = options.quick;
  ThreadPool pool(nthreads);
  const std::vector<unsigned> thread_counts = row_thread_counts(nthreads);

  const std::vector<Shape2> shapes = quick ? std::vector<Shape2>{{4096, 4096}}
                                           : std::vector<Shape2>{{4096, 4096}, {11008, 4096}, {4096, 11008}};
  const std::size_t llc = std::max<std::size_t>(last_level_cache_bytes(), std::size_t{32} << 20);
  const std::size_t rotation_bytes = quick ? 2 * llc : 8 * llc;  // what the matrices in rotation hold in all
  const int reps = quick ? 3 : 5;
#if !QUARRY_BENCH_HAS_ONEDNN
  fmt::print("oneDNN int8 matmul peer not built: {}\n", QUARRY_BENCH_ONEDNN_MISSING);
#endif

  for (const Shape2 shape : shapes) {
    const auto K = static_cast<std::size_t>(shape.k), N = static_cast<std::size_t>(shape.n);
    // ---- qgemv: int8 weights in rotation ----
    const std::size_t q_bytes = N * K + N * sizeof(float);
    const std::size_t q_count = std::max<std::size_t>(2, (rotation_bytes + q_bytes - 1) / q_bytes);
    std::vector<QuantizedTensor<cpu>> ws;
    for (std::size_t i = 0; i < q_count; ++i) ws.push_back(random_weights(QuantScheme::int8_per_channel(), shape.n, shape.k, i + 1));
    const std::vector<float> x = random_floats(K, 1);
    std::vector<float> out(N);

    // f32 GEMV peer: f32 matrices in rotation, as many bytes in all.
    const std::size_t f_bytes = N * K * sizeof(float);
    const std::size_t f_count = std::max<std::size_t>(2, (rotation_bytes + f_bytes - 1) / f_bytes);
    std::vector<std::vector<float>> fs;
    for (std::size_t i = 0; i < f_count; ++i) fs.push_back(random_floats(N * K, static_cast<std::uint32_t>(i + 7)));

    for (unsigned t : thread_counts) {
      ThreadPool* p = t > 1 ? &pool : nullptr;
      QGemmOptions on_pool;
      on_pool.pool = p;
      const double dram = y.dram_gbps_for(t);
      const double sq = best_seconds(reps, [&] {
        for (const auto& w : ws) qgemv(x, w, out, on_pool);
      }) / static_cast<double>(ws.size());
      const double gbps = static_cast<double>(ws[0].nbytes()) / sq / 1e9;
      BenchRow r(fmt::format("qgemv w8a8 {} m=1", shape_name(shape)), "quarry", t);
      r.set("gbps", gbps).set("bw_ratio", gbps / dram).set("ms", sq * 1e3).set("gops", 2.0 * N * K / sq / 1e9);
      r.set("isa", report.machine.isa).set("matrices", static_cast<std::int64_t>(ws.size()));
      report.rows.push_back(std::move(r));

      const double sf = best_seconds(reps, [&] {
        for (const auto& w : fs) {
          parallel_for(p, 0, shape.n, [&](std::int64_t r0, std::int64_t r1) {
            for (std::int64_t row = r0; row < r1; ++row)
              out[static_cast<std::size_t>(row)] = dot(std::span<const float>(w.data() + row * K, K), x);
          }, 64);
        }
      }) / static_cast<double>(fs.size());
      const double fgbps = static_cast<double>(f_bytes) / sf / 1e9;
      BenchRow rf(fmt::format("gemv f32 {} m=1", shape_name(shape)), "quarry", t);
      rf.set("gbps", fgbps).set("bw_ratio", fgbps / dram).set("ms", sf * 1e3).set("gops", 2.0 * N * K / sf / 1e9);
      rf.set("kernel", "dot_f32 per row").set("matrices", static_cast<std::int64_t>(fs.size()));
      report.rows.push_back(std::move(rf));
    }
    fs.clear();
    fs.shrink_to_fit();

    // ---- qgemv with per_group weights in rotation: int4 g128 (symmetric, f16 scales) as W4A32,
    // W4A16 (f16 activations) and W4A8; int8 g32 with f16 scales (GGUF Q8_0's scheme) as W8A8.
    // gbps counts the stored values and the scales. ----
    struct GroupedCase {
      const char* label;
      QuantScheme scheme;
      ActivationMode mode;
      bool half;            // f16 activations
      bool panels = false;  // the weights as QuantizedPanels
    };
    for (const GroupedCase& gc : {GroupedCase{"w4a32 g128", QuantScheme::int4_grouped(128), ActivationMode::float32, false},
                                  GroupedCase{"w4a16 g128", QuantScheme::int4_grouped(128), ActivationMode::float32, true},
                                  GroupedCase{"w4a8 g128", QuantScheme::int4_grouped(128), ActivationMode::int8, false},
                                  GroupedCase{"w8a8 q8_0", QuantScheme::int8_grouped(32), ActivationMode::int8, false}}) {
      const std::size_t g_bytes = N * K * static_cast<std::size_t>(gc.scheme.bits) / 8 + N * (K / gc.scheme.group_size) * 2;
      const std::size_t g_count = std::max<std::size_t>(2, (rotation_bytes + g_bytes - 1) / g_bytes);
      std::vector<QuantizedTensor<cpu>> gws;
      for (std::size_t i = 0; i < g_count; ++i) gws.push_back(random_weights(gc.scheme, shape.n, shape.k, i + 101));
      std::vector<f16> xh(K);
      for (std::size_t c = 0; c < K; ++c) xh[c] = f16(x[c]);
      for (unsigned t : thread_counts) {
        const double dram = y.dram_gbps_for(t);
        QGemmOptions o;
        o.pool = t > 1 ? &pool : nullptr;
        o.activations = gc.mode;
        const double sw = best_seconds(reps, [&] {
          for (const auto& w : gws) {
            if (gc.half) qgemv(std::span<const f16>(xh), w, out, o);
            else qgemv(x, w, out, o);
          }
        }) / static_cast<double>(gws.size());
        const double gbps = static_cast<double>(gws[0].nbytes()) / sw / 1e9;
        BenchRow r(fmt::format("qgemv {} {} m=1", gc.label, shape_name(shape)), "quarry", t);
        r.set("gbps", gbps).set("bw_ratio", gbps / dram).set("ms", sw * 1e3).set("gops", 2.0 * N * K / sw / 1e9);
        r.set("isa", report.machine.isa).set("matrices", static_cast<std::int64_t>(gws.size()));
        report.rows.push_back(std::move(r));
      }
    }

    // ---- W4A8 and W8A8 on QuantizedPanels against the row-major kernels, the same weights in
    // rotation, timed alternately: gbps of the panels (values + scales), and rowmajor_ratio =
    // the row-major kernel's time over the panels'. ----
    for (int group : {32, 128, 0}) {  // 0: int8 per_channel (W8A8)
      const QuantScheme scheme = group ? QuantScheme::int4_grouped(group) : QuantScheme::int8_per_channel();
      const std::size_t g_bytes = group ? N * K / 2 + N * (K / static_cast<std::size_t>(group)) * 2 : N * K + N * 4;
      const std::size_t g_count = std::max<std::size_t>(2, (rotation_bytes + g_bytes - 1) / g_bytes);
      std::vector<QuantizedTensor<cpu>> gws;
      std::vector<QuantizedPanels> pws;
      for (std::size_t i = 0; i < g_count; ++i) {
        gws.push_back(random_weights(scheme, shape.n, shape.k, i + 301));
        pws.push_back(std::move(QuantizedPanels::pack(gws.back(), &pool)).value());
      }
      for (unsigned t : thread_counts) {
        const double dram = y.dram_gbps_for(t);
        QGemmOptions o;
        o.pool = t > 1 ? &pool : nullptr;
        o.activations = ActivationMode::int8;
        const auto [sp, sr] = best_seconds_alternating(reps, [&] {
          for (const auto& w : pws) qgemv(x, w, out, o);
        }, [&] {
          for (const auto& w : gws) qgemv(x, w, out, o);
        });
        const double per_p = sp / static_cast<double>(pws.size()), per_r = sr / static_cast<double>(gws.size());
        const double gbps = static_cast<double>(pws[0].nbytes()) / per_p / 1e9;
        BenchRow r(fmt::format("qgemv {} panels {} m=1", group ? fmt::format("w4a8 g{}", group) : std::string("w8a8"), shape_name(shape)), "quarry", t);
        r.set("gbps", gbps).set("bw_ratio", gbps / dram).set("ms", per_p * 1e3).set("gops", 2.0 * N * K / per_p / 1e9);
        r.set("rowmajor_ratio", per_r / per_p).set("isa", report.machine.isa).set("matrices", static_cast<std::int64_t>(pws.size()));
        report.rows.push_back(std::move(r));
      }
    }

    // ---- qgemm: M = 8, 32 (weights still from DRAM, in rotation), 512 (compute-bound) ----
    for (std::int64_t m : quick ? std::vector<std::int64_t>{8, 128} : std::vector<std::int64_t>{8, 32, 512}) {
      const std::vector<float> xm = random_floats(static_cast<std::size_t>(m) * K, 2);
      std::vector<float> ym(static_cast<std::size_t>(m) * N);
      const TensorView<const float> xv(xm.data(), quarry::Shape{m, shape.k});
      const TensorView<float> yv(ym.data(), quarry::Shape{m, shape.n});
      const std::size_t use = m >= 128 ? 1 : ws.size();  // compute-bound: one matrix is enough
      for (unsigned t : thread_counts) {
        QGemmOptions on_pool;
        on_pool.pool = t > 1 ? &pool : nullptr;
        const int mreps = m >= 128 ? (quick ? 2 : 4) : reps;
        const auto run_quarry = [&] {
          for (std::size_t i = 0; i < use; ++i) qgemm(xv, ws[i], yv, on_pool);
        };
        const auto ops = 2.0 * static_cast<double>(m) * N * K;
        const auto peak_ratio = [&](double gops) {
          return y.vnni_gops_for(t) ? std::optional<double>(gops / *y.vnni_gops_for(t)) : std::nullopt;
        };
        const std::string name = fmt::format("qgemm w8a8 {} m={}", shape_name(shape), m);
        double s = 0, onednn_gops = 0;
        std::optional<BenchRow> peer;
#if QUARRY_BENCH_HAS_ONEDNN
        if (m >= 128) {
          // oneDNN on the same weight bytes and scales (use == 1 here), on t OpenMP threads.
          OnednnInt8Matmul onednn(xm.data(), reinterpret_cast<const std::int8_t*>(ws[0].value_bytes().data()),
                                  ws[0].scales_f32().data(), static_cast<long>(m), static_cast<long>(shape.n),
                                  static_cast<long>(shape.k), t);
          double sd = 0;
          std::tie(s, sd) = best_seconds_alternating(mreps, run_quarry, [&] { onednn.run(); });
          onednn_gops = ops / sd / 1e9;
          peer.emplace(name, "onednn", t);
          peer->set("gops", onednn_gops).set("peak_ratio", peak_ratio(onednn_gops)).set("ms", sd * 1e3);
          // Largest difference from quarry's output, relative to its largest value: a wrong peer
          // (weights read transposed, say) shows here; a few percent come from the activation scale
          // per tensor (oneDNN) instead of per row (quarry).
          float diff = 0, top = 0;
          for (std::size_t i = 0; i < ym.size(); ++i) {
            diff = std::max(diff, std::fabs(ym[i] - onednn.output()[i]));
            top = std::max(top, std::fabs(ym[i]));
          }
          peer->set("rel_diff", static_cast<double>(diff / top)).set("build", onednn.build());
        }
#endif
        if (!peer) s = best_seconds(mreps, run_quarry) / static_cast<double>(use);
        const double gops = ops / s / 1e9;
        BenchRow r(name, "quarry", t);
        r.set("gops", gops).set("peak_ratio", peak_ratio(gops));
        const double gbps = static_cast<double>(ws[0].nbytes()) / s / 1e9;
        r.set("gbps", gbps).set("bw_ratio", gbps / y.dram_gbps_for(t)).set("ms", s * 1e3).set("isa", report.machine.isa);
        if (peer) r.set("onednn_ratio", gops / onednn_gops);
        report.rows.push_back(std::move(r));
        if (peer) report.rows.push_back(std::move(*peer));
      }
      if (m >= 128 && isa_supported(Isa::avx512)) {
        // Eigen's f32 GEMM on the same shape: columns split over the threads.
        const std::vector<float> wf = random_floats(N * K, 3);
        for (unsigned t : thread_counts) {
          ThreadPool* p = t > 1 ? &pool : nullptr;
          const double s = best_seconds(quick ? 1 : 3, [&] {
            parallel_for(p, 0, shape.n / 64, [&](std::int64_t c0, std::int64_t c1) {
              eigen_gemm_columns(xm.data(), wf.data(), ym.data(), static_cast<long>(m), shape.n, shape.k, static_cast<long>(c0 * 64),
                                 static_cast<long>(std::min<std::int64_t>(shape.n, c1 * 64)));
            }, 1);
          });
          const double gflops = 2.0 * static_cast<double>(m) * N * K / s / 1e9;
          BenchRow r(fmt::format("gemm f32 {} m={}", shape_name(shape), m), "eigen", t);
          r.set("gops", gflops).set("peak_ratio", gflops / y.fma_gflops_for(t)).set("ms", s * 1e3).set("build", "avx512");
          report.rows.push_back(std::move(r));
        }
      }
    }
    // ---- qgemm with per_group weights and int8 activations (prefill of GGUF Q4_0 / Q8_0 and
    // INT4 g32 models), compute-bound: GOP/s over the VNNI peak, and over W8A8's per_channel
    // kernel on the same shape (w8a8_ratio: the cost of the groups' scales and nibbles). ----
    {
      const std::int64_t m = quick ? 128 : 512;
      const std::vector<float> xm = random_floats(static_cast<std::size_t>(m) * K, 4);
      std::vector<float> ym(static_cast<std::size_t>(m) * N);
      const TensorView<const float> xv(xm.data(), quarry::Shape{m, shape.k});
      const TensorView<float> yv(ym.data(), quarry::Shape{m, shape.n});
      const auto w8 = random_weights(QuantScheme::int8_per_channel(), shape.n, shape.k, 201);
      for (const GroupedCase& gc : {GroupedCase{"w4a8 g32", QuantScheme::int4_grouped(32), ActivationMode::int8, false},
                                    GroupedCase{"w4a8 g32 panels", QuantScheme::int4_grouped(32), ActivationMode::int8, false, true},
                                    GroupedCase{"w8a8 panels", QuantScheme::int8_per_channel(), ActivationMode::int8, false, true},
                                    GroupedCase{"w8a8 q8_0 panels", QuantScheme::int8_grouped(32), ActivationMode::int8, false, true},
                                    GroupedCase{"w8a8 q8_0", QuantScheme::int8_grouped(32), ActivationMode::int8, false}}) {
        const auto wg = random_weights(gc.scheme, shape.n, shape.k, 202);
        const std::optional<QuantizedPanels> wp =
            gc.panels ? std::optional<QuantizedPanels>(std::move(QuantizedPanels::pack(wg, &pool)).value()) : std::nullopt;
        for (unsigned t : thread_counts) {
          QGemmOptions o;
          o.pool = t > 1 ? &pool : nullptr;
          QGemmOptions og = o;
          og.activations = gc.mode;
          const auto [sg, s8] = best_seconds_alternating(quick ? 2 : 4, [&] {
            if (wp) qgemm(xv, *wp, yv, og);
            else qgemm(xv, wg, yv, og);
          }, [&] { qgemm(xv, w8, yv, o); });
          const double gops = 2.0 * static_cast<double>(m) * N * K / sg / 1e9;
          BenchRow r(fmt::format("qgemm {} {} m={}", gc.label, shape_name(shape), m), "quarry", t);
          r.set("gops", gops).set("peak_ratio", y.vnni_gops_for(t) ? std::optional<double>(gops / *y.vnni_gops_for(t)) : std::nullopt);
          r.set("w8a8_ratio", s8 / sg).set("ms", sg * 1e3).set("isa", report.machine.isa);
          report.rows.push_back(std::move(r));
        }
      }
    }
  }
  const int rc = output_report(report, options.json_path);
  fmt::print("bw_ratio: gbps / measured DRAM read GB/s (1-thread figure for 1-thread rows); peak_ratio: quarry "
             "int8 GOP/s / measured VNNI peak, eigen GFLOP/s / measured f32 FMA peak, onednn int8 GOP/s / VNNI peak; "
             "onednn_ratio: quarry GOP/s / oneDNN GOP/s on the same shape and threads\n");
  return rc;
}
