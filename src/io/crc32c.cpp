// CRC32C: a portable slicing-by-8 table implementation and the SSE4.2 `crc32` instruction.
//
// The SSE4.2 body is compiled for that ISA with a function attribute, not with -msse4.2 on the
// file, so the rest of this file (and every inline function it instantiates) stays baseline
// x86-64; it runs only after the CPUID check.
#include "quarry/io/crc32c.hpp"

#include <array>

#include "quarry/core/cpu_features.hpp"

#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define QUARRY_CRC32C_SSE42 1
#include <nmmintrin.h>
#endif

namespace quarry {

namespace {

constexpr std::uint32_t kPoly = 0x82F63B78u;  // Castagnoli, bit-reversed

// kTable[0] is the classic byte-at-a-time table; kTable[k][b] is the CRC of byte b followed by
// k zero bytes, so eight table lookups advance the CRC by eight bytes (slicing-by-8, Intel 2006).
constexpr std::array<std::array<std::uint32_t, 256>, 8> make_tables() {
  std::array<std::array<std::uint32_t, 256>, 8> t{};
  for (std::uint32_t b = 0; b < 256; ++b) {
    std::uint32_t c = b;
    for (int i = 0; i < 8; ++i) c = (c & 1u) ? (c >> 1) ^ kPoly : c >> 1;
    t[0][b] = c;
  }
  for (std::size_t k = 1; k < 8; ++k)
    for (std::size_t b = 0; b < 256; ++b) t[k][b] = (t[k - 1][b] >> 8) ^ t[0][t[k - 1][b] & 0xffu];
  return t;
}

constexpr auto kTable = make_tables();

// The raw (un-inverted) CRC register after `n` bytes at `p`.
std::uint32_t update_portable(std::uint32_t crc, const unsigned char* p, std::size_t n) noexcept {
  while (n >= 8) {
    // Little-endian assembly of the next 8 bytes (one load on little-endian targets).
    const std::uint32_t lo = (static_cast<std::uint32_t>(p[0]) | static_cast<std::uint32_t>(p[1]) << 8 |
                              static_cast<std::uint32_t>(p[2]) << 16 | static_cast<std::uint32_t>(p[3]) << 24) ^
                             crc;
    const std::uint32_t hi = static_cast<std::uint32_t>(p[4]) | static_cast<std::uint32_t>(p[5]) << 8 |
                             static_cast<std::uint32_t>(p[6]) << 16 | static_cast<std::uint32_t>(p[7]) << 24;
    crc = kTable[7][lo & 0xffu] ^ kTable[6][(lo >> 8) & 0xffu] ^ kTable[5][(lo >> 16) & 0xffu] ^ kTable[4][lo >> 24] ^
          kTable[3][hi & 0xffu] ^ kTable[2][(hi >> 8) & 0xffu] ^ kTable[1][(hi >> 16) & 0xffu] ^ kTable[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n-- > 0) crc = (crc >> 8) ^ kTable[0][(crc ^ *p++) & 0xffu];
  return crc;
}

#ifdef QUARRY_CRC32C_SSE42
// One dependent `crc32` per 8 bytes (latency 3 cycles: ~8 GB/s at 3 GHz, far above what a file
// is read at). Only plain pointers and intrinsics here: nothing that could be instantiated as
// a shared inline function compiled for SSE4.2.
__attribute__((target("sse4.2"))) std::uint32_t update_sse42(std::uint32_t crc, const unsigned char* p,
                                                             std::size_t n) noexcept {
  while (n > 0 && (reinterpret_cast<std::uintptr_t>(p) & 7u) != 0) {
    crc = _mm_crc32_u8(crc, *p++);
    --n;
  }
  unsigned long long c = crc;
  while (n >= 8) {
    unsigned long long w;
    __builtin_memcpy(&w, p, 8);
    c = _mm_crc32_u64(c, w);
    p += 8;
    n -= 8;
  }
  crc = static_cast<std::uint32_t>(c);
  while (n-- > 0) crc = _mm_crc32_u8(crc, *p++);
  return crc;
}
#endif

using UpdateFn = std::uint32_t (*)(std::uint32_t, const unsigned char*, std::size_t) noexcept;

UpdateFn choose_update() noexcept {
#ifdef QUARRY_CRC32C_SSE42
  if (detail::crc32c_hardware_available() && active_isa() != Isa::scalar) return &update_sse42;
#endif
  return &update_portable;
}

UpdateFn active_update() noexcept {
  static const UpdateFn fn = choose_update();
  return fn;
}

const unsigned char* data_of(std::span<const std::byte> bytes) noexcept {
  return reinterpret_cast<const unsigned char*>(bytes.data());
}

}  // namespace

std::uint32_t crc32c(std::span<const std::byte> bytes, std::uint32_t prev) noexcept {
  return ~active_update()(~prev, data_of(bytes), bytes.size());
}

namespace detail {

std::uint32_t crc32c_portable(std::span<const std::byte> bytes, std::uint32_t prev) noexcept {
  return ~update_portable(~prev, data_of(bytes), bytes.size());
}

bool crc32c_hardware_available() noexcept {
#ifdef QUARRY_CRC32C_SSE42
  return cpu_features().sse42;
#else
  return false;
#endif
}

std::uint32_t crc32c_hardware(std::span<const std::byte> bytes, std::uint32_t prev) noexcept {
#ifdef QUARRY_CRC32C_SSE42
  if (crc32c_hardware_available()) return ~update_sse42(~prev, data_of(bytes), bytes.size());
#endif
  return crc32c_portable(bytes, prev);
}

std::string_view crc32c_implementation() noexcept {
#ifdef QUARRY_CRC32C_SSE42
  if (active_update() == &update_sse42) return "sse4.2";
#endif
  return "portable";
}

}  // namespace detail

}  // namespace quarry
