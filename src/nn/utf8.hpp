// UTF-8 decoding and encoding for the tokenizers (internal to src/nn).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace quarry::detail {

/// One decoded character: its code point and how many bytes it took.
struct Utf8Char {
  char32_t cp;      ///< the code point; kInvalidUtf8 for a byte that starts no valid sequence
  std::size_t len;  ///< bytes consumed: 1 to 4 (1 for an invalid byte)
};

/// The code point given for a byte that starts no valid UTF-8 sequence (U+FFFD).
inline constexpr char32_t kInvalidUtf8 = 0xFFFD;

/// Decodes the character at s[pos] (pos < s.size()). Overlong forms, surrogates, code points
/// above U+10FFFF and truncated sequences are invalid: their first byte is consumed alone.
inline Utf8Char decode_utf8(std::string_view s, std::size_t pos) noexcept {
  const auto b0 = static_cast<unsigned char>(s[pos]);
  if (b0 < 0x80) return {b0, 1};
  std::size_t len;
  char32_t cp;
  char32_t min;
  if ((b0 & 0xE0) == 0xC0) { len = 2; cp = b0 & 0x1F; min = 0x80; }
  else if ((b0 & 0xF0) == 0xE0) { len = 3; cp = b0 & 0x0F; min = 0x800; }
  else if ((b0 & 0xF8) == 0xF0) { len = 4; cp = b0 & 0x07; min = 0x10000; }
  else return {kInvalidUtf8, 1};
  if (s.size() - pos < len) return {kInvalidUtf8, 1};
  for (std::size_t i = 1; i < len; ++i) {
    const auto b = static_cast<unsigned char>(s[pos + i]);
    if ((b & 0xC0) != 0x80) return {kInvalidUtf8, 1};
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return {kInvalidUtf8, 1};
  return {cp, len};
}

/// Appends the UTF-8 encoding of a valid code point.
inline void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace quarry::detail
