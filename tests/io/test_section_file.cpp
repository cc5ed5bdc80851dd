// Section files: round trips in memory and on disk; every truncation and every flipped bit of a
// small file is caught with a clear error; wrong magic, version and byte order; crafted tables
// (overlaps, gaps, overflows, duplicates) with a valid header checksum; lazy verification.
#include <doctest/doctest.h>

#include <bit>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <unistd.h>

#include <quarry/io/crc32c.hpp>
#include <quarry/io/section_file.hpp>

#include "temp_dir.hpp"
#include "test_util.hpp"

using namespace quarry;
using namespace quarry::testing;
namespace fs = std::filesystem;

namespace {

const FileFormat kFormat{"QRYTEST1", 1, 2};

struct Meta {
  std::uint32_t dim = 0;
  std::uint64_t count = 0;
  float scale = 0;
};

const std::vector<std::uint8_t> kCodes = [] {
  std::vector<std::uint8_t> v(40);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<std::uint8_t>(i * 7 + 3);
  return v;
}();
const std::vector<float> kFloats = {1.5f, -2.25f, 3.f, 1e-3f};

// A small file (384 bytes): META streamed field by field, CODE viewed, VECS owned, NONE empty.
SectionFileWriter small_writer(const FileFormat& format = kFormat) {
  SectionFileWriter w(format);
  w.add_stream("META", [](SectionSink& s) -> status {
    QUARRY_RETURN_IF_ERROR(s.write_value(std::uint32_t{4}));
    QUARRY_RETURN_IF_ERROR(s.write_value(std::uint64_t{10}));
    QUARRY_RETURN_IF_ERROR(s.write_value(0.5f));
    return {};
  });
  w.add_array<std::uint8_t>("CODE", kCodes);
  std::vector<std::byte> owned(kFloats.size() * sizeof(float));
  std::memcpy(owned.data(), kFloats.data(), owned.size());
  w.add("VECS", std::move(owned));
  w.add("NONE", std::span<const std::byte>());
  return w;
}

std::vector<std::byte> small_file() { return small_writer().to_bytes().value(); }

template <class T>
void set(std::vector<std::byte>& b, std::size_t offset, T v) {
  std::memcpy(b.data() + offset, &v, sizeof(T));
}
template <class T>
T get(const std::vector<std::byte>& b, std::size_t offset) {
  T v;
  std::memcpy(&v, b.data() + offset, sizeof(T));
  return v;
}

// Recomputes the header checksum after a deliberate edit of the header or table, so the check
// under test (not the checksum) is what rejects the file.
void reseal(std::vector<std::byte>& b) {
  const auto count = get<std::uint32_t>(b, 16);
  const std::size_t table_end = 32 + 24 * count;
  set<std::uint32_t>(b, table_end, crc32c(std::span<const std::byte>(b.data(), table_end)));
}

// Table entry i's field offsets.
std::size_t entry(std::size_t i) { return 32 + 24 * i; }

status parse_status(const std::vector<std::byte>& b, const FileFormat& f = kFormat, const SectionFileOptions& o = {}) {
  return SectionFile::parse(b, f, "t.qry", o).status();
}

}  // namespace

TEST_CASE("section_file: in-memory round trip") {
  const auto bytes = small_file();
  CHECK(bytes.size() == 384);
  auto f = SectionFile::parse(bytes, kFormat, "t.qry");
  REQUIRE_MESSAGE(f.ok(), f.status().to_string());
  CHECK(f->major() == 1);
  CHECK(f->minor() == 2);
  CHECK(f->what() == "t.qry");
  REQUIRE(f->sections().size() == 4);
  const char* tags[] = {"META", "CODE", "VECS", "NONE"};
  const std::uint64_t sizes[] = {16, 40, 16, 0};
  const std::uint64_t offsets[] = {192, 256, 320, 384};  // the header ends at 132
  for (std::size_t i = 0; i < 4; ++i) {
    CHECK(f->sections()[i].tag == tags[i]);
    CHECK(f->sections()[i].size == sizes[i]);
    CHECK(f->sections()[i].offset == offsets[i]);
    CHECK(f->sections()[i].offset % kSectionAlignment == 0);
    CHECK(f->contains(tags[i]));
  }
  CHECK(!f->contains("NOPE"));

  auto meta = f->reader("META");
  REQUIRE(meta.ok());
  CHECK(meta->read<std::uint32_t>("dim").value() == 4);
  CHECK(meta->read<std::uint64_t>("count").value() == 10);
  CHECK(meta->read<float>("scale").value() == 0.5f);
  const status past = meta->read<std::uint8_t>("extra").status();
  CHECK(past.code() == errc::corrupt_data);
  CHECK(contains(past, "t.qry section 'META': truncated: extra needs 1 bytes at offset 16"));

  auto codes = f->array<std::uint8_t>("CODE");
  REQUIRE(codes.ok());
  CHECK(std::vector<std::uint8_t>(codes->begin(), codes->end()) == kCodes);
  auto floats = f->array<float>("VECS");
  REQUIRE(floats.ok());
  CHECK(std::vector<float>(floats->begin(), floats->end()) == kFloats);
  auto none = f->section("NONE");
  REQUIRE(none.ok());
  CHECK(none->empty());

  // A section of 7 bytes is not an array of 4-byte values; a missing one is not_found.
  SectionFileWriter odd(kFormat);
  odd.add("ODD7", std::vector<std::byte>(7));
  const auto odd_bytes = odd.to_bytes().value();
  CHECK(contains(SectionFile::parse(odd_bytes, kFormat, "o.qry")->array<float>("ODD7").status(),
                 "o.qry section 'ODD7': holds 7 bytes, not a whole number of 4-byte values"));
  const status missing = f->section("NOPE").status();
  CHECK(missing.code() == errc::not_found);
  CHECK(contains(missing, "t.qry: no section 'NOPE' (the file has 'META', 'CODE', 'VECS', 'NONE')"));

  // The reader's copying and in-place arrays.
  auto r = f->reader("CODE");
  REQUIRE(r.ok());
  auto v = r->read_vector<std::uint16_t>(3, "pairs");
  REQUIRE(v.ok());
  CHECK(v->size() == 3);
  auto rest = r->read_array<std::uint8_t>(34, "rest");
  REQUIRE(rest.ok());
  CHECK((*rest)[0] == kCodes[6]);
  CHECK(contains(r->read_array<std::uint8_t>(1, "more").status(), "truncated: more needs 1 bytes at offset 40"));
  CHECK(contains(r->read_vector<std::uint64_t>(std::uint64_t{1} << 62, "huge").status(), "overflow"));
  CHECK(contains(r->read_vector<std::uint64_t>(std::uint64_t{1} << 40, "big").status(), "truncated: big needs 8796093022208 bytes"));

  // A view at an odd address is refused, not read misaligned.
  std::vector<std::byte> shifted(bytes.size() + 1);
  std::memcpy(shifted.data() + 1, bytes.data(), bytes.size());
  auto g = SectionFile::parse(std::span<const std::byte>(shifted).subspan(1), kFormat, "shifted");
  REQUIRE(g.ok());
  CHECK(contains(g->array<float>("VECS").status(), "not aligned to 4 bytes"));
}

TEST_CASE("section_file: an empty file and a file with only empty sections") {
  SectionFileWriter w(kFormat);
  const auto bytes = w.to_bytes().value();
  CHECK(bytes.size() == 36);
  auto f = SectionFile::parse(bytes, kFormat);
  REQUIRE(f.ok());
  CHECK(f->sections().empty());

  SectionFileWriter e(kFormat);
  e.add("A   ", std::span<const std::byte>());
  e.add("B   ", std::span<const std::byte>());
  const auto eb = e.to_bytes().value();
  auto ef = SectionFile::parse(eb, kFormat);
  REQUIRE_MESSAGE(ef.ok(), ef.status().to_string());
  CHECK(ef->sections()[0].offset == 128);
  CHECK(ef->sections()[1].offset == 128);
  CHECK(eb.size() == 128);
}

TEST_CASE("section_file: on disk, written atomically, mapped and 64-byte aligned") {
  TempDir dir;
  const std::string path = dir.file("index.qry");
  {
    std::ofstream old(path, std::ios::binary);
    old << "an older file";
  }
  std::vector<float> big(10000);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<float>(i) * 0.25f;
  SectionFileWriter w = small_writer();
  w.add_stream("BIGF", [&](SectionSink& s) -> status {
    for (std::size_t i = 0; i < big.size(); i += 1000)
      QUARRY_RETURN_IF_ERROR(s.write_array(std::span<const float>(big).subspan(i, 1000)));
    return {};
  });
  REQUIRE(w.write(path).ok());
  CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()) == 1);

  for (SectionVerify verify : {SectionVerify::on_open, SectionVerify::on_first_access}) {
    auto f = SectionFile::open(path, kFormat, {.verify = verify});
    REQUIRE_MESSAGE(f.ok(), f.status().to_string());
    CHECK(f->what() == path);
    auto arr = f->array<float>("BIGF");
    REQUIRE(arr.ok());
    CHECK(reinterpret_cast<std::uintptr_t>(arr->data()) % 64 == 0);
    CHECK(std::vector<float>(arr->begin(), arr->end()) == big);
    CHECK(f->verify_all().ok());
    // Moving the file object keeps the views valid (the map moves with it).
    SectionFile moved = std::move(*f);
    CHECK(moved.array<float>("BIGF")->data() == arr->data());
  }

  // A producer's error aborts the save; the previous file stays, and no temporary file remains.
  SectionFileWriter bad(kFormat);
  bad.add("GOOD", std::vector<std::byte>(10, std::byte{1}));
  bad.add_stream("FAIL", [](SectionSink& s) -> status {
    QUARRY_RETURN_IF_ERROR(s.write_value(1.0));
    return status(errc::invalid_argument, "vector 17 is NaN");
  });
  const status st = bad.write(path);
  CHECK(st.code() == errc::invalid_argument);
  CHECK(contains(st, "cannot write '" + path + "': section 'FAIL': vector 17 is NaN"));
  CHECK(SectionFile::open(path, kFormat).ok());
  CHECK(std::distance(fs::directory_iterator(dir.path), fs::directory_iterator()) == 1);

  // Saving into a missing directory names it.
  const std::string nowhere = dir.file("missing");
  const status ms = small_writer().write(nowhere + "/x.qry");
  CHECK(ms.code() == errc::not_found);
  CHECK(contains(ms, "'" + nowhere + "'"));

  // Opening a missing file is not_found; a non-quarry file has the wrong magic.
  CHECK(SectionFile::open(dir.file("absent.qry"), kFormat).status().code() == errc::not_found);
  {
    std::ofstream other(dir.file("other.bin"), std::ios::binary);
    other << "GGUF\x03";
  }
  CHECK(contains(SectionFile::open(dir.file("other.bin"), kFormat).status(), "not a 'QRYTEST1' file: the magic at offset 0 is 'GGUF\\x03'"));
}

TEST_CASE("section_file: a file truncated at any byte is rejected as truncated") {
  const auto bytes = small_file();
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    const std::vector<std::byte> cut(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
    const status s = parse_status(cut);
    INFO("length " << n << ": " << s.to_string());
    REQUIRE(s.code() == errc::corrupt_data);
    CHECK(contains(s, "t.qry: truncated: "));
  }
  // The messages say what is missing.
  CHECK(contains(parse_status({bytes.begin(), bytes.begin() + 20}), "the file has 20 bytes; the header alone needs 36"));
  CHECK(contains(parse_status({bytes.begin(), bytes.begin() + 100}), "the table of 4 sections end at offset 132, but the file has 100 bytes"));
  CHECK(contains(parse_status({bytes.begin(), bytes.begin() + 200}), "the header (offset 24) says the file has 384 bytes, but it has 200"));
}

TEST_CASE("section_file: every flipped bit of a small file is caught") {
  const auto bytes = small_file();
  for (SectionVerify verify : {SectionVerify::on_open, SectionVerify::on_first_access}) {
    for (std::size_t i = 0; i < bytes.size(); ++i) {
      for (int bit = 0; bit < 8; ++bit) {
        auto b = bytes;
        b[i] ^= static_cast<std::byte>(1u << bit);
        auto f = SectionFile::parse(b, kFormat, "t.qry", {.verify = verify});
        const status s = f.ok() ? f->verify_all() : f.status();
        INFO("byte " << i << " bit " << bit << ": " << s.to_string());
        REQUIRE(!s.ok());
        CHECK(contains(s, "t.qry: "));
        CHECK((s.code() == errc::corrupt_data || s.code() == errc::unsupported));
      }
    }
  }
  // Where a flip lands decides the message.
  auto flip = [&](std::size_t i) {
    auto b = bytes;
    b[i] ^= std::byte{0x10};
    return parse_status(b);
  };
  CHECK(contains(flip(3), "not a 'QRYTEST1' file"));
  CHECK(contains(flip(13), "endianness tag at offset 12"));
  CHECK(contains(flip(30), "header checksum mismatch"));
  CHECK(contains(flip(100), "header checksum mismatch"));
  CHECK(contains(flip(130), "header checksum mismatch"));
  CHECK(contains(flip(150), "the padding byte at offset 150"));
  CHECK(contains(flip(270), "section 1 'CODE' (offset 256, 40 bytes): checksum mismatch"));
}

TEST_CASE("section_file: wrong magic, version and byte order") {
  const auto bytes = small_file();
  const status magic = parse_status(bytes, FileFormat{"QRYOTHER", 1, 2});
  CHECK(magic.code() == errc::corrupt_data);
  CHECK(contains(magic, "t.qry: not a 'QRYOTHER' file: the magic at offset 0 is 'QRYTEST1'; expected 'QRYOTHER'"));

  // Another major version either way.
  const status newer_major = parse_status(bytes, FileFormat{"QRYTEST1", 0, 9});
  CHECK(newer_major.code() == errc::unsupported);
  CHECK(contains(newer_major, "format version 1.2 (at offset 8) is not readable here: this reader reads versions 0.0 to 0.9"));
  const status older_major = parse_status(bytes, FileFormat{"QRYTEST1", 2, 0});
  CHECK(contains(older_major, "format version 1.2 (at offset 8) is not readable here: this reader reads versions 2.0 to 2.0"));
  // A newer minor is refused; an older one is read.
  const status newer_minor = parse_status(bytes, FileFormat{"QRYTEST1", 1, 1});
  CHECK(newer_minor.code() == errc::unsupported);
  CHECK(contains(newer_minor, "format version 1.2 (at offset 8) is newer than this reader's 1.1"));
  auto later_reader = SectionFile::parse(bytes, FileFormat{"QRYTEST1", 1, 7});
  REQUIRE(later_reader.ok());
  CHECK(later_reader->minor() == 2);

  // The other byte order: the tag reads 0x04030201.
  auto swapped = bytes;
  set<std::uint32_t>(swapped, 12, 0x04030201u);
  const status order = parse_status(swapped);
  CHECK(order.code() == errc::unsupported);
  CHECK(contains(order, std::endian::native == std::endian::little ? "written on a big-endian machine" : "written on a little-endian machine"));
  CHECK(contains(order, "0x04030201"));
  auto garbage = bytes;
  set<std::uint32_t>(garbage, 12, 0xdeadbeefu);
  CHECK(contains(parse_status(garbage), "the endianness tag at offset 12 is 0xdeadbeef; expected 0x01020304"));

  // The expected magic is a program constant: a wrong length is a programming error.
  CHECK(thrown([&] { (void)SectionFile::parse(bytes, FileFormat{"SHORT", 1, 0}); }).code() == errc::invalid_argument);
}

TEST_CASE("section_file: crafted tables are rejected before any section is touched") {
  const auto bytes = small_file();
  auto crafted = [&](auto edit) {
    auto b = bytes;
    edit(b);
    reseal(b);
    return parse_status(b);
  };
  // Section count over the limit, and a count whose table cannot fit (no allocation for it).
  CHECK(contains(parse_status(bytes, kFormat, {.max_sections = 3}), "section count 4 (at offset 16) exceeds the limit of 3"));
  auto huge = bytes;
  set<std::uint32_t>(huge, 16, 0xffffffffu);
  CHECK(contains(parse_status(huge, kFormat, {.max_sections = 0xffffffffu}),
                 "truncated: the header and the table of 4294967295 sections end at offset 103079215116"));
  // Offsets: overlapping the header, the previous section, misaligned, leaving a gap.
  CHECK(contains(crafted([](auto& b) { set<std::uint64_t>(b, entry(0) + 8, 64); }),
                 "section 0 'META' (table entry at offset 32): offset 64 overlaps the header, which ends at offset 132"));
  CHECK(contains(crafted([](auto& b) { set<std::uint64_t>(b, entry(1) + 8, 128); }),
                 "section 1 'CODE' (table entry at offset 56): offset 128 overlaps section 0 'META', which ends at offset 208"));
  CHECK(contains(crafted([](auto& b) { set<std::uint64_t>(b, entry(1) + 8, 260); }), "offset 260 is not a multiple of 64"));
  CHECK(contains(crafted([](auto& b) { set<std::uint64_t>(b, entry(1) + 8, 320); }), "offset 320 leaves a gap; the section must start at offset 256"));
  // Sizes: past the end, and so large that offset + size overflows.
  CHECK(contains(crafted([](auto& b) { set<std::uint64_t>(b, entry(2) + 16, 100); }), "offset 320 + size 100 runs past the end of the file (384 bytes)"));
  CHECK(contains(crafted([](auto& b) { set<std::uint64_t>(b, entry(2) + 16, std::numeric_limits<std::uint64_t>::max() - 100); }), "runs past the end"));
  CHECK(contains(crafted([](auto& b) { set<std::uint64_t>(b, entry(3) + 8, std::numeric_limits<std::uint64_t>::max() - 63); }), "leaves a gap"));
  // Bytes after the last section belong to nothing, even when the recorded size counts them.
  CHECK(contains(crafted([](auto& b) {
                   b.resize(400);
                   set<std::uint64_t>(b, 24, 400);
                 }),
                 "bytes [384, 400) after the last section 'NONE' belong to no section"));
  // A section whose size shrinks leaves its tail as non-zero "padding".
  CHECK(contains(crafted([](auto& b) { set<std::uint64_t>(b, entry(2) + 16, 8); }), "section 3 'NONE' (table entry at offset 104): the padding byte at offset 330"));
  // Tags: duplicated, not printable.
  CHECK(contains(crafted([](auto& b) { std::memcpy(b.data() + entry(1), "META", 4); }), "section 1 'META' (table entry at offset 56): the tag appears twice"));
  CHECK(contains(crafted([](auto& b) { b[entry(1)] = std::byte{0}; }), "section 1 '\\x00ODE' (table entry at offset 56): the tag is not 4 printable"));
  // Flags, the recorded file size, trailing bytes.
  CHECK(contains(crafted([](auto& b) { set<std::uint32_t>(b, 20, 1); }), "flags 0x00000001 at offset 20: version 1.2 defines none"));
  CHECK(contains(crafted([](auto& b) { set<std::uint64_t>(b, 24, 1ull << 60); }), "truncated: the header (offset 24) says the file has 1152921504606846976 bytes"));
  auto longer = bytes;
  longer.push_back(std::byte{0});
  CHECK(contains(parse_status(longer), "the file has 385 bytes, 1 more than the 384 its header (offset 24) records"));
}

TEST_CASE("section_file: lazy verification checks a section on first access") {
  auto bytes = small_file();
  bytes[270] ^= std::byte{1};  // inside CODE
  const status eager = parse_status(bytes);
  CHECK(contains(eager, "section 1 'CODE' (offset 256, 40 bytes): checksum mismatch: CRC32C of its bytes is 0x"));
  auto f = SectionFile::parse(bytes, kFormat, "t.qry", {.verify = SectionVerify::on_first_access});
  REQUIRE(f.ok());
  CHECK(f->section("META").ok());
  CHECK(f->array<float>("VECS").ok());
  const status first = f->section("CODE").status();
  CHECK(first.code() == errc::corrupt_data);
  CHECK(contains(first, "'CODE' (offset 256, 40 bytes): checksum mismatch"));
  CHECK(contains(f->section("CODE").status(), "checksum mismatch"));  // and every time after
  CHECK(contains(f->reader("CODE").status(), "checksum mismatch"));
  CHECK(contains(f->verify_all(), "checksum mismatch"));
}

TEST_CASE("section_file: writer refuses bad tags and magics") {
  CHECK(thrown([] { SectionFileWriter w(FileFormat{"TOOLONGMAGIC", 1, 0}); }).code() == errc::invalid_argument);
  SectionFileWriter w(kFormat);
  w.add("ABCD", std::span<const std::byte>());
  CHECK(contains(thrown([&] { w.add("ABCD", std::span<const std::byte>()); }), "section tag 'ABCD' is already in this QRYTEST1 file"));
  CHECK(contains(thrown([&] { w.add("ABC", std::span<const std::byte>()); }), "must be exactly 4 printable ASCII characters"));
  CHECK(contains(thrown([&] { w.add(std::string_view("AB\nC", 4), std::span<const std::byte>()); }), "'AB\\x0aC'"));
  CHECK(thrown([&] { w.add_stream("EMPT", nullptr); }).code() == errc::invalid_argument);
  CHECK(w.section_count() == 1);
}

TEST_CASE("bounded_reader: byte order, copied and in-place arrays") {
  const std::vector<std::byte> be = {std::byte{0x01}, std::byte{0x02}, std::byte{0x03}, std::byte{0x04},
                                     std::byte{0x00}, std::byte{0x05}, std::byte{0x00}, std::byte{0x06}};
  BoundedReader big(be, "be.bin", std::endian::big);
  CHECK(big.read<std::uint32_t>("magic").value() == 0x01020304u);
  CHECK(big.read_vector<std::uint16_t>(2, "pair").value() == std::vector<std::uint16_t>{5, 6});
  BoundedReader little(be, "le.bin");
  CHECK(little.read<std::uint32_t>("magic").value() == 0x04030201u);
  BoundedReader other(be, "x.bin", std::endian::native == std::endian::little ? std::endian::big : std::endian::little);
  CHECK(other.read_array<std::uint16_t>(2, "pair").status().code() == errc::unsupported);
  CHECK(other.read_array<std::uint8_t>(8, "bytes").ok());  // single bytes have no order
  BoundedReader native(be, "n.bin", std::endian::native);
  CHECK(contains(native.read_vector<std::uint32_t>(3, "triple").status(), "n.bin: truncated: triple needs 12 bytes at offset 0 but 8 remain"));
  CHECK(native.read_vector<std::uint32_t>(0, "none").value().empty());
  CHECK(native.read_array<std::uint64_t>(1, "one").ok() == (reinterpret_cast<std::uintptr_t>(be.data()) % 8 == 0));
}
