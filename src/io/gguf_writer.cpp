#include "quarry/io/gguf_writer.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>

#include <fmt/format.h>

#include "quarry/core/checked.hpp"
#include "quarry/io/atomic_file.hpp"

namespace quarry {

namespace {

constexpr std::uint32_t kMagic = 0x46554747;  // "GGUF" as a little-endian u32
constexpr std::uint32_t kVersion = 3;
constexpr int kMaxDims = 4;                   // GGML_MAX_DIMS
constexpr std::size_t kMaxTensorName = 63;    // GGML_MAX_NAME (64) with its terminating NUL
constexpr std::size_t kBufferBytes = std::size_t{4} << 20;
const GgufFile::Limits kReaderLimits{};       // what every written file must satisfy

std::uint64_t align_up(std::uint64_t x, std::uint64_t a) noexcept { return (x + a - 1) / a * a; }

// ---- value checks ----

bool in_range(GgufValueType t, std::int64_t v) noexcept {
  switch (t) {
    case GgufValueType::u8: return v >= 0 && v <= 0xff;
    case GgufValueType::i8: return v >= -128 && v <= 127;
    case GgufValueType::u16: return v >= 0 && v <= 0xffff;
    case GgufValueType::i16: return v >= -32768 && v <= 32767;
    case GgufValueType::u32: return v >= 0 && v <= 0xffffffffLL;
    case GgufValueType::i32: return v >= std::numeric_limits<std::int32_t>::min() && v <= std::numeric_limits<std::int32_t>::max();
    case GgufValueType::boolean: return v == 0 || v == 1;
    default: return true;  // u64 (its bit pattern), i64
  }
}

bool is_integer(GgufValueType t) noexcept {
  switch (t) {
    case GgufValueType::u8: case GgufValueType::i8: case GgufValueType::u16: case GgufValueType::i16:
    case GgufValueType::u32: case GgufValueType::i32: case GgufValueType::u64: case GgufValueType::i64:
      return true;
    default: return false;
  }
}
bool is_unsigned(GgufValueType t) noexcept {
  return t == GgufValueType::u8 || t == GgufValueType::u16 || t == GgufValueType::u32 || t == GgufValueType::u64;
}
bool known_type(GgufValueType t) noexcept { return static_cast<std::uint32_t>(t) <= static_cast<std::uint32_t>(GgufValueType::f64); }

std::string_view held_name(const GgufValue& v) noexcept {
  switch (v.data.index()) {
    case 0: return "uint64_t";
    case 1: return "int64_t";
    case 2: return "double";
    case 3: return "bool";
    case 4: return "string";
    default: return "GgufArray";
  }
}

status check_value(const GgufValue& v, const std::string& key, int depth);

status check_array(const GgufArray& a, const std::string& key, int depth) {
  if (depth >= kReaderLimits.max_array_depth)
    return {errc::invalid_argument, fmt::format("metadata '{}': arrays nest deeper than {}, GgufFile's limit", key, kReaderLimits.max_array_depth)};
  if (!known_type(a.type))
    return {errc::invalid_argument, fmt::format("metadata '{}': array element type {} is not a GGUF type", key, static_cast<std::uint32_t>(a.type))};
  if (a.size() > kReaderLimits.max_array_elements)
    return {errc::invalid_argument, fmt::format("metadata '{}': {} array elements exceed GgufFile's limit {}", key, a.size(), kReaderLimits.max_array_elements)};
  // The elements must sit in the one vector their type uses.
  std::size_t in_place = 0;
  switch (a.type) {
    case GgufValueType::f32: case GgufValueType::f64: in_place = a.floats.size(); break;
    case GgufValueType::string: in_place = a.strings.size(); break;
    case GgufValueType::array: in_place = a.arrays.size(); break;
    default: in_place = a.ints.size(); break;
  }
  if (in_place != a.size())
    return {errc::invalid_argument, fmt::format("metadata '{}': an array of {} holds {} ints, {} floats, {} strings, {} arrays; only the {} belong",
                                                key, gguf_value_type_name(a.type), a.ints.size(), a.floats.size(), a.strings.size(), a.arrays.size(),
                                                a.type == GgufValueType::f32 || a.type == GgufValueType::f64 ? "floats"
                                                : a.type == GgufValueType::string                           ? "strings"
                                                : a.type == GgufValueType::array                            ? "arrays"
                                                                                                            : "ints")};
  for (std::size_t i = 0; i < a.ints.size(); ++i)
    if (!in_range(a.type, a.ints[i]))
      return {errc::invalid_argument, fmt::format("metadata '{}': element {} ({}) is out of range for {}", key, i, a.ints[i], gguf_value_type_name(a.type))};
  for (std::size_t i = 0; i < a.strings.size(); ++i)
    if (a.strings[i].size() > kReaderLimits.max_string_bytes)
      return {errc::invalid_argument, fmt::format("metadata '{}': string element {} has {} bytes, beyond GgufFile's limit {}", key, i,
                                                  a.strings[i].size(), kReaderLimits.max_string_bytes)};
  for (std::size_t i = 0; i < a.arrays.size(); ++i) {
    const GgufValue& e = a.arrays[i];
    if (e.type != GgufValueType::array || e.as_array() == nullptr)
      return {errc::invalid_argument, fmt::format("metadata '{}': element {} of an array of arrays is a {} holding a {}", key, i,
                                                  gguf_value_type_name(e.type), held_name(e))};
    QUARRY_RETURN_IF_ERROR(check_array(*e.as_array(), key, depth + 1));
  }
  return {};
}

status check_value(const GgufValue& v, const std::string& key, int depth) {
  const auto mismatch = [&] {
    return status{errc::invalid_argument, fmt::format("metadata '{}' is typed {} but holds a {}", key, gguf_value_type_name(v.type), held_name(v))};
  };
  if (is_integer(v.type)) {
    if (is_unsigned(v.type)) {
      const auto* u = std::get_if<std::uint64_t>(&v.data);
      if (u == nullptr) return mismatch();
      if (v.type != GgufValueType::u64 && (*u > 0xffffffffULL || !in_range(v.type, static_cast<std::int64_t>(*u))))
        return {errc::invalid_argument, fmt::format("metadata '{}': {} is out of range for {}", key, *u, gguf_value_type_name(v.type))};
    } else {
      const auto* i = std::get_if<std::int64_t>(&v.data);
      if (i == nullptr) return mismatch();
      if (!in_range(v.type, *i))
        return {errc::invalid_argument, fmt::format("metadata '{}': {} is out of range for {}", key, *i, gguf_value_type_name(v.type))};
    }
    return {};
  }
  switch (v.type) {
    case GgufValueType::f32: case GgufValueType::f64:
      return std::holds_alternative<double>(v.data) ? status{} : mismatch();
    case GgufValueType::boolean:
      return std::holds_alternative<bool>(v.data) ? status{} : mismatch();
    case GgufValueType::string: {
      const std::string* s = v.as_string();
      if (s == nullptr) return mismatch();
      if (s->size() > kReaderLimits.max_string_bytes)
        return {errc::invalid_argument, fmt::format("metadata '{}': a string of {} bytes, beyond GgufFile's limit {}", key, s->size(),
                                                    kReaderLimits.max_string_bytes)};
      return {};
    }
    case GgufValueType::array: {
      const GgufArray* a = v.as_array();
      if (a == nullptr) return mismatch();
      return check_array(*a, key, depth);
    }
    default:
      return {errc::invalid_argument, fmt::format("metadata '{}' has type {}, which is not a GGUF type", key, static_cast<std::uint32_t>(v.type))};
  }
}

// ---- encoding ----

class Encoder {
 public:
  std::vector<std::byte> bytes;

  template <class T>
  void put(T v) {
    const auto* p = reinterpret_cast<const std::byte*>(&v);
    bytes.insert(bytes.end(), p, p + sizeof(T));
  }
  void str(std::string_view s) {
    put<std::uint64_t>(s.size());
    const auto* p = reinterpret_cast<const std::byte*>(s.data());
    bytes.insert(bytes.end(), p, p + s.size());
  }
  // One element of integer type t (held as int64, u64 as its bit pattern).
  void integer(GgufValueType t, std::int64_t v) {
    switch (t) {
      case GgufValueType::u8: case GgufValueType::boolean: put(static_cast<std::uint8_t>(v)); break;
      case GgufValueType::i8: put(static_cast<std::int8_t>(v)); break;
      case GgufValueType::u16: put(static_cast<std::uint16_t>(v)); break;
      case GgufValueType::i16: put(static_cast<std::int16_t>(v)); break;
      case GgufValueType::u32: put(static_cast<std::uint32_t>(v)); break;
      case GgufValueType::i32: put(static_cast<std::int32_t>(v)); break;
      case GgufValueType::u64: put(static_cast<std::uint64_t>(v)); break;
      default: put(v); break;
    }
  }
  void floating(GgufValueType t, double v) {
    if (t == GgufValueType::f32) put(static_cast<float>(v));
    else put(v);
  }
  void array(const GgufArray& a) {
    put(static_cast<std::uint32_t>(a.type));
    put<std::uint64_t>(a.size());
    for (std::int64_t v : a.ints) integer(a.type, v);
    for (double v : a.floats) floating(a.type, v);
    for (const std::string& s : a.strings) str(s);
    for (const GgufValue& e : a.arrays) array(*e.as_array());
  }
  // A checked value, without its type tag.
  void value(const GgufValue& v) {
    if (const auto* u = std::get_if<std::uint64_t>(&v.data)) integer(v.type, static_cast<std::int64_t>(*u));
    else if (const auto* i = std::get_if<std::int64_t>(&v.data)) integer(v.type, *i);
    else if (const auto* d = std::get_if<double>(&v.data)) floating(v.type, *d);
    else if (const auto* b = std::get_if<bool>(&v.data)) put<std::uint8_t>(*b ? 1 : 0);
    else if (const auto* s = v.as_string()) str(*s);
    else array(*v.as_array());
  }
};

// Appends to an AtomicFileWriter through a buffer, so producers may hand over small pieces.
class BufferedOutput {
 public:
  explicit BufferedOutput(AtomicFileWriter& file) : file_(file), buffer_(kBufferBytes) {}

  status put(std::span<const std::byte> bytes) {
    if (used_ + bytes.size() > buffer_.size()) QUARRY_RETURN_IF_ERROR(flush());
    if (bytes.size() >= buffer_.size()) return file_.write(bytes);
    std::memcpy(buffer_.data() + used_, bytes.data(), bytes.size());
    used_ += bytes.size();
    return {};
  }
  status zeros(std::uint64_t n) {
    static constexpr std::byte kZeros[256] = {};
    while (n > 0) {
      const std::size_t piece = static_cast<std::size_t>(std::min<std::uint64_t>(n, sizeof(kZeros)));
      QUARRY_RETURN_IF_ERROR(put(std::span<const std::byte>(kZeros, piece)));
      n -= piece;
    }
    return {};
  }
  status flush() {
    if (used_ == 0) return {};
    const std::size_t n = used_;
    used_ = 0;
    return file_.write(std::span<const std::byte>(buffer_.data(), n));
  }
  std::uint64_t position() const noexcept { return file_.bytes_written() + used_; }

 private:
  AtomicFileWriter& file_;
  std::vector<std::byte> buffer_;
  std::size_t used_ = 0;
};

}  // namespace

// ---- GgufTensorSink ----

status GgufTensorSink::write(std::span<const std::byte> bytes) {
  if (bytes.size() > remaining_)
    return {errc::invalid_argument, fmt::format("the producer wrote {} bytes more than the tensor's {}", bytes.size() - remaining_, remaining_ + written_)};
  remaining_ -= bytes.size();
  written_ += bytes.size();
  return out_(bytes);
}

// ---- GgufWriter ----

status GgufWriter::set_alignment(std::uint32_t alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)) != 0 || alignment > (1u << 30))
    return {errc::invalid_argument, fmt::format("GGUF alignment {} is not a power of two from 1 to 2^30", alignment)};
  alignment_ = alignment;
  return {};
}

status GgufWriter::add(std::string key, GgufValue value) {
  if (key.empty()) return {errc::invalid_argument, "a GGUF metadata key is empty"};
  if (key.size() > kReaderLimits.max_key_bytes)
    return {errc::invalid_argument, fmt::format("GGUF metadata key of {} bytes (starting '{}') exceeds GgufFile's limit {}", key.size(),
                                                key.substr(0, 40), kReaderLimits.max_key_bytes)};
  if (key == "general.alignment")
    return {errc::invalid_argument, "metadata 'general.alignment' is written from set_alignment(); set it there"};
  for (const auto& [k, v] : metadata_)
    if (k == key) return {errc::invalid_argument, fmt::format("metadata key '{}' was already added", key)};
  QUARRY_RETURN_IF_ERROR(check_value(value, key, 0));
  metadata_.emplace_back(std::move(key), std::move(value));
  return {};
}

status GgufWriter::add_string_array(std::string key, std::vector<std::string> values) {
  GgufArray a;
  a.type = GgufValueType::string;
  a.strings = std::move(values);
  return add_array(std::move(key), std::move(a));
}

status GgufWriter::add_f32_array(std::string key, std::span<const float> values) {
  GgufArray a;
  a.type = GgufValueType::f32;
  a.floats.assign(values.begin(), values.end());
  return add_array(std::move(key), std::move(a));
}

status GgufWriter::add_i32_array(std::string key, std::span<const std::int32_t> values) {
  GgufArray a;
  a.type = GgufValueType::i32;
  a.ints.assign(values.begin(), values.end());
  return add_array(std::move(key), std::move(a));
}

result<std::uint64_t> GgufWriter::bytes_of(GgmlType type, const Shape& shape, std::string_view what) {
  const auto info = ggml_type_info(type);
  if (!info) return status{errc::invalid_argument, fmt::format("{}: ggml type {} is not one quarry knows", what, static_cast<std::uint32_t>(type))};
  if (shape.rank() < 1 || shape.rank() > kMaxDims)
    return status{errc::shape_mismatch, fmt::format("{} ({}) has shape {}: GGUF tensors have 1 to {} dimensions", what, info->name, shape, kMaxDims)};
  for (const std::int64_t e : shape)
    if (e < 0) return status{errc::shape_mismatch, fmt::format("{} ({}) has a negative extent in shape {}", what, info->name, shape)};
  const std::int64_t inner = shape[shape.rank() - 1];
  if (inner % info->block_elems != 0)
    return status{errc::shape_mismatch, fmt::format("{} ({}) has shape {}: its innermost extent {} is not a multiple of the block size {}", what,
                                                    info->name, shape, inner, info->block_elems)};
  const auto numel = shape.checked_numel();
  const auto nbytes = numel ? checked_mul(*numel / info->block_elems, info->block_bytes) : std::nullopt;
  if (!nbytes) return status{errc::shape_mismatch, fmt::format("{} ({}) of shape {}: its size overflows", what, info->name, shape)};
  return static_cast<std::uint64_t>(*nbytes);
}

status GgufWriter::check_new_tensor(const std::string& name) const {
  if (name.empty()) return {errc::invalid_argument, "a GGUF tensor name is empty"};
  if (name.size() > kMaxTensorName)
    return {errc::invalid_argument, fmt::format("tensor name '{}' has {} bytes; ggml allows at most {}", name, name.size(), kMaxTensorName)};
  for (const TensorEntry& t : tensors_)
    if (t.name == name) return {errc::invalid_argument, fmt::format("tensor '{}' was already added", name)};
  return {};
}

status GgufWriter::add_entry(std::string name, GgmlType type, const Shape& shape,
                             std::variant<std::vector<std::byte>, GgufTensorProducer> data, std::uint64_t nbytes) {
  if (tensors_.size() >= kReaderLimits.max_tensors)
    return {errc::invalid_argument, fmt::format("tensor '{}' would be tensor {}, beyond GgufFile's limit {}", name, tensors_.size() + 1, kReaderLimits.max_tensors)};
  tensors_.push_back(TensorEntry{std::move(name), type, shape, nbytes, std::move(data)});
  return {};
}

status GgufWriter::add_tensor(std::string name, GgmlType type, const Shape& shape, std::span<const std::byte> bytes) {
  QUARRY_RETURN_IF_ERROR(check_new_tensor(name));
  QUARRY_ASSIGN_OR_RETURN(const std::uint64_t nbytes, bytes_of(type, shape, fmt::format("tensor '{}'", name)));
  if (bytes.size() != nbytes)
    return {errc::shape_mismatch, fmt::format("tensor '{}' ({} of shape {}) needs {} bytes; {} were given", name, ggml_type_info(type)->name, shape,
                                              nbytes, bytes.size())};
  return add_entry(std::move(name), type, shape, std::vector<std::byte>(bytes.begin(), bytes.end()), nbytes);
}

status GgufWriter::add_tensor(std::string name, GgmlType type, const Shape& shape, GgufTensorProducer producer) {
  QUARRY_RETURN_IF_ERROR(check_new_tensor(name));
  if (!producer) return {errc::invalid_argument, fmt::format("tensor '{}': the producer is empty", name)};
  QUARRY_ASSIGN_OR_RETURN(const std::uint64_t nbytes, bytes_of(type, shape, fmt::format("tensor '{}'", name)));
  return add_entry(std::move(name), type, shape, std::move(producer), nbytes);
}

namespace {
template <class T>
std::span<const std::byte> contiguous_bytes(const TensorView<const T>& v, Tensor<T>& staged) {
  if (v.is_contiguous()) return std::as_bytes(std::span<const T>(v.data(), static_cast<std::size_t>(v.numel())));
  staged = v.contiguous();
  return std::as_bytes(std::span<const T>(staged.data(), static_cast<std::size_t>(staged.numel())));
}
}  // namespace

status GgufWriter::add_tensor(std::string name, TensorView<const float> values) {
  Tensor<float> staged;
  return add_tensor(std::move(name), GgmlType::f32, values.shape(), contiguous_bytes(values, staged));
}
status GgufWriter::add_tensor(std::string name, TensorView<const f16> values) {
  Tensor<f16> staged;
  return add_tensor(std::move(name), GgmlType::f16, values.shape(), contiguous_bytes(values, staged));
}
status GgufWriter::add_tensor(std::string name, TensorView<const bf16> values) {
  Tensor<bf16> staged;
  return add_tensor(std::move(name), GgmlType::bf16, values.shape(), contiguous_bytes(values, staged));
}
status GgufWriter::add_tensor(std::string name, const Shape& shape, std::span<const BlockQ8_0> blocks) {
  return add_tensor(std::move(name), GgmlType::q8_0, shape, std::as_bytes(blocks));
}
status GgufWriter::add_tensor(std::string name, const Shape& shape, std::span<const BlockQ4_0> blocks) {
  return add_tensor(std::move(name), GgmlType::q4_0, shape, std::as_bytes(blocks));
}

std::vector<std::byte> GgufWriter::header_bytes(std::vector<std::uint64_t>& offsets) const {
  Encoder e;
  e.put(kMagic);
  e.put(kVersion);
  e.put<std::uint64_t>(tensors_.size());
  e.put<std::uint64_t>(metadata_count());
  for (const auto& [key, value] : metadata_) {
    e.str(key);
    e.put(static_cast<std::uint32_t>(value.type));
    e.value(value);
  }
  if (alignment_ != 32) {
    e.str("general.alignment");
    e.put(static_cast<std::uint32_t>(GgufValueType::u32));
    e.put(alignment_);
  }
  offsets.clear();
  std::uint64_t offset = 0;
  for (const TensorEntry& t : tensors_) {
    e.str(t.name);
    e.put(static_cast<std::uint32_t>(t.shape.rank()));
    for (int d = t.shape.rank(); d-- > 0;) e.put(static_cast<std::uint64_t>(t.shape[d]));  // ne[0] is the innermost extent
    e.put(static_cast<std::uint32_t>(t.type));
    e.put(offset);
    offsets.push_back(offset);
    offset = align_up(offset + t.nbytes, alignment_);
  }
  return std::move(e.bytes);
}

std::uint64_t GgufWriter::file_size() const {
  std::vector<std::uint64_t> offsets;
  const std::uint64_t header = header_bytes(offsets).size();
  if (tensors_.empty()) return header;
  return align_up(header, alignment_) + offsets.back() + tensors_.back().nbytes;
}

status GgufWriter::write(const std::string& path) const {
  std::vector<std::uint64_t> offsets;
  const std::vector<std::byte> header = header_bytes(offsets);
  QUARRY_ASSIGN_OR_RETURN(AtomicFileWriter file, AtomicFileWriter::create(path));
  BufferedOutput out(file);
  QUARRY_RETURN_IF_ERROR(out.put(header));
  const std::uint64_t data_start = align_up(header.size(), alignment_);
  for (std::size_t i = 0; i < tensors_.size(); ++i) {
    const TensorEntry& t = tensors_[i];
    QUARRY_RETURN_IF_ERROR(out.zeros(data_start + offsets[i] - out.position()));
    if (const auto* bytes = std::get_if<std::vector<std::byte>>(&t.data)) {
      QUARRY_RETURN_IF_ERROR(out.put(*bytes));
      continue;
    }
    GgufTensorSink sink(t.name, t.nbytes, [&out](std::span<const std::byte> b) { return out.put(b); });
    const status st = std::get<GgufTensorProducer>(t.data)(sink);
    if (!st.ok()) return {st.code(), fmt::format("tensor '{}': {}", t.name, st.message())};
    if (sink.remaining() != 0)
      return {errc::invalid_argument, fmt::format("tensor '{}': the producer wrote {} of its {} bytes", t.name, t.nbytes - sink.remaining(), t.nbytes)};
  }
  QUARRY_RETURN_IF_ERROR(out.flush());
  return file.commit();
}

}  // namespace quarry
