// BoundedReader: reads little-endian (or native-endian) values from a byte span and never past
// its end.
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
#include <vector>

#include <fmt/format.h>

#include "quarry/core/checked.hpp"
#include "quarry/core/status.hpp"

namespace quarry {

/// A cursor over a byte span that cannot read past its end.
class BoundedReader {
 public:
  /// Reads `bytes`, whose multi-byte values are in `byte_order` (little-endian, as GGUF and
  /// safetensors, unless told otherwise); `what` names the source in errors ("stories260K.gguf").
  explicit BoundedReader(std::span<const std::byte> bytes, std::string what = "input",
                         std::endian byte_order = std::endian::little) noexcept
      : bytes_(bytes), what_(std::move(what)), order_(byte_order) {}

  std::size_t offset() const noexcept { return pos_; }                    ///< bytes read so far
  std::size_t size() const noexcept { return bytes_.size(); }              ///< bytes in all
  std::size_t remaining() const noexcept { return bytes_.size() - pos_; }  ///< bytes left to read
  std::span<const std::byte> bytes() const noexcept { return bytes_; }     ///< all the bytes
  std::endian byte_order() const noexcept { return order_; }               ///< how integers are read

  /// An integer or float in the input's byte order (any byte alignment).
  template <class T>
    requires(std::is_arithmetic_v<T>)
  result<T> read(std::string_view field) {
    QUARRY_RETURN_IF_ERROR(require(sizeof(T), field));
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    if (sizeof(T) > 1 && order_ != std::endian::native) v = byteswap(v);
    pos_ += sizeof(T);
    return v;
  }

  /// The next `count` values of type T as a span into the input (no copy). The size is checked
  /// (overflow included) before anything else; the input must be in native byte order and the
  /// values aligned for T, else an error naming `field` and the offset.
  template <class T>
    requires(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>)
  result<std::span<const T>> read_array(std::uint64_t count, std::string_view field) {
    QUARRY_ASSIGN_OR_RETURN(const std::size_t n, array_bytes<T>(count, field));
    if (sizeof(T) > 1 && order_ != std::endian::native)
      return error(errc::unsupported, fmt::format("{} at offset {} is not in this machine's byte order; it cannot be viewed in place", field, pos_));
    const std::byte* p = bytes_.data() + pos_;
    if (reinterpret_cast<std::uintptr_t>(p) % alignof(T) != 0)
      return error(errc::corrupt_data, fmt::format("{} at offset {} is not aligned to {} bytes", field, pos_, alignof(T)));
    pos_ += n;
    return std::span<const T>(reinterpret_cast<const T*>(p), static_cast<std::size_t>(count));
  }

  /// The next `count` values of type T, copied (any alignment, swapped to native byte order).
  /// The size is checked against the bytes left before the vector is allocated.
  template <class T>
    requires(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>)
  result<std::vector<T>> read_vector(std::uint64_t count, std::string_view field) {
    QUARRY_ASSIGN_OR_RETURN(const std::size_t n, array_bytes<T>(count, field));
    std::vector<T> out(static_cast<std::size_t>(count));
    if (n > 0) std::memcpy(out.data(), bytes_.data() + pos_, n);
    if (sizeof(T) > 1 && order_ != std::endian::native)
      for (T& v : out) v = byteswap(v);
    pos_ += n;
    return out;
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
  // count * sizeof(T), checked for overflow and against the bytes left.
  template <class T>
  result<std::size_t> array_bytes(std::uint64_t count, std::string_view field) const {
    const auto n = count <= static_cast<std::uint64_t>(INT64_MAX) ? checked_mul(static_cast<std::int64_t>(count), static_cast<std::int64_t>(sizeof(T)))
                                                                  : std::nullopt;
    if (!n) return error(errc::corrupt_data, fmt::format("{} at offset {}: {} values of {} bytes overflow", field, pos_, count, sizeof(T)));
    QUARRY_RETURN_IF_ERROR(require(static_cast<std::uint64_t>(*n), field));
    return static_cast<std::size_t>(*n);
  }

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
  std::endian order_ = std::endian::little;
};

}  // namespace quarry
