// The oneDNN peer of bench_qgemv's prefill rows: oneDNN's int8 matmul on the same shape and the same
// weight bytes. Built only when oneDNN was found (bench/CMakeLists.txt defines
// QUARRY_BENCH_HAS_ONEDNN=1 then); this header names no oneDNN type, so bench_qgemv.cpp needs no
// oneDNN headers or OpenMP flags.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

namespace quarry::bench {

/// y[M, N] (f32) = (xq[M, K] . w[K, N]) * x_scale * w_scale[n], one oneDNN matmul primitive with
/// s8 activations (xq = x quantized per tensor, symmetric, -127..127 as quarry's per-row
/// quantization) and s8 weights reordered once into the layout oneDNN picks (format_tag::any).
/// Everything but run() happens in the constructor, outside any timing.
class OnednnInt8Matmul {
 public:
  /// x: [m, k] f32 row-major; w: quarry's [n, k] int8 row-major bytes with w_scales[n].
  /// `threads`: the OpenMP thread count the primitive is created for and run on.
  OnednnInt8Matmul(const float* x, const std::int8_t* w, const float* w_scales, long m, long n, long k,
                   unsigned threads);
  ~OnednnInt8Matmul();
  OnednnInt8Matmul(const OnednnInt8Matmul&) = delete;
  OnednnInt8Matmul& operator=(const OnednnInt8Matmul&) = delete;

  /// One execute of the primitive on `threads` OpenMP threads; returns when it is done.
  void run();
  /// What ran, for the row's "build": oneDNN's version, its effective CPU ISA, the implementation
  /// it chose and the data types, e.g. "oneDNN 2.6.3 omp avx512_core_bf16 brg:avx512_core_vnni s8s8f32".
  std::string build() const;
  /// y as the last run() left it, [m, n] row-major: to check the peer computed the same product.
  const float* output() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace quarry::bench
