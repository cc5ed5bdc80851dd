// The launch functions of the element-conversion kernels (convert_kernels.cu).
//
// The seam between CUDA C++17 and quarry's C++20: only plain pointers and sizes cross it, and
// each function returns the CUDA error of its launch (cudaSuccess when n == 0: nothing is
// launched). Kernels run on the legacy default stream of the current device; the caller
// synchronises and turns errors into quarry::status (convert.cpp). Pointers are device pointers.
#pragma once

#include <cstddef>
#include <cstdint>

#include <driver_types.h>  // cudaError_t

namespace quarry::cuda_kernels {

/// dst[i] = f32 bits of the binary16 src[i], exact.
cudaError_t launch_f16_to_f32(const std::uint16_t* src, std::uint32_t* dst, std::size_t n) noexcept;
/// dst[i] = binary16 bits of the f32 bits src[i], round to nearest even (quarry/core/detail/float16_bits.hpp).
cudaError_t launch_f32_to_f16(const std::uint32_t* src, std::uint16_t* dst, std::size_t n) noexcept;
/// dst[i] = f32 bits of the bfloat16 src[i], exact.
cudaError_t launch_bf16_to_f32(const std::uint16_t* src, std::uint32_t* dst, std::size_t n) noexcept;
/// dst[i] = bfloat16 bits of the f32 bits src[i], round to nearest even (quarry/core/detail/float16_bits.hpp).
cudaError_t launch_f32_to_bf16(const std::uint32_t* src, std::uint16_t* dst, std::size_t n) noexcept;

}  // namespace quarry::cuda_kernels
