// Device memory: allocation, release, copies and zeroing (quarry/core/cuda_tensor.hpp).
// Everything runs on the legacy default stream, in order; copies to the host return when the
// data has arrived.
#include <fmt/format.h>

#include "cuda_error.hpp"
#include "quarry/core/cuda_tensor.hpp"

namespace quarry::detail {

result<DeviceBuffer> DeviceBuffer::allocate(std::size_t bytes, int device) {
  if (bytes == 0) return DeviceBuffer{};
  if (device < 0) {
    if (const cudaError_t e = cudaGetDevice(&device); e != cudaSuccess)
      return cuda_failure(e, fmt::format("allocating {} bytes of device memory: cudaGetDevice", bytes));
  }
  const ScopedDevice on(device);
  if (on.error() != cudaSuccess)
    return cuda_failure(on.error(), fmt::format("allocating {} bytes on device {}: cudaSetDevice", bytes, device));
  void* data = nullptr;
  if (const cudaError_t e = cudaMalloc(&data, bytes); e != cudaSuccess)
    return cuda_failure(e, fmt::format("cudaMalloc of {} bytes on device {}", bytes, device));
  return DeviceBuffer(data, bytes, device);
}

void DeviceBuffer::release() noexcept {
  if (data_ == nullptr) return;
  {
    const ScopedDevice on(device_);
    (void)cudaFree(data_);
  }
  (void)cudaGetLastError();
  data_ = nullptr;
  size_ = 0;
  device_ = -1;
}

namespace {

status copy_on(int device, void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind, const char* direction) {
  if (bytes == 0) return {};
  const ScopedDevice on(device);
  if (on.error() != cudaSuccess)
    return cuda_failure(on.error(), fmt::format("cudaMemcpy {} of {} bytes: cudaSetDevice({})", direction, bytes, device));
  if (const cudaError_t e = cudaMemcpy(dst, src, bytes, kind); e != cudaSuccess)
    return cuda_failure(e, fmt::format("cudaMemcpy {} of {} bytes on device {}", direction, bytes, device));
  return {};
}

}  // namespace

status cuda_copy_host_to_device(void* dst_device, const void* src_host, std::size_t bytes, int device) {
  return copy_on(device, dst_device, src_host, bytes, cudaMemcpyHostToDevice, "host -> device");
}

status cuda_copy_device_to_host(void* dst_host, const void* src_device, std::size_t bytes, int device) {
  return copy_on(device, dst_host, src_device, bytes, cudaMemcpyDeviceToHost, "device -> host");
}

status cuda_copy_device_to_device(void* dst, int dst_device, const void* src, int src_device, std::size_t bytes) {
  if (bytes == 0) return {};
  if (dst_device == src_device) return copy_on(dst_device, dst, src, bytes, cudaMemcpyDeviceToDevice, "device -> device");
  // Between devices; cudaMemcpyPeer returns before the copy ends, so wait for it here.
  if (const cudaError_t e = cudaMemcpyPeer(dst, dst_device, src, src_device, bytes); e != cudaSuccess)
    return cuda_failure(e, fmt::format("cudaMemcpyPeer of {} bytes from device {} to device {}", bytes, src_device, dst_device));
  const ScopedDevice on(dst_device);
  cudaError_t e = on.error();
  if (e == cudaSuccess) e = cudaDeviceSynchronize();
  if (e != cudaSuccess)
    return cuda_failure(e, fmt::format("waiting for a copy of {} bytes from device {} to device {}", bytes, src_device, dst_device));
  return {};
}

status cuda_zero(void* dst_device, std::size_t bytes, int device) {
  if (bytes == 0) return {};
  const ScopedDevice on(device);
  if (on.error() != cudaSuccess)
    return cuda_failure(on.error(), fmt::format("cudaMemset of {} bytes: cudaSetDevice({})", bytes, device));
  if (const cudaError_t e = cudaMemset(dst_device, 0, bytes); e != cudaSuccess)
    return cuda_failure(e, fmt::format("cudaMemset of {} bytes on device {}", bytes, device));
  return {};
}

}  // namespace quarry::detail
