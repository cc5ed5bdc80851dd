// f32 <-> f16 / bf16 conversion kernels. Values move as integer bits from load to store, so no
// float instruction can canonicalise a NaN payload; the arithmetic is the scalar reference itself
// (quarry/core/detail/float16_bits.hpp, plain C++17), so the results are bit-exact with the CPU.
#include "convert_kernels.h"

#include <cuda_runtime.h>

#include "launch.cuh"

#include "quarry/core/detail/float16_bits.hpp"

namespace quarry::cuda_kernels {
namespace {

constexpr unsigned kThreadsPerBlock = 256;
// A grid-stride loop covers any n; this many blocks is enough to fill an H100/H200 many times.
constexpr std::size_t kMaxBlocks = 65536;

// One functor per direction, so each kernel instantiation inlines its conversion.
struct F16ToF32 {
  __device__ std::uint32_t operator()(std::uint16_t h) const noexcept { return ::quarry::detail::f16_bits_to_f32_bits(h); }
};
struct F32ToF16 {
  __device__ std::uint16_t operator()(std::uint32_t x) const noexcept { return ::quarry::detail::f32_bits_to_f16_bits(x); }
};
struct Bf16ToF32 {
  __device__ std::uint32_t operator()(std::uint16_t b) const noexcept { return ::quarry::detail::bf16_bits_to_f32_bits(b); }
};
struct F32ToBf16 {
  __device__ std::uint16_t operator()(std::uint32_t x) const noexcept { return ::quarry::detail::f32_bits_to_bf16_bits(x); }
};

template <class Convert, class Src, class Dst>
__global__ void convert_kernel(const Src* __restrict__ src, Dst* __restrict__ dst, std::size_t n) {
  const Convert convert{};
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    dst[i] = convert(src[i]);
}

template <class Convert, class Src, class Dst>
cudaError_t launch(const Src* src, Dst* dst, std::size_t n) noexcept {
  if (n == 0) return cudaSuccess;
  (void)cudaGetLastError();  // so an earlier, unrelated error is not reported as this launch's
  std::size_t blocks = (n + kThreadsPerBlock - 1) / kThreadsPerBlock;
  if (blocks > kMaxBlocks) blocks = kMaxBlocks;
  QUARRY_LAUNCH(static_cast<unsigned>(blocks), kThreadsPerBlock, 0, convert_kernel<Convert, Src, Dst>)(src, dst, n);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_f16_to_f32(const std::uint16_t* src, std::uint32_t* dst, std::size_t n) noexcept {
  return launch<F16ToF32>(src, dst, n);
}
cudaError_t launch_f32_to_f16(const std::uint32_t* src, std::uint16_t* dst, std::size_t n) noexcept {
  return launch<F32ToF16>(src, dst, n);
}
cudaError_t launch_bf16_to_f32(const std::uint16_t* src, std::uint32_t* dst, std::size_t n) noexcept {
  return launch<Bf16ToF32>(src, dst, n);
}
cudaError_t launch_f32_to_bf16(const std::uint32_t* src, std::uint16_t* dst, std::size_t n) noexcept {
  return launch<F32ToBf16>(src, dst, n);
}

}  // namespace quarry::cuda_kernels
