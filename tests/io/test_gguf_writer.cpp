// The GGUF writer: every value and tensor type round-trips through GgufFile, alignment, streamed
// tensors, and the errors (names, shapes, values, producers, I/O) that must leave no file behind.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include <unistd.h>

#include <quarry/io/gguf.hpp>
#include <quarry/io/gguf_writer.hpp>
#include <quarry/quant/gguf_blocks.hpp>
#include <quarry/quant/quantize.hpp>

#include "temp_dir.hpp"
#include "test_util.hpp"

using namespace quarry;
using namespace quarry::testing;
namespace fs = std::filesystem;

namespace {

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

GgufArray int_array(GgufValueType type, std::vector<std::int64_t> values) {
  GgufArray a;
  a.type = type;
  a.ints = std::move(values);
  return a;
}

GgufValue array_value(GgufArray a) { return GgufValue{GgufValueType::array, std::move(a)}; }

// A scalar value read back from a file: its stored type, and the alternative and content of its
// variant (GgufArray has no ==, so arrays are compared element by element elsewhere).
template <class T>
void check_scalar(const GgufFile& f, const std::string& key, GgufValueType type, const T& want) {
  CAPTURE(key);
  const GgufValue* v = f.find(key);
  REQUIRE(v != nullptr);
  CHECK(v->type == type);
  const T* got = std::get_if<T>(&v->data);
  REQUIRE(got != nullptr);
  CHECK(*got == want);
}

std::vector<std::byte> as_byte_vector(std::span<const std::byte> s) { return {s.begin(), s.end()}; }

}  // namespace

TEST_CASE("gguf_writer: every metadata value type round-trips, nested arrays included") {
  TempDir dir;
  GgufWriter w;
  REQUIRE(w.add_string("general.architecture", "test").ok());
  REQUIRE(w.add_u8("v.u8", 255).ok());
  REQUIRE(w.add_i8("v.i8", -128).ok());
  REQUIRE(w.add_u16("v.u16", 65535).ok());
  REQUIRE(w.add_i16("v.i16", -32768).ok());
  REQUIRE(w.add_u32("v.u32", 4000000000u).ok());
  REQUIRE(w.add_i32("v.i32", std::numeric_limits<std::int32_t>::min()).ok());
  REQUIRE(w.add_u64("v.u64", std::numeric_limits<std::uint64_t>::max()).ok());
  REQUIRE(w.add_i64("v.i64", std::numeric_limits<std::int64_t>::min()).ok());
  REQUIRE(w.add_f32("v.f32", 0.1f).ok());
  REQUIRE(w.add_f64("v.f64", 0.1).ok());
  REQUIRE(w.add_bool("v.true", true).ok());
  REQUIRE(w.add_bool("v.false", false).ok());
  REQUIRE(w.add_string("v.string", std::string("h\xc3\xa9llo\0x", 8)).ok());  // UTF-8 and an embedded NUL
  REQUIRE(w.add_string("v.empty", "").ok());
  // Arrays of every element type.
  REQUIRE(w.add_array("a.u8", int_array(GgufValueType::u8, {0, 1, 255})).ok());
  REQUIRE(w.add_array("a.i8", int_array(GgufValueType::i8, {-128, 0, 127})).ok());
  REQUIRE(w.add_array("a.u16", int_array(GgufValueType::u16, {0, 65535})).ok());
  REQUIRE(w.add_array("a.i16", int_array(GgufValueType::i16, {-32768, 32767})).ok());
  REQUIRE(w.add_array("a.u32", int_array(GgufValueType::u32, {0, 4294967295LL})).ok());
  REQUIRE(w.add_array("a.u64", int_array(GgufValueType::u64, {0, -1})).ok());  // -1: the bit pattern of 2^64 - 1
  REQUIRE(w.add_array("a.i64", int_array(GgufValueType::i64, {std::numeric_limits<std::int64_t>::min(), 5})).ok());
  REQUIRE(w.add_array("a.bool", int_array(GgufValueType::boolean, {1, 0, 1})).ok());
  REQUIRE(w.add_array("a.empty", int_array(GgufValueType::u32, {})).ok());
  const std::vector<std::int32_t> i32s = {-7, 0, 2147483647};
  REQUIRE(w.add_i32_array("a.i32", i32s).ok());
  const std::vector<float> f32s = {0.5f, -1.25f, 1e-30f};
  REQUIRE(w.add_f32_array("a.f32", f32s).ok());
  GgufArray f64s;
  f64s.type = GgufValueType::f64;
  f64s.floats = {0.1, -2.5e300};
  REQUIRE(w.add_array("a.f64", f64s).ok());
  REQUIRE(w.add_string_array("a.string", {"<s>", "", "\xe2\x96\x81the"}).ok());
  // Nested: [[1, 2], [], [3]] of u32, [["a"], ["b", "c"]] of strings, and three levels deep.
  GgufArray nested;
  nested.type = GgufValueType::array;
  nested.arrays = {array_value(int_array(GgufValueType::u32, {1, 2})), array_value(int_array(GgufValueType::u32, {})),
                   array_value(int_array(GgufValueType::u32, {3}))};
  REQUIRE(w.add_array("a.nested", nested).ok());
  GgufArray inner_a, inner_b, nested_strings;
  inner_a.type = inner_b.type = GgufValueType::string;
  inner_a.strings = {"a"};
  inner_b.strings = {"b", "c"};
  nested_strings.type = GgufValueType::array;
  nested_strings.arrays = {array_value(inner_a), array_value(inner_b)};
  REQUIRE(w.add_array("a.nested_strings", nested_strings).ok());
  GgufArray deep;
  deep.type = GgufValueType::array;
  deep.arrays = {array_value(nested), array_value(nested_strings)};
  REQUIRE(w.add_array("a.deep", deep).ok());
  CHECK(w.metadata_count() == 31);

  const std::string path = dir.file("values.gguf");
  REQUIRE(w.write(path).ok());
  CHECK(fs::file_size(path) == w.file_size());
  auto f = GgufFile::open(path);
  REQUIRE_MESSAGE(f.ok(), f.status().to_string());
  CHECK(f->version() == 3);
  CHECK(f->alignment() == 32);
  REQUIRE(f->metadata().size() == 31);
  CHECK(f->metadata()[0].first == "general.architecture");  // file order is add order
  CHECK(f->metadata()[30].first == "a.deep");

  check_scalar(*f, "v.u8", GgufValueType::u8, std::uint64_t{255});
  check_scalar(*f, "v.i8", GgufValueType::i8, std::int64_t{-128});
  check_scalar(*f, "v.u16", GgufValueType::u16, std::uint64_t{65535});
  check_scalar(*f, "v.i16", GgufValueType::i16, std::int64_t{-32768});
  check_scalar(*f, "v.u32", GgufValueType::u32, std::uint64_t{4000000000u});
  check_scalar(*f, "v.i32", GgufValueType::i32, std::int64_t{std::numeric_limits<std::int32_t>::min()});
  check_scalar(*f, "v.u64", GgufValueType::u64, std::numeric_limits<std::uint64_t>::max());
  check_scalar(*f, "v.i64", GgufValueType::i64, std::numeric_limits<std::int64_t>::min());
  check_scalar(*f, "v.f32", GgufValueType::f32, double{0.1f});
  check_scalar(*f, "v.f64", GgufValueType::f64, 0.1);
  check_scalar(*f, "v.true", GgufValueType::boolean, true);
  check_scalar(*f, "v.false", GgufValueType::boolean, false);
  check_scalar(*f, "v.string", GgufValueType::string, std::string("h\xc3\xa9llo\0x", 8));
  check_scalar(*f, "v.empty", GgufValueType::string, std::string());

  auto arr = [&](const std::string& key) -> const GgufArray& {
    const GgufValue* v = f->find(key);
    REQUIRE_MESSAGE(v != nullptr, key);
    REQUIRE(v->type == GgufValueType::array);
    REQUIRE(v->as_array() != nullptr);
    return *v->as_array();
  };
  auto check_ints = [&](const std::string& key, GgufValueType type, const std::vector<std::int64_t>& want) {
    CAPTURE(key);
    const GgufArray& a = arr(key);
    CHECK(a.type == type);
    CHECK(a.ints == want);
  };
  check_ints("a.u8", GgufValueType::u8, {0, 1, 255});
  check_ints("a.i8", GgufValueType::i8, {-128, 0, 127});
  check_ints("a.u16", GgufValueType::u16, {0, 65535});
  check_ints("a.i16", GgufValueType::i16, {-32768, 32767});
  check_ints("a.u32", GgufValueType::u32, {0, 4294967295LL});
  check_ints("a.u64", GgufValueType::u64, {0, -1});
  check_ints("a.i64", GgufValueType::i64, {std::numeric_limits<std::int64_t>::min(), 5});
  check_ints("a.bool", GgufValueType::boolean, {1, 0, 1});
  check_ints("a.empty", GgufValueType::u32, {});
  check_ints("a.i32", GgufValueType::i32, {-7, 0, 2147483647});
  CHECK(arr("a.f32").type == GgufValueType::f32);
  CHECK(arr("a.f32").floats == std::vector<double>{0.5, -1.25, double{1e-30f}});
  CHECK(arr("a.f64").type == GgufValueType::f64);
  CHECK(arr("a.f64").floats == std::vector<double>{0.1, -2.5e300});
  CHECK(arr("a.string").strings == std::vector<std::string>{"<s>", "", "\xe2\x96\x81the"});

  const GgufArray& n = arr("a.nested");
  REQUIRE(n.type == GgufValueType::array);
  REQUIRE(n.arrays.size() == 3);
  CHECK(n.arrays[0].as_array()->ints == std::vector<std::int64_t>{1, 2});
  CHECK(n.arrays[1].as_array()->size() == 0);
  CHECK(n.arrays[1].as_array()->type == GgufValueType::u32);
  CHECK(n.arrays[2].as_array()->ints == std::vector<std::int64_t>{3});
  const GgufArray& ns = arr("a.nested_strings");
  REQUIRE(ns.arrays.size() == 2);
  CHECK(ns.arrays[1].as_array()->strings == std::vector<std::string>{"b", "c"});
  const GgufArray& d = arr("a.deep");
  REQUIRE(d.arrays.size() == 2);
  REQUIRE(d.arrays[0].as_array()->arrays.size() == 3);
  CHECK(d.arrays[0].as_array()->arrays[2].as_array()->ints == std::vector<std::int64_t>{3});
  CHECK(d.arrays[1].as_array()->arrays[0].as_array()->strings == std::vector<std::string>{"a"});

  // Copying a read file's metadata through add() reproduces it.
  GgufWriter copy;
  for (const auto& entry : f->metadata()) REQUIRE_MESSAGE(copy.add(entry.first, entry.second).ok(), entry.first);
  const std::string copy_path = dir.file("copy.gguf");
  REQUIRE(copy.write(copy_path).ok());
  CHECK(read_all(copy_path) == read_all(path));
}

TEST_CASE("gguf_writer: f32, f16, bf16, Q8_0 and Q4_0 tensors round-trip, ranks 1 to 4") {
  TempDir dir;
  GgufWriter w;
  REQUIRE(w.add_string("general.architecture", "test").ok());
  const Tensor<float> m = gaussian(3, 64, 1);                      // [3, 64]
  const Tensor<float> v_src = gaussian(1, 5, 2), r4_src = gaussian(2 * 3 * 4, 5, 3);
  const Tensor<float> v = v_src.view().reshape({5}).contiguous();  // rank 1
  const Tensor<float> r4 = r4_src.view().reshape({2, 3, 4, 5}).contiguous();
  Tensor<f16> h = Tensor<f16>::uninitialized({4, 6});
  Tensor<bf16> b = Tensor<bf16>::uninitialized({2, 3, 7});
  for (std::int64_t i = 0; i < 24; ++i) h.data()[i] = f16(0.25f * static_cast<float>(i) - 3.f);
  for (std::int64_t i = 0; i < 42; ++i) b.data()[i] = bf16(-1.5f * static_cast<float>(i) + 0.125f);
  const Tensor<float> qsrc = gaussian(5, 96, 4, 0.02f);
  const auto q8 = quantize_gguf_q8_0(qsrc.view());
  const auto q4 = quantize_gguf_q4_0(qsrc.view());
  REQUIRE(q8.ok());
  REQUIRE(q4.ok());

  REQUIRE(w.add_tensor("m", m.view()).ok());
  REQUIRE(w.add_tensor("v", v.view()).ok());
  REQUIRE(w.add_tensor("r4", r4.view()).ok());
  REQUIRE(w.add_tensor("h", h.view()).ok());
  REQUIRE(w.add_tensor("b", b.view()).ok());
  REQUIRE(w.add_tensor("q8", Shape{5, 96}, std::span<const BlockQ8_0>(*q8)).ok());
  REQUIRE(w.add_tensor("q4", Shape{5, 96}, std::span<const BlockQ4_0>(*q4)).ok());
  REQUIRE(w.add_tensor("q8_3d", Shape{1, 5, 96}, std::span<const BlockQ8_0>(*q8)).ok());
  // A transposed (strided) view is written as its values in row-major order.
  REQUIRE(w.add_tensor("mt", m.view().t()).ok());
  CHECK(w.tensor_count() == 9);

  const std::string path = dir.file("tensors.gguf");
  REQUIRE(w.write(path).ok());
  CHECK(fs::file_size(path) == w.file_size());
  auto f = GgufFile::open(path);
  REQUIRE_MESSAGE(f.ok(), f.status().to_string());
  REQUIRE(f->tensors().size() == 9);
  CHECK(f->tensors()[0].name == "m");

  auto same = [](TensorView<const float> a, TensorView<const float> b) {
    REQUIRE(a.shape() == b.shape());
    const Tensor<float> ac = a.contiguous(), bc = b.contiguous();
    CHECK(std::memcmp(ac.data(), bc.data(), static_cast<std::size_t>(ac.numel()) * 4) == 0);
  };
  same(f->tensor_f32("m").value(), m.view());
  same(f->tensor_f32("v").value(), v.view());
  same(f->tensor_f32("r4").value(), r4.view());
  same(f->tensor_f32("mt").value(), m.view().t());
  CHECK(f->find_tensor("r4")->shape == Shape{2, 3, 4, 5});
  const auto hv = f->tensor_f16("h").value();
  REQUIRE(hv.shape() == Shape{4, 6});
  for (std::int64_t i = 0; i < 24; ++i) CHECK(hv.data()[i].bits == h.data()[i].bits);
  const auto bv = f->tensor_bf16("b").value();
  REQUIRE(bv.shape() == Shape{2, 3, 7});
  for (std::int64_t i = 0; i < 42; ++i) CHECK(bv.data()[i].bits == b.data()[i].bits);

  const GgufTensorInfo* t8 = f->find_tensor("q8");
  const GgufTensorInfo* t4 = f->find_tensor("q4");
  REQUIRE(t8 != nullptr);
  REQUIRE(t4 != nullptr);
  CHECK(t8->type == GgmlType::q8_0);
  CHECK(t4->type == GgmlType::q4_0);
  CHECK(t8->shape == Shape{5, 96});
  CHECK(as_byte_vector(f->tensor_bytes(*t8)) == as_byte_vector(std::as_bytes(std::span<const BlockQ8_0>(*q8))));
  CHECK(as_byte_vector(f->tensor_bytes(*t4)) == as_byte_vector(std::as_bytes(std::span<const BlockQ4_0>(*q4))));
  CHECK(f->find_tensor("q8_3d")->shape == Shape{1, 5, 96});
  // Through the importers: what the blocks say, exactly.
  const auto d8 = f->tensor_dequantized_f32("q8").value();
  const auto d4 = f->tensor_dequantized_f32("q4").value();
  const auto want8 = dequantize(import_gguf_q8_0(std::span<const BlockQ8_0>(*q8), 5, 96).value());
  const auto want4 = dequantize(import_gguf_q4_0(std::span<const BlockQ4_0>(*q4), 5, 96).value());
  same(d8.view(), want8.view());
  same(d4.view(), want4.view());
  CHECK(f->tensor_quantized("q4").ok());
}

TEST_CASE("gguf_writer: alignment 32 and 64 (and 1) place every tensor on a multiple") {
  for (const std::uint32_t alignment : {32u, 64u, 1u, 4096u}) {
    CAPTURE(alignment);
    TempDir dir;
    GgufWriter w;
    if (alignment != 32) REQUIRE(w.set_alignment(alignment).ok());
    REQUIRE(w.add_string("general.name", "aligned").ok());
    // Sizes that leave every tensor's end off any alignment: 3, 5, 34, 18 bytes.
    const std::vector<std::uint8_t> odd = {1, 2, 3};
    REQUIRE(w.add_tensor("a", GgmlType::i8, Shape{3}, std::as_bytes(std::span<const std::uint8_t>(odd))).ok());
    const Tensor<float> x = gaussian(1, 5, 9);
    REQUIRE(w.add_tensor("x", x.view()).ok());
    const Tensor<float> y = gaussian(2, 32, 10);
    const auto q8 = quantize_gguf_q8_0(y.view()).value();
    const auto q4 = quantize_gguf_q4_0(y.view()).value();
    REQUIRE(w.add_tensor("q8", Shape{2, 32}, std::span<const BlockQ8_0>(q8)).ok());
    REQUIRE(w.add_tensor("q4", Shape{2, 32}, std::span<const BlockQ4_0>(q4)).ok());
    const std::string path = dir.file("a.gguf");
    REQUIRE(w.write(path).ok());
    CHECK(fs::file_size(path) == w.file_size());
    auto f = GgufFile::open(path);
    REQUIRE_MESSAGE(f.ok(), f.status().to_string());
    CHECK(f->alignment() == alignment);
    CHECK(f->data_offset() % alignment == 0);
    const GgufValue* a = f->find("general.alignment");
    if (alignment == 32) {
      CHECK(a == nullptr);
    } else {
      REQUIRE(a != nullptr);
      CHECK(a->type == GgufValueType::u32);
      CHECK(a->as_int() == std::int64_t{alignment});
    }
    for (const GgufTensorInfo& t : f->tensors()) {
      CAPTURE(t.name);
      CHECK(t.offset % alignment == 0);
    }
    // Tensors follow each other with the least padding the alignment needs.
    const auto& ts = f->tensors();
    for (std::size_t i = 1; i < ts.size(); ++i) {
      const std::uint64_t end = ts[i - 1].offset + ts[i - 1].nbytes;
      CHECK(ts[i].offset == (end + alignment - 1) / alignment * alignment);
    }
    CHECK(f->tensor_bytes(ts[0])[2] == std::byte{3});
    CHECK(std::memcmp(f->tensor_bytes(ts[2]).data(), q8.data(), q8.size() * sizeof(BlockQ8_0)) == 0);
    CHECK(std::memcmp(f->tensor_bytes(ts[3]).data(), q4.data(), q4.size() * sizeof(BlockQ4_0)) == 0);
  }
  GgufWriter w;
  for (const std::uint32_t bad : {0u, 3u, 48u, 1u << 31}) {
    const status st = w.set_alignment(bad);
    CHECK(st.code() == errc::invalid_argument);
    CHECK(contains(st, std::to_string(bad)));
  }
  CHECK(w.alignment() == 32);
  CHECK(w.add_u32("general.alignment", 64).code() == errc::invalid_argument);
}

TEST_CASE("gguf_writer: a streamed tensor is produced while the file is written, in pieces of any size") {
  TempDir dir;
  GgufWriter w;
  REQUIRE(w.set_alignment(64).ok());
  const std::int64_t rows = 37, cols = 96;
  int calls = 0;
  // f16 rows made on demand, handed over one row at a time.
  REQUIRE(w.add_tensor("stream.f16", GgmlType::f16, Shape{rows, cols},
                       [&](GgufTensorSink& sink) -> status {
                         ++calls;
                         CHECK(sink.tensor_name() == "stream.f16");
                         CHECK(sink.remaining() == static_cast<std::uint64_t>(rows * cols * 2));
                         std::vector<f16> row(static_cast<std::size_t>(cols));
                         for (std::int64_t r = 0; r < rows; ++r) {
                           for (std::int64_t c = 0; c < cols; ++c) row[static_cast<std::size_t>(c)] = f16(static_cast<float>(r) - 0.5f * static_cast<float>(c));
                           QUARRY_RETURN_IF_ERROR(sink.write(std::span<const f16>(row)));
                         }
                         return {};
                       })
              .ok());
  // Q4_0 blocks of a matrix quantized on the fly, handed over in uneven byte pieces.
  const Tensor<float> src = gaussian(rows, cols, 5, 0.02f);
  const auto blocks = quantize_gguf_q4_0(src.view()).value();
  REQUIRE(w.add_tensor("stream.q4", GgmlType::q4_0, Shape{rows, cols},
                       [&](GgufTensorSink& sink) -> status {
                         const auto bytes = std::as_bytes(std::span<const BlockQ4_0>(blocks));
                         std::size_t at = 0, piece = 1;
                         while (at < bytes.size()) {
                           const std::size_t n = std::min(piece, bytes.size() - at);
                           QUARRY_RETURN_IF_ERROR(sink.write(bytes.subspan(at, n)));
                           at += n;
                           piece = piece * 3 + 1;
                         }
                         return {};
                       })
              .ok());
  // A producer bigger than the writer's buffer (4 MiB): passes straight through.
  const std::int64_t big = (std::int64_t{5} << 20) / 4;
  REQUIRE(w.add_tensor("stream.big", GgmlType::f32, Shape{big},
                       [&](GgufTensorSink& sink) -> status {
                         std::vector<float> all(static_cast<std::size_t>(big));
                         for (std::int64_t i = 0; i < big; ++i) all[static_cast<std::size_t>(i)] = static_cast<float>(i);
                         return sink.write(std::span<const float>(all));
                       })
              .ok());
  const std::string path = dir.file("stream.gguf");
  REQUIRE(w.write(path).ok());
  CHECK(calls == 1);
  CHECK(fs::file_size(path) == w.file_size());
  auto f = GgufFile::open(path);
  REQUIRE_MESSAGE(f.ok(), f.status().to_string());
  const auto h = f->tensor_f16("stream.f16").value();
  REQUIRE(h.shape() == Shape{rows, cols});
  CHECK(static_cast<float>(h(36, 95)) == 36.f - 47.5f);
  CHECK(static_cast<float>(h(0, 1)) == -0.5f);
  CHECK(std::memcmp(f->tensor_bytes(*f->find_tensor("stream.q4")).data(), blocks.data(), blocks.size() * sizeof(BlockQ4_0)) == 0);
  const auto g = f->tensor_f32("stream.big").value();
  CHECK(g.data()[big - 1] == static_cast<float>(big - 1));
  // Writing again runs the producers again and gives the same bytes.
  const std::string again = dir.file("again.gguf");
  REQUIRE(w.write(again).ok());
  CHECK(calls == 2);
  CHECK(read_all(again) == read_all(path));
}

TEST_CASE("gguf_writer: duplicate names, bad shapes, bad values and bad byte counts are errors naming them") {
  GgufWriter w;
  REQUIRE(w.add_u32("k", 1).ok());
  status st = w.add_string("k", "again");
  CHECK(st.code() == errc::invalid_argument);
  CHECK(contains(st, "'k' was already added"));
  CHECK(w.add_u32("", 1).code() == errc::invalid_argument);
  CHECK(w.add_u32(std::string(70000, 'k'), 1).code() == errc::invalid_argument);
  CHECK(w.metadata_count() == 1);

  // Values whose variant disagrees with their type, or out of range.
  st = w.add("bad.variant", GgufValue{GgufValueType::u32, std::int64_t{3}});
  CHECK(contains(st, "'bad.variant' is typed u32 but holds a int64_t"));
  st = w.add("bad.range", GgufValue{GgufValueType::u8, std::uint64_t{256}});
  CHECK(contains(st, "256 is out of range for u8"));
  st = w.add("bad.irange", GgufValue{GgufValueType::i16, std::int64_t{40000}});
  CHECK(contains(st, "40000 is out of range for i16"));
  CHECK(w.add("bad.float", GgufValue{GgufValueType::f32, std::uint64_t{1}}).code() == errc::invalid_argument);
  CHECK(w.add("bad.type", GgufValue{static_cast<GgufValueType>(13), std::uint64_t{1}}).code() == errc::invalid_argument);
  st = w.add_array("bad.bool", int_array(GgufValueType::boolean, {0, 2}));
  CHECK(contains(st, "element 1 (2) is out of range for bool"));
  GgufArray misplaced;
  misplaced.type = GgufValueType::f32;
  misplaced.ints = {1};
  st = w.add_array("bad.misplaced", misplaced);
  CHECK(contains(st, "only the floats belong"));
  GgufArray not_nested;
  not_nested.type = GgufValueType::array;
  not_nested.arrays = {GgufValue{GgufValueType::u8, std::uint64_t{1}}};
  CHECK(contains(w.add_array("bad.nested", not_nested), "element 0 of an array of arrays is a u8"));
  // Five levels of arrays: deeper than GgufFile reads.
  GgufArray deep = int_array(GgufValueType::u8, {1});
  for (int i = 0; i < 4; ++i) {
    GgufArray up;
    up.type = GgufValueType::array;
    up.arrays = {array_value(deep)};
    deep = up;
  }
  CHECK(contains(w.add_array("bad.deep", deep), "nest deeper than 4"));
  CHECK(w.metadata_count() == 1);

  // Tensors.
  const std::vector<float> four = {1, 2, 3, 4};
  const auto bytes4 = std::as_bytes(std::span<const float>(four));
  REQUIRE(w.add_tensor("t", GgmlType::f32, Shape{2, 2}, bytes4).ok());
  st = w.add_tensor("t", GgmlType::f32, Shape{4}, bytes4);
  CHECK(st.code() == errc::invalid_argument);
  CHECK(contains(st, "tensor 't' was already added"));
  CHECK(w.add_tensor("", GgmlType::f32, Shape{4}, bytes4).code() == errc::invalid_argument);
  CHECK(contains(w.add_tensor(std::string(64, 'n'), GgmlType::f32, Shape{4}, bytes4), "ggml allows at most 63"));
  CHECK(w.add_tensor(std::string(63, 'n'), GgmlType::f32, Shape{4}, bytes4).ok());
  st = w.add_tensor("rank0", GgmlType::f32, Shape{}, bytes4);
  CHECK(st.code() == errc::shape_mismatch);
  CHECK(contains(st, "1 to 4 dimensions"));
  CHECK(w.add_tensor("rank5", GgmlType::f32, Shape{1, 1, 1, 1, 4}, bytes4).code() == errc::shape_mismatch);
  CHECK(contains(w.add_tensor("neg", GgmlType::f32, Shape{-1, 4}, bytes4), "negative extent"));
  st = w.add_tensor("count", GgmlType::f32, Shape{5}, bytes4);
  CHECK(st.code() == errc::shape_mismatch);
  CHECK(contains(st, "tensor 'count' (f32 of shape [5]) needs 20 bytes; 16 were given"));
  st = w.add_tensor("blocks", GgmlType::q8_0, Shape{2, 48}, GgufTensorProducer([](GgufTensorSink&) { return status{}; }));
  CHECK(contains(st, "innermost extent 48 is not a multiple of the block size 32"));
  CHECK(contains(w.add_tensor("huge", GgmlType::f32, Shape{std::int64_t{1} << 40, std::int64_t{1} << 40}, GgufTensorProducer([](GgufTensorSink&) { return status{}; })),
                 "overflows"));
  CHECK(contains(w.add_tensor("type", static_cast<GgmlType>(4), Shape{4}, bytes4), "ggml type 4"));
  CHECK(contains(w.add_tensor("null", GgmlType::f32, Shape{4}, GgufTensorProducer{}), "producer is empty"));
  const std::vector<BlockQ8_0> one_block(1);
  CHECK(w.add_tensor("q8", Shape{2, 32}, std::span<const BlockQ8_0>(one_block)).code() == errc::shape_mismatch);
  CHECK(w.tensor_count() == 2);
  CHECK(GgufWriter::bytes_of(GgmlType::q4_0, Shape{3, 64}).value() == 3 * 2 * 18);
  CHECK(GgufWriter::bytes_of(GgmlType::bf16, Shape{0, 8}).value() == 0);
}

TEST_CASE("gguf_writer: a failed write leaves no file, and an existing file intact") {
  TempDir dir;
  const std::string path = dir.file("model.gguf");
  GgufWriter good;
  REQUIRE(good.add_string("general.name", "good").ok());
  const Tensor<float> x = gaussian(2, 8, 11);
  REQUIRE(good.add_tensor("x", x.view()).ok());

  auto failing = [&](GgufTensorProducer producer) {
    GgufWriter w;
    REQUIRE(w.add_string("general.name", "bad").ok());
    REQUIRE(w.add_tensor("x", x.view()).ok());
    REQUIRE(w.add_tensor("y", GgmlType::f32, Shape{4, 8}, std::move(producer)).ok());
    return w.write(path);
  };
  const GgufTensorProducer refuses = [](GgufTensorSink& sink) -> status {
    const std::vector<float> half(16, 1.f);
    QUARRY_RETURN_IF_ERROR(sink.write(std::span<const float>(half)));
    return {errc::io_error, "the source ran dry"};
  };
  const GgufTensorProducer short_count = [](GgufTensorSink& sink) -> status {
    const std::vector<float> some(31, 1.f);
    return sink.write(std::span<const float>(some));
  };
  const GgufTensorProducer too_many = [](GgufTensorSink& sink) -> status {
    const std::vector<float> more(33, 1.f);
    return sink.write(std::span<const float>(more));
  };
  const GgufTensorProducer ignores_errors = [](GgufTensorSink& sink) -> status {
    const std::vector<float> more(33, 1.f);
    (void)sink.write(std::span<const float>(more));  // refused: more than the tensor holds
    return {};
  };

  // No file before: none after.
  status st = failing(refuses);
  CHECK(st.code() == errc::io_error);
  CHECK(contains(st, "tensor 'y': the source ran dry"));
  CHECK(dir.names().empty());
  st = failing(short_count);
  CHECK(contains(st, "tensor 'y': the producer wrote 124 of its 128 bytes"));
  CHECK(dir.names().empty());
  st = failing(too_many);
  CHECK(contains(st, "tensor 'y': the producer wrote 4 bytes more than the tensor's 128"));
  CHECK(dir.names().empty());
  CHECK(contains(failing(ignores_errors), "wrote 0 of its 128 bytes"));
  CHECK(dir.names().empty());

  // A file before: the same file after, and nothing beside it.
  REQUIRE(good.write(path).ok());
  const std::string before = read_all(path);
  for (const auto& producer : {refuses, short_count, too_many, ignores_errors}) {
    CHECK_FALSE(failing(producer).ok());
    CHECK(read_all(path) == before);
    CHECK(dir.names() == std::set<std::string>{"model.gguf"});
  }
  auto f = GgufFile::open(path);
  REQUIRE(f.ok());
  CHECK(f->get_string("general.name").value() == "good");

  // A folder that does not exist: not_found, naming it; nothing is created.
  st = good.write(dir.file("missing/model.gguf"));
  CHECK(st.code() == errc::not_found);
  CHECK(contains(st, "missing"));
  CHECK(dir.names() == std::set<std::string>{"model.gguf"});
}

TEST_CASE("gguf_writer: an empty writer gives a valid file of no tensors") {
  TempDir dir;
  const GgufWriter w;
  const std::string path = dir.file("empty.gguf");
  REQUIRE(w.write(path).ok());
  CHECK(fs::file_size(path) == 24);  // magic, version, two counts
  CHECK(w.file_size() == 24);
  auto f = GgufFile::open(path);
  REQUIRE_MESSAGE(f.ok(), f.status().to_string());
  CHECK(f->tensors().empty());
  CHECK(f->metadata().empty());
}
