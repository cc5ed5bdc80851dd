// Writes fuzz_gguf seeds into the folder given: small valid GGUF files made with GgufWriter
// (no metadata; metadata of every type with nested arrays; f32/f16/bf16/Q8_0/Q4_0 tensors at
// alignments 32, 8 and 64) and, when a model is given (stories260K.gguf), its header (the bytes
// before the tensor data: every metadata value, the tokenizer included) and its metadata over
// two tiny tensors as a valid file.
//   quarry_fuzz_gguf_seeds <folder> [model.gguf]
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <quarry/io/gguf.hpp>
#include <quarry/io/gguf_writer.hpp>
#include <quarry/io/mapped_file.hpp>
#include <quarry/quant/gguf_blocks.hpp>

namespace {

using namespace quarry;

void add_tensors(GgufWriter& w) {
  std::vector<float> x(64);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(i) * 0.25f - 3.f;
  w.add_tensor("f32", TensorView<const float>(x.data(), Shape{2, 3})).throw_if_error();
  std::vector<f16> h = {f16(1.f), f16(-2.f), f16(0.5f), f16(65504.f)};
  w.add_tensor("f16", TensorView<const f16>(h.data(), Shape{4})).throw_if_error();
  std::vector<bf16> b = {bf16(1.f), bf16(-3.f), bf16(1e30f), bf16(0.f)};
  w.add_tensor("bf16", TensorView<const bf16>(b.data(), Shape{2, 2})).throw_if_error();
  const auto q8 = quantize_gguf_q8_0(TensorView<const float>(x.data(), Shape{2, 32})).value();
  w.add_tensor("q8_0", Shape{2, 32}, std::span<const BlockQ8_0>(q8)).throw_if_error();
  const auto q4 = quantize_gguf_q4_0(TensorView<const float>(x.data(), Shape{1, 64})).value();
  w.add_tensor("q4_0", Shape{64}, std::span<const BlockQ4_0>(q4)).throw_if_error();
}

void add_every_value(GgufWriter& w) {
  w.add_string("general.architecture", "llama").throw_if_error();
  w.add_u8("t.u8", 200).throw_if_error();
  w.add_i8("t.i8", -100).throw_if_error();
  w.add_u16("t.u16", 60000).throw_if_error();
  w.add_i16("t.i16", -30000).throw_if_error();
  w.add_u32("t.u32", 4000000000u).throw_if_error();
  w.add_i32("t.i32", -2000000000).throw_if_error();
  w.add_u64("t.u64", ~0ULL).throw_if_error();
  w.add_i64("t.i64", -(1LL << 62)).throw_if_error();
  w.add_f32("t.f32", 1e-5f).throw_if_error();
  w.add_f64("t.f64", -2.5).throw_if_error();
  w.add_bool("t.bool", true).throw_if_error();
  w.add_string_array("t.tokens", {"<unk>", "<s>", "</s>", "\xe2\x96\x81the", "<0x0A>"}).throw_if_error();
  const float scores[] = {0.f, -1.f, -2.f, -3.5f};
  w.add_f32_array("t.scores", scores).throw_if_error();
  const std::int32_t types[] = {2, 3, 3, 1, 6};
  w.add_i32_array("t.types", types).throw_if_error();
  GgufArray inner;
  inner.type = GgufValueType::u16;
  inner.ints = {1, 2, 3};
  GgufArray outer;
  outer.type = GgufValueType::array;
  outer.arrays.push_back({GgufValueType::array, inner});
  outer.arrays.push_back({GgufValueType::array, GgufArray{GgufValueType::string, {}, {}, {"a", "bc"}, {}}});
  w.add_array("t.nested", outer).throw_if_error();
}

bool write_raw(const std::string& path, std::span<const std::byte> bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  return static_cast<bool>(out);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2 && argc != 3) {
    std::fprintf(stderr, "usage: %s <folder> [model.gguf]\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  int n = 0;
  try {
    GgufWriter empty;
    empty.write(dir + "/empty.gguf").throw_if_error();
    GgufWriter values;
    add_every_value(values);
    values.write(dir + "/values.gguf").throw_if_error();
    for (std::uint32_t alignment : {32u, 8u, 64u}) {
      GgufWriter w;
      w.add_string("general.architecture", "llama").throw_if_error();
      w.add_u32("llama.embedding_length", 64).throw_if_error();
      w.set_alignment(alignment).throw_if_error();
      add_tensors(w);
      w.write(dir + "/tensors-" + std::to_string(alignment) + ".gguf").throw_if_error();
    }
    GgufWriter both;
    add_every_value(both);
    add_tensors(both);
    both.write(dir + "/values-tensors.gguf").throw_if_error();
    n = 6;

    if (argc == 3) {
      auto mapped = MappedFile::open(argv[2]);
      auto model = mapped.ok() ? GgufFile::parse(mapped->bytes(), argv[2]) : result<GgufFile>(mapped.status());
      if (!model.ok()) {
        std::fprintf(stderr, "%s\n", model.status().to_string().c_str());
        return 1;
      }
      if (!write_raw(dir + "/model-header.gguf", mapped->bytes().first(static_cast<std::size_t>(model->data_offset())))) {
        std::fprintf(stderr, "cannot write %s/model-header.gguf\n", dir.c_str());
        return 1;
      }
      GgufWriter w;
      for (const auto& [key, value] : model->metadata())
        if (key != "general.alignment") w.add(key, value).throw_if_error();
      std::vector<float> emb(2 * 8, 0.5f);
      w.add_tensor("token_embd.weight", TensorView<const float>(emb.data(), Shape{2, 8})).throw_if_error();
      w.add_tensor("output_norm.weight", TensorView<const float>(emb.data(), Shape{8})).throw_if_error();
      w.write(dir + "/model-metadata.gguf").throw_if_error();
      n += 2;
    }
  } catch (const quarry::error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  std::printf("%d seeds written\n", n);
  return 0;
}
