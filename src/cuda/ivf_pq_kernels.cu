// IVF-PQ search on the GPU: coarse ranking, ADC scan of the probed lists and top-k by
// (distance, id). See ivf_pq_kernels.h for the passes and their buffers.
//
// Equality with the CPU index (src/index/ivf_pq.cpp). The scan uses the CPU's arithmetic step for
// step, with explicitly rounded operations (__fadd_rn, __fmul_rn, __fsub_rn: no FMA contraction):
// l2 tables either from the precomputed terms (||r||^2 + 2 c.r, made with the CPU's loop, minus
// 2 q.r; constant max(0, ||q||^2 + coarse)) or of the residual (sum_t ((q_t - c_t) - cb_t)^2;
// constant 0), as the CPU chooses; the code distance is the constant plus (l2) or minus (inner
// product) the m table entries added in the CPU's chains (see adc_sum). ||q||^2 comes from the
// host (the CPU's own dot). Computed differently, so equal only to float rounding: the coarse
// products q.c (here a GEMM with FMA; on the CPU the SIMD dot of the ISA it runs), which enter
// the constants; the query's inner products with the codewords q.r (here a sequential sum per
// entry; on the CPU an Eigen matrix-vector product, whose order depends on Eigen's version and
// SIMD width), which make the inner-product tables and the q.r part of the precomputed l2
// tables; and the exact re-ranking distances (a warp reduction here). So the ids equal the CPU's
// except where two centroids, two candidates, or two re-ranked candidates are within a few ulp
// of each other, and distances may differ from the CPU's in the last bits. Exact ties (equal
// codes in one list, equal stored vectors) stay exact and are broken by id on both sides.
//
// Top-k. Distances become uint32 keys that order as the floats do (-0 as +0; NaN and filtered-
// out candidates become 0xffffffff, "excluded", and are never returned). A block-wide radix
// select (8-bit digits, a shared-memory histogram per pass) finds the threshold key T of the
// keep-th smallest; when more candidates tie at T than are still wanted, a second radix select
// over their ids (ids are unique in an index) takes the smallest ids, which is the CPU's rule
// of ties. The selected candidates are gathered into shared memory and bitonic-sorted by
// (key, id). The scan writes every probed code's key to global memory first (4 bytes per code;
// the select reads them 4 to 12 times): simple and exact for any list sizes, at some cost in
// memory traffic against a fused per-block top-k.
#include "ivf_pq_kernels.h"
#include "launch.cuh"
#include "simt_tile.cuh"

#include <cuda_runtime.h>

namespace quarry::cuda_kernels {
namespace {

constexpr int kWarp = 32;
constexpr int kSelectThreads = 512;
constexpr int kScanThreads = 256;
constexpr int kTableThreads = 256;
constexpr std::uint32_t kExcluded = 0xffffffffu;
constexpr std::size_t kDefaultSharedLimit = 48 * 1024;

// --- distance keys ------------------------------------------------------------------------------

// A uint32 that orders as the float does; NaN (never produced by finite data) is excluded.
__device__ __forceinline__ std::uint32_t float_key(float f) {
  if (f != f) return kExcluded;
  if (f == 0.f) f = 0.f;  // -0 ties with +0, as in the CPU's float comparisons
  const std::uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float key_float(std::uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

// --- block-wide radix select ---------------------------------------------------------------------

struct SelectShared {
  unsigned int hist[256];
  unsigned int excluded;
  unsigned int remaining;   // elements still wanted at or above the current prefix
  unsigned int last_count;  // elements whose key equals the full threshold
  unsigned int count;       // gather slots taken
  std::uint32_t key_prefix;
  unsigned long long id_prefix;
};

// Which elements the select keeps: mode 0: key < key_threshold (key_threshold = kExcluded: every
// element that is not excluded); mode 1: key <= key_threshold; mode 2: key < key_threshold, or
// key == key_threshold and id <= id_threshold.
struct Threshold {
  std::uint32_t key;
  int mode;
  unsigned long long id;
};

template <class IdAt>
__device__ __forceinline__ bool is_selected(const Threshold& t, std::uint32_t key, std::int64_t j, IdAt id_at) {
  if (key == kExcluded) return false;
  if (key != t.key) return key < t.key;
  if (t.mode == 1) return true;
  if (t.mode == 2) return static_cast<unsigned long long>(id_at(j)) <= t.id;
  return false;
}

// Thread 0: the digit whose bin holds the `remaining`-th element in digit order; updates the
// remaining count. Returns the digit.
__device__ __forceinline__ unsigned int pick_digit(SelectShared& sh) {
  unsigned int before = 0;
  unsigned int b = 0;
  for (; b < 255; ++b) {
    if (before + sh.hist[b] >= sh.remaining) break;
    before += sh.hist[b];
  }
  sh.remaining -= before;
  sh.last_count = sh.hist[b];
  return b;
}

// The threshold of the `want` (>= 1) smallest elements j in [0, n) by (key_at(j), id_at(j)).
// Every thread of the block must call it; it reads the keys 4 times (and the ids of the keys
// equal to the threshold up to 8 times when ties straddle it).
template <class KeyAt, class IdAt>
__device__ Threshold block_select(std::int64_t n, std::int64_t want, KeyAt key_at, IdAt id_at, SelectShared& sh) {
  const int tid = threadIdx.x, nthreads = blockDim.x;
  if (tid == 0) {
    sh.excluded = 0;
    sh.key_prefix = 0;
    sh.remaining = static_cast<unsigned int>(want);
  }
  std::uint32_t mask = 0;
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int b = tid; b < 256; b += nthreads) sh.hist[b] = 0;
    __syncthreads();
    const std::uint32_t prefix = sh.key_prefix;
    for (std::int64_t j = tid; j < n; j += nthreads) {
      const std::uint32_t key = key_at(j);
      if (shift == 24 && key == kExcluded) atomicAdd(&sh.excluded, 1u);
      if ((key & mask) == prefix) atomicAdd(&sh.hist[(key >> shift) & 0xffu], 1u);
    }
    __syncthreads();
    if (shift == 24 && n - static_cast<std::int64_t>(sh.excluded) <= want) return {kExcluded, 0, 0};
    if (tid == 0) sh.key_prefix |= pick_digit(sh) << shift;
    __syncthreads();
    mask |= 0xffu << shift;
  }
  const std::uint32_t threshold = sh.key_prefix;
  if (sh.remaining == sh.last_count) return {threshold, 1, 0};

  // More elements have the threshold key than are wanted: the smallest ids among them.
  unsigned long long id_mask = 0;
  if (tid == 0) sh.id_prefix = 0;
  for (int shift = 56; shift >= 0; shift -= 8) {
    for (int b = tid; b < 256; b += nthreads) sh.hist[b] = 0;
    __syncthreads();
    const unsigned long long prefix = sh.id_prefix;
    for (std::int64_t j = tid; j < n; j += nthreads) {
      if (key_at(j) != threshold) continue;
      const auto id = static_cast<unsigned long long>(id_at(j));
      if ((id & id_mask) == prefix) atomicAdd(&sh.hist[(id >> shift) & 0xffu], 1u);
    }
    __syncthreads();
    if (tid == 0) sh.id_prefix |= static_cast<unsigned long long>(pick_digit(sh)) << shift;
    __syncthreads();
    id_mask |= 0xffull << shift;
  }
  return {threshold, 2, sh.id_prefix};
}

// Sorts n (a power of two) entries by (key, id), ascending; every thread of the block calls it.
__device__ void bitonic_sort(std::uint32_t* key, std::int64_t* id, std::int64_t* pos, int n) {
  for (int size = 2; size <= n; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < n / 2; i += blockDim.x) {
        const int lo = 2 * stride * (i / stride) + (i % stride), hi = lo + stride;
        const bool ascending = (lo & size) == 0;
        const bool greater = key[lo] > key[hi] || (key[lo] == key[hi] && id[lo] > id[hi]);
        if (greater == ascending) {
          const std::uint32_t k = key[lo];
          key[lo] = key[hi];
          key[hi] = k;
          const std::int64_t d = id[lo];
          id[lo] = id[hi];
          id[hi] = d;
          const std::int64_t p = pos[lo];
          pos[lo] = pos[hi];
          pos[hi] = p;
        }
      }
      __syncthreads();
    }
  }
}

// --- 1. coarse distances -------------------------------------------------------------------------

constexpr int kCoarseTile = 64;  // queries and centroids per block
constexpr int kCoarseK = 16;     // dimensions per shared-memory step

// out[q, l] = l2 ? ||c_l||^2 - 2 q.c_l : -q.c_l. 256 threads, each 4 x 4 outputs.
__global__ void __launch_bounds__(256) coarse_kernel(const float* __restrict__ queries, std::int64_t nq,
                                                     IvfPqDeviceIndex ix, float* __restrict__ out) {
  __shared__ float qs[kCoarseK][kCoarseTile + 1];
  __shared__ float cs[kCoarseK][kCoarseTile + 1];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const std::int64_t q0 = static_cast<std::int64_t>(blockIdx.y) * kCoarseTile;
  const std::int64_t l0 = static_cast<std::int64_t>(blockIdx.x) * kCoarseTile;
  const std::int64_t d = ix.d;
  float acc[4][4] = {};
  for (std::int64_t k0 = 0; k0 < d; k0 += kCoarseK) {
    for (int e = threadIdx.x; e < kCoarseTile * kCoarseK; e += 256) {
      const int r = e / kCoarseK, kk = e % kCoarseK;
      const std::int64_t col = k0 + kk;
      qs[kk][r] = (q0 + r < nq && col < d) ? queries[(q0 + r) * d + col] : 0.f;
      cs[kk][r] = (l0 + r < ix.nlist && col < d) ? ix.centroids[(l0 + r) * d + col] : 0.f;
    }
    __syncthreads();
    simt_tile_4x4(qs, cs, ty, tx, acc);
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const std::int64_t q = q0 + ty + 16 * i;
    if (q >= nq) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const std::int64_t l = l0 + tx + 16 * j;
      if (l >= ix.nlist) continue;
      // As the CPU: centroid_norm - 2 * ip (2 * ip is exact), or -ip.
      out[q * ix.nlist + l] = ix.l2 ? __fsub_rn(ix.centroid_norms[l], __fmul_rn(2.f, acc[i][j])) : -acc[i][j];
    }
  }
}

// --- 2. probed lists -----------------------------------------------------------------------------

__device__ __forceinline__ std::int64_t list_length(const IvfPqDeviceIndex& ix, std::int32_t l) {
  return l < 0 ? 0 : ix.list_offsets[l + 1] - ix.list_offsets[l];
}

// One block per query: the nprobe nearest lists (as a set; their order does not matter to the
// results) and the offsets of their candidates.
__global__ void __launch_bounds__(kSelectThreads) probes_kernel(IvfPqDeviceIndex ix, IvfPqSearchPass ps) {
  __shared__ SelectShared sh;
  __shared__ std::int64_t partial[kSelectThreads + 1];
  const std::int64_t q = blockIdx.x;
  const float* coarse = ps.coarse + q * ix.nlist;
  std::int32_t* probes = ps.probes + q * ps.nprobe;
  std::int64_t* offsets = ps.candidate_offsets + q * (ps.nprobe + 1);
  const auto key_at = [&](std::int64_t l) { return float_key(coarse[l]); };
  const auto id_at = [](std::int64_t l) { return l; };  // ties: the smaller list first

  const Threshold t = block_select(ix.nlist, ps.nprobe, key_at, id_at, sh);
  if (threadIdx.x == 0) sh.count = 0;
  __syncthreads();
  for (std::int64_t l = threadIdx.x; l < ix.nlist; l += blockDim.x) {
    if (!is_selected(t, key_at(l), l, id_at)) continue;
    const unsigned int slot = atomicAdd(&sh.count, 1u);
    if (slot < ps.nprobe) probes[slot] = static_cast<std::int32_t>(l);
  }
  __syncthreads();
  for (std::int64_t s = sh.count + threadIdx.x; s < ps.nprobe; s += blockDim.x) probes[s] = -1;  // only with NaN scores
  __syncthreads();

  // Exclusive prefix sum of the probed lists' lengths: each thread a contiguous run of probes.
  const std::int64_t per = (ps.nprobe + blockDim.x - 1) / blockDim.x;
  const std::int64_t p0 = threadIdx.x * per, p1 = p0 + per < ps.nprobe ? p0 + per : ps.nprobe;
  std::int64_t local = 0;
  for (std::int64_t p = p0; p < p1; ++p) local += list_length(ix, probes[p]);
  partial[threadIdx.x] = local;
  __syncthreads();
  if (threadIdx.x == 0) {
    std::int64_t run = 0;
    for (unsigned int i = 0; i < blockDim.x; ++i) {
      const std::int64_t v = partial[i];
      partial[i] = run;
      run += v;
    }
    partial[blockDim.x] = run;
  }
  __syncthreads();
  std::int64_t run = partial[threadIdx.x];
  for (std::int64_t p = p0; p < p1; ++p) {
    offsets[p] = run;
    run += list_length(ix, probes[p]);
  }
  if (threadIdx.x == 0) offsets[ps.nprobe] = partial[blockDim.x];
}

// --- l2 terms (once per index) -------------------------------------------------------------------

// terms[l, j, c] = ||r||^2 + 2 c_l.r for r = codeword (j, c), as IvfPqIndex<cpu> computes them.
__global__ void __launch_bounds__(256) l2_terms_kernel(IvfPqDeviceIndex ix, float* __restrict__ terms) {
  const std::int64_t ksub = std::int64_t{1} << ix.nbits, dsub = ix.d / ix.m, size = ix.m * ksub, total = ix.nlist * size;
  for (std::int64_t e = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < total;
       e += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t l = e / size, rem = e % size, j = rem / ksub;
    const float* r = ix.codebooks + rem * dsub;
    const float* c = ix.centroids + l * ix.d + j * dsub;
    float rr = 0.f, cr = 0.f;
    for (std::int64_t t = 0; t < dsub; ++t) {
      rr = __fadd_rn(rr, __fmul_rn(r[t], r[t]));
      cr = __fadd_rn(cr, __fmul_rn(c[t], r[t]));
    }
    terms[e] = __fadd_rn(rr, __fmul_rn(2.f, cr));
  }
}

// --- 3. inner-product tables ---------------------------------------------------------------------

// One block per query: table[j, c] = sum_t q[j * dsub + t] * cb[j, c, t], summed in t order (the
// CPU uses an Eigen matrix-vector product: equal to rounding).
__global__ void __launch_bounds__(kTableThreads) ip_table_kernel(IvfPqDeviceIndex ix, IvfPqSearchPass ps) {
  const std::int64_t q = blockIdx.x;
  const std::int64_t ksub = std::int64_t{1} << ix.nbits, dsub = ix.d / ix.m, size = ix.m * ksub;
  const float* qv = ps.queries + q * ix.d;
  float* table = ps.ip_tables + q * size;
  for (std::int64_t e = threadIdx.x; e < size; e += blockDim.x) {
    const float* qs = qv + (e / ksub) * dsub;
    const float* cb = ix.codebooks + e * dsub;
    float s = 0.f;
    for (std::int64_t t = 0; t < dsub; ++t) s = __fadd_rn(s, __fmul_rn(qs[t], cb[t]));
    table[e] = s;
  }
}

// --- 4. the scan ---------------------------------------------------------------------------------

// The ADC sum of one code in the CPU's order (IvfPqIndex<cpu>'s scan, which keeps independent
// chains of additions): 8 bits, four chains, sub-quantizer j in chain j % 4 for j below
// m - m % 4 and the rest in chain 0, total (s0 + s1) + (s2 + s3); 4 bits, two chains, j in
// chain j % 2 (the last j of an odd m, in chain 0 anyway), total s0 + s1. Each chain adds its
// entries in increasing j.

// acc[chain] += v, with `chain` in registers (no dynamic indexing of the array).
__device__ __forceinline__ void add_to(float* acc, int chain, float v) {
  switch (chain) {
    case 0: acc[0] = __fadd_rn(acc[0], v); break;
    case 1: acc[1] = __fadd_rn(acc[1], v); break;
    case 2: acc[2] = __fadd_rn(acc[2], v); break;
    default: acc[3] = __fadd_rn(acc[3], v); break;
  }
}

// Adds the table entries of code byte b: sub-quantizer b with 8 bits (into chain `chain`); 2b
// (low nibble, chain 0) and 2b + 1 (high nibble, chain 1) with 4 bits, the high nibble of the
// last byte of an odd m being padding.
template <int kBits>
__device__ __forceinline__ void add_byte(float* acc, unsigned int byte, int b, int chain, int m, const float* tab) {
  if constexpr (kBits == 8) {
    add_to(acc, chain, tab[b * 256 + byte]);
  } else {
    const int j = 2 * b;
    acc[0] = __fadd_rn(acc[0], tab[j * 16 + (byte & 15u)]);
    if (j + 1 < m) acc[1] = __fadd_rn(acc[1], tab[(j + 1) * 16 + (byte >> 4)]);
  }
}

// Four code bytes from byte b0 (a multiple of 4). Taken only when code_size % 4 == 0, so with 8
// bits m % 4 == 0 and byte b0 + i goes to chain i.
template <int kBits>
__device__ __forceinline__ void add_word(float* acc, std::uint32_t w, int b0, int m, const float* tab) {
#pragma unroll
  for (int i = 0; i < 4; ++i) add_byte<kBits>(acc, (w >> (8 * i)) & 0xffu, b0 + i, i, m, tab);
}

// The code read 16 (kVec 16: code_size % 16 == 0), 4 (code_size % 4 == 0) or 1 byte at a time.
template <int kBits, int kVec>
__device__ __forceinline__ float adc_sum(const std::uint8_t* __restrict__ code, int code_size, int m, const float* tab) {
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  if constexpr (kVec == 16) {
    const uint4* w = reinterpret_cast<const uint4*>(code);
    for (int c = 0; c < code_size / 16; ++c) {
      const uint4 v = w[c];
      add_word<kBits>(acc, v.x, 16 * c, m, tab);
      add_word<kBits>(acc, v.y, 16 * c + 4, m, tab);
      add_word<kBits>(acc, v.z, 16 * c + 8, m, tab);
      add_word<kBits>(acc, v.w, 16 * c + 12, m, tab);
    }
  } else if constexpr (kVec == 4) {
    const std::uint32_t* w = reinterpret_cast<const std::uint32_t*>(code);
    for (int c = 0; c < code_size / 4; ++c) add_word<kBits>(acc, w[c], 4 * c, m, tab);
  } else {
    const int mfull = m - (m & 3);  // 8 bits: sub-quantizers past the last group of 4 go to chain 0
    for (int b = 0; b < code_size; ++b) add_byte<kBits>(acc, code[b], b, b < mfull ? (b & 3) : 0, m, tab);
  }
  if constexpr (kBits == 8) return __fadd_rn(__fadd_rn(acc[0], acc[1]), __fadd_rn(acc[2], acc[3]));
  else return __fadd_rn(acc[0], acc[1]);
}

// Block (probe p, query q, split z): the list's table, then the keys of codes
// [len * z / splits, len * (z + 1) / splits) of the list, one thread per code.
template <int kBits, int kVec>
__global__ void __launch_bounds__(kScanThreads) scan_kernel(IvfPqDeviceIndex ix, IvfPqSearchPass ps) {
  QUARRY_DYNAMIC_SHARED(unsigned char, scan_smem);
  const std::int64_t p = blockIdx.x, q = blockIdx.y;
  const int z = blockIdx.z;
  const std::int32_t l = ps.probes[q * ps.nprobe + p];
  if (l < 0) return;
  const std::int64_t start = ix.list_offsets[l], len = ix.list_offsets[l + 1] - start;
  const std::int64_t i0 = len * z / ps.splits, i1 = len * (z + 1) / ps.splits;
  if (i0 >= i1) return;

  constexpr int kSub = 1 << kBits;
  const std::int64_t size = ix.m * kSub;
  const float* qv = ps.queries + q * ix.d;
  float* tab;
  float base = 0.f;  // the list's constant
  if (ix.l2) {
    tab = ps.tables_in_shared ? reinterpret_cast<float*>(scan_smem)
                              : ps.table_scratch + ((q * ps.nprobe + p) * ps.splits + z) * size;
    if (ix.l2_terms != nullptr) {
      // ||q - c - r||^2 = ||q - c||^2 + (||r||^2 + 2 c.r) - 2 q.r: the terms minus twice the
      // query's products; the constant max(0, ||q||^2 + (||c||^2 - 2 q.c)), as the CPU's.
      const float* terms = ix.l2_terms + static_cast<std::int64_t>(l) * size;
      const float* qt = ps.ip_tables + q * size;
      for (std::int64_t e = threadIdx.x; e < size; e += blockDim.x) tab[e] = __fsub_rn(terms[e], __fmul_rn(2.f, qt[e]));
      const float b = __fadd_rn(ps.query_norms[q], ps.coarse[q * ix.nlist + l]);
      base = 0.f < b ? b : 0.f;
    } else {
      // The table of the residual q - c_l: entry (j, c) = sum_t ((q_t - c_t) - cb_t)^2.
      const float* cv = ix.centroids + static_cast<std::int64_t>(l) * ix.d;
      const std::int64_t dsub = ix.d / ix.m;
      for (std::int64_t e = threadIdx.x; e < size; e += blockDim.x) {
        const std::int64_t off = (e / kSub) * dsub;
        const float* cb = ix.codebooks + e * dsub;
        float s = 0.f;
        for (std::int64_t t = 0; t < dsub; ++t) {
          const float diff = __fsub_rn(__fsub_rn(qv[off + t], cv[off + t]), cb[t]);
          s = __fadd_rn(s, __fmul_rn(diff, diff));
        }
        tab[e] = s;
      }
    }
  } else {
    base = ps.coarse[q * ix.nlist + l];  // -q.c
    const float* src = ps.ip_tables + q * size;
    if (ps.tables_in_shared) {
      tab = reinterpret_cast<float*>(scan_smem);
      for (std::int64_t e = threadIdx.x; e < size; e += blockDim.x) tab[e] = src[e];
    } else {
      tab = const_cast<float*>(src);
    }
  }
  __syncthreads();

  std::uint32_t* out = ps.candidate_keys + q * ps.max_candidates + ps.candidate_offsets[q * (ps.nprobe + 1) + p];
  const int code_size = static_cast<int>(ix.code_size), m = static_cast<int>(ix.m);
  for (std::int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
    const float sum = adc_sum<kBits, kVec>(ix.codes + (start + i) * ix.code_size, code_size, m, tab);
    // The CPU's base + sign * sum, exactly: base + sum (l2) or base - sum (inner product).
    std::uint32_t key = float_key(ix.l2 ? __fadd_rn(base, sum) : __fsub_rn(base, sum));
    if (ps.allowed != nullptr) {
      const auto id = static_cast<std::uint64_t>(ix.ids[start + i]);
      const std::uint64_t word = id >> 6;
      if (word >= static_cast<std::uint64_t>(ps.allowed_words) || !((ps.allowed[word] >> (id & 63u)) & 1u)) key = kExcluded;
    }
    out[i] = key;
  }
}

// --- 5. select, re-rank, write -------------------------------------------------------------------

// One block per query; dynamic shared memory: pow2 ids, pow2 positions, pow2 keys.
__global__ void __launch_bounds__(kSelectThreads) select_kernel(IvfPqDeviceIndex ix, IvfPqSearchPass ps, int pow2) {
  QUARRY_DYNAMIC_SHARED(unsigned char, select_smem);
  __shared__ SelectShared sh;
  std::int64_t* sid = reinterpret_cast<std::int64_t*>(select_smem);
  std::int64_t* spos = sid + pow2;
  std::uint32_t* skey = reinterpret_cast<std::uint32_t*>(spos + pow2);

  const std::int64_t q = blockIdx.x, nprobe = ps.nprobe;
  const std::int64_t* offsets = ps.candidate_offsets + q * (nprobe + 1);
  const std::int32_t* probes = ps.probes + q * nprobe;
  const std::uint32_t* keys = ps.candidate_keys + q * ps.max_candidates;
  const std::int64_t n = offsets[nprobe];

  // Candidate j of this query -> its position in the index: the probe whose range holds j.
  const auto position = [&](std::int64_t j) {
    std::int64_t lo = 0, hi = nprobe - 1;
    while (lo < hi) {
      const std::int64_t mid = (lo + hi + 1) / 2;
      if (offsets[mid] <= j) lo = mid;
      else hi = mid - 1;
    }
    return ix.list_offsets[probes[lo]] + (j - offsets[lo]);
  };
  const auto key_at = [&](std::int64_t j) { return keys[j]; };
  const auto id_at = [&](std::int64_t j) { return ix.ids[position(j)]; };

  const Threshold t = block_select(n, ps.keep, key_at, id_at, sh);
  if (threadIdx.x == 0) sh.count = 0;
  __syncthreads();
  for (std::int64_t j = threadIdx.x; j < n; j += blockDim.x) {
    const std::uint32_t key = keys[j];
    if (!is_selected(t, key, j, id_at)) continue;
    const unsigned int slot = atomicAdd(&sh.count, 1u);
    if (slot >= ps.keep) continue;
    const std::int64_t g = position(j);
    skey[slot] = key;
    sid[slot] = ix.ids[g];
    spos[slot] = g;
  }
  __syncthreads();
  const int count = sh.count < ps.keep ? static_cast<int>(sh.count) : static_cast<int>(ps.keep);
  for (int s = count + threadIdx.x; s < pow2; s += blockDim.x) {
    skey[s] = kExcluded;
    sid[s] = 0x7fffffffffffffffll;
    spos[s] = -1;
  }
  __syncthreads();
  bitonic_sort(skey, sid, spos, pow2);

  if (ix.vectors != nullptr) {
    // Exact distances on the stored vectors, one warp per candidate, then sorted again.
    const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp, warps = blockDim.x / kWarp;
    const float* qv = ps.queries + q * ix.d;
    for (int s = warp; s < count; s += warps) {
      const float* v = ix.vectors + spos[s] * ix.d;
      float acc = 0.f;
      if (ix.l2) {
        for (std::int64_t t2 = lane; t2 < ix.d; t2 += kWarp) {
          const float e = qv[t2] - v[t2];
          acc = fmaf(e, e, acc);
        }
      } else {
        for (std::int64_t t2 = lane; t2 < ix.d; t2 += kWarp) acc = fmaf(qv[t2], v[t2], acc);
      }
#pragma unroll
      for (int off = kWarp / 2; off > 0; off /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, off);
      if (lane == 0) skey[s] = float_key(ix.l2 ? acc : -acc);
    }
    __syncthreads();
    bitonic_sort(skey, sid, spos, pow2);
  }

  float* out_d = ps.distances + q * ps.k;
  std::int64_t* out_i = ps.ids + q * ps.k;
  const float pad = ix.l2 ? __int_as_float(0x7f800000) : __int_as_float(static_cast<int>(0xff800000u));
  for (std::int64_t r = threadIdx.x; r < ps.k; r += blockDim.x) {
    if (r < count && skey[r] != kExcluded) {
      const float dist = key_float(skey[r]);
      out_d[r] = ix.l2 ? dist : -dist;
      out_i[r] = sid[r];
    } else {
      out_d[r] = pad;
      out_i[r] = -1;
    }
  }
}

// --- launches ------------------------------------------------------------------------------------

template <int kBits, int kVec>
cudaError_t launch_scan(const IvfPqDeviceIndex& ix, const IvfPqSearchPass& ps) {
  const std::size_t smem = ps.tables_in_shared ? static_cast<std::size_t>(ix.m) * (std::size_t{1} << kBits) * sizeof(float) : 0;
  if (smem > kDefaultSharedLimit) {
    const cudaError_t e = cudaFuncSetAttribute(scan_kernel<kBits, kVec>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return e;
  }
  const dim3 grid(static_cast<unsigned int>(ps.nprobe), static_cast<unsigned int>(ps.nq), static_cast<unsigned int>(ps.splits));
  QUARRY_LAUNCH(grid, kScanThreads, smem, scan_kernel<kBits, kVec>)(ix, ps);
  return cudaGetLastError();
}

template <int kBits>
cudaError_t launch_scan_bits(const IvfPqDeviceIndex& ix, const IvfPqSearchPass& ps) {
  if (ix.code_size % 16 == 0) return launch_scan<kBits, 16>(ix, ps);
  if (ix.code_size % 4 == 0) return launch_scan<kBits, 4>(ix, ps);
  return launch_scan<kBits, 1>(ix, ps);
}

}  // namespace

cudaError_t launch_ivf_pq_l2_terms(const IvfPqDeviceIndex& ix, float* terms) noexcept {
  const std::int64_t total = ix.nlist * ix.m * (std::int64_t{1} << ix.nbits);
  if (total == 0) return cudaSuccess;
  const std::int64_t blocks = (total + 255) / 256;
  QUARRY_LAUNCH(static_cast<unsigned int>(blocks < 65536 ? blocks : 65536), 256, 0, l2_terms_kernel)(ix, terms);
  return cudaGetLastError();
}

cudaError_t launch_ivf_pq_search(const IvfPqDeviceIndex& ix, const IvfPqSearchPass& ps) noexcept {
  if (ps.nq <= 0) return cudaSuccess;
  cudaError_t e = cudaSuccess;

  const dim3 coarse_grid(static_cast<unsigned int>((ix.nlist + kCoarseTile - 1) / kCoarseTile),
                         static_cast<unsigned int>((ps.nq + kCoarseTile - 1) / kCoarseTile));
  QUARRY_LAUNCH(coarse_grid, 256, 0, coarse_kernel)(ps.queries, ps.nq, ix, ps.coarse);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;

  QUARRY_LAUNCH(static_cast<unsigned int>(ps.nq), kSelectThreads, 0, probes_kernel)(ix, ps);
  if ((e = cudaGetLastError()) != cudaSuccess) return e;

  if (!ix.l2 || ix.l2_terms != nullptr) {
    QUARRY_LAUNCH(static_cast<unsigned int>(ps.nq), kTableThreads, 0, ip_table_kernel)(ix, ps);
    if ((e = cudaGetLastError()) != cudaSuccess) return e;
  }

  e = ix.nbits == 8 ? launch_scan_bits<8>(ix, ps) : launch_scan_bits<4>(ix, ps);
  if (e != cudaSuccess) return e;

  int pow2 = 1;
  while (pow2 < ps.keep) pow2 *= 2;
  const std::size_t smem = static_cast<std::size_t>(pow2) * (2 * sizeof(std::int64_t) + sizeof(std::uint32_t));
  if (smem > kDefaultSharedLimit - sizeof(SelectShared)) {
    if ((e = cudaFuncSetAttribute(select_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem))) != cudaSuccess) return e;
  }
  QUARRY_LAUNCH(static_cast<unsigned int>(ps.nq), kSelectThreads, smem, select_kernel)(ix, ps, pow2);
  return cudaGetLastError();
}

}  // namespace quarry::cuda_kernels
