// The AVX-512 F yardstick loops. Compiled with the AVX-512 flags and nothing else in the
// benchmark library is; called only when quarry::cpu_features() reports avx512f.
#include <immintrin.h>

#include "common/detail/peak_kernels.hpp"
#include "common/detail/block_pairs.hpp"

namespace quarry::bench::detail {

std::uint64_t read_sum_avx512(const std::byte* data, std::size_t bytes) noexcept {
  __m512i s0 = _mm512_setzero_si512(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
  std::size_t i = 0;
  for (; i + 512 <= bytes; i += 512) {
    const std::byte* p = data + i;
    s0 = _mm512_add_epi64(s0, _mm512_load_si512(p + 0 * 64));
    s1 = _mm512_add_epi64(s1, _mm512_load_si512(p + 1 * 64));
    s2 = _mm512_add_epi64(s2, _mm512_load_si512(p + 2 * 64));
    s3 = _mm512_add_epi64(s3, _mm512_load_si512(p + 3 * 64));
    s4 = _mm512_add_epi64(s4, _mm512_load_si512(p + 4 * 64));
    s5 = _mm512_add_epi64(s5, _mm512_load_si512(p + 5 * 64));
    s6 = _mm512_add_epi64(s6, _mm512_load_si512(p + 6 * 64));
    s7 = _mm512_add_epi64(s7, _mm512_load_si512(p + 7 * 64));
  }
  const __m512i s = _mm512_add_epi64(_mm512_add_epi64(_mm512_add_epi64(s0, s1), _mm512_add_epi64(s2, s3)),
                                     _mm512_add_epi64(_mm512_add_epi64(s4, s5), _mm512_add_epi64(s6, s7)));
  // Lane sums wrap (as intended); add them as unsigned: GCC's _mm512_reduce_add_epi64 adds as
  // signed, which UBSan flags on overflow.
  alignas(64) std::uint64_t lanes[8];
  _mm512_store_si512(lanes, s);
  std::uint64_t total = 0;
  for (const std::uint64_t lane : lanes) total += lane;
  for (; i < bytes; ++i) total += static_cast<std::uint64_t>(data[i]);
  return total;
}

std::uint64_t read_blocks_avx512(const std::byte* data, const std::uint32_t* blocks, std::size_t count, std::size_t block_bytes,
                               std::size_t ahead) noexcept {
  __m512i s[8];
  for (__m512i& x : s) x = _mm512_setzero_si512();
  walk_block_pairs(data, blocks, count, block_bytes, ahead, [&](const std::byte* p) {
    for (int k = 0; k < 8; ++k) s[k] = _mm512_add_epi64(s[k], _mm512_load_si512(p + k * 64));
  });
  alignas(64) std::uint64_t lanes[8 * 64 / 8];
  for (int k = 0; k < 8; ++k) _mm512_store_si512(reinterpret_cast<__m512i*>(lanes) + k, s[k]);
  std::uint64_t total = 0;
  for (const std::uint64_t lane : lanes) total += lane;
  return total;
}

float fma_chains_avx512(std::uint64_t iterations) noexcept {
  // 16 chains: enough for 2 FMA units x 4-cycle latency (Intel) and for Zen 4's double-pumped
  // 512-bit FMA; 16 accumulators + 2 constants leave most of the 32 zmm registers free.
  const __m512 mul = _mm512_set1_ps(0.999999f);
  const __m512 add = _mm512_set1_ps(1e-6f);
  __m512 a0 = _mm512_set1_ps(0.00f), a1 = _mm512_set1_ps(0.01f), a2 = _mm512_set1_ps(0.02f),
         a3 = _mm512_set1_ps(0.03f), a4 = _mm512_set1_ps(0.04f), a5 = _mm512_set1_ps(0.05f),
         a6 = _mm512_set1_ps(0.06f), a7 = _mm512_set1_ps(0.07f), a8 = _mm512_set1_ps(0.08f),
         a9 = _mm512_set1_ps(0.09f), a10 = _mm512_set1_ps(0.10f), a11 = _mm512_set1_ps(0.11f),
         a12 = _mm512_set1_ps(0.12f), a13 = _mm512_set1_ps(0.13f), a14 = _mm512_set1_ps(0.14f),
         a15 = _mm512_set1_ps(0.15f);
  for (std::uint64_t it = 0; it < iterations; ++it) {
    a0 = _mm512_fmadd_ps(a0, mul, add);
    a1 = _mm512_fmadd_ps(a1, mul, add);
    a2 = _mm512_fmadd_ps(a2, mul, add);
    a3 = _mm512_fmadd_ps(a3, mul, add);
    a4 = _mm512_fmadd_ps(a4, mul, add);
    a5 = _mm512_fmadd_ps(a5, mul, add);
    a6 = _mm512_fmadd_ps(a6, mul, add);
    a7 = _mm512_fmadd_ps(a7, mul, add);
    a8 = _mm512_fmadd_ps(a8, mul, add);
    a9 = _mm512_fmadd_ps(a9, mul, add);
    a10 = _mm512_fmadd_ps(a10, mul, add);
    a11 = _mm512_fmadd_ps(a11, mul, add);
    a12 = _mm512_fmadd_ps(a12, mul, add);
    a13 = _mm512_fmadd_ps(a13, mul, add);
    a14 = _mm512_fmadd_ps(a14, mul, add);
    a15 = _mm512_fmadd_ps(a15, mul, add);
  }
  const __m512 s = _mm512_add_ps(
      _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                    _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7))),
      _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)),
                    _mm512_add_ps(_mm512_add_ps(a12, a13), _mm512_add_ps(a14, a15))));
  return _mm512_reduce_add_ps(s);
}

}  // namespace quarry::bench::detail
