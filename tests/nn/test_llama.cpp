// quarry/nn/llama.hpp on the real stories260K model: greedy decoding from BOS reproduces
// llama.cpp's 200-step output byte for byte in f32; a prompt fed at once (prefill attention)
// equals the same prompt fed token by token; a batch equals its sequences run alone; a prompt
// continued from the prefix cache equals one computed in full; quantized weights and K/V keep
// close to the f32 run (token agreement and the f32 text's negative log-likelihood, reported and
// bounded); bad calls are errors that leave the pool as it was.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <quarry/io/gguf.hpp>
#include <quarry/kv/block_pool.hpp>
#include <quarry/kv/paged_attention.hpp>
#include <quarry/nn/llama.hpp>
#include <quarry/nn/ops.hpp>
#include <quarry/nn/sampler.hpp>

#include "shared_data.hpp"
#include "test_util.hpp"

using namespace quarry;
using quarry::testing::contains;

namespace {


// The text of token ids by the GGUF vocabulary: "▁" is a space, <0xNN> a byte; the leading space
// of the first piece is dropped, as SentencePiece's decoder does.
std::string detokenize(const GgufFile& file, const std::vector<std::int32_t>& ids) {
  const GgufArray* tokens = file.find("tokenizer.ggml.tokens")->as_array();
  std::string out;
  for (const std::int32_t id : ids) {
    const std::string& p = tokens->strings[static_cast<std::size_t>(id)];
    if (p.size() == 6 && p.rfind("<0x", 0) == 0) {
      out += static_cast<char>(std::stoi(p.substr(3, 2), nullptr, 16));
      continue;
    }
    for (std::size_t i = 0; i < p.size();) {
      if (p.compare(i, 3, "\xe2\x96\x81") == 0) {
        out += ' ';
        i += 3;
      } else {
        out += p[i++];
      }
    }
  }
  if (!out.empty() && out[0] == ' ') out.erase(0, 1);
  return out;
}

// Logits of the next token after feeding `tokens` to a new sequence in one call.
std::vector<float> feed(const LlamaModel& m, BlockPool& pool, SequenceId s, std::span<const std::int32_t> tokens) {
  Tensor<float> logits({1, m.config().vocab_size});
  const std::span<const std::int32_t> lists[] = {tokens};
  const status st = m.forward(pool, std::span<const SequenceId>(&s, 1), lists, logits.view());
  REQUIRE_MESSAGE(st.ok(), st.message());
  return {logits.data(), logits.data() + logits.numel()};
}

// Greedy decoding of `steps` tokens after `prompt` on a fresh sequence.
std::vector<std::int32_t> greedy(const LlamaModel& m, BlockPool& pool, std::vector<std::int32_t> prompt, int steps) {
  const SequenceId s = pool.create();
  std::vector<std::int32_t> out;
  std::vector<float> logits = feed(m, pool, s, prompt);
  for (int i = 0; i < steps; ++i) {
    const std::int32_t next = static_cast<std::int32_t>(argmax(logits));
    out.push_back(next);
    if (i + 1 < steps) logits = feed(m, pool, s, std::span<const std::int32_t>(&next, 1));
  }
  REQUIRE(pool.release(s).ok());
  return out;
}

// Teacher forcing over `text` (BOS first): the mean negative log-likelihood of text[1..] and the
// fraction of positions whose argmax is the text's next token.
struct Forced {
  double nll = 0;
  double agreement = 0;
};
Forced teacher_forced(const LlamaModel& m, BlockPool& pool, const std::vector<std::int32_t>& text) {
  const SequenceId s = pool.create();
  Forced f;
  for (std::size_t i = 0; i + 1 < text.size(); ++i) {
    std::vector<float> logits = feed(m, pool, s, std::span<const std::int32_t>(&text[i], 1));
    const std::int32_t next = text[i + 1];
    f.agreement += argmax(logits) == next ? 1 : 0;
    softmax(logits);
    f.nll -= std::log(static_cast<double>(logits[static_cast<std::size_t>(next)]));
  }
  REQUIRE(pool.release(s).ok());
  f.nll /= static_cast<double>(text.size() - 1);
  f.agreement /= static_cast<double>(text.size() - 1);
  return f;
}

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

double max_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - b[i]));
  return worst;
}

}  // namespace

TEST_CASE("llama: stories260K greedy from BOS reproduces llama.cpp's 200 steps byte for byte (f32)") {
  QUARRY_REQUIRE_SHARED_DATA(model_path, "models/stories260K/stories260K.gguf");
  QUARRY_REQUIRE_SHARED_DATA(expected_path, "models/stories260K/greedy_200steps_expected.txt");
  const GgufFile file = GgufFile::open(model_path).value();
  const LlamaModel m = LlamaModel::load(file).value();
  const LlamaConfig& c = m.config();
  CHECK(c.dim == 64);
  CHECK(c.n_layers == 5);
  CHECK(c.n_heads == 8);
  CHECK(c.n_kv_heads == 4);
  CHECK(c.vocab_size == 512);
  BlockPool pool = BlockPool::create(m.kv_options(DType::f32, 64)).value();
  const std::vector<std::int32_t> ids = greedy(m, pool, {1}, 200);
  // The file is the text followed by one newline.
  CHECK(detokenize(file, ids) + "\n" == read_all(expected_path));
  CHECK(pool.free_pages() == pool.num_pages());
}

TEST_CASE("llama: a prompt fed at once equals it fed token by token; a batch equals its sequences alone") {
  QUARRY_REQUIRE_SHARED_DATA(model_path, "models/stories260K/stories260K.gguf");
  const GgufFile file = GgufFile::open(model_path).value();
  const LlamaModel m = LlamaModel::load(file).value();
  BlockPool pool = BlockPool::create(m.kv_options(DType::f32, 256)).value();
  std::vector<std::int32_t> text = {1};
  for (const std::int32_t t : greedy(m, pool, {1}, 70)) text.push_back(t);

  // Prefill of 40 tokens at once, then token by token.
  const std::span<const std::int32_t> prompt(text.data(), 40);
  const SequenceId a = pool.create(), b = pool.create();
  const std::vector<float> at_once = feed(m, pool, a, prompt);
  std::vector<float> one_by_one;
  for (const std::int32_t t : prompt) one_by_one = feed(m, pool, b, std::span<const std::int32_t>(&t, 1));
  CHECK(max_diff(at_once, one_by_one) < 1e-4);
  CHECK(argmax(at_once) == text[40]);
  // K/V written by prefill serve later decode steps.
  CHECK(max_diff(feed(m, pool, a, std::span<const std::int32_t>(&text[40], 1)),
                 feed(m, pool, b, std::span<const std::int32_t>(&text[40], 1))) < 1e-4);

  // A batch mixing a prompt (17 tokens), a continuation (5 tokens) and a decode step (1 token).
  const SequenceId s1 = pool.create(), s2 = pool.create();
  (void)feed(m, pool, s2, std::span<const std::int32_t>(text.data(), 30));
  const SequenceId s3 = pool.fork(a).value();
  const SequenceId seqs[] = {s1, s2, s3};
  const std::span<const std::int32_t> lists[] = {std::span<const std::int32_t>(text.data(), 17), std::span<const std::int32_t>(&text[30], 5),
                                                 std::span<const std::int32_t>(&text[41], 1)};
  Tensor<float> logits({3, m.config().vocab_size});
  REQUIRE(m.forward(pool, seqs, lists, logits.view()).ok());
  const SequenceId r1 = pool.create(), r2 = pool.create();
  const std::vector<float> alone1 = feed(m, pool, r1, lists[0]);
  (void)feed(m, pool, r2, std::span<const std::int32_t>(text.data(), 30));
  const std::vector<float> alone2 = feed(m, pool, r2, lists[1]);
  const std::vector<float> alone3 = feed(m, pool, a, lists[2]);
  const std::int64_t v = m.config().vocab_size;
  CHECK(max_diff(std::vector<float>(logits.data(), logits.data() + v), alone1) < 1e-4);
  CHECK(max_diff(std::vector<float>(logits.data() + v, logits.data() + 2 * v), alone2) < 1e-4);
  CHECK(max_diff(std::vector<float>(logits.data() + 2 * v, logits.data() + 3 * v), alone3) < 1e-4);
}

TEST_CASE("llama: a prompt continued from the prefix cache equals the prompt computed in full") {
  QUARRY_REQUIRE_SHARED_DATA(model_path, "models/stories260K/stories260K.gguf");
  const GgufFile file = GgufFile::open(model_path).value();
  const LlamaModel m = LlamaModel::load(file).value();
  BlockPool pool = BlockPool::create(m.kv_options(DType::f16, 64, 8)).value();
  std::vector<std::int32_t> text = {1};
  for (const std::int32_t t : greedy(m, pool, {1}, 60)) text.push_back(t);
  const std::vector<std::int32_t> prompt(text.begin(), text.begin() + 45);

  const SequenceId first = pool.create();
  const std::vector<float> full = feed(m, pool, first, prompt);
  REQUIRE(pool.publish(first, prompt).ok());
  const BlockPool::PrefixMatch hit = pool.create(prompt);
  CHECK(hit.cached_tokens == 40);  // five full pages of 8; the last token is always computed
  const std::vector<float> rest = feed(m, pool, hit.seq, std::span<const std::int32_t>(prompt).subspan(40));
  CHECK(max_diff(full, rest) < 1e-4);
  CHECK(pool.prefix_stats().hit_pages == 5);
}

TEST_CASE("llama: INT8 / INT4 weights and f16 / bf16 / INT8 K/V stay close to the f32 run") {
  QUARRY_REQUIRE_SHARED_DATA(model_path, "models/stories260K/stories260K.gguf");
  const GgufFile file = GgufFile::open(model_path).value();
  const LlamaModel f32 = LlamaModel::load(file).value();
  BlockPool pool32 = BlockPool::create(f32.kv_options(DType::f32, 64)).value();
  std::vector<std::int32_t> text = {1};
  for (const std::int32_t t : greedy(f32, pool32, {1}, 200)) text.push_back(t);
  const Forced base = teacher_forced(f32, pool32, text);
  MESSAGE("f32: NLL of its own greedy text " << base.nll);
  CHECK(base.agreement == 1.0);

  struct Variant {
    LlamaWeights weights;
    DType kv;
    double max_nll_increase, min_agreement;
  };
  // Bounds from measured figures with margin (the NLL increase is in nats per token).
  // Measured (NLL increase, agreement): f16 K/V +2e-5, 1.0; bf16 +3e-4, 1.0; INT8 K/V +0.0035, 0.995;
  // INT8 weights +0.0008, 0.98; INT4 g32 weights +0.064, 0.905; INT8 weights and K/V +0.008, 0.99;
  // INT4 K/V +0.96, 0.655: symmetric INT4 with one scale per 8 elements (this model's whole head)
  // is too coarse for its keys, a measured limit of the format rather than a bound to aim at.
  for (const Variant& v : {Variant{LlamaWeights::f32, DType::f16, 0.002, 0.99}, Variant{LlamaWeights::f32, DType::bf16, 0.005, 0.98},
                           Variant{LlamaWeights::f32, DType::i8, 0.02, 0.95}, Variant{LlamaWeights::int8, DType::f32, 0.01, 0.95},
                           Variant{LlamaWeights::int4, DType::f32, 0.2, 0.8}, Variant{LlamaWeights::int8, DType::i8, 0.03, 0.95},
                           Variant{LlamaWeights::f32, DType::i4, 1.2, 0.55}}) {
    LlamaLoadOptions o;
    o.weights = v.weights;
    const LlamaModel m = LlamaModel::load(file, o).value();
    BlockPool pool = BlockPool::create(m.kv_options(v.kv, 64)).value();
    const Forced f = teacher_forced(m, pool, text);
    const std::vector<std::int32_t> free_run = greedy(m, pool, {1}, 200);
    std::size_t same = 0;
    while (same < free_run.size() && free_run[same] == text[same + 1]) ++same;
    MESSAGE("weights " << llama_weights_name(v.weights) << ", K/V " << dtype_name(v.kv) << ": NLL " << f.nll << " (+" << f.nll - base.nll
                       << "), teacher-forced agreement " << f.agreement << ", greedy equal for the first " << same << " of 200 tokens; "
                       << m.weight_bytes() << " weight bytes");
    CAPTURE(llama_weights_name(v.weights));
    CAPTURE(dtype_name(v.kv));
    CHECK(f.nll - base.nll < v.max_nll_increase);
    CHECK(f.agreement >= v.min_agreement);
  }
}

TEST_CASE("llama: stacked Q/K/V and gate/up products give exactly the logits of the separate ones") {
  QUARRY_REQUIRE_SHARED_DATA(model_path, "models/stories260K/stories260K.gguf");
  const GgufFile file = GgufFile::open(model_path).value();
  ThreadPool threads(2);
  for (const LlamaWeights w : {LlamaWeights::int8, LlamaWeights::int4}) {
    CAPTURE(llama_weights_name(w));
    LlamaLoadOptions o;
    o.weights = w;
    const LlamaModel stacked = LlamaModel::load(file, o).value();
    o.stack_projections = false;
    const LlamaModel apart = LlamaModel::load(file, o).value();
    CHECK(stacked.weight_bytes() == apart.weight_bytes());
    // summary(): a line "<count> matrices <format>: ..." per format.
    auto matrices = [](const std::string& summary) {
      int total = 0;
      std::istringstream lines(summary);
      for (std::string line; std::getline(lines, line);) total += std::stoi(line);
      return total;
    };
    // 5 layers: 5 x (QKV, output, gate/up, down) + the LM head, against 5 x 7 + 1.
    CHECK(matrices(stacked.summary()) == 21);
    CHECK(matrices(apart.summary()) == 36);
    // for_each_projection visits the same matrices; their buffers are their bytes, distinct and
    // the values first (a row of values at a time is what the products read).
    for (const LlamaModel* m : {&stacked, &apart}) {
      int count = 0;
      std::int64_t bytes = 0;
      std::vector<const std::byte*> starts;
      m->for_each_projection([&](const Linear& l) {
        ++count;
        const std::vector<std::span<const std::byte>> b = l.buffers();
        REQUIRE(b.size() >= 2);  // quantized: values and scales (symmetric: no zero points)
        if (const QuantizedPanels* p = l.panels()) {  // panels of 16 rows, the last padded; 64-byte blocks
          CHECK(b[0].data() == reinterpret_cast<const std::byte*>(p->value_data()));
          CHECK(static_cast<std::int64_t>(b[0].size()) == p->panels() * p->blocks() * 64);
          CHECK(p->blocks() == (p->scheme().bits == 4 ? l.in_features() / 8 : (l.in_features() + 3) / 4));
        } else {
          CHECK(b[0].data() == reinterpret_cast<const std::byte*>(l.quantized_weights()->value_bytes().data()));
          CHECK(static_cast<std::int64_t>(b[0].size()) == l.out_features() * l.quantized_weights()->row_bytes());
        }
        std::int64_t own = 0;
        for (const auto& part : b) {
          own += static_cast<std::int64_t>(part.size());
          starts.push_back(part.data());
        }
        CHECK(own == l.bytes());
        bytes += own;
      });
      CHECK(count == (m == &stacked ? 21 : 36));
      const LlamaConfig& c = m->config();
      CHECK(bytes == m->weight_bytes() - c.vocab_size * c.dim * 4 - (2 * c.n_layers + 1) * c.dim * 4);  // less embeddings, norms
      std::sort(starts.begin(), starts.end());
      CHECK(std::adjacent_find(starts.begin(), starts.end()) == starts.end());
    }
    const std::vector<std::int32_t> prompt = {1, 403, 407, 261, 378, 293, 329, 505};
    for (ThreadPool* p : {static_cast<ThreadPool*>(nullptr), &threads}) {
      std::vector<float> logits[2];
      int i = 0;
      for (const LlamaModel* m : {&stacked, &apart}) {
        BlockPool kv = BlockPool::create(m->kv_options(DType::f32, 8)).value();
        const SequenceId seq = kv.create();
        Tensor<float> out({1, m->config().vocab_size});
        // The prompt at once (qgemm), then one token (qgemv).
        const std::span<const std::int32_t> all(prompt);
        REQUIRE(m->forward(kv, std::span<const SequenceId>(&seq, 1), std::span<const std::span<const std::int32_t>>(&all, 1), out.view(), p).ok());
        const std::int32_t next = 42;
        const std::span<const std::int32_t> one(&next, 1);
        REQUIRE(m->forward(kv, std::span<const SequenceId>(&seq, 1), std::span<const std::span<const std::int32_t>>(&one, 1), out.view(), p).ok());
        logits[i++].assign(out.span().begin(), out.span().end());
      }
      CHECK(logits[0] == logits[1]);
    }
  }
}

TEST_CASE("llama: weights in panels give the row-major logits: INT8 exactly, INT4 within rounding") {
  QUARRY_REQUIRE_SHARED_DATA(model_path, "models/stories260K/stories260K.gguf");
  const GgufFile file = GgufFile::open(model_path).value();
  for (const LlamaWeights weights : {LlamaWeights::int8, LlamaWeights::int4}) {
    CAPTURE(llama_weights_name(weights));
    LlamaLoadOptions o;
    o.weights = weights;
    const LlamaModel panels = LlamaModel::load(file, o).value();
    o.panels = false;
    const LlamaModel rows = LlamaModel::load(file, o).value();
    int in_panels = 0, row_major = 0;
    panels.for_each_projection([&](const Linear& l) {
      in_panels += l.panels() != nullptr;
      CHECK((l.panels() != nullptr) == (l.format().find("in panels") != std::string::npos));
    });
    rows.for_each_projection([&](const Linear& l) {
      CHECK(l.panels() == nullptr);
      row_major += l.quantized_weights() != nullptr;
    });
    CHECK(in_panels > 0);
    CHECK(in_panels == row_major);  // every quantized matrix
    const std::vector<std::int32_t> prompt = {1, 403, 407, 261, 378, 293, 329, 505};
    std::vector<float> logits[2];
    int i = 0;
    for (const LlamaModel* m : {&panels, &rows}) {
      BlockPool kv = BlockPool::create(m->kv_options(DType::f32, 8)).value();
      const SequenceId seq = kv.create();
      Tensor<float> out({1, m->config().vocab_size});
      const std::span<const std::int32_t> all(prompt);
      REQUIRE(m->forward(kv, std::span<const SequenceId>(&seq, 1), std::span<const std::span<const std::int32_t>>(&all, 1), out.view()).ok());
      const std::int32_t next = 42;  // and one decode step (qgemv)
      const std::span<const std::int32_t> one(&next, 1);
      REQUIRE(m->forward(kv, std::span<const SequenceId>(&seq, 1), std::span<const std::span<const std::int32_t>>(&one, 1), out.view()).ok());
      logits[i++].assign(out.span().begin(), out.span().end());
    }
    if (weights == LlamaWeights::int8) {
      CHECK(logits[0] == logits[1]);  // the same W8A8 sums and epilogue
      continue;
    }
    float diff = 0, top = 0;
    for (std::size_t v = 0; v < logits[0].size(); ++v) {
      diff = std::max(diff, std::fabs(logits[0][v] - logits[1][v]));
      top = std::max(top, std::fabs(logits[1][v]));
    }
    MESSAGE("INT4 in panels vs row-major: largest logit difference " << diff << " of " << top);
    // Two roundings of the same sums (here, with K = 64, most products and sums are exact).
    CHECK(diff <= 1e-3f * top);
  }
}

TEST_CASE("llama: bad calls are errors that name the problem and leave the pool unchanged") {
  QUARRY_REQUIRE_SHARED_DATA(model_path, "models/stories260K/stories260K.gguf");
  const GgufFile file = GgufFile::open(model_path).value();
  const LlamaModel m = LlamaModel::load(file).value();
  BlockPool pool = BlockPool::create(m.kv_options(DType::f32, 4, 4)).value();
  const SequenceId s = pool.create();
  Tensor<float> logits({1, m.config().vocab_size});
  auto run = [&](std::vector<std::int32_t> ids, SequenceId seq = -2) {
    const SequenceId which = seq == -2 ? s : seq;
    const std::span<const std::int32_t> lists[] = {ids};
    return m.forward(pool, std::span<const SequenceId>(&which, 1), lists, logits.view());
  };
  status st = run({1, 600});
  CHECK(st.code() == errc::out_of_range);
  CHECK(contains(st.message(), "token id 600"));
  CHECK(run({}).code() == errc::invalid_argument);
  CHECK(run({1}, 99).code() == errc::not_found);
  st = run(std::vector<std::int32_t>(3000, 5));
  CHECK(st.code() == errc::out_of_range);
  CHECK(contains(st.message(), "context length is 2048"));
  st = run(std::vector<std::int32_t>(17, 5));  // 16 tokens fit in 4 pages of 4
  CHECK(st.code() == errc::out_of_memory);
  CHECK(pool.length(s) == 0);
  CHECK(pool.free_pages() == 4);
  CHECK(run(std::vector<std::int32_t>(16, 5)).ok());

  BlockPool wrong = BlockPool::create([&] {
                      BlockPoolOptions o = m.kv_options(DType::f32, 8);
                      o.n_kv_heads = 2;
                      return o;
                    }()).value();
  const SequenceId w = wrong.create();
  const std::int32_t one = 1;
  const std::span<const std::int32_t> lists[] = {std::span<const std::int32_t>(&one, 1)};
  st = m.forward(wrong, std::span<const SequenceId>(&w, 1), lists, logits.view());
  CHECK(st.code() == errc::shape_mismatch);
  CHECK(contains(st.message(), "kv_options"));
  Tensor<float> small({1, 10});
  REQUIRE(pool.release(s).ok());
  const SequenceId s2 = pool.create();
  CHECK(run({1}, s2).ok());
  const std::span<const std::int32_t> l2[] = {std::span<const std::int32_t>(&one, 1)};
  CHECK(m.forward(pool, std::span<const SequenceId>(&s2, 1), l2, small.view()).code() == errc::shape_mismatch);
}

TEST_CASE("llama: batched sampling of N sequences forked from one prompt equals each sampled alone") {
  QUARRY_REQUIRE_SHARED_DATA(model_path, "models/stories260K/stories260K.gguf");
  const GgufFile file = GgufFile::open(model_path).value();
  const LlamaModel m = LlamaModel::load(file).value();
  const std::int64_t vocab = m.config().vocab_size;
  BlockPool pool = BlockPool::create(m.kv_options(DType::f16, 128)).value();
  std::vector<std::int32_t> prompt = {1};
  for (const std::int32_t t : greedy(m, pool, {1}, 39)) prompt.push_back(t);  // 40 tokens: 2.5 pages

  constexpr int kSeqs = 4, kSteps = 30;
  auto params = [](int i) {
    SamplingParams p;
    p.temperature = 0.8f;
    p.top_k = 40;
    p.top_p = 0.95f;
    p.seed = 1000 + static_cast<std::uint64_t>(i);
    return p;
  };
  // Batched: the prompt once, then forks that share its pages, decoded together.
  const SequenceId root = pool.create();
  const std::vector<float> first = feed(m, pool, root, prompt);
  const std::int64_t prompt_pages = pool.num_pages() - pool.free_pages();
  std::vector<SequenceId> seqs = {root};
  for (int i = 1; i < kSeqs; ++i) seqs.push_back(pool.fork(root).value());
  CHECK(pool.num_pages() - pool.free_pages() == prompt_pages);  // nothing copied by fork
  std::vector<Sampler> samplers;
  for (int i = 0; i < kSeqs; ++i) samplers.emplace_back(params(i));
  std::vector<std::vector<std::int32_t>> batched(kSeqs);
  Tensor<float> logits({kSeqs, vocab});
  for (int i = 0; i < kSeqs; ++i) std::copy(first.begin(), first.end(), logits.data() + i * vocab);
  for (int step = 0; step < kSteps; ++step) {
    std::vector<std::int32_t> next(kSeqs);
    std::vector<std::span<const std::int32_t>> lists;
    for (int i = 0; i < kSeqs; ++i) {
      next[static_cast<std::size_t>(i)] = samplers[static_cast<std::size_t>(i)].sample(std::span<const float>(logits.data() + i * vocab, static_cast<std::size_t>(vocab)));
      batched[static_cast<std::size_t>(i)].push_back(next[static_cast<std::size_t>(i)]);
    }
    for (int i = 0; i < kSeqs; ++i) lists.emplace_back(&next[static_cast<std::size_t>(i)], 1);
    REQUIRE(m.forward(pool, seqs, lists, logits.view()).ok());
  }
  // Shared full prompt pages stay shared: each fork copied at most its half-full last page.
  CHECK(pool.num_pages() - pool.free_pages() <= prompt_pages + kSeqs * (1 + (kSteps + 15) / 16));
  bool differ = false;
  for (int i = 1; i < kSeqs; ++i) differ = differ || batched[static_cast<std::size_t>(i)] != batched[0];
  CHECK(differ);  // different seeds, different texts

  // Each alone, in a fresh pool.
  for (int i = 0; i < kSeqs; ++i) {
    BlockPool alone = BlockPool::create(m.kv_options(DType::f16, 64)).value();
    const SequenceId s = alone.create();
    std::vector<float> l = feed(m, alone, s, prompt);
    Sampler sampler(params(i));
    std::vector<std::int32_t> out;
    for (int step = 0; step < kSteps; ++step) {
      out.push_back(sampler.sample(l));
      l = feed(m, alone, s, std::span<const std::int32_t>(&out.back(), 1));
    }
    CAPTURE(i);
    CHECK(out == batched[static_cast<std::size_t>(i)]);
  }
}

TEST_CASE("paged decode attention on real activations: stories260K's queries, keys and values, every K/V type") {
  QUARRY_REQUIRE_SHARED_DATA(model_path, "models/stories260K/stories260K.gguf");
  const GgufFile file = GgufFile::open(model_path).value();
  const LlamaModel m = LlamaModel::load(file).value();
  const LlamaConfig& c = m.config();
  BlockPool pool = BlockPool::create(m.kv_options(DType::f32, 64)).value();
  // 200 tokens of greedy text in the pool; the queries of the last step recorded per layer.
  std::vector<std::int32_t> text = {1};
  for (const std::int32_t t : greedy(m, pool, {1}, 199)) text.push_back(t);
  const SequenceId s = pool.create();
  (void)feed(m, pool, s, std::span<const std::int32_t>(text.data(), text.size() - 1));
  std::vector<std::vector<float>> queries(static_cast<std::size_t>(c.n_layers));
  Tensor<float> logits({1, c.vocab_size});
  const std::span<const std::int32_t> last[] = {std::span<const std::int32_t>(&text.back(), 1)};
  REQUIRE(m.forward(pool, std::span<const SequenceId>(&s, 1), last, logits.view(), nullptr,
                    [&](std::int64_t layer, TensorView<const float> q) {
                      queries[static_cast<std::size_t>(layer)].assign(q.data(), q.data() + q.numel());
                    }).ok());
  const std::int64_t len = pool.length(s), kv_dim = c.n_kv_heads * c.head_dim, group = c.n_heads / c.n_kv_heads;
  REQUIRE(len == 200);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.head_dim));

  for (std::int64_t layer = 0; layer < c.n_layers; ++layer) {
    std::vector<float> k(static_cast<std::size_t>(len * kv_dim)), v(k.size());
    for (std::int64_t t = 0; t < len; ++t)
      REQUIRE(pool.read(s, layer, t, std::span<float>(&k[static_cast<std::size_t>(t * kv_dim)], static_cast<std::size_t>(kv_dim)),
                        std::span<float>(&v[static_cast<std::size_t>(t * kv_dim)], static_cast<std::size_t>(kv_dim))).ok());
    const std::vector<float>& q = queries[static_cast<std::size_t>(layer)];
    // The f64 reference over the f32 activations.
    std::vector<double> want(static_cast<std::size_t>(c.n_heads * c.head_dim), 0.0);
    for (std::int64_t h = 0; h < c.n_heads; ++h) {
      const std::int64_t kvh = h / group;
      std::vector<double> w(static_cast<std::size_t>(len));
      double mx = -1e300, sum = 0;
      for (std::int64_t t = 0; t < len; ++t) {
        double d = 0;
        for (std::int64_t i = 0; i < c.head_dim; ++i)
          d += static_cast<double>(q[static_cast<std::size_t>(h * c.head_dim + i)]) * k[static_cast<std::size_t>(t * kv_dim + kvh * c.head_dim + i)];
        w[static_cast<std::size_t>(t)] = d * scale;
        mx = std::max(mx, d * scale);
      }
      for (double& x : w) sum += (x = std::exp(x - mx));
      for (std::int64_t t = 0; t < len; ++t)
        for (std::int64_t i = 0; i < c.head_dim; ++i)
          want[static_cast<std::size_t>(h * c.head_dim + i)] +=
              w[static_cast<std::size_t>(t)] / sum * v[static_cast<std::size_t>(t * kv_dim + kvh * c.head_dim + i)];
    }
    double magnitude = 0;
    for (const double x : want) magnitude = std::max(magnitude, std::fabs(x));
    // Measured max |error| / max |output| over the five layers: f32 5.6e-7, f16 2.9e-3, bf16
    // 0.042, INT8 0.18, INT4 1.16. Real activations are far harsher than N(0, 1) data (INT8
    // 0.02 there): with head_dim 8 the scores are large and the softmax sharp, so a key's
    // rounding moves the weights; INT4 with one scale per head of 8 is unusable on this model
    // (its bound only catches garbage), INT8 is marginal: the figures the issue asks to report.
    struct Case {
      DType dtype;
      double bound;  // of max |error| / max |output|
    };
    for (const Case& kase : {Case{DType::f32, 1e-5}, Case{DType::f16, 6e-3}, Case{DType::bf16, 0.08}, Case{DType::i8, 0.35},
                             Case{DType::i4, 2.0}}) {
      BlockPoolOptions o = m.kv_options(kase.dtype, 16);
      o.num_layers = 1;
      BlockPool typed = BlockPool::create(o).value();
      const SequenceId ts = typed.create();
      REQUIRE(typed.append(ts, len).ok());
      for (std::int64_t t = 0; t < len; ++t)
        REQUIRE(typed.write(ts, 0, t, std::span<const float>(&k[static_cast<std::size_t>(t * kv_dim)], static_cast<std::size_t>(kv_dim)),
                            std::span<const float>(&v[static_cast<std::size_t>(t * kv_dim)], static_cast<std::size_t>(kv_dim))).ok());
      const BlockPool::Table table = typed.page_table(std::span<const SequenceId>(&ts, 1)).value();
      const TensorView<const float> qv(q.data(), Shape{1, c.n_heads, c.head_dim});
      Tensor<float> out({1, c.n_heads, c.head_dim});
      status st;
      switch (kase.dtype) {
        case DType::f32: st = paged_decode_attention(qv, typed.k_pages<float>(0), typed.v_pages<float>(0), table.csr(), out.view()); break;
        case DType::f16: st = paged_decode_attention(qv, typed.k_pages<f16>(0), typed.v_pages<f16>(0), table.csr(), out.view()); break;
        case DType::bf16: st = paged_decode_attention(qv, typed.k_pages<bf16>(0), typed.v_pages<bf16>(0), table.csr(), out.view()); break;
        case DType::i8: st = paged_decode_attention(qv, typed.k_pages_int8(0), typed.v_pages_int8(0), table.csr(), out.view()); break;
        default: st = paged_decode_attention(qv, typed.k_pages_int4(0), typed.v_pages_int4(0), table.csr(), out.view()); break;
      }
      REQUIRE_MESSAGE(st.ok(), st.message());
      double worst = 0;
      for (std::size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::fabs(static_cast<double>(out.data()[i]) - want[i]));
      MESSAGE("layer " << layer << ", K/V " << dtype_name(kase.dtype) << ": max |error| " << worst << " (" << worst / magnitude
                       << " of max |output| " << magnitude << ")");
      CAPTURE(layer);
      CAPTURE(dtype_name(kase.dtype));
      CHECK(worst / magnitude < kase.bound);
    }
  }
}
