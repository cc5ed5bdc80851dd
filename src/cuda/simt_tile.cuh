// The inner step of quarry's shared-memory SIMT GEMM tiles (src/cuda; CUDA C++17), shared by the
// IVF-PQ coarse distances (ivf_pq_kernels.cu) and the W4A32 GEMM (quant_kernels.cu): 256 threads
// as 16 x 16, each accumulating a 4 x 4 block of a 64 x 64 output tile (rows ty + 16 i, columns
// tx + 16 j) from two operand tiles staged k-major in shared memory, a[k][row] and b[k][col].
#pragma once

namespace quarry::cuda_kernels {

/// acc[i][j] += sum_{k < kK} a[k][ty + 16 i] * b[k][tx + 16 j], in k order (fmaf each step).
template <int kK, int kStride>
__device__ __forceinline__ void simt_tile_4x4(const float (&a)[kK][kStride], const float (&b)[kK][kStride], int ty, int tx,
                                              float (&acc)[4][4]) {
#pragma unroll 8
  for (int k = 0; k < kK; ++k) {
    float av[4], bv[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) av[i] = a[k][ty + 16 * i];
#pragma unroll
    for (int j = 0; j < 4; ++j) bv[j] = b[k][tx + 16 * j];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
  }
}

}  // namespace quarry::cuda_kernels
