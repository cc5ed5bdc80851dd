// The emulator's cuBLAS (include/cublas_v2.h): handles; the int8 GEMM with int32 sums, exact; the
// f16 GEMM with f32 output, each sum in double and rounded once.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "cublas_v2.h"
#include "quarry/core/float16.hpp"
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

cublasStatus_t cublasGetVersion(cublasHandle_t handle, int* version) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (version == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *version = 0;  // not a cuBLAS release: "cuBLAS 0.0.0"
  return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusName(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
    case CUBLAS_STATUS_MAPPING_ERROR: return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_LICENSE_ERROR: return "CUBLAS_STATUS_LICENSE_ERROR";
  }
  return "<unrecognized cuBLAS status>";
}

const char* cublasGetStatusString(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS: return "success";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "the operation is not supported (the SIMT emulator's cuBLAS has int8 and f16 cublasGemmEx only)";
    case CUBLAS_STATUS_INVALID_VALUE: return "an unsupported value or parameter was passed to the function";
    default: return cublasGetStatusName(status);
  }
}

namespace {

// Element (i, p) of op(A) for an m x k op(A), column-major with leading dimension lda.
template <class T>
T at(const T* a, cublasOperation_t op, std::int64_t i, std::int64_t p, std::int64_t lda) {
  return op == CUBLAS_OP_N ? a[i + p * lda] : a[p + i * lda];
}

float f16_value(std::uint16_t h) { return quarry::f16::from_bits(h); }

}  // namespace

cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k, const void* alpha,
                            const void* A, cudaDataType Atype, int lda, const void* B, cudaDataType Btype, int ldb, const void* beta, void* C,
                            cudaDataType Ctype, int ldc, cublasComputeType_t computeType, cublasGemmAlgo_t) {
  if (handle == nullptr) return CUBLAS_STATUS_NOT_INITIALIZED;
  const bool int8 = Atype == CUDA_R_8I && Btype == CUDA_R_8I && Ctype == CUDA_R_32I && computeType == CUBLAS_COMPUTE_32I;
  const bool f16 = Atype == CUDA_R_16F && Btype == CUDA_R_16F && Ctype == CUDA_R_32F && computeType == CUBLAS_COMPUTE_32F;
  if (!int8 && !f16) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (transa == CUBLAS_OP_C || transb == CUBLAS_OP_C) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (m < 0 || n < 0 || k < 0 || lda < (transa == CUBLAS_OP_N ? m : k) || ldb < (transb == CUBLAS_OP_N ? k : n) || ldc < m || lda < 1 || ldb < 1 ||
      ldc < 1)
    return CUBLAS_STATUS_INVALID_VALUE;
  if (!quarry::simt::is_device_pointer(A) || !quarry::simt::is_device_pointer(B) || !quarry::simt::is_device_pointer(C))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (int8) {
    const auto* a = static_cast<const std::int8_t*>(A);
    const auto* b = static_cast<const std::int8_t*>(B);
    auto* c = static_cast<std::int32_t*>(C);
    const std::int64_t al = *static_cast<const std::int32_t*>(alpha), be = *static_cast<const std::int32_t*>(beta);
    for (std::int64_t j = 0; j < n; ++j)
      for (std::int64_t i = 0; i < m; ++i) {
        std::int64_t s = 0;
        for (std::int64_t p = 0; p < k; ++p)
          s += static_cast<std::int64_t>(at(a, transa, i, p, lda)) * at(b, transb, p, j, ldb);
        std::int32_t& out = c[i + j * ldc];
        out = static_cast<std::int32_t>(al * s + (be != 0 ? be * out : 0));  // wraps as int32, as the device's
      }
    return CUBLAS_STATUS_SUCCESS;
  }
  // op(A) as rows of k floats and op(B) as columns of k floats, converted once.
  const auto* a = static_cast<const std::uint16_t*>(A);
  const auto* b = static_cast<const std::uint16_t*>(B);
  std::vector<float> rows(static_cast<std::size_t>(m) * static_cast<std::size_t>(k)), cols(static_cast<std::size_t>(n) * static_cast<std::size_t>(k));
  for (std::int64_t i = 0; i < m; ++i)
    for (std::int64_t p = 0; p < k; ++p) rows[static_cast<std::size_t>(i * k + p)] = f16_value(at(a, transa, i, p, lda));
  for (std::int64_t j = 0; j < n; ++j)
    for (std::int64_t p = 0; p < k; ++p) cols[static_cast<std::size_t>(j * k + p)] = f16_value(at(b, transb, p, j, ldb));
  auto* c = static_cast<float*>(C);
  const double al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  for (std::int64_t j = 0; j < n; ++j)
    for (std::int64_t i = 0; i < m; ++i) {
      const float* x = rows.data() + i * k;
      const float* y = cols.data() + j * k;
      double s = 0;
      for (std::int64_t p = 0; p < k; ++p) s += static_cast<double>(x[p]) * y[p];
      float& out = c[i + j * ldc];
      out = static_cast<float>(al * s + (be != 0 ? be * out : 0.0));  // beta 0: C is not read (it may hold NaN)
    }
  return CUBLAS_STATUS_SUCCESS;
}
