/* The GPU yardsticks of bench_cuda_qgemm (hbm_yardstick.cu): HBM read bandwidth measured by a
 * plain streaming-read kernel, cudaMemcpy device-to-device bandwidth, and a spin kernel that keeps
 * the device busy while the host queues the launches a timing loop measures.
 *
 * A plain C interface (the design rule for .cu files: only plain types cross this seam; no quarry
 * header is seen by the .cu). Everything runs on the legacy default stream of the calling
 * thread's current device; every function returns the first CUDA error it met (cudaSuccess when
 * none). Bandwidth is in GB/s = 1e9 bytes per second, as every bench/ figure counts it. */
#ifndef QUARRY_BENCH_CUDA_HBM_YARDSTICK_H
#define QUARRY_BENCH_CUDA_HBM_YARDSTICK_H

#include <stddef.h>

#include <driver_types.h> /* cudaError_t */

#ifdef __cplusplus
extern "C" {
#endif

/* What quarry_bench_hbm_measure measured. */
typedef struct quarry_bench_hbm_result {
  size_t read_bytes;       /* bytes one pass of the read kernel reads (the whole buffer, once) */
  double read_gbps;        /* best pass: read_bytes / seconds / 1e9 */
  double read_gbps_median; /* median pass */
  double read_ms;          /* best pass, milliseconds */
  size_t copy_bytes;       /* bytes one cudaMemcpy D2D copies (half the buffer onto the other half) */
  double copy_gbps;        /* best pass: 2 * copy_bytes / seconds / 1e9 (bytes read + bytes written) */
  double copy_ms;          /* best pass, milliseconds */
  int passes;              /* timed passes of each (after one untimed warm-up pass) */
  int blocks;              /* grid of the read kernel: SMs x resident blocks per SM */
  int threads_per_block;   /* 256 */
  unsigned long long checksum; /* the read kernel's dummy sum over the buffer (keeps the loads) */
} quarry_bench_hbm_result;

/* Allocates `bytes` (rounded down to a multiple of 64 KiB; at least 64 MiB) of device memory,
 * fills it once, then times `passes` passes (at least 1) of
 *  - a read kernel: 16-byte vector loads (uint4), grid-stride, four independent loads in flight
 *    per thread, summed into a dummy 64-bit output, the grid filling every SM;
 *  - cudaMemcpyAsync device-to-device of the first half of the buffer onto the second half,
 * each timed with cudaEvents, and frees the buffer. Pick `bytes` far larger than the L2 cache
 * (H100/H200: 50 MB; 2 GiB is 40x that) so every pass reads HBM. On error *out is left zeroed
 * apart from what was measured before the error. */
cudaError_t quarry_bench_hbm_measure(size_t bytes, int passes, quarry_bench_hbm_result* out);

/* Launches one single-thread kernel that spins on the device's global timer for `nanoseconds`
 * (at most 2 s) on the legacy default stream, and returns at once (the launch error). A timing
 * loop launches it first, so the device is still busy while the host queues the timed calls and
 * the calls then run back to back: what is timed is the device's work, not the host's. */
cudaError_t quarry_bench_spin(unsigned long long nanoseconds);

#ifdef __cplusplus
}
#endif

#endif /* QUARRY_BENCH_CUDA_HBM_YARDSTICK_H */
