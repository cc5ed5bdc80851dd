// A program that gets quarry from vcpkg: it quantizes a weight matrix to INT8 and to INT4, runs
// qgemv (one activation row, the decode step of a language model) with each, checks the results
// against a double-precision reference, and says what it did. Exits 1 when a result is wrong.
// Built with the manifest feature "cuda" (quarry[cuda]), it also runs both products on the GPU
// when there is one, and compares them with the CPU's.
#include <quarry/quarry.hpp>
#ifdef QUARRY_VCPKG_CONSUMER_CUDA
#include <quarry/cuda.hpp>
#endif

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include <fmt/core.h>

namespace {

// y = a . x in double, for a row-major [rows, cols] matrix a.
std::vector<double> matvec(quarry::TensorView<const float> a, std::span<const float> x) {
  std::vector<double> y(static_cast<std::size_t>(a.dim(0)), 0.0);
  for (std::int64_t r = 0; r < a.dim(0); ++r)
    for (std::int64_t c = 0; c < a.dim(1); ++c)
      y[static_cast<std::size_t>(r)] += static_cast<double>(a(r, c)) * x[static_cast<std::size_t>(c)];
  return y;
}

// ||y - ref|| / ||ref||
double relative_error(std::span<const float> y, const std::vector<double>& ref) {
  double diff = 0, norm = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    diff += (y[i] - ref[i]) * (y[i] - ref[i]);
    norm += ref[i] * ref[i];
  }
  return std::sqrt(diff / norm);
}

}  // namespace

int main() {
  constexpr std::int64_t rows = 256;  // N: output features
  constexpr std::int64_t cols = 512;  // K: input features
  fmt::print("quarry {} from vcpkg; CPU kernels: {}\n", QUARRY_VERSION_STRING,
             quarry::isa_name(quarry::active_isa()));
#ifdef QUARRY_VCPKG_CONSUMER_CUDA
  fmt::print("CUDA component linked; {} usable device(s){}\n", quarry::cuda_device_count(),
             quarry::cuda_available() ? "" : ": the GPU comparison is skipped");
#endif

  // A weight matrix and an activation row with the spread of a small model's layer.
  std::mt19937 rng(7);
  std::normal_distribution<float> weight(0.0f, 0.05f), activation(0.0f, 1.0f);
  quarry::Tensor<float> w({rows, cols});
  for (float& v : w.span()) v = weight(rng);
  quarry::Tensor<float> x({cols});
  for (float& v : x.span()) v = activation(rng);
  const std::vector<double> y_exact = matvec(w, x.span());

  struct Case {
    quarry::QuantScheme scheme;
    double max_relative_error;  // against the float product: quantization error, with margin
  };
  const Case cases[] = {
      {quarry::QuantScheme::int8_per_channel(), 0.02},  // W8A8: int8 weights and activations
      {quarry::QuantScheme::int4_grouped(64), 0.15},    // W4A32: int4 weights, float activations
  };

  int failures = 0;
  for (const Case& c : cases) {
    const quarry::QuantizedTensor<quarry::cpu> q = quarry::quantize(w, c.scheme).value();
    const quarry::QuantError werr = quarry::quant_error(w, q);

    quarry::Tensor<float> y({rows});
    quarry::qgemv(x.span(), q, y.span());
    const double err = relative_error(y.span(), y_exact);

    // The kernel itself must be exact up to float rounding: compare with the product of the
    // dequantized weights (activations quantized as W8A8 does are not modelled, so only for int4).
    double kernel_err = 0;
    if (c.scheme.bits == 4) {
      const quarry::Tensor<float> w_dequantized = quarry::dequantize(q);
      kernel_err = relative_error(y.span(), matvec(w_dequantized, x.span()));
    }

    const bool ok = err <= c.max_relative_error && kernel_err <= 1e-5;
    fmt::print("{}: [{} x {}] weights in {:.1f} KiB ({:.3f} bits each, f32 {:.0f} KiB); weight SNR {:.1f} dB; "
               "qgemv relative error {:.4f} (limit {}){}\n",
               c.scheme.to_string(), rows, cols, static_cast<double>(q.nbytes()) / 1024.0, q.bits_per_weight(),
               static_cast<double>(w.nbytes()) / 1024.0, werr.snr_db, err, c.max_relative_error,
               c.scheme.bits == 4 ? fmt::format(", {:.1e} from the dequantized product", kernel_err) : "");
    if (!ok) {
      fmt::print(stderr, "FAILED: {} is outside its limits\n", c.scheme.to_string());
      ++failures;
    }

#ifdef QUARRY_VCPKG_CONSUMER_CUDA
    // The same product on the GPU: the W8A8 and W4A16 kernels sum in another order, so they
    // agree with the CPU's to float rounding, not bit for bit.
    if (quarry::cuda_available()) {
      const quarry::QuantizedTensor<quarry::cuda> q_gpu = quarry::to_device(q);
      const auto x_gpu = quarry::Tensor<float, quarry::cuda>::from_host(x);
      quarry::Tensor<float, quarry::cuda> y_gpu({rows});
      quarry::qgemv(x_gpu, q_gpu, y_gpu);
      const quarry::Tensor<float> y_back = y_gpu.to_host();
      std::vector<double> y_cpu(y.span().begin(), y.span().end());
      const double gpu_err = relative_error(y_back.span(), y_cpu);
      fmt::print("  on the GPU: relative difference from the CPU result {:.1e}\n", gpu_err);
      if (!(gpu_err <= 1e-4)) {
        fmt::print(stderr, "FAILED: the GPU's {} qgemv differs from the CPU's\n", c.scheme.to_string());
        ++failures;
      }
    }
#endif
  }
  fmt::print("{}\n", failures == 0 ? "all results within their limits" : "some results were wrong");
  return failures == 0 ? 0 : 1;
}
