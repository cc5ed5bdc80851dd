// quarry's Conan test package: quantizes a small weight matrix W [N, K] (INT8 per row, INT4 in
// groups of 32), multiplies a vector with it (qgemv) and checks the products against the f32
// product computed with Eigen over the same memory. With the cuda component it also runs the
// INT4 qgemv on the GPU and checks it against the CPU's, or says that there is no GPU.
#include <cmath>
#include <cstdio>
#include <exception>
#include <vector>

#include <fmt/core.h>

#include <quarry/quarry.hpp>
#if QUARRY_TEST_CUDA
#include <quarry/cuda.hpp>
#endif

using namespace quarry;

namespace {

constexpr std::int64_t N = 96, K = 256;

// W[n, k] and x[k]: smooth, sign-changing values (no generator needed to reproduce them).
Tensor<float> weights() {
  Tensor<float> w({N, K});
  for (std::int64_t n = 0; n < N; ++n)
    for (std::int64_t k = 0; k < K; ++k) w(n, k) = 0.05f * std::sin(0.37f * static_cast<float>(n) + 0.011f * static_cast<float>(k * k % 97));
  return w;
}

Tensor<float> activations() {
  Tensor<float> x({1, K});
  for (std::int64_t k = 0; k < K; ++k) x(0, k) = std::cos(0.21f * static_cast<float>(k));
  return x;
}

// y = x W^T with int8 or int4 weights through qgemv; false when its SNR against y_ref is below min_snr_db.
bool check_cpu(const char* name, const QuantScheme& scheme, const Tensor<float>& w, const Tensor<float>& x,
               const Tensor<float>& y_ref, double min_snr_db) {
  const QuantizedTensor<cpu> q = quantize(w.view(), scheme).value();
  Tensor<float> y({1, N});
  qgemv(x[0].span(), q, y[0].span());
  const QuantError e = quant_error(y_ref.view(), y.view());
  const bool ok = e.snr_db >= min_snr_db;
  fmt::print("  {:<28} {:6.3f} bits/weight, qgemv SNR {:5.1f} dB (want >= {:.0f}): {}\n", name, q.bits_per_weight(), e.snr_db,
             min_snr_db, ok ? "ok" : "FAILED");
  return ok;
}

#if QUARRY_TEST_CUDA
// The INT4 qgemv on device 0 against the CPU's with the same weights; true when there is no device.
bool check_cuda(const Tensor<float>& w, const Tensor<float>& x) {
  const int devices = cuda_device_count();
  if (devices == 0) {
    fmt::print("quarry::cuda is linked; no CUDA device is present here (cuda_device_count() = 0), so the GPU check is skipped\n");
    return true;
  }
  const CudaDeviceInfo info = cuda_device_info(0).value();
  const QuantizedTensor<cpu> q = quantize(w.view(), QuantScheme::int4_grouped(32)).value();
  Tensor<float> y_cpu({N});
  qgemv(x[0].span(), q, y_cpu.span());

  Tensor<float> x_vec({K});
  for (std::int64_t k = 0; k < K; ++k) x_vec(k) = x(0, k);
  Tensor<float, cuda> y_dev = Tensor<float, cuda>::uninitialized({N});
  qgemv(to_device(x_vec), to_device(q), y_dev);
  const Tensor<float> y_gpu = y_dev.to_host();

  const QuantError e = quant_error(y_cpu.view(), y_gpu.view());
  const bool ok = e.snr_db >= 80.0;  // the same numbers summed in another order
  fmt::print("quarry::cuda on {} (sm_{}{}): INT4 qgemv against the CPU's: SNR {:.1f} dB, max abs {:.2e}: {}\n", info.name,
             info.compute_capability_major, info.compute_capability_minor, e.snr_db, e.max_abs, ok ? "ok" : "FAILED");
  return ok;
}
#endif

}  // namespace

int main() {
  try {
    fmt::print("quarry {} from its Conan package\n", QUARRY_VERSION_STRING);
    const Tensor<float> w = weights();
    const Tensor<float> x = activations();
    Tensor<float> y_ref({1, N});
    as_eigen(y_ref).noalias() = as_eigen(x) * as_eigen(w).transpose();  // Eigen comes with quarry::quarry

    fmt::print("W [{}, {}] times x [{}], against the f32 product:\n", N, K, K);
    bool ok = check_cpu("INT8, a scale per row", QuantScheme::int8_per_channel(), w, x, y_ref, 30.0);
    ok = check_cpu("INT4, groups of 32", QuantScheme::int4_grouped(32), w, x, y_ref, 15.0) && ok;
#if QUARRY_TEST_CUDA
    ok = check_cuda(w, x) && ok;
#endif
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "test_package: %s\n", e.what());
    return 1;
  }
}
