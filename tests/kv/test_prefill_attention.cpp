// quarry/kv/prefill_attention.hpp: causal prefill attention over pages against an f64 reference,
// for f32 / f16 / bf16 / INT8 / INT4 pages, page sizes, GQA groups, whole prompts and
// continuations after cached tokens, sliding windows and head sizes; agreement with decode
// attention for one query row; independence of the thread count; and the errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include <quarry/core/thread_pool.hpp>
#include <quarry/kv/paged_attention.hpp>
#include <quarry/kv/prefill_attention.hpp>

#include "kv/paged_reference.hpp"
#include "test_util.hpp"

using namespace quarry;
using namespace quarry::testing;

namespace {

enum class Kv { f32, f16, bf16, i8, i4 };

const char* name(Kv kind) {
  switch (kind) {
    case Kv::f32: return "f32";
    case Kv::f16: return "f16";
    case Kv::bf16: return "bf16";
    case Kv::i8: return "int8";
    case Kv::i4: return "int4";
  }
  return "?";
}

// pb's K/V stored as one element type. Quantized kinds overwrite pb's K/V with their dequantized
// values (built once per batch, before any reference is computed).
struct StoredPages {
  Kv kind;
  Tensor<f16> k16, v16;
  Tensor<bf16> kb, vb;
  Int8Owned k8, v8;
  Int4Owned k4, v4;

  StoredPages(PagedBatch& pb, Kv kind_, std::int64_t int4_group = 32) : kind(kind_) {
    if (kind == Kv::f16) {
      k16 = pages_as<f16>(pb.k);
      v16 = pages_as<f16>(pb.v);
    } else if (kind == Kv::bf16) {
      kb = pages_as<bf16>(pb.k);
      vb = pages_as<bf16>(pb.v);
    } else if (kind == Kv::i8) {
      k8 = quantize_int8(pb.k);
      v8 = quantize_int8(pb.v);
    } else if (kind == Kv::i4) {
      k4 = quantize_int4(pb.k, int4_group);
      v4 = quantize_int4(pb.v, int4_group);
    }
  }

  status prefill(const PagedBatch& pb, TensorView<const float> q, std::span<const std::int32_t> qo, TensorView<float> out,
                 const PrefillAttentionParams& p) const {
    switch (kind) {
      case Kv::f32: return paged_prefill_attention(q, qo, pb.k.view(), pb.v.view(), pb.table(), out, p);
      case Kv::f16: return paged_prefill_attention(q, qo, k16.view(), v16.view(), pb.table(), out, p);
      case Kv::bf16: return paged_prefill_attention(q, qo, kb.view(), vb.view(), pb.table(), out, p);
      case Kv::i8: return paged_prefill_attention(q, qo, k8.view(), v8.view(), pb.table(), out, p);
      case Kv::i4: return paged_prefill_attention(q, qo, k4.view(), v4.view(), pb.table(), out, p);
    }
    return {errc::internal, "kind"};
  }
  status decode(const PagedBatch& pb, TensorView<const float> q, TensorView<float> out, const DecodeAttentionParams& p) const {
    switch (kind) {
      case Kv::f32: return paged_decode_attention(q, pb.k.view(), pb.v.view(), pb.table(), out, p);
      case Kv::f16: return paged_decode_attention(q, k16.view(), v16.view(), pb.table(), out, p);
      case Kv::bf16: return paged_decode_attention(q, kb.view(), vb.view(), pb.table(), out, p);
      case Kv::i8: return paged_decode_attention(q, k8.view(), v8.view(), pb.table(), out, p);
      case Kv::i4: return paged_decode_attention(q, k4.view(), v4.view(), pb.table(), out, p);
    }
    return {errc::internal, "kind"};
  }
  // The reference over the values these pages hold.
  std::vector<double> reference(const PagedBatch& pb, const PrefillQueries& pq, double scale, std::int64_t window) const {
    if (kind == Kv::f16) return reference_prefill<f16>(pb, pq, scale, window);
    if (kind == Kv::bf16) return reference_prefill<bf16>(pb, pq, scale, window);
    return reference_prefill<float>(pb, pq, scale, window);  // f32, and the dequantized INT8 / INT4 values
  }
};

// Runs prefill on `stored` and returns max |out - reference|.
double prefill_error(const PagedBatch& pb, const StoredPages& stored, const PrefillQueries& pq, const PrefillAttentionParams& p,
                     Tensor<float>& out) {
  out = Tensor<float>(pq.q.shape());
  const status st = stored.prefill(pb, pq.q.view(), pq.qo_indptr, out.view(), p);
  REQUIRE_MESSAGE(st.ok(), st.message());
  const double scale = p.scale != 0.f ? p.scale : 1.0 / std::sqrt(static_cast<double>(pb.dim));
  return max_abs_diff(out.data(), stored.reference(pb, pq, scale, p.sliding_window));
}

}  // namespace

TEST_CASE("paged prefill attention (CPU): f32, f16 and bf16 pages against the f64 reference") {
  // Sequence lengths and query rows: one token; a whole prompt; a continuation after 44 cached
  // tokens; a whole longer prompt; one row after 39 cached tokens (a decode step).
  const std::vector<std::int64_t> lengths = {1, 17, 64, 100, 40}, rows = {1, 17, 20, 100, 1};
  std::uint32_t seed = 10;
  for (const std::int64_t page_size : {1, 7, 16}) {
    for (const auto& n_heads_n_kv : std::vector<std::pair<std::int64_t, std::int64_t>>{{4, 4}, {4, 2}, {8, 2}}) {
      const std::int64_t n_heads = n_heads_n_kv.first, n_kv = n_heads_n_kv.second;
      PagedBatch pb = make_paged_batch(lengths, n_heads, n_kv, page_size, 64, ++seed, 3, 2.f);
      const PrefillQueries pq = make_prefill_queries(rows, n_heads, 64, ++seed);
      for (const Kv kind : {Kv::f32, Kv::f16, Kv::bf16}) {
        CAPTURE(page_size);
        CAPTURE(n_heads);
        CAPTURE(n_kv);
        CAPTURE(std::string(name(kind)));
        const StoredPages stored(pb, kind);
        Tensor<float> out;
        CHECK(prefill_error(pb, stored, pq, {}, out) < 2e-5);
      }
    }
  }
}

TEST_CASE("paged prefill attention (CPU): INT8 and INT4 pages against the reference over their dequantized values") {
  std::uint32_t seed = 100;
  for (const std::int64_t dim : {64, 128}) {
    for (const std::int64_t page_size : {7, 16}) {
      for (const auto& n_heads_n_kv : std::vector<std::pair<std::int64_t, std::int64_t>>{{4, 4}, {8, 2}}) {
        const std::int64_t n_heads = n_heads_n_kv.first, n_kv = n_heads_n_kv.second;
        for (const Kv kind : {Kv::i8, Kv::i4}) {
          CAPTURE(dim);
          CAPTURE(page_size);
          CAPTURE(n_heads);
          CAPTURE(std::string(name(kind)));
          PagedBatch pb = make_paged_batch({30, 90, 3}, n_heads, n_kv, page_size, dim, ++seed, 2, 2.f);
          const PrefillQueries pq = make_prefill_queries({30, 50, 2}, n_heads, dim, ++seed);
          const StoredPages stored(pb, kind, dim == 64 ? 32 : 16);
          Tensor<float> out;
          CHECK(prefill_error(pb, stored, pq, {}, out) < 2e-5);
          PrefillAttentionParams p;
          p.sliding_window = 24;
          CHECK(prefill_error(pb, stored, pq, p, out) < 2e-5);
        }
      }
    }
  }
}

TEST_CASE("paged prefill attention (CPU): sliding windows, explicit scale, head sizes 128 and 40, pages of 100 tokens") {
  std::uint32_t seed = 200;
  for (const auto& dim_page_size : std::vector<std::pair<std::int64_t, std::int64_t>>{{128, 16}, {40, 7}, {64, 100}}) {
    const std::int64_t dim = dim_page_size.first, page_size = dim_page_size.second;
    PagedBatch pb = make_paged_batch({1, 40, 129, 150}, 8, 2, page_size, dim, ++seed, 3, 2.f);
    const PrefillQueries pq = make_prefill_queries({1, 40, 30, 150}, 8, dim, ++seed);
    const StoredPages stored(pb, Kv::f32);
    for (const std::int64_t window : {0, 1, 5, 16, 33, 64, 65, 1000}) {
      for (const float scale : {0.f, 0.05f}) {
        CAPTURE(dim);
        CAPTURE(window);
        CAPTURE(scale);
        PrefillAttentionParams p;
        p.sliding_window = window;
        p.scale = scale;
        Tensor<float> out;
        CHECK(prefill_error(pb, stored, pq, p, out) < 2e-5);
      }
    }
  }
}

TEST_CASE("paged prefill attention (CPU): a window of one token gives that token's V exactly") {
  const PagedBatch pb = make_paged_batch({3, 70}, 4, 2, 16, 32, 7);
  const PrefillQueries pq = make_prefill_queries({3, 65}, 4, 32, 8);
  Tensor<float> out(pq.q.shape());
  PrefillAttentionParams p;
  p.sliding_window = 1;
  REQUIRE(paged_prefill_attention(pq.q.view(), pq.qo_indptr, pb.k.view(), pb.v.view(), pb.table(), out.view(), p).ok());
  bool exact = true;
  for (std::int64_t b = 0; b < 2; ++b) {
    const std::int64_t len = pb.table().length(b, 16), n = pq.qo_indptr[b + 1] - pq.qo_indptr[b];
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int64_t t = len - n + i;
      const std::int32_t page = pb.indices[static_cast<std::size_t>(pb.indptr[static_cast<std::size_t>(b)] + t / 16)];
      for (std::int64_t h = 0; h < 4; ++h)
        for (std::int64_t d = 0; d < 32; ++d) exact = exact && out(pq.qo_indptr[b] + i, h, d) == pb.v(page, h / 2, t % 16, d);
    }
  }
  CHECK(exact);
}

TEST_CASE("paged prefill attention (CPU): one query row per sequence equals decode attention") {
  std::uint32_t seed = 300;
  for (const std::int64_t page_size : {7, 16}) {
    for (const Kv kind : {Kv::f32, Kv::f16, Kv::bf16, Kv::i8, Kv::i4}) {
      for (const std::int64_t window : {0, 20}) {
        CAPTURE(page_size);
        CAPTURE(std::string(name(kind)));
        CAPTURE(window);
        PagedBatch pb = make_paged_batch({1, 15, 16, 17, 300}, 8, 2, page_size, 64, ++seed, 3, 2.f);
        const StoredPages stored(pb, kind);
        PrefillQueries pq = make_prefill_queries({1, 1, 1, 1, 1}, 8, 64, ++seed);
        // Decode over INT8 and INT4 pages quantizes the query (kv_kernels.hpp); a query already on
        // the int8 grid passes through unchanged, so both get that one.
        if (kind == Kv::i8 || kind == Kv::i4) pq.q = int8_queries(pq.q);
        pb.q = pq.q.clone();  // [batch, n_heads, dim]: decode's q
        Tensor<float> prefill_out;
        CHECK(prefill_error(pb, stored, pq, PrefillAttentionParams{0.f, window, nullptr}, prefill_out) < 2e-5);
        Tensor<float> decode_out(pb.q.shape());
        DecodeAttentionParams dp;
        dp.sliding_window = window;
        REQUIRE(stored.decode(pb, pb.q.view(), decode_out.view(), dp).ok());
        // Each is within ~1.5e-6 of the f64 reference here on every ISA (outputs up to ~2, a sharp
        // softmax), so they agree to float rounding, not bit for bit: tiles, exp and sums differ.
        // INT8 and INT4: decode's weights of V are 8-bit integers (kv_kernels.hpp), prefill's are
        // not; they differ by what that rounding may cost (int8_weight_bound) at most.
        std::vector<double> bound(static_cast<std::size_t>(decode_out.numel()), 0.0);
        if (kind == Kv::i8) bound = int8_weight_bound(pb, stored.v8.scales, 1.0 / 8.0, window);
        if (kind == Kv::i4) bound = int8_weight_bound(pb, stored.v4.scales, 1.0 / 8.0, window);
        const std::vector<double> prefill_got(prefill_out.data(), prefill_out.data() + prefill_out.numel());
        const double excess = excess_over_bound(decode_out.data(), prefill_got, bound, kind == Kv::i8 || kind == Kv::i4 ? 4e-5 : 3e-6);
        INFO("over the bound by " << excess);
        CHECK(excess <= 0);
      }
    }
  }
}

TEST_CASE("paged prefill attention (CPU): a pool of 3 threads gives bit-identical results to the caller's thread") {
  ThreadPool pool(3);
  for (const Kv kind : {Kv::f16, Kv::i4}) {
    for (const std::int64_t window : {0, 50}) {
      CAPTURE(std::string(name(kind)));
      CAPTURE(window);
      PagedBatch pb = make_paged_batch({300, 257, 5}, 8, 2, 16, 64, 400, 3, 2.f);
      const StoredPages stored(pb, kind);
      const PrefillQueries pq = make_prefill_queries({300, 100, 5}, 8, 64, 401);
      Tensor<float> serial(pq.q.shape()), threaded(pq.q.shape());
      PrefillAttentionParams p;
      p.sliding_window = window;
      REQUIRE(stored.prefill(pb, pq.q.view(), pq.qo_indptr, serial.view(), p).ok());
      p.pool = &pool;
      REQUIRE(stored.prefill(pb, pq.q.view(), pq.qo_indptr, threaded.view(), p).ok());
      CHECK(std::memcmp(serial.data(), threaded.data(), static_cast<std::size_t>(serial.numel()) * sizeof(float)) == 0);
    }
  }
}

TEST_CASE("paged prefill attention (CPU): bad query offsets, shapes and parameters are errors that name the field and write nothing") {
  PagedBatch pb = make_paged_batch({20, 5}, 4, 2, 16, 16, 5);
  const PrefillQueries pq = make_prefill_queries({8, 5}, 4, 16, 6);
  Tensor<float> out = Tensor<float>::full(pq.q.shape(), 7.f);
  auto untouched = [&] { return std::all_of(out.span().begin(), out.span().end(), [](float x) { return x == 7.f; }); };
  auto run = [&](std::span<const std::int32_t> qo, const PrefillAttentionParams& p = {}) {
    return paged_prefill_attention(pq.q.view(), qo, pb.k.view(), pb.v.view(), pb.table(), out.view(), p);
  };
  auto expect = [&](const status& st, errc code, const char* part) {
    CAPTURE(st.message());
    CHECK(st.code() == code);
    CHECK(contains(st, part));
    CHECK(untouched());
  };

  std::vector<std::int32_t> qo = {0, 8};
  expect(run(qo), errc::shape_mismatch, "qo_indptr has 2 entries");
  qo = {0, 8, 13, 13};
  expect(run(qo), errc::shape_mismatch, "qo_indptr has 4 entries");
  qo = {1, 8, 13};
  expect(run(qo), errc::invalid_argument, "qo_indptr[0]");
  qo = {0, 14, 13};
  expect(run(qo), errc::invalid_argument, "qo_indptr decreases at sequence 1");
  qo = {0, 8, 12};
  expect(run(qo), errc::shape_mismatch, "qo_indptr ends at 12");
  qo = {0, 13, 13};
  expect(run(qo), errc::invalid_argument, "sequence 1 of the batch has no query rows");
  qo = {0, 0, 13};
  expect(run(qo), errc::invalid_argument, "sequence 0 of the batch has no query rows");
  qo = {0, 7, 13};  // sequence 1 has 5 tokens but 6 rows
  expect(run(qo), errc::invalid_argument, "sequence 1 of the batch has 6 query rows in qo_indptr but only 5 tokens");
  PrefillAttentionParams p;
  p.sliding_window = -1;
  expect(run(pq.qo_indptr, p), errc::invalid_argument, "sliding_window");

  // The page table (check_page_table's messages).
  std::vector<std::int32_t> bad = pb.indices;
  bad[1] = static_cast<std::int32_t>(pb.num_pages);
  expect(paged_prefill_attention(pq.q.view(), pq.qo_indptr, pb.k.view(), pb.v.view(), {pb.indptr, bad, pb.last}, out.view()),
         errc::out_of_range, "sequence 0 names page");

  // Shapes.
  Tensor<float> q3({13, 3, 16});
  expect(paged_prefill_attention(q3.view(), pq.qo_indptr, pb.k.view(), pb.v.view(), pb.table(), out.view()), errc::invalid_argument,
         "multiple of n_kv_heads");
  Tensor<float> q_dim({13, 4, 8});
  expect(paged_prefill_attention(q_dim.view(), pq.qo_indptr, pb.k.view(), pb.v.view(), pb.table(), out.view()), errc::shape_mismatch,
         "q is [13, 4, 8]");
  Tensor<float> q_rank({13, 64});
  expect(paged_prefill_attention(q_rank.view(), pq.qo_indptr, pb.k.view(), pb.v.view(), pb.table(), out.view()), errc::shape_mismatch,
         "q is [13, 64]");
  Tensor<float> v_other({pb.num_pages, 2, 16, 8});
  expect(paged_prefill_attention(pq.q.view(), pq.qo_indptr, pb.k.view(), v_other.view(), pb.table(), out.view()), errc::shape_mismatch,
         "v_pages");
  Tensor<float> out_bad({13, 4, 15});
  CHECK(contains(paged_prefill_attention(pq.q.view(), pq.qo_indptr, pb.k.view(), pb.v.view(), pb.table(), out_bad.view()), "out is"));
  Tensor<float> k_rank({pb.num_pages, 2, 256});
  expect(paged_prefill_attention(pq.q.view(), pq.qo_indptr, k_rank.view(), k_rank.view(), pb.table(), out.view()), errc::shape_mismatch,
         "k_pages is");

  // Views that are not contiguous.
  Tensor<float> wide({13, 4, 32});
  expect(paged_prefill_attention(wide.view().slice(2, 0, 16), pq.qo_indptr, pb.k.view(), pb.v.view(), pb.table(), out.view()),
         errc::invalid_argument, "contiguous");
  Tensor<float> wide_out({13, 4, 32});
  CHECK(contains(
      paged_prefill_attention(pq.q.view(), pq.qo_indptr, pb.k.view(), pb.v.view(), pb.table(), wide_out.view().slice(2, 0, 16)),
      "contiguous"));

  // INT8 / INT4 scales.
  Int8Owned k8 = quantize_int8(pb.k), v8 = quantize_int8(pb.v);
  Tensor<float> s8_bad({pb.num_pages, 2, 15});
  expect(paged_prefill_attention(pq.q.view(), pq.qo_indptr, Int8KvPages{k8.values.view(), s8_bad.view()}, v8.view(), pb.table(), out.view()),
         errc::shape_mismatch, "INT8 pages");
  Int4Owned k4 = quantize_int4(pb.k, 8), v4 = quantize_int4(pb.v, 8);
  Tensor<float> s4_bad({pb.num_pages, 2, 16, 3});
  expect(paged_prefill_attention(pq.q.view(), pq.qo_indptr, Int4KvPages{k4.values.view(), s4_bad.view()}, v4.view(), pb.table(), out.view()),
         errc::shape_mismatch, "INT4 pages");
  CHECK(paged_prefill_attention(pq.q.view(), pq.qo_indptr, k4.view(), v4.view(), pb.table(), out.view()).ok());
  CHECK_FALSE(untouched());
}

TEST_CASE("paged prefill attention (CPU): an empty batch is a no-op") {
  const PagedBatch pb = make_paged_batch({}, 4, 2, 16, 16, 9);
  const std::vector<std::int32_t> qo = {0};
  Tensor<float> q({0, 4, 16}), out({0, 4, 16});
  CHECK(paged_prefill_attention(q.view(), qo, pb.k.view(), pb.v.view(), pb.table(), out.view()).ok());
}
