// quarry/nn/tokenizer.hpp: the SentencePiece BPE (Llama) and WordPiece (BERT) tokenizers give
// exactly the ids of llama.cpp's tokenizer test cases (../shared/data/tokenizers/*.inp / .out,
// made with Hugging Face's tokenizers and add_special_tokens=False); SPM decoding inverts
// encoding; edge cases (empty, spaces, invalid UTF-8, long words) and broken GGUF vocabularies.
#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include <quarry/io/gguf.hpp>
#include <quarry/nn/tokenizer.hpp>

#include "shared_data.hpp"
#include "test_util.hpp"

using namespace quarry;
using namespace quarry::testing;

namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE_MESSAGE(in.good(), "cannot read ", path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// llama.cpp's test files: every case of the .inp is followed by "\n__ggml_vocab_test__\n" (so a
// case's own newlines are those before that one), and line i of the .out holds case i's ids.
struct TokenizerCase {
  std::string text;
  std::vector<std::int32_t> ids;
};

std::vector<TokenizerCase> read_cases(const std::string& inp_path) {
  const std::string inp = read_all(inp_path);
  const std::string out = read_all(inp_path.substr(0, inp_path.size() - 4) + ".out");
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<TokenizerCase> cases;
  for (std::size_t pos = 0; pos < inp.size();) {
    const std::size_t end = inp.find(sep, pos);
    REQUIRE_MESSAGE(end != std::string::npos, "a case of ", inp_path, " lacks its separator");
    cases.push_back({inp.substr(pos, end - pos), {}});
    pos = end + sep.size();
  }
  std::istringstream lines(out);
  std::string line;
  std::size_t i = 0;
  for (; std::getline(lines, line); ++i) {
    REQUIRE(i < cases.size());
    std::istringstream ids(line);
    for (std::int32_t id; ids >> id;) cases[i].ids.push_back(id);
  }
  REQUIRE_MESSAGE(i == cases.size(), inp_path, " has ", cases.size(), " cases but its .out ", i, " lines");
  return cases;
}

std::string show(const std::vector<std::int32_t>& ids) {
  std::string s;
  for (auto id : ids) s += " " + std::to_string(id);
  return s;
}

// Checks every case; returns how many matched.
template <class Encode>
std::size_t check_cases(const std::vector<TokenizerCase>& cases, Encode&& encode) {
  std::size_t equal = 0;
  for (const auto& c : cases) {
    const std::vector<std::int32_t> got = encode(c.text);
    if (got == c.ids) ++equal;
    else FAIL_CHECK("case \"", c.text, "\": got", show(got), ", expected", show(c.ids));
  }
  return equal;
}

// GGUF bytes written field by field, for vocabularies made up by the tests.
class GgufWriter {
 public:
  std::vector<std::byte> bytes;
  std::uint64_t n_kv = 0;

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
  GgufWriter& kv_str(const std::string& key, const std::string& v) {
    ++n_kv;
    return str(key).put<std::uint32_t>(8).str(v);
  }
  GgufWriter& kv_i32(const std::string& key, std::int32_t v) {
    ++n_kv;
    return str(key).put<std::uint32_t>(5).put(v);
  }
  GgufWriter& kv_bool(const std::string& key, bool v) {
    ++n_kv;
    return str(key).put<std::uint32_t>(7).put<std::uint8_t>(v ? 1 : 0);
  }
  GgufWriter& kv_strings(const std::string& key, const std::vector<std::string>& v) {
    ++n_kv;
    str(key).put<std::uint32_t>(9).put<std::uint32_t>(8).put<std::uint64_t>(v.size());
    for (const auto& s : v) str(s);
    return *this;
  }
  GgufWriter& kv_floats(const std::string& key, const std::vector<float>& v) {
    ++n_kv;
    str(key).put<std::uint32_t>(9).put<std::uint32_t>(6).put<std::uint64_t>(v.size());
    for (float f : v) put(f);
    return *this;
  }
  GgufWriter& kv_i32s(const std::string& key, const std::vector<std::int32_t>& v) {
    ++n_kv;
    str(key).put<std::uint32_t>(9).put<std::uint32_t>(5).put<std::uint64_t>(v.size());
    for (auto x : v) put(x);
    return *this;
  }
  // The file: header (no tensors) then the key-values written so far.
  std::vector<std::byte> file() const {
    GgufWriter h;
    h.put<std::uint32_t>(0x46554747).put<std::uint32_t>(3).put<std::uint64_t>(0).put<std::uint64_t>(n_kv);
    h.bytes.insert(h.bytes.end(), bytes.begin(), bytes.end());
    return h.bytes;
  }
};

// A small Llama vocabulary: <unk>, <s>, </s>, the 256 byte tokens, then pieces with scores
// (higher merges first), and one user-defined piece.
struct SmallSpm {
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<float> scores = {0.f, 0.f, 0.f};
  std::vector<std::int32_t> types = {2, 3, 3};

  SmallSpm() {
    char buf[8];
    for (int b = 0; b < 256; ++b) {
      std::snprintf(buf, sizeof buf, "<0x%02X>", b);
      add(buf, 0.f, 6);
    }
    add("\xE2\x96\x81", -1.f);               // 259: ▁
    add("a", -2.f);                          // 260
    add("b", -2.f);                          // 261
    add("c", -2.f);                          // 262
    add("ab", -3.f);                         // 263
    add("bc", -3.f);                         // 264: ties with ab: the leftmost pair merges first
    add("\xE2\x96\x81" "a", -4.f);           // 265: ▁a
    add("abc", -5.f);                        // 266
    add("\xE2\x96\x81\xE2\x96\x81", -6.f);   // 267: ▁▁
    add("<sep>", 0.f, 4);                    // 268: user-defined
    add("\xC3\xA9", -7.f);                   // 269: é
    add("<s>", -1.f, 5);                     // 270: unused: never produced
  }
  void add(const std::string& t, float s, std::int32_t type = 1) {
    tokens.push_back(t);
    scores.push_back(s);
    types.push_back(type);
  }
  GgufWriter writer() const {
    GgufWriter w;
    w.kv_str("tokenizer.ggml.model", "llama");
    w.kv_strings("tokenizer.ggml.tokens", tokens);
    w.kv_floats("tokenizer.ggml.scores", scores);
    w.kv_i32s("tokenizer.ggml.token_type", types);
    w.kv_i32("tokenizer.ggml.bos_token_id", 1);
    w.kv_i32("tokenizer.ggml.eos_token_id", 2);
    return w;
  }
};

result<SpmTokenizer> spm_from(const std::vector<std::byte>& bytes) {
  auto f = GgufFile::parse(bytes, "test vocabulary");
  if (!f.ok()) return f.status();
  return SpmTokenizer::from_gguf(*f);
}

std::string error_of(const result<SpmTokenizer>& r) { return r.ok() ? std::string("ok") : r.status().to_string(); }

// A file under the temp folder, removed when the object dies.
struct TempFile {
  std::string path;
  explicit TempFile(const std::string& name, const std::string& content)
      : path((std::filesystem::temp_directory_path() / (std::to_string(::getpid()) + "_" + name)).string()) {
    std::ofstream(path, std::ios::binary) << content;
  }
  ~TempFile() { std::remove(path.c_str()); }
};

using Ids = std::vector<std::int32_t>;

}  // namespace

// ---- the real vocabularies against llama.cpp's expected ids ----

TEST_CASE("SPM tokenizer: every llama-spm case gives llama.cpp's ids") {
  QUARRY_REQUIRE_SHARED_DATA(path, "tokenizers/ggml-vocab-llama-spm.gguf");
  auto file = GgufFile::open(path);
  REQUIRE_MESSAGE(file.ok(), file.status().to_string());
  auto tok = SpmTokenizer::from_gguf(*file);
  REQUIRE_MESSAGE(tok.ok(), tok.status().to_string());
  CHECK(tok->vocab_size() == 32000);
  CHECK(tok->bos() == 1);
  CHECK(tok->eos() == 2);
  CHECK(tok->unk() == 0);
  CHECK(tok->add_space_prefix());

  const auto cases = read_cases(path + ".inp");
  CHECK(cases.size() == 46);
  const std::size_t equal = check_cases(cases, [&](const std::string& t) { return tok->encode(t, false); });
  MESSAGE("llama-spm: ", equal, " of ", cases.size(), " cases equal");
  CHECK(equal == cases.size());

  // With BOS: the same ids after 1.
  for (const auto& c : cases) {
    Ids want = {1};
    want.insert(want.end(), c.ids.begin(), c.ids.end());
    CHECK(tok->encode(c.text, true) == want);
  }

  // parse_special: "<s>", "</s>" and "<unk>" typed into the text are those tokens, and each
  // stretch of text between them is encoded on its own with the space prefix (llama.cpp's rule).
  auto cat = [](std::initializer_list<Ids> parts) {
    Ids all;
    for (const Ids& p : parts) all.insert(all.end(), p.begin(), p.end());
    return all;
  };
  CHECK(tok->encode("<s>Hello</s>", false, true) == cat({{1}, tok->encode("Hello", false), {2}}));
  CHECK(tok->encode("Hello <s> world<unk>", true, true) ==
        cat({{1}, tok->encode("Hello ", false), {1}, tok->encode(" world", false), {0}}));
  CHECK(tok->encode("<s></s>", false, true) == Ids{1, 2});
  CHECK(tok->encode("<S>", false, true) == tok->encode("<S>", false));  // case-sensitive
  const Ids plain = tok->encode("<s>", false);  // without parse_special: text
  CHECK(plain.size() > 1);
  CHECK(std::find(plain.begin(), plain.end(), 1) == plain.end());
}

TEST_CASE("SPM tokenizer: decode inverts encode on every llama-spm case") {
  QUARRY_REQUIRE_SHARED_DATA(path, "tokenizers/ggml-vocab-llama-spm.gguf");
  auto tok = SpmTokenizer::from_gguf(GgufFile::open(path).value());
  REQUIRE(tok.ok());
  std::size_t equal = 0;
  const auto cases = read_cases(path + ".inp");
  for (const auto& c : cases) {
    const std::string plain = tok->decode(tok->encode(c.text, false));
    const std::string with_bos = tok->decode(tok->encode(c.text, true));
    CHECK_MESSAGE(plain == c.text, "case \"", c.text, "\" decodes to \"", plain, "\"");
    CHECK(with_bos == c.text);
    equal += plain == c.text && with_bos == c.text;
  }
  MESSAGE("llama-spm round trip: ", equal, " of ", cases.size(), " cases");

  // Pieces keep their space; decode drops only the one encoding added; bytes come back whole.
  CHECK(tok->piece(15043) == " Hello");
  CHECK(tok->piece(1).empty());    // <s>: control
  CHECK(tok->piece(13) == "\n");   // <0x0A>
  CHECK(tok->decode(Ids{1, 15043, 3186, 2}) == "Hello world");
  CHECK(tok->decode(Ids{29871, 243, 162, 169, 156}) == "\xF0\x9F\xA6\x99");  // " 🦙" less the prefix
  CHECK(tok->decode(Ids{0}) == " \xE2\x81\x87 ");                           // <unk> as SentencePiece
  CHECK(contains(thrown([&] { (void)tok->decode(Ids{32000}); }), "token id 32000 is outside"));
  CHECK(contains(thrown([&] { (void)tok->piece(-1); }), "token id -1 is outside"));
}

TEST_CASE("SPM tokenizer: 100 KB of text encodes in well under a second") {
  QUARRY_REQUIRE_SHARED_DATA(path, "tokenizers/ggml-vocab-llama-spm.gguf");
  auto tok = SpmTokenizer::from_gguf(GgufFile::open(path).value());
  REQUIRE(tok.ok());
  std::string text;
  for (const auto& c : read_cases(path + ".inp")) text += c.text + " ";
  // One long run without spaces too: merges are not bounded by words in SentencePiece.
  while (text.size() < 100000) text += "Hello, y'all! How are you 😁 ?我想在apple工作1314151天～ aaaaaaaaaa";
  const auto t0 = std::chrono::steady_clock::now();
  const Ids ids = tok->encode(text, true);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("SPM: ", text.size(), " bytes -> ", ids.size(), " tokens in ", s * 1e3, " ms");
  CHECK(tok->decode(ids) == text);
  CHECK(s < (kSanitized ? 10.0 : 1.0));
}

TEST_CASE("SPM tokenizer: the stories260K model's own vocabulary") {
  QUARRY_REQUIRE_SHARED_DATA(path, "models/stories260K/stories260K.gguf");
  auto tok = SpmTokenizer::from_gguf(GgufFile::open(path).value());
  REQUIRE_MESSAGE(tok.ok(), tok.status().to_string());
  CHECK(tok->vocab_size() == 512);
  CHECK(tok->bos() == 1);
  const std::string text = "Once upon a time, there was a little girl named Lily. 🦙\n";
  const Ids ids = tok->encode(text, true);
  CHECK(ids.front() == 1);
  CHECK(ids.size() < text.size());
  CHECK(tok->decode(ids) == text);
}

TEST_CASE("WordPiece tokenizer: every bert-bge case gives the expected ids, from GGUF and from vocab.txt") {
  QUARRY_REQUIRE_SHARED_DATA(path, "tokenizers/ggml-vocab-bert-bge.gguf");
  const auto cases = read_cases(path + ".inp");
  CHECK(cases.size() == 46);

  auto file = GgufFile::open(path);
  REQUIRE_MESSAGE(file.ok(), file.status().to_string());
  auto gguf = WordPieceTokenizer::from_gguf(*file);
  REQUIRE_MESSAGE(gguf.ok(), gguf.status().to_string());
  CHECK(gguf->vocab_size() == 30522);
  CHECK(gguf->unk() == 100);
  CHECK(gguf->cls() == 101);
  CHECK(gguf->sep() == 102);
  CHECK(gguf->token_text(7592) == "hello");
  CHECK(gguf->token_text(2094) == "##d");
  std::size_t equal = check_cases(cases, [&](const std::string& t) { return gguf->encode(t, false); });
  MESSAGE("bert-bge (GGUF): ", equal, " of ", cases.size(), " cases equal");
  CHECK(equal == cases.size());

  QUARRY_REQUIRE_SHARED_DATA(vocab, "tokenizers/all-MiniLM-L6-v2/vocab.txt");
  auto txt = WordPieceTokenizer::from_vocab_file(vocab, /*lowercase=*/true);
  REQUIRE_MESSAGE(txt.ok(), txt.status().to_string());
  CHECK(txt->vocab_size() == 30522);
  for (std::int32_t id = 0; id < txt->vocab_size(); ++id) REQUIRE(txt->token_text(id) == gguf->token_text(id));
  equal = check_cases(cases, [&](const std::string& t) { return txt->encode(t, false); });
  MESSAGE("bert-bge (all-MiniLM-L6-v2 vocab.txt): ", equal, " of ", cases.size(), " cases equal");
  CHECK(equal == cases.size());

  // [CLS] ... [SEP] with add_special; decode joins continuations and leaves the specials out.
  const Ids ids = txt->encode("Hello, y'all! Führer", true);
  CHECK(ids == Ids{101, 7592, 1010, 1061, 1005, 2035, 999, 11865, 17875, 102});
  CHECK(txt->decode(ids) == "hello , y ' all ! fuhrer");
  CHECK(txt->decode(Ids{100, 2023}) == "[UNK] this");
  CHECK(txt->encode("[CLS] hello[SEP]", false, true) == Ids{101, 7592, 102});
  CHECK(gguf->encode("[CLS] hello[SEP]", false, true) == Ids{101, 7592, 102});
  CHECK(contains(thrown([&] { (void)txt->decode(Ids{30522}); }), "token id 30522 is outside"));

  // 100 KB in well under a second.
  std::string text;
  for (const auto& c : cases) text += c.text + " ";
  while (text.size() < 100000) text += text.substr(0, 1000);
  const auto t0 = std::chrono::steady_clock::now();
  const Ids many = txt->encode(text, true);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  MESSAGE("WordPiece: ", text.size(), " bytes -> ", many.size(), " tokens in ", s * 1e3, " ms");
  CHECK(s < (kSanitized ? 10.0 : 1.0));
}

// ---- edge cases on small made-up vocabularies ----

TEST_CASE("SPM tokenizer: merges by score, leftmost on ties; byte fallback; empty and space-only text") {
  const SmallSpm v;
  auto tok = spm_from(v.writer().file());
  REQUIRE_MESSAGE(tok.ok(), error_of(tok));
  CHECK(tok->vocab_size() == 271);

  CHECK(tok->encode("", false).empty());
  CHECK(tok->encode("", true) == Ids{1});
  CHECK(tok->decode(Ids{}).empty());
  CHECK(tok->decode(Ids{1}).empty());
  // "▁" + "a" merge (-4) only after "a"+"b" (-3) had its chance: "▁ab" -> ▁ ab.
  CHECK(tok->encode("ab", false) == Ids{259, 263});
  // ab and bc tie at -3: the leftmost pair (a, b) merges first, then ab + c -> abc.
  CHECK(tok->encode("abc", false) == Ids{259, 266});
  CHECK(tok->encode("a", false) == Ids{265});
  // Spaces: the prefix and each space are ▁; pairs of them merge left to right.
  CHECK(tok->encode(" ", false) == Ids{267});
  CHECK(tok->encode("  ", false) == Ids{267, 259});
  CHECK(tok->encode("   ", false) == Ids{267, 267});
  for (const std::string t : {" ", "  ", "   ", "a b", " ab  c "}) CHECK(tok->decode(tok->encode(t, true)) == t);
  // Characters outside the vocabulary fall back to their bytes.
  CHECK(tok->encode("z\xC3\xA9\xE2\x82\xAC", false) == Ids{259, 3 + 'z', 269, 3 + 0xE2, 3 + 0x82, 3 + 0xAC});
  // The unused piece "<s>" is never produced from text; the user-defined "<sep>" always is.
  CHECK(tok->encode("<s>", false) == Ids{259, 3 + '<', 3 + 's', 3 + '>'});
  CHECK(tok->encode("ab<sep>c", false) == Ids{259, 263, 268, 262});
  CHECK(tok->decode(tok->encode("ab<sep>c", false)) == "ab<sep>c");
  // The one text that does not come back: a "▁" of the text's own is a space once decoded.
  CHECK(tok->encode("a\xE2\x96\x81" "b", false) == Ids{265, 259, 261});
  CHECK(tok->decode(Ids{265, 259, 261}) == "a b");
}

TEST_CASE("SPM tokenizer: invalid UTF-8 falls back to bytes and decodes back to the same bytes") {
  auto tok = spm_from(SmallSpm().writer().file());
  REQUIRE(tok.ok());
  const std::vector<std::string> texts = {
      std::string("\xFF"), std::string("a\x80" "b"), std::string("\xC3"), std::string("\xE2\x82"),
      std::string("\xC0\xAF"),                       // overlong "/"
      std::string("\xED\xA0\x80"),                   // a surrogate
      std::string("\xF4\x90\x80\x80"),               // above U+10FFFF
      std::string("x\0y", 3),                        // NUL
  };
  for (const auto& t : texts) {
    const Ids ids = tok->encode(t, true);
    for (auto id : ids) CHECK((id >= 0 && id < tok->vocab_size()));
    CHECK(tok->decode(ids) == t);
  }
  CHECK(tok->encode("\xFF", false) == Ids{259, 3 + 0xFF});
  CHECK(tok->encode("\xC3", false) == Ids{259, 3 + 0xC3});  // a truncated é is its byte
  CHECK(tok->piece(3 + 0xFF) == "\xFF");
}

TEST_CASE("SPM tokenizer: without add_space_prefix, no space is added or removed") {
  SmallSpm v;
  GgufWriter w = v.writer();
  w.kv_bool("tokenizer.ggml.add_space_prefix", false);
  auto tok = spm_from(w.file());
  REQUIRE(tok.ok());
  CHECK(!tok->add_space_prefix());
  CHECK(tok->encode("ab", false) == Ids{263});
  CHECK(tok->encode(" a", false) == Ids{265});
  CHECK(tok->decode(Ids{265}) == " a");
}

TEST_CASE("SPM tokenizer: a broken vocabulary is an error naming the key") {
  const SmallSpm v;
  auto build = [&](auto&& edit) {
    GgufWriter w;
    edit(w);
    return error_of(spm_from(w.file()));
  };
  // Missing arrays.
  std::string e = build([&](GgufWriter& w) {
    w.kv_str("tokenizer.ggml.model", "llama");
    w.kv_floats("tokenizer.ggml.scores", v.scores);
  });
  CHECK(contains(e, "not_found"));
  CHECK(contains(e, "tokenizer.ggml.tokens is missing"));
  e = build([&](GgufWriter& w) {
    w.kv_str("tokenizer.ggml.model", "llama");
    w.kv_strings("tokenizer.ggml.tokens", v.tokens);
  });
  CHECK(contains(e, "tokenizer.ggml.scores is missing"));
  CHECK(contains(build([&](GgufWriter& w) { w.kv_strings("tokenizer.ggml.tokens", v.tokens); }),
                 "tokenizer.ggml.model is missing"));
  // Different lengths.
  e = build([&](GgufWriter& w) {
    w.kv_str("tokenizer.ggml.model", "llama");
    w.kv_strings("tokenizer.ggml.tokens", v.tokens);
    w.kv_floats("tokenizer.ggml.scores", std::vector<float>(v.scores.begin(), v.scores.end() - 1));
  });
  CHECK(contains(e, "corrupt_data"));
  CHECK(contains(e, "tokenizer.ggml.scores has 270 elements but tokenizer.ggml.tokens has 271"));
  e = build([&](GgufWriter& w) {
    w.kv_str("tokenizer.ggml.model", "llama");
    w.kv_strings("tokenizer.ggml.tokens", v.tokens);
    w.kv_floats("tokenizer.ggml.scores", v.scores);
    auto types = v.types;
    types.push_back(1);
    w.kv_i32s("tokenizer.ggml.token_type", types);
  });
  CHECK(contains(e, "tokenizer.ggml.token_type has 272 elements but tokenizer.ggml.tokens has 271"));
  // Wrong kinds, bad values.
  e = build([&](GgufWriter& w) {
    w.kv_str("tokenizer.ggml.model", "llama");
    w.kv_strings("tokenizer.ggml.tokens", v.tokens);
    w.kv_strings("tokenizer.ggml.scores", v.tokens);
  });
  CHECK(contains(e, "tokenizer.ggml.scores is an array of string, not of floats"));
  e = build([&](GgufWriter& w) {
    w.kv_str("tokenizer.ggml.model", "llama");
    w.kv_i32("tokenizer.ggml.tokens", 3);
  });
  CHECK(contains(e, "tokenizer.ggml.tokens holds a i32, not an array of strings"));
  CHECK(contains(build([&](GgufWriter& w) {
                   w.kv_str("tokenizer.ggml.model", "gpt2");
                   w.kv_strings("tokenizer.ggml.tokens", v.tokens);
                 }),
                 "tokenizer.ggml.model is \"gpt2\""));
  e = build([&](GgufWriter& w) {
    w = v.writer();
    w.kv_i32("tokenizer.ggml.unknown_token_id", 271);
  });
  CHECK(contains(e, "out_of_range"));
  CHECK(contains(e, "tokenizer.ggml.unknown_token_id is 271, outside the vocabulary of 271 tokens"));
  e = build([&](GgufWriter& w) {
    w.kv_str("tokenizer.ggml.model", "llama");
    w.kv_strings("tokenizer.ggml.tokens", v.tokens);
    w.kv_floats("tokenizer.ggml.scores", v.scores);
    auto types = v.types;
    types[5] = 9;
    w.kv_i32s("tokenizer.ggml.token_type", types);
  });
  CHECK(contains(e, "tokenizer.ggml.token_type[5] is 9"));
  e = build([&](GgufWriter& w) {
    w.kv_str("tokenizer.ggml.model", "llama");
    w.kv_strings("tokenizer.ggml.tokens", v.tokens);
    w.kv_floats("tokenizer.ggml.scores", v.scores);
    auto types = v.types;
    types[260] = 6;  // "a" typed as a byte token
    w.kv_i32s("tokenizer.ggml.token_type", types);
  });
  CHECK(contains(e, "tokenizer.ggml.token_type[260] says byte"));
  e = build([&](GgufWriter& w) {
    w.kv_str("tokenizer.ggml.model", "llama");
    w.kv_strings("tokenizer.ggml.tokens", {});
    w.kv_floats("tokenizer.ggml.scores", {});
  });
  CHECK(contains(e, "tokenizer.ggml.tokens is an empty array"));
}

TEST_CASE("SPM tokenizer: without token types, <0xNN> pieces are bytes and the special ids control") {
  const SmallSpm v;
  GgufWriter w;
  w.kv_str("tokenizer.ggml.model", "llama");
  w.kv_strings("tokenizer.ggml.tokens", v.tokens);
  w.kv_floats("tokenizer.ggml.scores", v.scores);
  auto tok = spm_from(w.file());
  REQUIRE_MESSAGE(tok.ok(), error_of(tok));
  CHECK(tok->token_type(1) == TokenType::control);
  CHECK(tok->token_type(3 + 'z') == TokenType::byte);
  CHECK(tok->encode("z", true) == Ids{1, 259, 3 + 'z'});
  CHECK(tok->decode(Ids{1, 259, 3 + 'z', 2}) == "z");
}

TEST_CASE("WordPiece tokenizer: basic tokenization and greedy longest-match pieces") {
  const std::string vocab =
      "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nhello\nhe\n##llo\n##l\n##o\nworld\n,\n!\ncafe\n\xE4\xB8\xAD\n\xE6\x96\x87\n"
      "a\n##a\nx\r\n";  // ids 0..18; a CRLF line end
  TempFile f("quarry_test_vocab.txt", vocab);
  auto tok = WordPieceTokenizer::from_vocab_file(f.path, /*lowercase=*/true);
  REQUIRE_MESSAGE(tok.ok(), tok.status().to_string());
  CHECK(tok->vocab_size() == 19);
  CHECK(tok->find("x") == 18);
  CHECK(tok->unk() == 1);
  CHECK(tok->cls() == 2);
  CHECK(tok->sep() == 3);

  CHECK(tok->encode("", false).empty());
  CHECK(tok->encode("", true) == Ids{2, 3});
  CHECK(tok->encode(" \t\n  ", false).empty());
  // Lower-casing, accent stripping, punctuation split off.
  CHECK(tok->encode("HELLO, World!", false) == Ids{5, 11, 10, 12});
  CHECK(tok->encode("Caf\xC3\xA9", false) == Ids{13});       // Café
  CHECK(tok->encode("Cafe\xCC\x81", false) == Ids{13});      // Cafe + combining acute
  // Greedy longest match with ## continuations; a word that cannot be split is [UNK] whole.
  CHECK(tok->encode("hellolo", false) == Ids{5, 8, 9});     // hello ##l ##o
  CHECK(tok->encode("helloz", false) == Ids{1});
  CHECK(tok->encode("aaa", false) == Ids{16, 17, 17});
  // CJK characters are words of their own; control characters are removed.
  CHECK(tok->encode("\xE4\xB8\xAD\xE6\x96\x87hello", false) == Ids{14, 15, 5});
  CHECK(tok->encode("hel\x01lo\xE2\x80\x8B", false) == Ids{5});  // \x01 and a zero-width space
  // Invalid UTF-8 is dropped, never a crash.
  CHECK(tok->encode("hel\xFFlo \xC3", false) == Ids{5});
  // 100 characters still split; 101 are [UNK].
  CHECK(tok->encode(std::string(100, 'a'), false).size() == 100);
  CHECK(tok->encode(std::string(101, 'a'), false) == Ids{1});

  CHECK(tok->decode(Ids{2, 5, 8, 9, 11, 10, 3, 0}) == "hellolo , world");

  // Special-token text: plain text by default ("[" "cls" "]", lower-cased, cls unknown), the
  // token itself with parse_special, case-sensitive, anywhere in a word.
  CHECK(tok->encode("[CLS]", false) == Ids{1, 1, 1});
  CHECK(tok->encode("[CLS]", false, true) == Ids{2});
  CHECK(tok->encode("hello[SEP]world [MASK]!", true, true) == Ids{2, 5, 3, 10, 4, 12, 3});
  CHECK(tok->encode("[UNK][PAD]x", false, true) == Ids{1, 0, 18});
  CHECK(tok->encode("[cls] [SEP", false, true) == Ids{1, 1, 1, 1, 1});  // not special: [ cls ] [ sep
  CHECK(tok->encode("", false, true).empty());

  // Cased: no lower-casing, no accent stripping.
  auto cased = WordPieceTokenizer::from_vocab_file(f.path, /*lowercase=*/false);
  REQUIRE(cased.ok());
  CHECK(!cased->lowercase());
  CHECK(cased->encode("Hello hello", false) == Ids{1, 5});
  CHECK(cased->encode("caf\xC3\xA9", false) == Ids{1});
}

TEST_CASE("WordPiece tokenizer: a broken vocabulary is an error naming the file or key") {
  auto missing = WordPieceTokenizer::from_vocab_file("/nonexistent/quarry/vocab.txt");
  CHECK(missing.status().code() == errc::io_error);
  CHECK(contains(missing.status(), "/nonexistent/quarry/vocab.txt"));
  TempFile empty("quarry_test_empty_vocab.txt", "");
  CHECK(contains(WordPieceTokenizer::from_vocab_file(empty.path).status(), "is empty"));
  TempFile no_unk("quarry_test_nounk_vocab.txt", "a\nb\n");
  CHECK(contains(WordPieceTokenizer::from_vocab_file(no_unk.path).status(), "has no [UNK] line"));

  auto from = [](GgufWriter w) {
    const auto bytes = w.file();
    auto f = GgufFile::parse(bytes, "test vocabulary");
    REQUIRE(f.ok());
    const auto r = WordPieceTokenizer::from_gguf(*f);
    return r.ok() ? std::string("ok") : r.status().to_string();
  };
  GgufWriter w;
  w.kv_str("tokenizer.ggml.model", "bert");
  CHECK(contains(from(w), "tokenizer.ggml.tokens is missing"));
  w.kv_strings("tokenizer.ggml.tokens", {"[PAD]", "[UNK]", "\xE2\x96\x81" "a", "b"});
  CHECK(from(w) == "ok");
  GgufWriter bad_types = w;
  bad_types.kv_i32s("tokenizer.ggml.token_type", {3, 3, 1});
  CHECK(contains(from(bad_types), "tokenizer.ggml.token_type has 3 elements but tokenizer.ggml.tokens has 4"));
  GgufWriter bad_unk = w;
  bad_unk.kv_i32("tokenizer.ggml.unknown_token_id", -1);
  CHECK(contains(from(bad_unk), "tokenizer.ggml.unknown_token_id is -1"));
  GgufWriter bad_sep = w;
  bad_sep.kv_i32("tokenizer.ggml.seperator_token_id", 4);
  CHECK(contains(from(bad_sep), "tokenizer.ggml.seperator_token_id is 4, outside"));

  // The phantom-space form of llama.cpp's converter reads back as WordPiece.
  const auto bytes = w.file();
  auto tok = WordPieceTokenizer::from_gguf(GgufFile::parse(bytes, "test").value());
  REQUIRE(tok.ok());
  CHECK(tok->token_text(2) == "a");
  CHECK(tok->token_text(3) == "##b");
  CHECK(tok->unk() == 1);
  CHECK(tok->cls() == -1);
  CHECK(tok->encode("ab A", true) == Ids{2, 3, 2});
}

TEST_CASE("tokenizers: random bytes never crash, SPM gives them back exactly") {
  auto spm = spm_from(SmallSpm().writer().file());
  REQUIRE(spm.ok());
  TempFile f("quarry_test_random_vocab.txt", "[UNK]\n[CLS]\n[SEP]\na\n##a\nb\n##b\n\xC3\xA9\n");
  auto wp = WordPieceTokenizer::from_vocab_file(f.path);
  REQUIRE(wp.ok());
  std::mt19937 rng(7);
  // Bytes biased towards spaces, ASCII letters and UTF-8 lead/continuation bytes.
  static const char kAlphabet[] = " ab\t\n<sep>\xC3\xA9\xE2\x96\x81\x80\xBF\xF0\x9F\xFF\0";
  const std::string alphabet(kAlphabet, sizeof kAlphabet - 1);  // with the NUL
  for (int round = 0; round < 2000; ++round) {
    std::string t(rng() % 40, '\0');
    for (char& c : t) c = rng() % 4 ? alphabet[rng() % alphabet.size()] : static_cast<char>(rng());
    const Ids ids = spm->encode(t, round % 2 == 0);
    bool in_range = true;
    for (auto id : ids) in_range = in_range && id >= 0 && id < spm->vocab_size();
    REQUIRE(in_range);
    if (t.find("\xE2\x96\x81") == std::string::npos) REQUIRE(spm->decode(ids) == t);
    const Ids w = wp->encode(t, true);
    REQUIRE(w.size() >= 2);
    (void)wp->decode(w);
  }
}
