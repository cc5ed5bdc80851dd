// quarry's own container format: a checked header, a table of tagged sections, and the
// sections' bytes, each aligned to 64 bytes and guarded by a CRC32C.
//
// Layout (multi-byte fields in the writer's native byte order, which the endianness tag
// records):
//
//   offset  size       field
//   0       8          magic, chosen by the file kind ("QRYIVFPQ")
//   8       2          format major version
//   10      2          format minor version
//   12      4          endianness tag 0x01020304
//   16      4          section count n
//   20      4          flags (0; none defined yet)
//   24      8          file size in bytes
//   32      24 * n     section table, per section: tag (4 ASCII chars), CRC32C of its bytes (u32),
//                      offset (u64), size (u64)
//   32+24n  4          CRC32C of bytes [0, 32 + 24n): the header and the table
//   ...                the sections in table order, each at the next multiple of 64, separated
//                      by zero padding; the file ends where the last section does
//
// So every byte of a file is covered by a checksum or must be zero padding: a reader detects any
// truncation and any flipped bit. The 64-byte alignment lets a memory-mapped section be viewed
// in place as an array of floats, codes or ids.
//
// A reader accepts the same major version and any minor version up to its own; it rejects
// another magic, another major, a newer minor and the other byte order with messages that name
// both sides. It checks the whole header and table (counts against limits, every offset and size
// with overflow-checked arithmetic against the file size, the packed layout, the padding, the
// header CRC) before returning, and each section's CRC on open or, optionally, on first access.
// Writers go through AtomicFileWriter: a save never leaves a half-written file at its path.
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "quarry/core/status.hpp"
#include "quarry/io/bounded_reader.hpp"
#include "quarry/io/mapped_file.hpp"

namespace quarry {

/// The kind and version of a section file: what a writer stamps and a reader expects.
struct FileFormat {
  std::string magic;        ///< exactly 8 bytes, e.g. "QRYIVFPQ"
  std::uint16_t major = 1;  ///< bumped when older readers cannot read the file
  std::uint16_t minor = 0;  ///< bumped when a file adds what older readers of this major ignore
};

/// Every section's offset in the file is a multiple of this.
inline constexpr std::uint64_t kSectionAlignment = 64;
/// The endianness tag as the writer's byte order stores it.
inline constexpr std::uint32_t kEndiannessTag = 0x01020304u;
/// Bytes before the section table, and per table entry.
///@{
inline constexpr std::uint64_t kSectionHeaderBytes = 32;
inline constexpr std::uint64_t kSectionEntryBytes = 24;
///@}

/// When a reader checks the sections' CRC32C.
enum class SectionVerify : std::uint8_t {
  on_open,          ///< all of them in open()/parse(): nothing unchecked is ever returned
  on_first_access,  ///< each in its first section() call: opens a huge mapped file at once
};

/// Bounds and policy for SectionFile::open / parse.
struct SectionFileOptions {
  std::uint32_t max_sections = 1024;              ///< a larger section count is rejected
  SectionVerify verify = SectionVerify::on_open;  ///< when section checksums are checked
};

/// One entry of the section table.
struct SectionInfo {
  std::string tag;            ///< 4 printable ASCII characters, e.g. "CODE"
  std::uint64_t offset = 0;   ///< from the start of the file; a multiple of kSectionAlignment
  std::uint64_t size = 0;     ///< bytes
  std::uint32_t crc32c = 0;   ///< of the section's bytes
};

namespace detail {
class SectionOutput;
}

/// Where a streamed section's bytes go (SectionFileWriter::add_stream): the writer counts them
/// and folds them into the section's CRC32C as they pass.
class SectionSink {
 public:
  /// Appends bytes to the section.
  status write(std::span<const std::byte> bytes);
  /// Appends one trivially copyable value, in native byte order.
  template <class T>
    requires(std::is_trivially_copyable_v<T>)
  status write_value(const T& value) {
    return write(std::as_bytes(std::span<const T, 1>(&value, 1)));
  }
  /// Appends an array of trivially copyable values, in native byte order.
  template <class T>
    requires(std::is_trivially_copyable_v<T>)
  status write_array(std::span<const T> values) {
    return write(std::as_bytes(values));
  }
  /// Bytes appended so far.
  std::uint64_t size() const noexcept { return size_; }

 private:
  friend class SectionFileWriter;
  explicit SectionSink(detail::SectionOutput& out) noexcept : out_(&out) {}
  detail::SectionOutput* out_;
  std::uint64_t size_ = 0;
  std::uint32_t crc_ = 0;
};

/// Builds a section file: add sections in the order they are to appear, then write() it
/// (atomically) or to_bytes(). Adding a bad or duplicate tag throws quarry::error
/// (invalid_argument): tags are chosen by the program, not read from input.
class SectionFileWriter {
 public:
  /// A writer of `format` files; throws quarry::error (invalid_argument) unless the magic is
  /// exactly 8 bytes.
  explicit SectionFileWriter(FileFormat format);

  /// A section holding `bytes`, which are not copied: they must stay valid until write().
  void add(std::string_view tag, std::span<const std::byte> bytes);
  /// A section holding `bytes`, owned by the writer.
  void add(std::string_view tag, std::vector<std::byte>&& bytes);
  /// A section holding `values` (native byte order), not copied: valid until write().
  template <class T>
    requires(std::is_trivially_copyable_v<T>)
  void add_array(std::string_view tag, std::span<const T> values) {
    add(tag, std::as_bytes(values));
  }
  /// A section whose bytes `produce` writes into a sink when the file is written, for payloads
  /// too large to gather in memory first. An error it returns aborts the write.
  void add_stream(std::string_view tag, std::function<status(SectionSink&)> produce);

  /// Writes the file to `path` through AtomicFileWriter: `path` holds either its old content
  /// or the whole new file. Errors: those of AtomicFileWriter and of the stream producers.
  status write(const std::string& path) const;
  /// The file's bytes in memory (tests, fuzzing, embedding).
  result<std::vector<std::byte>> to_bytes() const;

  std::size_t section_count() const noexcept { return sections_.size(); }  ///< sections added so far
  const FileFormat& format() const noexcept { return format_; }           ///< the format it writes

 private:
  struct Pending {
    std::string tag;
    std::span<const std::byte> view;
    std::vector<std::byte> owned;
    std::function<status(SectionSink&)> produce;
  };
  void check_new_tag(std::string_view tag) const;
  status emit(detail::SectionOutput& out) const;

  FileFormat format_;
  std::vector<Pending> sections_;
};

/// A section file, checked, with zero-copy access to its sections. Move-only. Concurrent calls
/// of the const members are safe (lazy checksum state is atomic).
class SectionFile {
 public:
  /// Maps `path` and checks it (see the top of this header) as a file of `expected` kind.
  /// Errors: not_found / io_error (opening), corrupt_data (any failed check, naming the field,
  /// the section and the offset), unsupported (another major version, a newer minor, the other
  /// byte order); each message starts with the path. Throws quarry::error (invalid_argument)
  /// when `expected.magic` is not 8 bytes: that is the program's mistake, not the file's.
  static result<SectionFile> open(const std::string& path, const FileFormat& expected, const SectionFileOptions& options = {});
  /// Checks `bytes` as open() does; the bytes must outlive the result. `what` names them in
  /// errors.
  static result<SectionFile> parse(std::span<const std::byte> bytes, const FileFormat& expected,
                                   const std::string& what = "input", const SectionFileOptions& options = {});

  /// Moves the file (and its bytes or mapping).
  ///@{
  SectionFile(SectionFile&&) noexcept = default;
  SectionFile& operator=(SectionFile&&) noexcept = default;
  ///@}

  /// The file's format version (its major equals the reader's; its minor may be older).
  ///@{
  std::uint16_t major() const noexcept { return major_; }
  std::uint16_t minor() const noexcept { return minor_; }
  ///@}
  /// The section table, in file order.
  std::span<const SectionInfo> sections() const noexcept { return sections_; }
  /// Whether a section called `tag` exists.
  bool contains(std::string_view tag) const noexcept { return find(tag) >= 0; }

  /// The bytes of section `tag` (in the map: valid while this object lives), its checksum
  /// verified. Errors: not_found naming the tag and the file; corrupt_data on a checksum
  /// mismatch (with SectionVerify::on_first_access).
  result<std::span<const std::byte>> section(std::string_view tag) const;
  /// A BoundedReader over section `tag` (native byte order), for scalar fields and arrays;
  /// its errors name the file and the section.
  result<BoundedReader> reader(std::string_view tag) const;
  /// The whole of section `tag` viewed as an array of T, in place. Errors when the size is not
  /// a multiple of sizeof(T) or the bytes are not aligned for T (a mapped file always is).
  template <class T>
    requires(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>)
  result<std::span<const T>> array(std::string_view tag) const {
    QUARRY_ASSIGN_OR_RETURN(BoundedReader r, reader(tag));
    if (r.size() % sizeof(T) != 0)
      return r.error(errc::corrupt_data, fmt::format("holds {} bytes, not a whole number of {}-byte values", r.size(), sizeof(T)));
    return r.read_array<T>(r.size() / sizeof(T), "values");
  }
  /// Checks every section's checksum not checked yet (with SectionVerify::on_first_access).
  status verify_all() const;

  /// The name used in errors (the path for open()).
  const std::string& what() const noexcept { return what_; }
  /// The whole file.
  std::span<const std::byte> bytes() const noexcept { return bytes_; }

 private:
  SectionFile() = default;
  static result<SectionFile> check(SectionFile f, const FileFormat& expected, const SectionFileOptions& options);
  std::ptrdiff_t find(std::string_view tag) const noexcept;
  status verify(std::size_t i) const;
  status fail(errc code, const std::string& message) const { return status(code, what_ + ": " + message); }

  MappedFile file_;  // empty for parse()
  std::span<const std::byte> bytes_;
  std::string what_;
  std::uint16_t major_ = 0;
  std::uint16_t minor_ = 0;
  std::vector<SectionInfo> sections_;
  // Per section: 0 = not checked yet, 1 = checksum good, 2 = checksum bad.
  std::unique_ptr<std::atomic<std::uint8_t>[]> checked_;
};

}  // namespace quarry
