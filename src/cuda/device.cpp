// The device probe and device information (quarry/core/cuda_device.hpp).
#include <fmt/format.h>

#include "cuda_error.hpp"
#include "quarry/core/cuda_device.hpp"

namespace quarry {

int cuda_device_count() noexcept {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return count > 0 ? count : 0;
}

result<CudaDeviceInfo> cuda_device_info(int ordinal) {
  int count = 0;
  if (const cudaError_t e = cudaGetDeviceCount(&count); e != cudaSuccess)
    return detail::cuda_failure(e, fmt::format("cuda_device_info({}): cudaGetDeviceCount", ordinal));
  if (ordinal < 0 || ordinal >= count)
    return status(errc::out_of_range, fmt::format("cuda_device_info({}): no such device; this machine has {} CUDA device(s)", ordinal, count));
  cudaDeviceProp prop{};
  if (const cudaError_t e = cudaGetDeviceProperties(&prop, ordinal); e != cudaSuccess)
    return detail::cuda_failure(e, fmt::format("cuda_device_info({}): cudaGetDeviceProperties", ordinal));
  CudaDeviceInfo info;
  info.ordinal = ordinal;
  info.name = prop.name;
  info.compute_capability_major = prop.major;
  info.compute_capability_minor = prop.minor;
  info.sm_count = prop.multiProcessorCount;
  info.total_memory_bytes = prop.totalGlobalMem;
  if (cudaRuntimeGetVersion(&info.runtime_version) != cudaSuccess) info.runtime_version = 0;
  if (cudaDriverGetVersion(&info.driver_version) != cudaSuccess) info.driver_version = 0;
  (void)cudaGetLastError();
  return info;
}

int cuda_current_device() noexcept {
  int device = -1;
  if (cudaGetDevice(&device) != cudaSuccess) {
    (void)cudaGetLastError();
    return -1;
  }
  return device;
}

status cuda_set_current_device(int ordinal) {
  if (const cudaError_t e = cudaSetDevice(ordinal); e != cudaSuccess)
    return detail::cuda_failure(e, fmt::format("cuda_set_current_device({})", ordinal));
  return {};
}

}  // namespace quarry
