// quarry's main demo: what this CPU offers, which kernel set quarry picked, and the core
// (tensors, f16/bf16 conversion, vector products, the thread pool) on data it makes itself.
// It grows with every module.
//
// Usage: quarry_demo [model.gguf]
//   With a GGUF model (f32 weights, e.g. ../shared/data/models/stories260K/stories260K.gguf) it
//   also quantizes the model's real weight matrices. QUARRY_FORCE_ISA=scalar|avx2|avx512 forces
//   the kernel set.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include <fmt/core.h>
#include <fmt/ranges.h>

#include <quarry/quarry.hpp>

using namespace quarry;

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Best-of-five wall time of f, in seconds.
template <class F>
double best_time(F&& f) {
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, seconds_since(t0));
  }
  return best;
}

void show_machine() {
  const CpuFeatures& cpu = cpu_features();
  fmt::print("== machine\n");
  fmt::print("cpu       : {} ({})\n", cpu.brand.empty() ? "unknown" : cpu.brand, cpu.vendor);
  fmt::print("features  : {}\n", cpu.to_string());
  std::vector<std::string_view> built, runnable;
  for (Isa isa : {Isa::scalar, Isa::neon, Isa::avx2, Isa::avx512}) {
    if (isa_built(isa)) built.push_back(isa_name(isa));
    if (isa_supported(isa)) runnable.push_back(isa_name(isa));
  }
  fmt::print("kernels   : built {}, runnable here {}\n", fmt::join(built, " "), fmt::join(runnable, " "));
  fmt::print("active isa: {}{}\n", isa_name(active_isa()),
             active_isa() == best_isa() ? " (the best available)" : " (forced by QUARRY_FORCE_ISA)");
  fmt::print("threads   : {} hardware\n\n", std::thread::hardware_concurrency());
}

void show_tensors() {
  fmt::print("== tensors\n");
  Tensor<float> m({4, 6});
  for (std::int64_t i = 0; i < 4; ++i)
    for (std::int64_t j = 0; j < 6; ++j) m(i, j) = static_cast<float>(10 * i + j);
  auto block = m.slice(0, 1, 3).slice(1, 2, 6, 2);  // rows 1..2, columns 2 and 4: a view
  auto mt = m.t();
  fmt::print("m {} strides {}; block view {} strides {} = [[{}, {}], [{}, {}]]\n", m.shape(), m.strides(),
             block.shape(), block.strides(), block(0, 0), block(0, 1), block(1, 0), block(1, 1));
  fmt::print("m.t() {} strides {} contiguous={}; reshape [2, -1] -> {}\n", mt.shape(), mt.strides(),
             mt.is_contiguous(), m.reshape({2, -1}).shape());
  const auto gram = (as_eigen(m) * as_eigen(m).transpose()).eval();  // Eigen on the tensor's memory
  fmt::print("Eigen::Map over m (no copy): (m m^T)[3, 3] = {}\n", gram(3, 3));

  Tensor<int4> q({2, 4});
  for (std::int64_t j = 0; j < 4; ++j) {
    q(0, j) = int4(static_cast<int>(j) - 8);
    q(1, j) = int4(static_cast<int>(j) + 4);
  }
  fmt::print("int4 {} takes {} bytes: {:02x}\n", q.shape(), q.nbytes(),
             fmt::join(q.storage(), q.storage() + q.nbytes(), " "));
  try {
    (void)m.reshape({5, 5});
  } catch (const error& e) {
    fmt::print("a bad reshape says: {}\n", e.what());
  }
  fmt::print("\n");
}

void show_kernels() {
  fmt::print("== kernels on generated data, per ISA (best of 5)\n");
  const std::size_t n = std::size_t{1} << 22;  // 16 MiB of floats: beyond most L2s
  std::mt19937 rng(2026);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> x(n), y(n);
  for (auto& v : x) v = normal(rng);
  for (auto& v : y) v = normal(rng);

  // Round-trip error of the 16-bit formats (the same on every ISA: they are bit-exact).
  std::vector<f16> h(n);
  std::vector<bf16> b(n);
  std::vector<float> back(n);
  convert(x, h);
  convert(h, back);
  double max_rel_h = 0, max_rel_b = 0;
  for (std::size_t i = 0; i < n; ++i)  // relative error is bounded in f16's normal range, |x| >= 2^-14
    if (std::fabs(x[i]) >= std::ldexp(1.f, -14)) max_rel_h = std::max(max_rel_h, std::fabs(double(back[i]) - x[i]) / std::fabs(double(x[i])));
  convert(x, b);
  convert(b, back);
  for (std::size_t i = 0; i < n; ++i) max_rel_b = std::max(max_rel_b, std::fabs(double(back[i]) - x[i]) / std::fabs(double(x[i]) + 1e-30));
  fmt::print("f32 -> f16 -> f32 max relative error {:.2e} (bound 2^-11 = {:.2e}, normal range); bf16 {:.2e} (bound 2^-8 = {:.2e})\n",
             max_rel_h, std::ldexp(1.0, -11), max_rel_b, std::ldexp(1.0, -8));

  fmt::print("{:<8} {:>14} {:>14} {:>14}   {}\n", "isa", "f32->f16 GB/s", "dot_f32 GB/s", "dot_i8 GB/s", "dot(x, y)");
  std::vector<std::int8_t> xi(n), yi(n);
  for (std::size_t i = 0; i < n; ++i) {
    xi[i] = static_cast<std::int8_t>(std::lround(std::clamp(x[i] * 32.f, -127.f, 127.f)));
    yi[i] = static_cast<std::int8_t>(std::lround(std::clamp(y[i] * 32.f, -127.f, 127.f)));
  }
  for (Isa isa : supported_isas()) {
    // detail::kernel_table reaches one ISA's kernels directly; applications call the public
    // front-ends (convert, dot), which use the active ISA.
    const auto& k = *detail::kernel_table<detail::CoreKernels>(isa);
    auto* hb = reinterpret_cast<std::uint16_t*>(h.data());
    const double t_conv = best_time([&] { k.f32_to_f16(x.data(), hb, n); });
    float d = 0;
    const double t_dot = best_time([&] { d = k.dot_f32(x.data(), y.data(), n); });
    std::int32_t di = 0;
    const double t_i8 = best_time([&] { di = k.dot_i8(xi.data(), yi.data(), n); });
    fmt::print("{:<8} {:>14.1f} {:>14.1f} {:>14.1f}   {:.3f} (int8: {})\n", isa_name(isa), 6.0 * n / t_conv / 1e9,
               8.0 * n / t_dot / 1e9, 2.0 * n / t_i8 / 1e9, d, di);
  }
  fmt::print("\n");
}

void show_thread_pool() {
  fmt::print("== thread pool: y = W x, one row per task (f32, {} x {})\n", 4096, 4096);
  const std::int64_t rows = 4096, cols = 4096;
  Tensor<float> w = Tensor<float>::uninitialized({rows, cols});
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (float& v : w.span()) v = u(rng);
  std::vector<float> x(static_cast<std::size_t>(cols), 0.5f), out(static_cast<std::size_t>(rows));
  auto gemv = [&](ThreadPool* pool) {
    parallel_for(pool, 0, rows, [&](std::int64_t lo, std::int64_t hi) {
      for (std::int64_t r = lo; r < hi; ++r) out[static_cast<std::size_t>(r)] = dot(w[r].span(), x);
    }, 64);
  };
  const double t1 = best_time([&] { gemv(nullptr); });
  ThreadPool pool;  // as many threads as the hardware has; created here, joined at scope exit
  const double tn = best_time([&] { gemv(&pool); });
  const double bytes = 4.0 * rows * cols;
  fmt::print("1 thread: {:.1f} GB/s   {} threads: {:.1f} GB/s   (speed-up {:.2f}x)\n", bytes / t1 / 1e9, pool.size(),
             bytes / tn / 1e9, t1 / tn);
}

void quantize_and_report(TensorView<const float> w, const std::string& name) {
  const QuantScheme schemes[] = {QuantScheme::int8_per_channel(), QuantScheme::int8_grouped(32),
                                 QuantScheme::int4_grouped(32), QuantScheme::int4_grouped(32, false),
                                 QuantScheme::int4_grouped(128), QuantScheme::int4_grouped(128, false)};
  for (const QuantScheme& s : schemes) {
    auto q = quantize(w, s);
    if (!q.ok()) {
      fmt::print("  {:<12} {:<42} {}\n", name, s.to_string(), q.status().message());
      continue;
    }
    const QuantError e = quant_error(w, *q);
    fmt::print("  {:<12} {:<42} {:6.3f} bits/weight  SNR {:5.1f} dB  max abs err {:.2e}\n", name, s.to_string(),
               q->bits_per_weight(), e.snr_db, e.max_abs);
  }
}

void show_quantization(const char* model_path) {
  fmt::print("\n== quantization (SNR: signal-to-noise of the dequantized weights)\n");
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.f, 0.02f);
  Tensor<float> w = Tensor<float>::uninitialized({256, 1024});
  for (float& v : w.span()) v = normal(rng);
  quantize_and_report(w.view(), "gaussian");

  if (model_path == nullptr) {
    fmt::print("(give a GGUF model path to quantize its real weights too)\n");
    return;
  }
  auto model = GgufFile::open(model_path);
  if (!model.ok()) {
    fmt::print("cannot read {}: {}\n", model_path, model.status().to_string());
    return;
  }
  fmt::print("{}: GGUF v{}, {} tensors, architecture {}\n", model_path, model->version(), model->tensors().size(),
             model->get_string("general.architecture").ok() ? *model->get_string("general.architecture") : "?");
  int shown = 0;
  for (const GgufTensorInfo& t : model->tensors()) {
    if (t.shape.rank() != 2 || shown == 3) continue;
    auto view = model->tensor_f32(t.name);
    if (!view.ok()) {
      fmt::print("  {}: {}\n", t.name, view.status().message());
      continue;
    }
    fmt::print("  {} {}\n", t.name, t.shape);
    quantize_and_report(*view, "");
    ++shown;
  }
}

}  // namespace

int main(int argc, char** argv) {
  try {
    fmt::print("quarry {} demo\n\n", QUARRY_VERSION_STRING);
    show_machine();
    show_tensors();
    show_kernels();
    show_thread_pool();
    show_quantization(argc > 1 ? argv[1] : nullptr);
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "quarry_demo: %s\n", e.what());
    return 1;
  }
}
