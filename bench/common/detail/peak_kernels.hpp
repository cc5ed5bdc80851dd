// The innermost loops of the yardsticks, one set per ISA, each in its own translation unit
// compiled with that ISA's flags (detail/peak_kernels_<isa>.cpp). Only declarations here: no
// inline function may be shared with an ISA-specific file, or the linker could keep the
// AVX-512 copy for the whole program (the rule src/cpu/ follows too).
//
// Callers check quarry::cpu_features() before calling anything but the portable set.
#pragma once

#include <cstddef>
#include <cstdint>

namespace quarry::bench::detail {

// ---- Portable (peak_kernels_portable.cpp, no extra flags) ----------------------------------

/// Sums `bytes` bytes at `data` (64-byte aligned) as 64-bit words, so every byte is loaded
/// (a tail shorter than one loop step is added byte by byte). The sum only keeps the loads
/// alive: the ISA variants group words differently and need not agree.
std::uint64_t read_sum_portable(const std::byte* data, std::size_t bytes) noexcept;
/// Sums the blocks blocks[0..count) of `block_bytes` bytes each (a multiple of 512; block b at
/// data + b * block_bytes, 64-byte aligned) in that order, as the kv decode kernels read
/// scattered pages: two at a time side by side, asking for blocks about `ahead` on into L2 as
/// they go (walk_block_pairs in block_pairs.hpp).
std::uint64_t read_blocks_portable(const std::byte* data, const std::uint32_t* blocks, std::size_t count, std::size_t block_bytes,
                                   std::size_t ahead) noexcept;
/// Runs `iterations` rounds of 8 independent f32 multiply-add chains; 16 flops per round.
float fma_chains_portable(std::uint64_t iterations) noexcept;
/// Flops done by one round of fma_chains_portable.
inline constexpr std::uint64_t kFmaPortableFlopsPerIteration = 8 * 2;

// ---- AVX2 + FMA (peak_kernels_avx2.cpp) -------------------------------------------------------

/// read_sum_portable with 256-bit loads, 8 accumulators.
std::uint64_t read_sum_avx2(const std::byte* data, std::size_t bytes) noexcept;
/// read_blocks_portable with 256-bit loads.
std::uint64_t read_blocks_avx2(const std::byte* data, const std::uint32_t* blocks, std::size_t count, std::size_t block_bytes,
                               std::size_t ahead) noexcept;
/// Runs `iterations` rounds of 12 independent vfmadd chains on ymm (8 f32 lanes each).
float fma_chains_avx2(std::uint64_t iterations) noexcept;
/// Flops done by one round of fma_chains_avx2: 12 chains x 8 lanes x 2.
inline constexpr std::uint64_t kFmaAvx2FlopsPerIteration = 12 * 8 * 2;

// ---- AVX-512 F (peak_kernels_avx512.cpp) ----------------------------------------------------

/// read_sum_portable with 512-bit loads, 8 accumulators.
std::uint64_t read_sum_avx512(const std::byte* data, std::size_t bytes) noexcept;
/// read_blocks_portable with 512-bit loads.
std::uint64_t read_blocks_avx512(const std::byte* data, const std::uint32_t* blocks, std::size_t count, std::size_t block_bytes,
                                 std::size_t ahead) noexcept;
/// Runs `iterations` rounds of 16 independent vfmadd chains on zmm (16 f32 lanes each).
float fma_chains_avx512(std::uint64_t iterations) noexcept;
/// Flops done by one round of fma_chains_avx512: 16 chains x 16 lanes x 2.
inline constexpr std::uint64_t kFmaAvx512FlopsPerIteration = 16 * 16 * 2;

// ---- AVX-512 VNNI (peak_kernels_avx512vnni.cpp) ---------------------------------------------

/// Runs `iterations` rounds of 16 independent vpdpbusd chains on zmm.
std::int32_t vnni_chains_avx512(std::uint64_t iterations) noexcept;
/// Int8 ops done by one round of vnni_chains_avx512: 16 chains x 16 int32 lanes x 4 u8*s8
/// multiply-adds x 2 ops (one multiply, one add) = 2048.
inline constexpr std::uint64_t kVnniAvx512OpsPerIteration = 16 * 16 * 4 * 2;

}  // namespace quarry::bench::detail
