// bench_cuda_qgemm: quarry's CUDA qgemv / qgemm against the GPU's measured HBM bandwidth and
// against cuBLAS f16 GEMM on the same shapes, all in one run (issue 3, the GPU part).
//
// Rows (JSON in the DESIGN.md "Benchmark output" convention with --json FILE):
//   machine  the GPU (name, compute capability, SMs, memory, L2, nominal HBM bandwidth).
//   hbm      the yardstick: a streaming read kernel (16-byte loads, grid-stride) over a buffer of
//            2 GiB (40x the 50 MB L2 of an H200), and cudaMemcpy D2D as a second figure.
//   Shapes N x K = 4096x4096, 11008x4096, 4096x11008 (a Llama-7B layer's projections):
//   qgemv (M = 1)  quarry W4A16 (int4 g128, f16 scales, f16 activations) and W8A8 (int8
//                  per-channel, f32 scales; activations quantized once beforehand; and, as its own
//                  row, from f16 activations quantized in every call) beside cuBLAS f16 GEMM with
//                  n = 1 (its GEMV). gbps = weight + scale bytes / time; bw_ratio = gbps / measured
//                  HBM read GB/s. Target for W4A16: bw_ratio >= 0.8.
//   qgemm (M = 8, 32, 512)  the same kernels beside cuBLAS f16 GEMM (cublasGemmEx: f16 in, f32
//                  compute and out, tensor ops as cuBLAS picks them): ms, tflops = 2*M*N*K / time,
//                  gbps of the weights, cublas_ratio = cuBLAS time / quarry time (> 1: quarry faster).
// Every call of a timed loop reads a different copy of its weights, the copies together far more
// than L2 (8x), so weights stream from HBM as in a real decode step. Each quarry row carries
// check_err: max |y - y_cublas| / max |y_cublas| against cuBLAS on the dequantized weights (which
// also checks that the cuBLAS call computes the same product).
//
// Timing: cudaEvents on the legacy default stream (where quarry's kernels and the cuBLAS handle
// run). Each contender is warmed up, then repetitions alternate between the contenders of one
// shape. Before each repetition a spin kernel keeps the GPU busy while the host queues all of the
// repetition's calls, so the calls run back to back and the events time the device's work, not
// the host's launch overhead ("preloaded": 1 when that held in every repetition); host_us is the
// host's time to issue one call. ms is the best repetition's time per call, ms_median the median.
//
// --tiny: N x K = 256 x 512, M = 1, 8, 40, two weight copies, two short repetitions, a 64 MiB
// yardstick (what the test suite runs on the SIMT emulator: the figures mean nothing there, the
// checks against cuBLAS still hold). Without a CUDA device it prints one line saying so and exits 0.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <quarry/core/cuda_device.hpp>
#include <quarry/core/cuda_tensor.hpp>
#include <quarry/core/float16.hpp>
#include <quarry/quant/cuda_qgemm.hpp>
#include <quarry/quant/cuda_quantized_tensor.hpp>
#include <quarry/quant/quantize.hpp>
#include <quarry/quant/quantized_tensor.hpp>
#include <quarry/quant/scheme.hpp>

#include "common/machine.hpp"
#include "common/options.hpp"
#include "common/report.hpp"
#include "common/timing.hpp"
#include "cuda/cuda_device.hpp"
#include "cuda/hbm_yardstick.h"

namespace {

using namespace quarry;
using namespace quarry::bench;

constexpr double kW4BwTarget = 0.8;   // issue 3: qgemv W4A16 gbps / HBM read GB/s
constexpr double kW4CheckTol = 1e-2;  // check_err above this: the row's figures are suspect
constexpr double kW8CheckTol = 5e-2;  // W8A8 quantizes the activations (about 0.3% expected)

// ---- errors ------------------------------------------------------------------------------------

void check(cudaError_t e, std::string_view what) {
  if (e != cudaSuccess) throw std::runtime_error(fmt::format("{}: {} ({})", what, cudaGetErrorName(e), cudaGetErrorString(e)));
}

void check(cublasStatus_t s, std::string_view what) {
  if (s != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(fmt::format("{}: {} ({})", what, cublasGetStatusName(s), cublasGetStatusString(s)));
}

// ---- CUDA handles --------------------------------------------------------------------------------

class Event {
 public:
  Event() { check(cudaEventCreate(&e_), "cudaEventCreate"); }
  ~Event() { (void)cudaEventDestroy(e_); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const noexcept { return e_; }

 private:
  cudaEvent_t e_ = nullptr;
};

// A cuBLAS handle on the legacy default stream (where quarry's kernels run).
class Cublas {
 public:
  Cublas() {
    check(cublasCreate(&h_), "cublasCreate");
    check(cublasSetStream(h_, nullptr), "cublasSetStream(legacy default stream)");
  }
  ~Cublas() { (void)cublasDestroy(h_); }
  Cublas(const Cublas&) = delete;
  Cublas& operator=(const Cublas&) = delete;
  cublasHandle_t get() const noexcept { return h_; }

  std::string version() const {
    int v = 0;
    check(cublasGetVersion(h_, &v), "cublasGetVersion");
    return fmt::format("cuBLAS {}.{}.{}", v / 10000, (v / 100) % 100, v % 100);
  }

  // y [m, n] (f32, row-major) = x [m, k] (f16, row-major) . w [n, k]^T (f16, row-major), f32
  // compute. In cuBLAS's column-major terms: y^T (n x m, ldc n) = (w^T as k x n, lda k)^T . (x^T
  // as k x m, ldb k).
  void gemm(const void* x, const void* w, float* y, std::int64_t m, std::int64_t n, std::int64_t k) const {
    const float alpha = 1.0f, beta = 0.0f;
    check(cublasGemmEx(h_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &alpha, w,
                       CUDA_R_16F, static_cast<int>(k), x, CUDA_R_16F, static_cast<int>(k), &beta, y, CUDA_R_32F,
                       static_cast<int>(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
          "cublasGemmEx(f16 x f16 -> f32, compute 32F)");
  }

 private:
  cublasHandle_t h_ = nullptr;
};

// ---- timing ------------------------------------------------------------------------------------

// How long each contender runs.
struct Plan {
  int reps = 7;            // timed repetitions per contender
  double target_ms = 20;   // device time one repetition aims at
  int max_calls = 256;     // calls per repetition at most (the launch queue must hold them all)
  int retries = 3;         // repetitions run again, at most, when the device caught up with the host
};

double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  const std::size_t h = v.size() / 2;
  return v.size() % 2 ? v[h] : 0.5 * (v[h - 1] + v[h]);
}

// cudaEventQuery's cudaErrorNotReady is no error; make sure it is not left in the last-error slot
// (where quarry's launch check would find it), without clearing any real error.
void forget_not_ready() {
  if (cudaPeekAtLastError() == cudaErrorNotReady) (void)cudaGetLastError();
}

// One thing to time. call(i) queues the i-th call (which reads weight copy i % copies) on the
// legacy default stream and returns without waiting. With `preload`, each repetition first
// queues a spin kernel long enough for the host to queue every call behind it; without (for a
// call that synchronises anyway), calls are timed as the host issues them.
class Timed {
 public:
  Timed(std::string label, std::function<void(std::size_t)> call, bool preload)
      : label_(std::move(label)), call_(std::move(call)), preload_(preload) {}

  // Warm-up (module loading, cuBLAS heuristics, clocks), then sizes the repetitions.
  void prepare(const Plan& plan) {
    for (int i = 0; i < 3; ++i) call_(cursor_++);
    check(cudaDeviceSynchronize(), label_ + ": warm-up");
    constexpr int kProbe = 4;
    check(cudaEventRecord(start_.get(), nullptr), "cudaEventRecord");
    const auto t0 = Clock::now();
    for (int i = 0; i < kProbe; ++i) call_(cursor_++);
    const double host_s = seconds_since(t0);
    check(cudaEventRecord(stop_.get(), nullptr), "cudaEventRecord");
    check(cudaEventSynchronize(stop_.get()), label_ + ": calibration");
    float ms = 0;
    check(cudaEventElapsedTime(&ms, start_.get(), stop_.get()), "cudaEventElapsedTime");
    const double per_call_ms = std::max(static_cast<double>(ms) / kProbe, 1e-4);
    calls_ = static_cast<int>(std::clamp(std::ceil(plan.target_ms / per_call_ms), 2.0, static_cast<double>(plan.max_calls)));
    // The spin must outlast the host queueing the repetition: 3x its estimate, at least 1 ms.
    spin_ns_ = static_cast<unsigned long long>(std::max(1e6, 3e9 * host_s / kProbe * calls_));
  }

  // One timed repetition (run again at most plan.retries times); appends its time per call.
  void repetition(const Plan& plan) {
    for (int attempt = 0;; ++attempt) {
      if (preload_) check(quarry_bench_spin(spin_ns_), "spin kernel launch");
      check(cudaEventRecord(start_.get(), nullptr), "cudaEventRecord");
      const auto t0 = Clock::now();
      for (int i = 0; i < calls_; ++i) call_(cursor_++);
      const double host_s = seconds_since(t0);
      check(cudaEventRecord(stop_.get(), nullptr), "cudaEventRecord");
      bool busy = true;  // the device had not reached the start event when the last call was queued
      if (preload_) {
        const cudaError_t q = cudaEventQuery(start_.get());
        if (q == cudaErrorNotReady) forget_not_ready();
        else check(q, label_ + ": cudaEventQuery");
        busy = q == cudaErrorNotReady;
      }
      check(cudaEventSynchronize(stop_.get()), label_ + ": timed repetition");
      float ms = 0;
      check(cudaEventElapsedTime(&ms, start_.get(), stop_.get()), "cudaEventElapsedTime");
      if (!preload_ || busy || attempt >= plan.retries) {
        ms_.push_back(static_cast<double>(ms) / calls_);
        host_us_.push_back(host_s * 1e6 / calls_);
        if (!busy) preloaded_ = false;
        return;
      }
      // The device caught up with the host (a spin too short, or the launch queue full and the
      // host blocked): spin longer, queue fewer calls, and run the repetition again.
      spin_ns_ = std::max(spin_ns_ * 2, static_cast<unsigned long long>(4e9 * host_s));
      calls_ = std::max(2, calls_ / 2);
    }
  }

  double best_ms() const { return ms_.empty() ? NAN : *std::min_element(ms_.begin(), ms_.end()); }
  double median_ms() const { return median(ms_); }
  double host_us() const { return median(host_us_); }
  bool preload() const noexcept { return preload_; }
  bool preloaded() const noexcept { return preload_ && preloaded_; }
  int calls() const noexcept { return calls_; }

 private:
  std::string label_;
  std::function<void(std::size_t)> call_;
  bool preload_;
  std::size_t cursor_ = 0;
  int calls_ = 2;
  unsigned long long spin_ns_ = 1000000;
  bool preloaded_ = true;
  std::vector<double> ms_, host_us_;
  Event start_, stop_;
};

// Prepares every contender, then runs plan.reps rounds, each one repetition of each, in turn.
void run_alternating(const std::vector<Timed*>& contenders, const Plan& plan) {
  for (Timed* t : contenders) t->prepare(plan);
  for (int r = 0; r < plan.reps; ++r)
    for (Timed* t : contenders) t->repetition(plan);
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize after the timed loops");
}

// ---- data ----------------------------------------------------------------------------------------

struct Shape2 {
  std::int64_t n, k;
};

std::uint64_t next(std::uint64_t& s) {
  s = s * 6364136223846793005ull + 1442695040888963407ull;
  return s >> 32;
}

// Random int4 g128 symmetric weights with f16 scales (every nibble -8..7), made directly.
QuantizedTensor<cpu> random_int4_weights(std::int64_t n, std::int64_t k, std::uint64_t seed) {
  auto w = QuantizedTensor<cpu>::create(QuantScheme::int4_grouped(128), n, k).value();
  std::uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  for (std::uint8_t& b : w.value_bytes().span()) b = static_cast<std::uint8_t>(next(s) >> 8);
  for (f16& sc : w.scales_f16().span()) sc = f16(0.01f);
  return w;
}

// Random int8 per-channel symmetric weights with f32 scales, made directly.
QuantizedTensor<cpu> random_int8_weights(std::int64_t n, std::int64_t k, std::uint64_t seed) {
  auto w = QuantizedTensor<cpu>::create(QuantScheme::int8_per_channel(), n, k).value();
  std::uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  for (std::uint8_t& b : w.value_bytes().span()) b = static_cast<std::uint8_t>(next(s) >> 8);
  for (float& sc : w.scales_f32().span()) sc = 0.01f;
  return w;
}

// Random f16 values of magnitude 2^-6 .. 1 (normal numbers, either sign) for cuBLAS's weights.
std::vector<f16> random_f16_weights(std::size_t count, std::uint64_t seed) {
  std::vector<f16> v(count);
  std::uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  for (f16& h : v) {
    const auto r = static_cast<std::uint32_t>(next(s));
    const std::uint32_t sign = (r >> 31) & 1u, exponent = 9u + (r >> 16) % 6u, mantissa = r & 0x3ffu;
    h = f16::from_bits(static_cast<std::uint16_t>((sign << 15) | (exponent << 10) | mantissa));
  }
  return v;
}

std::vector<f16> random_activations(std::size_t count, std::uint32_t seed) {
  std::vector<f16> v(count);
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, 1.f);
  for (f16& x : v) x = f16(d(rng));
  return v;
}

// The dequantized weights as an f16 device matrix [rows, cols]: cuBLAS's reference operand.
Tensor<f16, cuda> dequantized_f16(const QuantizedTensor<cpu>& q) {
  const Tensor<float> w = dequantize(q);
  std::vector<f16> h(static_cast<std::size_t>(w.numel()));
  const auto src = w.span();
  for (std::size_t i = 0; i < h.size(); ++i) h[i] = f16(src[i]);
  return Tensor<f16, cuda>::from_host(TensorView<const f16>(h.data(), Shape{q.rows(), q.cols()}));
}

// max |y - ref| / max |ref|; NaN anywhere gives NaN.
double relative_error(const Tensor<float, cuda>& y, const Tensor<float, cuda>& ref) {
  const Tensor<float> a = y.to_host(), b = ref.to_host();
  double diff = 0, scale = 0;
  const auto sa = a.span(), sb = b.span();
  for (std::size_t i = 0; i < sa.size(); ++i) {
    if (!std::isfinite(sa[i]) || !std::isfinite(sb[i])) return NAN;
    diff = std::max(diff, std::fabs(static_cast<double>(sa[i]) - sb[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(sb[i])));
  }
  return scale > 0 ? diff / scale : diff;
}

// `first` and count - 1 clone()s of it: distinct device memory, the same contents.
template <class T>
std::vector<T> copies(T first, std::size_t count) {
  std::vector<T> out;
  out.reserve(count);
  out.push_back(std::move(first));
  for (std::size_t i = 1; i < count; ++i) out.push_back(out.front().clone());
  return out;
}

std::size_t copies_for(std::size_t bytes_each, std::size_t rotation_bytes) {
  return std::max<std::size_t>(2, (rotation_bytes + bytes_each - 1) / bytes_each);
}

// ---- rows --------------------------------------------------------------------------------------

struct Work {
  double weight_bytes;  // what one call streams: weights (+ scales)
  double flops;         // 2 * M * N * K
  std::size_t copies;   // weight copies in rotation
};

BenchRow timed_row(std::string name, std::string lib, const Timed& t, const Work& w, double hbm_gbps) {
  BenchRow r(std::move(name), std::move(lib), 1);
  const double s = t.best_ms() * 1e-3;
  const double gbps = w.weight_bytes / s / 1e9;
  r.set("ms", t.best_ms()).set("gbps", gbps).set("bw_ratio", gbps / hbm_gbps).set("tflops", w.flops / s / 1e12);
  return r;
}

void finish_row(BenchRow& r, const Timed& t, const Work& w) {
  r.set("ms_median", t.median_ms()).set("host_us", t.host_us()).set("calls", static_cast<std::int64_t>(t.calls()));
  r.set("matrices", static_cast<std::int64_t>(w.copies));
  r.set("preloaded", static_cast<std::int64_t>(t.preloaded() ? 1 : 0));
}

std::string shape_name(Shape2 s) { return fmt::format("{}x{}", s.n, s.k); }

}  // namespace

int main(int argc, char** argv) {
  const CudaBenchOptions options = cuda_bench_options(argc, argv, "bench_cuda_qgemm",
                                                     "quarry CUDA qgemv / qgemm (W4A16, W8A8) vs measured HBM bandwidth and cuBLAS f16 GEMM");
  if (no_cuda_device("bench_cuda_qgemm")) return 0;

  try {
    check(cudaSetDevice(0), "cudaSetDevice(0)");
    const CudaDeviceInfo gpu = cuda_device_info(0).value();
    const bool quick = options.common.quick, tiny = options.tiny;
    const Plan plan = tiny ? Plan{2, 1, 4, 1} : quick ? Plan{3, 5, 128, 3} : Plan{7, 20, 256, 3};

    BenchReport report;
    report.machine = identify_machine(options.common.threads);
    report.machine.threads = 1;  // one host thread issues every call

    int l2 = 0, mem_clock_khz = 0, bus_bits = 0;
    check(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0), "cudaDeviceGetAttribute(L2 size)");
    if (cudaDeviceGetAttribute(&mem_clock_khz, cudaDevAttrMemoryClockRate, 0) != cudaSuccess) mem_clock_khz = 0;
    if (cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, 0) != cudaSuccess) bus_bits = 0;
    (void)cudaGetLastError();
    // Double data rate: 2 transfers per memory clock, bus_bits / 8 bytes each.
    const double nominal_gbps = 2.0 * mem_clock_khz * 1e3 * (bus_bits / 8.0) / 1e9;
    const std::size_t l2_bytes = l2 > 0 ? static_cast<std::size_t>(l2) : std::size_t{50} << 20;
    {
      BenchRow r("gpu", "machine", 1);
      r.set("gpu", gpu.name).set("cc", fmt::format("{}.{}", gpu.compute_capability_major, gpu.compute_capability_minor));
      r.set("sms", gpu.sm_count).set("mem_gib", static_cast<double>(gpu.total_memory_bytes) / (1u << 30));
      r.set("l2_mib", static_cast<double>(l2_bytes) / (1u << 20));
      r.set("hbm_nominal_gbps", nominal_gbps > 0 ? std::optional<double>(nominal_gbps) : std::nullopt);
      r.set("cuda_runtime", gpu.runtime_version).set("cuda_driver", gpu.driver_version);
      report.rows.push_back(std::move(r));
    }
    fmt::print("gpu: {} (sm_{}{}, {} SMs, {:.1f} GiB, L2 {:.0f} MiB)\n", gpu.name, gpu.compute_capability_major,
               gpu.compute_capability_minor, gpu.sm_count, static_cast<double>(gpu.total_memory_bytes) / (1u << 30),
               static_cast<double>(l2_bytes) / (1u << 20));

    // ---- the HBM yardstick ----
    std::size_t free_bytes = 0, total_bytes = 0;
    check(cudaMemGetInfo(&free_bytes, &total_bytes), "cudaMemGetInfo");
    const std::size_t hbm_bytes =
        std::min<std::size_t>(tiny ? std::size_t{64} << 20 : quick ? std::size_t{512} << 20 : std::size_t{2} << 30, free_bytes / 4);
    quarry_bench_hbm_result hbm{};
    check(quarry_bench_hbm_measure(hbm_bytes, tiny ? 1 : quick ? 3 : 10, &hbm), "HBM yardstick");
    const double hbm_gbps = hbm.read_gbps;
    {
      BenchRow r(fmt::format("hbm read {} MiB (16-byte loads, grid-stride)", hbm.read_bytes >> 20), "hbm", 1);
      r.set("ms", hbm.read_ms).set("gbps", hbm.read_gbps).set("gbps_median", hbm.read_gbps_median);
      r.set("nominal_ratio", nominal_gbps > 0 ? std::optional<double>(hbm.read_gbps / nominal_gbps) : std::nullopt);
      r.set("l2_multiple", static_cast<double>(hbm.read_bytes) / static_cast<double>(l2_bytes));
      r.set("blocks", hbm.blocks).set("passes", hbm.passes);
      report.rows.push_back(std::move(r));
      BenchRow c(fmt::format("hbm copy {} MiB (cudaMemcpy D2D; gbps counts read + write)", hbm.copy_bytes >> 20), "hbm", 1);
      c.set("ms", hbm.copy_ms).set("gbps", hbm.copy_gbps);
      c.set("nominal_ratio", nominal_gbps > 0 ? std::optional<double>(hbm.copy_gbps / nominal_gbps) : std::nullopt);
      c.set("passes", hbm.passes);
      report.rows.push_back(std::move(c));
    }
    fmt::print("hbm yardstick: read {:.0f} GB/s, cudaMemcpy D2D {:.0f} GB/s (read + write){}\n", hbm.read_gbps, hbm.copy_gbps,
               nominal_gbps > 0 ? fmt::format(", nominal {:.0f} GB/s", nominal_gbps) : std::string());
    std::fflush(stdout);

    check(quarry_bench_spin(1000), "spin kernel launch");  // loads the module before anything is timed
    check(cudaDeviceSynchronize(), "spin kernel");

    const Cublas cublas;
    const std::string cublas_build = cublas.version();
    const std::vector<Shape2> shapes = tiny    ? std::vector<Shape2>{{256, 512}}
                                       : quick ? std::vector<Shape2>{{4096, 4096}}
                                               : std::vector<Shape2>{{4096, 4096}, {11008, 4096}, {4096, 11008}};
    const std::vector<std::int64_t> row_counts = tiny    ? std::vector<std::int64_t>{1, 8, 40}
                                                 : quick ? std::vector<std::int64_t>{1, 8, 512}
                                                         : std::vector<std::int64_t>{1, 8, 32, 512};
    // --tiny: two copies of each matrix (copies_for's least).
    const std::size_t rotation_bytes = tiny    ? 0
                                       : quick ? std::max(4 * l2_bytes, std::size_t{128} << 20)
                                               : std::max(8 * l2_bytes, std::size_t{256} << 20);
    std::vector<double> w4_bw_ratios;
    bool checks_ok = true;

    for (const Shape2 shape : shapes) {
      const std::int64_t N = shape.n, K = shape.k;
      const std::string sn = shape_name(shape);
      fmt::print("{}: preparing weights...\n", sn);
      std::fflush(stdout);

      const QuantizedTensor<cpu> q4 = random_int4_weights(N, K, 1);
      const QuantizedTensor<cpu> q8 = random_int8_weights(N, K, 2);
      const std::size_t w4_bytes = q4.nbytes(), w8_bytes = q8.nbytes();
      const std::size_t f16_bytes = static_cast<std::size_t>(N * K) * sizeof(f16);
      std::vector<QuantizedTensor<cuda>> w4 = copies(to_device(q4), copies_for(w4_bytes, rotation_bytes));
      std::vector<QuantizedTensor<cuda>> w8 = copies(to_device(q8), copies_for(w8_bytes, rotation_bytes));
      std::vector<Tensor<f16, cuda>> wf;
      {
        const std::vector<f16> h = random_f16_weights(static_cast<std::size_t>(N * K), 3);
        wf = copies(Tensor<f16, cuda>::from_host(TensorView<const f16>(h.data(), Shape{N, K})), copies_for(f16_bytes, rotation_bytes));
      }
      // cuBLAS's operands for the checks: quarry's matrix 0 of each kind, dequantized to f16.
      const Tensor<f16, cuda> w4_ref = dequantized_f16(q4);
      const Tensor<f16, cuda> w8_ref = dequantized_f16(q8);

      for (const std::int64_t M : row_counts) {
        const bool gemv = M == 1;
        const std::string what = gemv ? "qgemv" : "qgemm";
        const std::vector<f16> xh = random_activations(static_cast<std::size_t>(M * K), 4);
        // quarry's qgemv takes x [K] and gives y [N]; the int8 overload and qgemm take [M, K].
        const Shape x_shape = gemv ? Shape{K} : Shape{M, K};
        const Shape y_shape = gemv ? Shape{N} : Shape{M, N};
        const auto x = Tensor<f16, cuda>::from_host(TensorView<const f16>(xh.data(), x_shape));
        Tensor<std::int8_t, cuda> xq(Shape{M, K});
        Tensor<float, cuda> xs(Shape{M});
        {
          Tensor<f16, cuda> x2 = x.clone();
          x2.reshape_in_place(Shape{M, K});
          quantize_rows_int8(x2, xq, xs);  // once: the W8A8 rows time the int8 product
        }
        Tensor<float, cuda> y4(y_shape), y8(Shape{M, N}), y8f(y_shape), yc(Shape{M, N});
        CudaQGemmOptions nowait;
        nowait.wait = false;

        // quarry on the f16 activations x: W4A16, or W8A8 quantizing x in the call.
        auto quarry_f16_x = [&](const QuantizedTensor<cuda>& w, Tensor<float, cuda>& y, const CudaQGemmOptions& o) {
          if (gemv) qgemv(x, w, y, o);
          else qgemm(x, w, y, o);
        };

        // ---- checks against cuBLAS on the dequantized weights (also checks the cuBLAS call) ----
        CudaQGemmOptions waiting;
        quarry_f16_x(w4[0], y4, waiting);
        qgemm(xq, xs, w8[0], y8, waiting);
        Tensor<float, cuda> y4m = y4.clone();
        y4m.reshape_in_place(Shape{M, N});
        cublas.gemm(x.data(), w4_ref.data(), yc.data(), M, N, K);
        check(cudaDeviceSynchronize(), "cuBLAS reference GEMM");
        const double err4 = relative_error(y4m, yc);
        cublas.gemm(x.data(), w8_ref.data(), yc.data(), M, N, K);
        check(cudaDeviceSynchronize(), "cuBLAS reference GEMM");
        const double err8 = relative_error(y8, yc);
        quarry_f16_x(w8[0], y8f, waiting);
        Tensor<float, cuda> y8fm = y8f.clone();
        y8fm.reshape_in_place(Shape{M, N});
        const double err8f = relative_error(y8fm, yc);
        for (const auto& [label, err, tol] : {std::tuple{"w4a16", err4, kW4CheckTol}, std::tuple{"w8a8 int8 x", err8, kW8CheckTol},
                                              std::tuple{"w8a8 f16 x", err8f, kW8CheckTol}}) {
          if (!(err <= tol)) {
            checks_ok = false;
            fmt::print("WARNING: {} {} {} m={}: max |y - y_cublas| / max |y_cublas| = {:.3g} > {:.0e}; its figures are suspect\n", what,
                       label, sn, M, err, tol);
          }
        }

        // ---- timing, alternating between the contenders ----
        Timed t4(fmt::format("{} w4a16 {} m={}", what, sn, M), [&](std::size_t i) { quarry_f16_x(w4[i % w4.size()], y4, nowait); }, true);
        Timed t8(fmt::format("{} w8a8 {} m={}", what, sn, M),
                 [&](std::size_t i) { qgemm(xq, xs, w8[i % w8.size()], y8, nowait); }, true);
        // From f16 activations each call quantizes them and frees two temporaries (cudaFree
        // synchronises), so it is timed as the host issues it.
        Timed t8f(fmt::format("{} w8a8 f16-x {} m={}", what, sn, M),
                  [&](std::size_t i) { quarry_f16_x(w8[i % w8.size()], y8f, nowait); }, false);
        Timed tc(fmt::format("cublas f16 {} m={}", sn, M),
                 [&](std::size_t i) { cublas.gemm(x.data(), wf[i % wf.size()].data(), yc.data(), M, N, K); }, true);
        fmt::print("{} m={}: timing\n", sn, M);
        std::fflush(stdout);
        run_alternating({&t4, &t8, &t8f, &tc}, plan);

        const double flops = 2.0 * static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K);
        const Work work4{static_cast<double>(w4_bytes), flops, w4.size()};
        const Work work8{static_cast<double>(w8_bytes), flops, w8.size()};
        const Work workf{static_cast<double>(f16_bytes), flops, wf.size()};
        const double cublas_ms = tc.best_ms();

        BenchRow r4 = timed_row(fmt::format("{} w4a16 g128 {} m={}", what, sn, M), "quarry", t4, work4, hbm_gbps);
        r4.set("cublas_ratio", cublas_ms / t4.best_ms());
        finish_row(r4, t4, work4);
        r4.set("check_err", err4).set("x", "f16");
        if (gemv) w4_bw_ratios.push_back(work4.weight_bytes / (t4.best_ms() * 1e-3) / 1e9 / hbm_gbps);
        report.rows.push_back(std::move(r4));

        BenchRow r8 = timed_row(fmt::format("{} w8a8 per-channel {} m={}", what, sn, M), "quarry", t8, work8, hbm_gbps);
        r8.set("cublas_ratio", cublas_ms / t8.best_ms());
        finish_row(r8, t8, work8);
        r8.set("check_err", err8).set("x", "int8, quantized once");
        report.rows.push_back(std::move(r8));

        BenchRow r8f = timed_row(fmt::format("{} w8a8 per-channel {} m={} (f16 x)", what, sn, M), "quarry", t8f, work8, hbm_gbps);
        r8f.set("cublas_ratio", cublas_ms / t8f.best_ms());
        finish_row(r8f, t8f, work8);
        r8f.set("check_err", err8f).set("x", "f16, quantized per call (+ 2 temporaries)");
        report.rows.push_back(std::move(r8f));

        BenchRow rc = timed_row(fmt::format("{} f16 {} m={}", gemv ? "gemv" : "gemm", sn, M), "cublas", tc, workf, hbm_gbps);
        finish_row(rc, tc, workf);
        rc.set("x", "f16").set("build", cublas_build).set("math", "cublasGemmEx f16 in, f32 compute + out, CUBLAS_GEMM_DEFAULT");
        report.rows.push_back(std::move(rc));
      }
    }

    const int rc = output_report(report, options.common.json_path);
    fmt::print("gbps: weight + scale bytes per second (activations and outputs not counted); bw_ratio: gbps / the hbm read row "
               "({:.0f} GB/s); tflops: 2*M*N*K / time; cublas_ratio: cuBLAS f16 time / quarry time on the same M, N, K (> 1: "
               "quarry faster); host_us: host time to issue one call; preloaded: 1 when the timed calls were all queued "
               "before the device reached them (device time only)\n",
               hbm_gbps);
    if (!w4_bw_ratios.empty()) {
      const double worst = *std::min_element(w4_bw_ratios.begin(), w4_bw_ratios.end());
      fmt::print("target qgemv w4a16 bw_ratio >= {}: lowest {:.3f} over {} shape(s): {}\n", kW4BwTarget, worst, w4_bw_ratios.size(),
                 worst >= kW4BwTarget ? "met" : "NOT met");
    }
    if (!checks_ok) fmt::print("WARNING: some checks against cuBLAS failed (see above); the figures of those rows are suspect\n");
    return rc;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    fmt::print(stderr, "bench_cuda_qgemm: error: {}\n", e.what());
    return 1;
  }
}
