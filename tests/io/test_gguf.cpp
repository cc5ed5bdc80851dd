// The GGUF reader on the real stories260K model and on hostile files made here.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <quarry/io/gguf.hpp>
#include <quarry/quant/gguf_blocks.hpp>
#include <quarry/quant/quantize.hpp>

#include "shared_data.hpp"

#include "test_util.hpp"

using namespace quarry;
using namespace quarry::testing;

namespace {

// Writes GGUF files field by field, so tests can make valid ones and break them on purpose.
class GgufWriter {
 public:
  std::vector<std::byte> bytes;

  template <class T>
  GgufWriter& put(T v) {
    const auto* p = reinterpret_cast<const std::byte*>(&v);
    bytes.insert(bytes.end(), p, p + sizeof(T));
    return *this;
  }
  GgufWriter& str(const std::string& s) {
    put<std::uint64_t>(s.size());
    for (char c : s) bytes.push_back(static_cast<std::byte>(c));
    return *this;
  }
  GgufWriter& header(std::uint64_t n_tensors, std::uint64_t n_kv, std::uint32_t version = 3) {
    return put<std::uint32_t>(0x46554747).put<std::uint32_t>(version).put(n_tensors).put(n_kv);
  }
  GgufWriter& kv_u32(const std::string& key, std::uint32_t v) { return str(key).put<std::uint32_t>(4).put(v); }
  GgufWriter& kv_str(const std::string& key, const std::string& v) { return str(key).put<std::uint32_t>(8).str(v); }
  GgufWriter& tensor_info(const std::string& name, std::vector<std::uint64_t> ne, std::uint32_t type, std::uint64_t offset) {
    str(name).put<std::uint32_t>(static_cast<std::uint32_t>(ne.size()));
    for (auto e : ne) put(e);
    return put(type).put(offset);
  }
  GgufWriter& align(std::size_t a = 32) {
    while (bytes.size() % a) bytes.push_back(std::byte{0});
    return *this;
  }
  GgufWriter& floats(std::size_t n, float start) {
    for (std::size_t i = 0; i < n; ++i) put(start + static_cast<float>(i));
    return *this;
  }
  template <class T>
  GgufWriter& raw(const std::vector<T>& v) {
    const auto* p = reinterpret_cast<const std::byte*>(v.data());
    bytes.insert(bytes.end(), p, p + v.size() * sizeof(T));
    return *this;
  }
};

// A small valid file: metadata of every kind (with a nested array) and two f32 tensors.
std::vector<std::byte> sample_file() {
  GgufWriter w;
  w.header(2, 5);
  w.kv_str("general.architecture", "test");
  w.kv_u32("test.count", 7);
  w.str("test.scores").put<std::uint32_t>(9).put<std::uint32_t>(6).put<std::uint64_t>(3).put(0.5f).put(1.5f).put(-2.f);
  w.str("test.nested").put<std::uint32_t>(9).put<std::uint32_t>(9).put<std::uint64_t>(2);
  w.put<std::uint32_t>(8).put<std::uint64_t>(2).str("a").str("bc");
  w.put<std::uint32_t>(7).put<std::uint64_t>(1).put<std::uint8_t>(1);
  w.str("test.flag").put<std::uint32_t>(7).put<std::uint8_t>(1);
  w.tensor_info("w", {4, 3}, 0, 0);   // ne = [4, 3]: a [3, 4] matrix
  w.tensor_info("b", {3}, 0, 64);
  w.align();
  w.floats(12, 0.f).align().floats(3, 100.f);
  return w.bytes;
}

std::string error_of(const result<GgufFile>& r) { return r.ok() ? "" : r.status().to_string(); }

}  // namespace

TEST_CASE("GGUF: the real stories260K model") {
  QUARRY_REQUIRE_SHARED_DATA(path, "models/stories260K/stories260K.gguf");
  auto f = GgufFile::open(path);
  REQUIRE_MESSAGE(f.ok(), f.status().to_string());
  CHECK(f->version() == 3);
  CHECK(f->alignment() == 32);
  CHECK(f->tensors().size() == 48);
  CHECK(f->metadata().size() == 19);
  CHECK(f->get_string("general.architecture").value() == "llama");
  CHECK(f->get_int("llama.embedding_length").value() == 64);
  CHECK(f->get_int("llama.attention.head_count_kv").value() == 4);
  CHECK(f->get_int("tokenizer.ggml.bos_token_id").value() == 1);
  CHECK(f->get_float("llama.attention.layer_norm_rms_epsilon").value() == doctest::Approx(1e-5));
  const GgufArray* tokens = f->find("tokenizer.ggml.tokens")->as_array();
  REQUIRE(tokens != nullptr);
  CHECK(tokens->type == GgufValueType::string);
  CHECK(tokens->strings.size() == 512);
  CHECK(tokens->strings[1] == "<s>");
  CHECK(f->find("tokenizer.ggml.scores")->as_array()->floats.size() == 512);

  auto down = f->tensor_f32("blk.0.ffn_down.weight");
  REQUIRE(down.ok());
  CHECK(down->shape() == Shape{64, 172});  // ne = [172, 64]: 64 outputs, K = 172
  auto emb = f->tensor_f32("token_embd.weight");
  REQUIRE(emb.ok());
  CHECK(emb->shape() == Shape{512, 64});
  double sum_sq = 0;
  for (std::int64_t r = 0; r < 512; ++r)
    for (std::int64_t c = 0; c < 64; ++c) {
      REQUIRE(std::isfinite((*emb)(r, c)));
      sum_sq += double((*emb)(r, c)) * (*emb)(r, c);
    }
  CHECK(sum_sq > 0);
  CHECK(f->tensor_f32("nope").status().code() == errc::not_found);
  for (const auto& t : f->tensors()) CHECK_MESSAGE(t.type == GgmlType::f32, t.name);  // nothing quantized in this file
  auto emb_f32 = f->tensor_dequantized_f32("token_embd.weight");
  REQUIRE(emb_f32.ok());
  CHECK(std::memcmp(emb_f32->data(), &(*emb)(0, 0), emb_f32->nbytes()) == 0);
  CHECK(contains(f->tensor_quantized("token_embd.weight").status(), "tensor 'token_embd.weight' is f32, not q8_0 or q4_0"));
  CHECK(contains(f->tensor_f16("token_embd.weight").status().message(), "tensor 'token_embd.weight' is f32, not f16"));
  CHECK(f->get_string("llama.block_count").status().code() == errc::invalid_argument);
}

TEST_CASE("GGUF: the real file truncated anywhere in its header and tensor infos is refused cleanly") {
  QUARRY_REQUIRE_SHARED_DATA(path, "models/stories260K/stories260K.gguf");
  auto mapped = MappedFile::open(path);
  REQUIRE(mapped.ok());
  const auto all = mapped->bytes();
  auto full = GgufFile::parse(all);
  REQUIRE(full.ok());
  const std::size_t header_end = static_cast<std::size_t>(full->data_offset());
  for (std::size_t n = 0; n < header_end; n += (n < 4096 ? 1 : 7)) {
    auto r = GgufFile::parse(all.first(n), "truncated");
    REQUIRE_MESSAGE(!r.ok(), "a file cut at byte " << n << " parsed");
  }
  // Cut inside the tensor data: the tensors whose data is cut off are named.
  auto cut = GgufFile::parse(all.first(all.size() - 1), "cut");
  CHECK(contains(error_of(cut), "tensor 'blk.4.ffn_norm.weight' (256 bytes at data offset 1170944) extends past the end"));
}

TEST_CASE("GGUF: a small file with every kind of metadata") {
  const auto bytes = sample_file();
  auto f = GgufFile::parse(bytes, "sample");
  REQUIRE_MESSAGE(f.ok(), f.status().to_string());
  CHECK(f->get_int("test.count").value() == 7);
  CHECK(f->find("test.flag")->data.index() == 3);
  const GgufArray* scores = f->find("test.scores")->as_array();
  REQUIRE(scores);
  CHECK(scores->floats == std::vector<double>{0.5, 1.5, -2.0});
  const GgufArray* nested = f->find("test.nested")->as_array();
  REQUIRE(nested);
  REQUIRE(nested->arrays.size() == 2);
  CHECK(nested->arrays[0].as_array()->strings == std::vector<std::string>{"a", "bc"});
  CHECK(nested->arrays[1].as_array()->ints == std::vector<std::int64_t>{1});
  auto w = f->tensor_f32("w");
  REQUIRE(w.ok());
  CHECK(w->shape() == Shape{3, 4});
  CHECK((*w)(2, 3) == 11.f);
  CHECK((*f->tensor_f32("b"))(2) == 102.f);
  CHECK(f->version() == 3);

  // GGUF v2 has v3's layout (v3 only allowed big-endian files): the same bytes as version 2.
  auto v2_bytes = bytes;
  const std::uint32_t two = 2;
  std::memcpy(v2_bytes.data() + 4, &two, sizeof two);
  auto v2 = GgufFile::parse(v2_bytes, "sample v2");
  REQUIRE_MESSAGE(v2.ok(), v2.status().to_string());
  CHECK(v2->version() == 2);
  CHECK(v2->get_int("test.count").value() == 7);
  CHECK(v2->find("test.nested")->as_array()->arrays.size() == 2);
  CHECK((*v2->tensor_f32("w"))(2, 3) == 11.f);

  // Every truncation fails; every single-byte corruption either fails cleanly or parses to a
  // file whose tensors all lie inside it (run under ASan in CI).
  for (std::size_t n = 0; n < bytes.size(); ++n) REQUIRE_FALSE(GgufFile::parse(std::span(bytes).first(n), "cut").ok());
  std::mt19937 rng(11);
  for (std::size_t i = 0; i < bytes.size(); ++i)
    for (int flip = 0; flip < 3; ++flip) {
      auto bad = bytes;
      bad[i] ^= static_cast<std::byte>(1u << (rng() % 8));
      if (flip == 2) bad[i] = std::byte{0xff};
      auto r = GgufFile::parse(bad, "flipped");
      if (r.ok())
        for (const auto& t : r->tensors()) REQUIRE(t.offset + t.nbytes <= bad.size());
    }
}

TEST_CASE("GGUF: each bad field gets an error that names it") {
  auto expect = [](const GgufWriter& w, const std::string& part) {
    auto r = GgufFile::parse(w.bytes, "bad.gguf");
    INFO("expected: " << part);
    REQUIRE_FALSE(r.ok());
    CHECK_MESSAGE(contains(r.status().message(), part), r.status().message());
  };
  { GgufWriter w; w.put<std::uint32_t>(0x12345678).put<std::uint32_t>(3); expect(w, "not a GGUF file (magic 0x12345678"); }
  { GgufWriter w; w.header(0, 0, 1); expect(w, "version 1"); }
  { GgufWriter w; w.header(0, 0, 0x03000000); expect(w, "big-endian"); }
  { GgufWriter w; w.header(0, 0, 9); expect(w, "GGUF version 9 is not supported"); }
  { GgufWriter w; w.header(std::uint64_t{1} << 40, 0); expect(w, "tensor count 1099511627776 exceeds"); }
  { GgufWriter w; w.header(0, 1000000); expect(w, "metadata count 1000000 exceeds"); }
  { GgufWriter w; w.header(0, 1).put<std::uint64_t>(std::uint64_t{1} << 62).put<std::uint64_t>(0); expect(w, "key of metadata entry 0 is 4611686018427387904 bytes long"); }
  { GgufWriter w; w.header(0, 1).str("k").put<std::uint32_t>(13).put<std::uint32_t>(0); expect(w, "metadata 'k' has unknown type 13"); }
  { GgufWriter w; w.header(0, 1).str("k").put<std::uint32_t>(8).put<std::uint64_t>(100).put<std::uint32_t>(0); expect(w, "truncated: string value of 'k' needs 100 bytes"); }
  { GgufWriter w; w.header(0, 1).str("k").put<std::uint32_t>(9).put<std::uint32_t>(4).put<std::uint64_t>(1u << 30).put<std::uint64_t>(0);
    expect(w, "array 'k' claims 1073741824 elements of type u32"); }
  { GgufWriter w; w.header(0, 1).str("k").put<std::uint32_t>(7).put<std::uint8_t>(2).put<std::uint64_t>(0); expect(w, "bool value of 'k' is 2"); }
  { GgufWriter w; w.header(0, 2).kv_u32("k", 1).kv_u32("k", 2); expect(w, "metadata key 'k' appears twice"); }
  { GgufWriter w; w.header(0, 1).kv_u32("general.alignment", 24).put<std::uint64_t>(0); expect(w, "general.alignment must be a power-of-two u32"); }
  {
    GgufWriter w;
    w.header(0, 1).str("deep").put<std::uint32_t>(9);  // an array of arrays of arrays ...
    for (int i = 0; i < 6; ++i) w.put<std::uint32_t>(9).put<std::uint64_t>(1);
    w.put<std::uint32_t>(0).put<std::uint64_t>(0);
    expect(w, "nest deeper than 4");
  }
  { GgufWriter w; w.header(1, 0).tensor_info("t", {1, 1, 1, 1, 1}, 0, 0); expect(w, "tensor 't' has 5 dimensions"); }
  { GgufWriter w; w.header(1, 0).tensor_info("t", {4}, 77, 0); expect(w, "tensor 't' has ggml type 77, which quarry does not know"); }
  { GgufWriter w; w.header(1, 0).tensor_info("t", {48}, 8, 0); expect(w, "its innermost dimension 48 is not a multiple of the block size 32"); }
  { GgufWriter w; w.header(1, 0).tensor_info("t", {std::uint64_t{1} << 62, 16}, 0, 0); expect(w, "its size overflows"); }
  { GgufWriter w; w.header(1, 0).tensor_info("t", {4}, 0, 8); expect(w, "data offset 8 is not a multiple of the alignment 32"); }
  { GgufWriter w; w.header(1, 0).tensor_info("t", {64}, 0, 0); w.align().floats(10, 0); expect(w, "tensor 't' (256 bytes at data offset 0) extends past the end"); }
  { GgufWriter w; w.header(2, 0).tensor_info("a", {16}, 0, 0).tensor_info("b", {8}, 0, 32); w.align().floats(24, 0); expect(w, "tensors 'a' and 'b' overlap"); }
  { GgufWriter w; w.header(2, 0).tensor_info("a", {8}, 0, 0).tensor_info("a", {8}, 0, 32); expect(w, "tensor name 'a' appears twice"); }

  auto missing = GgufFile::open("/nonexistent/model.gguf");
  CHECK(missing.status().code() == errc::not_found);
  CHECK(contains(missing.status().message(), "/nonexistent/model.gguf"));
}

TEST_CASE("GGUF: ggml type table") {
  CHECK(ggml_type_info(GgmlType::q4_0)->block_bytes == 18);
  CHECK(ggml_type_info(GgmlType::q8_0)->block_bytes == 34);
  CHECK(ggml_type_info(GgmlType::q4_k)->name == "q4_K");
  CHECK_FALSE(ggml_type_info(static_cast<GgmlType>(77)).has_value());
}

namespace {

// A file of quantized and plain tensors: Q8_0 [3, 64] "q8", Q4_0 [5, 96] "q4", Q8_0 rank 1 {32}
// "q8v", Q8_0 rank 3 {2, 2, 32} "q8x3", f16 [2, 4] "h", bf16 {4} "b", f32 [2, 4] "f", q4_K {256}
// "k". The blocks come from quantize_gguf_* of Gaussian floats.
struct QuantSample {
  std::vector<BlockQ8_0> q8, q8v, q8x3;
  std::vector<BlockQ4_0> q4;
  std::vector<std::byte> bytes;
  std::size_t q8_data = 0;  // absolute offset of "q8"'s data
};

QuantSample quant_sample() {
  QuantSample s;
  const Tensor<float> w8 = gaussian(3, 64, 1), w4 = gaussian(5, 96, 2, 0.5f), wv = gaussian(1, 32, 3), w3 = gaussian(4, 32, 4);
  s.q8 = quantize_gguf_q8_0(w8).value();
  s.q4 = quantize_gguf_q4_0(w4).value();
  s.q8v = quantize_gguf_q8_0(wv).value();
  s.q8x3 = quantize_gguf_q8_0(w3).value();
  // Data offsets, each rounded up to the alignment 32.
  const std::uint64_t o_q8 = 0, o_q4 = 224, o_q8v = 544, o_q8x3 = 608, o_h = 768, o_b = 800, o_f = 832, o_k = 864;
  static_assert(3 * 2 * 34 <= 224 && 224 + 5 * 3 * 18 <= 544 && 544 + 34 <= 608 && 608 + 4 * 34 <= 768);
  GgufWriter w;
  w.header(8, 0);
  w.tensor_info("q8", {64, 3}, 8, o_q8).tensor_info("q4", {96, 5}, 2, o_q4).tensor_info("q8v", {32}, 8, o_q8v);
  w.tensor_info("q8x3", {32, 2, 2}, 8, o_q8x3).tensor_info("h", {4, 2}, 1, o_h).tensor_info("b", {4}, 30, o_b);
  w.tensor_info("f", {4, 2}, 0, o_f).tensor_info("k", {256}, 12, o_k);
  w.align();
  const std::size_t base = w.bytes.size();
  s.q8_data = base + o_q8;
  auto at = [&](std::uint64_t off) {
    REQUIRE(w.bytes.size() <= base + off);
    w.bytes.resize(base + off);
  };
  at(o_q8), w.raw(s.q8);
  at(o_q4), w.raw(s.q4);
  at(o_q8v), w.raw(s.q8v);
  at(o_q8x3), w.raw(s.q8x3);
  at(o_h);
  for (float v : {1.f, -2.f, 0.5f, 3.f, 65504.f, -0.25f, 0.f, 1e-7f}) w.put(f16(v).bits);
  at(o_b);
  for (float v : {1.f, -2.f, 3.5f, 1e30f}) w.put(bf16(v).bits);
  at(o_f);
  w.floats(8, 10.f);
  at(o_k);
  w.bytes.resize(base + o_k + 144);
  s.bytes = std::move(w.bytes);
  return s;
}

float q4_nibble(const BlockQ4_0& b, int j) { return static_cast<float>(((j < 16 ? b.qs[j] : b.qs[j - 16] >> 4) & 0xf) - 8); }

}  // namespace

TEST_CASE("GGUF: Q8_0 and Q4_0 tensors read back as QuantizedTensor, exactly d * q") {
  const QuantSample s = quant_sample();
  auto f = GgufFile::parse(s.bytes, "quant");
  REQUIRE_MESSAGE(f.ok(), f.status().to_string());

  auto q8 = f->tensor_quantized("q8");
  REQUIRE_MESSAGE(q8.ok(), q8.status().to_string());
  CHECK(q8->scheme() == kGgufQ8_0Scheme);
  CHECK(q8->shape() == Shape{3, 64});
  const Tensor<float> d8 = dequantize(*q8);
  for (std::int64_t r = 0; r < 3; ++r)
    for (std::int64_t c = 0; c < 64; ++c) {
      const BlockQ8_0& b = s.q8[static_cast<std::size_t>(r * 2 + c / 32)];
      REQUIRE(d8(r, c) == float(f16::from_bits(b.d)) * static_cast<float>(b.qs[c % 32]));
    }
  CHECK(export_gguf_q8_0(*q8).value().size() == s.q8.size());

  auto q4 = f->tensor_quantized("q4");
  REQUIRE_MESSAGE(q4.ok(), q4.status().to_string());
  CHECK(q4->scheme() == kGgufQ4_0Scheme);
  CHECK(q4->shape() == Shape{5, 96});
  const Tensor<float> d4 = dequantize(*q4);
  int nonzero = 0;
  for (std::int64_t r = 0; r < 5; ++r)
    for (std::int64_t c = 0; c < 96; ++c) {
      const BlockQ4_0& b = s.q4[static_cast<std::size_t>(r * 3 + c / 32)];
      REQUIRE(d4(r, c) == float(f16::from_bits(b.d)) * q4_nibble(b, static_cast<int>(c % 32)));
      nonzero += d4(r, c) != 0.f;
    }
  CHECK(nonzero > 400);  // the data is not all zeros

  // Rank 1 is a [1, K] matrix.
  auto v = f->tensor_quantized("q8v");
  REQUIRE(v.ok());
  CHECK(v->shape() == Shape{1, 32});
  CHECK(v->dequantized(0, 5) == float(f16::from_bits(s.q8v[0].d)) * static_cast<float>(s.q8v[0].qs[5]));

  // tensor_dequantized_f32 gives the same values in the file's shape, for every type it reads.
  auto f8 = f->tensor_dequantized_f32("q8");
  REQUIRE(f8.ok());
  CHECK(f8->shape() == Shape{3, 64});
  CHECK(std::memcmp(f8->data(), d8.data(), d8.nbytes()) == 0);
  auto f4 = f->tensor_dequantized_f32("q4");
  REQUIRE(f4.ok());
  CHECK(std::memcmp(f4->data(), d4.data(), d4.nbytes()) == 0);
  auto fv = f->tensor_dequantized_f32("q8v");
  REQUIRE(fv.ok());
  CHECK(fv->shape() == Shape{32});
  auto f3 = f->tensor_dequantized_f32("q8x3");
  REQUIRE(f3.ok());
  CHECK(f3->shape() == Shape{2, 2, 32});
  CHECK((*f3)(1, 0, 7) == float(f16::from_bits(s.q8x3[2].d)) * static_cast<float>(s.q8x3[2].qs[7]));
  auto fh = f->tensor_dequantized_f32("h");
  REQUIRE(fh.ok());
  CHECK(fh->shape() == Shape{2, 4});
  CHECK((*fh)(1, 0) == 65504.f);
  CHECK((*fh)(1, 3) == float(f16(1e-7f)));
  auto fb = f->tensor_dequantized_f32("b");
  REQUIRE(fb.ok());
  CHECK((*fb)(1) == -2.f);
  CHECK((*fb)(3) == float(bf16(1e30f)));
  auto ff = f->tensor_dequantized_f32("f");
  REQUIRE(ff.ok());
  CHECK((*ff)(1, 3) == 17.f);
}

TEST_CASE("GGUF: tensor_quantized and tensor_dequantized_f32 errors name the tensor") {
  QuantSample s = quant_sample();
  auto f = GgufFile::parse(s.bytes, "quant");
  REQUIRE(f.ok());
  auto expect = [](const status& st, errc code, const std::string& part) {
    CHECK(st.code() == code);
    CHECK_MESSAGE(contains(st, part), st.message());
  };
  expect(f->tensor_quantized("nope").status(), errc::not_found, "GGUF file has no tensor 'nope'");
  expect(f->tensor_dequantized_f32("nope").status(), errc::not_found, "GGUF file has no tensor 'nope'");
  expect(f->tensor_quantized("f").status(), errc::unsupported, "tensor 'f' is f32, not q8_0 or q4_0; read it with tensor_f32()");
  expect(f->tensor_quantized("h").status(), errc::unsupported, "tensor 'h' is f16, not q8_0 or q4_0; read it with tensor_f16()");
  expect(f->tensor_quantized("k").status(), errc::unsupported, "tensor 'k' is q4_K, not q8_0 or q4_0");
  expect(f->tensor_dequantized_f32("k").status(), errc::unsupported, "tensor 'k' is q4_K; quarry reads f32, f16, bf16, q8_0 and q4_0");
  expect(f->tensor_quantized("q8x3").status(), errc::shape_mismatch, "tensor 'q8x3' (q8_0) has shape [2, 2, 32]; a quantized matrix must be rank 1 or 2");
  expect(f->tensor_f32("q8").status(), errc::unsupported, "tensor 'q8' is q8_0, not f32");

  // A NaN scale in the file: the importer's error, prefixed with the tensor's name.
  const std::uint16_t nan = 0x7e00;
  std::memcpy(s.bytes.data() + s.q8_data + 34, &nan, 2);  // block 1: row 0, columns 32..63
  auto g = GgufFile::parse(s.bytes, "quant");
  REQUIRE(g.ok());
  expect(g->tensor_quantized("q8").status(), errc::corrupt_data, "tensor 'q8': import_gguf_q8_0: the scale d of Q8_0 block 1 (row 0, columns 32..63)");
  expect(g->tensor_dequantized_f32("q8").status(), errc::corrupt_data, "tensor 'q8': import_gguf_q8_0");
  CHECK(g->tensor_quantized("q4").ok());

  // Tensor data cut short is caught by the parser, naming the tensor.
  auto cut = GgufFile::parse(std::span(s.bytes).first(s.bytes.size() - 1), "cut");
  REQUIRE_FALSE(cut.ok());
  CHECK(contains(cut.status(), "tensor 'k' (144 bytes at data offset 864) extends past the end"));
}
