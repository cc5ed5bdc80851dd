#include "common/synthetic_llama.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numbers>
#include <system_error>
#include <vector>

#include <fmt/format.h>

#include <quarry/core/float16.hpp>
#include <quarry/io/crc32c.hpp>
#include <quarry/io/gguf_writer.hpp>
#include <quarry/quant/gguf_blocks.hpp>

#include "common/detail/splitmix64.hpp"

namespace quarry::bench {

namespace {

// Bumped whenever the generator's output for a given spec changes, so old caches are refused.
constexpr int kGeneratorVersion = 1;
constexpr float kWeightStd = 0.02f;  // about what trained Llama matrices have
constexpr const char* kKeyMetadata = "quarry.synthetic.key";

using detail::SplitMix64;  // row r of a tensor depends on (seed, tensor, r) only

// Fills `out` with N(0, std^2) by Box-Muller on 24-bit uniforms in (0, 1].
void fill_normal(SplitMix64& rng, float* out, std::int64_t n, float std_dev) {
  constexpr float kTwoPi = 2.f * std::numbers::pi_v<float>;
  for (std::int64_t i = 0; i < n; i += 2) {
    const std::uint64_t bits = rng.next();
    const float u1 = (static_cast<float>(bits >> 40) + 1.f) * 0x1.0p-24f;
    const float u2 = static_cast<float>((bits >> 16) & 0xffffff) * 0x1.0p-24f;
    const float r = std_dev * std::sqrt(-2.f * std::log(u1));
    out[i] = r * std::cos(kTwoPi * u2);
    if (i + 1 < n) out[i + 1] = r * std::sin(kTwoPi * u2);
  }
}

std::string_view type_name(GgmlType t) {
  const auto info = ggml_type_info(t);
  return info ? info->name : "unknown";
}

// llama.cpp's general.file_type (LLAMA_FTYPE_*) for a model whose matrices are `t`.
std::uint32_t file_type(GgmlType t) {
  switch (t) {
    case GgmlType::f32: return 0;
    case GgmlType::f16: return 1;
    case GgmlType::q4_0: return 2;
    default: return 7;  // q8_0
  }
}

// A producer for the [rows, cols] matrix `name` of N(0, kWeightStd^2) weights stored as `type`:
// rows generated (in parallel on `pool`) a chunk of about 8 MB of f32 at a time, converted or
// quantized, handed to the sink.
GgufTensorProducer matrix_producer(std::string name, std::int64_t rows, std::int64_t cols, GgmlType type, std::uint64_t seed, ThreadPool* pool) {
  return [=](GgufTensorSink& sink) -> status {
    const std::uint64_t stream = crc32c(name);
    const std::int64_t chunk = std::max<std::int64_t>(1, (std::int64_t{2} << 20) / cols);
    std::vector<float> f32(static_cast<std::size_t>(std::min(rows, chunk) * cols));
    std::vector<f16> half;
    for (std::int64_t r0 = 0; r0 < rows; r0 += chunk) {
      const std::int64_t n = std::min(chunk, rows - r0);
      parallel_for(pool, 0, n, [&](std::int64_t lo, std::int64_t hi) {
        for (std::int64_t r = lo; r < hi; ++r) {
          SplitMix64 rng(seed, stream, static_cast<std::uint64_t>(r0 + r));
          fill_normal(rng, f32.data() + r * cols, cols, kWeightStd);
        }
      });
      const TensorView<const float> block(f32.data(), Shape{n, cols});
      switch (type) {
        case GgmlType::f32:
          QUARRY_RETURN_IF_ERROR(sink.write(std::span<const float>(f32.data(), static_cast<std::size_t>(n * cols))));
          break;
        case GgmlType::f16:
          half.resize(static_cast<std::size_t>(n * cols));
          parallel_for(pool, 0, n * cols, [&](std::int64_t lo, std::int64_t hi) {
            for (std::int64_t i = lo; i < hi; ++i) half[static_cast<std::size_t>(i)] = f16(f32[static_cast<std::size_t>(i)]);
          }, 1 << 16);
          QUARRY_RETURN_IF_ERROR(sink.write(std::span<const f16>(half)));
          break;
        case GgmlType::q8_0: {
          QUARRY_ASSIGN_OR_RETURN(const std::vector<BlockQ8_0> blocks, quantize_gguf_q8_0(block, pool));
          QUARRY_RETURN_IF_ERROR(sink.write(std::span<const BlockQ8_0>(blocks)));
          break;
        }
        case GgmlType::q4_0: {
          QUARRY_ASSIGN_OR_RETURN(const std::vector<BlockQ4_0> blocks, quantize_gguf_q4_0(block, pool));
          QUARRY_RETURN_IF_ERROR(sink.write(std::span<const BlockQ4_0>(blocks)));
          break;
        }
        default:
          return {errc::unsupported, fmt::format("synthetic weights of type {}", type_name(type))};
      }
    }
    return {};
  };
}

// The metadata and tensors of `spec`, producers included (nothing generated yet).
result<GgufWriter> make_writer(const SyntheticLlamaSpec& spec, ThreadPool* pool) {
  QUARRY_RETURN_IF_ERROR(spec.validate());
  const std::int64_t head_dim = spec.dim / spec.n_heads, kv_dim = spec.n_kv_heads * head_dim;
  GgufWriter w;
  QUARRY_RETURN_IF_ERROR(w.add_string("general.architecture", "llama"));
  QUARRY_RETURN_IF_ERROR(w.add_string("general.name", "synthetic " + spec.file_stem()));
  QUARRY_RETURN_IF_ERROR(w.add_u32("general.file_type", file_type(spec.type)));
  QUARRY_RETURN_IF_ERROR(w.add_string(kKeyMetadata, spec.key()));
  QUARRY_RETURN_IF_ERROR(w.add_u32("llama.context_length", static_cast<std::uint32_t>(spec.context)));
  QUARRY_RETURN_IF_ERROR(w.add_u32("llama.embedding_length", static_cast<std::uint32_t>(spec.dim)));
  QUARRY_RETURN_IF_ERROR(w.add_u32("llama.block_count", static_cast<std::uint32_t>(spec.n_layers)));
  QUARRY_RETURN_IF_ERROR(w.add_u32("llama.feed_forward_length", static_cast<std::uint32_t>(spec.ffn_dim)));
  QUARRY_RETURN_IF_ERROR(w.add_u32("llama.rope.dimension_count", static_cast<std::uint32_t>(head_dim)));
  QUARRY_RETURN_IF_ERROR(w.add_u32("llama.attention.head_count", static_cast<std::uint32_t>(spec.n_heads)));
  QUARRY_RETURN_IF_ERROR(w.add_u32("llama.attention.head_count_kv", static_cast<std::uint32_t>(spec.n_kv_heads)));
  QUARRY_RETURN_IF_ERROR(w.add_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f));
  QUARRY_RETURN_IF_ERROR(w.add_f32("llama.rope.freq_base", 10000.f));
  if (spec.vocab >= 3 + 256) {
    // <unk>, <s>, </s>, the byte tokens <0x00>..<0xFF>, then placeholders; types as SentencePiece's
    // (1 normal, 2 unknown, 3 control, 6 byte).
    std::vector<std::string> tokens;
    std::vector<float> scores;
    std::vector<std::int32_t> types;
    tokens.reserve(static_cast<std::size_t>(spec.vocab));
    for (const char* s : {"<unk>", "<s>", "</s>"}) tokens.emplace_back(s);
    types = {2, 3, 3};
    for (int b = 0; b < 256; ++b) {
      tokens.push_back(fmt::format("<0x{:02X}>", b));
      types.push_back(6);
    }
    for (std::int64_t i = static_cast<std::int64_t>(tokens.size()); i < spec.vocab; ++i) {
      tokens.push_back(fmt::format("t{}", i));
      types.push_back(1);
    }
    scores.resize(tokens.size(), 0.f);
    for (std::size_t i = 259; i < scores.size(); ++i) scores[i] = -static_cast<float>(i);
    QUARRY_RETURN_IF_ERROR(w.add_string("tokenizer.ggml.model", "llama"));
    QUARRY_RETURN_IF_ERROR(w.add_string_array("tokenizer.ggml.tokens", std::move(tokens)));
    QUARRY_RETURN_IF_ERROR(w.add_f32_array("tokenizer.ggml.scores", scores));
    QUARRY_RETURN_IF_ERROR(w.add_i32_array("tokenizer.ggml.token_type", types));
    QUARRY_RETURN_IF_ERROR(w.add_u32("tokenizer.ggml.unknown_token_id", 0));
    QUARRY_RETURN_IF_ERROR(w.add_u32("tokenizer.ggml.bos_token_id", 1));
    QUARRY_RETURN_IF_ERROR(w.add_u32("tokenizer.ggml.eos_token_id", 2));
  }

  const std::vector<float> ones(static_cast<std::size_t>(spec.dim), 1.f);
  const auto norm = [&](const std::string& name) { return w.add_tensor(name, GgmlType::f32, Shape{spec.dim}, std::as_bytes(std::span<const float>(ones))); };
  const auto matrix = [&](const std::string& name, std::int64_t rows, std::int64_t cols) {
    return w.add_tensor(name, spec.type, Shape{rows, cols}, matrix_producer(name, rows, cols, spec.type, spec.seed, pool));
  };
  QUARRY_RETURN_IF_ERROR(matrix("token_embd.weight", spec.vocab, spec.dim));
  for (std::int64_t l = 0; l < spec.n_layers; ++l) {
    const std::string p = fmt::format("blk.{}.", l);
    QUARRY_RETURN_IF_ERROR(norm(p + "attn_norm.weight"));
    QUARRY_RETURN_IF_ERROR(matrix(p + "attn_q.weight", spec.dim, spec.dim));
    QUARRY_RETURN_IF_ERROR(matrix(p + "attn_k.weight", kv_dim, spec.dim));
    QUARRY_RETURN_IF_ERROR(matrix(p + "attn_v.weight", kv_dim, spec.dim));
    QUARRY_RETURN_IF_ERROR(matrix(p + "attn_output.weight", spec.dim, spec.dim));
    QUARRY_RETURN_IF_ERROR(norm(p + "ffn_norm.weight"));
    QUARRY_RETURN_IF_ERROR(matrix(p + "ffn_gate.weight", spec.ffn_dim, spec.dim));
    QUARRY_RETURN_IF_ERROR(matrix(p + "ffn_up.weight", spec.ffn_dim, spec.dim));
    QUARRY_RETURN_IF_ERROR(matrix(p + "ffn_down.weight", spec.dim, spec.ffn_dim));
  }
  QUARRY_RETURN_IF_ERROR(norm("output_norm.weight"));
  QUARRY_RETURN_IF_ERROR(matrix("output.weight", spec.vocab, spec.dim));
  return w;
}

}  // namespace

std::string SyntheticLlamaSpec::key() const {
  return fmt::format("llama dim={} layers={} ffn={} heads={} kv_heads={} vocab={} context={} type={} seed={} gen={}", dim, n_layers, ffn_dim,
                     n_heads, n_kv_heads, vocab, context, type_name(type), seed, kGeneratorVersion);
}

std::string SyntheticLlamaSpec::file_stem() const {
  SyntheticLlamaSpec shape = tinyllama(type);
  shape.seed = seed;
  const bool tiny = key() == shape.key();
  return fmt::format("{}-{}-{:08x}", tiny ? "tinyllama" : "llama", type_name(type), crc32c(key()));
}

std::int64_t SyntheticLlamaSpec::parameters() const {
  const std::int64_t kv_dim = dim / std::max<std::int64_t>(1, n_heads) * n_kv_heads;
  const std::int64_t per_layer = 2 * dim + 2 * dim * dim + 2 * kv_dim * dim + 3 * ffn_dim * dim;
  return 2 * vocab * dim + dim + n_layers * per_layer;
}

status SyntheticLlamaSpec::validate() const {
  const auto bad = [](std::string what) { return status{errc::invalid_argument, "synthetic llama: " + std::move(what)}; };
  for (const auto& [name, v] : {std::pair{"dim", dim}, {"n_layers", n_layers}, {"ffn_dim", ffn_dim}, {"n_heads", n_heads},
                                {"n_kv_heads", n_kv_heads}, {"vocab", vocab}, {"context", context}})
    if (v < 1 || v > (std::int64_t{1} << 24)) return bad(fmt::format("{} is {}; it must be 1 to 2^24", name, v));
  if (dim % n_heads != 0) return bad(fmt::format("dim {} is not a multiple of n_heads {}", dim, n_heads));
  if (n_heads % n_kv_heads != 0) return bad(fmt::format("n_heads {} is not a multiple of n_kv_heads {}", n_heads, n_kv_heads));
  if ((dim / n_heads) % 2 != 0) return bad(fmt::format("head_dim {} is odd (RoPE rotates pairs)", dim / n_heads));
  if (dim % 32 != 0 || ffn_dim % 32 != 0) return bad(fmt::format("dim {} and ffn_dim {} must be multiples of 32 (Q8_0 / Q4_0 blocks)", dim, ffn_dim));
  if (type != GgmlType::f32 && type != GgmlType::f16 && type != GgmlType::q8_0 && type != GgmlType::q4_0)
    return bad(fmt::format("type {} (f32, f16, q8_0 or q4_0)", type_name(type)));
  return {};
}

status write_synthetic_llama(const SyntheticLlamaSpec& spec, const std::string& path, ThreadPool* pool) {
  QUARRY_ASSIGN_OR_RETURN(const GgufWriter w, make_writer(spec, pool));
  const std::filesystem::path parent = std::filesystem::absolute(path).parent_path();
  std::error_code ec;
  const auto space = std::filesystem::space(parent, ec);
  const std::uint64_t need = w.file_size() + (std::uint64_t{1} << 30);
  if (!ec && space.available < need)
    return {errc::io_error, fmt::format("{}: {:.2f} GB free; the synthetic model needs {:.2f} GB plus 1 GB to spare", parent.string(),
                                        static_cast<double>(space.available) / 1e9, static_cast<double>(w.file_size()) / 1e9)};
  return w.write(path);
}

result<std::string> synthetic_llama_file(const SyntheticLlamaSpec& spec, const std::string& dir, ThreadPool* pool, bool* generated) {
  if (generated != nullptr) *generated = false;
  QUARRY_RETURN_IF_ERROR(spec.validate());
  const std::string path = (std::filesystem::path(dir) / (spec.file_stem() + ".gguf")).string();
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    auto f = GgufFile::open(path);
    if (f.ok()) {
      auto key = f->get_string(kKeyMetadata);
      if (key.ok() && *key == spec.key()) return path;
    }
  }
  std::filesystem::create_directories(dir, ec);
  if (ec) return status{errc::io_error, fmt::format("cannot create {}: {}", dir, ec.message())};
  QUARRY_RETURN_IF_ERROR(write_synthetic_llama(spec, path, pool));
  if (generated != nullptr) *generated = true;
  return path;
}

}  // namespace quarry::bench
