// BoundedReader: reads little-endian values from a byte span and never past its end.
//
// Every file reader in quarry parses through one of these: each read checks the bytes left
// first, and each error names the field being read and its offset, so a truncated or hostile
// file gives a clear message instead of a crash or a huge allocation.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>

#include <fmt/format.h>

#include "quarry/core/status.hpp"

namespace quarry {

/// A cursor over a byte span that cannot read past its end.
class BoundedReader {
 public:
  /// Reads `bytes`; `what` names the source in errors ("stories260K.gguf").
  explicit BoundedReader(std::span<const std::byte> bytes, std::string what = "input") noexcept
      : bytes_(bytes), what_(std::move(what)) {}

  std::size_t offset() const noexcept { return pos_; }
  std::size_t size() const noexcept { return bytes_.size(); }
  std::size_t remaining() const noexcept { return bytes_.size() - pos_; }
  std::span<const std::byte> bytes() const noexcept { return bytes_; }

  /// A little-endian integer or float (any byte alignment).
  template <class T>
    requires(std::is_arithmetic_v<T>)
  result<T> read(std::string_view field) {
    QUARRY_RETURN_IF_ERROR(require(sizeof(T), field));
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    if constexpr (std::endian::native == std::endian::big && sizeof(T) > 1) v = byteswap(v);
    pos_ += sizeof(T);
    return v;
  }

  /// The next `n` bytes as a span into the input (no copy).
  result<std::span<const std::byte>> read_bytes(std::size_t n, std::string_view field) {
    QUARRY_RETURN_IF_ERROR(require(n, field));
    auto s = bytes_.subspan(pos_, n);
    pos_ += n;
    return s;
  }

  /// A string of `n` bytes; n must not exceed `max_len` (checked before anything is copied).
  result<std::string> read_string(std::uint64_t n, std::uint64_t max_len, std::string_view field) {
    if (n > max_len) return error(errc::corrupt_data, fmt::format("{} is {} bytes long; the limit is {}", field, n, max_len));
    QUARRY_ASSIGN_OR_RETURN(auto s, read_bytes(static_cast<std::size_t>(n), field));
    return std::string(reinterpret_cast<const char*>(s.data()), s.size());
  }

  /// Moves to absolute offset `pos` (<= size()).
  status seek(std::uint64_t pos, std::string_view field) {
    if (pos > bytes_.size()) return error(errc::corrupt_data, fmt::format("{} at offset {} is past the end ({} bytes)", field, pos, bytes_.size()));
    pos_ = static_cast<std::size_t>(pos);
    return {};
  }

  /// Ok when `n` more bytes can be read; otherwise an error naming `field` and the offset.
  status require(std::uint64_t n, std::string_view field) const {
    if (n > remaining())
      return error(errc::corrupt_data, fmt::format("truncated: {} needs {} bytes at offset {} but {} remain", field, n, pos_, remaining()));
    return {};
  }

  /// An error about this input: "<what>: <message>".
  status error(errc code, const std::string& message) const { return status(code, what_ + ": " + message); }

 private:
  template <class T>
  static T byteswap(T v) noexcept {
    unsigned char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    for (std::size_t i = 0; i < sizeof(T) / 2; ++i) std::swap(b[i], b[sizeof(T) - 1 - i]);
    std::memcpy(&v, b, sizeof(T));
    return v;
  }

  std::span<const std::byte> bytes_;
  std::size_t pos_ = 0;
  std::string what_;
};

}  // namespace quarry
