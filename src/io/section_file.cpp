#include "quarry/io/section_file.hpp"

#include <algorithm>
#include <cstring>
#include <unordered_set>
#include <utility>

#include <fmt/format.h>

#include "quarry/io/atomic_file.hpp"
#include "quarry/io/crc32c.hpp"

namespace quarry {

namespace detail {

// The destination of SectionFileWriter::emit: a file being written atomically, or memory.
class SectionOutput {
 public:
  virtual ~SectionOutput() = default;
  virtual status append(std::span<const std::byte> bytes) = 0;
  virtual status write_at(std::uint64_t offset, std::span<const std::byte> bytes) = 0;
};

}  // namespace detail

namespace {

class FileOutput final : public detail::SectionOutput {
 public:
  explicit FileOutput(AtomicFileWriter& w) noexcept : w_(w) {}
  status append(std::span<const std::byte> bytes) override { return w_.write(bytes); }
  status write_at(std::uint64_t offset, std::span<const std::byte> bytes) override { return w_.write_at(offset, bytes); }

 private:
  AtomicFileWriter& w_;
};

class MemoryOutput final : public detail::SectionOutput {
 public:
  status append(std::span<const std::byte> bytes) override {
    bytes_.insert(bytes_.end(), bytes.begin(), bytes.end());
    return {};
  }
  status write_at(std::uint64_t offset, std::span<const std::byte> bytes) override {
    if (offset + bytes.size() > bytes_.size()) bytes_.resize(static_cast<std::size_t>(offset + bytes.size()));
    std::copy(bytes.begin(), bytes.end(), bytes_.begin() + static_cast<std::ptrdiff_t>(offset));
    return {};
  }
  std::vector<std::byte>& bytes() noexcept { return bytes_; }

 private:
  std::vector<std::byte> bytes_;
};

constexpr std::uint64_t align_up(std::uint64_t x) noexcept { return (x + kSectionAlignment - 1) / kSectionAlignment * kSectionAlignment; }

template <class T>
void put(std::vector<std::byte>& out, std::size_t offset, T v) noexcept {
  std::memcpy(out.data() + offset, &v, sizeof(T));
}

template <class T>
T get(std::span<const std::byte> in, std::size_t offset) noexcept {
  T v;
  std::memcpy(&v, in.data() + offset, sizeof(T));
  return v;
}

bool printable(char c) noexcept { return c >= 0x20 && c <= 0x7e; }

// Bytes as text for messages: printable ASCII as is, anything else as \xNN.
std::string quoted(std::span<const std::byte> bytes) {
  std::string s = "'";
  for (std::byte b : bytes) {
    const auto c = static_cast<char>(b);
    if (printable(c) && c != '\'' && c != '\\') s += c;
    else s += fmt::format("\\x{:02x}", static_cast<unsigned>(b));
  }
  return s + "'";
}
std::string quoted(std::string_view s) { return quoted(std::as_bytes(std::span<const char>(s.data(), s.size()))); }

void check_magic(const std::string& magic, const char* who) {
  if (magic.size() != 8)
    throw_error(errc::invalid_argument, fmt::format("{}: the magic {} is {} bytes long; it must be exactly 8", who, quoted(magic), magic.size()));
}

}  // namespace

// ---- writer -----------------------------------------------------------------------------------

status SectionSink::write(std::span<const std::byte> bytes) {
  QUARRY_RETURN_IF_ERROR(out_->append(bytes));
  crc_ = crc32c(bytes, crc_);
  size_ += bytes.size();
  return {};
}

SectionFileWriter::SectionFileWriter(FileFormat format) : format_(std::move(format)) { check_magic(format_.magic, "SectionFileWriter"); }

void SectionFileWriter::check_new_tag(std::string_view tag) const {
  if (tag.size() != 4 || !std::all_of(tag.begin(), tag.end(), printable))
    throw_error(errc::invalid_argument, fmt::format("section tag {} must be exactly 4 printable ASCII characters", quoted(tag)));
  for (const Pending& p : sections_)
    if (p.tag == tag) throw_error(errc::invalid_argument, fmt::format("section tag {} is already in this {} file", quoted(tag), format_.magic));
  if (sections_.size() >= 0xffffffffu) throw_error(errc::out_of_range, "a section file holds at most 2^32 - 1 sections");
}

void SectionFileWriter::add(std::string_view tag, std::span<const std::byte> bytes) {
  check_new_tag(tag);
  sections_.push_back(Pending{std::string(tag), bytes, {}, {}});
}

void SectionFileWriter::add(std::string_view tag, std::vector<std::byte>&& bytes) {
  check_new_tag(tag);
  sections_.push_back(Pending{std::string(tag), {}, std::move(bytes), {}});
}

void SectionFileWriter::add_stream(std::string_view tag, std::function<status(SectionSink&)> produce) {
  check_new_tag(tag);
  if (!produce) throw_error(errc::invalid_argument, fmt::format("section {}: the producer is empty", quoted(tag)));
  sections_.push_back(Pending{std::string(tag), {}, {}, std::move(produce)});
}

status SectionFileWriter::emit(detail::SectionOutput& out) const {
  const std::uint64_t n = sections_.size();
  const std::uint64_t table_end = kSectionHeaderBytes + kSectionEntryBytes * n;
  const std::uint64_t header_end = table_end + 4;

  // The header is written last (its sizes and checksums are known only then): a placeholder now.
  std::vector<std::byte> header(static_cast<std::size_t>(header_end), std::byte{0});
  QUARRY_RETURN_IF_ERROR(out.append(header));
  std::uint64_t pos = header_end;
  static constexpr std::byte kZeros[kSectionAlignment] = {};
  for (std::uint64_t i = 0; i < n; ++i) {
    const Pending& p = sections_[i];
    const std::uint64_t offset = align_up(pos);
    QUARRY_RETURN_IF_ERROR(out.append(std::span<const std::byte>(kZeros, static_cast<std::size_t>(offset - pos))));
    SectionSink sink(out);
    if (p.produce) {
      status st = p.produce(sink);
      if (!st.ok()) return status(st.code(), fmt::format("section {}: {}", quoted(p.tag), st.message()));
    } else {
      QUARRY_RETURN_IF_ERROR(sink.write(p.owned.empty() ? p.view : std::span<const std::byte>(p.owned)));
    }
    pos = offset + sink.size();

    const auto e = static_cast<std::size_t>(kSectionHeaderBytes + kSectionEntryBytes * i);
    std::memcpy(header.data() + e, p.tag.data(), 4);
    put<std::uint32_t>(header, e + 4, sink.crc_);
    put<std::uint64_t>(header, e + 8, offset);
    put<std::uint64_t>(header, e + 16, sink.size());
  }

  std::memcpy(header.data(), format_.magic.data(), 8);
  put<std::uint16_t>(header, 8, format_.major);
  put<std::uint16_t>(header, 10, format_.minor);
  put<std::uint32_t>(header, 12, kEndiannessTag);
  put<std::uint32_t>(header, 16, static_cast<std::uint32_t>(n));
  put<std::uint32_t>(header, 20, 0);
  put<std::uint64_t>(header, 24, pos);
  put<std::uint32_t>(header, static_cast<std::size_t>(table_end),
                     crc32c(std::span<const std::byte>(header.data(), static_cast<std::size_t>(table_end))));
  return out.write_at(0, header);
}

status SectionFileWriter::write(const std::string& path) const {
  QUARRY_ASSIGN_OR_RETURN(AtomicFileWriter w, AtomicFileWriter::create(path));
  FileOutput out(w);
  status st = emit(out);
  if (!st.ok()) return status(st.code(), fmt::format("cannot write '{}': {}", path, st.message()));
  return w.commit();  // on any error before this, w's destructor removes the temporary file
}

result<std::vector<std::byte>> SectionFileWriter::to_bytes() const {
  MemoryOutput out;
  QUARRY_RETURN_IF_ERROR(emit(out));
  return std::move(out.bytes());
}

// ---- reader -----------------------------------------------------------------------------------

result<SectionFile> SectionFile::open(const std::string& path, const FileFormat& expected, const SectionFileOptions& options) {
  QUARRY_ASSIGN_OR_RETURN(MappedFile file, MappedFile::open(path));
  SectionFile f;
  f.file_ = std::move(file);
  f.bytes_ = f.file_.bytes();
  f.what_ = path;
  return check(std::move(f), expected, options);
}

result<SectionFile> SectionFile::parse(std::span<const std::byte> bytes, const FileFormat& expected, const std::string& what,
                                       const SectionFileOptions& options) {
  SectionFile f;
  f.bytes_ = bytes;
  f.what_ = what;
  return check(std::move(f), expected, options);
}

result<SectionFile> SectionFile::check(SectionFile f, const FileFormat& expected, const SectionFileOptions& options) {
  check_magic(expected.magic, "SectionFile");
  const std::span<const std::byte> b = f.bytes_;
  const std::uint64_t size = b.size();
  const auto magic = std::as_bytes(std::span<const char>(expected.magic.data(), 8));

  // Magic first (on whatever bytes there are), so a file of another kind is named as such.
  const std::size_t have = static_cast<std::size_t>(std::min<std::uint64_t>(size, 8));
  if (!std::equal(b.begin(), b.begin() + static_cast<std::ptrdiff_t>(have), magic.begin()))
    return f.fail(errc::corrupt_data, fmt::format("not a {} file: the magic at offset 0 is {}; expected {}", quoted(expected.magic),
                                                  quoted(b.first(have)), quoted(expected.magic)));
  if (size < kSectionHeaderBytes + 4)
    return f.fail(errc::corrupt_data, fmt::format("truncated: the file has {} bytes; the header alone needs {}", size, kSectionHeaderBytes + 4));

  // The byte order before anything multi-byte is believed.
  const auto tag = get<std::uint32_t>(b, 12);
  if (tag != kEndiannessTag) {
    if (tag == 0x04030201u)
      return f.fail(errc::unsupported, fmt::format("the file was written on a {}-endian machine (endianness tag at offset 12 reads 0x{:08x}); this "
                                                   "machine is {}-endian and reads only files in its own byte order",
                                                   std::endian::native == std::endian::little ? "big" : "little", tag,
                                                   std::endian::native == std::endian::little ? "little" : "big"));
    return f.fail(errc::corrupt_data, fmt::format("the endianness tag at offset 12 is 0x{:08x}; expected 0x{:08x}", tag, kEndiannessTag));
  }

  f.major_ = get<std::uint16_t>(b, 8);
  f.minor_ = get<std::uint16_t>(b, 10);
  if (f.major_ != expected.major)
    return f.fail(errc::unsupported, fmt::format("format version {}.{} (at offset 8) is not readable here: this reader reads versions {}.0 to {}.{}",
                                                 f.major_, f.minor_, expected.major, expected.major, expected.minor));
  if (f.minor_ > expected.minor)
    return f.fail(errc::unsupported, fmt::format("format version {}.{} (at offset 8) is newer than this reader's {}.{}; a newer quarry reads it",
                                                 f.major_, f.minor_, expected.major, expected.minor));

  const auto count = get<std::uint32_t>(b, 16);
  if (count > options.max_sections)
    return f.fail(errc::corrupt_data, fmt::format("section count {} (at offset 16) exceeds the limit of {}", count, options.max_sections));
  const std::uint64_t table_end = kSectionHeaderBytes + kSectionEntryBytes * count;  // < 2^37: no overflow
  const std::uint64_t header_end = table_end + 4;
  if (header_end > size)
    return f.fail(errc::corrupt_data, fmt::format("truncated: the header and the table of {} sections end at offset {}, but the file has {} bytes",
                                                  count, header_end, size));
  const auto stored_crc = get<std::uint32_t>(b, static_cast<std::size_t>(table_end));
  const std::uint32_t crc = crc32c(b.first(static_cast<std::size_t>(table_end)));
  if (crc != stored_crc)
    return f.fail(errc::corrupt_data, fmt::format("header checksum mismatch: CRC32C of bytes [0, {}) is 0x{:08x}, but offset {} stores 0x{:08x} "
                                                  "(the header or the section table is damaged)",
                                                  table_end, crc, table_end, stored_crc));

  const auto file_size = get<std::uint64_t>(b, 24);
  if (file_size > size)
    return f.fail(errc::corrupt_data, fmt::format("truncated: the header (offset 24) says the file has {} bytes, but it has {}", file_size, size));
  if (file_size < size)
    return f.fail(errc::corrupt_data, fmt::format("the file has {} bytes, {} more than the {} its header (offset 24) records", size, size - file_size, file_size));
  if (const auto flags = get<std::uint32_t>(b, 20); flags != 0)
    return f.fail(errc::corrupt_data, fmt::format("flags 0x{:08x} at offset 20: version {}.{} defines none", flags, f.major_, f.minor_));

  // The table: tags, then a packed layout in table order that ends exactly at the file's end.
  f.sections_.reserve(count);  // count <= max_sections and the table fits in the file
  std::unordered_set<std::string> tags;
  std::uint64_t prev_end = header_end;
  for (std::uint32_t i = 0; i < count; ++i) {
    const auto e = static_cast<std::size_t>(kSectionHeaderBytes + kSectionEntryBytes * i);
    SectionInfo s;
    s.tag.assign(reinterpret_cast<const char*>(b.data() + e), 4);
    s.crc32c = get<std::uint32_t>(b, e + 4);
    s.offset = get<std::uint64_t>(b, e + 8);
    s.size = get<std::uint64_t>(b, e + 16);
    const std::string name = fmt::format("section {} {} (table entry at offset {})", i, quoted(s.tag), e);
    if (!std::all_of(s.tag.begin(), s.tag.end(), printable))
      return f.fail(errc::corrupt_data, fmt::format("{}: the tag is not 4 printable ASCII characters", name));
    if (!tags.insert(s.tag).second)
      return f.fail(errc::corrupt_data, fmt::format("{}: the tag appears twice in the table", name));
    const std::uint64_t expected_offset = align_up(prev_end);
    if (s.offset != expected_offset) {
      if (s.offset < prev_end)
        return f.fail(errc::corrupt_data, fmt::format("{}: offset {} overlaps {}, which ends at offset {}", name, s.offset,
                                                      i == 0 ? std::string("the header") : fmt::format("section {} {}", i - 1, quoted(f.sections_.back().tag)),
                                                      prev_end));
      if (s.offset % kSectionAlignment != 0)
        return f.fail(errc::corrupt_data, fmt::format("{}: offset {} is not a multiple of {}", name, s.offset, kSectionAlignment));
      return f.fail(errc::corrupt_data, fmt::format("{}: offset {} leaves a gap; the section must start at offset {}", name, s.offset, expected_offset));
    }
    if (s.offset > size || s.size > size - s.offset)  // no overflow: both sides are checked separately
      return f.fail(errc::corrupt_data, fmt::format("{}: offset {} + size {} runs past the end of the file ({} bytes)", name, s.offset, s.size, size));
    for (std::uint64_t p = prev_end; p < s.offset; ++p)
      if (b[static_cast<std::size_t>(p)] != std::byte{0})
        return f.fail(errc::corrupt_data, fmt::format("{}: the padding byte at offset {} before it is 0x{:02x}, not 0", name, p,
                                                      static_cast<unsigned>(b[static_cast<std::size_t>(p)])));
    prev_end = s.offset + s.size;
    f.sections_.push_back(std::move(s));
  }
  if (prev_end != size)
    return f.fail(errc::corrupt_data, fmt::format("bytes [{}, {}) after the {} belong to no section", prev_end, size,
                                                  count == 0 ? std::string("header") : fmt::format("last section {}", quoted(f.sections_.back().tag))));

  f.checked_ = std::make_unique<std::atomic<std::uint8_t>[]>(count);  // value-initialised: all 0
  if (options.verify == SectionVerify::on_open)
    for (std::uint32_t i = 0; i < count; ++i) QUARRY_RETURN_IF_ERROR(f.verify(i));
  return f;
}

std::ptrdiff_t SectionFile::find(std::string_view tag) const noexcept {
  for (std::size_t i = 0; i < sections_.size(); ++i)
    if (sections_[i].tag == tag) return static_cast<std::ptrdiff_t>(i);
  return -1;
}

status SectionFile::verify(std::size_t i) const {
  const std::uint8_t state = checked_[i].load(std::memory_order_acquire);
  const SectionInfo& s = sections_[i];
  if (state == 0) {
    const std::uint32_t crc = crc32c(bytes_.subspan(static_cast<std::size_t>(s.offset), static_cast<std::size_t>(s.size)));
    // Two threads may both compute it; they store the same answer.
    checked_[i].store(crc == s.crc32c ? 1 : 2, std::memory_order_release);
    if (crc != s.crc32c)
      return fail(errc::corrupt_data, fmt::format("section {} {} (offset {}, {} bytes): checksum mismatch: CRC32C of its bytes is 0x{:08x}, "
                                                  "but the table stores 0x{:08x}",
                                                  i, quoted(s.tag), s.offset, s.size, crc, s.crc32c));
    return {};
  }
  if (state == 2)
    return fail(errc::corrupt_data, fmt::format("section {} {} (offset {}, {} bytes): checksum mismatch (the table stores 0x{:08x})", i, quoted(s.tag),
                                                s.offset, s.size, s.crc32c));
  return {};
}

result<std::span<const std::byte>> SectionFile::section(std::string_view tag) const {
  const std::ptrdiff_t i = find(tag);
  if (i < 0) {
    std::string have;
    for (const SectionInfo& s : sections_) have += (have.empty() ? "" : ", ") + quoted(s.tag);
    return fail(errc::not_found, fmt::format("no section {} (the file has {})", quoted(tag), have.empty() ? std::string("none") : have));
  }
  QUARRY_RETURN_IF_ERROR(verify(static_cast<std::size_t>(i)));
  const SectionInfo& s = sections_[static_cast<std::size_t>(i)];
  return bytes_.subspan(static_cast<std::size_t>(s.offset), static_cast<std::size_t>(s.size));
}

result<BoundedReader> SectionFile::reader(std::string_view tag) const {
  QUARRY_ASSIGN_OR_RETURN(auto bytes, section(tag));
  return BoundedReader(bytes, fmt::format("{} section {}", what_, quoted(tag)), std::endian::native);
}

status SectionFile::verify_all() const {
  for (std::size_t i = 0; i < sections_.size(); ++i) QUARRY_RETURN_IF_ERROR(verify(i));
  return {};
}

}  // namespace quarry
