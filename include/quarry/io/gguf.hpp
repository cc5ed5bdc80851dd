// GGUF (v2 and v3) reader: metadata, tensor infos, and zero-copy tensor views over a memory map.
//
// The reader trusts nothing in the file. Before anything is allocated it checks every count and
// length against the bytes that remain and against Limits; it checks dimension products and
// byte sizes for overflow, every tensor's data against the file's end, tensor offsets against
// the alignment, and that no two tensors overlap. Errors name the field, the tensor or key, and
// the offset. Tensor types quarry cannot convert are reported by name, never skipped.
//
// f32, f16 and bf16 tensors are zero-copy views; Q8_0 and Q4_0 tensors are copied (losslessly)
// into a QuantizedTensor, whose layout differs from ggml's; tensor_dequantized_f32 reads any of
// the five as f32.
//
// Shapes are given outermost first, as everywhere in quarry: GGUF's ne = [K, N] (ne[0] varies
// fastest) is Shape{N, K}, so a weight matrix's rows are its output features.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "quarry/core/float16.hpp"
#include "quarry/core/shape.hpp"
#include "quarry/core/status.hpp"
#include "quarry/core/tensor.hpp"
#include "quarry/io/mapped_file.hpp"
#include "quarry/quant/quantized_tensor.hpp"

namespace quarry {

/// The type of a GGUF metadata value (gguf_type).
enum class GgufValueType : std::uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7,
  string = 8, array = 9, u64 = 10, i64 = 11, f64 = 12,
};

/// "u32", "string", "array", ... ("unknown" for values outside the enum).
std::string_view gguf_value_type_name(GgufValueType t) noexcept;

struct GgufValue;

/// A metadata array, stored compactly by element kind (at most 8 bytes per 1-byte element).
struct GgufArray {
  GgufValueType type = GgufValueType::u8;  ///< element type
  std::vector<std::int64_t> ints;          ///< integer and bool elements (u64 as its bit pattern)
  std::vector<double> floats;              ///< f32 and f64 elements
  std::vector<std::string> strings;        ///< string elements
  std::vector<GgufValue> arrays;           ///< nested arrays
  /// Number of elements.
  std::size_t size() const noexcept;  // defined below GgufValue, which must be complete first
};

/// One metadata value. Integers are held widened (unsigned as u64, signed as i64), floats as
/// double; `type` keeps the type the file stored.
struct GgufValue {
  GgufValueType type = GgufValueType::u8;  ///< the type the file stored
  std::variant<std::uint64_t, std::int64_t, double, bool, std::string, GgufArray> data;  ///< the value, widened

  /// The value of an integer type, if it fits in int64.
  std::optional<std::int64_t> as_int() const noexcept;
  /// The value of a float type (f32 or f64).
  std::optional<double> as_float() const noexcept;
  /// The string, for a string value; else null.
  const std::string* as_string() const noexcept { return std::get_if<std::string>(&data); }
  /// The array, for an array value; else null.
  const GgufArray* as_array() const noexcept { return std::get_if<GgufArray>(&data); }
};

inline std::size_t GgufArray::size() const noexcept { return ints.size() + floats.size() + strings.size() + arrays.size(); }

/// ggml's tensor types, as GGUF stores them (ggml_type).
enum class GgmlType : std::uint32_t {
  f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9,
  q2_k = 10, q3_k = 11, q4_k = 12, q5_k = 13, q6_k = 14, q8_k = 15,
  iq2_xxs = 16, iq2_xs = 17, iq3_xxs = 18, iq1_s = 19, iq4_nl = 20, iq3_s = 21, iq2_s = 22, iq4_xs = 23,
  i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28, iq1_m = 29, bf16 = 30, tq1_0 = 34, tq2_0 = 35, mxfp4 = 39,
};

/// Layout facts of a ggml type: elements per block and bytes per block.
struct GgmlTypeInfo {
  std::string_view name;      ///< "f32", "q4_0", "q4_K", ...
  std::uint32_t block_elems;  ///< elements per block (1 for plain types)
  std::uint32_t block_bytes;  ///< bytes per block
};

/// The layout of `t`, or nullopt for a type number quarry does not know.
std::optional<GgmlTypeInfo> ggml_type_info(GgmlType t) noexcept;

/// Where one tensor is and what it holds.
struct GgufTensorInfo {
  std::string name;           ///< e.g. "blk.0.attn_q.weight"
  GgmlType type = GgmlType::f32;  ///< the ggml element or block type
  Shape shape;                ///< outermost first (GGUF's ne reversed)
  std::uint64_t offset = 0;   ///< absolute offset of its data in the file
  std::uint64_t nbytes = 0;   ///< bytes of data
};

/// A parsed GGUF file. Views it hands out point into the file's bytes and live as long as it.
class GgufFile {
 public:
  /// Bounds the reader enforces before allocating anything.
  struct Limits {
    std::uint64_t max_tensors = 1u << 20;        ///< tensors in the file
    std::uint64_t max_metadata = 1u << 20;       ///< metadata entries
    std::uint64_t max_string_bytes = 1u << 24;   ///< one metadata string
    std::uint64_t max_key_bytes = 1u << 16;      ///< a key or a tensor name
    std::uint64_t max_array_elements = 1u << 24; ///< one metadata array
    int max_array_depth = 4;                     ///< nested arrays
  };

  GgufFile() = default;

  /// Maps and parses the file at `path` (with the default limits unless given).
  ///@{
  static result<GgufFile> open(const std::string& path, const Limits& limits);
  static result<GgufFile> open(const std::string& path) { return open(path, Limits{}); }
  ///@}
  /// Parses bytes the caller keeps alive (used by tests and the fuzz target); `what` names
  /// them in errors.
  ///@{
  static result<GgufFile> parse(std::span<const std::byte> bytes, std::string what, const Limits& limits);
  static result<GgufFile> parse(std::span<const std::byte> bytes, std::string what = "gguf") {
    return parse(bytes, std::move(what), Limits{});
  }
  ///@}

  /// The GGUF version of the file (2 or 3).
  std::uint32_t version() const noexcept { return version_; }
  /// Alignment of tensor data (general.alignment, default 32).
  std::uint64_t alignment() const noexcept { return alignment_; }
  /// Absolute offset of the tensor data section.
  std::uint64_t data_offset() const noexcept { return data_offset_; }

  /// Metadata in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const noexcept { return metadata_; }
  /// The value of `key`, or null.
  const GgufValue* find(std::string_view key) const noexcept;
  /// An integer value; errors: not_found, or invalid_argument naming the stored type.
  result<std::int64_t> get_int(std::string_view key) const;
  /// A float value (f32 or f64).
  result<double> get_float(std::string_view key) const;
  /// A string value.
  result<std::string> get_string(std::string_view key) const;

  /// Tensor infos in file order.
  const std::vector<GgufTensorInfo>& tensors() const noexcept { return tensors_; }
  /// The tensor called `name`, or null.
  const GgufTensorInfo* find_tensor(std::string_view name) const noexcept;
  /// The raw bytes of a tensor's data.
  std::span<const std::byte> tensor_bytes(const GgufTensorInfo& t) const noexcept {
    return bytes_.subspan(static_cast<std::size_t>(t.offset), static_cast<std::size_t>(t.nbytes));
  }
  /// A zero-copy view of an f32 tensor. Errors: not_found, or unsupported naming the tensor's
  /// type when it is not f32.
  result<TensorView<const float>> tensor_f32(std::string_view name) const;
  /// A zero-copy view of an f16 tensor.
  result<TensorView<const f16>> tensor_f16(std::string_view name) const;
  /// A zero-copy view of a bf16 tensor.
  result<TensorView<const bf16>> tensor_bf16(std::string_view name) const;
  /// A Q8_0 or Q4_0 tensor copied into a QuantizedTensor (import_gguf_q8_0 / import_gguf_q4_0:
  /// kGgufQ8_0Scheme / kGgufQ4_0Scheme, lossless; a copy because quarry's layout differs). Shape
  /// {N, K} gives an [N, K] matrix; a rank-1 {K} tensor gives [1, K]. Errors: not_found;
  /// unsupported naming the tensor's type when it is neither (f32, f16 and bf16 have their own
  /// views); shape_mismatch for rank 3 or 4 (a QuantizedTensor is a matrix); the importer's error
  /// (e.g. an inf or NaN scale), prefixed with the tensor's name.
  result<QuantizedTensor<cpu>> tensor_quantized(std::string_view name) const;
  /// Any f32, f16, bf16, Q8_0 or Q4_0 tensor as an owning f32 tensor of its shape (any rank):
  /// f16 and bf16 are widened exactly, Q8_0 and Q4_0 read back as float(d) * q exactly as
  /// dequantize(tensor_quantized(name)). Errors: not_found; unsupported naming any other type;
  /// the importer's errors as in tensor_quantized.
  result<Tensor<float>> tensor_dequantized_f32(std::string_view name) const;

 private:
  template <class T>
  result<TensorView<const T>> typed_view(std::string_view name, GgmlType want) const;

  MappedFile file_;
  std::span<const std::byte> bytes_;
  std::uint32_t version_ = 0;
  std::uint64_t alignment_ = 32;
  std::uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<GgufTensorInfo> tensors_;
};

}  // namespace quarry
