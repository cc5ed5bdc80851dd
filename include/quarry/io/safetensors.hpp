// safetensors reader: the JSON header, tensor infos, and zero-copy tensor views over a memory map.
//
// A safetensors file is an 8-byte little-endian header length N, N bytes of JSON, then the data
// section. The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end)}
// (offsets relative to the data section) and may hold "__metadata__", a string-to-string map.
//
// The reader trusts nothing in the file, as the reference loader (safetensors/src/tensor.rs):
// N is capped (Limits::max_header_bytes, 100 MB by default) and checked against the file size;
// the JSON is read by a strict parser of its own (RFC 8259 syntax, UTF-8 checked, duplicate keys
// refused, unknown fields refused, counts bounded by Limits) that follows the header's fixed
// schema, so no input can make it recurse deeper than three levels or build a tree; every size
// product is checked for overflow; end - begin must equal numel * element size; and the tensors,
// sorted by offset, must cover the data section exactly, without gaps, overlaps or bytes after
// the last one (the format requires it, so that no file can hide a second meaning in unindexed
// bytes). Padding is allowed only where the format puts it: as trailing whitespace inside the
// header, which is how writers align the data section to 8 bytes. Errors name the tensor and
// the field.
//
// Shapes are outermost first in both safetensors and quarry, so a shape is taken as it is.
// F32, F64, F16, BF16, I8, U8 and I32 tensors are zero-copy views; tensor_dequantized_f32 reads
// every float type (F8 included) as an owning f32 copy. The other dtypes are parsed, checked and
// reported by name (their bytes are available through tensor_bytes).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "quarry/core/float16.hpp"
#include "quarry/core/shape.hpp"
#include "quarry/core/status.hpp"
#include "quarry/core/tensor.hpp"
#include "quarry/io/mapped_file.hpp"

namespace quarry {

/// The element types a safetensors header names (its "dtype" strings).
enum class SafetensorsDtype : std::uint8_t {
  boolean,   ///< "BOOL", one byte, 0 or 1
  u8,        ///< "U8"
  i8,        ///< "I8"
  f8_e5m2,   ///< "F8_E5M2": 1 sign, 5 exponent, 2 mantissa bits (IEEE-like, with inf)
  f8_e4m3,   ///< "F8_E4M3": the "fn" variant (no inf; 0x7f / 0xff are NaN), max 448
  f8_e8m0,   ///< "F8_E8M0": an exponent only, 2^(e - 127) (0xff is NaN); MX block scales
  i16,       ///< "I16"
  u16,       ///< "U16"
  f16,       ///< "F16"
  bf16,      ///< "BF16"
  i32,       ///< "I32"
  u32,       ///< "U32"
  f32,       ///< "F32"
  c64,       ///< "C64": two f32 (real, imaginary)
  f64,       ///< "F64"
  i64,       ///< "I64"
  u64,       ///< "U64"
  f4,        ///< "F4": E2M1, 4 bits, two per byte
  f6_e2m3,   ///< "F6_E2M3": 6 bits, four per three bytes
  f6_e3m2,   ///< "F6_E3M2": 6 bits, four per three bytes
};

/// The name the header uses ("F32", "F8_E4M3", ...) and the size in bits of one element.
struct SafetensorsDtypeInfo {
  std::string_view name;  ///< as the header spells it
  std::uint32_t bits;     ///< bits per element
};

/// Name and element size of `t`.
SafetensorsDtypeInfo safetensors_dtype_info(SafetensorsDtype t) noexcept;
/// The dtype a header string names, or nullopt for a name quarry does not know.
std::optional<SafetensorsDtype> safetensors_dtype_from_name(std::string_view name) noexcept;

/// Where one tensor is and what it holds.
struct SafetensorsTensorInfo {
  std::string name;          ///< the header's key
  SafetensorsDtype dtype = SafetensorsDtype::f32;  ///< the element type
  Shape shape;               ///< outermost first, as the file says; rank 0 is a scalar
  std::uint64_t offset = 0;  ///< absolute offset of its data in the file
  std::uint64_t nbytes = 0;  ///< bytes of data (0 for an empty tensor)
};

/// A parsed safetensors file. Views it hands out point into the file's bytes and live as long
/// as it. Move-only (it owns the memory map).
class SafetensorsFile {
 public:
  /// Bounds the reader enforces before allocating anything.
  struct Limits {
    std::uint64_t max_header_bytes = 100'000'000;  ///< the JSON header (the reference's cap)
    std::uint64_t max_tensors = 1u << 20;           ///< tensor entries in the header
    std::uint64_t max_metadata = 1u << 20;          ///< entries of "__metadata__"
  };

  SafetensorsFile() = default;

  /// Maps and parses the file at `path` (with the default limits unless given).
  ///@{
  static result<SafetensorsFile> open(const std::string& path, const Limits& limits);
  static result<SafetensorsFile> open(const std::string& path) { return open(path, Limits{}); }
  ///@}
  /// Parses bytes the caller keeps alive (used by tests and the fuzz target); `what` names
  /// them in errors.
  ///@{
  static result<SafetensorsFile> parse(std::span<const std::byte> bytes, std::string what, const Limits& limits);
  static result<SafetensorsFile> parse(std::span<const std::byte> bytes, std::string what = "safetensors") {
    return parse(bytes, std::move(what), Limits{});
  }
  ///@}

  /// Bytes of the JSON header (N, trailing padding included).
  std::uint64_t header_size() const noexcept { return data_offset_ - 8; }
  /// Absolute offset of the data section (8 + N).
  std::uint64_t data_offset() const noexcept { return data_offset_; }

  /// "__metadata__" entries in file order (empty when the file has none).
  const std::vector<std::pair<std::string, std::string>>& metadata() const noexcept { return metadata_; }
  /// The metadata value of `key`, or null.
  const std::string* find_metadata(std::string_view key) const noexcept;

  /// Tensor infos in header order.
  const std::vector<SafetensorsTensorInfo>& tensors() const noexcept { return tensors_; }
  /// The tensor called `name`, or null (a binary search: fast on files of many tensors).
  const SafetensorsTensorInfo* find_tensor(std::string_view name) const noexcept;
  /// The raw bytes of a tensor's data (little-endian elements).
  std::span<const std::byte> tensor_bytes(const SafetensorsTensorInfo& t) const noexcept {
    return bytes_.subspan(static_cast<std::size_t>(t.offset), static_cast<std::size_t>(t.nbytes));
  }

  /// A zero-copy view of an F32 tensor. Errors: not_found; unsupported naming the tensor's
  /// dtype when it is another, or when its data is not aligned for the type (a header whose
  /// length is not a multiple of 8 can do that: tensor_dequantized_f32 still reads it) or this
  /// machine is big-endian.
  result<TensorView<const float>> tensor_f32(std::string_view name) const;
  /// A zero-copy view of an F64 tensor (errors as tensor_f32).
  result<TensorView<const double>> tensor_f64(std::string_view name) const;
  /// A zero-copy view of an F16 tensor.
  result<TensorView<const f16>> tensor_f16(std::string_view name) const;
  /// A zero-copy view of a BF16 tensor.
  result<TensorView<const bf16>> tensor_bf16(std::string_view name) const;
  /// A zero-copy view of an I8 tensor.
  result<TensorView<const std::int8_t>> tensor_i8(std::string_view name) const;
  /// A zero-copy view of a U8 tensor.
  result<TensorView<const std::uint8_t>> tensor_u8(std::string_view name) const;
  /// A zero-copy view of an I32 tensor.
  result<TensorView<const std::int32_t>> tensor_i32(std::string_view name) const;

  /// Any float tensor (F64, F32, F16, BF16, F8_E5M2, F8_E4M3, F8_E8M0) as an owning f32 tensor
  /// of its shape, whatever its alignment: F16, BF16 and the F8 types are widened exactly, F64
  /// is rounded to nearest (beyond f32's range it becomes +-inf). Errors: not_found;
  /// unsupported naming any other dtype.
  result<Tensor<float>> tensor_dequantized_f32(std::string_view name) const;

 private:
  template <class T>
  result<TensorView<const T>> typed_view(std::string_view name, SafetensorsDtype want) const;

  MappedFile file_;
  std::span<const std::byte> bytes_;
  std::uint64_t data_offset_ = 8;
  std::vector<std::pair<std::string, std::string>> metadata_;
  std::vector<SafetensorsTensorInfo> tensors_;
  std::vector<std::size_t> by_name_;  // indices into tensors_, sorted by name
};

}  // namespace quarry
