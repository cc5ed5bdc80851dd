// The one place quarry adapts to xsimd's API changes between Debian's 8.1 and xsimd 13/14
// (from Conan/vcpkg), and names the arch tag each ISA's kernels are instantiated for.
#pragma once

#include <type_traits>

#include <xsimd/xsimd.hpp>

#ifndef XSIMD_VERSION_MAJOR
#error "xsimd did not define XSIMD_VERSION_MAJOR"
#endif

namespace quarry::detail::simd {

/// Sum of a batch's lanes: xsimd::hadd in 8.x, xsimd::reduce_add from 9.0 on (9.0.0 renamed it
/// and removed hadd in the same release; checked against the xsimd git tags 8.1.0 and 9.0.0).
template <class T, class A>
inline T reduce_add(const xsimd::batch<T, A>& b) noexcept {
#if XSIMD_VERSION_MAJOR >= 9
  return xsimd::reduce_add(b);
#else
  return xsimd::hadd(b);
#endif
}

/// The arch tags the per-ISA files instantiate kernels for. `scalar` is quarry's own tag (no
/// xsimd batch is used there: the scalar kernels are plain C++, the reference).
struct scalar {};
using avx2 = xsimd::fma3<xsimd::avx2>;
using avx512 = xsimd::avx512bw;
using neon = xsimd::neon64;

template <class Arch>
inline constexpr bool is_scalar = std::is_same_v<Arch, scalar>;
template <class Arch>
inline constexpr bool is_avx512 = std::is_same_v<Arch, avx512>;
template <class Arch>
inline constexpr bool is_avx2 = std::is_same_v<Arch, avx2>;
template <class Arch>
inline constexpr bool is_neon = std::is_same_v<Arch, neon>;

}  // namespace quarry::detail::simd
