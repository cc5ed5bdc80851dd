// Tokenizers of real models (quarry's nn module): the SentencePiece-style BPE tokenizer of Llama
// models and the WordPiece tokenizer of BERT models, read from GGUF metadata (or, for WordPiece,
// a vocab.txt). They reproduce llama.cpp's and Hugging Face's ids on llama.cpp's tokenizer test
// cases (tests/nn/test_tokenizer.cpp).
//
// Loading trusts nothing: array lengths must agree, special ids must be in range, and errors name
// the GGUF key (or the file and line). Encoding never fails: any bytes, valid UTF-8 or not, give
// ids (byte fallback or the unknown token). Decoding checks ids and throws quarry::error naming
// an id outside the vocabulary (a precondition the caller can check with vocab_size()). A loaded
// tokenizer is immutable: encode and decode may be called from several threads at once.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "quarry/core/status.hpp"
#include "quarry/io/gguf.hpp"

namespace quarry {

/// What a vocabulary entry is (GGUF's tokenizer.ggml.token_type, llama_token_type).
enum class TokenType : std::uint8_t {
  normal = 1,        ///< text, merged by encoding
  unknown = 2,       ///< stands for what cannot be encoded
  control = 3,       ///< <s>, </s>, [CLS], ...: never produced from text, decoded to nothing
  user_defined = 4,  ///< text matched verbatim before BPE
  unused = 5,        ///< reserved: never produced, decoded to nothing
  byte = 6,          ///< <0xNN>: one byte, for byte fallback
};

namespace detail {
/// Hash of std::string that also takes string_view, for lookups without a copy.
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
/// Piece -> id, looked up by string_view.
using PieceMap = std::unordered_map<std::string, std::int32_t, StringHash, std::equal_to<>>;
}  // namespace detail

/// The SentencePiece BPE tokenizer of Llama models (llama.cpp's "llama" / SPM vocabulary).
///
/// Encoding: a space is put in front of the text (add_space_prefix), spaces become U+2581 "▁",
/// the text is split into UTF-8 characters (each invalid byte on its own), and the adjacent pair
/// whose concatenation is a vocabulary piece with the highest score is merged, leftmost first on
/// ties, until no pair merges. A symbol that is not a piece falls back to its bytes' <0xNN>
/// tokens (the unknown token where the vocabulary lacks one). User-defined pieces are matched
/// verbatim first; control, unknown, unused and byte pieces are never produced from text.
class SpmTokenizer {
 public:
  SpmTokenizer() = default;

  /// Reads tokenizer.ggml.{model ("llama"), tokens, scores, token_type (optional: all normal),
  /// bos_token_id, eos_token_id, unknown_token_id, add_space_prefix (default true)}. Errors
  /// name the key: not_found when the model, tokens or scores are missing; invalid_argument for
  /// a wrong type or model; corrupt_data for arrays of different lengths, an empty vocabulary or
  /// a bad token type; out_of_range for a special id outside the vocabulary.
  static result<SpmTokenizer> from_gguf(const GgufFile& file);

  /// The ids of `text`, preceded by BOS when `add_bos`. The empty text gives no ids (just BOS).
  /// With `parse_special`, the text of a control or unknown token ("<s>", "</s>", "<unk>")
  /// typed into `text` is that token, and the text between such tokens is encoded on its own
  /// (with the space prefix at the start and after each), as llama.cpp with parse_special.
  std::vector<std::int32_t> encode(std::string_view text, bool add_bos, bool parse_special = false) const;

  /// The text of `ids`: pieces with "▁" as spaces, byte tokens as their bytes, control and
  /// unused tokens as nothing, the unknown token as " ⁇ " (as SentencePiece). With
  /// add_space_prefix, the first piece that shows loses one leading space (SentencePiece removes
  /// the space encoding added). So decode(encode(t, b)) == t, byte for byte, for every t without
  /// a "▁" of its own (which comes back as a space), on a vocabulary that has "▁" and the 256
  /// byte tokens, as Llama's does.
  /// Throws quarry::error for an id outside [0, vocab_size()).
  std::string decode(std::span<const std::int32_t> ids) const;

  /// The text of one token as decode shows it in the middle of a text (its leading space kept),
  /// for printing tokens as they are generated. A byte token gives its single byte: a UTF-8
  /// character split over byte tokens is whole only once all of them are printed.
  /// Throws quarry::error for an id outside the vocabulary.
  std::string piece(std::int32_t id) const;

  /// Number of tokens.
  std::int32_t vocab_size() const noexcept { return static_cast<std::int32_t>(pieces_.size()); }
  /// Beginning-of-sequence id (tokenizer.ggml.bos_token_id, default 1).
  std::int32_t bos() const noexcept { return bos_; }
  /// End-of-sequence id (tokenizer.ggml.eos_token_id, default 2).
  std::int32_t eos() const noexcept { return eos_; }
  /// Unknown-token id (tokenizer.ggml.unknown_token_id, default 0).
  std::int32_t unk() const noexcept { return unk_; }
  /// Whether encode puts a space in front of the text (tokenizer.ggml.add_space_prefix).
  bool add_space_prefix() const noexcept { return add_space_prefix_; }
  /// The stored piece of `id` (with "▁", "<0x0A>", "<s>" as in the file). Throws when out of range.
  const std::string& token_text(std::int32_t id) const;
  /// The type of `id`. Throws when out of range.
  TokenType token_type(std::int32_t id) const;
  /// The merge score of `id`. Throws when out of range.
  float score(std::int32_t id) const;

 private:
  void check_id(std::int32_t id) const;
  void encode_fragment(std::string_view escaped, std::vector<std::int32_t>& out) const;
  void encode_text(std::string_view text, bool space_prefix, std::vector<std::int32_t>& out) const;

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::vector<TokenType> types_;
  detail::PieceMap mergeable_;              // normal and user-defined pieces -> id
  std::vector<std::int32_t> user_defined_;  // ids of user-defined pieces, longest first
  std::vector<std::pair<std::string, std::int32_t>> specials_;  // control and unknown pieces
  std::array<std::int32_t, 256> byte_ids_{};  // <0xNN> token of each byte (unk_ when absent)
  std::int32_t bos_ = 1, eos_ = 2, unk_ = 0;
  bool add_space_prefix_ = true;
};

/// The WordPiece tokenizer of BERT models, as Hugging Face's BertTokenizer(Fast) does it.
///
/// Basic tokenization: control characters (Unicode C*, except tab, CR and LF) and U+FFFD are
/// removed; CJK ideographs become words of their own; when `lowercase` (uncased models) accents
/// are stripped (NFD, then non-spacing marks dropped) and letters lower-cased; the text is split
/// at whitespace and around each punctuation character (Unicode P* and ASCII symbols). Each word
/// is then split greedily into the longest vocabulary pieces, "##" marking a continuation; a word
/// that cannot be split, or is longer than 100 characters, becomes [UNK]. Invalid UTF-8 bytes
/// read as U+FFFD (and so are removed).
class WordPieceTokenizer {
 public:
  WordPieceTokenizer() = default;

  /// Reads a vocab.txt: one token per line, id = line number (from 0); "\r\n" line ends are
  /// accepted. [UNK] must be present; [CLS], [SEP], [PAD] and [MASK] are found by name when
  /// present. `lowercase`: lower-case and strip accents (uncased models). Errors: io_error when
  /// the file cannot be read; corrupt_data naming the file when it is empty or lacks [UNK].
  static result<WordPieceTokenizer> from_vocab_file(const std::string& path, bool lowercase = true);

  /// Reads tokenizer.ggml.{model ("bert"), tokens, token_type (optional), unknown_token_id,
  /// cls_token_id (or bos_token_id), seperator_token_id (sic, or eos_token_id),
  /// padding_token_id, mask_token_id}. llama.cpp's converter stores word-initial pieces with a
  /// "▁" prefix and continuations without "##"; such a vocabulary is turned back into WordPiece
  /// form. `lowercase` as in from_vocab_file (GGUF does not record it; BERT GGUFs are mostly of
  /// uncased models, and llama.cpp always lower-cases). Errors name the key as SpmTokenizer's.
  static result<WordPieceTokenizer> from_gguf(const GgufFile& file, bool lowercase = true);

  /// The ids of `text`; with `add_special`, [CLS] first and [SEP] last. With `parse_special`,
  /// the text of a special token ([CLS], [SEP], [PAD], [MASK], [UNK] and the vocabulary's other
  /// control tokens) typed into `text`, case-sensitive, is that token (as Hugging Face's
  /// tokenizers do, and llama.cpp with parse_special); without it, it is plain text.
  std::vector<std::int32_t> encode(std::string_view text, bool add_special, bool parse_special = false) const;

  /// The text of `ids`: pieces joined by spaces, a "##" continuation joined to the piece before
  /// it, control tokens ([CLS], [SEP], [PAD], [MASK]) left out. Lower-casing and removed
  /// characters are not undone. Throws quarry::error for an id outside the vocabulary.
  std::string decode(std::span<const std::int32_t> ids) const;

  /// Number of tokens.
  std::int32_t vocab_size() const noexcept { return static_cast<std::int32_t>(pieces_.size()); }
  /// The piece of `id` in WordPiece form ("hello", "##lo", "[CLS]"). Throws when out of range.
  const std::string& token_text(std::int32_t id) const;
  /// The id of a piece in WordPiece form, or -1.
  std::int32_t find(std::string_view piece) const noexcept;
  /// [UNK]'s id.
  std::int32_t unk() const noexcept { return unk_; }
  /// [CLS]'s id (-1 when the vocabulary has none).
  std::int32_t cls() const noexcept { return cls_; }
  /// [SEP]'s id (-1 when the vocabulary has none).
  std::int32_t sep() const noexcept { return sep_; }
  /// Whether text is lower-cased and accent-stripped before splitting.
  bool lowercase() const noexcept { return lowercase_; }

  /// Longest word (in characters) split into pieces; longer words become [UNK] (as BERT).
  static constexpr std::size_t kMaxWordChars = 100;

 private:
  static result<WordPieceTokenizer> from_pieces(std::vector<std::string> pieces, std::vector<TokenType> types,
                                                std::int32_t unk, std::int32_t cls, std::int32_t sep, bool lowercase);
  void check_id(std::int32_t id) const;
  void encode_word(std::string_view word, std::size_t n_chars, std::vector<std::int32_t>& out) const;
  void encode_text(std::string_view text, std::vector<std::int32_t>& out) const;

  std::vector<std::string> pieces_;
  std::vector<TokenType> types_;
  detail::PieceMap ids_;
  std::vector<std::pair<std::string, std::int32_t>> specials_;  ///< control and unknown pieces
  std::int32_t unk_ = -1, cls_ = -1, sep_ = -1;
  bool lowercase_ = true;
};

}  // namespace quarry
