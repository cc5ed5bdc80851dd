// paged_kv_cache: the kv module's user story. A BlockPool hands out fixed-size pages of K/V to
// sequences; forks share a prompt's pages and copy a page only when they write to it
// (copy-on-write); decode attention reads the pages in place through a CSR page table. The
// result is checked against a plain attention over the same K/V read back token by token. Full
// pages can also be published in a prefix cache, so a new request reuses a known prompt start.
//
// Usage: paged_kv_cache        (generated K/V, one layer; runs in milliseconds)
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include <fmt/core.h>

#include <quarry/quarry.hpp>

using namespace quarry;

namespace {

constexpr std::int64_t kHeads = 8, kKvHeads = 2, kHeadDim = 64, kPage = 16;  // GQA: 4 query heads per kv head
std::mt19937 rng(1);

// Room for n more tokens of `seq`, and random K/V for them (one layer).
void append_tokens(BlockPool& pool, SequenceId seq, std::int64_t n) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> k(kKvHeads * kHeadDim), v(kKvHeads * kHeadDim);
  const std::int64_t start = pool.length(seq);
  pool.append(seq, n).throw_if_error();
  for (std::int64_t pos = start; pos < start + n; ++pos) {
    for (float& x : k) x = normal(rng);
    for (float& x : v) x = normal(rng);
    pool.write(seq, /*layer*/ 0, pos, k, v).throw_if_error();
  }
}

// Plain attention of one query head over every token of `seq`, K/V read back from the pool.
std::vector<float> reference_attention(const BlockPool& pool, SequenceId seq, std::int64_t head, std::span<const float> q) {
  const std::int64_t kvh = head / (kHeads / kKvHeads), len = pool.length(seq);
  std::vector<float> k(kKvHeads * kHeadDim), v(kKvHeads * kHeadDim), scores(len), out(kHeadDim, 0.f);
  float max_score = -INFINITY, sum = 0;
  for (std::int64_t t = 0; t < len; ++t) {
    pool.read(seq, 0, t, k, v).throw_if_error();
    float s = 0;
    for (std::int64_t i = 0; i < kHeadDim; ++i) s += q[i] * k[kvh * kHeadDim + i];
    scores[t] = s / std::sqrt(float(kHeadDim));
    max_score = std::max(max_score, scores[t]);
  }
  for (std::int64_t t = 0; t < len; ++t) {
    const float p = std::exp(scores[t] - max_score);
    sum += p;
    pool.read(seq, 0, t, k, v).throw_if_error();
    for (std::int64_t i = 0; i < kHeadDim; ++i) out[i] += p * v[kvh * kHeadDim + i];
  }
  for (float& o : out) o /= sum;
  return out;
}

}  // namespace

int main() {
  try {
    BlockPool pool = BlockPool::create({.num_layers = 1, .n_kv_heads = kKvHeads, .head_dim = kHeadDim,
                                        .page_size = kPage, .dtype = DType::f16, .num_pages = 32}).value();
    fmt::print("pool: {} pages of {} tokens, f16, {} KiB of K per page and layer\n", pool.num_pages(), kPage,
               pool.page_bytes() / 1024);

    // One prompt of 40 tokens (3 pages, the last one half full), then two forks of it: they
    // share all three pages, and each continues with tokens of its own.
    const SequenceId prompt = pool.create();
    append_tokens(pool, prompt, 40);
    const SequenceId a = pool.fork(prompt).value(), b = pool.fork(prompt).value();
    fmt::print("prompt: 40 tokens in {} pages; after 2 forks page {} has {} references\n", pool.pages(prompt).size(),
               pool.pages(prompt)[0], pool.ref_count(pool.pages(prompt)[0]));
    append_tokens(pool, a, 5);   // lands in the shared half-full page: copied for `a` first
    append_tokens(pool, b, 30);  // the same, then two more pages of its own
    const std::int64_t used = pool.num_pages() - pool.free_pages();
    const std::int64_t unshared = (40 + kPage - 1) / kPage + (45 + kPage - 1) / kPage + (70 + kPage - 1) / kPage;
    fmt::print("3 sequences of 40, 45 and 70 tokens use {} pages; without sharing they would use {}\n", used, unshared);
    int shared = 0;
    for (std::int32_t p : pool.pages(b)) shared += pool.ref_count(p) > 1;
    fmt::print("sequence b: pages {}, of which {} shared with the prompt (copy-on-write gave it its own last one)\n",
               pool.pages(b).size(), shared);

    // Decode step: one query token per sequence, attention over each one's pages, in place.
    const SequenceId batch[] = {prompt, a, b};
    const BlockPool::Table table = pool.page_table(batch).value();
    Tensor<float> q({3, kHeads, kHeadDim}), out({3, kHeads, kHeadDim});
    std::normal_distribution<float> normal(0.f, 1.f);
    for (float& x : q.span()) x = normal(rng);
    paged_decode_attention(q.view(), pool.k_pages<f16>(0), pool.v_pages<f16>(0), table.csr(), out.view()).throw_if_error();

    double max_diff = 0;
    for (std::int64_t s = 0; s < 3; ++s)
      for (std::int64_t h = 0; h < kHeads; ++h) {
        const std::vector<float> ref = reference_attention(pool, batch[s], h, q[s][h].span());
        for (std::int64_t i = 0; i < kHeadDim; ++i) max_diff = std::max(max_diff, double(std::fabs(ref[i] - out(s, h, i))));
      }
    fmt::print("paged decode attention, 3 sequences x {} heads ({} kv heads): max |difference| from a plain "
               "attention {:.1e}\n", kHeads, kKvHeads, max_diff);
    if (max_diff > 1e-4) return 1;

    // The prefix cache: the prompt's full pages are published under its token ids, and a new
    // request that starts with the same tokens gets them without computing anything.
    std::vector<std::int32_t> tokens(40);
    std::iota(tokens.begin(), tokens.end(), 100);
    pool.publish(prompt, tokens).throw_if_error();
    tokens.resize(50, 7);  // the same 40 tokens, then 10 new ones
    const BlockPool::PrefixMatch hit = pool.create(tokens);
    fmt::print("a new request of 50 tokens starting with the prompt's 40: the K/V of its first {} come from the prefix "
               "cache ({} full pages, shared)\n", hit.cached_tokens, hit.cached_tokens / kPage);

    for (SequenceId s : {a, b, hit.seq}) pool.release(s).throw_if_error();
    fmt::print("released the forks and the request: {} pages in use again\n", pool.num_pages() - pool.free_pages());
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "paged_kv_cache: %s\n", e.what());
    return 1;
  }
}
