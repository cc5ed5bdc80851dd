// A pool of cuBLAS handles per device, shared by the threads of the process (private to
// src/cuda). A handle is not safe to use from two threads at once and costs milliseconds to
// create, so a call borrows one for its duration (CublasLease) and gives it back; the pool grows
// to the number of threads that ever used cuBLAS at the same time on a device. Handles are never
// destroyed: at process exit the CUDA runtime may already be gone, and cuBLAS frees them with it.
#pragma once

#include <cublas_v2.h>

#include "quarry/core/status.hpp"

namespace quarry::detail {

/// A handle of the current device, borrowed from the pool until destruction; its stream is the
/// legacy default stream and its math mode cuBLAS's default.
class CublasLease {
 public:
  /// Borrows (or creates) a handle for the current device; check ok() before use.
  CublasLease() noexcept;
  CublasLease(const CublasLease&) = delete;
  CublasLease& operator=(const CublasLease&) = delete;
  ~CublasLease();
  /// False when no handle could be made (cublasCreate failed); status() says why.
  bool ok() const noexcept { return handle_ != nullptr; }
  cublasHandle_t get() const noexcept { return handle_; }
  const status& error() const noexcept { return error_; }

 private:
  int device_ = -1;
  cublasHandle_t handle_ = nullptr;
  status error_;
};

}  // namespace quarry::detail
