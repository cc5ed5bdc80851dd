// quarry/kv/paged_attention.hpp: decode attention over pages against an f64 reference, for
// f32 / f16 / bf16 pages, GQA groups, page sizes, chunked merging and sliding windows; and the
// page-table and shape checks.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

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
    for (const auto& [n_heads, n_kv] : std::vector<std::pair<std::int64_t, std::int64_t>>{{4, 4}, {8, 2}, {6, 2}, {8, 1}}) {
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
