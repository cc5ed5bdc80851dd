// A Llama-architecture model of a given shape with random weights, written to GGUF with quarry's
// own writer (GgufWriter), for benchmarks that need a model far larger than the caches (issue 6:
// TinyLlama-1.1B's shape) without downloading one.
//
// Weights are normal with the spread of a trained model's, so activations stay finite through
// every layer: matrices N(0, 0.02^2) (token embedding included), RMSNorm weights 1. Each row is a
// function of (seed, tensor, row) alone (a counter-based generator), so the f16, Q8_0 and Q4_0
// files of one spec hold the same weights up to their rounding, whatever the thread count.
// Matrices are stored in the spec's type, norms in f32 (as llama.cpp stores them). A minimal
// SentencePiece-style vocabulary (<unk>, <s>, </s>, the 256 byte tokens, then "t<i>") makes the
// file complete for tools that want one; the decoder does not read it.
//
// The file is written tensor by tensor through GgufWriter's producers (a few MB in memory at a
// time) and cached: synthetic_llama_file() reuses a file whose recorded spec matches.
#pragma once

#include <cstdint>
#include <string>

#include <quarry/core/status.hpp>
#include <quarry/core/thread_pool.hpp>
#include <quarry/io/gguf.hpp>

namespace quarry::bench {

/// The shape, storage type and seed of a synthetic Llama model. Equal specs give equal files.
struct SyntheticLlamaSpec {
  std::int64_t dim = 2048;           ///< llama.embedding_length
  std::int64_t n_layers = 22;        ///< llama.block_count
  std::int64_t ffn_dim = 5632;       ///< llama.feed_forward_length
  std::int64_t n_heads = 32;         ///< llama.attention.head_count
  std::int64_t n_kv_heads = 4;       ///< llama.attention.head_count_kv
  std::int64_t vocab = 32000;        ///< rows of token_embd.weight and output.weight
  std::int64_t context = 2048;       ///< llama.context_length
  GgmlType type = GgmlType::f16;     ///< the matrices' type: f32, f16, q8_0 or q4_0
  std::uint64_t seed = 20240601;     ///< seeds every weight

  /// TinyLlama-1.1B's shape (the defaults) with matrices of `type`.
  static SyntheticLlamaSpec tinyllama(GgmlType type) {
    SyntheticLlamaSpec s;
    s.type = type;
    return s;
  }

  /// Every parameter and the generator's version, e.g. "llama dim=2048 layers=22 ... type=q8_0
  /// seed=20240601 gen=1": what the file records and a cached file is checked against.
  std::string key() const;
  /// "tinyllama-q8_0-1a2b3c4d": the cache file's name without ".gguf" (shape name or "llama",
  /// type, CRC32C of key()).
  std::string file_stem() const;
  /// Parameters of all tensors (embedding, norms, matrices, output).
  std::int64_t parameters() const;
  /// Checks the shape (positive sizes, dim a multiple of n_heads and n_heads of n_kv_heads, even
  /// head_dim, dim and ffn_dim multiples of 32, a supported type); errors name the field.
  status validate() const;
};

/// Writes the model of `spec` to `path` (atomically, streamed tensor by tensor; rows generated and
/// quantized in parallel on `pool` when given). Refuses (io_error) when the file system has less
/// free space than the file plus 1 GB.
status write_synthetic_llama(const SyntheticLlamaSpec& spec, const std::string& path, ThreadPool* pool = nullptr);

/// The cached file of `spec` in `dir` ("<dir>/<spec.file_stem()>.gguf"), written first when it is
/// absent or records another spec (the directory is created when missing). `generated`, when
/// given, says whether it was written now.
result<std::string> synthetic_llama_file(const SyntheticLlamaSpec& spec, const std::string& dir, ThreadPool* pool = nullptr,
                                         bool* generated = nullptr);

}  // namespace quarry::bench
