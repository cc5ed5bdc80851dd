// libFuzzer target: SectionFile::parse on arbitrary bytes must return an error or a file whose
// every section can be read, never crash, read out of bounds or allocate without bound.
//
// Random bytes rarely pass the header checksum, so each input is also parsed a second time
// with the magic, endianness tag and header CRC patched in: that lets the fuzzer reach the
// table checks (offsets, sizes, overlaps, padding) and the section readers.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include <quarry/io/crc32c.hpp>
#include <quarry/io/section_file.hpp>

namespace {

const quarry::FileFormat kFormat{"QRYFUZZ0", 1, 0};

void exercise(std::span<const std::byte> bytes, quarry::SectionVerify verify) {
  auto f = quarry::SectionFile::parse(bytes, kFormat, "fuzz", {.max_sections = 64, .verify = verify});
  if (!f.ok()) return;
  (void)f->verify_all();
  for (const quarry::SectionInfo& s : f->sections()) {
    auto span = f->section(s.tag);
    if (!span.ok()) continue;
    if (span->size() != s.size) __builtin_trap();
    auto r = f->reader(s.tag);
    if (!r.ok()) continue;
    while (r->remaining() > 0) {
      auto n = r->read<std::uint32_t>("count");
      if (!n.ok()) break;
      if (!r->read_vector<std::uint16_t>(*n, "values").ok()) break;
    }
    (void)f->array<float>(s.tag);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data), size);
  // Copy into a buffer of its own so that the alignment of section views varies with nothing
  // but the file's offsets, and ASan sees exactly `size` bytes.
  std::vector<std::byte> buf(in.begin(), in.end());
  exercise(buf, quarry::SectionVerify::on_open);

  if (buf.size() >= 36) {
    std::memcpy(buf.data(), kFormat.magic.data(), 8);
    const std::uint16_t major = kFormat.major;
    std::memcpy(buf.data() + 8, &major, 2);
    std::memcpy(buf.data() + 12, &quarry::kEndiannessTag, 4);
    std::uint32_t count;
    std::memcpy(&count, buf.data() + 16, 4);
    count %= 65;
    std::memcpy(buf.data() + 16, &count, 4);
    const std::size_t table_end = 32 + 24 * static_cast<std::size_t>(count);
    if (table_end + 4 <= buf.size()) {
      const std::uint64_t file_size = buf.size();
      std::memcpy(buf.data() + 24, &file_size, 8);
      const std::uint32_t crc = quarry::crc32c(std::span<const std::byte>(buf.data(), table_end));
      std::memcpy(buf.data() + table_end, &crc, 4);
    }
    exercise(buf, quarry::SectionVerify::on_first_access);
  }
  return 0;
}
