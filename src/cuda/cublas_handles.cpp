#include "cublas_handles.hpp"

#include <mutex>
#include <vector>

#include <cuda_runtime_api.h>
#include <fmt/format.h>

namespace quarry::detail {

namespace {

struct Pool {
  std::mutex mutex;
  std::vector<std::vector<cublasHandle_t>> free_by_device;  // index: device ordinal
};

Pool& pool() {
  static Pool* p = new Pool;  // never destroyed: see cublas_handles.hpp
  return *p;
}

}  // namespace

CublasLease::CublasLease() noexcept {
  if (const cudaError_t e = cudaGetDevice(&device_); e != cudaSuccess) {
    (void)cudaGetLastError();
    error_ = status(errc::device_error, fmt::format("cudaGetDevice: {}", cudaGetErrorName(e)));
    device_ = -1;
    return;
  }
  {
    Pool& p = pool();
    const std::lock_guard<std::mutex> lock(p.mutex);
    if (static_cast<std::size_t>(device_) < p.free_by_device.size() && !p.free_by_device[device_].empty()) {
      handle_ = p.free_by_device[device_].back();
      p.free_by_device[device_].pop_back();
      return;
    }
  }
  if (const cublasStatus_t s = cublasCreate(&handle_); s != CUBLAS_STATUS_SUCCESS) {
    handle_ = nullptr;
    error_ = status(s == CUBLAS_STATUS_ALLOC_FAILED ? errc::out_of_memory : errc::device_error,
                    fmt::format("cublasCreate on device {}: {}", device_, cublasGetStatusName(s)));
  }
}

CublasLease::~CublasLease() {
  if (handle_ == nullptr) return;
  Pool& p = pool();
  const std::lock_guard<std::mutex> lock(p.mutex);
  if (p.free_by_device.size() <= static_cast<std::size_t>(device_)) p.free_by_device.resize(static_cast<std::size_t>(device_) + 1);
  p.free_by_device[device_].push_back(handle_);
}

}  // namespace quarry::detail
