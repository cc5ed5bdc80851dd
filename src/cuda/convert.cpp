// f32 <-> f16 / bf16 conversion on the device (quarry/core/cuda_convert.hpp): checks, device
// selection and error reporting around the kernels of convert_kernels.cu.
#include <cstdint>
#include <string_view>

#include <fmt/format.h>

#include "convert_kernels.h"
#include "cuda_error.hpp"
#include "quarry/core/cuda_convert.hpp"

namespace quarry {

namespace detail {
namespace {

/// The status of a kernel launch, after waiting for the kernel to finish.
status finish_kernel(cudaError_t launch_error, std::string_view kernel, std::size_t n) {
  if (launch_error != cudaSuccess) return cuda_failure(launch_error, fmt::format("launching the {} kernel on {} elements", kernel, n));
  if (const cudaError_t e = cudaStreamSynchronize(nullptr); e != cudaSuccess)
    return cuda_failure(e, fmt::format("running the {} kernel on {} elements", kernel, n));
  return {};
}

// The kernels read and write integer bits (see convert_kernels.cu); f16, bf16 and float are
// reinterpreted as the unsigned integers of their width. Nothing dereferences these on the host.
const std::uint16_t* bits(const f16* p) noexcept { return reinterpret_cast<const std::uint16_t*>(p); }
const std::uint16_t* bits(const bf16* p) noexcept { return reinterpret_cast<const std::uint16_t*>(p); }
std::uint16_t* bits(f16* p) noexcept { return reinterpret_cast<std::uint16_t*>(p); }
std::uint16_t* bits(bf16* p) noexcept { return reinterpret_cast<std::uint16_t*>(p); }
const std::uint32_t* bits(const float* p) noexcept { return reinterpret_cast<const std::uint32_t*>(p); }
std::uint32_t* bits(float* p) noexcept { return reinterpret_cast<std::uint32_t*>(p); }

}  // namespace

status cuda_convert_f16_to_f32(const f16* src, float* dst, std::size_t n) {
  if (n == 0) return {};
  return finish_kernel(cuda_kernels::launch_f16_to_f32(bits(src), bits(dst), n), "f16 -> f32", n);
}
status cuda_convert_f32_to_f16(const float* src, f16* dst, std::size_t n) {
  if (n == 0) return {};
  return finish_kernel(cuda_kernels::launch_f32_to_f16(bits(src), bits(dst), n), "f32 -> f16", n);
}
status cuda_convert_bf16_to_f32(const bf16* src, float* dst, std::size_t n) {
  if (n == 0) return {};
  return finish_kernel(cuda_kernels::launch_bf16_to_f32(bits(src), bits(dst), n), "bf16 -> f32", n);
}
status cuda_convert_f32_to_bf16(const float* src, bf16* dst, std::size_t n) {
  if (n == 0) return {};
  return finish_kernel(cuda_kernels::launch_f32_to_bf16(bits(src), bits(dst), n), "f32 -> bf16", n);
}

}  // namespace detail

namespace {

/// Checks shapes and devices, then runs `kernel` on src's device; throws quarry::error.
template <class From, class To>
void convert_on_device(const Tensor<From, cuda>& src, Tensor<To, cuda>& dst,
                       status (*kernel)(const From*, To*, std::size_t)) {
  const auto from = dtype_name(dtype_of<From>);
  const auto to = dtype_name(dtype_of<To>);
  if (src.shape() != dst.shape())
    throw_error(errc::shape_mismatch, fmt::format("convert {} -> {} on cuda: source shape {} differs from destination shape {}", from, to, src.shape(), dst.shape()));
  if (src.numel() == 0) return;
  if (src.device() != dst.device())
    throw_error(errc::invalid_argument, fmt::format("convert {} -> {} on cuda (shape {}): source is on device {}, destination on device {}; copy one of them first",
                                                    from, to, src.shape(), src.device(), dst.device()));
  const detail::ScopedDevice on(src.device());
  if (on.error() != cudaSuccess)
    detail::throw_in_context(detail::cuda_failure(on.error(), fmt::format("cudaSetDevice({})", src.device())),
                             fmt::format("convert {} -> {} on cuda (shape {})", from, to, src.shape()));
  const status st = kernel(src.data(), dst.data(), static_cast<std::size_t>(src.numel()));
  if (!st.ok()) detail::throw_in_context(st, fmt::format("convert {} -> {} on cuda (shape {})", from, to, src.shape()));
}

}  // namespace

void convert(const Tensor<f16, cuda>& src, Tensor<float, cuda>& dst) { convert_on_device(src, dst, detail::cuda_convert_f16_to_f32); }
void convert(const Tensor<float, cuda>& src, Tensor<f16, cuda>& dst) { convert_on_device(src, dst, detail::cuda_convert_f32_to_f16); }
void convert(const Tensor<bf16, cuda>& src, Tensor<float, cuda>& dst) { convert_on_device(src, dst, detail::cuda_convert_bf16_to_f32); }
void convert(const Tensor<float, cuda>& src, Tensor<bf16, cuda>& dst) { convert_on_device(src, dst, detail::cuda_convert_f32_to_bf16); }

}  // namespace quarry
