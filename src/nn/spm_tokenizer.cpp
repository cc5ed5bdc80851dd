// SentencePiece BPE (the Llama tokenizer): score-ordered merges over a linked list of symbols,
// driven by a priority queue of candidate pairs, as SentencePiece's bpe_model and llama.cpp's
// llm_tokenizer_spm do it; stale pairs are recognized by their length and skipped.
#include <algorithm>
#include <queue>

#include <fmt/format.h>

#include "gguf_vocab.hpp"
#include "quarry/nn/tokenizer.hpp"
#include "utf8.hpp"

namespace quarry {

namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";          // U+2581, SentencePiece's space
constexpr std::string_view kUnknownSurface = " \xE2\x81\x87 ";  // " ⁇ ", as SentencePiece decodes <unk>

// The byte value of a "<0xNN>" piece, or -1.
int byte_piece_value(std::string_view p) noexcept {
  if (p.size() != 6 || p.substr(0, 3) != "<0x" || p[5] != '>') return -1;
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  const int hi = hex(p[3]), lo = hex(p[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

// A run of the text being merged: [start, start + len), linked to its neighbours (-1: none).
// len == 0 once merged into its left neighbour.
struct Symbol {
  std::size_t start;
  std::size_t len;
  std::ptrdiff_t prev;
  std::ptrdiff_t next;
};

// A candidate merge of symbols left and right (adjacent when pushed), scored by the piece their
// concatenation makes.
struct Pair {
  float score;
  std::ptrdiff_t left;
  std::ptrdiff_t right;
  std::size_t len;  // left.len + right.len when pushed: tells a stale pair
};

// Highest score first; leftmost first among equal scores.
struct PairOrder {
  bool operator()(const Pair& a, const Pair& b) const noexcept {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

}  // namespace

result<SpmTokenizer> SpmTokenizer::from_gguf(const GgufFile& file) {
  QUARRY_ASSIGN_OR_RETURN(detail::GgufVocab v, detail::read_gguf_vocab(file, "llama", /*with_scores=*/true));
  const std::size_t n = v.pieces.size();
  SpmTokenizer t;
  QUARRY_ASSIGN_OR_RETURN(t.bos_, detail::read_token_id(file, "tokenizer.ggml.bos_token_id", 1, n));
  QUARRY_ASSIGN_OR_RETURN(t.eos_, detail::read_token_id(file, "tokenizer.ggml.eos_token_id", 2, n));
  QUARRY_ASSIGN_OR_RETURN(t.unk_, detail::read_token_id(file, "tokenizer.ggml.unknown_token_id", 0, n));
  QUARRY_ASSIGN_OR_RETURN(t.add_space_prefix_, detail::read_bool(file, "tokenizer.ggml.add_space_prefix", true));
  // Defaults of llama.cpp's SPM vocabulary (ids 1, 2, 0) may fall outside a tiny vocabulary.
  if (t.bos_ >= static_cast<std::int32_t>(n) || t.eos_ >= static_cast<std::int32_t>(n) ||
      t.unk_ >= static_cast<std::int32_t>(n))
    return status(errc::out_of_range, fmt::format("a vocabulary of {} tokens has no room for the default special "
                                                  "ids (BOS 1, EOS 2, unknown 0); set tokenizer.ggml.*_token_id", n));

  if (!v.has_types) {
    // Without token types, the special ids and the <0xNN> pieces are what they say.
    for (std::size_t i = 0; i < n; ++i)
      if (byte_piece_value(v.pieces[i]) >= 0) v.types[i] = TokenType::byte;
    v.types[static_cast<std::size_t>(t.bos_)] = TokenType::control;
    v.types[static_cast<std::size_t>(t.eos_)] = TokenType::control;
    v.types[static_cast<std::size_t>(t.unk_)] = TokenType::unknown;
  }

  t.byte_ids_.fill(-1);
  t.mergeable_.reserve(n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto id = static_cast<std::int32_t>(i);
    switch (v.types[i]) {
      case TokenType::normal:
        t.mergeable_.insert_or_assign(v.pieces[i], id);  // a repeated piece: the last id, as llama.cpp
        break;
      case TokenType::user_defined:
        if (!v.pieces[i].empty()) {
          t.mergeable_.insert_or_assign(v.pieces[i], id);
          t.user_defined_.push_back(id);
        }
        break;
      case TokenType::byte: {
        const int b = byte_piece_value(v.pieces[i]);
        if (b < 0)
          return status(errc::corrupt_data, fmt::format("GGUF key tokenizer.ggml.token_type[{}] says byte, but "
                                                        "its piece \"{}\" is not <0xNN>", i, v.pieces[i]));
        if (t.byte_ids_[static_cast<std::size_t>(b)] < 0) t.byte_ids_[static_cast<std::size_t>(b)] = id;
        break;
      }
      case TokenType::unknown: case TokenType::control: case TokenType::unused: break;
    }
  }
  for (auto& b : t.byte_ids_)
    if (b < 0) b = t.unk_;
  std::stable_sort(t.user_defined_.begin(), t.user_defined_.end(), [&](std::int32_t a, std::int32_t b) {
    return v.pieces[static_cast<std::size_t>(a)].size() > v.pieces[static_cast<std::size_t>(b)].size();
  });
  t.pieces_ = std::move(v.pieces);
  t.scores_ = std::move(v.scores);
  t.types_ = std::move(v.types);
  t.specials_ = detail::special_pieces(t.pieces_, t.types_);
  return t;
}

void SpmTokenizer::check_id(std::int32_t id) const {
  if (id < 0 || id >= vocab_size())
    throw_error(errc::out_of_range, fmt::format("token id {} is outside the vocabulary of {} tokens", id, vocab_size()));
}

const std::string& SpmTokenizer::token_text(std::int32_t id) const {
  check_id(id);
  return pieces_[static_cast<std::size_t>(id)];
}

TokenType SpmTokenizer::token_type(std::int32_t id) const {
  check_id(id);
  return types_[static_cast<std::size_t>(id)];
}

float SpmTokenizer::score(std::int32_t id) const {
  check_id(id);
  return scores_[static_cast<std::size_t>(id)];
}

void SpmTokenizer::encode_fragment(std::string_view s, std::vector<std::int32_t>& out) const {
  if (s.empty()) return;
  // One symbol per UTF-8 character (an invalid byte alone).
  std::vector<Symbol> sym;
  sym.reserve(s.size());
  for (std::size_t pos = 0; pos < s.size();) {
    const std::size_t len = detail::decode_utf8(s, pos).len;
    const auto i = static_cast<std::ptrdiff_t>(sym.size());
    sym.push_back({pos, len, i - 1, pos + len == s.size() ? -1 : i + 1});
    pos += len;
  }

  std::vector<Pair> storage;
  storage.reserve(sym.size());
  std::priority_queue<Pair, std::vector<Pair>, PairOrder> queue(PairOrder{}, std::move(storage));
  auto try_pair = [&](std::ptrdiff_t left, std::ptrdiff_t right) {
    if (left < 0 || right < 0) return;
    const Symbol& l = sym[static_cast<std::size_t>(left)];
    const std::size_t len = l.len + sym[static_cast<std::size_t>(right)].len;
    const auto it = mergeable_.find(s.substr(l.start, len));
    if (it == mergeable_.end()) return;
    queue.push({scores_[static_cast<std::size_t>(it->second)], left, right, len});
  };
  for (std::size_t i = 1; i < sym.size(); ++i) try_pair(static_cast<std::ptrdiff_t>(i - 1), static_cast<std::ptrdiff_t>(i));

  while (!queue.empty()) {
    const Pair p = queue.top();
    queue.pop();
    Symbol& l = sym[static_cast<std::size_t>(p.left)];
    Symbol& r = sym[static_cast<std::size_t>(p.right)];
    // Symbols only grow, and only by absorbing their right neighbour: a pair whose lengths no
    // longer add up has had one side merged since it was pushed.
    if (l.len == 0 || r.len == 0 || l.len + r.len != p.len) continue;
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) sym[static_cast<std::size_t>(r.next)].prev = p.left;
    try_pair(l.prev, p.left);
    try_pair(p.left, l.next);
  }

  for (std::ptrdiff_t i = 0; i >= 0; i = sym[static_cast<std::size_t>(i)].next) {
    const Symbol& x = sym[static_cast<std::size_t>(i)];
    const std::string_view text = s.substr(x.start, x.len);
    const auto it = mergeable_.find(text);
    if (it != mergeable_.end()) {
      out.push_back(it->second);
    } else {
      for (char c : text) out.push_back(byte_ids_[static_cast<unsigned char>(c)]);
    }
  }
}

std::vector<std::int32_t> SpmTokenizer::encode(std::string_view text, bool add_bos, bool parse_special) const {
  std::vector<std::int32_t> out;
  if (add_bos) out.push_back(bos_);
  if (!parse_special) {
    encode_text(text, /*space_prefix=*/true, out);
    return out;
  }
  // As llama.cpp: the text between special pieces is encoded on its own, with the space prefix
  // when it starts the text or follows a special piece.
  detail::split_specials(
      text, specials_, [&](std::string_view raw, bool after_special) { encode_text(raw, after_special, out); },
      [&](std::int32_t id) { out.push_back(id); });
  return out;
}

void SpmTokenizer::encode_text(std::string_view text, bool space_prefix, std::vector<std::int32_t>& out) const {
  if (text.empty()) return;

  // The text as SentencePiece sees it: a leading space, every space as "▁".
  std::string s;
  s.reserve(text.size() + text.size() / 2 + kSpace.size());
  if (add_space_prefix_ && space_prefix) s += kSpace;
  for (char c : text) {
    if (c == ' ') s += kSpace;
    else s += c;
  }
  out.reserve(out.size() + s.size() / 3 + 1);

  if (user_defined_.empty()) {
    encode_fragment(s, out);
    return;
  }
  // User-defined pieces are taken verbatim where they occur (the longest at each position), and
  // the text between them is merged on its own.
  bool first_byte[256] = {};
  for (std::int32_t id : user_defined_) first_byte[static_cast<unsigned char>(pieces_[static_cast<std::size_t>(id)][0])] = true;
  std::size_t begin = 0;
  for (std::size_t pos = 0; pos < s.size();) {
    std::int32_t match = -1;
    if (first_byte[static_cast<unsigned char>(s[pos])]) {
      for (std::int32_t id : user_defined_) {
        const std::string& p = pieces_[static_cast<std::size_t>(id)];
        if (s.compare(pos, p.size(), p) == 0) {
          match = id;
          break;
        }
      }
    }
    if (match < 0) {
      ++pos;
      continue;
    }
    encode_fragment(std::string_view(s).substr(begin, pos - begin), out);
    out.push_back(match);
    pos += pieces_[static_cast<std::size_t>(match)].size();
    begin = pos;
  }
  encode_fragment(std::string_view(s).substr(begin), out);
}

std::string SpmTokenizer::piece(std::int32_t id) const {
  check_id(id);
  const auto i = static_cast<std::size_t>(id);
  switch (types_[i]) {
    case TokenType::control: case TokenType::unused: return {};
    case TokenType::unknown: return std::string(kUnknownSurface);
    case TokenType::byte: return std::string(1, static_cast<char>(byte_piece_value(pieces_[i])));
    case TokenType::normal: case TokenType::user_defined: break;
  }
  const std::string& p = pieces_[i];
  std::string text;
  text.reserve(p.size());
  for (std::size_t pos = 0; pos < p.size();) {
    if (p.compare(pos, kSpace.size(), kSpace) == 0) {
      text += ' ';
      pos += kSpace.size();
    } else {
      text += p[pos++];
    }
  }
  return text;
}

std::string SpmTokenizer::decode(std::span<const std::int32_t> ids) const {
  std::string text;
  bool first = true;
  for (std::int32_t id : ids) {
    std::string p = piece(id);
    const TokenType t = types_[static_cast<std::size_t>(id)];
    if (t == TokenType::control || t == TokenType::unused) continue;
    // SentencePiece removes the space that encoding put in front of the text.
    if (first && add_space_prefix_ && (t == TokenType::normal || t == TokenType::user_defined) && !p.empty() &&
        p[0] == ' ')
      p.erase(0, 1);
    first = false;
    text += p;
  }
  return text;
}

}  // namespace quarry
