// Paged decode attention ("flash decoding" over pages). See quarry/kv/cuda_paged_attention.hpp.
//
// Block (sequence b, kv head, chunk c) of 128 threads: a token's head_dim is spread over
// D / 8 lanes (8 elements, one 16-byte load of f16/bf16, 8 bytes of INT8, 4 of INT4, each), so a warp covers 32 / (D / 8)
// tokens per step and the block 4 times that; every sub-group of D / 8 lanes keeps an online
// softmax (running max, sum, and its 8 dims of sum p * v) for all kG query heads of the kv head,
// so each key and value is read once for the whole GQA group. Scores are reduced over the
// sub-group with xor shuffles. The sub-groups' states are merged through shared memory by
// log-sum-exp; with one chunk the block writes the output, else its unnormalised partial state,
// which merge_kernel combines per (sequence, head).
#include "paged_attention_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <math_constants.h>

namespace quarry::cuda_kernels {
namespace {

constexpr int kThreads = 128;
constexpr int kUnroll = 4;  // tokens per sub-group whose K and V are loaded before the arithmetic

// The 8 elements li * 8 .. li * 8 + 7 of row `row` (of kD elements), widened to f32; INT8 and
// INT4 times their scale (an INT4 group holds a multiple of 8 elements, so one scale serves all 8).
template <int kD, KvType kT>
__device__ __forceinline__ void load8(const void* base, const float* scales, std::int64_t groups, std::int64_t row, int li, float (&out)[8]) {
  const std::int64_t at = row * kD + li * 8;
  if constexpr (kT == KvType::f32) {
    const float4* p = reinterpret_cast<const float4*>(static_cast<const float*>(base) + at);
    const float4 a = __ldcs(p), b = __ldcs(p + 1);
    out[0] = a.x, out[1] = a.y, out[2] = a.z, out[3] = a.w, out[4] = b.x, out[5] = b.y, out[6] = b.z, out[7] = b.w;
  } else if constexpr (kT == KvType::i8) {
    const uint2 raw = __ldcs(reinterpret_cast<const uint2*>(static_cast<const std::int8_t*>(base) + at));
    const float s = __ldg(scales + row);
    const unsigned w[2] = {raw.x, raw.y};
#pragma unroll
    for (int i = 0; i < 8; ++i) out[i] = static_cast<float>(static_cast<signed char>((w[i / 4] >> (8 * (i % 4))) & 0xffu)) * s;
  } else if constexpr (kT == KvType::i4) {
    const unsigned raw = __ldcs(reinterpret_cast<const unsigned*>(static_cast<const std::uint8_t*>(base) + at / 2));
    const float s = __ldg(scales + row * groups + (li * 8) / (kD / groups));
#pragma unroll
    for (int i = 0; i < 8; ++i) out[i] = static_cast<float>(static_cast<int>(((raw >> (4 * i)) & 0xfu) ^ 8u) - 8) * s;
  } else {
    const uint4 raw = __ldcs(reinterpret_cast<const uint4*>(static_cast<const std::uint16_t*>(base) + at));
    const unsigned w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if constexpr (kT == KvType::f16) {
        const float2 f = __half22float2(*reinterpret_cast<const __half2*>(&w[i]));
        out[2 * i] = f.x, out[2 * i + 1] = f.y;
      } else {  // bf16: the high half of an f32
        out[2 * i] = __uint_as_float(w[i] << 16);
        out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
      }
    }
  }
}

__device__ __forceinline__ std::int64_t seq_length(const PagedDecodeArgs& a, std::int64_t b) {
  const std::int64_t pages = a.indptr[b + 1] - a.indptr[b];
  return pages == 0 ? 0 : (pages - 1) * a.page_size + a.last_page_len[b];
}

template <int kD, int kG, KvType kT>
__global__ void __launch_bounds__(kThreads) decode_kernel(PagedDecodeArgs a) {
  constexpr int kLanes = kD / 8;                // lanes per token
  constexpr int kSub = kThreads / kLanes;       // sub-groups (tokens in flight per step) per block
  __shared__ float s_max[kSub][kG], s_sum[kSub][kG];
  __shared__ float s_acc[kSub][kG][kD];

  const std::int64_t b = blockIdx.x / a.n_kv_heads, kvh = blockIdx.x % a.n_kv_heads;
  const std::int64_t group = a.n_heads / a.n_kv_heads;
  const int sub = threadIdx.x / kLanes, li = threadIdx.x % kLanes;
  const std::int64_t len = seq_length(a, b);
  const std::int64_t first = a.sliding_window > 0 && len > a.sliding_window ? len - a.sliding_window : 0;
  const std::int64_t c0 = static_cast<std::int64_t>(blockIdx.y) * a.chunk;
  const std::int64_t lo = c0 > first ? c0 : first;
  const std::int64_t hi = c0 + a.chunk < len ? c0 + a.chunk : len;
  const std::int32_t* pages = a.indices + a.indptr[b];

  float q[kG][8];
#pragma unroll
  for (int g = 0; g < kG; ++g) {
    const std::int64_t h = kvh * group + (g < group ? g : 0);
    const float* qp = a.q + (b * a.n_heads + h) * kD + li * 8;
#pragma unroll
    for (int i = 0; i < 8; ++i) q[g][i] = qp[i];
    if constexpr (kT == KvType::i8 || kT == KvType::i4) {
      // As the CPU kernels (quarry/kv/detail/kv_kernels.hpp): the query head on the int8 grid,
      // round(q * 127 / max|q|) * max|q| / 127, max over the head's kD / 8 lanes.
      float mx = 0.f;
#pragma unroll
      for (int i = 0; i < 8; ++i) mx = fmaxf(mx, fabsf(q[g][i]));
#pragma unroll
      for (int off = kLanes / 2; off > 0; off /= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      const float inv = mx > 0.f && mx <= 3.402823466e38f ? 127.f / mx : 0.f;
      const float step = inv > 0.f ? mx / 127.f : 0.f;
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const float x = q[g][i] * inv;
        q[g][i] = rintf(x == x ? fminf(fmaxf(x, -127.f), 127.f) : 0.f) * step;
      }
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) q[g][i] *= a.scale;
  }
  float m[kG], l[kG], acc[kG][8];
#pragma unroll
  for (int g = 0; g < kG; ++g) {
    m[g] = -CUDART_INF_F;
    l[g] = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[g][i] = 0.f;
  }

  // The loop bounds are the same for every thread of the block, so all lanes of a warp reach
  // every shuffle (sub-groups of one warp may be past the end; they compute and drop a score).
  for (std::int64_t base = lo; base < hi; base += static_cast<std::int64_t>(kSub) * kUnroll) {
    float kv[kUnroll][8], vv[kUnroll][8];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const std::int64_t t = base + sub + static_cast<std::int64_t>(u) * kSub;
#pragma unroll
      for (int i = 0; i < 8; ++i) kv[u][i] = vv[u][i] = 0.f;
      if (t < hi) {
        const std::int64_t row = (static_cast<std::int64_t>(pages[t / a.page_size]) * a.n_kv_heads + kvh) * a.page_size + t % a.page_size;
        load8<kD, kT>(a.k, a.k_scales, a.groups, row, li, kv[u]);
        load8<kD, kT>(a.v, a.v_scales, a.groups, row, li, vv[u]);
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (base + static_cast<std::int64_t>(u) * kSub >= hi) break;  // uniform across the block
      const bool valid = base + sub + static_cast<std::int64_t>(u) * kSub < hi;  // uniform across the sub-group
#pragma unroll
      for (int g = 0; g < kG; ++g) {
        float s = 0.f;
#pragma unroll
        for (int i = 0; i < 8; ++i) s = fmaf(q[g][i], kv[u][i], s);
#pragma unroll
        for (int off = kLanes / 2; off > 0; off /= 2) s += __shfl_xor_sync(0xffffffffu, s, off);
        if (!valid) continue;
        const float mn = fmaxf(m[g], s);
        const float corr = __expf(m[g] - mn), p = __expf(s - mn);
        l[g] = fmaf(l[g], corr, p);
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[g][i] = fmaf(acc[g][i], corr, p * vv[u][i]);
        m[g] = mn;
      }
    }
  }

  // Merge the sub-groups' states.
#pragma unroll
  for (int g = 0; g < kG; ++g) {
    if (li == 0) {
      s_max[sub][g] = m[g];
      s_sum[sub][g] = l[g];
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) s_acc[sub][g][li * 8 + i] = acc[g][i];
  }
  __syncthreads();
  for (int e = threadIdx.x; e < kG * kD; e += kThreads) {
    const int g = e / kD, d = e % kD;
    if (g >= group) continue;
    float mx = -CUDART_INF_F;
    for (int s = 0; s < kSub; ++s) mx = fmaxf(mx, s_max[s][g]);
    float sum = 0.f, val = 0.f;
    if (mx != -CUDART_INF_F) {
      for (int s = 0; s < kSub; ++s) {
        const float w = __expf(s_max[s][g] - mx);  // 0 for an empty sub-group (max -inf)
        sum = fmaf(s_sum[s][g], w, sum);
        val = fmaf(s_acc[s][g][d], w, val);
      }
    }
    const std::int64_t h = kvh * group + g;
    if (a.chunks == 1) {
      a.out[(b * a.n_heads + h) * kD + d] = val / sum;
    } else {
      // partial: [batch * n_heads, chunks, kD + 2]: the unnormalised sum, then max and sum.
      float* p = a.partial + ((b * a.n_heads + h) * a.chunks + blockIdx.y) * (kD + 2);
      p[d] = val;
      if (d == 0) {
        p[kD] = mx;
        p[kD + 1] = sum;
      }
    }
  }
}

template <int kD>
__global__ void __launch_bounds__(kD) merge_kernel(PagedDecodeArgs a) {
  const std::int64_t bh = blockIdx.x;
  const float* p = a.partial + bh * a.chunks * (kD + 2);
  float mx = -CUDART_INF_F;
  for (std::int64_t c = 0; c < a.chunks; ++c)
    if (p[c * (kD + 2) + kD + 1] > 0.f) mx = fmaxf(mx, p[c * (kD + 2) + kD]);
  float sum = 0.f, val = 0.f;
  for (std::int64_t c = 0; c < a.chunks; ++c) {
    const float* pc = p + c * (kD + 2);
    if (!(pc[kD + 1] > 0.f)) continue;  // an empty chunk (past the end or before the window)
    const float w = __expf(pc[kD] - mx);
    sum = fmaf(pc[kD + 1], w, sum);
    val = fmaf(pc[threadIdx.x], w, val);
  }
  a.out[bh * kD + threadIdx.x] = val / sum;
}

template <int kD, int kG>
void launch_typed(const PagedDecodeArgs& a, dim3 grid) {
  switch (a.kv_type) {
    case KvType::f32: decode_kernel<kD, kG, KvType::f32><<<grid, kThreads>>>(a); break;
    case KvType::f16: decode_kernel<kD, kG, KvType::f16><<<grid, kThreads>>>(a); break;
    case KvType::bf16: decode_kernel<kD, kG, KvType::bf16><<<grid, kThreads>>>(a); break;
    case KvType::i8: decode_kernel<kD, kG, KvType::i8><<<grid, kThreads>>>(a); break;
    case KvType::i4: decode_kernel<kD, kG, KvType::i4><<<grid, kThreads>>>(a); break;
  }
}

template <int kD>
cudaError_t launch_dim(const PagedDecodeArgs& a) {
  const std::int64_t group = a.n_heads / a.n_kv_heads;
  const dim3 grid(static_cast<unsigned>(a.batch * a.n_kv_heads), static_cast<unsigned>(a.chunks));
  if (group == 1) launch_typed<kD, 1>(a, grid);
  else if (group == 2) launch_typed<kD, 2>(a, grid);
  else if (group <= 4) launch_typed<kD, 4>(a, grid);
  else if (group <= 8) launch_typed<kD, 8>(a, grid);
  else return cudaErrorInvalidValue;
  if (a.chunks > 1) merge_kernel<kD><<<static_cast<unsigned>(a.batch * a.n_heads), kD>>>(a);
  return cudaGetLastError();
}

}  // namespace

std::size_t paged_decode_workspace_floats(const PagedDecodeArgs& a) noexcept {
  if (a.chunks <= 1) return 0;
  return static_cast<std::size_t>(a.batch * a.n_heads * a.chunks * (a.head_dim + 2));
}

cudaError_t launch_paged_decode(const PagedDecodeArgs& a) noexcept {
  if (a.batch <= 0) return cudaSuccess;
  if (a.batch * a.n_kv_heads > 0x7fffffff || a.chunks > 65535 || a.chunks < 1) return cudaErrorInvalidValue;
  if (a.kv_type == KvType::i4 && (a.groups < 1 || a.head_dim % a.groups != 0 || (a.head_dim / a.groups) % 8 != 0))
    return cudaErrorInvalidValue;
  (void)cudaGetLastError();
  switch (a.head_dim) {
    case 64: return launch_dim<64>(a);
    case 128: return launch_dim<128>(a);
    case 256: return launch_dim<256>(a);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace quarry::cuda_kernels
