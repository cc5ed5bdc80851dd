// Quantized matrix products on the GPU: W4A16 (int4 group-wise weights, f16 or f32
// activations, float accumulation) and W8A8 (int8 weights, int8 activations quantized per row on
// the device, int32 accumulation with __dp4a). See quant_kernels.h for the contracts.
//
// W4A16 with f16 activations runs on the tensor cores (w4a16_tc_kernel: mma.sync with exact
// q - z weights and per-group scaling in f32) for every M, in passes of 32 rows. With f32
// activations (W4A32) and for W8A8: GEMV (m == 1, the decode case) is memory-bound: each warp
// owns a few output rows and streams them along K with 16-byte loads, coalesced, several in
// flight, reusing the lane's activations for all of its rows; GEMM (m > 1) is a shared-memory
// tiled SIMT kernel, correct for every shape. W8A8 with m > 1 goes to cuBLAS's int8 GEMM when
// the shape allows (src/cuda/quant.cpp) and uses that tile otherwise. See
// quarry/quant/cuda_qgemm.hpp for the measured figures.
#include "launch.cuh"
#include "quant_kernels.h"
#include "simt_tile.cuh"

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

// Eight consecutive f32 activations.
__device__ __forceinline__ void load_x8(const float* x, std::int64_t col, float* out) {
  const float4 a = *reinterpret_cast<const float4*>(x + col);
  const float4 b = *reinterpret_cast<const float4*>(x + col + 4);
  out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w;
  out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
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
// of 32). The lane's 32 activations are loaded once per chunk and used for all kRows rows. The
// loop is unrolled kUnroll chunks deep with every weight load issued before any arithmetic, so a
// lane has kRows * kUnroll 16-byte loads in flight: HBM needs tens of KiB in flight per SM.
template <int kRows>
__global__ void __launch_bounds__(kGemvWarps * kWarp)
    w4a16_gemv_kernel(const float* __restrict__ x, Int4GroupedWeights w, Epilogue e, float* __restrict__ y) {
  constexpr int kUnroll = kRows == 1 ? 4 : 2;
  const int lane = threadIdx.x % kWarp;
  const std::int64_t row0 = (static_cast<std::int64_t>(blockIdx.x) * kGemvWarps + threadIdx.x / kWarp) * kRows;
  if (row0 >= w.n) return;
  const std::int64_t row_bytes = w.k / 2;
  const std::int64_t chunks = w.k / 32;
  const std::int64_t groups = w.k / w.group_size;
  const int chunk_shift = w.group_size == 32 ? 0 : (w.group_size == 64 ? 1 : 2);  // chunk -> group

  // Rows past the end re-read the last row (always valid) and are not written.
  const uint4* rows[kRows];
  std::int64_t srow[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const std::int64_t row = row0 + r < w.n ? row0 + r : w.n - 1;
    rows[r] = reinterpret_cast<const uint4*>(w.values + row * row_bytes);
    srow[r] = row * groups;
  }

  float acc[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) acc[r] = 0.f;

  for (std::int64_t c0 = lane; c0 < chunks; c0 += kWarp * kUnroll) {
    // Weights first: they come from HBM, the activations from L1/L2. Streaming loads (__ldcs):
    // each weight byte is read once, so keep it from evicting the activations.
    uint4 q[kUnroll][kRows];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const std::int64_t c = c0 + static_cast<std::int64_t>(u) * kWarp;
#pragma unroll
      for (int r = 0; r < kRows; ++r) q[u][r] = c < chunks ? __ldcs(rows[r] + c) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const std::int64_t c = c0 + static_cast<std::int64_t>(u) * kWarp;
      if (c >= chunks) break;
      float xs[32];
#pragma unroll
      for (int i = 0; i < 4; ++i) load_x8(x, c * 32 + 8 * i, xs + 8 * i);
      const std::int64_t g = c >> chunk_shift;
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const std::int64_t si = srow[r] + g;
        const float s = load_scale(w.scales, w.scales_f16, si);
        // Symmetric nibbles are int4: q = (nibble ^ 8) - 8, i.e. flip bit 3 and use z = 8.
        const int z = w.symmetric ? 8 : w.zeros[si];
        const unsigned flip = w.symmetric ? 0x88888888u : 0u;
        const __half2 zlo = zero_point_1024(z), zhi = zero_point_64(z);
        float part = dot8_nibbles(q[u][r].x ^ flip, zlo, zhi, xs);
        part += dot8_nibbles(q[u][r].y ^ flip, zlo, zhi, xs + 8);
        part += dot8_nibbles(q[u][r].z ^ flip, zlo, zhi, xs + 16);
        part += dot8_nibbles(q[u][r].w ^ flip, zlo, zhi, xs + 24);
        acc[r] = fmaf(part, s, acc[r]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const float total = warp_sum(acc[r]);
    if (lane == 0 && row0 + r < w.n) y[row0 + r] = apply_epilogue(total, e, row0 + r);
  }
}

// --- W4A16 on the tensor cores (f16 activations, M up to 32 rows per pass) ---------------------
//
// One mma.sync.m16n8k16 (f16 in, f32 accumulate) multiplies 16 weight rows by 16 k by 8
// activation rows. The weights enter as exact small integers (q - z, from the nibbles with the
// 1024.0 / 64.0 mantissa trick, no int -> float conversion), the activations as the f16 they are,
// so every product is exact and sums are f32; each group's sum is then multiplied by its scale
// in f32 (acc += sum_g * s_g), so the result is as accurate as the SIMT kernel's.
//
// The dot product is a sum over k, so the k order inside one mma is free as long as weights and
// activations use the same one, and all 16 k of one mma lie in one group. Thread (g = lane / 4,
// t = lane % 4) supplies the weights of rows g and g + 8 and the activations of batch row g. Of
// each group it takes the t-th quarter: kWords = group_size / 32 words of 8 nibbles per row, one
// 4-, 8- or 16-byte load (the four threads of a row together read the group's bytes, contiguous).
// The trick yields a word's column pairs (0,4) (1,5) (2,6) (3,7) as f16x2; two mma per word take
// (0,4)+(1,5) and (2,6)+(3,7) in the fragment slots (2t, 2t+1) and (2t+8, 2t+9), and the eight
// activations of the word are permuted (PRMT) into the same pairs.
//
// A block of kTcWarps warps owns 16 weight rows; its warps split the groups of K and their sums
// are added in a fixed order through shared memory (deterministic). kChunks batch chunks of 8
// rows share each weight load (M <= 8 * kChunks per launch; the host launches passes of 32).
constexpr int kTcWarps = 8;

// (Inline PTX has a host equivalent for the SIMT emulator, tests/cuda_emulated.)
__device__ __forceinline__ void mma_16816(float (&c)[4], unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0, unsigned b1) {
#if defined(QUARRY_SIMT_EMULATED)
  ::quarry::simt::mma_m16n8k16_f16_f32(c, a0, a1, a2, a3, b0, b1);
#else
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
}

__device__ __forceinline__ unsigned half2_bits(__half2 h) { return *reinterpret_cast<const unsigned*>(&h); }

// (a & b) ^ c in one LOP3.
__device__ __forceinline__ unsigned and_xor(unsigned a, unsigned b, unsigned c) {
#if defined(QUARRY_SIMT_EMULATED)
  return (a & b) ^ c;
#else
  unsigned r;
  asm("lop3.b32 %0, %1, %2, %3, 0x6a;" : "=r"(r) : "r"(a), "r"(b), "r"(c));  // 0x6a = (0xf0 & 0xcc) ^ 0xaa
  return r;
#endif
}

// The four f16x2 (q - z) pairs (0,4) (1,5) (2,6) (3,7) of the eight nibbles in `word`: one LOP3
// and one HSUB2 per pair. `lo_magic` is 0x64006400 (1024.0 twice), `hi_magic` 0x54005400 (64.0
// twice); for int4 nibbles they also carry bit 3 of each nibble (0x00080008, 0x00800080), so the
// XOR flips it on the way in (q = (nibble ^ 8) - 8 with z = 8) at no cost.
__device__ __forceinline__ void nibbles_to_half2(unsigned word, unsigned lo_magic, unsigned hi_magic, __half2 zlo, __half2 zhi,
                                                 unsigned (&out)[4]) {
  const unsigned shifted = word >> 8;
  out[0] = half2_bits(__hsub2(bits_as_half2(and_xor(word, 0x000f000fu, lo_magic)), zlo));
  out[1] = half2_bits(__hsub2(bits_as_half2(and_xor(word, 0x00f000f0u, hi_magic)), zhi));
  out[2] = half2_bits(__hsub2(bits_as_half2(and_xor(shifted, 0x000f000fu, lo_magic)), zlo));
  out[3] = half2_bits(__hsub2(bits_as_half2(and_xor(shifted, 0x00f000f0u, hi_magic)), zhi));
}

// kWords consecutive 32-bit words, in one load of 4, 8 or 16 bytes (streaming: read once).
template <int kWords>
__device__ __forceinline__ void load_words(const unsigned* p, unsigned (&out)[kWords]) {
  if constexpr (kWords == 4) {
    const uint4 v = __ldcs(reinterpret_cast<const uint4*>(p));
    out[0] = v.x, out[1] = v.y, out[2] = v.z, out[3] = v.w;
  } else if constexpr (kWords == 2) {
    const uint2 v = __ldcs(reinterpret_cast<const uint2*>(p));
    out[0] = v.x, out[1] = v.y;
  } else {
    out[0] = __ldcs(p);
  }
}

template <int kChunks, int kWords>
__global__ void __launch_bounds__(kTcWarps * kWarp, kChunks == 1 ? 3 : 2)
    w4a16_tc_kernel(const std::uint16_t* __restrict__ x, std::int64_t m, Int4GroupedWeights w, Epilogue e, float* __restrict__ y) {
  // Groups in flight per warp: their weights, scales and activations are all loaded before any
  // arithmetic (the activations come from L2: a dependent load per group would serialise on it).
  constexpr int kUnroll = 4 / (kWords * kChunks) > 1 ? 4 / (kWords * kChunks) : 1;
  __shared__ float partial[kTcWarps][kChunks][kWarp][4];
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  const int g = lane / 4, t = lane % 4;
  const std::int64_t row_base = static_cast<std::int64_t>(blockIdx.x) * 16;
  const std::int64_t r0 = row_base + g < w.n ? row_base + g : w.n - 1;  // rows past n re-read the last one
  const std::int64_t r1 = row_base + g + 8 < w.n ? row_base + g + 8 : w.n - 1;
  const std::int64_t groups = w.k / w.group_size;
  const std::int64_t groups_per_warp = (groups + kTcWarps - 1) / kTcWarps;
  const std::int64_t g_begin = warp * groups_per_warp < groups ? warp * groups_per_warp : groups;
  const std::int64_t g_end = g_begin + groups_per_warp < groups ? g_begin + groups_per_warp : groups;

  // Group G of a row is words [4 kWords G, 4 kWords (G + 1)); thread t reads kWords of them.
  const unsigned* row0 = reinterpret_cast<const unsigned*>(w.values + r0 * (w.k / 2)) + kWords * t;
  const unsigned* row1 = reinterpret_cast<const unsigned*>(w.values + r1 * (w.k / 2)) + kWords * t;
  // The activations of batch row g of each chunk, from column 32 kWords t of each group (eight
  // per word); rows past m read zeros.
  const uint4* xrow[kChunks];
  bool xvalid[kChunks];
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    const std::int64_t bm = 8 * c + g;
    xvalid[c] = bm < m;
    xrow[c] = reinterpret_cast<const uint4*>(x + (xvalid[c] ? bm : 0) * w.k) + kWords * t;  // + 4 kWords uint4 per group
  }
  const unsigned lo_magic = w.symmetric ? 0x64086408u : 0x64006400u;
  const unsigned hi_magic = w.symmetric ? 0x54805480u : 0x54005400u;
  const __half2 sym_lo = zero_point_1024(8), sym_hi = zero_point_64(8);

  float acc[kChunks][4];
#pragma unroll
  for (int c = 0; c < kChunks; ++c)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[c][i] = 0.f;

  for (std::int64_t g0 = g_begin; g0 < g_end; g0 += kUnroll) {
    unsigned q0[kUnroll][kWords], q1[kUnroll][kWords];
    float s0[kUnroll], s1[kUnroll];
    int z0[kUnroll], z1[kUnroll];
    uint4 xv[kUnroll][kWords][kChunks];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const std::int64_t grp = g0 + u < g_end ? g0 + u : g_end - 1;  // a repeat past the end is not used
      load_words<kWords>(row0 + 4 * kWords * grp, q0[u]);
      load_words<kWords>(row1 + 4 * kWords * grp, q1[u]);
#pragma unroll
      for (int j = 0; j < kWords; ++j)
#pragma unroll
        for (int c = 0; c < kChunks; ++c) xv[u][j][c] = xvalid[c] ? xrow[c][4 * kWords * grp + j] : make_uint4(0, 0, 0, 0);
      s0[u] = load_scale(w.scales, w.scales_f16, r0 * groups + grp);
      s1[u] = load_scale(w.scales, w.scales_f16, r1 * groups + grp);
      z0[u] = w.symmetric ? 8 : w.zeros[r0 * groups + grp];
      z1[u] = w.symmetric ? 8 : w.zeros[r1 * groups + grp];
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const std::int64_t grp = g0 + u;
      if (grp >= g_end) break;
      const __half2 zl0 = w.symmetric ? sym_lo : zero_point_1024(z0[u]), zh0 = w.symmetric ? sym_hi : zero_point_64(z0[u]);
      const __half2 zl1 = w.symmetric ? sym_lo : zero_point_1024(z1[u]), zh1 = w.symmetric ? sym_hi : zero_point_64(z1[u]);
      float part[kChunks][4];
#pragma unroll
      for (int c = 0; c < kChunks; ++c)
#pragma unroll
        for (int i = 0; i < 4; ++i) part[c][i] = 0.f;
#pragma unroll
      for (int j = 0; j < kWords; ++j) {
        unsigned f0[4], f1[4];  // rows g and g + 8
        nibbles_to_half2(q0[u][j], lo_magic, hi_magic, zl0, zh0, f0);
        nibbles_to_half2(q1[u][j], lo_magic, hi_magic, zl1, zh1, f1);
#pragma unroll
        for (int c = 0; c < kChunks; ++c) {
          const uint4 v = xv[u][j][c];
          // columns (0,4) (1,5) (2,6) (3,7) of the word's eight activations, as the weights pair them
          const unsigned x04 = __byte_perm(v.x, v.z, 0x5410), x15 = __byte_perm(v.x, v.z, 0x7632);
          const unsigned x26 = __byte_perm(v.y, v.w, 0x5410), x37 = __byte_perm(v.y, v.w, 0x7632);
          mma_16816(part[c], f0[0], f1[0], f0[1], f1[1], x04, x15);
          mma_16816(part[c], f0[2], f1[2], f0[3], f1[3], x26, x37);
        }
      }
#pragma unroll
      for (int c = 0; c < kChunks; ++c) {
        acc[c][0] = fmaf(part[c][0], s0[u], acc[c][0]);
        acc[c][1] = fmaf(part[c][1], s0[u], acc[c][1]);
        acc[c][2] = fmaf(part[c][2], s1[u], acc[c][2]);
        acc[c][3] = fmaf(part[c][3], s1[u], acc[c][3]);
      }
    }
  }
#pragma unroll
  for (int c = 0; c < kChunks; ++c)
#pragma unroll
    for (int i = 0; i < 4; ++i) partial[warp][c][lane][i] = acc[c][i];
  __syncthreads();
  if (warp != 0) return;
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    float sum[4] = {0.f, 0.f, 0.f, 0.f};
    for (int v = 0; v < kTcWarps; ++v)
#pragma unroll
      for (int i = 0; i < 4; ++i) sum[i] += partial[v][c][lane][i];
    // sum[0], sum[1]: weight row g, batch rows 2t, 2t+1; sum[2], sum[3]: weight row g + 8.
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const std::int64_t bm = 8 * c + 2 * t + (i & 1);
      const std::int64_t row = row_base + g + (i >= 2 ? 8 : 0);
      if (bm < m && row < w.n) y[bm * w.n + row] = apply_epilogue(sum[i], e, row);
    }
  }
}

template <int kChunks>
void launch_w4a16_tc(unsigned blocks, const std::uint16_t* x, std::int64_t m, const Int4GroupedWeights& w, const Epilogue& e, float* y) {
  const unsigned threads = kTcWarps * kWarp;
  if (w.group_size == 32) QUARRY_LAUNCH(blocks, threads, 0, w4a16_tc_kernel<kChunks, 1>)(x, m, w, e, y);
  else if (w.group_size == 64) QUARRY_LAUNCH(blocks, threads, 0, w4a16_tc_kernel<kChunks, 2>)(x, m, w, e, y);
  else QUARRY_LAUNCH(blocks, threads, 0, w4a16_tc_kernel<kChunks, 4>)(x, m, w, e, y);
}

// --- W4A16 tiled GEMM ---------------------------------------------------------------------------

constexpr int kTileM = 64, kTileN = 64, kTileK = 32;  // kTileK divides every group size
constexpr int kGemmThreads = 256;                     // 16 x 16 threads, 4 x 4 outputs each

// Block (bx, by) computes y[by*64 .. +64, bx*64 .. +64]. Per K tile it stages 64 x 32
// activations and 64 x 32 dequantized weights ((q - z) * s, as quarry::dequantize rounds them)
// in shared memory as f32, then each thread accumulates its 4 x 4 outputs (rows ty + 16i,
// columns tx + 16j) in f32.
__global__ void __launch_bounds__(kGemmThreads)
    w4a16_gemm_kernel(const float* __restrict__ x, std::int64_t m, Int4GroupedWeights w, Epilogue e, float* __restrict__ y) {
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
        v = x[at];
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
    simt_tile_4x4(xs, ws, ty, tx, acc);
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
    // Unrolled as the W4A16 GEMV: every weight load of kUnroll chunks issued before the __dp4a.
    constexpr int kUnroll = kRows == 1 ? 4 : 2;
    const std::int64_t chunks = w.k / 16;
    for (std::int64_t c0 = lane; c0 < chunks; c0 += kWarp * kUnroll) {
      int4 q[kUnroll][kRows];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const std::int64_t c = c0 + static_cast<std::int64_t>(u) * kWarp;
#pragma unroll
        for (int r = 0; r < kRows; ++r)
          q[u][r] = c < chunks ? __ldcs(reinterpret_cast<const int4*>(w.values + rows[r] * w.k) + c) : make_int4(0, 0, 0, 0);
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const std::int64_t c = c0 + static_cast<std::int64_t>(u) * kWarp;
        if (c >= chunks) break;
        const int4 a = *(reinterpret_cast<const int4*>(xq) + c);
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          acc[r] = __dp4a(q[u][r].x, a.x, acc[r]);
          acc[r] = __dp4a(q[u][r].y, a.y, acc[r]);
          acc[r] = __dp4a(q[u][r].z, a.z, acc[r]);
          acc[r] = __dp4a(q[u][r].w, a.w, acc[r]);
        }
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

// y [m, n] as int32 accumulators -> y as W8A8 outputs, in place (a grid-stride loop).
__global__ void w8a8_epilogue_kernel(float* __restrict__ y, const float* __restrict__ x_scales, std::int64_t m, Int8Weights w,
                                     Epilogue e) {
  const std::int64_t total = m * w.n;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t row = i / w.n, col = i - row * w.n;
    const int acc = __float_as_int(y[i]);
    y[i] = w8a8_output(acc, x_scales[row], w, e, col);
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
  if (x_f16) {
    // Tensor cores, in passes of up to 32 activation rows that each read the weights once.
    const auto* xh = static_cast<const std::uint16_t*>(x);
    const unsigned blocks = static_cast<unsigned>((w.n + 15) / 16);
    for (std::int64_t m0 = 0; m0 < m; m0 += 32) {
      const std::int64_t rows = m - m0 < 32 ? m - m0 : 32;
      const std::uint16_t* xp = xh + m0 * w.k;
      float* yp = y + m0 * w.n;
      if (rows <= 8) launch_w4a16_tc<1>(blocks, xp, rows, w, epilogue, yp);
      else if (rows <= 16) launch_w4a16_tc<2>(blocks, xp, rows, w, epilogue, yp);
      else launch_w4a16_tc<4>(blocks, xp, rows, w, epilogue, yp);
    }
    return cudaGetLastError();
  }
  // f32 activations (W4A32): the SIMT kernels.
  const auto* xf = static_cast<const float*>(x);
  if (m == 1) {
    if (many_rows(w.n)) QUARRY_LAUNCH(gemv_blocks(w.n, 4), threads, 0, w4a16_gemv_kernel<4>)(xf, w, epilogue, y);
    else QUARRY_LAUNCH(gemv_blocks(w.n, 1), threads, 0, w4a16_gemv_kernel<1>)(xf, w, epilogue, y);
  } else {
    QUARRY_LAUNCH(gemm_grid(m, w.n), kGemmThreads, 0, w4a16_gemm_kernel)(xf, m, w, epilogue, y);
  }
  return cudaGetLastError();
}

cudaError_t launch_quantize_rows_int8(const void* x, bool x_f16, std::int64_t m, std::int64_t k, std::int8_t* xq,
                                      float* row_scales) noexcept {
  if (m <= 0) return cudaSuccess;
  if (m > 0x7fffffff) return cudaErrorInvalidValue;
  (void)cudaGetLastError();
  if (x_f16) QUARRY_LAUNCH(static_cast<unsigned>(m), kQuantizeThreads, 0, quantize_rows_int8_kernel<true>)(x, k, xq, row_scales);
  else QUARRY_LAUNCH(static_cast<unsigned>(m), kQuantizeThreads, 0, quantize_rows_int8_kernel<false>)(x, k, xq, row_scales);
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
      if (aligned) QUARRY_LAUNCH(gemv_blocks(w.n, 4), threads, 0, w8a8_gemv_kernel<4, true>)(xq, x_scales, w, epilogue, y);
      else QUARRY_LAUNCH(gemv_blocks(w.n, 4), threads, 0, w8a8_gemv_kernel<4, false>)(xq, x_scales, w, epilogue, y);
    } else {
      if (aligned) QUARRY_LAUNCH(gemv_blocks(w.n, 1), threads, 0, w8a8_gemv_kernel<1, true>)(xq, x_scales, w, epilogue, y);
      else QUARRY_LAUNCH(gemv_blocks(w.n, 1), threads, 0, w8a8_gemv_kernel<1, false>)(xq, x_scales, w, epilogue, y);
    }
  } else {
    if (w.k % 4 == 0) QUARRY_LAUNCH(gemm_grid(m, w.n), kGemmThreads, 0, w8a8_gemm_kernel<true>)(xq, x_scales, m, w, epilogue, y);
    else QUARRY_LAUNCH(gemm_grid(m, w.n), kGemmThreads, 0, w8a8_gemm_kernel<false>)(xq, x_scales, m, w, epilogue, y);
  }
  return cudaGetLastError();
}

cudaError_t launch_w8a8_epilogue_in_place(float* y, const float* x_scales, std::int64_t m, const Int8Weights& w,
                                          const Epilogue& epilogue) noexcept {
  if (m <= 0 || w.n <= 0) return cudaSuccess;
  (void)cudaGetLastError();
  const std::int64_t total = m * w.n;
  const std::int64_t blocks = (total + 255) / 256;
  QUARRY_LAUNCH(static_cast<unsigned>(blocks < 65536 ? blocks : 65536), 256, 0, w8a8_epilogue_kernel)(y, x_scales, m, w, epilogue);
  return cudaGetLastError();
}

}  // namespace quarry::cuda_kernels
