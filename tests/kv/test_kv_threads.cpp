// BlockPool's thread-safety contract (quarry/kv/block_pool.hpp): (a) const calls and decode
// attention over a pool's pages from many threads at once, with results bit-identical to a
// single-threaded run; (b) a scheduler pattern, threads mutating one shared pool under a mutex,
// with the pool's accounting and every thread's sequences checked against models. CI runs this
// under ASan + UBSan, not TSan: both parts check results, not only the absence of a crash.
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <latch>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include <quarry/core/thread_pool.hpp>
#include <quarry/kv/block_pool.hpp>

#include "test_util.hpp"

using namespace quarry;
using namespace quarry::testing;

namespace {

constexpr int kThreads = 4;

// Decode attention over layer `layer` of `pool`, whatever its dtype.
status attend(const BlockPool& pool, std::int64_t layer, TensorView<const float> q, const PageTableCsr& table, TensorView<float> out,
              const DecodeAttentionParams& params) {
  switch (pool.options().dtype) {
    case DType::f32: return paged_decode_attention(q, pool.k_pages<float>(layer), pool.v_pages<float>(layer), table, out, params);
    case DType::f16: return paged_decode_attention(q, pool.k_pages<f16>(layer), pool.v_pages<f16>(layer), table, out, params);
    case DType::bf16: return paged_decode_attention(q, pool.k_pages<bf16>(layer), pool.v_pages<bf16>(layer), table, out, params);
    case DType::i8: return paged_decode_attention(q, pool.k_pages_int8(layer), pool.v_pages_int8(layer), table, out, params);
    default: return paged_decode_attention(q, pool.k_pages_int4(layer), pool.v_pages_int4(layer), table, out, params);
  }
}

bool same_table(const BlockPool::Table& a, const BlockPool::Table& b) {
  return a.indptr == b.indptr && a.indices == b.indices && a.last_page_len == b.last_page_len;
}

bool same_bits(const Tensor<float>& a, const Tensor<float>& b) {
  return a.numel() == b.numel() && std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.numel()) * sizeof(float)) == 0;
}

}  // namespace

TEST_CASE("BlockPool from many threads: page_table, read, length and decode attention over the same pages agree bit for bit with one thread") {
  for (const DType t : {DType::f32, DType::f16, DType::bf16, DType::i8, DType::i4}) {
    CAPTURE(dtype_name(t));
    BlockPoolOptions o;
    o.num_layers = 2;
    o.n_kv_heads = 2;
    o.head_dim = 64;
    o.page_size = 16;
    o.dtype = t;
    o.int4_group = 32;
    o.num_pages = 64;
    BlockPool pool = BlockPool::create(o).value();
    std::mt19937 rng(static_cast<std::uint32_t>(t) + 40);
    std::normal_distribution<float> normal;
    std::vector<float> k(128), v(128);
    auto fill = [&](SequenceId s, std::int64_t from) {
      for (std::int64_t pos = from; pos < pool.length(s); ++pos)
        for (std::int64_t l = 0; l < 2; ++l) {
          for (float& x : k) x = normal(rng);
          for (float& x : v) x = normal(rng);
          REQUIRE(pool.write(s, l, pos, k, v).ok());
        }
    };
    std::vector<SequenceId> batch;
    for (const std::int64_t len : {1, 17, 100, 250}) {
      const SequenceId s = pool.create();
      REQUIRE(pool.append(s, len).ok());
      fill(s, 0);
      batch.push_back(s);
    }
    // A fork of the 100-token sequence that grew (its partial last page copied) and rewrote
    // token 3 (its first page copied): pages shared with batch[2] and pages of its own.
    const SequenceId f = pool.fork(batch[2]).value();
    REQUIRE(pool.append(f, 5).ok());
    fill(f, 99);
    for (std::int64_t l = 0; l < 2; ++l) REQUIRE(pool.write(f, l, 3, v, k).ok());
    REQUIRE(pool.pages(f)[0] != pool.pages(batch[2])[0]);
    REQUIRE(pool.pages(f)[1] == pool.pages(batch[2])[1]);
    batch.push_back(f);
    const auto n = static_cast<std::int64_t>(batch.size());

    // The single-threaded run: tables, attention outputs per layer, every token read back.
    const BlockPool::Table table = pool.page_table(batch).value();
    Tensor<float> q({n, 8, 64});
    for (float& x : q.span()) x = normal(rng);
    // Per layer, with the default chunks and with chunks of 64 tokens (another chunking rounds
    // otherwise: partial softmaxes merged in another order and, for INT8, other weights of V).
    std::vector<Tensor<float>> want, want64;
    for (std::int64_t l = 0; l < 2; ++l) {
      want.emplace_back(Shape{n, 8, 64});
      REQUIRE(attend(pool, l, q.view(), table.csr(), want.back().view(), {}).ok());
      DecodeAttentionParams p64;
      p64.chunk_tokens = 64;
      want64.emplace_back(Shape{n, 8, 64});
      REQUIRE(attend(pool, l, q.view(), table.csr(), want64.back().view(), p64).ok());
    }
    std::vector<std::vector<float>> tokens;  // [(seq, layer, pos)] k then v
    for (const SequenceId s : batch)
      for (std::int64_t l = 0; l < 2; ++l)
        for (std::int64_t pos = 0; pos < pool.length(s); ++pos) {
          REQUIRE(pool.read(s, l, pos, k, v).ok());
          tokens.push_back(k);
          tokens.back().insert(tokens.back().end(), v.begin(), v.end());
        }
    const std::vector<std::int64_t> lengths = {1, 17, 100, 250, 105};

    // Four threads at once, released together; two of them split their attention over one
    // shared ThreadPool as well. Each counts what differs; the counts are checked after join.
    ThreadPool workers(2);
    std::array<int, kThreads> mismatches{}, runs{};
    std::latch start(kThreads);
    std::vector<std::thread> threads;
    const BlockPool& shared = pool;  // only const calls from here on
    for (int i = 0; i < kThreads; ++i)
      threads.emplace_back([&, i] {
        try {
          std::vector<float> kb(128), vb(128);
          Tensor<float> out({n, 8, 64});
          DecodeAttentionParams params;
          params.pool = i >= 2 ? &workers : nullptr;
          params.chunk_tokens = i == 3 ? 64 : 0;
          start.arrive_and_wait();
          for (int round = 0; round < (kSanitized ? 3 : 10); ++round) {
            const auto own = shared.page_table(batch);
            if (!own.ok() || !same_table(*own, table)) ++mismatches[static_cast<std::size_t>(i)];
            for (std::size_t b = 0; b < batch.size(); ++b)
              if (shared.length(batch[b]) != lengths[b] || shared.pages(batch[b]).size() != static_cast<std::size_t>((lengths[b] + 15) / 16))
                ++mismatches[static_cast<std::size_t>(i)];
            for (std::int64_t l = 0; l < 2; ++l) {
              // Alternate the shared table and the thread's own copy.
              const PageTableCsr csr = round % 2 == 0 || !own.ok() ? table.csr() : own->csr();
              std::fill(out.span().begin(), out.span().end(), -1.f);
              if (!attend(shared, l, q.view(), csr, out.view(), params).ok()) ++mismatches[static_cast<std::size_t>(i)];
              const Tensor<float>& w = (params.chunk_tokens == 0 ? want : want64)[static_cast<std::size_t>(l)];
              if (!same_bits(out, w)) ++mismatches[static_cast<std::size_t>(i)];
              ++runs[static_cast<std::size_t>(i)];
            }
            // Every token of every sequence, read back (starting at a different sequence per thread).
            for (std::size_t bi = 0; bi < batch.size(); ++bi) {
              const std::size_t b = (bi + static_cast<std::size_t>(i)) % batch.size();
              std::size_t at = 0;  // tokens holds (seq, layer, pos) in that order
              for (std::size_t c = 0; c < b; ++c) at += static_cast<std::size_t>(2 * lengths[c]);
              for (std::int64_t l = 0; l < 2; ++l)
                for (std::int64_t pos = 0; pos < lengths[b]; ++pos, ++at) {
                  if (!shared.read(batch[b], l, pos, kb, vb).ok() || !std::equal(kb.begin(), kb.end(), tokens[at].begin()) ||
                      !std::equal(vb.begin(), vb.end(), tokens[at].begin() + 128))
                    ++mismatches[static_cast<std::size_t>(i)];
                }
            }
          }
        } catch (...) {  // an exception must not end the process from a thread: count it
          mismatches[static_cast<std::size_t>(i)] += 1000;
        }
      });
    for (std::thread& th : threads) th.join();
    for (int i = 0; i < kThreads; ++i) {
      CAPTURE(i);
      CHECK(mismatches[static_cast<std::size_t>(i)] == 0);
      CHECK(runs[static_cast<std::size_t>(i)] == 2 * (kSanitized ? 3 : 10));
    }
  }
}

namespace {

// The K of (layer, token value) in a pool of n_kv_heads 2, head_dim 8: +-(layer + 1) * val,
// alternating by element, so every group of a token has the same max |x| and quantizes exactly
// (within an ulp or two); V is its negation. Values up to 200: exact in f16 and bf16.
std::vector<float> k_of(std::int64_t layer, float val) {
  std::vector<float> k(16);
  for (std::size_t i = 0; i < k.size(); ++i) k[i] = static_cast<float>(layer + 1) * val * (i % 2 ? 1.f : -1.f);
  return k;
}

bool close(const std::vector<float>& got, const std::vector<float>& want, float sign) {
  for (std::size_t i = 0; i < got.size(); ++i)
    if (!(std::fabs(got[i] - sign * want[i]) <= 1e-6f * std::fabs(want[i]))) return false;
  return true;
}

// One pool shared by kThreads scheduler threads; `models[i]` (sequence -> token values) is
// thread i's and changes only under `mutex`, so a thread holding it may read every model.
struct SharedPool {
  std::mutex mutex;
  BlockPool pool;
  std::array<std::map<SequenceId, std::vector<float>>, kThreads> models;
  int last = -1;      // the thread that held the mutex last
  int handoffs = 0;   // times the mutex passed from one thread to another
};

// Writes token `pos` of `s` (every layer) for value val; false (nothing written) when the
// copy-on-write finds no page, which happens at the first layer's write.
bool write_token(BlockPool& pool, SequenceId s, std::int64_t pos, float val) {
  for (std::int64_t l = 0; l < 2; ++l) {
    const std::vector<float> k = k_of(l, val);
    std::vector<float> v = k;
    for (float& x : v) x = -x;
    const status st = pool.write(s, l, pos, k, v);
    if (!st.ok()) {
      REQUIRE(st.code() == errc::out_of_memory);
      REQUIRE(l == 0);
      return false;
    }
  }
  return true;
}

// The contents of sequence s against its model (call with the mutex held).
bool contents_match(const BlockPool& pool, SequenceId s, const std::vector<float>& vals) {
  if (pool.length(s) != static_cast<std::int64_t>(vals.size())) return false;
  if (static_cast<std::int64_t>(pool.pages(s).size()) != (static_cast<std::int64_t>(vals.size()) + 3) / 4) return false;
  std::vector<float> k(16), v(16);
  for (std::size_t t = 0; t < vals.size(); ++t)
    for (std::int64_t l = 0; l < 2; ++l) {
      if (!pool.read(s, l, static_cast<std::int64_t>(t), k, v).ok()) return false;
      const std::vector<float> want = k_of(l, vals[t]);
      if (!close(k, want, 1.f) || !close(v, want, -1.f)) return false;
    }
  return true;
}

// The whole pool against all models (call with the mutex held): no sequence owned twice, every
// sequence's contents, reference counts equal to the sequences' references, free + used = all.
void check_all(const SharedPool& sp) {
  const BlockPool& pool = sp.pool;
  std::vector<std::int32_t> refs(static_cast<std::size_t>(pool.num_pages()), 0);
  std::map<SequenceId, int> owner;
  for (int i = 0; i < kThreads; ++i)
    for (const auto& entry : sp.models[static_cast<std::size_t>(i)]) {
      const auto& id = entry.first;
      const auto& vals = entry.second;
      CAPTURE(i);
      CAPTURE(id);
      REQUIRE(owner.emplace(id, i).second);  // ids are reused, but never owned by two threads
      REQUIRE(contents_match(pool, id, vals));
      for (const std::int32_t p : pool.pages(id)) ++refs[static_cast<std::size_t>(p)];
    }
  std::int64_t used = 0;
  for (std::int32_t p = 0; p < pool.num_pages(); ++p) {
    REQUIRE(pool.ref_count(p) == refs[static_cast<std::size_t>(p)]);
    used += refs[static_cast<std::size_t>(p)] > 0;
  }
  REQUIRE(pool.evictable_pages() == 0);  // nothing is published here
  REQUIRE(pool.free_pages() + used == pool.num_pages());
}

}  // namespace

TEST_CASE("BlockPool shared by scheduler threads under a mutex: random operations keep the accounting and every thread's sequences right") {
  for (const DType t : {DType::bf16, DType::i8, DType::i4}) {
    CAPTURE(dtype_name(t));
    BlockPoolOptions o;
    o.num_layers = 2;
    o.n_kv_heads = 2;
    o.head_dim = 8;
    o.page_size = 4;
    o.dtype = t;
    o.int4_group = 4;
    o.num_pages = 20;  // tight: appends and copies run out of pages now and then
    SharedPool sp{{}, BlockPool::create(o).value(), {}, -1, 0};
    const int steps = kSanitized ? 250 : 800;
    std::array<std::array<int, 8>, kThreads> done{};  // per thread: ops that succeeded by kind, [7]: out_of_memory
    std::array<int, kThreads> bad{};                  // a sequence that did not match its model right after an op
    std::latch start(kThreads);
    std::vector<std::thread> threads;
    for (int i = 0; i < kThreads; ++i)
      threads.emplace_back([&, i] {
        try {
          std::mt19937 rng(static_cast<std::uint32_t>(100 * i) + static_cast<std::uint32_t>(t));
          auto& model = sp.models[static_cast<std::size_t>(i)];
          auto& count = done[static_cast<std::size_t>(i)];
          int next = 0;
          // Token values tell the threads apart: thread i writes 1 + 50 i .. 50 + 50 i.
          auto value = [&] { return static_cast<float>(1 + 50 * i + (next++ % 50)); };
          auto pick = [&] {
            auto it = model.begin();
            std::advance(it, static_cast<long>(rng() % model.size()));
            return it->first;
          };
          start.arrive_and_wait();
          for (int step = 0; step < steps; ++step) {
            if (step > 0) std::this_thread::yield();  // let the others in between steps
            const std::lock_guard<std::mutex> lock(sp.mutex);
            sp.handoffs += sp.last != i;
            sp.last = i;
            BlockPool& pool = sp.pool;
            const unsigned op = model.empty() ? 0 : rng() % 6;
            SequenceId touched = -1;
            if (op == 0) {
              if (model.size() < 4) {
                touched = pool.create();
                REQUIRE(model.count(touched) == 0);
                model[touched] = {};
                ++count[0];
              }
            } else if (op == 1 && model.size() < 6) {
              const SequenceId s = pick();
              touched = pool.fork(s).value();
              model[touched] = model[s];
              ++count[1];
            } else if (op == 2) {
              touched = pick();
              const std::int64_t n = 1 + static_cast<std::int64_t>(rng() % 8);
              const std::int64_t before = pool.free_pages();
              const status st = pool.append(touched, n);
              if (st.ok()) {
                for (std::int64_t k = 0; k < n; ++k) {
                  const auto pos = static_cast<std::int64_t>(model[touched].size());
                  model[touched].push_back(value());
                  REQUIRE(write_token(pool, touched, pos, model[touched].back()));  // appended pages are the writer's own
                }
                ++count[2];
              } else {
                REQUIRE(st.code() == errc::out_of_memory);
                REQUIRE(pool.free_pages() == before);
                ++count[7];
              }
            } else if (op == 3) {
              touched = pick();
              if (!model[touched].empty()) {
                const auto pos = rng() % model[touched].size();
                const float val = value();
                if (write_token(pool, touched, static_cast<std::int64_t>(pos), val)) {
                  model[touched][pos] = val;
                  ++count[3];
                } else {
                  ++count[7];
                }
              }
            } else if (op == 4) {
              touched = pick();
              const std::size_t n = model[touched].empty() ? 0 : rng() % (model[touched].size() + 1);
              REQUIRE(pool.truncate(touched, static_cast<std::int64_t>(n)).ok());
              model[touched].resize(n);
              ++count[4];
            } else if (op == 5) {
              const SequenceId s = pick();
              REQUIRE(pool.release(s).ok());
              model.erase(s);
              REQUIRE(pool.length(s) == -1);
              ++count[5];
            }
            if (touched >= 0 && !contents_match(pool, touched, model[touched])) ++bad[static_cast<std::size_t>(i)];
            if (step % 50 == 49) {
              check_all(sp);  // every thread's sequences, mid-run
              ++count[6];
            }
          }
        } catch (...) {  // a failed REQUIRE (recorded by doctest) or an error: stop this thread, count it
          bad[static_cast<std::size_t>(i)] += 1000;
        }
      });
    for (std::thread& th : threads) th.join();
    check_all(sp);
    std::array<int, 8> total{};
    for (int i = 0; i < kThreads; ++i) {
      CAPTURE(i);
      CHECK(bad[static_cast<std::size_t>(i)] == 0);
      for (std::size_t c = 0; c < 8; ++c) total[c] += done[static_cast<std::size_t>(i)][c];
    }
    MESSAGE(dtype_name(t) << ": creates " << total[0] << ", forks " << total[1] << ", appends " << total[2] << ", writes " << total[3]
                          << ", truncations " << total[4] << ", releases " << total[5] << ", out_of_memory " << total[7]
                          << ", full checks " << total[6] << "; the mutex changed hands " << sp.handoffs << " times");
    for (const std::size_t c : {0, 1, 2, 3, 4, 5}) CHECK(total[c] > 0);  // every kind of operation ran
    CHECK(total[7] > 0);                                                    // and the pool ran short
    // Everything released: every page is free again.
    for (auto& model : sp.models)
      for (const auto& [id, vals] : model) REQUIRE(sp.pool.release(id).ok());
    CHECK(sp.pool.free_pages() == sp.pool.num_pages());
    for (std::int32_t p = 0; p < sp.pool.num_pages(); ++p) CHECK(sp.pool.ref_count(p) == 0);
  }
}
