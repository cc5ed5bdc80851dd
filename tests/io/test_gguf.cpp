// The GGUF reader on the real stories260K model and on hostile files made here.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <quarry/io/gguf.hpp>

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
