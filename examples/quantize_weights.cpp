// quantize_weights: the quant module's user story. Quantizes a weight matrix W [N, K] to INT8
// (one scale per output row) and to INT4 (one f16 scale per group of 32 or 128 columns),
// multiplies activations with it (qgemm for a batch of rows, qgemv for one), and compares the
// products with the f32 product x W^T; last, INT4 in panels (QuantizedPanels), the fastest int4 path.
//
// Usage: quantize_weights        (generates W and x; runs in well under a second)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include <fmt/core.h>

#include <quarry/quarry.hpp>

using namespace quarry;

namespace {

// A [rows, cols] matrix of normal values with standard deviation `sd`.
Tensor<float> random_matrix(std::int64_t rows, std::int64_t cols, float sd, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, sd);
  Tensor<float> t = Tensor<float>::uninitialized({rows, cols});
  for (float& v : t.span()) v = normal(rng);
  return t;
}

}  // namespace

int main() {
  try {
    const std::int64_t N = 1024, K = 2048, M = 8;  // a layer's weights; a batch of 8 token rows
    const Tensor<float> w = random_matrix(N, K, 0.02f, 1);
    const Tensor<float> x = random_matrix(M, K, 1.f, 2);

    // The reference: y = x W^T in f32 (Eigen over the tensors' memory, no copies).
    Tensor<float> y_ref({M, N});
    as_eigen(y_ref).noalias() = as_eigen(x) * as_eigen(w).transpose();
    fmt::print("W is [{}, {}] f32 ({} KiB); x is [{}, {}]; the reference is y = x W^T in f32\n", N, K, N * K * 4 / 1024, M, K);

    // Each scheme with the kernels that take it: W8A8 for int8 weights; W4A32 (float activations)
    // and W4A8 (activations quantized to int8 per row) for int4 weights.
    struct Kernel {
      ActivationMode activations;
      const char* name;
    };
    const Kernel w8a8{ActivationMode::int8, "W8A8  (x in int8 per row, int32 sums)"},
        w4a32{ActivationMode::float32, "W4A32 (x in float)"}, w4a8{ActivationMode::int8, "W4A8  (x in int8 per row, int32 sums)"};
    struct Case {
      QuantScheme scheme;
      std::vector<Kernel> kernels;
    };
    const Case cases[] = {
        {QuantScheme::int8_per_channel(), {w8a8}},
        {QuantScheme::int4_grouped(32), {w4a32}},
        {QuantScheme::int4_grouped(128), {w4a32, w4a8}},
    };
    ThreadPool pool(2);
    for (const Case& c : cases) {
      // Quantize: integers plus scales, checked (an invalid scheme or shape is an error, not a crash).
      const QuantizedTensor<cpu> q = quantize(w.view(), c.scheme).value();
      const QuantError we = quant_error(w.view(), q);
      fmt::print("\n{}: {} KiB, {:.3f} bits per weight ({:.1f}x smaller than f32); weights' SNR {:.1f} dB\n",
                 c.scheme.to_string(), q.nbytes() / 1024, q.bits_per_weight(), 32.0 / q.bits_per_weight(), we.snr_db);

      for (const Kernel& kernel : c.kernels) {
        // Multiply: the batch (qgemm, rows of W split over the pool), then its first row alone
        // (qgemv, the decode step), which must agree with the batch's first row.
        Tensor<float> y({M, N});
        qgemm(x.view(), q, y.view(), {.pool = &pool, .activations = kernel.activations});
        std::vector<float> y0(static_cast<std::size_t>(N));
        qgemv(x[0].span(), q, y0, {.activations = kernel.activations});
        double row_diff = 0;
        for (std::int64_t j = 0; j < N; ++j) row_diff = std::max(row_diff, double(std::fabs(y0[std::size_t(j)] - y(0, j))));
        const QuantError ye = quant_error(y_ref.view(), y.view());
        fmt::print("  {}: y's SNR against the f32 product {:.1f} dB (RMSE {:.1e}); qgemv of row 0 within {:.0e} of qgemm's\n",
                   kernel.name, ye.snr_db, ye.rmse, row_diff);
        if (row_diff > 1e-4) return 1;
      }
    }
    // The fastest int4 path: the same INT4 g32 weights rearranged once into panels of 16 rows
    // (QuantizedPanels), multiplied as W4A8 with one float step per group of 32 instead of per 8
    // columns: faster for decode and prefill alike, the same integers, rounded in fewer steps.
    {
      const QuantizedTensor<cpu> q = quantize(w.view(), QuantScheme::int4_grouped(32)).value();
      const QuantizedPanels panels = QuantizedPanels::pack(q, &pool).value();
      Tensor<float> y({M, N});
      qgemm(x.view(), panels, y.view(), {.pool = &pool});
      std::vector<float> y0(static_cast<std::size_t>(N));
      qgemv(x[0].span(), panels, y0);
      double row_diff = 0;
      for (std::int64_t j = 0; j < N; ++j) row_diff = std::max(row_diff, double(std::fabs(y0[std::size_t(j)] - y(0, j))));
      const QuantError ye = quant_error(y_ref.view(), y.view());
      fmt::print("\n{} in panels of 16 rows (QuantizedPanels, {} KiB):\n  W4A8  (x in int8 per row, int32 sums per group): y's SNR "
                 "against the f32 product {:.1f} dB (RMSE {:.1e}); qgemv of row 0 within {:.0e} of qgemm's\n",
                 q.scheme().to_string(), panels.nbytes() / 1024, ye.snr_db, ye.rmse, row_diff);
      if (row_diff > 1e-4) return 1;
    }
    fmt::print("\nSNR = 10 log10(signal power / error power): at 20 dB the errors are about a tenth of the values' size, "
               "at 40 dB a hundredth.\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "quantize_weights: %s\n", e.what());
    return 1;
  }
}
