// Quantized matrix products on the GPU: W4A16 (int4 group-wise weights, f16 or f32
// activations, float accumulation) and W8A8 (int8 weights, int8 activations quantized per row on
// the device, int32 accumulation with __dp4a). See quant_kernels.h for the contracts.
//
// GEMV (m == 1, the decode case) is memory-bound: each warp owns a few output rows and streams
// them along K with one 16-byte load per lane per row and step, coalesced, reusing the lane's
// activations for all of its rows. GEMM (m > 1) uses a plain shared-memory tiled SIMT kernel:
// correct for every shape, but far from tensor-core speed (see quarry/quant/cuda_qgemm.hpp).
#include "quant_kernels.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace quarry::cuda_kernels {
namespace {

constexpr int kWarp = 32;

// --- small device helpers --------------------------------------------------------------------

__device__ __forceinline__ float f16_bits_to_float(std::uint16_t h) { return __half2float(__ushort_as_half(h)); }

__device__ __forceinline__ float load_scale(const void* scales, bool f16, std::int64_t i) {
  return f16 ? f16_bits_to_float(static_cast<const std::uint16_t*>(scales)[i]) : static_cast<const float*>(scales)[i];
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}
__device__ __forceinline__ int warp_sum(int v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// output_scale * acc (+ bias[n]), rounded step by step (no FMA contraction), so the result does
// not depend on the compiler's choices.
__device__ __forceinline__ float apply_epilogue(float acc, const Epilogue& e, std::int64_t n) {
  float v = __fmul_rn(acc, e.output_scale);
  if (e.bias != nullptr) v = __fadd_rn(v, e.bias[n]);
  return v;
}

// Eight consecutive activations as floats, from f16 bits or f32.
template <bool kXF16>
__device__ __forceinline__ void load_x8(const void* x, std::int64_t col, float* out) {
  if constexpr (kXF16) {
    const uint4 raw = *reinterpret_cast<const uint4*>(static_cast<const std::uint16_t*>(x) + col);
    const unsigned words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&words[i]));
      out[2 * i] = f.x;
      out[2 * i + 1] = f.y;
    }
  } else {
    const float4 a = *reinterpret_cast<const float4*>(static_cast<const float*>(x) + col);
    const float4 b = *reinterpret_cast<const float4*>(static_cast<const float*>(x) + col + 4);
    out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w;
    out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
  }
}

__device__ __forceinline__ __half2 bits_as_half2(unsigned u) { return *reinterpret_cast<const __half2*>(&u); }

// sum_{i<8} (q_i - z) * x[i] for the eight nibbles of `word` (column 8j + i is nibble i: byte b
// holds columns 2b (low) and 2b+1 (high)). The nibbles become f16 without any int -> float
// conversion: OR-ing a nibble into the mantissa of 1024.0 (0x6400, ulp 1) gives 1024 + q, and a
// nibble sitting 4 bits higher in the mantissa of 64.0 (0x5400, ulp 1/16) gives 64 + q; one LOP3
// makes two of them at once (the fast int4 -> f16 trick of FasterTransformer / "Who Says Elephants
// Can't Run"). Subtracting 1024 + z (or 64 + z) in f16 is exact, so every (q - z) is exact, and
// the products and the sum are in f32. `zlo` is (1024 + z) twice, `zhi` (64 + z) twice.
__device__ __forceinline__ float dot8_nibbles(unsigned word, __half2 zlo, __half2 zhi, const float* x) {
  const unsigned shifted = word >> 8;
  const float2 d0 = __half22float2(__hsub2(bits_as_half2((word & 0x000f000fu) | 0x64006400u), zlo));     // cols 0, 4
  const float2 d1 = __half22float2(__hsub2(bits_as_half2((word & 0x00f000f0u) | 0x54005400u), zhi));     // cols 1, 5
  const float2 d2 = __half22float2(__hsub2(bits_as_half2((shifted & 0x000f000fu) | 0x64006400u), zlo));  // cols 2, 6
  const float2 d3 = __half22float2(__hsub2(bits_as_half2((shifted & 0x00f000f0u) | 0x54005400u), zhi));  // cols 3, 7
  float s = d0.x * x[0];
  s = fmaf(d1.x, x[1], s);
  s = fmaf(d2.x, x[2], s);
  s = fmaf(d3.x, x[3], s);
  s = fmaf(d0.y, x[4], s);
  s = fmaf(d1.y, x[5], s);
  s = fmaf(d2.y, x[6], s);
  s = fmaf(d3.y, x[7], s);
  return s;
}

// (1024 + z, 1024 + z) and (64 + z, 64 + z) in f16: exact for every zero point 0..255, and so
// is the difference (q + 1024) - (z + 1024) = q - z.
__device__ __forceinline__ __half2 zero_point_1024(int z) { return __half2half2(__int2half_rn(1024 + z)); }
__device__ __forceinline__ __half2 zero_point_64(int z) { return __half2half2(__int2half_rn(64 + z)); }

// --- W4A16 GEMV ---------------------------------------------------------------------------------

constexpr int kGemvWarps = 4;  // warps per block

// y[row] for kRows rows per warp. A lane handles 16-byte chunks lane, lane + 32, ... of each row:
// 32 columns, which lie in one group (groups are 32, 64 or 128 columns, chunks start at multiples
// of 32). The lane's 32 activations are loaded once per chunk and used for all kRows rows.
template <int kRows, bool kXF16>
__global__ void __launch_bounds__(kGemvWarps * kWarp)
    w4a16_gemv_kernel(const void* __restrict__ x, Int4GroupedWeights w, Epilogue e, float* __restrict__ y) {
  const int lane = threadIdx.x % kWarp;
  const std::int64_t row0 = (static_cast<std::int64_t>(blockIdx.x) * kGemvWarps + threadIdx.x / kWarp) * kRows;
  if (row0 >= w.n) return;
  const std::int64_t row_bytes = w.k / 2;
  const std::int64_t chunks = w.k / 32;
  const std::int64_t groups = w.k / w.group_size;
  const int chunk_shift = w.group_size == 32 ? 0 : (w.group_size == 64 ? 1 : 2);  // chunk -> group

  // Rows past the end re-read the last row (always valid) and are not written.
  std::int64_t rows[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) rows[r] = row0 + r < w.n ? row0 + r : w.n - 1;

  float acc[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) acc[r] = 0.f;

  for (std::int64_t c = lane; c < chunks; c += kWarp) {
    // Weights first: they come from HBM, the activations from L1/L2. Streaming loads (__ldcs):
    // each weight byte is read once, so keep it from evicting the activations.
    uint4 q[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) q[r] = __ldcs(reinterpret_cast<const uint4*>(w.values + rows[r] * row_bytes) + c);
    float xs[32];
#pragma unroll
    for (int i = 0; i < 4; ++i) load_x8<kXF16>(x, c * 32 + 8 * i, xs + 8 * i);
    const std::int64_t g = c >> chunk_shift;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const std::int64_t si = rows[r] * groups + g;
      const float s = load_scale(w.scales, w.scales_f16, si);
      // Symmetric nibbles are int4: q = (nibble ^ 8) - 8, i.e. flip bit 3 and use z = 8.
      const int z = w.symmetric ? 8 : w.zeros[si];
      const unsigned flip = w.symmetric ? 0x88888888u : 0u;
      const __half2 zlo = zero_point_1024(z), zhi = zero_point_64(z);
      float part = dot8_nibbles(q[r].x ^ flip, zlo, zhi, xs);
      part += dot8_nibbles(q[r].y ^ flip, zlo, zhi, xs + 8);
      part += dot8_nibbles(q[r].z ^ flip, zlo, zhi, xs + 16);
      part += dot8_nibbles(q[r].w ^ flip, zlo, zhi, xs + 24);
      acc[r] = fmaf(part, s, acc[r]);
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const float total = warp_sum(acc[r]);
    if (lane == 0 && row0 + r < w.n) y[row0 + r] = apply_epilogue(total, e, row0 + r);
  }
}

// --- W4A16 tiled GEMM ---------------------------------------------------------------------------

constexpr int kTileM = 64, kTileN = 64, kTileK = 32;  // kTileK divides every group size
constexpr int kGemmThreads = 256;                     // 16 x 16 threads, 4 x 4 outputs each

// Block (bx, by) computes y[by*64 .. +64, bx*64 .. +64]. Per K tile it stages 64 x 32
// activations and 64 x 32 dequantized weights ((q - z) * s, as quarry::dequantize rounds them)
// in shared memory as f32, then each thread accumulates its 4 x 4 outputs (rows ty + 16i,
// columns tx + 16j) in f32.
template <bool kXF16>
__global__ void __launch_bounds__(kGemmThreads)
    w4a16_gemm_kernel(const void* __restrict__ x, std::int64_t m, Int4GroupedWeights w, Epilogue e, float* __restrict__ y) {
  __shared__ float xs[kTileK][kTileM + 4];
  __shared__ float ws[kTileK][kTileN + 4];
  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  const std::int64_t m0 = static_cast<std::int64_t>(blockIdx.y) * kTileM;
  const std::int64_t n0 = static_cast<std::int64_t>(blockIdx.x) * kTileN;
  const std::int64_t row_bytes = w.k / 2;
  const std::int64_t groups = w.k / w.group_size;

  float acc[4][4] = {};
  for (std::int64_t k0 = 0; k0 < w.k; k0 += kTileK) {
    // Activations: 64 x 32, eight per thread; rows past m are zero.
#pragma unroll
    for (int i = 0; i < kTileM * kTileK / kGemmThreads; ++i) {
      const int e_idx = tid + i * kGemmThreads;
      const int r = e_idx / kTileK, c = e_idx % kTileK;
      float v = 0.f;
      if (m0 + r < m) {
        const std::int64_t at = (m0 + r) * w.k + k0 + c;
        v = kXF16 ? f16_bits_to_float(static_cast<const std::uint16_t*>(x)[at]) : static_cast<const float*>(x)[at];
      }
      xs[c][r] = v;
    }
    // Weights: 64 rows x 16 bytes; thread -> (row tid / 4, 4 bytes = 8 columns); rows past n are zero.
    {
      const int r = tid / 4, word = tid % 4;
      float dq[8] = {};
      if (n0 + r < w.n) {
        const std::int64_t row = n0 + r;
        const unsigned bits = *reinterpret_cast<const unsigned*>(w.values + row * row_bytes + k0 / 2 + 4 * word);
        const std::int64_t si = row * groups + k0 / w.group_size;
        const float s = load_scale(w.scales, w.scales_f16, si);
        const int z = w.symmetric ? 0 : w.zeros[si];
#pragma unroll
        for (int i = 0; i < 8; ++i) {
          const int nib = static_cast<int>((bits >> (4 * i)) & 0xfu);
          const int q = w.symmetric ? (nib ^ 8) - 8 : nib;
          dq[i] = __fmul_rn(static_cast<float>(q - z), s);
        }
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) ws[8 * word + i][r] = dq[i];
    }
    __syncthreads();
#pragma unroll 8
    for (int kk = 0; kk < kTileK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = xs[kk][ty + 16 * i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = ws[kk][tx + 16 * j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const std::int64_t row = m0 + ty + 16 * i;
    if (row >= m) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const std::int64_t col = n0 + tx + 16 * j;
      if (col < w.n) y[row * w.n + col] = apply_epilogue(acc[i][j], e, col);
    }
  }
}

// --- per-row int8 quantization ------------------------------------------------------------------

constexpr int kQuantizeThreads = 256;

template <bool kXF16>
__device__ __forceinline__ float load_x(const void* x, std::int64_t i) {
  if constexpr (kXF16) return f16_bits_to_float(static_cast<const std::uint16_t*>(x)[i]);
  else return static_cast<const float*>(x)[i];
}

// One block per row: amax (and whether anything is not finite) by a block reduction, then the
// integers. The arithmetic is that of the CPU reference (src/cpu/kernels/quant.hpp): inv = 127 /
// amax, scale = amax / 127, q = clamp(round_half_even(x * inv), -127, 127), all IEEE f32 (__fdiv_rn,
// __fmul_rn, rintf), so the integers agree with the host bit for bit.
template <bool kXF16>
__global__ void __launch_bounds__(kQuantizeThreads)
    quantize_rows_int8_kernel(const void* __restrict__ x, std::int64_t k, std::int8_t* __restrict__ xq, float* __restrict__ row_scales) {
  __shared__ float warp_amax[kQuantizeThreads / kWarp];
  __shared__ int warp_bad[kQuantizeThreads / kWarp];
  __shared__ float inv_shared;
  const std::int64_t base = static_cast<std::int64_t>(blockIdx.x) * k;
  float amax = 0.f;
  int bad = 0;
  for (std::int64_t i = threadIdx.x; i < k; i += blockDim.x) {
    const float v = load_x<kXF16>(x, base + i);
    bad |= !isfinite(v);
    amax = fmaxf(amax, fabsf(v));
  }
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, offset));
    bad |= __shfl_xor_sync(0xffffffffu, bad, offset);
  }
  if (threadIdx.x % kWarp == 0) {
    warp_amax[threadIdx.x / kWarp] = amax;
    warp_bad[threadIdx.x / kWarp] = bad;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float a = 0.f;
    int b = 0;
    for (int i = 0; i < kQuantizeThreads / kWarp; ++i) {
      a = fmaxf(a, warp_amax[i]);
      b |= warp_bad[i];
    }
    float scale, inv;
    if (b) {  // a NaN or an infinity in the row: the whole output row becomes NaN
      scale = __int_as_float(0x7fc00000);
      inv = 0.f;
    } else {
      inv = __fdiv_rn(127.f, a);
      if (!(inv <= 3.402823466e38f)) {  // amax == 0, or so small that 127 / amax overflows
        scale = 0.f;
        inv = 0.f;
      } else {
        scale = __fdiv_rn(a, 127.f);
      }
    }
    inv_shared = inv;
    row_scales[blockIdx.x] = scale;
  }
  __syncthreads();
  const float inv = inv_shared;
  for (std::int64_t i = threadIdx.x; i < k; i += blockDim.x) {
    int q = 0;
    if (inv != 0.f) q = static_cast<int>(fminf(fmaxf(rintf(__fmul_rn(load_x<kXF16>(x, base + i), inv)), -127.f), 127.f));
    xq[base + i] = static_cast<std::int8_t>(q);
  }
}

// --- W8A8 ---------------------------------------------------------------------------------------

// fma(float(acc), (x_scale * output_scale) * w_scale, bias[n] or 0): the CPU reference's
// epilogue (src/cpu/kernels/quant.hpp store_output), operation for operation, so y agrees bit
// for bit with quarry::qgemm on the host.
__device__ __forceinline__ float w8a8_output(int acc, float x_scale, const Int8Weights& w, const Epilogue& e, std::int64_t n) {
  const float ws = load_scale(w.scales, w.scales_f16, w.per_channel ? n : 0);
  const float scale = __fmul_rn(__fmul_rn(x_scale, e.output_scale), ws);
  return __fmaf_rn(__int2float_rn(acc), scale, e.bias != nullptr ? e.bias[n] : 0.f);
}

// GEMV: kRows rows per warp. When k is a multiple of 16 every row starts 16-byte aligned and a
// lane takes 16-byte chunks (four __dp4a); otherwise it takes single bytes (correct, slower).
template <int kRows, bool kAligned16>
__global__ void __launch_bounds__(kGemvWarps * kWarp)
    w8a8_gemv_kernel(const std::int8_t* __restrict__ xq, const float* __restrict__ x_scales, Int8Weights w, Epilogue e,
                     float* __restrict__ y) {
  const int lane = threadIdx.x % kWarp;
  const std::int64_t row0 = (static_cast<std::int64_t>(blockIdx.x) * kGemvWarps + threadIdx.x / kWarp) * kRows;
  if (row0 >= w.n) return;
  std::int64_t rows[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) rows[r] = row0 + r < w.n ? row0 + r : w.n - 1;
  int acc[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) acc[r] = 0;

  if constexpr (kAligned16) {
    const std::int64_t chunks = w.k / 16;
    for (std::int64_t c = lane; c < chunks; c += kWarp) {
      int4 q[kRows];
#pragma unroll
      for (int r = 0; r < kRows; ++r) q[r] = __ldcs(reinterpret_cast<const int4*>(w.values + rows[r] * w.k) + c);
      const int4 a = *(reinterpret_cast<const int4*>(xq) + c);
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        acc[r] = __dp4a(q[r].x, a.x, acc[r]);
        acc[r] = __dp4a(q[r].y, a.y, acc[r]);
        acc[r] = __dp4a(q[r].z, a.z, acc[r]);
        acc[r] = __dp4a(q[r].w, a.w, acc[r]);
      }
    }
  } else {
    for (std::int64_t i = lane; i < w.k; i += kWarp) {
      const int a = xq[i];
#pragma unroll
      for (int r = 0; r < kRows; ++r) acc[r] += a * static_cast<int>(w.values[rows[r] * w.k + i]);
    }
  }
  const float x_scale = x_scales[0];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int total = warp_sum(acc[r]);
    if (lane == 0 && row0 + r < w.n) y[row0 + r] = w8a8_output(total, x_scale, w, e, row0 + r);
  }
}

constexpr int kTileKBytes = 32;  // int8 K tile: 8 words of four int8

// Tiled int8 GEMM: per K tile, 64 x 32 int8 activations and weights are staged in shared memory
// as 32-bit words (zero past m, n and k); each thread accumulates its 4 x 4 outputs with __dp4a.
template <bool kAligned4>
__global__ void __launch_bounds__(kGemmThreads)
    w8a8_gemm_kernel(const std::int8_t* __restrict__ xq, const float* __restrict__ x_scales, std::int64_t m, Int8Weights w,
                     Epilogue e, float* __restrict__ y) {
  constexpr int kWords = kTileKBytes / 4;
  __shared__ int xs[kTileM][kWords + 1];
  __shared__ int ws[kTileN][kWords + 1];
  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  const std::int64_t m0 = static_cast<std::int64_t>(blockIdx.y) * kTileM;
  const std::int64_t n0 = static_cast<std::int64_t>(blockIdx.x) * kTileN;

  // Four int8 at (row, col..col+3) of a [rows, k] matrix, zero past its end.
  auto word_at = [&](const std::int8_t* base, std::int64_t rows_total, std::int64_t row, std::int64_t col) -> int {
    if (row >= rows_total || col >= w.k) return 0;
    const std::int8_t* p = base + row * w.k + col;
    if constexpr (kAligned4) return *reinterpret_cast<const int*>(p);
    unsigned v = 0;
    for (int b = 0; b < 4 && col + b < w.k; ++b) v |= static_cast<unsigned>(static_cast<std::uint8_t>(p[b])) << (8 * b);
    return static_cast<int>(v);
  };

  int acc[4][4] = {};
  for (std::int64_t k0 = 0; k0 < w.k; k0 += kTileKBytes) {
#pragma unroll
    for (int i = 0; i < kTileM * kWords / kGemmThreads; ++i) {
      const int e_idx = tid + i * kGemmThreads;
      const int r = e_idx / kWords, c = e_idx % kWords;
      xs[r][c] = word_at(xq, m, m0 + r, k0 + 4 * c);
      ws[r][c] = word_at(w.values, w.n, n0 + r, k0 + 4 * c);
    }
    __syncthreads();
#pragma unroll
    for (int c = 0; c < kWords; ++c) {
      int a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = xs[ty + 16 * i][c];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = ws[tx + 16 * j][c];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = __dp4a(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const std::int64_t row = m0 + ty + 16 * i;
    if (row >= m) continue;
    const float x_scale = x_scales[row];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const std::int64_t col = n0 + tx + 16 * j;
      if (col < w.n) y[row * w.n + col] = w8a8_output(acc[i][j], x_scale, w, e, col);
    }
  }
}

// --- launch helpers -----------------------------------------------------------------------------

// Four rows per warp reuse each activation load four times but make 4x fewer warps; use them
// only when there are still at least two blocks per SM to spread over.
bool many_rows(std::int64_t n) noexcept {
  int device = 0, sms = 0;
  if (cudaGetDevice(&device) != cudaSuccess || cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
    (void)cudaGetLastError();
    sms = 132;  // H100 / H200
  }
  return n / (4 * kGemvWarps) >= 2 * static_cast<std::int64_t>(sms);
}

unsigned gemv_blocks(std::int64_t n, int rows_per_warp) noexcept {
  const std::int64_t rows_per_block = static_cast<std::int64_t>(rows_per_warp) * kGemvWarps;
  return static_cast<unsigned>((n + rows_per_block - 1) / rows_per_block);
}

dim3 gemm_grid(std::int64_t m, std::int64_t n) noexcept {
  return dim3(static_cast<unsigned>((n + kTileN - 1) / kTileN), static_cast<unsigned>((m + kTileM - 1) / kTileM));
}

// The host checks these; here they only guard the grid arithmetic.
bool grid_fits(std::int64_t m, std::int64_t n) noexcept {
  return (n + kTileN - 1) / kTileN <= 0x7fffffff && (m + kTileM - 1) / kTileM <= 65535;
}

}  // namespace

cudaError_t launch_w4a16_gemm(const void* x, bool x_f16, std::int64_t m, const Int4GroupedWeights& w, const Epilogue& epilogue,
                              float* y) noexcept {
  if (m <= 0 || w.n <= 0) return cudaSuccess;
  if (!grid_fits(m, w.n) || w.k % 32 != 0 || (w.group_size != 32 && w.group_size != 64 && w.group_size != 128))
    return cudaErrorInvalidValue;
  (void)cudaGetLastError();  // so an earlier, unrelated error is not reported as this launch's
  const unsigned threads = kGemvWarps * kWarp;
  if (m == 1) {
    if (many_rows(w.n)) {
      if (x_f16) w4a16_gemv_kernel<4, true><<<gemv_blocks(w.n, 4), threads>>>(x, w, epilogue, y);
      else w4a16_gemv_kernel<4, false><<<gemv_blocks(w.n, 4), threads>>>(x, w, epilogue, y);
    } else {
      if (x_f16) w4a16_gemv_kernel<1, true><<<gemv_blocks(w.n, 1), threads>>>(x, w, epilogue, y);
      else w4a16_gemv_kernel<1, false><<<gemv_blocks(w.n, 1), threads>>>(x, w, epilogue, y);
    }
  } else {
    if (x_f16) w4a16_gemm_kernel<true><<<gemm_grid(m, w.n), kGemmThreads>>>(x, m, w, epilogue, y);
    else w4a16_gemm_kernel<false><<<gemm_grid(m, w.n), kGemmThreads>>>(x, m, w, epilogue, y);
  }
  return cudaGetLastError();
}

cudaError_t launch_quantize_rows_int8(const void* x, bool x_f16, std::int64_t m, std::int64_t k, std::int8_t* xq,
                                      float* row_scales) noexcept {
  if (m <= 0) return cudaSuccess;
  if (m > 0x7fffffff) return cudaErrorInvalidValue;
  (void)cudaGetLastError();
  if (x_f16) quantize_rows_int8_kernel<true><<<static_cast<unsigned>(m), kQuantizeThreads>>>(x, k, xq, row_scales);
  else quantize_rows_int8_kernel<false><<<static_cast<unsigned>(m), kQuantizeThreads>>>(x, k, xq, row_scales);
  return cudaGetLastError();
}

cudaError_t launch_w8a8_gemm(const std::int8_t* xq, const float* x_scales, std::int64_t m, const Int8Weights& w,
                             const Epilogue& epilogue, float* y) noexcept {
  if (m <= 0 || w.n <= 0) return cudaSuccess;
  if (!grid_fits(m, w.n)) return cudaErrorInvalidValue;
  (void)cudaGetLastError();
  const unsigned threads = kGemvWarps * kWarp;
  if (m == 1) {
    const bool aligned = w.k % 16 == 0;
    if (many_rows(w.n)) {
      if (aligned) w8a8_gemv_kernel<4, true><<<gemv_blocks(w.n, 4), threads>>>(xq, x_scales, w, epilogue, y);
      else w8a8_gemv_kernel<4, false><<<gemv_blocks(w.n, 4), threads>>>(xq, x_scales, w, epilogue, y);
    } else {
      if (aligned) w8a8_gemv_kernel<1, true><<<gemv_blocks(w.n, 1), threads>>>(xq, x_scales, w, epilogue, y);
      else w8a8_gemv_kernel<1, false><<<gemv_blocks(w.n, 1), threads>>>(xq, x_scales, w, epilogue, y);
    }
  } else {
    if (w.k % 4 == 0) w8a8_gemm_kernel<true><<<gemm_grid(m, w.n), kGemmThreads>>>(xq, x_scales, m, w, epilogue, y);
    else w8a8_gemm_kernel<false><<<gemm_grid(m, w.n), kGemmThreads>>>(xq, x_scales, m, w, epilogue, y);
  }
  return cudaGetLastError();
}

}  // namespace quarry::cuda_kernels
