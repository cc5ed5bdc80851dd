// quarry/kv/paged_attention.hpp: decode attention over pages against an f64 reference, for
// f32 / f16 / bf16 pages, GQA groups, page sizes, chunked merging and sliding windows; and the
// page-table and shape checks.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include <quarry/core/thread_pool.hpp>
#include <quarry/kv/paged_attention.hpp>

#include "kv/paged_reference.hpp"
#include "test_util.hpp"

using namespace quarry;
using namespace quarry::testing;

namespace {

template <class KV>
double run_cpu(const PagedBatch& pb, const DecodeAttentionParams& params, Tensor<float>& out) {
  out = Tensor<float>(pb.q.shape());
  status st;
  if constexpr (std::is_same_v<KV, float>) {
    st = paged_decode_attention(pb.q.view(), pb.k.view(), pb.v.view(), pb.table(), out.view(), params);
  } else {
    const Tensor<KV> k = pages_as<KV>(pb.k), v = pages_as<KV>(pb.v);
    st = paged_decode_attention(pb.q.view(), k.view(), v.view(), pb.table(), out.view(), params);
  }
  REQUIRE_MESSAGE(st.ok(), st.message());
  const double scale = params.scale != 0.f ? params.scale : 1.0 / std::sqrt(static_cast<double>(pb.dim));
  return max_abs_diff(out.data(), reference_decode<KV>(pb, scale, params.sliding_window));
}

}  // namespace

TEST_CASE("paged decode attention (CPU): f32, f16 and bf16 pages against the f64 reference") {
  const std::vector<std::int64_t> lengths = {1, 15, 16, 17, 300, 1000};
  std::uint32_t seed = 1;
  for (const std::int64_t page_size : {1, 7, 16, 32}) {
    for (const auto& n_heads_n_kv : std::vector<std::pair<std::int64_t, std::int64_t>>{{4, 4}, {8, 2}, {6, 2}, {8, 1}}) {
      const std::int64_t n_heads = n_heads_n_kv.first, n_kv = n_heads_n_kv.second;
      const PagedBatch pb = make_paged_batch(lengths, n_heads, n_kv, page_size, 64, ++seed, 3, 2.f);
      for (const std::int64_t chunk : {0, 5, 64}) {
        CAPTURE(page_size);
        CAPTURE(n_heads);
        CAPTURE(n_kv);
        CAPTURE(chunk);
        DecodeAttentionParams p;
        p.chunk_tokens = chunk;
        Tensor<float> out;
        CHECK(run_cpu<float>(pb, p, out) < 2e-5);
        CHECK(run_cpu<f16>(pb, p, out) < 2e-5);
        CHECK(run_cpu<bf16>(pb, p, out) < 2e-5);
      }
    }
  }
}

TEST_CASE("paged decode attention (CPU): sliding window, explicit scale, a single token") {
  const PagedBatch pb = make_paged_batch({1, 40, 129}, 8, 2, 16, 32, 77);
  for (const std::int64_t window : {1, 16, 33, 500}) {
    CAPTURE(window);
    DecodeAttentionParams p;
    p.sliding_window = window;
    p.scale = 0.3f;
    p.chunk_tokens = 16;
    Tensor<float> out;
    CHECK(run_cpu<float>(pb, p, out) < 2e-5);
  }
  // One token: the output is that token's V, whatever the score.
  DecodeAttentionParams p;
  p.sliding_window = 1;
  Tensor<float> out;
  (void)run_cpu<float>(pb, p, out);
  for (std::int64_t b = 0; b < 3; ++b) {
    const std::int64_t t = pb.table().length(b, 16) - 1;
    const std::int32_t page = pb.indices[static_cast<std::size_t>(pb.indptr[static_cast<std::size_t>(b)] + t / 16)];
    for (std::int64_t h = 0; h < 8; ++h)
      for (std::int64_t i = 0; i < 32; ++i) CHECK(out(b, h, i) == pb.v(page, h / 4, t % 16, i));
  }
}

TEST_CASE("paged decode attention (CPU): bad page tables and shapes are errors that name the field") {
  PagedBatch pb = make_paged_batch({20, 5}, 4, 2, 16, 16, 5);
  Tensor<float> out(pb.q.shape());
  auto run = [&](const PageTableCsr& t) { return paged_decode_attention(pb.q.view(), pb.k.view(), pb.v.view(), t, out.view()); };
  CHECK(run(pb.table()).ok());

  std::vector<std::int32_t> bad = pb.indices;
  bad[1] = static_cast<std::int32_t>(pb.num_pages);
  status st = run({pb.indptr, bad, pb.last});
  CHECK(st.code() == errc::out_of_range);
  CHECK(contains(st.message(), "sequence 0 names page"));
  bad[1] = -1;
  CHECK(run({pb.indptr, bad, pb.last}).code() == errc::out_of_range);

  std::vector<std::int32_t> last = pb.last;
  last[1] = 0;
  st = run({pb.indptr, pb.indices, last});
  CHECK(st.code() == errc::invalid_argument);
  CHECK(contains(st.message(), "last_page_len of sequence 1"));
  last[1] = 17;
  CHECK(run({pb.indptr, pb.indices, last}).code() == errc::invalid_argument);

  std::vector<std::int32_t> ptr = {0, 2, 1};
  CHECK(contains(run({ptr, pb.indices, pb.last}).message(), "decreases"));
  ptr = {0, 2, 5};
  CHECK(run({ptr, pb.indices, pb.last}).code() == errc::out_of_range);
  ptr = {1, 2, 3};
  CHECK(contains(run({ptr, pb.indices, pb.last}).message(), "indptr[0]"));
  CHECK_FALSE(run({std::span<const std::int32_t>(), pb.indices, pb.last}).ok());
  CHECK(check_page_table({std::span<const std::int32_t>(), pb.indices, pb.last}, pb.num_pages, 16).code() == errc::invalid_argument);
  std::vector<std::int32_t> one_last = {5};
  CHECK(run({pb.indptr, pb.indices, one_last}).code() == errc::shape_mismatch);

  // A sequence with no pages.
  std::vector<std::int32_t> ptr_empty = {0, 3, 3};
  st = run({ptr_empty, pb.indices, pb.last});
  CHECK(st.code() == errc::invalid_argument);
  CHECK(contains(st.message(), "sequence 1 of the batch has no tokens"));

  // Shapes.
  Tensor<float> q3({2, 3, 16});
  st = paged_decode_attention(q3.view(), pb.k.view(), pb.v.view(), pb.table(), out.view());
  CHECK(st.code() == errc::invalid_argument);
  CHECK(contains(st.message(), "multiple of n_kv_heads"));
  Tensor<float> q_dim({2, 4, 8});
  CHECK(paged_decode_attention(q_dim.view(), pb.k.view(), pb.v.view(), pb.table(), out.view()).code() == errc::shape_mismatch);
  Tensor<float> v_other({pb.num_pages, 2, 16, 8});
  st = paged_decode_attention(pb.q.view(), pb.k.view(), v_other.view(), pb.table(), out.view());
  CHECK(st.code() == errc::shape_mismatch);
  CHECK(contains(st.message(), "v_pages"));
  Tensor<float> out_bad({2, 4, 15});
  CHECK(paged_decode_attention(pb.q.view(), pb.k.view(), pb.v.view(), pb.table(), out_bad.view()).code() == errc::shape_mismatch);
  DecodeAttentionParams p;
  p.sliding_window = -1;
  CHECK(paged_decode_attention(pb.q.view(), pb.k.view(), pb.v.view(), pb.table(), out.view(), p).code() == errc::invalid_argument);
}

TEST_CASE("paged decode attention (CPU): INT8 and INT4 pages against the f64 reference of their values") {
  std::uint32_t seed = 100;
  for (const std::int64_t dim : {64, 128, 40}) {
    for (const std::int64_t page_size : {1, 7, 16}) {
      for (const auto& n_heads_n_kv : std::vector<std::pair<std::int64_t, std::int64_t>>{{4, 4}, {8, 2}, {6, 1}}) {
        const std::int64_t n_heads = n_heads_n_kv.first, n_kv = n_heads_n_kv.second;
        ++seed;
        const PagedBatch pb = make_paged_batch({1, 17, 300, 700}, n_heads, n_kv, page_size, dim, seed, 3, 2.f);
        PagedBatch deq8 = make_paged_batch({1, 17, 300, 700}, n_heads, n_kv, page_size, dim, seed, 3, 2.f);
        PagedBatch deq4 = make_paged_batch({1, 17, 300, 700}, n_heads, n_kv, page_size, dim, seed, 3, 2.f);
        const Int8Owned k8 = quantize_int8(deq8.k), v8 = quantize_int8(deq8.v);  // deq8: the values they stand for
        deq8.q = int8_queries(pb.q);  // INT8 and INT4 pages quantize the query too
        deq4.q = deq8.q.clone();
        for (const std::int64_t chunk : {0, 5}) {
          CAPTURE(dim);
          CAPTURE(page_size);
          CAPTURE(n_heads);
          CAPTURE(n_kv);
          CAPTURE(chunk);
          DecodeAttentionParams p;
          p.chunk_tokens = chunk;
          const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
          Tensor<float> out(pb.q.shape());
          status st = paged_decode_attention(pb.q.view(), k8.view(), v8.view(), pb.table(), out.view(), p);
          REQUIRE_MESSAGE(st.ok(), st.message());
          // The weights of V are 8-bit integers (the INT8 contract): the difference from the
          // reference of the pages' values is their rounding (int8_weight_bound, up to ~1e-2
          // here, ~0.3 of the error the pages' own rounding makes) and float rounding.
          const std::vector<double> want8 = reference_decode<float>(deq8, scale);
          const double excess = excess_over_bound(out.data(), want8, int8_weight_bound(deq8, v8.scales, scale), 2e-5);
          INFO("INT8 error " << max_abs_diff(out.data(), want8) << ", over its bound by " << excess);
          CHECK(excess <= 0);
          for (const std::int64_t group : {std::int64_t{8}, std::int64_t{16}, std::int64_t{32}, dim}) {
            if (dim % group != 0) continue;
            CAPTURE(group);
            deq4.k = pb.k.clone();
            deq4.v = pb.v.clone();
            const Int4Owned k4 = quantize_int4(deq4.k, group), v4 = quantize_int4(deq4.v, group);
            st = paged_decode_attention(pb.q.view(), k4.view(), v4.view(), pb.table(), out.view(), p);
            REQUIRE_MESSAGE(st.ok(), st.message());
            // INT4's weights of V are 8-bit integers per token and group (the contract).
            const std::vector<double> want4 = reference_decode<float>(deq4, scale);
            const double excess4 = excess_over_bound(out.data(), want4, int8_weight_bound(deq4, v4.scales, scale), 2e-5);
            INFO("INT4 error " << max_abs_diff(out.data(), want4) << ", over its bound by " << excess4);
            CHECK(excess4 <= 0);
          }
        }
      }
    }
  }
}

TEST_CASE("paged decode attention (CPU): a thread pool gives bit-identical results; default chunks on long contexts") {
  const PagedBatch pb = make_paged_batch({1, 16, 255, 257, 3000, 9000}, 8, 2, 16, 64, 9, 5, 2.f);
  const Tensor<f16> k = pages_as<f16>(pb.k), v = pages_as<f16>(pb.v);
  PagedBatch deq = make_paged_batch({1, 16, 255, 257, 3000, 9000}, 8, 2, 16, 64, 9, 5, 2.f);
  const Int4Owned k4 = quantize_int4(deq.k, 32), v4 = quantize_int4(deq.v, 32);
  deq.q = int8_queries(pb.q);  // INT4 pages quantize the query (kv_kernels.hpp)
  ThreadPool pool(3);
  for (const std::int64_t window : {0, 1000}) {
    CAPTURE(window);
    DecodeAttentionParams p;
    p.sliding_window = window;
    Tensor<float> one(pb.q.shape()), many(pb.q.shape());
    REQUIRE(paged_decode_attention(pb.q.view(), k.view(), v.view(), pb.table(), one.view(), p).ok());
    CHECK(max_abs_diff(one.data(), reference_decode<f16>(pb, 1.0 / 8.0, window)) < 2e-5);
    p.pool = &pool;
    REQUIRE(paged_decode_attention(pb.q.view(), k.view(), v.view(), pb.table(), many.view(), p).ok());
    CHECK(std::memcmp(one.data(), many.data(), static_cast<std::size_t>(one.numel()) * sizeof(float)) == 0);
    p.pool = nullptr;
    REQUIRE(paged_decode_attention(pb.q.view(), k4.view(), v4.view(), pb.table(), one.view(), p).ok());
    CHECK(excess_over_bound(one.data(), reference_decode<float>(deq, 1.0 / 8.0, window), int8_weight_bound(deq, v4.scales, 1.0 / 8.0, window),
                            2e-5) <= 0);
    p.pool = &pool;
    REQUIRE(paged_decode_attention(pb.q.view(), k4.view(), v4.view(), pb.table(), many.view(), p).ok());
    CHECK(std::memcmp(one.data(), many.data(), static_cast<std::size_t>(one.numel()) * sizeof(float)) == 0);
  }
}

TEST_CASE("paged decode attention (CPU): INT8 and INT4 scales of the wrong shape are errors") {
  PagedBatch pb = make_paged_batch({20, 5}, 4, 2, 16, 32, 5);
  Tensor<float> out(pb.q.shape());
  const Int8Owned k8 = quantize_int8(pb.k), v8 = quantize_int8(pb.v);
  Tensor<float> bad8({pb.num_pages, 2, 15});
  status st = paged_decode_attention(pb.q.view(), Int8KvPages{k8.values.view(), bad8.view()}, v8.view(), pb.table(), out.view());
  CHECK(st.code() == errc::shape_mismatch);
  CHECK(contains(st.message(), "one per token and head"));

  const Int4Owned k4 = quantize_int4(pb.k, 8), v4 = quantize_int4(pb.v, 8);
  CHECK(paged_decode_attention(pb.q.view(), k4.view(), v4.view(), pb.table(), out.view()).ok());
  Tensor<float> bad4({pb.num_pages, 2, 16, 3});  // 3 does not divide 32
  st = paged_decode_attention(pb.q.view(), Int4KvPages{k4.values.view(), bad4.view()}, v4.view(), pb.table(), out.view());
  CHECK(st.code() == errc::shape_mismatch);
  CHECK(contains(st.message(), "G dividing 32"));
  Tensor<float> other4({pb.num_pages, 2, 16, 2});
  st = paged_decode_attention(pb.q.view(), k4.view(), Int4KvPages{v4.values.view(), other4.view()}, pb.table(), out.view());
  CHECK(st.code() == errc::shape_mismatch);
  CHECK(contains(st.message(), "V scales"));
}
