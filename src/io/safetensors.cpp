#include "quarry/io/safetensors.hpp"

#include <algorithm>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>

#include <fmt/format.h>

#include "quarry/core/checked.hpp"
#include "quarry/core/convert.hpp"
#include "quarry/io/bounded_reader.hpp"

namespace quarry {

namespace {

struct DtypeEntry {
  SafetensorsDtype type;
  SafetensorsDtypeInfo info;
};

// In the reference's order (increasing alignment), which is also the enum's.
constexpr DtypeEntry kDtypes[] = {
    {SafetensorsDtype::boolean, {"BOOL", 8}},    {SafetensorsDtype::u8, {"U8", 8}},
    {SafetensorsDtype::i8, {"I8", 8}},           {SafetensorsDtype::f8_e5m2, {"F8_E5M2", 8}},
    {SafetensorsDtype::f8_e4m3, {"F8_E4M3", 8}}, {SafetensorsDtype::f8_e8m0, {"F8_E8M0", 8}},
    {SafetensorsDtype::i16, {"I16", 16}},        {SafetensorsDtype::u16, {"U16", 16}},
    {SafetensorsDtype::f16, {"F16", 16}},        {SafetensorsDtype::bf16, {"BF16", 16}},
    {SafetensorsDtype::i32, {"I32", 32}},        {SafetensorsDtype::u32, {"U32", 32}},
    {SafetensorsDtype::f32, {"F32", 32}},        {SafetensorsDtype::c64, {"C64", 64}},
    {SafetensorsDtype::f64, {"F64", 64}},        {SafetensorsDtype::i64, {"I64", 64}},
    {SafetensorsDtype::u64, {"U64", 64}},        {SafetensorsDtype::f4, {"F4", 4}},
    {SafetensorsDtype::f6_e2m3, {"F6_E2M3", 6}}, {SafetensorsDtype::f6_e3m2, {"F6_E3M2", 6}},
};

std::string_view st_name(SafetensorsDtype t) noexcept { return safetensors_dtype_info(t).name; }

// At most `n` bytes of `s` for an error message, with "..." when cut.
std::string excerpt(std::string_view s, std::size_t n = 40) {
  return s.size() <= n ? std::string(s) : std::string(s.substr(0, n)) + "...";
}

bool is_json_space(char c) noexcept { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }

// Length of the well-formed UTF-8 sequence (RFC 3629: no overlong forms, no surrogates, nothing
// past U+10FFFF) that starts at s[0], or 0 when there is none.
std::size_t utf8_sequence_length(std::string_view s) noexcept {
  const auto b = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  const auto cont = [&](std::size_t i, unsigned lo = 0x80, unsigned hi = 0xbf) { return i < s.size() && b(i) >= lo && b(i) <= hi; };
  const unsigned c = b(0);
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) return cont(1) ? 2 : 0;
  if (c == 0xe0) return cont(1, 0xa0) && cont(2) ? 3 : 0;
  if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef) return cont(1) && cont(2) ? 3 : 0;
  if (c == 0xed) return cont(1, 0x80, 0x9f) && cont(2) ? 3 : 0;  // not U+D800..U+DFFF
  if (c == 0xf0) return cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
  if (c >= 0xf1 && c <= 0xf3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
  if (c == 0xf4) return cont(1, 0x80, 0x8f) && cont(2) && cont(3) ? 4 : 0;
  return 0;
}

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

// A strict JSON reader (RFC 8259) over the header text, driven by the caller's schema: it reads
// the value the caller expects next and says what it found instead, so nothing is ever built
// but the strings and integers asked for, and nesting is the caller's (three levels here).
// Errors are corrupt_data and give the file offset.
class JsonReader {
 public:
  JsonReader(std::string_view text, std::uint64_t base, const BoundedReader& r) : s_(text), base_(base), r_(r) {}

  bool at_end() const noexcept { return pos_ == s_.size(); }
  std::uint64_t offset() const noexcept { return base_ + pos_; }

  void skip_space() noexcept {
    while (pos_ < s_.size() && is_json_space(s_[pos_])) ++pos_;
  }

  /// Skips whitespace; consumes `c` when it comes next.
  bool consume(char c) noexcept {
    skip_space();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  /// What comes next, for messages: "a string", "'}'", "the end of the header", ...
  std::string next_thing() {
    skip_space();
    if (at_end()) return "the end of the header";
    const char c = s_[pos_];
    if (c == '"') return "a string";
    if (c == '-' || is_digit(c)) return "a number";
    if (c == '{') return "an object";
    if (c == '[') return "an array";
    if (s_.substr(pos_, 4) == "true") return "true";
    if (s_.substr(pos_, 5) == "false") return "false";
    if (s_.substr(pos_, 4) == "null") return "null";
    if (c >= 0x21 && c < 0x7f) return fmt::format("'{}'", c);
    return fmt::format("byte 0x{:02x}", static_cast<unsigned char>(c));
  }

  status error(const std::string& message) const {
    return r_.error(errc::corrupt_data, fmt::format("{} (file offset {})", message, offset()));
  }

  /// Reads an object whose members `member(key)` reads (the value only: the key and ':' are
  /// read here). `field` names the object in errors.
  template <class F>
  status object(std::string_view field, F&& member) {
    if (!consume('{')) return error(fmt::format("{} must be an object; found {}", field, next_thing()));
    if (consume('}')) return {};
    for (;;) {
      skip_space();
      if (at_end() || s_[pos_] != '"') return error(fmt::format("expected a member name (a string) in {}; found {}", field, next_thing()));
      QUARRY_ASSIGN_OR_RETURN(std::string key, string(fmt::format("a member name in {}", field)));
      if (!consume(':')) return error(fmt::format("expected ':' after \"{}\" in {}; found {}", excerpt(key), field, next_thing()));
      QUARRY_RETURN_IF_ERROR(member(std::move(key)));
      if (consume(',')) continue;
      if (consume('}')) return {};
      return error(fmt::format("expected ',' or '}}' in {}; found {}", field, next_thing()));
    }
  }

  /// Reads an array whose elements `element(index)` reads.
  template <class F>
  status array(std::string_view field, F&& element) {
    if (!consume('[')) return error(fmt::format("{} must be an array; found {}", field, next_thing()));
    if (consume(']')) return {};
    for (std::size_t i = 0;; ++i) {
      QUARRY_RETURN_IF_ERROR(element(i));
      if (consume(',')) continue;
      if (consume(']')) return {};
      return error(fmt::format("expected ',' or ']' in {}; found {}", field, next_thing()));
    }
  }

  /// A string value: escapes decoded (\uXXXX and surrogate pairs to UTF-8), raw bytes checked
  /// to be UTF-8, control characters refused.
  result<std::string> string(std::string_view field) {
    skip_space();
    if (at_end() || s_[pos_] != '"') return error(fmt::format("{} must be a string; found {}", field, next_thing()));
    const std::size_t start = pos_++;
    std::string out;
    for (;;) {
      if (at_end()) {
        pos_ = start;
        return error(fmt::format("{}: the string that starts here is not terminated", field));
      }
      const char c = s_[pos_];
      const auto u = static_cast<unsigned char>(c);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (u < 0x20) return error(fmt::format("{}: control character 0x{:02x} in a string (it must be escaped)", field, u));
      if (u >= 0x80) {
        const std::size_t n = utf8_sequence_length(s_.substr(pos_));
        if (n == 0) return error(fmt::format("{}: byte 0x{:02x} in a string is not valid UTF-8", field, u));
        out.append(s_.substr(pos_, n));
        pos_ += n;
        continue;
      }
      if (c != '\\') {
        out += c;
        ++pos_;
        continue;
      }
      if (pos_ + 1 >= s_.size()) return error(fmt::format("{}: the string ends inside an escape", field));
      const char e = s_[pos_ + 1];
      pos_ += 2;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          pos_ -= 2;
          QUARRY_ASSIGN_OR_RETURN(std::uint32_t hi, hex_escape(field));
          std::uint32_t cp = hi;
          if (hi >= 0xdc00 && hi <= 0xdfff)
            return error(fmt::format("{}: \\u{:04x} is a low surrogate without a high surrogate before it", field, hi));
          if (hi >= 0xd800 && hi <= 0xdbff) {
            if (s_.substr(pos_, 2) != "\\u")
              return error(fmt::format("{}: \\u{:04x} is a high surrogate without a \\u low surrogate after it", field, hi));
            QUARRY_ASSIGN_OR_RETURN(std::uint32_t lo, hex_escape(field));
            if (lo < 0xdc00 || lo > 0xdfff)
              return error(fmt::format("{}: \\u{:04x} follows the high surrogate \\u{:04x} but is not a low surrogate", field, lo, hi));
            cp = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
          }
          append_utf8(out, cp);
          break;
        }
        default:
          pos_ -= 2;
          if (static_cast<unsigned char>(e) >= 0x21 && static_cast<unsigned char>(e) < 0x7f)
            return error(fmt::format("{}: '\\{}' is not a JSON escape", field, e));
          return error(fmt::format("{}: byte 0x{:02x} after '\\' is not a JSON escape", field, static_cast<unsigned char>(e)));
      }
    }
  }

  /// A non-negative integer value that fits in 64 bits. Any other JSON number (negative, with a
  /// fraction or an exponent) is refused by name, as is what is not a number.
  result<std::uint64_t> integer(std::string_view field) {
    skip_space();
    const std::size_t start = pos_;
    if (at_end() || !(s_[pos_] == '-' || is_digit(s_[pos_])))
      return error(fmt::format("{} must be a non-negative integer; found {}", field, next_thing()));
    bool negative = false, fraction = false, exponent = false;
    if (s_[pos_] == '-') {
      negative = true;
      ++pos_;
    }
    const std::size_t int_start = pos_;
    while (pos_ < s_.size() && is_digit(s_[pos_])) ++pos_;
    const std::size_t int_end = pos_;
    if (int_end == int_start) return error(fmt::format("{}: '-' is not followed by a digit", field));
    if (s_[int_start] == '0' && int_end - int_start > 1) {
      pos_ = start;
      return error(fmt::format("{} is {}: JSON numbers have no leading zeros", field, excerpt(s_.substr(start, int_end - start))));
    }
    if (pos_ < s_.size() && s_[pos_] == '.') {
      fraction = true;
      ++pos_;
      const std::size_t d = pos_;
      while (pos_ < s_.size() && is_digit(s_[pos_])) ++pos_;
      if (pos_ == d) return error(fmt::format("{}: the '.' of a number is not followed by a digit", field));
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      exponent = true;
      ++pos_;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      const std::size_t d = pos_;
      while (pos_ < s_.size() && is_digit(s_[pos_])) ++pos_;
      if (pos_ == d) return error(fmt::format("{}: the exponent of a number has no digits", field));
    }
    const std::string_view text = s_.substr(start, pos_ - start);
    if (negative || fraction || exponent) {
      pos_ = start;
      return error(fmt::format("{} is {}; it must be a non-negative integer", field, excerpt(text)));
    }
    std::uint64_t v = 0;
    for (std::size_t i = int_start; i < int_end; ++i) {
      if (__builtin_mul_overflow(v, std::uint64_t{10}, &v) || __builtin_add_overflow(v, std::uint64_t(s_[i] - '0'), &v)) {
        pos_ = start;
        return error(fmt::format("{} is {}, beyond 64 bits", field, excerpt(text)));
      }
    }
    return v;
  }

 private:
  // \uXXXX at pos_ (the backslash), consumed.
  result<std::uint32_t> hex_escape(std::string_view field) {
    std::uint32_t v = 0;
    for (std::size_t i = 2; i < 6; ++i) {
      const char h = pos_ + i < s_.size() ? s_[pos_ + i] : '\0';
      int d = -1;
      if (h >= '0' && h <= '9') d = h - '0';
      else if (h >= 'a' && h <= 'f') d = h - 'a' + 10;
      else if (h >= 'A' && h <= 'F') d = h - 'A' + 10;
      if (d < 0) return error(fmt::format("{}: '\\u' must be followed by four hex digits", field));
      v = v * 16 + static_cast<std::uint32_t>(d);
    }
    pos_ += 6;
    return v;
  }

  std::string_view s_;
  std::uint64_t base_;
  const BoundedReader& r_;
  std::size_t pos_ = 0;
};

// One tensor's header entry, as read.
struct TensorEntry {
  std::optional<SafetensorsDtype> dtype;
  std::optional<Shape> shape;
  std::optional<std::pair<std::uint64_t, std::uint64_t>> offsets;
};

std::string list_dtype_names() {
  std::string s;
  for (const DtypeEntry& e : kDtypes) {
    if (!s.empty()) s += ' ';
    s += e.info.name;
  }
  return s;
}

// Reads {"dtype": ..., "shape": [...], "data_offsets": [begin, end]} of tensor `name`.
status read_tensor_entry(JsonReader& j, const BoundedReader& r, const std::string& name, TensorEntry& t) {
  const std::string what = fmt::format("tensor '{}'", excerpt(name, 200));
  return j.object(what, [&](std::string field) -> status {
    const auto twice = [&] { return j.error(fmt::format("{} has two '{}' fields", what, field)); };
    if (field == "dtype") {
      if (t.dtype) return twice();
      QUARRY_ASSIGN_OR_RETURN(std::string s, j.string(fmt::format("dtype of {}", what)));
      t.dtype = safetensors_dtype_from_name(s);
      if (!t.dtype)
        return r.error(errc::unsupported, fmt::format("{} has dtype \"{}\", which quarry does not know (it knows {})", what, excerpt(s), list_dtype_names()));
      return {};
    }
    if (field == "shape") {
      if (t.shape) return twice();
      Shape shape;
      const std::string field_name = fmt::format("shape of {}", what);
      QUARRY_RETURN_IF_ERROR(j.array(field_name, [&](std::size_t i) -> status {
        if (i >= static_cast<std::size_t>(kMaxRank))
          return r.error(errc::unsupported, fmt::format("{} has more than {} dimensions, quarry's limit", what, kMaxRank));
        QUARRY_ASSIGN_OR_RETURN(std::uint64_t e, j.integer(fmt::format("dimension {} of {}", i, what)));
        if (e > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
          return j.error(fmt::format("dimension {} of {} is {}, beyond int64", i, what, e));
        shape.push_back(static_cast<std::int64_t>(e));
        return {};
      }));
      t.shape = shape;
      return {};
    }
    if (field == "data_offsets") {
      if (t.offsets) return twice();
      std::uint64_t v[2] = {0, 0};
      std::size_t n = 0;
      const std::string field_name = fmt::format("data_offsets of {}", what);
      QUARRY_RETURN_IF_ERROR(j.array(field_name, [&](std::size_t i) -> status {
        if (i >= 2) return j.error(fmt::format("{} has more than two values; it must be [begin, end]", field_name));
        QUARRY_ASSIGN_OR_RETURN(v[i], j.integer(fmt::format("{} of {}", i == 0 ? "begin" : "end", field_name)));
        n = i + 1;
        return {};
      }));
      if (n != 2) return j.error(fmt::format("{} has {} value{}; it must be [begin, end]", field_name, n, n == 1 ? "" : "s"));
      t.offsets = std::pair{v[0], v[1]};
      return {};
    }
    return j.error(fmt::format("{} has a field \"{}\" that the format does not define (dtype, shape and data_offsets are)", what, excerpt(field)));
  });
}

// Exact f32 values of the 8-bit float types.
float f8_e4m3_to_f32(std::uint8_t b) noexcept {
  const int e = (b >> 3) & 0xf, m = b & 0x7;
  float v;
  if (e == 0xf && m == 0x7) v = std::numeric_limits<float>::quiet_NaN();
  else if (e == 0) v = std::ldexp(static_cast<float>(m), -9);  // subnormal: m/8 * 2^(1-7)
  else v = std::ldexp(static_cast<float>(8 + m), e - 10);      // (1 + m/8) * 2^(e-7)
  return (b & 0x80) ? -v : v;
}
float f8_e5m2_to_f32(std::uint8_t b) noexcept { return static_cast<float>(f16::from_bits(static_cast<std::uint16_t>(b << 8))); }
float f8_e8m0_to_f32(std::uint8_t b) noexcept {
  return b == 0xff ? std::numeric_limits<float>::quiet_NaN() : std::ldexp(1.0f, int{b} - 127);
}

// A double as the nearest float, +-inf beyond float's range (a plain conversion of such a value
// is undefined behaviour in C++).
float f64_to_f32(double d) noexcept {
  constexpr double kRoundsToInf = 0x1.ffffffp127;  // FLT_MAX + half an ulp: the tie goes to inf
  if (std::isfinite(d) && std::fabs(d) > static_cast<double>(FLT_MAX))
    return std::copysign(std::fabs(d) >= kRoundsToInf ? std::numeric_limits<float>::infinity() : FLT_MAX, std::signbit(d) ? -1.f : 1.f);
  return static_cast<float>(d);
}

}  // namespace

SafetensorsDtypeInfo safetensors_dtype_info(SafetensorsDtype t) noexcept {
  for (const DtypeEntry& e : kDtypes)
    if (e.type == t) return e.info;
  return {"unknown", 0};
}

std::optional<SafetensorsDtype> safetensors_dtype_from_name(std::string_view name) noexcept {
  for (const DtypeEntry& e : kDtypes)
    if (e.info.name == name) return e.type;
  return std::nullopt;
}

result<SafetensorsFile> SafetensorsFile::open(const std::string& path, const Limits& limits) {
  QUARRY_ASSIGN_OR_RETURN(MappedFile mapped, MappedFile::open(path));
  const auto bytes = mapped.bytes();
  QUARRY_ASSIGN_OR_RETURN(SafetensorsFile f, parse(bytes, path, limits));
  f.file_ = std::move(mapped);  // the mapping's address does not change on move
  return f;
}

result<SafetensorsFile> SafetensorsFile::parse(std::span<const std::byte> bytes, std::string what, const Limits& limits) {
  BoundedReader r(bytes, std::move(what));
  SafetensorsFile f;
  f.bytes_ = bytes;

  QUARRY_ASSIGN_OR_RETURN(const std::uint64_t n, r.read<std::uint64_t>("header length"));
  if (n > limits.max_header_bytes)
    return r.error(errc::corrupt_data, fmt::format("header length {} exceeds the limit of {} bytes", n, limits.max_header_bytes));
  if (n > r.remaining())
    return r.error(errc::corrupt_data, fmt::format("header length {} is past the end of the file ({} bytes, so at most {})", n, bytes.size(), r.remaining()));
  QUARRY_ASSIGN_OR_RETURN(const auto header, r.read_bytes(static_cast<std::size_t>(n), "header"));
  const std::string_view text(reinterpret_cast<const char*>(header.data()), header.size());
  f.data_offset_ = 8 + n;
  const std::uint64_t data_size = r.remaining();
  if (text.empty() || text[0] != '{')
    return r.error(errc::corrupt_data, text.empty() ? std::string("the header is empty; it must be a JSON object")
                                                    : fmt::format("the header must begin with '{{'; it begins with byte 0x{:02x}",
                                                                  static_cast<unsigned char>(text[0])));

  JsonReader j(text, 8, r);
  bool have_metadata = false;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;  // [begin, end) in the data section, per tensor
  QUARRY_RETURN_IF_ERROR(j.object("the header", [&](std::string key) -> status {
    if (key == "__metadata__") {
      if (have_metadata) return j.error("the header has two \"__metadata__\" entries");
      have_metadata = true;
      return j.object("__metadata__", [&](std::string k) -> status {
        if (f.metadata_.size() >= limits.max_metadata)
          return j.error(fmt::format("__metadata__ has more than {} entries, the limit", limits.max_metadata));
        QUARRY_ASSIGN_OR_RETURN(std::string v, j.string(fmt::format("metadata '{}' (values are strings)", excerpt(k, 200))));
        f.metadata_.emplace_back(std::move(k), std::move(v));
        return {};
      });
    }
    if (f.tensors_.size() >= limits.max_tensors)
      return j.error(fmt::format("the header has more than {} tensors, the limit", limits.max_tensors));
    TensorEntry e;
    QUARRY_RETURN_IF_ERROR(read_tensor_entry(j, r, key, e));
    const std::string name = fmt::format("tensor '{}'", excerpt(key, 200));
    if (!e.dtype) return j.error(fmt::format("{} has no dtype", name));
    if (!e.shape) return j.error(fmt::format("{} has no shape", name));
    if (!e.offsets) return j.error(fmt::format("{} has no data_offsets", name));
    const SafetensorsDtypeInfo info = safetensors_dtype_info(*e.dtype);
    const auto numel = e.shape->checked_numel();
    const auto bits = numel ? checked_mul(*numel, info.bits) : std::nullopt;
    if (!bits) return j.error(fmt::format("{} ({}, shape {}): its size overflows", name, info.name, *e.shape));
    if (*bits % 8 != 0)
      return j.error(fmt::format("{} ({}, shape {}) holds {} bits, not a whole number of bytes", name, info.name, *e.shape, *bits));
    const auto nbytes = static_cast<std::uint64_t>(*bits / 8);
    const auto [begin, end] = *e.offsets;
    if (end < begin) return j.error(fmt::format("data_offsets of {} are [{}, {}]: the end is before the beginning", name, begin, end));
    if (end - begin != nbytes)
      return j.error(fmt::format("{} ({}, shape {}) takes {} bytes, but its data_offsets [{}, {}] hold {}", name, info.name, *e.shape,
                                 nbytes, begin, end, end - begin));
    if (end > data_size)
      return j.error(fmt::format("data_offsets of {} are [{}, {}], past the end of the data section ({} bytes)", name, begin, end, data_size));
    SafetensorsTensorInfo t;
    t.name = std::move(key);
    t.dtype = *e.dtype;
    t.shape = *e.shape;
    t.offset = f.data_offset_ + begin;
    t.nbytes = nbytes;
    f.tensors_.push_back(std::move(t));
    ranges.emplace_back(begin, end);
    return {};
  }));
  j.skip_space();
  if (!j.at_end())
    return j.error(fmt::format("the header goes on after its JSON object with {}; only whitespace (padding) may follow it", j.next_thing()));

  // Names and metadata keys are unique.
  f.by_name_.resize(f.tensors_.size());
  for (std::size_t i = 0; i < f.by_name_.size(); ++i) f.by_name_[i] = i;
  std::sort(f.by_name_.begin(), f.by_name_.end(), [&](std::size_t a, std::size_t b) { return f.tensors_[a].name < f.tensors_[b].name; });
  for (std::size_t i = 1; i < f.by_name_.size(); ++i)
    if (f.tensors_[f.by_name_[i - 1]].name == f.tensors_[f.by_name_[i]].name)
      return r.error(errc::corrupt_data, fmt::format("tensor name '{}' appears twice in the header", excerpt(f.tensors_[f.by_name_[i]].name, 200)));
  {
    std::vector<std::string_view> keys;
    keys.reserve(f.metadata_.size());
    for (const auto& [k, v] : f.metadata_) keys.push_back(k);
    std::sort(keys.begin(), keys.end());
    const auto dup = std::adjacent_find(keys.begin(), keys.end());
    if (dup != keys.end()) return r.error(errc::corrupt_data, fmt::format("metadata key '{}' appears twice in __metadata__", excerpt(*dup, 200)));
  }

  // The tensors, in offset order, cover the data section exactly: no gap, no overlap, nothing
  // after the last one (empty tensors sit anywhere between two others).
  std::vector<std::size_t> order(f.tensors_.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return ranges[a] < ranges[b]; });
  std::uint64_t covered = 0;
  const SafetensorsTensorInfo* last = nullptr;
  for (const std::size_t i : order) {
    const auto [begin, end] = ranges[i];
    const SafetensorsTensorInfo& t = f.tensors_[i];
    if (begin > covered)
      return r.error(errc::corrupt_data,
                     last ? fmt::format("the data section has a gap of {} bytes between tensor '{}' (ends at {}) and tensor '{}' (begins at {}); tensors must cover it without gaps",
                                        begin - covered, excerpt(last->name, 200), covered, excerpt(t.name, 200), begin)
                          : fmt::format("the data section has a gap: its first tensor, '{}', begins at {}, not 0", excerpt(t.name, 200), begin));
    if (begin < covered)
      return r.error(errc::corrupt_data, fmt::format("tensors '{}' and '{}' overlap ('{}' begins at data offset {}, before {}, where '{}' ends)",
                                                     excerpt(last->name, 200), excerpt(t.name, 200), excerpt(t.name, 200), begin, covered,
                                                     excerpt(last->name, 200)));
    covered = end;
    last = &t;
  }
  if (covered != data_size)
    return r.error(errc::corrupt_data,
                   last ? fmt::format("the data section has {} bytes after the end of its last tensor, '{}' (at {}); tensors must cover it exactly",
                                      data_size - covered, excerpt(last->name, 200), covered)
                        : fmt::format("the data section holds {} bytes but the header names no tensor", data_size));
  return f;
}

const std::string* SafetensorsFile::find_metadata(std::string_view key) const noexcept {
  for (const auto& [k, v] : metadata_)
    if (k == key) return &v;
  return nullptr;
}

const SafetensorsTensorInfo* SafetensorsFile::find_tensor(std::string_view name) const noexcept {
  const auto it = std::lower_bound(by_name_.begin(), by_name_.end(), name,
                                   [&](std::size_t i, std::string_view n) { return std::string_view(tensors_[i].name) < n; });
  if (it == by_name_.end() || tensors_[*it].name != name) return nullptr;
  return &tensors_[*it];
}

template <class T>
result<TensorView<const T>> SafetensorsFile::typed_view(std::string_view name, SafetensorsDtype want) const {
  const SafetensorsTensorInfo* t = find_tensor(name);
  if (!t) return status(errc::not_found, fmt::format("safetensors file has no tensor '{}'", name));
  if (t->dtype != want) {
    const bool is_float = t->dtype == SafetensorsDtype::f64 || t->dtype == SafetensorsDtype::f32 || t->dtype == SafetensorsDtype::f16 ||
                          t->dtype == SafetensorsDtype::bf16 || t->dtype == SafetensorsDtype::f8_e5m2 ||
                          t->dtype == SafetensorsDtype::f8_e4m3 || t->dtype == SafetensorsDtype::f8_e8m0;
    return status(errc::unsupported, fmt::format("tensor '{}' is {}, not {}{}", name, st_name(t->dtype), st_name(want),
                                                 is_float ? "; tensor_dequantized_f32() reads it as f32" : ""));
  }
  if constexpr (sizeof(T) > 1) {
    if (std::endian::native != std::endian::little)
      return status(errc::unsupported, fmt::format("tensor '{}': safetensors data is little-endian and this machine is not", name));
  }
  const std::byte* p = bytes_.data() + t->offset;
  if (t->nbytes > 0 && reinterpret_cast<std::uintptr_t>(p) % alignof(T) != 0)
    return status(errc::unsupported, fmt::format("tensor '{}' data (file offset {}) is not aligned for {}; tensor_dequantized_f32() copies it",
                                                 name, t->offset, st_name(want)));
  return TensorView<const T>(reinterpret_cast<const T*>(p), t->shape);
}

result<TensorView<const float>> SafetensorsFile::tensor_f32(std::string_view name) const { return typed_view<float>(name, SafetensorsDtype::f32); }
result<TensorView<const double>> SafetensorsFile::tensor_f64(std::string_view name) const { return typed_view<double>(name, SafetensorsDtype::f64); }
result<TensorView<const f16>> SafetensorsFile::tensor_f16(std::string_view name) const { return typed_view<f16>(name, SafetensorsDtype::f16); }
result<TensorView<const bf16>> SafetensorsFile::tensor_bf16(std::string_view name) const { return typed_view<bf16>(name, SafetensorsDtype::bf16); }
result<TensorView<const std::int8_t>> SafetensorsFile::tensor_i8(std::string_view name) const { return typed_view<std::int8_t>(name, SafetensorsDtype::i8); }
result<TensorView<const std::uint8_t>> SafetensorsFile::tensor_u8(std::string_view name) const { return typed_view<std::uint8_t>(name, SafetensorsDtype::u8); }
result<TensorView<const std::int32_t>> SafetensorsFile::tensor_i32(std::string_view name) const { return typed_view<std::int32_t>(name, SafetensorsDtype::i32); }

result<Tensor<float>> SafetensorsFile::tensor_dequantized_f32(std::string_view name) const {
  const SafetensorsTensorInfo* t = find_tensor(name);
  if (!t) return status(errc::not_found, fmt::format("safetensors file has no tensor '{}'", name));
  const SafetensorsDtype dt = t->dtype;
  const bool multi_byte = dt == SafetensorsDtype::f64 || dt == SafetensorsDtype::f32 || dt == SafetensorsDtype::f16 || dt == SafetensorsDtype::bf16;
  if (multi_byte && std::endian::native != std::endian::little)
    return status(errc::unsupported, fmt::format("tensor '{}': safetensors data is little-endian and this machine is not", name));
  const std::span<const std::byte> src = tensor_bytes(*t);
  const auto* u8 = reinterpret_cast<const std::uint8_t*>(src.data());
  switch (dt) {
    case SafetensorsDtype::f32: {
      Tensor<float> out = Tensor<float>::uninitialized(t->shape);
      if (!src.empty()) std::memcpy(out.data(), src.data(), src.size());
      return out;
    }
    case SafetensorsDtype::f16: case SafetensorsDtype::bf16: {
      // Copied to aligned storage first (the file's data may be at any offset), then widened by
      // the SIMD kernels.
      Tensor<float> out = Tensor<float>::uninitialized(t->shape);
      if (dt == SafetensorsDtype::f16) {
        Tensor<f16> half = Tensor<f16>::uninitialized(t->shape);
        if (!src.empty()) std::memcpy(half.data(), src.data(), src.size());
        convert(std::span<const f16>(half.span()), out.span());
      } else {
        Tensor<bf16> half = Tensor<bf16>::uninitialized(t->shape);
        if (!src.empty()) std::memcpy(half.data(), src.data(), src.size());
        convert(std::span<const bf16>(half.span()), out.span());
      }
      return out;
    }
    case SafetensorsDtype::f64: {
      Tensor<float> out = Tensor<float>::uninitialized(t->shape);
      float* o = out.data();
      for (std::size_t i = 0; i < src.size() / 8; ++i) {
        double d;
        std::memcpy(&d, src.data() + 8 * i, 8);
        o[i] = f64_to_f32(d);
      }
      return out;
    }
    case SafetensorsDtype::f8_e5m2: case SafetensorsDtype::f8_e4m3: case SafetensorsDtype::f8_e8m0: {
      Tensor<float> out = Tensor<float>::uninitialized(t->shape);
      float* o = out.data();
      float (*widen)(std::uint8_t) = dt == SafetensorsDtype::f8_e5m2 ? f8_e5m2_to_f32 : dt == SafetensorsDtype::f8_e4m3 ? f8_e4m3_to_f32 : f8_e8m0_to_f32;
      for (std::size_t i = 0; i < src.size(); ++i) o[i] = widen(u8[i]);
      return out;
    }
    default: {
      const char* view = dt == SafetensorsDtype::i8 ? "tensor_i8()" : dt == SafetensorsDtype::u8 ? "tensor_u8()" : dt == SafetensorsDtype::i32 ? "tensor_i32()" : nullptr;
      return status(errc::unsupported, fmt::format("tensor '{}' is {}; tensor_dequantized_f32 reads F64, F32, F16, BF16, F8_E5M2, F8_E4M3 and F8_E8M0{}",
                                                   name, st_name(dt), view ? fmt::format(" ({} views it)", view) : std::string()));
    }
  }
}

}  // namespace quarry
