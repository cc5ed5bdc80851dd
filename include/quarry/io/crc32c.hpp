// CRC32C (Castagnoli, reflected polynomial 0x82F63B78): the checksum of every section of
// quarry's own files, as in iSCSI, ext4 and RocksDB.
//
// `crc32c` uses the SSE4.2 `crc32` instruction when the CPU has it (checked at run time, once)
// and a portable slicing-by-8 table otherwise. Both give the same value for every input;
// QUARRY_FORCE_ISA=scalar forces the portable one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace quarry {

/// The CRC32C of `bytes`. Incremental: `crc32c(b, crc32c(a))` equals the CRC32C of a then b;
/// `prev = 0` starts a new checksum. crc32c("123456789") == 0xE3069283.
std::uint32_t crc32c(std::span<const std::byte> bytes, std::uint32_t prev = 0) noexcept;

/// The CRC32C of the characters of `text`.
inline std::uint32_t crc32c(std::string_view text, std::uint32_t prev = 0) noexcept {
  return crc32c(std::as_bytes(std::span<const char>(text.data(), text.size())), prev);
}

namespace detail {

/// The portable slicing-by-8 implementation: the reference the hardware path is tested against.
std::uint32_t crc32c_portable(std::span<const std::byte> bytes, std::uint32_t prev = 0) noexcept;

/// Whether crc32c_hardware() can run here: an x86-64 CPU with SSE4.2.
bool crc32c_hardware_available() noexcept;

/// The SSE4.2 implementation; call only when crc32c_hardware_available() (otherwise it returns
/// the portable result).
std::uint32_t crc32c_hardware(std::span<const std::byte> bytes, std::uint32_t prev = 0) noexcept;

/// "sse4.2" or "portable": what crc32c() uses in this process.
std::string_view crc32c_implementation() noexcept;

}  // namespace detail

}  // namespace quarry
