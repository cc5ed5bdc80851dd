// Paged decode attention ("flash decoding" over pages). See quarry/kv/cuda_paged_attention.hpp.
//
// Block (sequence b, kv head, chunk c) of 4 warps. A token's head_dim is spread over kD / 8
// lanes (8 elements each: one 16-byte load of f16/bf16, 8 bytes of INT8, 4 of INT4), so a warp
// reads 32 / (kD / 8) tokens per load. The chunk is taken in tiles: each warp loads K and V of
// kU slots of its tokens at once (all loads in flight before any arithmetic), scores every
// (query head, token) of the GQA group (each K and V element is read once for the kG heads),
// reduces the scores over the token's lanes with xor shuffles, and folds the tile into its
// online softmax once per tile: one max, one rescale of the running sum and output per head,
// one exp per score. The warps' states are merged through shared memory by log-sum-exp; with one
// chunk the block writes the output, else its unnormalised partial state, which merge_kernel
// combines per (sequence, head).
#include "paged_attention_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <math_constants.h>

#include <type_traits>

#include "launch.cuh"

namespace quarry::cuda_kernels {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;

// One lane's 8 elements of a row as loaded (and, for INT8 / INT4, the scale that serves them).
template <KvType kT>
struct Raw {
  uint4 w;  // f16 / bf16: 8 x 16 bits
};
template <>
struct Raw<KvType::f32> {
  float4 a, b;
};
template <>
struct Raw<KvType::i8> {
  uint2 w;
  float s;
};
template <>
struct Raw<KvType::i4> {
  unsigned w;
  float s;
};

// Loads elements li * 8 .. li * 8 + 7 of row `row` (of kD elements); an INT4 group holds a
// multiple of 8 elements, so one scale serves all 8.
template <int kD, KvType kT>
__device__ __forceinline__ Raw<kT> load_raw(const void* base, const float* scales, std::int64_t groups, std::int64_t row, int li) {
  const std::int64_t at = row * kD + li * 8;
  Raw<kT> r;
  if constexpr (kT == KvType::f32) {
    const float4* p = reinterpret_cast<const float4*>(static_cast<const float*>(base) + at);
    r.a = __ldcs(p);
    r.b = __ldcs(p + 1);
  } else if constexpr (kT == KvType::i8) {
    r.w = __ldcs(reinterpret_cast<const uint2*>(static_cast<const std::int8_t*>(base) + at));
    r.s = __ldg(scales + row);
  } else if constexpr (kT == KvType::i4) {
    r.w = __ldcs(reinterpret_cast<const unsigned*>(static_cast<const std::uint8_t*>(base) + at / 2));
    r.s = __ldg(scales + row * groups + (li * 8) / (kD / groups));
  } else {
    r.w = __ldcs(reinterpret_cast<const uint4*>(static_cast<const std::uint16_t*>(base) + at));
  }
  return r;
}

// The 8 elements widened to f32; INT8 and INT4 times their scale.
template <KvType kT>
__device__ __forceinline__ void widen(const Raw<kT>& r, float (&out)[8]) {
  if constexpr (kT == KvType::f32) {
    out[0] = r.a.x, out[1] = r.a.y, out[2] = r.a.z, out[3] = r.a.w, out[4] = r.b.x, out[5] = r.b.y, out[6] = r.b.z, out[7] = r.b.w;
  } else if constexpr (kT == KvType::i8) {
    const unsigned w[2] = {r.w.x, r.w.y};
#pragma unroll
    for (int i = 0; i < 8; ++i) out[i] = static_cast<float>(static_cast<signed char>((w[i / 4] >> (8 * (i % 4))) & 0xffu)) * r.s;
  } else if constexpr (kT == KvType::i4) {
#pragma unroll
    for (int i = 0; i < 8; ++i) out[i] = static_cast<float>(static_cast<int>(((r.w >> (4 * i)) & 0xfu) ^ 8u) - 8) * r.s;
  } else {
    const unsigned w[4] = {r.w.x, r.w.y, r.w.z, r.w.w};
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

// Slots per warp and tile: 64 tokens a tile where the registers allow (fewer for f32 pages, whose
// raw rows are twice the registers, and for groups above 4 heads, whose query and output are).
template <int kD, int kG, KvType kT>
struct SlotsPerTile {
  static constexpr int kTokensPerLoad = 32 / (kD / 8);
  static constexpr int kFull = 16 / kTokensPerLoad < 8 ? 16 / kTokensPerLoad : 8;
  static constexpr int value = kT == KvType::f32 || kG > 4 ? kFull / 2 : kFull;
};

template <int kD, int kG, KvType kT>
constexpr int kTileTokens = kWarps * SlotsPerTile<kD, kG, kT>::value * SlotsPerTile<kD, kG, kT>::kTokensPerLoad;

template <int kD, int kG, KvType kT>
__global__ void __launch_bounds__(kThreads) decode_kernel(PagedDecodeArgs a) {
  constexpr int kLanes = kD / 8;          // lanes per token
  constexpr int kTok = 32 / kLanes;       // tokens per warp per load
  constexpr int kU = SlotsPerTile<kD, kG, kT>::value;
  constexpr int kWarpTokens = kU * kTok;  // a warp's tokens per tile, consecutive
  constexpr int kTile = kWarps * kWarpTokens;
  static_assert(kTile == kTileTokens<kD, kG, kT>);
  __shared__ float s_max[kWarps][kG], s_sum[kWarps][kG];
  __shared__ float s_acc[kWarps][kG][kD];

  const std::int64_t b = blockIdx.x / a.n_kv_heads, kvh = blockIdx.x % a.n_kv_heads;
  const std::int64_t group = a.n_heads / a.n_kv_heads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int half = lane / kLanes, li = lane % kLanes;  // half: the lane's token of a load
  const std::int64_t len = seq_length(a, b);
  const std::int64_t first = a.sliding_window > 0 && len > a.sliding_window ? len - a.sliding_window : 0;
  const std::int64_t c0 = static_cast<std::int64_t>(blockIdx.y) * a.chunk;
  const std::int64_t lo = c0 > first ? c0 : first;
  const std::int64_t hi = c0 + a.chunk < len ? c0 + a.chunk : len;
  const std::int32_t* pages = a.indices + a.indptr[b];
  const std::int64_t ps = a.page_size;
  const int page_shift = (ps & (ps - 1)) == 0 ? __ffsll(static_cast<long long>(ps)) - 1 : -1;  // -1: not a power of two

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
  // The warp's online softmax per query head: running max m (the same in every lane), and per
  // lane the sum l and output acc of its token position's share (summed over the warp at the end).
  float m[kG], l[kG], acc[kG][8];
#pragma unroll
  for (int g = 0; g < kG; ++g) {
    m[g] = -CUDART_INF_F;
    l[g] = 0.f;
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[g][i] = 0.f;
  }

  // The loop bounds are the same for every thread of the block, so all lanes of a warp reach
  // every shuffle; slots past the end load the chunk's last row and score -inf.
  for (std::int64_t base = lo; base < hi; base += kTile) {
    const std::int64_t t0 = base + static_cast<std::int64_t>(warp) * kWarpTokens + half;  // the lane's token of slot 0
    Raw<kT> kr[kU], vr[kU];
#pragma unroll
    for (int j = 0; j < kU; ++j) {
      const std::int64_t t = t0 + static_cast<std::int64_t>(j) * kTok;
      const std::int64_t tc = t < hi ? t : hi - 1;
      std::int64_t page, slot;
      if (page_shift >= 0) {
        page = tc >> page_shift;
        slot = tc & (ps - 1);
      } else {
        page = tc / ps;
        slot = tc - page * ps;
      }
      const std::int64_t row = (static_cast<std::int64_t>(__ldg(pages + page)) * a.n_kv_heads + kvh) * ps + slot;
      kr[j] = load_raw<kD, kT>(a.k, a.k_scales, a.groups, row, li);
      vr[j] = load_raw<kD, kT>(a.v, a.v_scales, a.groups, row, li);
    }
    float s[kG][kU];
#pragma unroll
    for (int j = 0; j < kU; ++j) {
      float kf[8];
      widen<kT>(kr[j], kf);
#pragma unroll
      for (int g = 0; g < kG; ++g) {
        float d = 0.f;
#pragma unroll
        for (int i = 0; i < 8; ++i) d = fmaf(q[g][i], kf[i], d);
        s[g][j] = d;
      }
    }
#pragma unroll
    for (int off = kLanes / 2; off > 0; off /= 2)
#pragma unroll
      for (int g = 0; g < kG; ++g)
#pragma unroll
        for (int j = 0; j < kU; ++j) s[g][j] += __shfl_xor_sync(0xffffffffu, s[g][j], off);
#pragma unroll
    for (int g = 0; g < kG; ++g) {
      float mx = -CUDART_INF_F;
#pragma unroll
      for (int j = 0; j < kU; ++j) {
        if (t0 + static_cast<std::int64_t>(j) * kTok >= hi) s[g][j] = -CUDART_INF_F;
        mx = fmaxf(mx, s[g][j]);
      }
#pragma unroll
      for (int off = kLanes; off < 32; off *= 2) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      const float mn = fmaxf(m[g], mx);
      // -inf - -inf is NaN: a state or score of -inf (nothing yet, a slot past the end) weighs 0.
      const float corr = m[g] == -CUDART_INF_F ? 0.f : __expf(m[g] - mn);
      float sum = 0.f;
#pragma unroll
      for (int j = 0; j < kU; ++j) {
        s[g][j] = s[g][j] == -CUDART_INF_F ? 0.f : __expf(s[g][j] - mn);
        sum += s[g][j];
      }
      l[g] = fmaf(l[g], corr, sum);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[g][i] *= corr;
      m[g] = mn;
    }
#pragma unroll
    for (int j = 0; j < kU; ++j) {
      float vf[8];
      widen<kT>(vr[j], vf);
#pragma unroll
      for (int g = 0; g < kG; ++g)
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[g][i] = fmaf(s[g][j], vf[i], acc[g][i]);
    }
  }

  // The warp's state: sums over its token positions (m is the same in every lane).
#pragma unroll
  for (int off = kLanes; off < 32; off *= 2)
#pragma unroll
    for (int g = 0; g < kG; ++g) {
      l[g] += __shfl_xor_sync(0xffffffffu, l[g], off);
#pragma unroll
      for (int i = 0; i < 8; ++i) acc[g][i] += __shfl_xor_sync(0xffffffffu, acc[g][i], off);
    }
  // Merge the warps' states.
  if (half == 0) {
#pragma unroll
    for (int g = 0; g < kG; ++g) {
      if (li == 0) {
        s_max[warp][g] = m[g];
        s_sum[warp][g] = l[g];
      }
#pragma unroll
      for (int i = 0; i < 8; ++i) s_acc[warp][g][li * 8 + i] = acc[g][i];
    }
  }
  __syncthreads();
  for (int e = threadIdx.x; e < kG * kD; e += kThreads) {
    const int g = e / kD, d = e % kD;
    if (g >= group) continue;
    float mx = -CUDART_INF_F;
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, s_max[w][g]);
    float sum = 0.f, val = 0.f;
    if (mx != -CUDART_INF_F) {
      for (int w = 0; w < kWarps; ++w) {
        if (s_max[w][g] == -CUDART_INF_F) continue;  // a warp with no tokens
        const float f = __expf(s_max[w][g] - mx);
        sum = fmaf(s_sum[w][g], f, sum);
        val = fmaf(s_acc[w][g][d], f, val);
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

// merge_kernel's threads per output element: each takes every kMergeSplit-th chunk, so that a
// thread's loop, a chain of loads from L2, is kMergeSplit times shorter (at batch 1 the kernel
// has only batch * n_heads blocks, and a long context 128 chunks).
constexpr int kMergeSplit = 4;

// Merges the chunks of one (sequence, query head) by log-sum-exp: block of kMergeSplit x kD
// threads. The maximum over the chunks' maxima first (each thread a strided share of the chunks,
// then the block's reduction), then thread (s, d) sums element d over chunks s, s + kMergeSplit,
// ..., and the kMergeSplit partial sums meet in shared memory. Empty chunks (sum 0: past the
// sequence's end or before its window) are left out.
template <int kD>
__global__ void __launch_bounds__(kD * kMergeSplit) merge_kernel(PagedDecodeArgs a) {
  constexpr int kMergeThreads = kD * kMergeSplit;
  __shared__ float s_max[kMergeThreads / 32];
  __shared__ float s_val[kMergeSplit][kD], s_sum[kMergeSplit];
  const std::int64_t bh = blockIdx.x;
  const float* p = a.partial + bh * a.chunks * (kD + 2);
  const int t = threadIdx.x;
  float mx = -CUDART_INF_F;
  for (std::int64_t c = t; c < a.chunks; c += kMergeThreads)
    if (p[c * (kD + 2) + kD + 1] > 0.f) mx = fmaxf(mx, p[c * (kD + 2) + kD]);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
  if (t % 32 == 0) s_max[t / 32] = mx;
  __syncthreads();
#pragma unroll
  for (int w = 0; w < kMergeThreads / 32; ++w) mx = fmaxf(mx, s_max[w]);

  const int split = t / kD, d = t % kD;
  float sum = 0.f, val = 0.f;
#pragma unroll 4
  for (std::int64_t c = split; c < a.chunks; c += kMergeSplit) {
    const float* pc = p + c * (kD + 2);
    if (!(pc[kD + 1] > 0.f)) continue;
    const float w = __expf(pc[kD] - mx);
    sum = fmaf(pc[kD + 1], w, sum);
    val = fmaf(pc[d], w, val);
  }
  s_val[split][d] = val;
  if (d == 0) s_sum[split] = sum;
  __syncthreads();
  if (split == 0) {
#pragma unroll
    for (int s2 = 1; s2 < kMergeSplit; ++s2) {
      val += s_val[s2][d];
      sum += s_sum[s2];
    }
    a.out[bh * kD + d] = val / sum;
  }
}

template <int kD, int kG, class F>
void with_type(KvType t, F&& f) {
  using D = std::integral_constant<int, kD>;
  using G = std::integral_constant<int, kG>;
  switch (t) {
    case KvType::f32: f(D{}, G{}, std::integral_constant<KvType, KvType::f32>{}); break;
    case KvType::f16: f(D{}, G{}, std::integral_constant<KvType, KvType::f16>{}); break;
    case KvType::bf16: f(D{}, G{}, std::integral_constant<KvType, KvType::bf16>{}); break;
    case KvType::i8: f(D{}, G{}, std::integral_constant<KvType, KvType::i8>{}); break;
    case KvType::i4: f(D{}, G{}, std::integral_constant<KvType, KvType::i4>{}); break;
  }
}

template <int kD, class F>
bool with_group(std::int64_t group, KvType t, F&& f) {
  if (group == 1) with_type<kD, 1>(t, f);
  else if (group == 2) with_type<kD, 2>(t, f);
  else if (group == 3 || group == 4) with_type<kD, 4>(t, f);  // 3: a padded group of 4
  else if (group >= 5 && group <= 8) with_type<kD, 8>(t, f);
  else return false;
  return true;
}

// Calls f(D, G, T), integral constants of the decode kernel's template arguments (head_dim,
// query heads per kv head as the kernel takes them, K/V type) for a call's shape: the one place
// that maps shapes to kernels, for the launch and for paged_decode_tile_tokens. False when no
// kernel takes the shape (another head_dim, a group above 8).
template <class F>
bool with_decode_kernel(std::int64_t head_dim, std::int64_t group, KvType t, F&& f) {
  switch (head_dim) {
    case 64: return with_group<64>(group, t, f);
    case 128: return with_group<128>(group, t, f);
    case 256: return with_group<256>(group, t, f);
    default: return false;
  }
}

}  // namespace

int paged_decode_tile_tokens(std::int64_t head_dim, std::int64_t group, KvType kv_type) noexcept {
  int tile = 0;
  with_decode_kernel(head_dim, group, kv_type, [&](auto d, auto g, auto t) { tile = kTileTokens<decltype(d)::value, decltype(g)::value, decltype(t)::value>; });
  return tile;
}

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
  const dim3 grid(static_cast<unsigned>(a.batch * a.n_kv_heads), static_cast<unsigned>(a.chunks));
  const bool launched = with_decode_kernel(a.head_dim, a.n_heads / a.n_kv_heads, a.kv_type, [&](auto d, auto g, auto t) {
    constexpr int kD = decltype(d)::value, kG = decltype(g)::value;
    constexpr KvType kT = decltype(t)::value;
    QUARRY_LAUNCH(grid, kThreads, 0, decode_kernel<kD, kG, kT>)(a);
    if (a.chunks > 1) QUARRY_LAUNCH(static_cast<unsigned>(a.batch * a.n_heads), kD * kMergeSplit, 0, merge_kernel<kD>)(a);
  });
  return launched ? cudaGetLastError() : cudaErrorInvalidValue;
}

}  // namespace quarry::cuda_kernels
