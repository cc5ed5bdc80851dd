// Reading a tokenizer's vocabulary from GGUF metadata, checked (internal to src/nn): the
// tokenizer.ggml.* arrays must exist with the right element kinds and equal lengths, special ids
// must be in range, and every error names the key.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "quarry/core/status.hpp"
#include "quarry/io/gguf.hpp"
#include "quarry/nn/tokenizer.hpp"

namespace quarry::detail {

/// The arrays of a GGUF vocabulary.
struct GgufVocab {
  std::vector<std::string> pieces;  ///< tokenizer.ggml.tokens
  std::vector<float> scores;        ///< tokenizer.ggml.scores (empty when not asked for)
  std::vector<TokenType> types;     ///< tokenizer.ggml.token_type (all normal when absent)
  bool has_types = false;           ///< whether tokenizer.ggml.token_type was present
};

/// Reads tokenizer.ggml.model (which must be `model`), tokens, token_type (optional) and, when
/// `with_scores`, scores.
result<GgufVocab> read_gguf_vocab(const GgufFile& file, std::string_view model, bool with_scores);

/// The token id stored at `key`, checked against [0, n_tokens); `fallback` when the key is absent.
result<std::int32_t> read_token_id(const GgufFile& file, std::string_view key, std::int32_t fallback,
                                   std::size_t n_tokens);

/// The boolean stored at `key`; `fallback` when the key is absent.
result<bool> read_bool(const GgufFile& file, std::string_view key, bool fallback);

}  // namespace quarry::detail
