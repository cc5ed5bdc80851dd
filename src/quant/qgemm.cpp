#include "quarry/quant/qgemm.hpp"

#include <algorithm>
#include <cstdint>
#include <vector>

#include <fmt/format.h>

#include "quarry/core/convert.hpp"
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
  std::size_t lda = 0;              // q's row stride
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// Which kernel runs: W8A8 (per tensor / channel, or per group), W4A32 or W4A8 (see qgemm.hpp);
// anything else is errc::unsupported.
enum class Kernel { w8a8, w8a8_grouped, w4a32, w4a8 };

Kernel select_kernel(const QuantizedTensor<cpu>& w, ActivationMode mode, const char* fn) {
  const QuantScheme& s = w.scheme();
  if (qgemm_supports(s, mode)) {
    if (s.bits == 8) return s.granularity == Granularity::per_group ? Kernel::w8a8_grouped : Kernel::w8a8;
    return mode == ActivationMode::int8 ? Kernel::w4a8 : Kernel::w4a32;
  }
  if (qgemm_supports(s, ActivationMode::automatic) && mode == ActivationMode::float32)
    throw_error(errc::unsupported, fmt::format("{}: weights quantized as {} take int8 activations (W8A8); float activations "
                                               "(W8A16) are not supported",
                                               fn, s.to_string()));
  throw_error(errc::unsupported,
              fmt::format("{}: weights quantized as {} are not supported; it takes int8 weights (W8A8) and int4 per_group "
                          "weights (W4A32 / W4A16, or W4A8)",
                          fn, s.to_string()));
}

void check_bias(const QGemmOptions& o, std::int64_t n, const char* fn) {
  if (!o.bias.empty() && static_cast<std::int64_t>(o.bias.size()) != n)
    throw_error(errc::shape_mismatch, fmt::format("{}: bias has {} elements, the weights have N = {} rows", fn, o.bias.size(), n));
}

// qgemm's shapes: x [M, K] and y [M, N] matrices for weights [N, K], and the bias.
void check_shapes(TensorView<const float> x, TensorView<float> y, std::int64_t n, std::int64_t k, const QGemmOptions& o) {
  if (x.rank() != 2 || y.rank() != 2)
    throw_error(errc::shape_mismatch, fmt::format("qgemm: x {} and y {} must be matrices", x.shape(), y.shape()));
  if (x.dim(1) != k || y.dim(0) != x.dim(0) || y.dim(1) != n)
    throw_error(errc::shape_mismatch, fmt::format("qgemm: x {} times weights [{}, {}]^T does not give y {}; expected x [M, {}] and y [M, {}]",
                                                  x.shape(), n, k, y.shape(), k, n));
  check_bias(o, n, "qgemm");
}

// qgemv's shapes: x [K] and y [N] for weights [N, K].
void check_qgemv_shapes(std::size_t x, std::size_t y, std::int64_t n, std::int64_t k) {
  if (static_cast<std::int64_t>(x) != k || static_cast<std::int64_t>(y) != n)
    throw_error(errc::shape_mismatch, fmt::format("qgemv: weights [{}, {}] times x [{}] does not give y [{}]; expected x [{}] and y [{}]",
                                                  n, k, x, y, k, n));
}

// The sums of each `block` columns of each of the M quantized rows in s (K columns), `ld` apart
// and zero-padded: the kernels start their dots from them times the zero points.
void column_block_sums(const Scratch& s, std::size_t m, std::size_t k, std::size_t block, std::size_t ld, std::vector<std::int32_t>& out) {
  out.assign(m * ld, 0);
  for (std::size_t i = 0; i < m; ++i)
    for (std::size_t c = 0; c < k; ++c) out[i * ld + c / block] += s.q[i * s.lda + c];
}

// Runs the kernel over output columns [0, N) split into tasks on the pool. From 16 activation rows
// the AVX-512 kernel packs 32-row weight panels into per-thread scratch, so tasks are larger.
void run_gemm(const detail::QGemmArgs& base, ThreadPool* pool) {
  const auto& k = detail::kernels<detail::QuantKernels>();
  const std::int64_t n = static_cast<std::int64_t>(base.n);
  const std::int64_t rows_per_task = base.m >= 16 ? 128 : kRowsPerTask;
  const std::int64_t tasks = (n + rows_per_task - 1) / rows_per_task;
  const std::size_t scratch_bytes = detail::qgemm_s8_scratch_bytes(base.k) + 64;
  parallel_for(pool, 0, tasks, [&](std::int64_t t0, std::int64_t t1) {
    const std::size_t j0 = static_cast<std::size_t>(t0 * rows_per_task);
    const std::size_t j1 = static_cast<std::size_t>(std::min(n, t1 * rows_per_task));
    detail::QGemmArgs g = base;
    g.w = base.w + j0 * base.ldw;
    g.w_scale = base.w_scale + j0 * base.w_scale_stride;
    if (base.w_zero) g.w_zero = base.w_zero + j0 * base.w_scale_stride;
    if (base.bias) g.bias = base.bias + j0;
    g.y = base.y + j0;
    g.n = j1 - j0;
    if (base.m >= 16) {
      thread_local std::vector<std::uint8_t> scratch;
      if (scratch.size() < scratch_bytes) scratch.resize(scratch_bytes);
      const auto addr = reinterpret_cast<std::uintptr_t>(scratch.data());
      g.scratch = scratch.data() + ((64 - addr % 64) % 64);
    }
    k.gemm_s8(g);
  });
}

// Runs a per_group kernel (W4A32, W4A8, or grouped W8A8 when `grouped_int8`) over output columns
// [0, N) split into tasks on the pool.
void run_w4(detail::Q4GemmArgs base, std::size_t m, const QuantizedTensor<cpu>& w, float* y, std::size_t ldy,
            const QGemmOptions& o, bool grouped_int8 = false) {
  const auto& kern = detail::kernels<detail::QuantKernels>();
  const bool int8_acts = base.a != nullptr;
  base.w = w.value_bytes().data();
  base.ldw = static_cast<std::size_t>(w.row_bytes());
  base.w_scale = w.scales_data();
  base.group = static_cast<std::size_t>(w.scheme().group_size);
  base.ld_scale = static_cast<std::size_t>(w.cols()) / base.group;
  base.scale_f16 = w.scheme().scale_dtype == DType::f16;
  base.w_zero = w.scheme().symmetric ? nullptr : w.zeros().data();
  base.bias = o.bias.empty() ? nullptr : o.bias.data();
  base.output_scale = o.output_scale;
  base.y = y;
  base.ldy = ldy;
  base.m = m;
  base.n = static_cast<std::size_t>(w.rows());
  base.k = static_cast<std::size_t>(w.cols());
  const std::int64_t n = w.rows();
  const std::int64_t tasks = (n + kRowsPerTask - 1) / kRowsPerTask;
  const std::size_t scale_bytes = base.scale_f16 ? 2 : 4;
  parallel_for(o.pool, 0, tasks, [&](std::int64_t t0, std::int64_t t1) {
    const std::size_t j0 = static_cast<std::size_t>(t0 * kRowsPerTask);
    const std::size_t j1 = static_cast<std::size_t>(std::min(n, t1 * kRowsPerTask));
    detail::Q4GemmArgs g = base;
    g.w = base.w + j0 * base.ldw;
    g.w_scale = static_cast<const std::uint8_t*>(base.w_scale) + j0 * base.ld_scale * scale_bytes;
    if (base.w_zero) g.w_zero = base.w_zero + j0 * base.ld_scale;
    if (base.bias) g.bias = base.bias + j0;
    g.y = base.y + j0;
    g.n = j1 - j0;
    if (grouped_int8) kern.gemm_s8_grouped(g);
    else if (int8_acts) kern.gemm_w4_s8(g);
    else kern.gemm_w4_f32(g);
  });
}

// Calls write(y_ptr, ldy) with y itself when its rows are unit-stride, else with a dense
// temporary copied into y afterwards.
template <class Write>
void with_dense_output(TensorView<float> y, std::int64_t m, std::int64_t n, Write&& write) {
  if (y.strides()[1] == 1 && (m == 1 || y.strides()[0] >= n)) {
    write(y.data(), static_cast<std::size_t>(m == 1 ? n : y.strides()[0]));
    return;
  }
  Tensor<float> dense = Tensor<float>::uninitialized({m, n});
  write(dense.data(), static_cast<std::size_t>(n));
  for (std::int64_t r = 0; r < m; ++r)
    for (std::int64_t c = 0; c < n; ++c) y(r, c) = dense(r, c);
}

// The weights' side of the arguments; f16 scales are widened into `widened`.
void fill_weights(detail::QGemmArgs& g, const QuantizedTensor<cpu>& w, std::vector<float>& widened) {
  g.w = reinterpret_cast<const std::int8_t*>(w.value_bytes().data());
  g.ldw = static_cast<std::size_t>(w.row_bytes());
  g.w_scale_stride = w.scheme().granularity == Granularity::per_channel ? 1 : 0;
  g.w_zero = w.scheme().symmetric ? nullptr : w.zeros().data();
  if (w.scheme().scale_dtype == DType::f32) {
    g.w_scale = static_cast<const float*>(w.scales_data());
  } else {
    const auto s = w.scales_f16();
    widened.resize(static_cast<std::size_t>(s.numel()));
    for (std::int64_t r = 0; r < s.dim(0); ++r) widened[static_cast<std::size_t>(r)] = static_cast<float>(s(r, 0));
    g.w_scale = widened.data();
  }
}

// x's rows quantized to int8 (W8A8's quantizer) into this thread's scratch: q [M, lda] with
// lda = K rounded up to 64, their sums and their scales (output_scale folded in).
Scratch& quantize_activations(TensorView<const float> x, const QGemmOptions& options) {
  const auto& kern = detail::kernels<detail::QuantKernels>();
  Scratch& s = scratch();
  const std::int64_t m = x.dim(0), kdim = x.dim(1);
  const std::size_t K = static_cast<std::size_t>(kdim), M = static_cast<std::size_t>(m);
  const std::size_t lda = (K + 63) / 64 * 64;
  s.lda = lda;
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
  return s;
}

}  // namespace

void detail::pack_w4a8_activations(const std::int8_t* q, std::size_t k, std::int8_t* out, std::int32_t* bsum) noexcept {
  const std::size_t padded = w4a8_padded_k(k);
  std::fill(out, out + padded, std::int8_t{0});
  std::fill(bsum, bsum + padded / 8, 0);
  for (std::size_t c = 0; c < k; ++c) {
    const std::size_t r = c % 128;
    out[(c - r) + (r & 1) * 64 + r / 2] = q[c];
    bsum[c / 8] += q[c];
  }
}

void qgemm(TensorView<const float> x, const QuantizedTensor<cpu>& w, TensorView<float> y, const QGemmOptions& options) {
  const Kernel kernel = select_kernel(w, options.activations, "qgemm");
  check_shapes(x, y, w.rows(), w.cols(), options);
  const std::int64_t m = x.dim(0), kdim = x.dim(1), n = w.rows();
  if (m == 0 || n == 0) return;

  if (kernel == Kernel::w4a32) {
    // Activations with unit column stride are read in place; others are gathered densely.
    const float* xp = x.data();
    std::size_t ldx = static_cast<std::size_t>(x.strides()[0]);
    Tensor<float> gathered;
    if (kdim > 0 && x.strides()[1] != 1) {
      gathered = x.contiguous();
      xp = gathered.data();
      ldx = static_cast<std::size_t>(kdim);
    }
    detail::Q4GemmArgs g;
    g.x = xp;
    g.ldx = ldx;
    with_dense_output(y, m, n, [&](float* yp, std::size_t ldy) { run_w4(g, static_cast<std::size_t>(m), w, yp, ldy, options); });
    return;
  }

  const std::size_t K = static_cast<std::size_t>(kdim), M = static_cast<std::size_t>(m);
  Scratch& s = quantize_activations(x, options);
  const std::size_t lda = s.lda;

  if (kernel == Kernel::w8a8_grouped) {
    // Sums of each 4-column block of each quantized row, zero-padded to whole 64-column chunks.
    const std::size_t nb = detail::s8g_bsum_count(K);
    thread_local std::vector<std::int32_t> bsum4;
    column_block_sums(s, M, K, 4, nb, bsum4);
    detail::Q4GemmArgs g8;
    g8.a = s.q.data();
    g8.lda = lda;
    g8.a_bsum = bsum4.data();
    g8.ld_bsum = nb;
    g8.a_scale = s.scale.data();
    with_dense_output(y, m, n, [&](float* yp, std::size_t ldy) { run_w4(g8, M, w, yp, ldy, options, true); });
    return;
  }

  if (kernel == Kernel::w4a8) {
    // The W4A8 kernels read each row in chunks of 128 columns, even columns then odd ones, with
    // the sums of its 8-column blocks beside (see QuantKernels::gemm_w4_s8).
    const std::size_t padded = detail::w4a8_padded_k(K);
    thread_local std::vector<std::int8_t> packed;
    thread_local std::vector<std::int32_t> bsum;
    packed.resize(M * padded);
    bsum.resize(M * (padded / 8));
    for (std::size_t i = 0; i < M; ++i)
      detail::pack_w4a8_activations(s.q.data() + i * lda, K, packed.data() + i * padded, bsum.data() + i * (padded / 8));
    detail::Q4GemmArgs g4;
    g4.a = packed.data();
    g4.lda = padded;
    g4.a_bsum = bsum.data();
    g4.ld_bsum = padded / 8;
    g4.a_scale = s.scale.data();
    with_dense_output(y, m, n, [&](float* yp, std::size_t ldy) { run_w4(g4, M, w, yp, ldy, options); });
    return;
  }

  detail::QGemmArgs g;
  g.a = s.q.data();
  g.lda = lda;
  if (M >= 16 && w.scheme().symmetric) {  // the packed prefill kernel's uint8 operand: a + 128
    thread_local std::vector<std::uint8_t> a_u8;
    a_u8.resize(M * lda);
    for (std::size_t t = 0; t < M * lda; ++t) a_u8[t] = static_cast<std::uint8_t>(s.q[t] ^ 0x80);
    g.a_u8 = a_u8.data();
  }
  g.a_sum = s.q_sum.data();
  g.a_scale = s.scale.data();
  std::vector<float> widened;
  fill_weights(g, w, widened);
  g.bias = options.bias.empty() ? nullptr : options.bias.data();
  g.m = M;
  g.n = static_cast<std::size_t>(n);
  g.k = K;

  with_dense_output(y, m, n, [&](float* yp, std::size_t ldy) {
    g.y = yp;
    g.ldy = ldy;
    run_gemm(g, options.pool);
  });
}

void qgemv(std::span<const float> x, const QuantizedTensor<cpu>& w, std::span<float> y, const QGemmOptions& options) {
  (void)select_kernel(w, options.activations, "qgemv");
  check_qgemv_shapes(x.size(), y.size(), w.rows(), w.cols());
  const auto K = static_cast<std::int64_t>(x.size()), N = static_cast<std::int64_t>(y.size());
  qgemm(TensorView<const float>(x.data(), Shape{1, K}), w, TensorView<float>(y.data(), Shape{1, N}), options);
}

void qgemm(TensorView<const float> x, const QuantizedPanels& w, TensorView<float> y, const QGemmOptions& options) {
  const bool int8 = w.scheme().bits == 8 && w.scheme().granularity != Granularity::per_group;
  if (options.activations == ActivationMode::float32)
    throw_error(errc::unsupported, fmt::format("qgemm: panels of {} take int8 activations ({}); float activations {}", w.scheme().to_string(),
                                               w.scheme().bits == 8 ? "W8A8" : "W4A8",
                                               w.scheme().bits == 8 ? "(W8A16) are not supported" : "take the row-major QuantizedTensor (W4A32)"));
  check_shapes(x, y, w.rows(), w.cols(), options);
  const std::int64_t m = x.dim(0), kdim = x.dim(1), n = w.rows();
  if (m == 0 || n == 0) return;
  const std::size_t K = static_cast<std::size_t>(kdim), M = static_cast<std::size_t>(m);
  Scratch& s = quantize_activations(x, options);
  const auto& kern = detail::kernels<detail::QuantKernels>();
  const std::int64_t panels = w.panels();
  const std::size_t blocks = static_cast<std::size_t>(w.blocks());
  const float* bias = options.bias.empty() ? nullptr : options.bias.data();
  // Tasks of 4 panels (the decode kernels' quad of 64 rows in flight, and the layout's unit: a
  // task's panels start at a multiple of 4); a prefill task takes more.
  const std::int64_t per_task = M >= 16 ? 16 : 4;
  const std::int64_t tasks = (panels + per_task - 1) / per_task;
  auto run = [&](auto&& task) {
    with_dense_output(y, m, n, [&](float* yp, std::size_t ldy) {
      parallel_for(options.pool, 0, tasks, [&](std::int64_t t0, std::int64_t t1) {
        const auto p0 = static_cast<std::size_t>(t0 * per_task), p1 = static_cast<std::size_t>(std::min(panels, t1 * per_task));
        task(p0, std::min(static_cast<std::size_t>(n), p1 * 16) - p0 * 16, yp + p0 * 16, ldy);
      });
    });
  };

  if (int8) {  // W8A8: gemm_s8's operands, the weights in panels
    const std::size_t k4 = (K + 3) / 4 * 4;  // the last block's columns past K meet zero activations
    for (std::size_t i = 0; i < M; ++i) std::fill(s.q.begin() + static_cast<std::ptrdiff_t>(i * s.lda + K), s.q.begin() + static_cast<std::ptrdiff_t>(i * s.lda + k4), 0);
    detail::QGemmArgs base;
    base.a = s.q.data();
    base.lda = s.lda;
    base.a_sum = s.q_sum.data();
    base.a_scale = s.scale.data();
    base.w_scale_stride = 1;
    base.m = M;
    base.k = K;
    const auto* values = reinterpret_cast<const std::int8_t*>(w.value_data());
    const auto* scales = static_cast<const float*>(w.scale_data());
    run([&](std::size_t p0, std::size_t rows, float* yp, std::size_t ldy) {
      detail::QGemmArgs g = base;
      g.w = values + p0 * blocks * 64;
      g.w_scale = scales + p0 * 16;
      if (w.zero_data()) g.w_zero = w.zero_data() + p0 * 16;
      if (bias) g.bias = bias + p0 * 16;
      g.y = yp;
      g.ldy = ldy;
      g.n = rows;
      kern.gemm_s8_panels(g);
    });
    return;
  }

  // Per group (W4A8, or int8 per_group W8A8): the sum of each group of each quantized row (the
  // kernels start each dot from it times the zero point).
  const std::size_t group = static_cast<std::size_t>(w.scheme().group_size), groups = K / group;
  thread_local std::vector<std::int32_t> gsum;
  column_block_sums(s, M, K, group, groups, gsum);
  detail::Q4PanelArgs base;
  base.a = s.q.data();
  base.lda = s.lda;
  base.a_gsum = gsum.data();
  base.ld_gsum = groups;
  base.a_scale = s.scale.data();
  base.scale_f16 = w.scheme().scale_dtype == DType::f16;
  base.group = group;
  base.bits = w.scheme().bits;
  base.m = M;
  base.k = K;
  const std::size_t scale_bytes = base.scale_f16 ? 2 : 4, panel_slots = groups * 16;
  run([&](std::size_t p0, std::size_t rows, float* yp, std::size_t ldy) {
    detail::Q4PanelArgs g = base;
    g.w = w.value_data() + p0 * blocks * 64;
    g.w_scale = static_cast<const std::uint8_t*>(w.scale_data()) + p0 * panel_slots * scale_bytes;
    if (w.zero_data()) g.w_zero = w.zero_data() + p0 * panel_slots;
    if (bias) g.bias = bias + p0 * 16;
    g.y = yp;
    g.ldy = ldy;
    g.n = rows;
    kern.gemm_grouped_panels(g);
  });
}

void qgemv(std::span<const float> x, const QuantizedPanels& w, std::span<float> y, const QGemmOptions& options) {
  check_qgemv_shapes(x.size(), y.size(), w.rows(), w.cols());
  const auto K = static_cast<std::int64_t>(x.size()), N = static_cast<std::int64_t>(y.size());
  qgemm(TensorView<const float>(x.data(), Shape{1, K}), w, TensorView<float>(y.data(), Shape{1, N}), options);
}

namespace {

// x (f16 or bf16) converted to f32 row by row into thread-local scratch (quarry::convert), then
// the f32 qgemm.
template <class Half>
void qgemm_half(TensorView<const Half> x, const QuantizedTensor<cpu>& w, TensorView<float> y, const QGemmOptions& options) {
  (void)select_kernel(w, options.activations, "qgemm");
  if (x.rank() != 2)
    throw_error(errc::shape_mismatch, fmt::format("qgemm: x {} and y {} must be matrices", x.shape(), y.shape()));
  const std::int64_t m = x.dim(0), k = x.dim(1);
  if (k > 0 && x.strides()[1] != 1) {
    const Tensor<Half> dense = x.contiguous();
    qgemm_half<Half>(dense.view(), w, y, options);
    return;
  }
  thread_local std::vector<float> buffer;
  buffer.resize(static_cast<std::size_t>(m * k));
  for (std::int64_t r = 0; r < m && k > 0; ++r)
    convert(std::span<const Half>(&x(r, 0), static_cast<std::size_t>(k)),
            std::span<float>(buffer.data() + r * k, static_cast<std::size_t>(k)));
  qgemm(TensorView<const float>(buffer.data(), Shape{m, k}), w, y, options);
}

template <class Half>
void qgemv_half(std::span<const Half> x, const QuantizedTensor<cpu>& w, std::span<float> y, const QGemmOptions& options) {
  (void)select_kernel(w, options.activations, "qgemv");
  check_qgemv_shapes(x.size(), y.size(), w.rows(), w.cols());
  const auto K = static_cast<std::int64_t>(x.size()), N = static_cast<std::int64_t>(y.size());
  qgemm_half<Half>(TensorView<const Half>(x.data(), Shape{1, K}), w, TensorView<float>(y.data(), Shape{1, N}), options);
}

}  // namespace

void qgemm(TensorView<const f16> x, const QuantizedTensor<cpu>& w, TensorView<float> y, const QGemmOptions& options) {
  qgemm_half<f16>(x, w, y, options);
}
void qgemm(TensorView<const bf16> x, const QuantizedTensor<cpu>& w, TensorView<float> y, const QGemmOptions& options) {
  qgemm_half<bf16>(x, w, y, options);
}
void qgemv(std::span<const f16> x, const QuantizedTensor<cpu>& w, std::span<float> y, const QGemmOptions& options) {
  qgemv_half<f16>(x, w, y, options);
}
void qgemv(std::span<const bf16> x, const QuantizedTensor<cpu>& w, std::span<float> y, const QGemmOptions& options) {
  qgemv_half<bf16>(x, w, y, options);
}

}  // namespace quarry
