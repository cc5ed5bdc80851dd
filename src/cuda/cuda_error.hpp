// Host-side helpers of the CUDA component: CUDA errors as quarry::status, and a scoped switch
// of the current device. Private to src/cuda (host C++20; includes the CUDA runtime API).
#pragma once

#include <string>
#include <string_view>

#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include "quarry/core/status.hpp"

namespace quarry::detail {

/// "cudaErrorNoDevice (no CUDA-capable device is detected)".
inline std::string cuda_error_text(cudaError_t error) {
  return fmt::format("{} ({})", cudaGetErrorName(error), cudaGetErrorString(error));
}

/// The status of a failed CUDA call, "what: cudaErrorX (description)": out_of_memory for a
/// failed allocation, device_error otherwise. Also clears the runtime's last-error slot, so a
/// later launch check does not report this error again.
inline status cuda_failure(cudaError_t error, std::string_view what) {
  (void)cudaGetLastError();
  const errc code = error == cudaErrorMemoryAllocation ? errc::out_of_memory : errc::device_error;
  return status(code, fmt::format("{}: {}", what, cuda_error_text(error)));
}

/// Makes `device` the calling thread's current device for this scope and restores the
/// previous one on exit. Does nothing for device -1 or when `device` is already current.
class ScopedDevice {
 public:
  explicit ScopedDevice(int device) noexcept {
    if (device < 0) return;
    int current = -1;
    if (cudaGetDevice(&current) == cudaSuccess && current == device) return;
    error_ = cudaSetDevice(device);
    if (error_ == cudaSuccess && current >= 0) previous_ = current;
  }
  ScopedDevice(const ScopedDevice&) = delete;
  ScopedDevice& operator=(const ScopedDevice&) = delete;
  ~ScopedDevice() {
    if (previous_ >= 0) (void)cudaSetDevice(previous_);
  }
  /// The error of the switch (cudaSuccess when none was needed or it worked).
  cudaError_t error() const noexcept { return error_; }

 private:
  int previous_ = -1;
  cudaError_t error_ = cudaSuccess;
};

}  // namespace quarry::detail
