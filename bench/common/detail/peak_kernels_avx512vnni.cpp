// The AVX-512 VNNI yardstick loop. Compiled with the AVX-512 flags plus -mavx512vnni and nothing
// else in the benchmark library is; called only when quarry::cpu_features() reports avx512vnni.
#include <immintrin.h>

#include "common/detail/peak_kernels.hpp"
#include "cpu/kernels/dpbusd.hpp"  // the kernels' own form of the instruction

namespace quarry::bench::detail {

using quarry::detail::cpu_kernels::dpbusd_inplace;

std::int32_t vnni_chains_avx512(std::uint64_t iterations) noexcept {
  // vpdpbusd: each int32 lane += four u8 x s8 products. 16 independent chains cover its latency
  // on every AVX-512 VNNI core we know of. int32 wrap-around is defined for the instruction.
  const __m512i u8 = _mm512_set1_epi8(3);
  const __m512i s8 = _mm512_set1_epi8(-2);
  __m512i a0 = _mm512_set1_epi32(0), a1 = _mm512_set1_epi32(1), a2 = _mm512_set1_epi32(2),
          a3 = _mm512_set1_epi32(3), a4 = _mm512_set1_epi32(4), a5 = _mm512_set1_epi32(5),
          a6 = _mm512_set1_epi32(6), a7 = _mm512_set1_epi32(7), a8 = _mm512_set1_epi32(8),
          a9 = _mm512_set1_epi32(9), a10 = _mm512_set1_epi32(10), a11 = _mm512_set1_epi32(11),
          a12 = _mm512_set1_epi32(12), a13 = _mm512_set1_epi32(13), a14 = _mm512_set1_epi32(14),
          a15 = _mm512_set1_epi32(15);
  for (std::uint64_t it = 0; it < iterations; ++it) {
    a0 = dpbusd_inplace(a0, u8, s8);
    a1 = dpbusd_inplace(a1, u8, s8);
    a2 = dpbusd_inplace(a2, u8, s8);
    a3 = dpbusd_inplace(a3, u8, s8);
    a4 = dpbusd_inplace(a4, u8, s8);
    a5 = dpbusd_inplace(a5, u8, s8);
    a6 = dpbusd_inplace(a6, u8, s8);
    a7 = dpbusd_inplace(a7, u8, s8);
    a8 = dpbusd_inplace(a8, u8, s8);
    a9 = dpbusd_inplace(a9, u8, s8);
    a10 = dpbusd_inplace(a10, u8, s8);
    a11 = dpbusd_inplace(a11, u8, s8);
    a12 = dpbusd_inplace(a12, u8, s8);
    a13 = dpbusd_inplace(a13, u8, s8);
    a14 = dpbusd_inplace(a14, u8, s8);
    a15 = dpbusd_inplace(a15, u8, s8);
  }
  const __m512i s = _mm512_add_epi32(
      _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)),
                       _mm512_add_epi32(_mm512_add_epi32(a4, a5), _mm512_add_epi32(a6, a7))),
      _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(a8, a9), _mm512_add_epi32(a10, a11)),
                       _mm512_add_epi32(_mm512_add_epi32(a12, a13), _mm512_add_epi32(a14, a15))));
  // The lanes have wrapped; add them as unsigned (GCC's _mm512_reduce_add_epi32 adds as signed).
  alignas(64) std::uint32_t lanes[16];
  _mm512_store_si512(lanes, s);
  std::uint32_t total = 0;
  for (const std::uint32_t lane : lanes) total += lane;
  return static_cast<std::int32_t>(total);
}

}  // namespace quarry::bench::detail
