// The AVX2 + FMA yardstick loops. Compiled with -mavx2 -mfma and nothing else in the benchmark
// library is; called only when quarry::cpu_features() reports avx2 and fma.
#include <immintrin.h>

#include "common/detail/peak_kernels.hpp"
#include "common/detail/block_pairs.hpp"

namespace quarry::bench::detail {

std::uint64_t read_sum_avx2(const std::byte* data, std::size_t bytes) noexcept {
  __m256i s0 = _mm256_setzero_si256(), s1 = s0, s2 = s0, s3 = s0, s4 = s0, s5 = s0, s6 = s0, s7 = s0;
  std::size_t i = 0;
  for (; i + 256 <= bytes; i += 256) {
    const auto* p = reinterpret_cast<const __m256i*>(data + i);
    s0 = _mm256_add_epi64(s0, _mm256_load_si256(p + 0));
    s1 = _mm256_add_epi64(s1, _mm256_load_si256(p + 1));
    s2 = _mm256_add_epi64(s2, _mm256_load_si256(p + 2));
    s3 = _mm256_add_epi64(s3, _mm256_load_si256(p + 3));
    s4 = _mm256_add_epi64(s4, _mm256_load_si256(p + 4));
    s5 = _mm256_add_epi64(s5, _mm256_load_si256(p + 5));
    s6 = _mm256_add_epi64(s6, _mm256_load_si256(p + 6));
    s7 = _mm256_add_epi64(s7, _mm256_load_si256(p + 7));
  }
  const __m256i s = _mm256_add_epi64(_mm256_add_epi64(_mm256_add_epi64(s0, s1), _mm256_add_epi64(s2, s3)),
                                     _mm256_add_epi64(_mm256_add_epi64(s4, s5), _mm256_add_epi64(s6, s7)));
  alignas(32) std::uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), s);
  std::uint64_t total = lanes[0] + lanes[1] + lanes[2] + lanes[3];
  for (; i < bytes; ++i) total += static_cast<std::uint64_t>(data[i]);
  return total;
}

std::uint64_t read_blocks_avx2(const std::byte* data, const std::uint32_t* blocks, std::size_t count, std::size_t block_bytes,
                               std::size_t ahead) noexcept {
  __m256i s[16];
  for (__m256i& x : s) x = _mm256_setzero_si256();
  walk_block_pairs(data, blocks, count, block_bytes, ahead, [&](const std::byte* p) {
    for (int k = 0; k < 16; ++k) s[k] = _mm256_add_epi64(s[k], _mm256_load_si256(reinterpret_cast<const __m256i*>(p + k * 32)));
  });
  alignas(64) std::uint64_t lanes[16 * 32 / 8];
  for (int k = 0; k < 16; ++k) _mm256_store_si256(reinterpret_cast<__m256i*>(lanes) + k, s[k]);
  std::uint64_t total = 0;
  for (const std::uint64_t lane : lanes) total += lane;
  return total;
}

float fma_chains_avx2(std::uint64_t iterations) noexcept {
  // 12 chains: FMA latency (4-5 cycles) x 2 FMA pipes needs at least 10 in flight, and 12
  // accumulators + 2 constants fit the 16 ymm registers.
  const __m256 mul = _mm256_set1_ps(0.999999f);
  const __m256 add = _mm256_set1_ps(1e-6f);
  __m256 a0 = _mm256_set1_ps(0.00f), a1 = _mm256_set1_ps(0.01f), a2 = _mm256_set1_ps(0.02f),
         a3 = _mm256_set1_ps(0.03f), a4 = _mm256_set1_ps(0.04f), a5 = _mm256_set1_ps(0.05f),
         a6 = _mm256_set1_ps(0.06f), a7 = _mm256_set1_ps(0.07f), a8 = _mm256_set1_ps(0.08f),
         a9 = _mm256_set1_ps(0.09f), a10 = _mm256_set1_ps(0.10f), a11 = _mm256_set1_ps(0.11f);
  for (std::uint64_t it = 0; it < iterations; ++it) {
    a0 = _mm256_fmadd_ps(a0, mul, add);
    a1 = _mm256_fmadd_ps(a1, mul, add);
    a2 = _mm256_fmadd_ps(a2, mul, add);
    a3 = _mm256_fmadd_ps(a3, mul, add);
    a4 = _mm256_fmadd_ps(a4, mul, add);
    a5 = _mm256_fmadd_ps(a5, mul, add);
    a6 = _mm256_fmadd_ps(a6, mul, add);
    a7 = _mm256_fmadd_ps(a7, mul, add);
    a8 = _mm256_fmadd_ps(a8, mul, add);
    a9 = _mm256_fmadd_ps(a9, mul, add);
    a10 = _mm256_fmadd_ps(a10, mul, add);
    a11 = _mm256_fmadd_ps(a11, mul, add);
  }
  const __m256 s = _mm256_add_ps(
      _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                    _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7))),
      _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, s);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3] + lanes[4] + lanes[5] + lanes[6] + lanes[7];
}

}  // namespace quarry::bench::detail
