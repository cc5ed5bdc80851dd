// Quantized matrix products on the device (quarry/quant/cuda_qgemm.hpp): shape, scheme and
// device checks with messages that name them, then the kernels of quant_kernels.cu.
#include <cstdint>
#include <string>
#include <string_view>
#include <type_traits>

#include <fmt/format.h>

#include "cublas_handles.hpp"
#include "cuda_error.hpp"
#include "quant_kernels.h"
#include "quarry/quant/cuda_qgemm.hpp"

namespace quarry {

namespace {

// int32 accumulation of K products of an activation in -127..127 and a weight in -128..127 is
// exact while K * 127 * 128 < 2^31 (the CPU qgemm's bound).
constexpr std::int64_t kMaxW8A8K = ((std::int64_t{1} << 31) - 1) / (127 * 128);
// The tiled kernels put M / 64 in gridDim.y.
constexpr std::int64_t kMaxTiledM = std::int64_t{65535} * 64;

enum class Family { w4a16, w8a8 };

bool is_w4a16(const QuantScheme& s) noexcept { return s.bits == 4 && s.granularity == Granularity::per_group; }
bool is_w8a8(const QuantScheme& s) noexcept { return s.bits == 8 && s.symmetric && s.granularity != Granularity::per_group; }

/// "w [300, 128] (int4 per_group(32) symmetric f16-scales)".
std::string describe(const QuantizedTensor<cuda>& w) { return fmt::format("w [{}, {}] ({})", w.rows(), w.cols(), w.scheme().to_string()); }

[[noreturn]] void fail(errc code, std::string_view context, std::string_view what) {
  throw_error(code, fmt::format("{}: {}", context, what));
}

/// Throws unless `t` (named `name`) is empty or on `device`.
template <class T>
void check_device(const Tensor<T, cuda>& t, std::string_view name, int device, std::string_view context) {
  if (!t.empty() && t.device() != device)
    fail(errc::invalid_argument, context,
         fmt::format("{} is on device {} but y is on device {}; copy it to one device first", name, t.device(), device));
}

/// Waits for the kernels when asked to, and turns a CUDA error into quarry::error.
void finish(cudaError_t launch_error, bool wait, std::string_view context) {
  if (launch_error != cudaSuccess) detail::throw_in_context(detail::cuda_failure(launch_error, "kernel launch"), context);
  if (!wait) return;
  if (const cudaError_t e = cudaStreamSynchronize(nullptr); e != cudaSuccess)
    detail::throw_in_context(detail::cuda_failure(e, "kernel run"), context);
}

/// Switches to `device` for the scope; throws on failure.
class OnDevice {
 public:
  OnDevice(int device, std::string_view context) : on_(device) {
    if (on_.error() != cudaSuccess)
      detail::throw_in_context(detail::cuda_failure(on_.error(), fmt::format("cudaSetDevice({})", device)), context);
  }

 private:
  detail::ScopedDevice on_;
};

cuda_kernels::Int4GroupedWeights int4_weights(const QuantizedTensor<cuda>& w) noexcept {
  cuda_kernels::Int4GroupedWeights v;
  v.values = w.values_data();
  v.scales = w.scales_data();
  v.zeros = w.scheme().symmetric ? nullptr : w.zeros_data();
  v.n = w.rows();
  v.k = w.cols();
  v.group_size = w.scheme().group_size;
  v.symmetric = w.scheme().symmetric;
  v.scales_f16 = w.scheme().scale_dtype == DType::f16;
  return v;
}

cuda_kernels::Int8Weights int8_weights(const QuantizedTensor<cuda>& w) noexcept {
  cuda_kernels::Int8Weights v;
  v.values = reinterpret_cast<const std::int8_t*>(w.values_data());
  v.scales = w.scales_data();
  v.n = w.rows();
  v.k = w.cols();
  v.per_channel = w.scheme().granularity == Granularity::per_channel;
  v.scales_f16 = w.scheme().scale_dtype == DType::f16;
  return v;
}

/// The checks every product shares once M and K of the activations are known: the scheme, K,
/// y's shape [y_shape], the bias, the devices and the kernels' limits. Returns the family.
Family check_product(std::int64_t m, std::int64_t k, const QuantizedTensor<cuda>& w, const Shape& want_y, const Tensor<float, cuda>& y,
                     const CudaQGemmOptions& options, std::string_view context) {
  if (const status st = cuda_qgemm_supports(w.scheme()); !st.ok()) fail(st.code(), context, st.message());
  const QuantScheme& s = w.scheme();
  if (k != w.cols())
    fail(errc::shape_mismatch, context, fmt::format("the activations have K = {} columns but {} has K = {}", k, describe(w), w.cols()));
  if (s.granularity == Granularity::per_group && w.cols() % s.group_size != 0)
    fail(errc::shape_mismatch, context, fmt::format("K = {} is not a multiple of the group size {}", w.cols(), s.group_size));
  if (y.shape() != want_y)
    fail(errc::shape_mismatch, context, fmt::format("y is {} but must be {} (M = {} rows, N = {} outputs of {})", y.shape(), want_y, m, w.rows(), describe(w)));
  if (options.bias != nullptr && options.bias->shape() != Shape{w.rows()})
    fail(errc::shape_mismatch, context, fmt::format("the bias is {} but must be [{}] (N of {})", options.bias->shape(), w.rows(), describe(w)));
  const Family family = is_w4a16(s) ? Family::w4a16 : Family::w8a8;
  if (family == Family::w8a8 && k > kMaxW8A8K)
    fail(errc::out_of_range, context, fmt::format("K = {} is too long for exact int32 accumulation of int8 products (at most {})", k, kMaxW8A8K));
  if (m > kMaxTiledM)
    fail(errc::out_of_range, context, fmt::format("M = {} rows; the GEMM kernels take at most {}", m, kMaxTiledM));
  if (!y.empty()) {
    const int device = y.device();
    if (w.device() >= 0 && w.device() != device)
      fail(errc::invalid_argument, context, fmt::format("{} is on device {} but y is on device {}; copy it to one device first", describe(w), w.device(), device));
    if (options.bias != nullptr) check_device(*options.bias, "the bias", device, context);
  }
  return family;
}

cuda_kernels::Epilogue epilogue_of(const CudaQGemmOptions& options) noexcept {
  return {options.output_scale, options.bias != nullptr && !options.bias->empty() ? options.bias->data() : nullptr};
}

template <class X>
constexpr bool is_f16_v = std::is_same_v<X, f16>;

/// W8A8 for M > 1 on the tensor cores: cuBLAS's int8 GEMM (int32 accumulation, exact, so the
/// result is the same int32 sum as every other path) writes the products into y's own memory as
/// int32, and the epilogue kernel turns them into outputs in place. Returns false, having done
/// nothing, when cuBLAS does not take the shape (K or N not a multiple of 4, sizes beyond int):
/// the caller then runs the SIMT kernel.
bool w8a8_gemm_on_tensor_cores(const std::int8_t* xq, const float* x_scales, std::int64_t m, const cuda_kernels::Int8Weights& w,
                               const cuda_kernels::Epilogue& epilogue, float* y, std::string_view context) {
  constexpr std::int64_t kIntMax = 0x7fffffff;
  if (m < 2 || w.k % 4 != 0 || w.n % 4 != 0 || m > kIntMax || w.n > kIntMax || w.k > kIntMax) return false;
  const detail::CublasLease cublas;
  if (!cublas.ok()) detail::throw_in_context(cublas.error(), context);
  const std::int32_t alpha = 1, beta = 0;
  // Column-major view: y^T [n, m] = W [n, k] (row-major = column-major k x n, transposed) times xq^T [k, m].
  const cublasStatus_t st = cublasGemmEx(cublas.get(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(w.n), static_cast<int>(m), static_cast<int>(w.k),
                                         &alpha, w.values, CUDA_R_8I, static_cast<int>(w.k), xq, CUDA_R_8I, static_cast<int>(w.k), &beta, y,
                                         CUDA_R_32I, static_cast<int>(w.n), CUBLAS_COMPUTE_32I, CUBLAS_GEMM_DEFAULT);
  if (st == CUBLAS_STATUS_NOT_SUPPORTED || st == CUBLAS_STATUS_INVALID_VALUE) return false;
  if (st != CUBLAS_STATUS_SUCCESS)
    fail(st == CUBLAS_STATUS_ALLOC_FAILED ? errc::out_of_memory : errc::device_error, context,
         fmt::format("cublasGemmEx (int8): {}", cublasGetStatusName(st)));
  if (const cudaError_t e = cuda_kernels::launch_w8a8_epilogue_in_place(y, x_scales, m, w, epilogue); e != cudaSuccess)
    detail::throw_in_context(detail::cuda_failure(e, "kernel launch"), context);
  return true;
}

/// W8A8 on quantized activations: the tensor cores when cuBLAS takes the shape, else the SIMT kernels.
void w8a8_product(const std::int8_t* xq, const float* x_scales, std::int64_t m, const QuantizedTensor<cuda>& w, float* y,
                  const CudaQGemmOptions& options, std::string_view context) {
  const cuda_kernels::Int8Weights weights = int8_weights(w);
  const cuda_kernels::Epilogue epilogue = epilogue_of(options);
  if (w8a8_gemm_on_tensor_cores(xq, x_scales, m, weights, epilogue, y, context)) return finish(cudaSuccess, options.wait, context);
  finish(cuda_kernels::launch_w8a8_gemm(xq, x_scales, m, weights, epilogue, y), options.wait, context);
}

/// Quantizes x [m, k] per row into xq and scales; no checks (the callers made them).
template <class X>
void quantize_rows_unchecked(const Tensor<X, cuda>& x, std::int64_t m, std::int64_t k, Tensor<std::int8_t, cuda>& xq,
                             Tensor<float, cuda>& scales, bool wait, std::string_view context) {
  finish(cuda_kernels::launch_quantize_rows_int8(x.data(), is_f16_v<X>, m, k, xq.data(), scales.data()), wait, context);
}

/// x [m, k] (f32 or f16) times w into y, after the checks.
template <class X>
void product(const Tensor<X, cuda>& x, std::int64_t m, std::int64_t k, const QuantizedTensor<cuda>& w, Tensor<float, cuda>& y,
             const Shape& want_y, const CudaQGemmOptions& options, std::string_view context) {
  const Family family = check_product(m, k, w, want_y, y, options, context);
  if (y.empty()) return;
  check_device(x, "x", y.device(), context);
  const OnDevice on(y.device(), context);
  if (family == Family::w4a16) {
    finish(cuda_kernels::launch_w4a16_gemm(x.data(), is_f16_v<X>, m, int4_weights(w), epilogue_of(options), y.data()), options.wait, context);
    return;
  }
  auto xq = Tensor<std::int8_t, cuda>::uninitialized({m, k}, y.device());
  auto scales = Tensor<float, cuda>::uninitialized({m}, y.device());
  quantize_rows_unchecked(x, m, k, xq, scales, false, context);
  w8a8_product(xq.data(), scales.data(), m, w, y.data(), options, context);
}

/// "qgemm on cuda (x [3, 128] f16, w [300, 128] (int4 ...), y [3, 300])".
template <class X>
std::string context_of(std::string_view op, const Tensor<X, cuda>& x, const QuantizedTensor<cuda>& w, const Tensor<float, cuda>& y) {
  return fmt::format("{} on cuda (x {} {}, {}, y {})", op, x.shape(), dtype_name(dtype_of<X>), describe(w), y.shape());
}

template <class X>
void qgemv_impl(const Tensor<X, cuda>& x, const QuantizedTensor<cuda>& w, Tensor<float, cuda>& y, const CudaQGemmOptions& options) {
  const std::string context = context_of("qgemv", x, w, y);
  if (x.rank() == 1) return product(x, 1, x.shape()[0], w, y, Shape{w.rows()}, options, context);
  if (x.rank() == 2 && x.shape()[0] == 1) return product(x, 1, x.shape()[1], w, y, Shape{1, w.rows()}, options, context);
  fail(errc::shape_mismatch, context, fmt::format("x must be one vector, [K] or [1, K]; it is {} (use qgemm for [M, K])", x.shape()));
}

template <class X>
void qgemm_impl(const Tensor<X, cuda>& x, const QuantizedTensor<cuda>& w, Tensor<float, cuda>& y, const CudaQGemmOptions& options) {
  const std::string context = context_of("qgemm", x, w, y);
  if (x.rank() != 2) fail(errc::shape_mismatch, context, fmt::format("x must be a [M, K] matrix; it is {}", x.shape()));
  product(x, x.shape()[0], x.shape()[1], w, y, Shape{x.shape()[0], w.rows()}, options, context);
}

template <class X>
void quantize_rows_impl(const Tensor<X, cuda>& x, Tensor<std::int8_t, cuda>& xq, Tensor<float, cuda>& row_scales) {
  const std::string context = fmt::format("quantize_rows_int8 on cuda (x {} {})", x.shape(), dtype_name(dtype_of<X>));
  if (x.rank() != 1 && x.rank() != 2) fail(errc::shape_mismatch, context, fmt::format("x must be [K] or [M, K]; it is {}", x.shape()));
  const std::int64_t m = x.rank() == 1 ? 1 : x.shape()[0];
  const std::int64_t k = x.shape()[x.rank() - 1];
  if (xq.shape() != x.shape()) fail(errc::shape_mismatch, context, fmt::format("xq is {} but must be x's shape {}", xq.shape(), x.shape()));
  if (row_scales.shape() != Shape{m}) fail(errc::shape_mismatch, context, fmt::format("row_scales is {} but must be [{}]", row_scales.shape(), m));
  if (m > 0x7fffffff) fail(errc::out_of_range, context, fmt::format("M = {} rows; at most 2^31 - 1", m));
  if (row_scales.empty()) return;
  const int device = row_scales.device();
  check_device(x, "x", device, context);
  check_device(xq, "xq", device, context);
  const OnDevice on(device, context);
  quantize_rows_unchecked(x, m, k, xq, row_scales, true, context);
}

}  // namespace

status cuda_qgemm_supports(const QuantScheme& scheme) {
  QUARRY_RETURN_IF_ERROR(scheme.validate());
  if (is_w4a16(scheme) || is_w8a8(scheme)) return {};
  return {errc::invalid_argument,
          fmt::format("the CUDA quantized products do not take {} weights; they take int4 per_group (W4A16) and int8 symmetric "
                      "per_tensor or per_channel (W8A8) weights",
                      scheme.to_string())};
}

void qgemv(const Tensor<float, cuda>& x, const QuantizedTensor<cuda>& w, Tensor<float, cuda>& y, const CudaQGemmOptions& options) {
  qgemv_impl(x, w, y, options);
}
void qgemv(const Tensor<f16, cuda>& x, const QuantizedTensor<cuda>& w, Tensor<float, cuda>& y, const CudaQGemmOptions& options) {
  qgemv_impl(x, w, y, options);
}
void qgemm(const Tensor<float, cuda>& x, const QuantizedTensor<cuda>& w, Tensor<float, cuda>& y, const CudaQGemmOptions& options) {
  qgemm_impl(x, w, y, options);
}
void qgemm(const Tensor<f16, cuda>& x, const QuantizedTensor<cuda>& w, Tensor<float, cuda>& y, const CudaQGemmOptions& options) {
  qgemm_impl(x, w, y, options);
}

void qgemm(const Tensor<std::int8_t, cuda>& xq, const Tensor<float, cuda>& x_scales, const QuantizedTensor<cuda>& w,
           Tensor<float, cuda>& y, const CudaQGemmOptions& options) {
  const std::string context = context_of("qgemm", xq, w, y);
  if (!is_w8a8(w.scheme()))
    fail(errc::invalid_argument, context,
         fmt::format("int8 activations need int8 symmetric per_tensor or per_channel weights (W8A8), not {}", w.scheme().to_string()));
  if (xq.rank() != 2) fail(errc::shape_mismatch, context, fmt::format("xq must be a [M, K] matrix; it is {}", xq.shape()));
  const std::int64_t m = xq.shape()[0], k = xq.shape()[1];
  if (x_scales.shape() != Shape{m})
    fail(errc::shape_mismatch, context, fmt::format("x_scales is {} but must be [{}], one scale per row of xq", x_scales.shape(), m));
  check_product(m, k, w, Shape{m, w.rows()}, y, options, context);
  if (y.empty()) return;
  check_device(xq, "xq", y.device(), context);
  check_device(x_scales, "x_scales", y.device(), context);
  const OnDevice on(y.device(), context);
  w8a8_product(xq.data(), x_scales.data(), m, w, y.data(), options, context);
}

void quantize_rows_int8(const Tensor<float, cuda>& x, Tensor<std::int8_t, cuda>& xq, Tensor<float, cuda>& row_scales) {
  quantize_rows_impl(x, xq, row_scales);
}
void quantize_rows_int8(const Tensor<f16, cuda>& x, Tensor<std::int8_t, cuda>& xq, Tensor<float, cuda>& row_scales) {
  quantize_rows_impl(x, xq, row_scales);
}

}  // namespace quarry
