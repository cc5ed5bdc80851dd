// The emulator's cuBLAS (include/cublas_v2.h): handles, and the int8 GEMM with int32 sums, exact.
#include <cstdint>

#include "cublas_v2.h"
#include "quarry_simt.hpp"

struct cublasContext {
  cudaStream_t stream = nullptr;
};

cublasStatus_t cublasCreate(cublasHandle_t* handle) {
  *handle = new cublasContext;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy(cublasHandle_t handle) {
  delete handle;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream(cublasHandle_t handle, cudaStream_t stream) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  handle->stream = stream;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k, const void* alpha,
                            const void* A, cudaDataType Atype, int lda, const void* B, cudaDataType Btype, int ldb, const void* beta, void* C,
                            cudaDataType Ctype, int ldc, cublasComputeType_t computeType, cublasGemmAlgo_t) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (Atype != CUDA_R_8I || Btype != CUDA_R_8I || Ctype != CUDA_R_32I || computeType != CUBLAS_COMPUTE_32I) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (transa == CUBLAS_OP_C || transb == CUBLAS_OP_C) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (m < 0 || n < 0 || k < 0 || lda < (transa == CUBLAS_OP_N ? m : k) || ldb < (transb == CUBLAS_OP_N ? k : n) || ldc < m || lda < 1 || ldb < 1 ||
      ldc < 1)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (!quarry::simt::is_device_pointer(A) || !quarry::simt::is_device_pointer(B) || !quarry::simt::is_device_pointer(C))
    return CUBLAS_STATUS_INVALID_VALUE;
  const auto* a = static_cast<const std::int8_t*>(A);
  const auto* b = static_cast<const std::int8_t*>(B);
  auto* c = static_cast<std::int32_t*>(C);
  const std::int64_t al = *static_cast<const std::int32_t*>(alpha), be = *static_cast<const std::int32_t*>(beta);
  for (std::int64_t j = 0; j < n; ++j)
    for (std::int64_t i = 0; i < m; ++i) {
      std::int64_t s = 0;
      for (std::int64_t p = 0; p < k; ++p) {
        const std::int64_t x = transa == CUBLAS_OP_N ? a[i + p * lda] : a[p + i * lda];
        const std::int64_t y = transb == CUBLAS_OP_N ? b[p + j * ldb] : b[j + p * ldb];
        s += x * y;
      }
      std::int32_t& out = c[i + j * ldc];
      out = static_cast<std::int32_t>(al * s + (be != 0 ? be * out : 0));  // wraps as int32, as the device's
    }
  return CUBLAS_STATUS_SUCCESS;
}
