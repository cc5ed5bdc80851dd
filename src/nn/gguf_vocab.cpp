#include "gguf_vocab.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <variant>

#include <fmt/format.h>

namespace quarry::detail {

namespace {

constexpr std::string_view kModelKey = "tokenizer.ggml.model";
constexpr std::string_view kTokensKey = "tokenizer.ggml.tokens";
constexpr std::string_view kScoresKey = "tokenizer.ggml.scores";
constexpr std::string_view kTypesKey = "tokenizer.ggml.token_type";

// The array at `key`, or an error naming it: not_found when absent, invalid_argument when the
// value is not an array or its elements are not of the kind wanted.
result<const GgufArray*> find_array(const GgufFile& file, std::string_view key, std::string_view kind) {
  const GgufValue* v = file.find(key);
  if (v == nullptr) return status(errc::not_found, fmt::format("GGUF key {} is missing", key));
  const GgufArray* a = v->as_array();
  if (a == nullptr)
    return status(errc::invalid_argument, fmt::format("GGUF key {} holds a {}, not an array of {}", key,
                                                      gguf_value_type_name(v->type), kind));
  const bool ok = kind == "strings"  ? a->type == GgufValueType::string
                  : kind == "floats" ? (a->type == GgufValueType::f32 || a->type == GgufValueType::f64)
                                     : a->ints.size() == a->size() && a->type != GgufValueType::boolean;
  if (!ok)
    return status(errc::invalid_argument, fmt::format("GGUF key {} is an array of {}, not of {}", key,
                                                      gguf_value_type_name(a->type), kind));
  return a;
}

status check_length(std::string_view key, std::size_t n, std::size_t n_tokens) {
  if (n == n_tokens) return {};
  return status(errc::corrupt_data,
                fmt::format("GGUF key {} has {} elements but {} has {}", key, n, kTokensKey, n_tokens));
}

}  // namespace

result<GgufVocab> read_gguf_vocab(const GgufFile& file, std::string_view model, bool with_scores) {
  const GgufValue* m = file.find(kModelKey);
  if (m == nullptr) return status(errc::not_found, fmt::format("GGUF key {} is missing", kModelKey));
  const std::string* name = m->as_string();
  if (name == nullptr)
    return status(errc::invalid_argument,
                  fmt::format("GGUF key {} holds a {}, not a string", kModelKey, gguf_value_type_name(m->type)));
  if (*name != model)
    return status(errc::invalid_argument,
                  fmt::format("GGUF key {} is \"{}\"; this tokenizer reads \"{}\"", kModelKey, *name, model));

  GgufVocab v;
  QUARRY_ASSIGN_OR_RETURN(const GgufArray* tokens, find_array(file, kTokensKey, "strings"));
  if (tokens->strings.empty())
    return status(errc::corrupt_data, fmt::format("GGUF key {} is an empty array", kTokensKey));
  if (tokens->strings.size() > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()))
    return status(errc::out_of_range, fmt::format("GGUF key {} has {} tokens, more than int32 ids can number",
                                                  kTokensKey, tokens->strings.size()));
  const std::size_t n = tokens->strings.size();
  v.pieces = tokens->strings;

  if (with_scores) {
    QUARRY_ASSIGN_OR_RETURN(const GgufArray* scores, find_array(file, kScoresKey, "floats"));
    QUARRY_RETURN_IF_ERROR(check_length(kScoresKey, scores->floats.size(), n));
    v.scores.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      const double s = scores->floats[i];
      if (!std::isfinite(s))
        return status(errc::corrupt_data, fmt::format("GGUF key {}[{}] is {}, not a finite score", kScoresKey, i, s));
      v.scores[i] = static_cast<float>(s);
    }
  }

  v.types.assign(n, TokenType::normal);
  if (file.find(kTypesKey) != nullptr) {
    QUARRY_ASSIGN_OR_RETURN(const GgufArray* types, find_array(file, kTypesKey, "integers"));
    QUARRY_RETURN_IF_ERROR(check_length(kTypesKey, types->ints.size(), n));
    for (std::size_t i = 0; i < n; ++i) {
      const std::int64_t t = types->ints[i];
      if (t < 0 || t > 6)
        return status(errc::corrupt_data,
                      fmt::format("GGUF key {}[{}] is {}, not a token type (0 to 6)", kTypesKey, i, t));
      // 0 is llama.cpp's "undefined": read as normal.
      v.types[i] = t == 0 ? TokenType::normal : static_cast<TokenType>(t);
    }
    v.has_types = true;
  }
  return v;
}

result<std::int32_t> read_token_id(const GgufFile& file, std::string_view key, std::int32_t fallback,
                                   std::size_t n_tokens) {
  const GgufValue* v = file.find(key);
  if (v == nullptr) return fallback;
  const auto id = v->as_int();
  if (!id)
    return status(errc::invalid_argument,
                  fmt::format("GGUF key {} holds a {}, not a token id", key, gguf_value_type_name(v->type)));
  if (*id < 0 || static_cast<std::uint64_t>(*id) >= n_tokens)
    return status(errc::out_of_range,
                  fmt::format("GGUF key {} is {}, outside the vocabulary of {} tokens", key, *id, n_tokens));
  return static_cast<std::int32_t>(*id);
}

result<bool> read_bool(const GgufFile& file, std::string_view key, bool fallback) {
  const GgufValue* v = file.find(key);
  if (v == nullptr) return fallback;
  if (const bool* b = std::get_if<bool>(&v->data)) return *b;
  return status(errc::invalid_argument,
                fmt::format("GGUF key {} holds a {}, not a bool", key, gguf_value_type_name(v->type)));
}

std::vector<std::pair<std::string, std::int32_t>> special_pieces(const std::vector<std::string>& pieces,
                                                                 const std::vector<TokenType>& types) {
  std::vector<std::pair<std::string, std::int32_t>> out;
  for (std::size_t i = 0; i < pieces.size(); ++i) {
    if ((types[i] != TokenType::control && types[i] != TokenType::unknown) || pieces[i].empty()) continue;
    const auto same = std::find_if(out.begin(), out.end(), [&](const auto& e) { return e.first == pieces[i]; });
    if (same != out.end()) same->second = static_cast<std::int32_t>(i);  // a repeated piece: the last id
    else out.emplace_back(pieces[i], static_cast<std::int32_t>(i));
  }
  return out;
}

SpecialMatch find_special(std::string_view text, const std::vector<std::pair<std::string, std::int32_t>>& specials) noexcept {
  SpecialMatch m;
  for (const auto& [piece, id] : specials) {
    const std::size_t f = text.find(piece);
    if (f == std::string_view::npos) continue;
    if (f < m.at || (f == m.at && piece.size() > m.size)) m = {f, piece.size(), id};
  }
  return m;
}

}  // namespace quarry::detail
