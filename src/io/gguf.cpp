#include "quarry/io/gguf.hpp"

#include <algorithm>
#include <limits>
#include <unordered_set>

#include <fmt/format.h>

#include "quarry/core/checked.hpp"
#include "quarry/core/convert.hpp"
#include "quarry/io/bounded_reader.hpp"
#include "quarry/quant/gguf_blocks.hpp"
#include "quarry/quant/quantize.hpp"

namespace quarry {

namespace {

constexpr std::uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr std::uint32_t kMaxDims = 4;         // GGML_MAX_DIMS

// Smallest encoded size of a value of type t (for bounding counts before allocating).
std::uint64_t min_encoded_size(GgufValueType t) noexcept {
  switch (t) {
    case GgufValueType::u8: case GgufValueType::i8: case GgufValueType::boolean: return 1;
    case GgufValueType::u16: case GgufValueType::i16: return 2;
    case GgufValueType::u32: case GgufValueType::i32: case GgufValueType::f32: return 4;
    case GgufValueType::u64: case GgufValueType::i64: case GgufValueType::f64: return 8;
    case GgufValueType::string: return 8;   // the length
    case GgufValueType::array: return 12;   // element type + count
  }
  return 1;
}

bool known_value_type(std::uint32_t t) noexcept { return t <= static_cast<std::uint32_t>(GgufValueType::f64); }

class Parser {
 public:
  Parser(std::span<const std::byte> bytes, std::string what, const GgufFile::Limits& limits)
      : r_(bytes, std::move(what)), limits_(limits) {}

  BoundedReader& reader() noexcept { return r_; }

  result<std::string> read_gguf_string(std::uint64_t max_len, std::string_view field) {
    QUARRY_ASSIGN_OR_RETURN(std::uint64_t n, r_.read<std::uint64_t>(fmt::format("length of {}", field)));
    return r_.read_string(n, max_len, field);
  }

  result<GgufValue> read_value(GgufValueType type, int depth, std::string_view key) {
    GgufValue v;
    v.type = type;
    switch (type) {
      case GgufValueType::u8: { QUARRY_ASSIGN_OR_RETURN(auto x, r_.read<std::uint8_t>(key)); v.data = std::uint64_t{x}; break; }
      case GgufValueType::i8: { QUARRY_ASSIGN_OR_RETURN(auto x, r_.read<std::int8_t>(key)); v.data = std::int64_t{x}; break; }
      case GgufValueType::u16: { QUARRY_ASSIGN_OR_RETURN(auto x, r_.read<std::uint16_t>(key)); v.data = std::uint64_t{x}; break; }
      case GgufValueType::i16: { QUARRY_ASSIGN_OR_RETURN(auto x, r_.read<std::int16_t>(key)); v.data = std::int64_t{x}; break; }
      case GgufValueType::u32: { QUARRY_ASSIGN_OR_RETURN(auto x, r_.read<std::uint32_t>(key)); v.data = std::uint64_t{x}; break; }
      case GgufValueType::i32: { QUARRY_ASSIGN_OR_RETURN(auto x, r_.read<std::int32_t>(key)); v.data = std::int64_t{x}; break; }
      case GgufValueType::u64: { QUARRY_ASSIGN_OR_RETURN(auto x, r_.read<std::uint64_t>(key)); v.data = x; break; }
      case GgufValueType::i64: { QUARRY_ASSIGN_OR_RETURN(auto x, r_.read<std::int64_t>(key)); v.data = x; break; }
      case GgufValueType::f32: { QUARRY_ASSIGN_OR_RETURN(auto x, r_.read<float>(key)); v.data = double{x}; break; }
      case GgufValueType::f64: { QUARRY_ASSIGN_OR_RETURN(auto x, r_.read<double>(key)); v.data = x; break; }
      case GgufValueType::boolean: {
        QUARRY_ASSIGN_OR_RETURN(auto x, r_.read<std::uint8_t>(key));
        if (x > 1) return r_.error(errc::corrupt_data, fmt::format("bool value of '{}' is {} (not 0 or 1) at offset {}", key, x, r_.offset() - 1));
        v.data = x == 1;
        break;
      }
      case GgufValueType::string: {
        QUARRY_ASSIGN_OR_RETURN(std::string s, read_gguf_string(limits_.max_string_bytes, fmt::format("string value of '{}'", key)));
        v.data = std::move(s);
        break;
      }
      case GgufValueType::array: {
        if (depth >= limits_.max_array_depth)
          return r_.error(errc::corrupt_data, fmt::format("arrays in '{}' nest deeper than {}", key, limits_.max_array_depth));
        QUARRY_ASSIGN_OR_RETURN(std::uint32_t et, r_.read<std::uint32_t>(fmt::format("element type of array '{}'", key)));
        if (!known_value_type(et))
          return r_.error(errc::corrupt_data, fmt::format("array '{}' has unknown element type {} at offset {}", key, et, r_.offset() - 4));
        QUARRY_ASSIGN_OR_RETURN(std::uint64_t n, r_.read<std::uint64_t>(fmt::format("element count of array '{}'", key)));
        const auto elem = static_cast<GgufValueType>(et);
        // Bound the count by the limit and by what the remaining bytes could possibly hold.
        if (n > limits_.max_array_elements || n > r_.remaining() / min_encoded_size(elem))
          return r_.error(errc::corrupt_data, fmt::format("array '{}' claims {} elements of type {}; the limit is {} and {} bytes remain",
                                                          key, n, gguf_value_type_name(elem), limits_.max_array_elements, r_.remaining()));
        GgufArray arr;
        arr.type = elem;
        const auto count = static_cast<std::size_t>(n);
        switch (elem) {
          case GgufValueType::f32: case GgufValueType::f64: arr.floats.reserve(count); break;
          case GgufValueType::string: arr.strings.reserve(count); break;
          case GgufValueType::array: arr.arrays.reserve(count); break;
          default: arr.ints.reserve(count); break;
        }
        for (std::uint64_t i = 0; i < n; ++i) {
          QUARRY_ASSIGN_OR_RETURN(GgufValue item, read_value(elem, depth + 1, key));
          if (auto* u = std::get_if<std::uint64_t>(&item.data)) arr.ints.push_back(static_cast<std::int64_t>(*u));
          else if (auto* x = std::get_if<std::int64_t>(&item.data)) arr.ints.push_back(*x);
          else if (auto* b = std::get_if<bool>(&item.data)) arr.ints.push_back(*b ? 1 : 0);
          else if (auto* d = std::get_if<double>(&item.data)) arr.floats.push_back(*d);
          else if (auto* str = std::get_if<std::string>(&item.data)) arr.strings.push_back(std::move(*str));
          else arr.arrays.push_back(std::move(item));
        }
        v.data = std::move(arr);
        break;
      }
    }
    return v;
  }

 private:
  BoundedReader r_;
  const GgufFile::Limits& limits_;
};

}  // namespace

std::string_view gguf_value_type_name(GgufValueType t) noexcept {
  switch (t) {
    case GgufValueType::u8: return "u8";
    case GgufValueType::i8: return "i8";
    case GgufValueType::u16: return "u16";
    case GgufValueType::i16: return "i16";
    case GgufValueType::u32: return "u32";
    case GgufValueType::i32: return "i32";
    case GgufValueType::f32: return "f32";
    case GgufValueType::boolean: return "bool";
    case GgufValueType::string: return "string";
    case GgufValueType::array: return "array";
    case GgufValueType::u64: return "u64";
    case GgufValueType::i64: return "i64";
    case GgufValueType::f64: return "f64";
  }
  return "unknown";
}

std::optional<std::int64_t> GgufValue::as_int() const noexcept {
  if (const auto* u = std::get_if<std::uint64_t>(&data)) {
    if (*u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) return std::nullopt;
    return static_cast<std::int64_t>(*u);
  }
  if (const auto* i = std::get_if<std::int64_t>(&data)) return *i;
  return std::nullopt;
}

std::optional<double> GgufValue::as_float() const noexcept {
  if (const auto* d = std::get_if<double>(&data)) return *d;
  return std::nullopt;
}

std::optional<GgmlTypeInfo> ggml_type_info(GgmlType t) noexcept {
  switch (t) {
    case GgmlType::f32: return GgmlTypeInfo{"f32", 1, 4};
    case GgmlType::f16: return GgmlTypeInfo{"f16", 1, 2};
    case GgmlType::q4_0: return GgmlTypeInfo{"q4_0", 32, 18};
    case GgmlType::q4_1: return GgmlTypeInfo{"q4_1", 32, 20};
    case GgmlType::q5_0: return GgmlTypeInfo{"q5_0", 32, 22};
    case GgmlType::q5_1: return GgmlTypeInfo{"q5_1", 32, 24};
    case GgmlType::q8_0: return GgmlTypeInfo{"q8_0", 32, 34};
    case GgmlType::q8_1: return GgmlTypeInfo{"q8_1", 32, 36};
    case GgmlType::q2_k: return GgmlTypeInfo{"q2_K", 256, 84};
    case GgmlType::q3_k: return GgmlTypeInfo{"q3_K", 256, 110};
    case GgmlType::q4_k: return GgmlTypeInfo{"q4_K", 256, 144};
    case GgmlType::q5_k: return GgmlTypeInfo{"q5_K", 256, 176};
    case GgmlType::q6_k: return GgmlTypeInfo{"q6_K", 256, 210};
    case GgmlType::q8_k: return GgmlTypeInfo{"q8_K", 256, 292};
    case GgmlType::iq2_xxs: return GgmlTypeInfo{"iq2_xxs", 256, 66};
    case GgmlType::iq2_xs: return GgmlTypeInfo{"iq2_xs", 256, 74};
    case GgmlType::iq3_xxs: return GgmlTypeInfo{"iq3_xxs", 256, 98};
    case GgmlType::iq1_s: return GgmlTypeInfo{"iq1_s", 256, 50};
    case GgmlType::iq4_nl: return GgmlTypeInfo{"iq4_nl", 32, 18};
    case GgmlType::iq3_s: return GgmlTypeInfo{"iq3_s", 256, 110};
    case GgmlType::iq2_s: return GgmlTypeInfo{"iq2_s", 256, 82};
    case GgmlType::iq4_xs: return GgmlTypeInfo{"iq4_xs", 256, 136};
    case GgmlType::i8: return GgmlTypeInfo{"i8", 1, 1};
    case GgmlType::i16: return GgmlTypeInfo{"i16", 1, 2};
    case GgmlType::i32: return GgmlTypeInfo{"i32", 1, 4};
    case GgmlType::i64: return GgmlTypeInfo{"i64", 1, 8};
    case GgmlType::f64: return GgmlTypeInfo{"f64", 1, 8};
    case GgmlType::iq1_m: return GgmlTypeInfo{"iq1_m", 256, 56};
    case GgmlType::bf16: return GgmlTypeInfo{"bf16", 1, 2};
    case GgmlType::tq1_0: return GgmlTypeInfo{"tq1_0", 256, 54};
    case GgmlType::tq2_0: return GgmlTypeInfo{"tq2_0", 256, 66};
    case GgmlType::mxfp4: return GgmlTypeInfo{"mxfp4", 32, 17};
  }
  return std::nullopt;
}

result<GgufFile> GgufFile::open(const std::string& path, const Limits& limits) {
  QUARRY_ASSIGN_OR_RETURN(MappedFile mapped, MappedFile::open(path));
  const auto bytes = mapped.bytes();
  QUARRY_ASSIGN_OR_RETURN(GgufFile f, parse(bytes, path, limits));
  f.file_ = std::move(mapped);  // the mapping's address does not change on move
  return f;
}

result<GgufFile> GgufFile::parse(std::span<const std::byte> bytes, std::string what, const Limits& limits) {
  Parser p(bytes, std::move(what), limits);
  BoundedReader& r = p.reader();
  GgufFile f;
  f.bytes_ = bytes;

  QUARRY_ASSIGN_OR_RETURN(std::uint32_t magic, r.read<std::uint32_t>("magic"));
  if (magic != kMagic) return r.error(errc::corrupt_data, fmt::format("not a GGUF file (magic 0x{:08x}, expected 0x{:08x} \"GGUF\")", magic, kMagic));
  QUARRY_ASSIGN_OR_RETURN(f.version_, r.read<std::uint32_t>("version"));
  if (f.version_ == 1) return r.error(errc::unsupported, "GGUF version 1 (32-bit counts) is not supported; convert the file to v3");
  if (f.version_ == 0x02000000u || f.version_ == 0x03000000u)
    return r.error(errc::unsupported, "big-endian GGUF files are not supported");
  if (f.version_ != 2 && f.version_ != 3) return r.error(errc::unsupported, fmt::format("GGUF version {} is not supported (2 and 3 are)", f.version_));
  QUARRY_ASSIGN_OR_RETURN(std::uint64_t n_tensors, r.read<std::uint64_t>("tensor count"));
  QUARRY_ASSIGN_OR_RETURN(std::uint64_t n_kv, r.read<std::uint64_t>("metadata count"));
  // A tensor info takes at least 8 + 4 + 8 + 4 + 8 bytes, a key-value pair 8 + 4 + 1.
  if (n_tensors > limits.max_tensors || n_tensors > r.remaining() / 32)
    return r.error(errc::corrupt_data, fmt::format("tensor count {} exceeds the limit {} or the {} bytes that remain", n_tensors, limits.max_tensors, r.remaining()));
  if (n_kv > limits.max_metadata || n_kv > r.remaining() / 13)
    return r.error(errc::corrupt_data, fmt::format("metadata count {} exceeds the limit {} or the {} bytes that remain", n_kv, limits.max_metadata, r.remaining()));

  std::unordered_set<std::string> seen;
  f.metadata_.reserve(static_cast<std::size_t>(n_kv));
  for (std::uint64_t i = 0; i < n_kv; ++i) {
    QUARRY_ASSIGN_OR_RETURN(std::string key, p.read_gguf_string(limits.max_key_bytes, fmt::format("key of metadata entry {}", i)));
    if (!seen.insert(key).second) return r.error(errc::corrupt_data, fmt::format("metadata key '{}' appears twice", key));
    QUARRY_ASSIGN_OR_RETURN(std::uint32_t type, r.read<std::uint32_t>(fmt::format("type of '{}'", key)));
    if (!known_value_type(type))
      return r.error(errc::corrupt_data, fmt::format("metadata '{}' has unknown type {} at offset {}", key, type, r.offset() - 4));
    QUARRY_ASSIGN_OR_RETURN(GgufValue value, p.read_value(static_cast<GgufValueType>(type), 0, key));
    f.metadata_.emplace_back(std::move(key), std::move(value));
  }
  if (const GgufValue* a = f.find("general.alignment")) {
    const auto v = a->as_int();
    if (a->type != GgufValueType::u32 || !v || *v == 0 || (*v & (*v - 1)) != 0)
      return r.error(errc::corrupt_data, fmt::format("general.alignment must be a power-of-two u32; it is a {} of value {}",
                                                     gguf_value_type_name(a->type), v ? *v : -1));
    f.alignment_ = static_cast<std::uint64_t>(*v);
  }

  seen.clear();
  f.tensors_.reserve(static_cast<std::size_t>(n_tensors));
  for (std::uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    QUARRY_ASSIGN_OR_RETURN(t.name, p.read_gguf_string(limits.max_key_bytes, fmt::format("name of tensor {}", i)));
    if (!seen.insert(t.name).second) return r.error(errc::corrupt_data, fmt::format("tensor name '{}' appears twice", t.name));
    QUARRY_ASSIGN_OR_RETURN(std::uint32_t n_dims, r.read<std::uint32_t>(fmt::format("dimension count of '{}'", t.name)));
    if (n_dims == 0 || n_dims > kMaxDims)
      return r.error(errc::corrupt_data, fmt::format("tensor '{}' has {} dimensions (1 to {} allowed)", t.name, n_dims, kMaxDims));
    std::int64_t ne[kMaxDims] = {1, 1, 1, 1};
    for (std::uint32_t d = 0; d < n_dims; ++d) {
      QUARRY_ASSIGN_OR_RETURN(std::uint64_t e, r.read<std::uint64_t>(fmt::format("dimension {} of '{}'", d, t.name)));
      if (e > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        return r.error(errc::corrupt_data, fmt::format("dimension {} of '{}' is {}, beyond int64", d, t.name, e));
      ne[d] = static_cast<std::int64_t>(e);
    }
    for (std::uint32_t d = n_dims; d-- > 0;) t.shape.push_back(ne[d]);
    QUARRY_ASSIGN_OR_RETURN(std::uint32_t type, r.read<std::uint32_t>(fmt::format("type of '{}'", t.name)));
    t.type = static_cast<GgmlType>(type);
    const auto info = ggml_type_info(t.type);
    if (!info) return r.error(errc::unsupported, fmt::format("tensor '{}' has ggml type {}, which quarry does not know", t.name, type));
    if (ne[0] % info->block_elems != 0)
      return r.error(errc::corrupt_data, fmt::format("tensor '{}' ({}): its innermost dimension {} is not a multiple of the block size {}",
                                                     t.name, info->name, ne[0], info->block_elems));
    const auto numel = t.shape.checked_numel();
    const auto bytes_per_row = checked_mul(ne[0] / info->block_elems, info->block_bytes);
    const auto nbytes = numel && bytes_per_row ? checked_mul(*bytes_per_row, ne[0] ? *numel / ne[0] : 0) : std::nullopt;
    if (!nbytes) return r.error(errc::corrupt_data, fmt::format("tensor '{}' of shape {}: its size overflows", t.name, t.shape));
    t.nbytes = static_cast<std::uint64_t>(*nbytes);
    QUARRY_ASSIGN_OR_RETURN(t.offset, r.read<std::uint64_t>(fmt::format("offset of '{}'", t.name)));
    if (t.offset % f.alignment_ != 0)
      return r.error(errc::corrupt_data, fmt::format("tensor '{}' data offset {} is not a multiple of the alignment {}", t.name, t.offset, f.alignment_));
    f.tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment.
  const std::uint64_t end_of_infos = r.offset();
  const std::uint64_t pad = (f.alignment_ - end_of_infos % f.alignment_) % f.alignment_;
  f.data_offset_ = end_of_infos + pad;
  if (!f.tensors_.empty() && f.data_offset_ > bytes.size())
    return r.error(errc::corrupt_data, fmt::format("tensor data would start at offset {}, past the end of the file ({} bytes)", f.data_offset_, bytes.size()));

  std::vector<const GgufTensorInfo*> by_offset;
  by_offset.reserve(f.tensors_.size());
  for (GgufTensorInfo& t : f.tensors_) {
    const auto begin = checked_add(static_cast<std::int64_t>(f.data_offset_), static_cast<std::int64_t>(std::min<std::uint64_t>(t.offset, INT64_MAX)));
    const auto end = begin ? checked_add(*begin, static_cast<std::int64_t>(std::min<std::uint64_t>(t.nbytes, INT64_MAX))) : std::nullopt;
    if (!end || static_cast<std::uint64_t>(*end) > bytes.size())
      return r.error(errc::corrupt_data, fmt::format("tensor '{}' ({} bytes at data offset {}) extends past the end of the file ({} bytes)",
                                                     t.name, t.nbytes, t.offset, bytes.size()));
    t.offset = static_cast<std::uint64_t>(*begin);
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](const auto* a, const auto* b) { return a->offset < b->offset; });
  for (std::size_t i = 1; i < by_offset.size(); ++i) {
    const GgufTensorInfo& prev = *by_offset[i - 1];
    const GgufTensorInfo& cur = *by_offset[i];
    if (cur.offset < prev.offset + prev.nbytes)
      return r.error(errc::corrupt_data, fmt::format("tensors '{}' and '{}' overlap", prev.name, cur.name));
  }
  return f;
}

const GgufValue* GgufFile::find(std::string_view key) const noexcept {
  for (const auto& [k, v] : metadata_)
    if (k == key) return &v;
  return nullptr;
}

result<std::int64_t> GgufFile::get_int(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return status(errc::not_found, fmt::format("GGUF metadata has no key '{}'", key));
  if (auto i = v->as_int()) return *i;
  return status(errc::invalid_argument, fmt::format("GGUF metadata '{}' is a {}, not an integer", key, gguf_value_type_name(v->type)));
}

result<double> GgufFile::get_float(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return status(errc::not_found, fmt::format("GGUF metadata has no key '{}'", key));
  if (auto d = v->as_float()) return *d;
  return status(errc::invalid_argument, fmt::format("GGUF metadata '{}' is a {}, not a float", key, gguf_value_type_name(v->type)));
}

result<std::string> GgufFile::get_string(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return status(errc::not_found, fmt::format("GGUF metadata has no key '{}'", key));
  if (const std::string* s = v->as_string()) return *s;
  return status(errc::invalid_argument, fmt::format("GGUF metadata '{}' is a {}, not a string", key, gguf_value_type_name(v->type)));
}

const GgufTensorInfo* GgufFile::find_tensor(std::string_view name) const noexcept {
  for (const GgufTensorInfo& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

template <class T>
result<TensorView<const T>> GgufFile::typed_view(std::string_view name, GgmlType want) const {
  const GgufTensorInfo* t = find_tensor(name);
  if (!t) return status(errc::not_found, fmt::format("GGUF file has no tensor '{}'", name));
  if (t->type != want) {
    const auto have = ggml_type_info(t->type);
    return status(errc::unsupported, fmt::format("tensor '{}' is {}, not {}", name, have ? have->name : "unknown", ggml_type_info(want)->name));
  }
  const std::byte* p = bytes_.data() + t->offset;
  if (reinterpret_cast<std::uintptr_t>(p) % alignof(T) != 0)
    return status(errc::unsupported, fmt::format("tensor '{}' data is not aligned for {} (alignment {})", name, ggml_type_info(want)->name, alignment_));
  return TensorView<const T>(reinterpret_cast<const T*>(p), t->shape);
}

result<TensorView<const float>> GgufFile::tensor_f32(std::string_view name) const { return typed_view<float>(name, GgmlType::f32); }
result<TensorView<const f16>> GgufFile::tensor_f16(std::string_view name) const { return typed_view<f16>(name, GgmlType::f16); }
result<TensorView<const bf16>> GgufFile::tensor_bf16(std::string_view name) const { return typed_view<bf16>(name, GgmlType::bf16); }

namespace {

std::string_view type_name(GgmlType t) noexcept {
  const auto info = ggml_type_info(t);
  return info ? info->name : "unknown";
}

// Imports a Q8_0 / Q4_0 tensor's bytes as a [rows, K] matrix, K = the innermost dimension.
result<QuantizedTensor<cpu>> import_blocks(const GgufTensorInfo& t, std::span<const std::byte> bytes) {
  const std::int64_t k = t.shape[t.shape.rank() - 1];
  const std::int64_t rows = k ? *t.shape.checked_numel() / k : 0;
  auto q = t.type == GgmlType::q8_0 ? import_gguf_q8_0(bytes, rows, k) : import_gguf_q4_0(bytes, rows, k);
  if (!q.ok()) return status(q.status().code(), fmt::format("tensor '{}': {}", t.name, q.status().message()));
  return q;
}

}  // namespace

result<QuantizedTensor<cpu>> GgufFile::tensor_quantized(std::string_view name) const {
  const GgufTensorInfo* t = find_tensor(name);
  if (!t) return status(errc::not_found, fmt::format("GGUF file has no tensor '{}'", name));
  if (t->type != GgmlType::q8_0 && t->type != GgmlType::q4_0) {
    const bool plain = t->type == GgmlType::f32 || t->type == GgmlType::f16 || t->type == GgmlType::bf16;
    return status(errc::unsupported, fmt::format("tensor '{}' is {}, not q8_0 or q4_0{}", name, type_name(t->type),
                                                 plain ? fmt::format("; read it with tensor_{}()", type_name(t->type)) : ""));
  }
  if (t->shape.rank() > 2)
    return status(errc::shape_mismatch, fmt::format("tensor '{}' ({}) has shape {}; a quantized matrix must be rank 1 or 2",
                                                    name, type_name(t->type), t->shape));
  return import_blocks(*t, tensor_bytes(*t));
}

result<Tensor<float>> GgufFile::tensor_dequantized_f32(std::string_view name) const {
  const GgufTensorInfo* t = find_tensor(name);
  if (!t) return status(errc::not_found, fmt::format("GGUF file has no tensor '{}'", name));
  switch (t->type) {
    case GgmlType::f32: { QUARRY_ASSIGN_OR_RETURN(auto v, tensor_f32(name)); return v.contiguous(); }
    case GgmlType::f16: { QUARRY_ASSIGN_OR_RETURN(auto v, tensor_f16(name)); return cast<float>(v); }
    case GgmlType::bf16: { QUARRY_ASSIGN_OR_RETURN(auto v, tensor_bf16(name)); return cast<float>(v); }
    case GgmlType::q8_0: case GgmlType::q4_0: {
      QUARRY_ASSIGN_OR_RETURN(QuantizedTensor<cpu> q, import_blocks(*t, tensor_bytes(*t)));
      Tensor<float> out = dequantize(q);
      out.reshape_in_place(t->shape);
      return out;
    }
    default:
      return status(errc::unsupported, fmt::format("tensor '{}' is {}; quarry reads f32, f16, bf16, q8_0 and q4_0 as f32", name, type_name(t->type)));
  }
}

}  // namespace quarry
