// Reading a tokenizer's vocabulary from GGUF metadata, checked (internal to src/nn): the
// tokenizer.ggml.* arrays must exist with the right element kinds and equal lengths, special ids
// must be in range, and every error names the key. Also what both tokenizers do with the text of
// special tokens.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
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

/// The special pieces of a vocabulary: control and unknown ones, non-empty, each text once (with
/// its last id).
std::vector<std::pair<std::string, std::int32_t>> special_pieces(const std::vector<std::string>& pieces,
                                                                 const std::vector<TokenType>& types);

/// Where the first special piece occurs in `text` (the longest of those that start there).
struct SpecialMatch {
  std::size_t at = std::string_view::npos, size = 0;
  std::int32_t id = -1;
};
SpecialMatch find_special(std::string_view text, const std::vector<std::pair<std::string, std::int32_t>>& specials) noexcept;

/// Splits `text` at the special pieces typed into it: raw(fragment, after_special) for each
/// non-empty stretch of plain text (after_special: at the start or right after a special),
/// special(id) for each special piece.
template <class Raw, class Special>
void split_specials(std::string_view text, const std::vector<std::pair<std::string, std::int32_t>>& specials, Raw&& raw,
                    Special&& special) {
  bool after_special = true;
  while (!text.empty()) {
    const SpecialMatch m = find_special(text, specials);
    if (m.at != 0) {
      raw(text.substr(0, m.at), after_special);
      after_special = false;
    }
    if (m.at == std::string_view::npos) return;
    special(m.id);
    after_special = true;
    text.remove_prefix(m.at + m.size);
  }
}

}  // namespace quarry::detail
