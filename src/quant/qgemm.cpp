#include "quarry/quant/qgemm.hpp"

#include <algorithm>
#include <cstdint>
#include <vector>

#include <fmt/format.h>

#include "quarry/core/detail/dispatch.hpp"
#include "quarry/quant/detail/quant_kernels.hpp"

namespace quarry {

namespace {

// Weight rows per unit of parallel work: a multiple of every kernel's rows in flight.
constexpr std::int64_t kRowsPerTask = 16;

// Per-thread scratch reused across calls, so the decode step does not allocate.
struct Scratch {
  std::vector<std::int8_t> q;       // [M, lda] quantized activations
  std::vector<std::int32_t> q_sum;  // [M]
  std::vector<float> scale;         // [M]
  std::vector<float> row;           // a gathered strided activation row (per task: see below)
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

void check_supported(const QuantizedTensor<cpu>& w, const char* fn) {
  if (!qgemm_supports(w.scheme()))
    throw_error(errc::unsupported,
                fmt::format("{}: weights quantized as {} are not supported; it takes int8 symmetric per_tensor or "
                            "per_channel weights (per_group int8 and int4 kernels are not written yet)",
                            fn, w.scheme().to_string()));
}

void check_bias(const QGemmOptions& o, std::int64_t n, const char* fn) {
  if (!o.bias.empty() && static_cast<std::int64_t>(o.bias.size()) != n)
    throw_error(errc::shape_mismatch, fmt::format("{}: bias has {} elements, the weights have N = {} rows", fn, o.bias.size(), n));
}

// Runs the kernel over output columns [0, N) split into tasks on the pool.
void run_gemm(const detail::QGemmArgs& base, ThreadPool* pool) {
  const auto& k = detail::kernels<detail::QuantKernels>();
  const std::int64_t n = static_cast<std::int64_t>(base.n);
  const std::int64_t tasks = (n + kRowsPerTask - 1) / kRowsPerTask;
  parallel_for(pool, 0, tasks, [&](std::int64_t t0, std::int64_t t1) {
    const std::size_t j0 = static_cast<std::size_t>(t0 * kRowsPerTask);
    const std::size_t j1 = static_cast<std::size_t>(std::min(n, t1 * kRowsPerTask));
    detail::QGemmArgs g = base;
    g.w = base.w + j0 * base.ldw;
    g.w_scale = base.w_scale + j0 * base.w_scale_stride;
    if (base.bias) g.bias = base.bias + j0;
    g.y = base.y + j0;
    g.n = j1 - j0;
    k.gemm_s8(g);
  });
}

// The weights' side of the arguments; f16 scales are widened into `widened`.
void fill_weights(detail::QGemmArgs& g, const QuantizedTensor<cpu>& w, std::vector<float>& widened) {
  g.w = reinterpret_cast<const std::int8_t*>(w.value_bytes().data());
  g.ldw = static_cast<std::size_t>(w.row_bytes());
  g.w_scale_stride = w.scheme().granularity == Granularity::per_channel ? 1 : 0;
  if (w.scheme().scale_dtype == DType::f32) {
    g.w_scale = static_cast<const float*>(w.scales_data());
  } else {
    const auto s = w.scales_f16();
    widened.resize(static_cast<std::size_t>(s.numel()));
    for (std::int64_t r = 0; r < s.dim(0); ++r) widened[static_cast<std::size_t>(r)] = static_cast<float>(s(r, 0));
    g.w_scale = widened.data();
  }
}

}  // namespace

void qgemm(TensorView<const float> x, const QuantizedTensor<cpu>& w, TensorView<float> y, const QGemmOptions& options) {
  check_supported(w, "qgemm");
  if (x.rank() != 2 || y.rank() != 2)
    throw_error(errc::shape_mismatch, fmt::format("qgemm: x {} and y {} must be matrices", x.shape(), y.shape()));
  const std::int64_t m = x.dim(0), kdim = x.dim(1), n = w.rows();
  if (kdim != w.cols() || y.dim(0) != m || y.dim(1) != n)
    throw_error(errc::shape_mismatch, fmt::format("qgemm: x {} times weights [{}, {}]^T does not give y {}; expected x [M, {}] and y [M, {}]",
                                                  x.shape(), w.rows(), w.cols(), y.shape(), w.cols(), w.rows()));
  check_bias(options, n, "qgemm");
  if (m == 0 || n == 0) return;

  const auto& kern = detail::kernels<detail::QuantKernels>();
  Scratch& s = scratch();
  const std::size_t K = static_cast<std::size_t>(kdim), M = static_cast<std::size_t>(m);
  const std::size_t lda = (K + 63) / 64 * 64;
  s.q.resize(M * lda);
  s.q_sum.resize(M);
  s.scale.resize(M);
  const bool unit_stride = x.strides()[1] == 1;
  parallel_for(options.pool, 0, m, [&](std::int64_t r0, std::int64_t r1) {
    std::vector<float> gathered;
    for (std::int64_t r = r0; r < r1; ++r) {
      const float* row = kdim > 0 ? &x(r, 0) : nullptr;
      if (!unit_stride && kdim > 0) {
        gathered.resize(K);
        for (std::int64_t c = 0; c < kdim; ++c) gathered[static_cast<std::size_t>(c)] = x(r, c);
        row = gathered.data();
      }
      const auto i = static_cast<std::size_t>(r);
      s.scale[i] = kern.quantize_row_s8(row, K, s.q.data() + i * lda, &s.q_sum[i]) * options.output_scale;
    }
  }, 16);

  detail::QGemmArgs g;
  g.a = s.q.data();
  g.lda = lda;
  g.a_sum = s.q_sum.data();
  g.a_scale = s.scale.data();
  std::vector<float> widened;
  fill_weights(g, w, widened);
  g.bias = options.bias.empty() ? nullptr : options.bias.data();
  g.m = M;
  g.n = static_cast<std::size_t>(n);
  g.k = K;

  // y: written in place when its rows are unit-stride, else through a dense temporary.
  Tensor<float> dense;
  if (y.strides()[1] == 1 && (m == 1 || y.strides()[0] >= n)) {
    g.y = y.data();
    g.ldy = static_cast<std::size_t>(m == 1 ? n : y.strides()[0]);
    run_gemm(g, options.pool);
  } else {
    dense = Tensor<float>::uninitialized({m, n});
    g.y = dense.data();
    g.ldy = static_cast<std::size_t>(n);
    run_gemm(g, options.pool);
    for (std::int64_t r = 0; r < m; ++r)
      for (std::int64_t c = 0; c < n; ++c) y(r, c) = dense(r, c);
  }
}

void qgemv(std::span<const float> x, const QuantizedTensor<cpu>& w, std::span<float> y, const QGemmOptions& options) {
  check_supported(w, "qgemv");
  if (static_cast<std::int64_t>(x.size()) != w.cols() || static_cast<std::int64_t>(y.size()) != w.rows())
    throw_error(errc::shape_mismatch, fmt::format("qgemv: weights [{}, {}] times x [{}] does not give y [{}]; expected x [{}] and y [{}]",
                                                  w.rows(), w.cols(), x.size(), y.size(), w.cols(), w.rows()));
  const auto K = static_cast<std::int64_t>(x.size()), N = static_cast<std::int64_t>(y.size());
  qgemm(TensorView<const float>(x.data(), Shape{1, K}), w, TensorView<float>(y.data(), Shape{1, N}), options);
}

}  // namespace quarry
