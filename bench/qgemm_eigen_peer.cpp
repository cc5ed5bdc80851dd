// The peer of bench_qgemv's prefill rows: Eigen's f32 GEMM, compiled in this file alone with the
// avx512 level's flags (bench/CMakeLists.txt) so Eigen uses its AVX-512 kernels; the benchmark
// calls it only on a CPU that runs that level. Nothing else in the benchmark instantiates Eigen's
// products, so no out-of-line copy of them can be shared with code built for another ISA.
#include <Eigen/Core>

namespace quarry::bench {

/// y[:, n0:n1] = x[M, K] . w[n0:n1, K]^T, row-major f32, with Eigen's GEMM on the calling thread.
void eigen_gemm_columns(const float* x, const float* w, float* y, long m, long n, long k, long n0, long n1) {
  using Mat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  const Eigen::Map<const Mat> xm(x, m, k);
  const Eigen::Map<const Mat> wm(w + n0 * k, n1 - n0, k);
  Eigen::Map<Mat, 0, Eigen::OuterStride<>> ym(y + n0, m, n1 - n0, Eigen::OuterStride<>(n));
  ym.noalias() = xm * wm.transpose();
}

}  // namespace quarry::bench
