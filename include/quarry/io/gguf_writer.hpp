// GGUF (v3) writer: metadata of every value type, tensor infos and tensor data, written
// atomically (AtomicFileWriter: temp file, fsync, rename, fsync the directory).
//
// The writer collects metadata and tensors, then write() lays the file out as GGUF v3 says:
// header, metadata, tensor infos, padding to the alignment, then each tensor's data at the next
// multiple of the alignment (zero padding between). A tensor's data is either bytes the writer
// holds (copied when added) or a producer called while the file is written, which hands the
// bytes over in pieces of any size: a model of billions of parameters streams through a small
// buffer, never held whole in memory.
//
// Everything is checked when it is added, so write() fails only on I/O or a producer's error:
// keys and tensor names unique and non-empty, values whose stored variant agrees with their type
// (integers in range), shapes of rank 1 to 4 with extents >= 0 whose innermost extent is a
// multiple of the type's block, byte sizes without overflow and equal to what the shape needs.
// Files it writes are read back by GgufFile::open with its default Limits (strings, arrays,
// nesting and names are held to those limits), and by ggml (tensor names under 64 bytes).
//
// Shapes are given outermost first, as everywhere in quarry: Shape{N, K} is written as GGUF's
// ne = [K, N], so GgufFile reads it back as Shape{N, K}.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "quarry/core/float16.hpp"
#include "quarry/core/shape.hpp"
#include "quarry/core/status.hpp"
#include "quarry/core/tensor.hpp"
#include "quarry/io/gguf.hpp"
#include "quarry/quant/gguf_blocks.hpp"

namespace quarry {

/// Where a streamed tensor's producer puts its bytes: in order, in pieces of any size, exactly
/// the tensor's byte count in all (more is refused at once; fewer fails the write afterwards).
class GgufTensorSink {
 public:
  /// Appends `bytes` to the tensor's data. Errors: more bytes than remain (nothing is written),
  /// or the file's I/O error. GgufWriter::write prefixes the tensor's name to either.
  status write(std::span<const std::byte> bytes);
  /// Appends the bytes of `values` (f16 bits, Q8_0 blocks, floats, ...).
  template <class T>
    requires std::is_trivially_copyable_v<T>
  status write(std::span<const T> values) {
    return write(std::as_bytes(values));
  }
  /// Bytes still expected.
  std::uint64_t remaining() const noexcept { return remaining_; }
  /// The tensor being written.
  const std::string& tensor_name() const noexcept { return name_; }

 private:
  friend class GgufWriter;
  GgufTensorSink(std::string name, std::uint64_t nbytes, std::function<status(std::span<const std::byte>)> out)
      : name_(std::move(name)), remaining_(nbytes), out_(std::move(out)) {}

  std::string name_;
  std::uint64_t remaining_;
  std::uint64_t written_ = 0;
  std::function<status(std::span<const std::byte>)> out_;
};

/// Produces one tensor's bytes while the file is written (once per GgufWriter::write call).
/// Its error, prefixed with the tensor's name, fails the write; no file is left.
using GgufTensorProducer = std::function<status(GgufTensorSink&)>;

/// Collects metadata and tensors and writes them as a GGUF v3 file. Not thread-safe.
class GgufWriter {
 public:
  GgufWriter() = default;

  /// Sets the alignment of tensor data (a power of two, 1 to 2^30; default 32, GGUF's). Written
  /// as the u32 `general.alignment` when it is not 32. Errors: invalid_argument naming the value.
  status set_alignment(std::uint32_t alignment);
  /// The alignment of tensor data.
  std::uint32_t alignment() const noexcept { return alignment_; }

  /// Adds a metadata value of any type, as GgufFile reads it (so a file's metadata can be copied
  /// over). The variant must match the type: u8..u64 a uint64_t (u8..u32 in range), i8..i64 an
  /// int64_t in range, f32/f64 a double, bool a bool, string a string, array a GgufArray whose
  /// elements are in the vector its element type uses (ints for integers and bool, floats,
  /// strings, arrays) and in range. Errors: an empty, over-long or duplicate key,
  /// "general.alignment" (use set_alignment), a mismatched or out-of-range value, nesting deeper
  /// than GgufFile's default limit; each names the key.
  status add(std::string key, GgufValue value);
  /// add() of one value of the type in the name; errors as add()'s.
  ///@{
  status add_u8(std::string key, std::uint8_t v) { return add(std::move(key), {GgufValueType::u8, std::uint64_t{v}}); }
  status add_i8(std::string key, std::int8_t v) { return add(std::move(key), {GgufValueType::i8, std::int64_t{v}}); }
  status add_u16(std::string key, std::uint16_t v) { return add(std::move(key), {GgufValueType::u16, std::uint64_t{v}}); }
  status add_i16(std::string key, std::int16_t v) { return add(std::move(key), {GgufValueType::i16, std::int64_t{v}}); }
  status add_u32(std::string key, std::uint32_t v) { return add(std::move(key), {GgufValueType::u32, std::uint64_t{v}}); }
  status add_i32(std::string key, std::int32_t v) { return add(std::move(key), {GgufValueType::i32, std::int64_t{v}}); }
  status add_u64(std::string key, std::uint64_t v) { return add(std::move(key), {GgufValueType::u64, v}); }
  status add_i64(std::string key, std::int64_t v) { return add(std::move(key), {GgufValueType::i64, v}); }
  status add_f32(std::string key, float v) { return add(std::move(key), {GgufValueType::f32, double{v}}); }
  status add_f64(std::string key, double v) { return add(std::move(key), {GgufValueType::f64, v}); }
  status add_bool(std::string key, bool v) { return add(std::move(key), {GgufValueType::boolean, v}); }
  status add_string(std::string key, std::string v) { return add(std::move(key), {GgufValueType::string, std::move(v)}); }
  ///@}
  /// An array (any element type, nested arrays included; see add()).
  status add_array(std::string key, GgufArray array) { return add(std::move(key), {GgufValueType::array, std::move(array)}); }
  /// Arrays of the element types a tokenizer needs (tokens, scores, token types).
  ///@{
  status add_string_array(std::string key, std::vector<std::string> values);
  status add_f32_array(std::string key, std::span<const float> values);
  status add_i32_array(std::string key, std::span<const std::int32_t> values);
  ///@}

  /// Adds a tensor of ggml type `type` and `shape` (outermost first) whose data is `bytes`
  /// (copied). Any type ggml_type_info knows is accepted. Errors: an empty, over-long (63 bytes
  /// at most, ggml's limit) or duplicate name; rank other than 1..4, a negative extent, an
  /// innermost extent that is not a multiple of the type's block, a size that overflows; a byte
  /// count other than the shape's; each names the tensor.
  status add_tensor(std::string name, GgmlType type, const Shape& shape, std::span<const std::byte> bytes);
  /// Adds a tensor whose `bytes_of(type, shape)` bytes `producer` hands over while the file is
  /// written. Errors as the other overload (minus the byte count), and a null producer.
  status add_tensor(std::string name, GgmlType type, const Shape& shape, GgufTensorProducer producer);
  /// An f32, f16 or bf16 tensor of the view's shape, its values copied (any strides).
  ///@{
  status add_tensor(std::string name, TensorView<const float> values);
  status add_tensor(std::string name, TensorView<const f16> values);
  status add_tensor(std::string name, TensorView<const bf16> values);
  ///@}
  /// A Q8_0 / Q4_0 tensor of `shape` (innermost extent a multiple of 32) holding `blocks`
  /// (copied), row after row as ggml stores them (quantize_gguf_q8_0 / _q4_0 give them).
  ///@{
  status add_tensor(std::string name, const Shape& shape, std::span<const BlockQ8_0> blocks);
  status add_tensor(std::string name, const Shape& shape, std::span<const BlockQ4_0> blocks);
  ///@}

  /// Bytes of data a tensor of `type` and `shape` takes. Errors as add_tensor's shape checks
  /// (`what` names the tensor in them).
  static result<std::uint64_t> bytes_of(GgmlType type, const Shape& shape, std::string_view what = "tensor");

  /// Number of metadata entries (general.alignment included when written) and of tensors.
  ///@{
  std::size_t metadata_count() const noexcept { return metadata_.size() + (alignment_ != 32 ? 1 : 0); }
  std::size_t tensor_count() const noexcept { return tensors_.size(); }
  ///@}
  /// The size of the file write() would write, in bytes (e.g. to check free space first).
  std::uint64_t file_size() const;

  /// Writes the file to `path` atomically: on any error (I/O, a producer's error or short
  /// count) `path` keeps its old content, or stays absent, and no temporary file is left.
  /// Producers run once each, in tensor order. May be called again (producers run again).
  status write(const std::string& path) const;

 private:
  struct TensorEntry {
    std::string name;
    GgmlType type;
    Shape shape;
    std::uint64_t nbytes = 0;
    std::variant<std::vector<std::byte>, GgufTensorProducer> data;
  };
  status check_new_tensor(const std::string& name) const;
  status add_entry(std::string name, GgmlType type, const Shape& shape, std::variant<std::vector<std::byte>, GgufTensorProducer> data,
                   std::uint64_t nbytes);
  // Header, metadata and tensor infos, unpadded; offsets[i] = tensor i's offset in the data
  // section (for the current alignment).
  std::vector<std::byte> header_bytes(std::vector<std::uint64_t>& offsets) const;

  std::uint32_t alignment_ = 32;
  std::vector<std::pair<std::string, GgufValue>> metadata_;
  std::vector<TensorEntry> tensors_;
};

}  // namespace quarry
