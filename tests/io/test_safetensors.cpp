// The safetensors reader on files built here byte by byte: every dtype, metadata, scalars and
// empty tensors, and hostile files (bad fields, lying lengths, truncation, flipped bytes, JSON
// edge cases). No real safetensors file is in the shared data.
#include <doctest/doctest.h>

#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <quarry/io/safetensors.hpp>

#include "test_util.hpp"

using namespace quarry;
using namespace quarry::testing;

namespace {

std::vector<std::byte> to_bytes(std::string_view s) {
  const auto* p = reinterpret_cast<const std::byte*>(s.data());
  return {p, p + s.size()};
}

template <class T>
std::vector<std::byte> raw(const std::vector<T>& v) {
  const auto* p = reinterpret_cast<const std::byte*>(v.data());
  return {p, p + v.size() * sizeof(T)};
}

// A whole file: the length of `header` (padded with spaces to a multiple of 8 when `pad`), the
// header, then `data`.
std::vector<std::byte> file_of(std::string header, std::span<const std::byte> data, bool pad = true) {
  if (pad)
    while (header.size() % 8) header += ' ';
  std::vector<std::byte> out(8);
  const std::uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  const auto h = to_bytes(header);
  out.insert(out.end(), h.begin(), h.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}
std::vector<std::byte> file_of(std::string header, std::size_t data_bytes = 0, bool pad = true) {
  return file_of(std::move(header), std::vector<std::byte>(data_bytes), pad);
}

// A JSON string literal for `s` (quotes, backslashes and control characters escaped).
std::string json_string(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", static_cast<unsigned char>(c));
      out += buf;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// Builds valid files: tensors laid out in the order added (callers add the widest types first,
// as the reference writer does, so that views are aligned), metadata first in the header.
class SafetensorsBuilder {
 public:
  SafetensorsBuilder& meta(std::string key, std::string value) {
    meta_.emplace_back(std::move(key), std::move(value));
    return *this;
  }
  SafetensorsBuilder& tensor(const std::string& name, std::string_view dtype, const std::vector<std::int64_t>& shape,
                             const std::vector<std::byte>& bytes) {
    std::string s = json_string(name) + ":{\"dtype\":\"" + std::string(dtype) + "\",\"shape\":[";
    for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
    s += "],\"data_offsets\":[" + std::to_string(data_.size()) + "," + std::to_string(data_.size() + bytes.size()) + "]}";
    entries_.push_back(std::move(s));
    data_.insert(data_.end(), bytes.begin(), bytes.end());
    return *this;
  }
  template <class T>
  SafetensorsBuilder& tensor(const std::string& name, std::string_view dtype, const std::vector<std::int64_t>& shape, const std::vector<T>& values) {
    return tensor(name, dtype, shape, raw(values));
  }
  std::string header() const {
    std::string s = "{";
    if (!meta_.empty()) {
      s += "\"__metadata__\":{";
      for (std::size_t i = 0; i < meta_.size(); ++i) s += (i ? "," : "") + json_string(meta_[i].first) + ":" + json_string(meta_[i].second);
      s += "}";
    }
    for (const std::string& e : entries_) s += (s.size() > 1 ? "," : "") + e;
    return s + "}";
  }
  const std::vector<std::byte>& data() const { return data_; }
  std::vector<std::byte> file(bool pad = true) const { return file_of(header(), data_, pad); }

 private:
  std::vector<std::pair<std::string, std::string>> meta_;
  std::vector<std::string> entries_;
  std::vector<std::byte> data_;
};

std::string error_of(const result<SafetensorsFile>& r) { return r.ok() ? "" : r.status().to_string(); }

// A header of one F32 tensor [2] named "t" whose entry is `entry` (dtype, shape, data_offsets),
// over 8 data bytes.
std::vector<std::byte> one_tensor(const std::string& entry, std::size_t data_bytes = 8) {
  return file_of("{\"t\":{" + entry + "}}", data_bytes);
}

// Reference values of the 8-bit float types, from their definitions.
double ref_e4m3(std::uint8_t b) {
  const int s = b >> 7, e = (b >> 3) & 15, m = b & 7;
  if (e == 15 && m == 7) return std::nan("");
  const double mag = e == 0 ? m / 8.0 * std::pow(2.0, -6) : (1 + m / 8.0) * std::pow(2.0, e - 7);
  return s ? -mag : mag;
}
double ref_e5m2(std::uint8_t b) {
  const int s = b >> 7, e = (b >> 2) & 31, m = b & 3;
  double mag;
  if (e == 31) mag = m == 0 ? INFINITY : std::nan("");
  else mag = e == 0 ? m / 4.0 * std::pow(2.0, -14) : (1 + m / 4.0) * std::pow(2.0, e - 15);
  return s ? -mag : mag;
}
double ref_e8m0(std::uint8_t b) { return b == 255 ? std::nan("") : std::pow(2.0, b - 127); }

bool same_float(double want, float got) { return std::isnan(want) ? std::isnan(got) : static_cast<double>(got) == want && std::signbit(want) == std::signbit(got); }

// Parses a successfully parsed file's every tensor through every accessor: nothing may crash or
// read outside the file.
void exercise(const SafetensorsFile& f, std::span<const std::byte> bytes) {
  for (const SafetensorsTensorInfo& t : f.tensors()) {
    REQUIRE(t.offset >= f.data_offset());
    REQUIRE(t.offset + t.nbytes <= bytes.size());
    REQUIRE(f.find_tensor(t.name) == &t);
    const auto span = f.tensor_bytes(t);
    REQUIRE(span.data() == bytes.data() + t.offset);
    (void)f.tensor_f32(t.name);
    (void)f.tensor_u8(t.name);
    if (auto v = f.tensor_i8(t.name); v.ok()) REQUIRE(v->numel() == static_cast<std::int64_t>(t.nbytes));
    if (auto d = f.tensor_dequantized_f32(t.name); d.ok()) REQUIRE(d->shape() == t.shape);
  }
}

}  // namespace

TEST_CASE("safetensors: a file of every dtype") {
  const std::vector<double> f64 = {1.5, -2.25};
  const std::vector<std::int64_t> i64 = {-5, 1LL << 40};
  const std::vector<std::uint64_t> u64 = {~0ULL};
  const std::vector<float> c64 = {1.f, -1.f};
  const std::vector<float> f32 = {0.f, 1.f, 2.f, 3.f, 4.f, 5.f};
  const std::vector<std::int32_t> i32 = {1, -2, 3, -4};
  const std::vector<std::uint32_t> u32 = {7};
  const std::vector<f16> h = {f16(1.f), f16(-0.5f), f16(65504.f)};
  const std::vector<bf16> bh = {bf16(3.f), bf16(-1e30f), bf16(0.f)};
  const std::vector<std::int16_t> i16 = {-1, 2, 300};
  const std::vector<std::uint16_t> u16 = {65535};
  const std::vector<std::int8_t> i8 = {-128, -1, 0, 1, 127};
  const std::vector<std::uint8_t> u8 = {0, 1, 254, 255};
  const std::vector<std::uint8_t> b8 = {0, 1};
  std::vector<std::uint8_t> all256(256);
  for (int i = 0; i < 256; ++i) all256[static_cast<std::size_t>(i)] = static_cast<std::uint8_t>(i);

  SafetensorsBuilder b;
  b.tensor("f64", "F64", {2}, f64).tensor("i64", "I64", {2}, i64).tensor("u64", "U64", {1}, u64).tensor("c64", "C64", {1}, c64);
  b.tensor("f32", "F32", {2, 3}, f32).tensor("i32", "I32", {2, 2}, i32).tensor("u32", "U32", {1}, u32);
  b.tensor("f16", "F16", {3}, h).tensor("bf16", "BF16", {1, 3}, bh).tensor("i16", "I16", {3}, i16).tensor("u16", "U16", {1, 1}, u16);
  b.tensor("i8", "I8", {5}, i8).tensor("u8", "U8", {2, 2}, u8).tensor("bool", "BOOL", {2}, b8);
  b.tensor("e5m2", "F8_E5M2", {16, 16}, all256).tensor("e4m3", "F8_E4M3", {256}, all256).tensor("e8m0", "F8_E8M0", {2, 128}, all256);
  b.tensor("f4", "F4", {4}, std::vector<std::uint8_t>{0x21, 0x43}).tensor("f6a", "F6_E2M3", {4}, std::vector<std::uint8_t>{1, 2, 3});
  b.tensor("f6b", "F6_E3M2", {2, 4}, std::vector<std::uint8_t>{1, 2, 3, 4, 5, 6});
  const auto bytes = b.file();
  auto f = SafetensorsFile::parse(bytes, "every-dtype");
  REQUIRE_MESSAGE(f.ok(), f.status().to_string());
  CHECK(f->tensors().size() == 20);
  CHECK(f->data_offset() % 8 == 0);
  CHECK(f->header_size() == f->data_offset() - 8);
  CHECK(f->metadata().empty());

  const auto* t = f->find_tensor("bf16");
  REQUIRE(t != nullptr);
  CHECK(t->dtype == SafetensorsDtype::bf16);
  CHECK(t->shape == Shape{1, 3});
  CHECK(t->nbytes == 6);
  CHECK(f->find_tensor("f6b")->nbytes == 6);
  CHECK(f->find_tensor("f4")->nbytes == 2);
  CHECK(f->find_tensor("c64")->nbytes == 8);
  CHECK(f->find_tensor("e4m3")->shape == Shape{256});
  CHECK(f->find_tensor("nope") == nullptr);
  // Infos in header order, offsets absolute and contiguous.
  std::uint64_t at = f->data_offset();
  for (const auto& info : f->tensors()) {
    CHECK(info.offset == at);
    at += info.nbytes;
  }
  CHECK(at == bytes.size());

  // Views.
  auto v64 = f->tensor_f64("f64");
  REQUIRE(v64.ok());
  CHECK((*v64)(1) == -2.25);
  auto v32 = f->tensor_f32("f32");
  REQUIRE(v32.ok());
  CHECK(v32->shape() == Shape{2, 3});
  CHECK((*v32)(1, 2) == 5.f);
  CHECK(static_cast<const void*>(&(*v32)(0, 0)) == static_cast<const void*>(bytes.data() + f->find_tensor("f32")->offset));
  CHECK(f->tensor_i32("i32").value()(1, 1) == -4);
  CHECK(float(f->tensor_f16("f16").value()(2)) == 65504.f);
  CHECK(float(f->tensor_bf16("bf16").value()(0, 0)) == 3.f);
  CHECK(f->tensor_i8("i8").value()(0) == -128);
  CHECK(f->tensor_u8("u8").value()(1, 1) == 255);

  // A view of another dtype says which it is.
  CHECK(contains(f->tensor_f32("f16").status(), "tensor 'f16' is F16, not F32; tensor_dequantized_f32() reads it as f32"));
  CHECK(f->tensor_f32("f16").status().code() == errc::unsupported);
  CHECK(contains(f->tensor_u8("e4m3").status(), "tensor 'e4m3' is F8_E4M3, not U8"));
  CHECK(contains(f->tensor_u8("bool").status(), "tensor 'bool' is BOOL, not U8"));
  CHECK(contains(f->tensor_i32("u32").status(), "tensor 'u32' is U32, not I32"));
  CHECK(f->tensor_f32("nope").status().code() == errc::not_found);

  // f32 copies of the float types.
  auto d64 = f->tensor_dequantized_f32("f64");
  REQUIRE(d64.ok());
  CHECK(d64->span()[0] == 1.5f);
  CHECK(f->tensor_dequantized_f32("f32").value().span()[5] == 5.f);
  CHECK(f->tensor_dequantized_f32("f16").value().span()[1] == -0.5f);
  auto dbf = f->tensor_dequantized_f32("bf16");
  REQUIRE(dbf.ok());
  CHECK(dbf->shape() == Shape{1, 3});
  CHECK(dbf->span()[1] == float(bf16(-1e30f)));
  struct { const char* name; double (*ref)(std::uint8_t); } f8s[] = {{"e5m2", ref_e5m2}, {"e4m3", ref_e4m3}, {"e8m0", ref_e8m0}};
  for (const auto& c : f8s) {
    auto d = f->tensor_dequantized_f32(c.name);
    REQUIRE_MESSAGE(d.ok(), d.status().to_string());
    for (int i = 0; i < 256; ++i) CHECK_MESSAGE(same_float(c.ref(static_cast<std::uint8_t>(i)), d->span()[static_cast<std::size_t>(i)]), c.name << " byte " << i);
  }
  auto e4 = f->tensor_dequantized_f32("e4m3").value();
  CHECK(e4.span()[0x7e] == 448.f);
  CHECK(e4.span()[0x38] == 1.f);
  CHECK(e4.span()[0x01] == std::ldexp(1.f, -9));
  CHECK(std::isnan(e4.span()[0xff]));
  auto e5 = f->tensor_dequantized_f32("e5m2").value();
  CHECK(e5.shape() == Shape{16, 16});
  CHECK(e5.span()[0x7b] == 57344.f);
  CHECK(e5.span()[0x7c] == INFINITY);
  auto e8 = f->tensor_dequantized_f32("e8m0").value();
  CHECK(e8.span()[127] == 1.f);
  CHECK(e8.span()[0] == std::ldexp(1.f, -127));
  CHECK(contains(f->tensor_dequantized_f32("i32").status(), "tensor 'i32' is I32; tensor_dequantized_f32 reads F64, F32, F16, BF16, F8_E5M2, F8_E4M3 and F8_E8M0 (tensor_i32() views it)"));
  CHECK(contains(f->tensor_dequantized_f32("f4").status(), "tensor 'f4' is F4;"));
  CHECK(f->tensor_dequantized_f32("u16").status().code() == errc::unsupported);
}

TEST_CASE("safetensors: F64 narrowed to f32 rounds to nearest and saturates to inf") {
  const std::vector<double> v = {1e300, -1e300, static_cast<double>(FLT_MAX), 0x1.fffffefffffffp127, 0x1.ffffffp127, -0x1.ffffffp127,
                                 std::numeric_limits<double>::quiet_NaN(), 1e-50, -0.0, 0.1, std::numeric_limits<double>::infinity()};
  auto bytes = SafetensorsBuilder().tensor("x", "F64", {static_cast<std::int64_t>(v.size())}, v).file();
  auto f = SafetensorsFile::parse(bytes);
  REQUIRE(f.ok());
  auto d = f->tensor_dequantized_f32("x");
  REQUIRE(d.ok());
  const auto s = d->span();
  CHECK(s[0] == INFINITY);
  CHECK(s[1] == -INFINITY);
  CHECK(s[2] == FLT_MAX);
  CHECK(s[3] == FLT_MAX);  // just under FLT_MAX + half an ulp
  CHECK(s[4] == INFINITY);  // the tie rounds to even: inf
  CHECK(s[5] == -INFINITY);
  CHECK(std::isnan(s[6]));
  CHECK(s[7] == 0.f);
  CHECK(std::signbit(s[8]));
  CHECK(s[9] == 0.1f);
  CHECK(s[10] == INFINITY);
}

TEST_CASE("safetensors: metadata") {
  SafetensorsBuilder b;
  b.meta("format", "pt").meta("quote\"and\\slash", "line\nbreak\ttab").meta("unicode é 😀", "値").meta("empty", "");
  b.tensor("w", "F32", {1}, std::vector<float>{2.f});
  const auto bytes = b.file();
  auto f = SafetensorsFile::parse(bytes);
  REQUIRE_MESSAGE(f.ok(), f.status().to_string());
  REQUIRE(f->metadata().size() == 4);
  CHECK(f->metadata()[0].first == "format");
  CHECK(*f->find_metadata("format") == "pt");
  CHECK(*f->find_metadata("quote\"and\\slash") == "line\nbreak\ttab");
  CHECK(*f->find_metadata("unicode é 😀") == "値");
  CHECK(f->find_metadata("empty")->empty());
  CHECK(f->find_metadata("missing") == nullptr);

  // Metadata alone, an empty metadata object, and an empty file.
  CHECK(SafetensorsFile::parse(file_of(R"({"__metadata__":{"a":"b"}})")).ok());
  CHECK(SafetensorsFile::parse(file_of(R"({"__metadata__":{}})")).ok());
  const auto empty_bytes = file_of("{}");
  auto empty = SafetensorsFile::parse(empty_bytes);
  REQUIRE(empty.ok());
  CHECK(empty->tensors().empty());
  CHECK(empty->data_offset() == 16);
}

TEST_CASE("safetensors: scalars and empty tensors") {
  // An empty tensor takes no bytes: it may sit at the start, between two tensors, or at the end.
  SafetensorsBuilder b;
  b.tensor("empty_first", "F32", {0}, std::vector<float>{});
  b.tensor("scalar", "F32", {}, std::vector<float>{7.f});
  b.tensor("empty_mid", "F16", {3, 0, 2}, std::vector<f16>{});
  b.tensor("row", "I32", {1}, std::vector<std::int32_t>{9});
  b.tensor("empty_last", "F8_E4M3", {0, 5}, std::vector<std::uint8_t>{});
  const auto bytes = b.file();
  auto f = SafetensorsFile::parse(bytes);
  REQUIRE_MESSAGE(f.ok(), f.status().to_string());
  auto s = f->tensor_f32("scalar");
  REQUIRE(s.ok());
  CHECK(s->rank() == 0);
  CHECK(s->numel() == 1);
  CHECK(s->data()[0] == 7.f);
  auto sd = f->tensor_dequantized_f32("scalar");
  REQUIRE(sd.ok());
  CHECK(sd->rank() == 0);
  CHECK(sd->data()[0] == 7.f);
  for (const char* name : {"empty_first", "empty_mid", "empty_last"}) {
    const auto* t = f->find_tensor(name);
    REQUIRE(t != nullptr);
    CHECK(t->nbytes == 0);
    auto d = f->tensor_dequantized_f32(name);
    REQUIRE_MESSAGE(d.ok(), d.status().to_string());
    CHECK(d->numel() == 0);
  }
  CHECK(f->find_tensor("empty_mid")->shape == Shape{3, 0, 2});
  CHECK(f->tensor_f16("empty_mid").value().numel() == 0);
  CHECK(f->find_tensor("empty_last")->offset == bytes.size());

  // Only empty tensors: an empty data section.
  CHECK(SafetensorsFile::parse(file_of(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"U8","shape":[4,0],"data_offsets":[0,0]}})")).ok());
  // Huge extents are fine when another is 0 (no bytes), as long as none is beyond int64.
  CHECK(SafetensorsFile::parse(file_of(R"({"a":{"dtype":"F64","shape":[0,9223372036854775807,9223372036854775807],"data_offsets":[0,0]}})")).ok());
}

TEST_CASE("safetensors: tensors listed in any order, found by name among many") {
  // The header's order is not the data's; each entry's offsets say where its data is.
  const std::string h = R"({"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})";
  const std::vector<float> data = {1.f, 2.f};
  const auto bytes = file_of(h, raw(data));  // kept alive: the views point into it
  auto f = SafetensorsFile::parse(bytes);
  REQUIRE_MESSAGE(f.ok(), f.status().to_string());
  CHECK(f->tensors()[0].name == "b");
  CHECK(f->tensor_f32("a").value()(0) == 1.f);
  CHECK(f->tensor_f32("b").value()(0) == 2.f);

  SafetensorsBuilder many;
  for (int i = 0; i < 5000; ++i) many.tensor("layer." + std::to_string(4999 - i) + ".w", "I32", {1}, std::vector<std::int32_t>{4999 - i});
  const auto many_bytes = many.file();
  auto g = SafetensorsFile::parse(many_bytes);
  REQUIRE(g.ok());
  for (int i = 0; i < 5000; i += 7) CHECK(g->tensor_i32("layer." + std::to_string(i) + ".w").value()(0) == i);
  CHECK(g->find_tensor("layer.5000.w") == nullptr);
  auto limited = SafetensorsFile::parse(many_bytes, "many", {.max_tensors = 4999});
  CHECK(contains(error_of(limited), "the header has more than 4999 tensors, the limit"));
  auto meta_limited = SafetensorsFile::parse(file_of(R"({"__metadata__":{"a":"1","b":"2","c":"3"}})"), "m", {.max_metadata = 2});
  CHECK(contains(error_of(meta_limited), "__metadata__ has more than 2 entries, the limit"));
}

TEST_CASE("safetensors: open maps the file") {
  const auto dir = std::filesystem::temp_directory_path() / ("quarry_test_safetensors_" + std::to_string(std::random_device{}()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "model.safetensors").string();
  const auto bytes = SafetensorsBuilder().meta("format", "pt").tensor("w", "F32", {2, 2}, std::vector<float>{1, 2, 3, 4}).file();
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  {
    auto f = SafetensorsFile::open(path);
    REQUIRE_MESSAGE(f.ok(), f.status().to_string());
    SafetensorsFile moved = std::move(*f);  // the views stay valid: the mapping moves with it
    auto w = moved.tensor_f32("w");
    REQUIRE(w.ok());
    CHECK((*w)(1, 0) == 3.f);
    CHECK(*moved.find_metadata("format") == "pt");
  }
  CHECK(SafetensorsFile::open((dir / "absent.safetensors").string()).status().code() == errc::not_found);
  // Errors from open name the path.
  const auto bad = file_of("{\"t\":1}");
  std::ofstream(path, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(bad.data()), static_cast<std::streamsize>(bad.size()));
  CHECK(contains(SafetensorsFile::open(path).status(), path + ": tensor 't' must be an object; found a number"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("safetensors: data at an unaligned offset is copied, not viewed") {
  // A header whose length is not a multiple of 8 (no padding) puts the data at an odd offset.
  SafetensorsBuilder b;
  b.tensor("w", "F32", {3}, std::vector<float>{1.f, 2.f, 3.f});
  std::vector<std::byte> bytes = b.file(false);
  if ((8 + b.header().size()) % 4 == 0) bytes = file_of(b.header() + " ", b.data(), false);
  auto f = SafetensorsFile::parse(bytes);
  REQUIRE_MESSAGE(f.ok(), f.status().to_string());
  REQUIRE(reinterpret_cast<std::uintptr_t>(bytes.data() + f->data_offset()) % 4 != 0);
  CHECK(contains(f->tensor_f32("w").status(), "tensor 'w' data (file offset"));
  CHECK(contains(f->tensor_f32("w").status(), "is not aligned for F32; tensor_dequantized_f32() copies it"));
  auto d = f->tensor_dequantized_f32("w");
  REQUIRE(d.ok());
  CHECK(d->span()[2] == 3.f);
}

TEST_CASE("safetensors: every bad field is refused with an error that names it") {
  struct Case {
    std::vector<std::byte> bytes;
    errc code;
    std::string expected;
  };
  const std::string ok_entry = R"("dtype":"F32","shape":[2],"data_offsets":[0,8])";
  const Case cases[] = {
      // dtype
      {one_tensor(R"("dtype":"F7","shape":[2],"data_offsets":[0,8])"), errc::unsupported, "tensor 't' has dtype \"F7\", which quarry does not know (it knows BOOL U8 I8"},
      {one_tensor(R"("dtype":"f32","shape":[2],"data_offsets":[0,8])"), errc::unsupported, "tensor 't' has dtype \"f32\""},
      {one_tensor(R"("dtype":32,"shape":[2],"data_offsets":[0,8])"), errc::corrupt_data, "dtype of tensor 't' must be a string; found a number"},
      {one_tensor(R"("shape":[2],"data_offsets":[0,8])"), errc::corrupt_data, "tensor 't' has no dtype"},
      {one_tensor(ok_entry + R"(,"dtype":"F32")"), errc::corrupt_data, "tensor 't' has two 'dtype' fields"},
      // shape
      {one_tensor(R"("dtype":"F32","data_offsets":[0,8])"), errc::corrupt_data, "tensor 't' has no shape"},
      {one_tensor(R"("dtype":"F32","shape":2,"data_offsets":[0,8])"), errc::corrupt_data, "shape of tensor 't' must be an array; found a number"},
      {one_tensor(R"("dtype":"F32","shape":[-2],"data_offsets":[0,8])"), errc::corrupt_data, "dimension 0 of tensor 't' is -2; it must be a non-negative integer"},
      {one_tensor(R"("dtype":"F32","shape":[2.0],"data_offsets":[0,8])"), errc::corrupt_data, "dimension 0 of tensor 't' is 2.0; it must be a non-negative integer"},
      {one_tensor(R"("dtype":"F32","shape":[1,2e0],"data_offsets":[0,8])"), errc::corrupt_data, "dimension 1 of tensor 't' is 2e0; it must be a non-negative integer"},
      {one_tensor(R"("dtype":"F32","shape":["2"],"data_offsets":[0,8])"), errc::corrupt_data, "dimension 0 of tensor 't' must be a non-negative integer; found a string"},
      {one_tensor(R"("dtype":"F32","shape":[[2]],"data_offsets":[0,8])"), errc::corrupt_data, "dimension 0 of tensor 't' must be a non-negative integer; found an array"},
      {one_tensor(R"("dtype":"F32","shape":[1,1,1,1,1,1,1,1,2],"data_offsets":[0,8])"), errc::unsupported, "tensor 't' has more than 8 dimensions, quarry's limit"},
      {one_tensor(R"("dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,8])"), errc::corrupt_data, "dimension 0 of tensor 't' is 9223372036854775808, beyond int64"},
      {one_tensor(R"("dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8])"), errc::corrupt_data, "tensor 't' (F32, shape [4294967296, 4294967296]): its size overflows"},
      {one_tensor(R"("dtype":"F32","shape":[2305843009213693952],"data_offsets":[0,8])"), errc::corrupt_data, "tensor 't' (F32, shape [2305843009213693952]): its size overflows"},
      {one_tensor(R"("dtype":"F4","shape":[3],"data_offsets":[0,8])"), errc::corrupt_data, "tensor 't' (F4, shape [3]) holds 12 bits, not a whole number of bytes"},
      {one_tensor(R"("dtype":"F32","shape":[3],"data_offsets":[0,8])"), errc::corrupt_data, "tensor 't' (F32, shape [3]) takes 12 bytes, but its data_offsets [0, 8] hold 8"},
      {one_tensor(ok_entry + R"(,"shape":[2])"), errc::corrupt_data, "tensor 't' has two 'shape' fields"},
      // data_offsets
      {one_tensor(R"("dtype":"F32","shape":[2])"), errc::corrupt_data, "tensor 't' has no data_offsets"},
      {one_tensor(R"("dtype":"F32","shape":[2],"data_offsets":[8])"), errc::corrupt_data, "data_offsets of tensor 't' has 1 value; it must be [begin, end]"},
      {one_tensor(R"("dtype":"F32","shape":[2],"data_offsets":[])"), errc::corrupt_data, "data_offsets of tensor 't' has 0 values; it must be [begin, end]"},
      {one_tensor(R"("dtype":"F32","shape":[2],"data_offsets":[0,8,8])"), errc::corrupt_data, "data_offsets of tensor 't' has more than two values"},
      {one_tensor(R"("dtype":"F32","shape":[2],"data_offsets":{"begin":0})"), errc::corrupt_data, "data_offsets of tensor 't' must be an array; found an object"},
      {one_tensor(R"("dtype":"F32","shape":[2],"data_offsets":[0,-8])"), errc::corrupt_data, "end of data_offsets of tensor 't' is -8; it must be a non-negative integer"},
      {one_tensor(R"("dtype":"F32","shape":[2],"data_offsets":[8,0])"), errc::corrupt_data, "data_offsets of tensor 't' are [8, 0]: the end is before the beginning"},
      {one_tensor(R"("dtype":"F32","shape":[2],"data_offsets":[8,16])"), errc::corrupt_data, "data_offsets of tensor 't' are [8, 16], past the end of the data section (8 bytes)"},
      {one_tensor(R"("dtype":"F32","shape":[2],"data_offsets":[18446744073709551608,18446744073709551615])"), errc::corrupt_data, "tensor 't' (F32, shape [2]) takes 8 bytes, but its data_offsets [18446744073709551608, 18446744073709551615] hold 7"},
      {one_tensor(R"("dtype":"F32","shape":[2],"data_offsets":[18446744073709551607,18446744073709551615])"), errc::corrupt_data, "data_offsets of tensor 't' are [18446744073709551607, 18446744073709551615], past the end of the data section (8 bytes)"},
      {one_tensor(ok_entry + R"(,"data_offsets":[0,8])"), errc::corrupt_data, "tensor 't' has two 'data_offsets' fields"},
      // unknown fields and wrong kinds
      {one_tensor(ok_entry + R"(,"endianness":"big")"), errc::corrupt_data, "tensor 't' has a field \"endianness\" that the format does not define"},
      {file_of(R"({"t":[1,2]})", 8), errc::corrupt_data, "tensor 't' must be an object; found an array"},
      {file_of(R"({"t":null})", 8), errc::corrupt_data, "tensor 't' must be an object; found null"},
      // coverage of the data section
      {file_of("{\"t\":{" + ok_entry + "}}", 12), errc::corrupt_data, "the data section has 4 bytes after the end of its last tensor, 't' (at 8); tensors must cover it exactly"},
      {file_of("{}", 4), errc::corrupt_data, "the data section holds 4 bytes but the header names no tensor"},
      {file_of(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12), errc::corrupt_data, "the data section has a gap: its first tensor, 't', begins at 4, not 0"},
      {file_of(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})", 12), errc::corrupt_data,
       "the data section has a gap of 4 bytes between tensor 'a' (ends at 4) and tensor 'b' (begins at 8); tensors must cover it without gaps"},
      {file_of(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8), errc::corrupt_data,
       "tensors 'a' and 'b' overlap ('b' begins at data offset 4, before 8, where 'a' ends)"},
      {file_of(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8), errc::corrupt_data,
       "tensors 'a' and 'b' overlap"},
      {file_of(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"e":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}})", 8), errc::corrupt_data,
       "tensors 'a' and 'e' overlap"},
      // names and metadata
      {file_of(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8), errc::corrupt_data,
       "tensor name 't' appears twice in the header"},
      {file_of(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"\u0074":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8), errc::corrupt_data,
       "tensor name 't' appears twice in the header"},
      {file_of(R"({"__metadata__":{"a":"1","a":"2"}})"), errc::corrupt_data, "metadata key 'a' appears twice in __metadata__"},
      {file_of(R"({"__metadata__":{},"__metadata__":{}})"), errc::corrupt_data, "the header has two \"__metadata__\" entries"},
      {file_of(R"({"__metadata__":{"n":1}})"), errc::corrupt_data, "metadata 'n' (values are strings) must be a string; found a number"},
      {file_of(R"({"__metadata__":{"n":{"deep":"x"}}})"), errc::corrupt_data, "metadata 'n' (values are strings) must be a string; found an object"},
      {file_of(R"({"__metadata__":["a"]})"), errc::corrupt_data, "__metadata__ must be an object; found an array"},
      {file_of(R"({"__metadata__":null})"), errc::corrupt_data, "__metadata__ must be an object; found null"},
  };
  for (const Case& c : cases) {
    auto f = SafetensorsFile::parse(c.bytes, "bad.safetensors");
    const std::string header(reinterpret_cast<const char*>(c.bytes.data()) + 8, c.bytes.size() - 8);
    REQUIRE_MESSAGE(!f.ok(), header);
    CHECK_MESSAGE(f.status().code() == c.code, header << " -> " << f.status().to_string());
    CHECK_MESSAGE(contains(f.status(), "bad.safetensors: " + c.expected), header << "\n  got:  " << f.status().to_string() << "\n  want: " << c.expected);
  }
}

TEST_CASE("safetensors: a header length that lies") {
  const auto good = SafetensorsBuilder().tensor("w", "F32", {2}, std::vector<float>{1.f, 2.f}).file();
  const auto with_length = [&](std::uint64_t n) {
    auto b = good;
    std::memcpy(b.data(), &n, 8);
    return SafetensorsFile::parse(b, "lie");
  };
  const std::uint64_t real = good.size() - 8 - 8;  // the header's true length
  REQUIRE(with_length(real).ok());
  CHECK(contains(error_of(with_length(0)), "lie: the header is empty; it must be a JSON object"));
  CHECK(contains(error_of(with_length(good.size() - 8 + 1)), fmt::format("header length {} is past the end of the file ({} bytes, so at most {})",
                                                                          good.size() - 7, good.size(), good.size() - 8)));
  CHECK(contains(error_of(with_length(~0ULL)), "header length 18446744073709551615 exceeds the limit of 100000000 bytes"));
  CHECK(contains(error_of(with_length(100'000'001)), "exceeds the limit of 100000000 bytes"));
  // Shorter: the JSON is cut, or padding becomes data the tensors do not cover. Longer: the
  // header swallows data bytes, so the tensor's data reaches past the (shorter) data section.
  CHECK(contains(error_of(with_length(real - 9)), "lie: data_offsets of tensor 'w' must be an array; found the end of the header"));
  CHECK(contains(error_of(with_length(real - 1)), "lie: the data section has 1 bytes after the end of its last tensor, 'w' (at 8)"));
  CHECK(contains(error_of(with_length(real + 1)), "lie: data_offsets of tensor 'w' are [0, 8], past the end of the data section (7 bytes)"));
  CHECK(contains(error_of(with_length(good.size() - 8)), "past the end of the data section (0 bytes)"));
  // A caller's lower limit; too short for a length at all.
  CHECK(contains(error_of(SafetensorsFile::parse(good, "lie", {.max_header_bytes = 16})), fmt::format("header length {} exceeds the limit of 16 bytes", real)));
  CHECK(contains(error_of(SafetensorsFile::parse(std::span(good).first(7), "lie")), "truncated: header length needs 8 bytes at offset 0 but 7 remain"));
  CHECK(contains(error_of(SafetensorsFile::parse(std::span<const std::byte>(), "lie")), "truncated: header length"));
}

TEST_CASE("safetensors: a file truncated at any byte is refused cleanly") {
  SafetensorsBuilder b;
  b.meta("format", "pt").meta("note", "\xe2\x82\xac \\ \"");
  b.tensor("embed", "BF16", {4, 3}, std::vector<bf16>(12, bf16(1.f)));
  b.tensor("norm", "F32", {3}, std::vector<float>{1, 2, 3});
  b.tensor("q", "I8", {5}, std::vector<std::int8_t>{1, 2, 3, 4, 5});
  const auto bytes = b.file();
  REQUIRE(SafetensorsFile::parse(bytes).ok());
  for (std::size_t n = 0; n < bytes.size(); ++n) {
    auto r = SafetensorsFile::parse(std::span(bytes).first(n), "cut");
    REQUIRE_MESSAGE(!r.ok(), "a file cut at byte " << n << " parsed");
  }
  // Cut in the data section: the last tensor's offsets point past its end.
  CHECK(contains(error_of(SafetensorsFile::parse(std::span(bytes).first(bytes.size() - 1), "cut")),
                 "data_offsets of tensor 'q' are [36, 41], past the end of the data section (40 bytes)"));
  // The length kept, the header cut (so its length lies): refused, never read past the end.
  const std::uint64_t header_len = bytes.size() - 8 - 41;
  for (std::size_t n = 8; n < 8 + header_len; ++n) {
    std::vector<std::byte> cut(bytes.begin(), bytes.begin() + static_cast<std::ptrdiff_t>(n));
    CHECK(contains(error_of(SafetensorsFile::parse(cut, "cut")), "is past the end of the file"));
  }
}

TEST_CASE("safetensors: random byte flips give an error or tensors inside the file") {
  SafetensorsBuilder b;
  b.meta("format", "pt");
  b.tensor("a", "F64", {2}, std::vector<double>{1, 2});
  b.tensor("b", "F32", {2, 2}, std::vector<float>{1, 2, 3, 4});
  b.tensor("c", "F16", {3}, std::vector<f16>(3, f16(2.f)));
  b.tensor("d", "F8_E4M3", {2}, std::vector<std::uint8_t>{0x38, 0x40});
  b.tensor("e", "U8", {0}, std::vector<std::uint8_t>{});
  const auto bytes = b.file();
  std::mt19937 rng(20240606);
  int parsed = 0;
  const int rounds = kSanitized ? 3000 : 20000;
  const char interesting[] = "{}[],:\"\\0123456789-.eEu \x00\x80\xff";
  for (int round = 0; round < rounds; ++round) {
    auto m = bytes;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      // Mostly the header (where the structure is), sometimes the length or the data.
      const std::size_t pos = rng() % 8 == 0 ? rng() % m.size() : 8 + rng() % (m.size() - 8 - b.data().size());
      m[pos] = static_cast<std::byte>(rng() % 2 ? rng() : static_cast<unsigned char>(interesting[rng() % (sizeof interesting - 1)]));
    }
    auto f = SafetensorsFile::parse(m, "flipped");
    if (!f.ok()) {
      REQUIRE(!f.status().message().empty());
      continue;
    }
    ++parsed;
    exercise(*f, m);
  }
  MESSAGE(parsed << " of " << rounds << " flipped files still parsed");
  CHECK(parsed > 0);  // flips in the data section leave a valid file
}

TEST_CASE("safetensors: JSON edge cases") {
  const std::string entry = R"({"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const auto parses = [](const std::string& header, std::size_t data = 8, bool pad = true) {
    return SafetensorsFile::parse(file_of(header, data, pad), "json");
  };

  SUBCASE("accepted") {
    auto ws = parses("{ \t\r\n\"t\" \n:\t{ \"dtype\" : \"F32\" ,\r\n\"shape\":[ 2 ] , \"data_offsets\" : [ 0 , 8 ] } \n}\n\t\r ");
    REQUIRE_MESSAGE(ws.ok(), ws.status().to_string());
    CHECK(ws->find_tensor("t") != nullptr);
    auto esc = parses(R"({"a\"b\\c\/d\b\f\n\r\t\u0041\u00e9\u20ac\ud83d\ude00\u0000z":)" + entry + "}");
    REQUIRE_MESSAGE(esc.ok(), esc.status().to_string());
    const std::string want = std::string("a\"b\\c/d\b\f\n\r\tA\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80") + std::string(1, '\0') + "z";
    CHECK(esc->tensors()[0].name == want);
    CHECK(esc->find_tensor(want) != nullptr);
    auto upper = parses(R"({"\u00E9\uD83D\uDE00":)" + entry + "}");
    REQUIRE(upper.ok());
    CHECK(upper->tensors()[0].name == "\xc3\xa9\xf0\x9f\x98\x80");
    auto utf8 = parses("{\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf\":" + entry + "}");
    REQUIRE_MESSAGE(utf8.ok(), utf8.status().to_string());
    CHECK(parses(R"({"t":{"data_offsets":[0,8],"shape":[2],"dtype":"F32"}})").ok());  // any member order
    CHECK(parses(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8, false).ok());  // no padding
    CHECK(parses(R"({"t":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}})", 0).ok());
    CHECK(parses("{}", 0).ok());
    CHECK(parses("{ }", 0).ok());
  }

  SUBCASE("refused") {
    struct Case {
      std::string header;
      std::string expected;
      bool pad = true;  // padding spaces would change what some cut headers end with
    };
    const Case cases[] = {
        {R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8],}})", "expected a member name (a string) in tensor 't'; found '}'"},
        {R"({"t":)" + entry + ",}", "expected a member name (a string) in the header; found '}'"},
        {R"({"t":{"dtype":"F32","shape":[2,],"data_offsets":[0,8]}})", "dimension 1 of tensor 't' must be a non-negative integer; found ']'"},
        {R"({"t":{"dtype":"F32" "shape":[2],"data_offsets":[0,8]}})", "expected ',' or '}' in tensor 't'; found a string"},
        {R"({"t":{"dtype":"F32","shape":[2 3],"data_offsets":[0,8]}})", "expected ',' or ']' in shape of tensor 't'; found a number"},
        {R"({"t" )" + entry + "}", "expected ':' after \"t\" in the header; found an object"},
        {R"({'t':)" + entry + "}", "expected a member name (a string) in the header; found '''"},
        {R"({t:)" + entry + "}", "expected a member name (a string) in the header; found 't'"},
        {R"({"t":{"dtype":"F32","shape":[02],"data_offsets":[0,8]}})", "dimension 0 of tensor 't' is 02: JSON numbers have no leading zeros"},
        {R"({"t":{"dtype":"F32","shape":[-0],"data_offsets":[0,8]}})", "dimension 0 of tensor 't' is -0; it must be a non-negative integer"},
        {R"({"t":{"dtype":"F32","shape":[+2],"data_offsets":[0,8]}})", "dimension 0 of tensor 't' must be a non-negative integer; found '+'"},
        {R"({"t":{"dtype":"F32","shape":[2.],"data_offsets":[0,8]}})", "dimension 0 of tensor 't': the '.' of a number is not followed by a digit"},
        {R"({"t":{"dtype":"F32","shape":[.5],"data_offsets":[0,8]}})", "found '.'"},
        {R"({"t":{"dtype":"F32","shape":[2e],"data_offsets":[0,8]}})", "the exponent of a number has no digits"},
        {R"({"t":{"dtype":"F32","shape":[-],"data_offsets":[0,8]}})", "'-' is not followed by a digit"},
        {R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551616]}})", "end of data_offsets of tensor 't' is 18446744073709551616, beyond 64 bits"},
        {R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,123456789012345678901234567890123456789012345678901234567890]}})", "is 1234567890123456789012345678901234567890..., beyond 64 bits"},
        {R"({"t":{"dtype":"F32","shape":[true],"data_offsets":[0,8]}})", "must be a non-negative integer; found true"},
        {R"({"t":{"dtype":"F32","shape":[NaN],"data_offsets":[0,8]}})", "found 'N'"},
        {"{\"t\x01\":" + entry + "}", "a member name in the header: control character 0x01 in a string (it must be escaped)"},
        {"{\"t\tx\":" + entry + "}", "control character 0x09 in a string"},
        {R"({"t\x":)" + entry + "}", "a member name in the header: '\\x' is not a JSON escape"},
        {R"({"t\'":)" + entry + "}", "'\\'' is not a JSON escape"},
        {R"({"t\u12":)" + entry + "}", "'\\u' must be followed by four hex digits"},
        {R"({"t\u12g4":)" + entry + "}", "'\\u' must be followed by four hex digits"},
        {R"({"t\ud800":)" + entry + "}", "\\ud800 is a high surrogate without a \\u low surrogate after it"},
        {R"({"t\ud800\n":)" + entry + "}", "\\ud800 is a high surrogate without a \\u low surrogate after it"},
        {R"({"t\ud800\u0041":)" + entry + "}", "\\u0041 follows the high surrogate \\ud800 but is not a low surrogate"},
        {R"({"t\udc00":)" + entry + "}", "\\udc00 is a low surrogate without a high surrogate before it"},
        {"{\"t\xc0\x80\":" + entry + "}", "byte 0xc0 in a string is not valid UTF-8"},                  // overlong NUL
        {"{\"t\xe0\x80\xaf\":" + entry + "}", "byte 0xe0 in a string is not valid UTF-8"},              // overlong '/'
        {"{\"t\xed\xa0\x80\":" + entry + "}", "byte 0xed in a string is not valid UTF-8"},              // a surrogate
        {"{\"t\xf4\x90\x80\x80\":" + entry + "}", "byte 0xf4 in a string is not valid UTF-8"},          // past U+10FFFF
        {"{\"t\xf5\x80\x80\x80\":" + entry + "}", "byte 0xf5 in a string is not valid UTF-8"},
        {"{\"t\x80\":" + entry + "}", "byte 0x80 in a string is not valid UTF-8"},                      // a lone continuation
        {"{\"t\xe2\x82\":" + entry + "}", "byte 0xe2 in a string is not valid UTF-8"},                  // cut short
        {R"({"t":{"dtype":"F32)", "dtype of tensor 't': the string that starts here is not terminated"},
        {R"({"t":{"dtype":"F32",)", "expected a member name (a string) in tensor 't'; found the end of the header"},
        {R"({"t":)" + entry, "expected ',' or '}' in the header; found the end of the header"},
        {"{", "expected a member name (a string) in the header; found the end of the header"},
        {R"({"t":{"dtype":"F32\)", "the string ends inside an escape", false},
        {R"({"t":)" + entry + "} {}", "the header goes on after its JSON object with an object; only whitespace (padding) may follow it"},
        {R"({"t":)" + entry + "}x", "the header goes on after its JSON object with 'x'"},
        {R"({"t":)" + entry + "}/* pad */", "the header goes on after its JSON object with '/'"},
        {R"({/* c */"t":)" + entry + "}", "expected a member name (a string) in the header; found '/'"},
        {R"({"t":)" + entry + "}" + std::string(3, '\0'), "the header goes on after its JSON object with byte 0x00", false},
        {R"({"t":)" + entry + "}\f", "the header goes on after its JSON object with byte 0x0c"},
        {" {}", "the header must begin with '{'; it begins with byte 0x20"},
        {"\xef\xbb\xbf{}", "the header must begin with '{'; it begins with byte 0xef"},
        {"[]", "the header must begin with '{'; it begins with byte 0x5b"},
    };
    for (const Case& c : cases) {
      auto f = parses(c.header, 8, c.pad);
      REQUIRE_MESSAGE(!f.ok(), c.header);
      CHECK_MESSAGE(f.status().code() == errc::corrupt_data, c.header << " -> " << f.status().to_string());
      CHECK(f.status().message().starts_with("json: "));
      CHECK_MESSAGE(contains(f.status(), c.expected), c.header << "\n  got:  " << f.status().to_string() << "\n  want: " << c.expected);
    }
    // Errors give the offset in the file.
    CHECK(contains(parses(R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})").status(), "(file offset 37)"));
  }
}

TEST_CASE("safetensors: dtype names") {
  for (int i = 0; i <= static_cast<int>(SafetensorsDtype::f6_e3m2); ++i) {
    const auto t = static_cast<SafetensorsDtype>(i);
    const auto info = safetensors_dtype_info(t);
    CHECK(info.bits > 0);
    CHECK(safetensors_dtype_from_name(info.name) == t);
  }
  CHECK(safetensors_dtype_info(SafetensorsDtype::bf16).name == "BF16");
  CHECK(safetensors_dtype_info(SafetensorsDtype::f8_e4m3).bits == 8);
  CHECK(safetensors_dtype_info(SafetensorsDtype::f6_e2m3).bits == 6);
  CHECK(!safetensors_dtype_from_name("F8_E4M3FNUZ").has_value());
  CHECK(!safetensors_dtype_from_name("").has_value());
}
