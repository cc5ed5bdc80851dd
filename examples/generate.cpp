// generate: text from a Llama-architecture GGUF model with quarry's decoder, quantized weights
// and the paged KV-cache (issue 6's example).
//
//   generate --model stories260K.gguf --prompt "Once upon a time" [--weights f32|int8|int4|stored]
//            [--kv f32|f16|bf16|int8|int4] [-n 128] [--seed 1] [--temperature 0.8] [--top-k 40]
//            [--top-p 0.95] [--n-seq 1] [--threads N]
//
// With one sequence it prints tokens as they come; with --n-seq N it samples N continuations of
// the prompt in one batch (the prompt computed once, its pages shared by fork) and prints each.
// It ends with prefill and decode tokens per second. Temperature 0 is greedy decoding.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/core.h>

#include <quarry/core/thread_pool.hpp>
#include <quarry/io/gguf.hpp>
#include <quarry/kv/block_pool.hpp>
#include <quarry/nn/llama.hpp>
#include <quarry/nn/sampler.hpp>
#include <quarry/nn/tokenizer.hpp>

using namespace quarry;

namespace {

struct Args {
  std::string model, prompt = "Once upon a time";
  LlamaWeights weights = LlamaWeights::f32;
  DType kv = DType::f16;
  std::int64_t steps = 128, n_seq = 1;
  unsigned threads = 1;
  SamplingParams sampling;
};

void usage(std::FILE* to) {
  std::fputs(
      "usage: generate --model FILE.gguf [--prompt TEXT] [--weights f32|int8|int4|stored] [--kv f32|f16|bf16|int8|int4]\n"
      "                [-n TOKENS] [--seed S] [--temperature T] [--top-k K] [--top-p P] [--n-seq N] [--threads N]\n"
      "A Llama-architecture GGUF model, e.g. stories260K.gguf (../shared/data/models/stories260K/ in this project's\n"
      "workspace; public at huggingface.co/ggml-org/models). Temperature 0 (the default) decodes greedily.\n",
      to);
}

// Parses argv; prints the problem and returns false on a bad flag.
bool parse(int argc, char** argv, Args& a) {
  a.sampling.seed = 1;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      usage(stdout);
      std::exit(0);
    }
    if (i + 1 >= argc) {
      fmt::print(stderr, "generate: {} needs a value\n", flag);
      return false;
    }
    const std::string value = argv[++i];
    char* end = nullptr;
    auto number = [&](double lo, double hi) {
      const double v = std::strtod(value.c_str(), &end);
      if (end == value.c_str() || *end != '\0' || !(v >= lo && v <= hi)) {
        fmt::print(stderr, "generate: {} {} is not a number in [{}, {}]\n", flag, value, lo, hi);
        std::exit(2);
      }
      return v;
    };
    if (flag == "--model") a.model = value;
    else if (flag == "--prompt") a.prompt = value;
    else if (flag == "--weights") {
      const auto w = parse_llama_weights(value);
      if (!w) {
        fmt::print(stderr, "generate: --weights {} is not one of f32, int8, int4, stored\n", value);
        return false;
      }
      a.weights = *w;
    } else if (flag == "--kv") {
      if (value == "f32") a.kv = DType::f32;
      else if (value == "f16") a.kv = DType::f16;
      else if (value == "bf16") a.kv = DType::bf16;
      else if (value == "int8") a.kv = DType::i8;
      else if (value == "int4") a.kv = DType::i4;
      else {
        fmt::print(stderr, "generate: --kv {} is not one of f32, f16, bf16, int8, int4\n", value);
        return false;
      }
    } else if (flag == "-n") a.steps = static_cast<std::int64_t>(number(1, 1 << 20));
    else if (flag == "--seed") a.sampling.seed = static_cast<std::uint64_t>(number(0, 1e18));
    else if (flag == "--temperature") a.sampling.temperature = static_cast<float>(number(0, 100));
    else if (flag == "--top-k") a.sampling.top_k = static_cast<std::int64_t>(number(0, 1 << 30));
    else if (flag == "--top-p") a.sampling.top_p = static_cast<float>(number(1e-6, 1));
    else if (flag == "--n-seq") a.n_seq = static_cast<std::int64_t>(number(1, 256));
    else if (flag == "--threads") a.threads = static_cast<unsigned>(number(1, 1024));
    else {
      fmt::print(stderr, "generate: unknown flag {}\n", flag);
      return false;
    }
  }
  if (a.model.empty()) {
    fmt::print(stderr, "generate: --model is required\n");
    return false;
  }
  return true;
}

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  if (!parse(argc, argv, a)) {
    usage(stderr);
    return 2;
  }
  auto fail = [](const status& st) {
    fmt::print(stderr, "generate: {}\n", st.to_string());
    return 1;
  };
  auto file = GgufFile::open(a.model);
  if (!file.ok()) return fail(file.status());
  auto tokenizer = SpmTokenizer::from_gguf(*file);
  if (!tokenizer.ok()) return fail(tokenizer.status());
  ThreadPool pool(a.threads);
  LlamaLoadOptions lo;
  lo.weights = a.weights;
  lo.pool = &pool;
  const auto t_load = std::chrono::steady_clock::now();
  auto model = LlamaModel::load(*file, lo);
  if (!model.ok()) return fail(model.status());
  const LlamaConfig& c = model->config();
  fmt::print(stderr, "{}: {} layers, dim {}, {} heads ({} kv), vocab {}; weights {} ({:.1f} MB, loaded in {:.2f} s), K/V {}\n",
             a.model, c.n_layers, c.dim, c.n_heads, c.n_kv_heads, c.vocab_size, llama_weights_name(a.weights),
             static_cast<double>(model->weight_bytes()) / 1e6, since(t_load), dtype_name(a.kv));

  const std::vector<std::int32_t> prompt = tokenizer->encode(a.prompt, true);
  const std::int64_t total = static_cast<std::int64_t>(prompt.size()) + a.steps;
  if (total > c.context_length) {
    fmt::print(stderr, "generate: the prompt ({} tokens) and -n {} exceed the context length {}\n", prompt.size(), a.steps, c.context_length);
    return 2;
  }
  const std::int64_t page_size = 16;
  const std::int64_t pages = (total + page_size - 1) / page_size * a.n_seq + a.n_seq;
  auto kv = BlockPool::create(model->kv_options(a.kv, pages, page_size));
  if (!kv.ok()) return fail(kv.status());

  // The prompt, once.
  const SequenceId root = kv->create();
  Tensor<float> logits({a.n_seq, c.vocab_size});
  const auto t_prefill = std::chrono::steady_clock::now();
  {
    const std::span<const std::int32_t> lists[] = {prompt};
    Tensor<float> first({1, c.vocab_size});
    const status st = model->forward(*kv, std::span<const SequenceId>(&root, 1), lists, first.view(), &pool);
    if (!st.ok()) return fail(st);
    for (std::int64_t s = 0; s < a.n_seq; ++s) std::copy_n(first.data(), c.vocab_size, logits.data() + s * c.vocab_size);
  }
  const double prefill_s = since(t_prefill);
  std::vector<SequenceId> seqs = {root};
  for (std::int64_t s = 1; s < a.n_seq; ++s) seqs.push_back(kv->fork(root).value());
  std::vector<Sampler> samplers;
  for (std::int64_t s = 0; s < a.n_seq; ++s) {
    SamplingParams p = a.sampling;
    p.seed += static_cast<std::uint64_t>(s);
    samplers.emplace_back(p);
  }
  if (a.n_seq == 1) fmt::print("{}", a.prompt);
  std::fflush(stdout);

  // Decoding: every live sequence one token per step, in one batch; a sequence stops at EOS.
  std::vector<std::vector<std::int32_t>> out(static_cast<std::size_t>(a.n_seq));
  std::vector<bool> done(static_cast<std::size_t>(a.n_seq), false);
  std::int64_t decoded = 0;
  const auto t_decode = std::chrono::steady_clock::now();
  for (std::int64_t step = 0; step < a.steps; ++step) {
    std::vector<SequenceId> live;
    std::vector<std::int32_t> next;
    std::vector<std::int64_t> rows;
    for (std::int64_t s = 0; s < a.n_seq; ++s) {
      if (done[static_cast<std::size_t>(s)]) continue;
      const std::int32_t t = samplers[static_cast<std::size_t>(s)].sample(
          std::span<const float>(logits.data() + s * c.vocab_size, static_cast<std::size_t>(c.vocab_size)));
      if (t == tokenizer->eos()) {
        done[static_cast<std::size_t>(s)] = true;
        continue;
      }
      out[static_cast<std::size_t>(s)].push_back(t);
      if (a.n_seq == 1) {
        fmt::print("{}", tokenizer->piece(t));
        std::fflush(stdout);
      }
      live.push_back(seqs[static_cast<std::size_t>(s)]);
      next.push_back(t);
      rows.push_back(s);
    }
    if (live.empty() || step + 1 == a.steps) break;
    std::vector<std::span<const std::int32_t>> lists;
    for (const std::int32_t& t : next) lists.emplace_back(&t, 1);
    Tensor<float> step_logits({static_cast<std::int64_t>(live.size()), c.vocab_size});
    const status st = model->forward(*kv, live, lists, step_logits.view(), &pool);
    if (!st.ok()) return fail(st);
    decoded += static_cast<std::int64_t>(live.size());
    for (std::size_t i = 0; i < rows.size(); ++i)
      std::copy_n(step_logits.data() + static_cast<std::int64_t>(i) * c.vocab_size, c.vocab_size, logits.data() + rows[i] * c.vocab_size);
  }
  const double decode_s = since(t_decode);
  const double prefill_rate = static_cast<double>(prompt.size()) / prefill_s;
  if (a.n_seq == 1) {
    fmt::print("\n");
  } else {
    for (std::int64_t s = 0; s < a.n_seq; ++s) {
      std::string text = a.prompt;
      for (const std::int32_t t : out[static_cast<std::size_t>(s)]) text += tokenizer->piece(t);
      fmt::print("--- sequence {} (seed {})\n{}\n", s, a.sampling.seed + static_cast<std::uint64_t>(s), text);
    }
  }
  std::fflush(stdout);
  fmt::print(stderr, "prefill: {} tokens in {:.3f} s ({:.1f} tokens/s); decode: {} tokens in {:.3f} s ({:.1f} tokens/s, {} thread{})\n",
             prompt.size(), prefill_s, prefill_rate, decoded, decode_s,
             decode_s > 0 ? static_cast<double>(decoded) / decode_s : 0.0, a.threads, a.threads == 1 ? "" : "s");
  fmt::print(stderr, "kv pages: {} of {} in use ({} sequence{} sharing the prompt's pages)\n", kv->num_pages() - kv->free_pages(),
             kv->num_pages(), a.n_seq, a.n_seq == 1 ? "" : "s");
  return 0;
}
