// quarry/kv/cuda_paged_attention.hpp: the device kernel against the f64 reference and the CPU
// function, for head_dim 64 / 128 / 256, f16 / bf16 / f32 pages, GQA groups 1..8 (3 and 6: a
// padded group), one chunk and many (merged by log-sum-exp), sliding windows; and its errors.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include <quarry/cuda.hpp>

#include "kv/paged_reference.hpp"
#include "test_util.hpp"

using namespace quarry;
using namespace quarry::testing;

namespace {

template <class KV>
double run_device(const PagedBatch& pb, const DecodeAttentionParams& params) {
  const CudaPageTable table = CudaPageTable::upload(pb.table(), pb.num_pages, pb.page_size).value();
  const Tensor<float, cuda> q = to_device(pb.q);
  Tensor<float, cuda> out = Tensor<float, cuda>::uninitialized(pb.q.shape());
  if constexpr (std::is_same_v<KV, float>) {
    paged_decode_attention(q, to_device(pb.k), to_device(pb.v), table, out, params);
  } else {
    paged_decode_attention(q, to_device(pages_as<KV>(pb.k)), to_device(pages_as<KV>(pb.v)), table, out, params);
  }
  const Tensor<float> host = out.to_host();
  const double scale = params.scale != 0.f ? params.scale : 1.0 / std::sqrt(static_cast<double>(pb.dim));
  return max_abs_diff(host.data(), reference_decode<KV>(pb, scale, params.sliding_window));
}

}  // namespace

TEST_CASE("paged decode attention on cuda: head_dim 64/128/256, f16/bf16/f32, GQA groups, chunks, against f64") {
  const std::vector<std::int64_t> lengths = {1, 15, 16, 17, 300, 2000};
  std::uint32_t seed = 10;
  for (const std::int64_t dim : {64, 128, 256}) {
    for (const auto& [n_heads, n_kv] : std::vector<std::pair<std::int64_t, std::int64_t>>{{4, 4}, {8, 4}, {6, 2}, {16, 4}, {24, 3}, {8, 1}}) {
      for (const std::int64_t page_size : {16, 7}) {
        const PagedBatch pb = make_paged_batch(lengths, n_heads, n_kv, page_size, dim, ++seed, 3, 2.f);
        for (const std::int64_t chunk : {0, 64, 4096}) {
          CAPTURE(dim);
          CAPTURE(n_heads);
          CAPTURE(n_kv);
          CAPTURE(page_size);
          CAPTURE(chunk);
          DecodeAttentionParams p;
          p.chunk_tokens = chunk;
          CHECK(run_device<f16>(pb, p) < 2e-5);
          CHECK(run_device<bf16>(pb, p) < 2e-5);
          CHECK(run_device<float>(pb, p) < 2e-5);
        }
      }
    }
  }
}

TEST_CASE("paged decode attention on cuda: sliding windows and a batch of 64 sequences") {
  std::vector<std::int64_t> lengths;
  for (int i = 0; i < 64; ++i) lengths.push_back(1 + (i * 97) % 700);
  const PagedBatch pb = make_paged_batch(lengths, 32, 8, 16, 128, 99, 5, 2.f);
  for (const std::int64_t window : {0, 1, 16, 100, 5000}) {
    CAPTURE(window);
    DecodeAttentionParams p;
    p.sliding_window = window;
    p.chunk_tokens = window == 100 ? 32 : 0;
    CHECK(run_device<f16>(pb, p) < 2e-5);
  }
}

TEST_CASE("paged decode attention on cuda: errors") {
  const PagedBatch pb = make_paged_batch({20, 5}, 4, 2, 16, 96, 5);
  const CudaPageTable table = CudaPageTable::upload(pb.table(), pb.num_pages, 16).value();
  const Tensor<float, cuda> q = to_device(pb.q);
  Tensor<float, cuda> out(pb.q.shape());
  status st = thrown([&] { paged_decode_attention(q, to_device(pb.k), to_device(pb.v), table, out); });
  CHECK(st.code() == errc::unsupported);
  CHECK(contains(st.message(), "head_dim 96"));

  std::vector<std::int32_t> bad = pb.indices;
  bad[0] = 1000;
  const auto up = CudaPageTable::upload({pb.indptr, bad, pb.last}, pb.num_pages, 16);
  REQUIRE_FALSE(up.ok());
  CHECK(up.status().code() == errc::out_of_range);

  const PagedBatch pb64 = make_paged_batch({20, 5}, 4, 2, 16, 64, 6);
  const CudaPageTable other = CudaPageTable::upload(pb64.table(), pb64.num_pages, 8).value();  // checked for 8-token pages
  Tensor<float, cuda> out64(pb64.q.shape());
  st = thrown([&] { paged_decode_attention(to_device(pb64.q), to_device(pb64.k), to_device(pb64.v), other, out64); });
  CHECK(st.code() == errc::invalid_argument);
  CHECK(contains(st.message(), "checked for"));
  Tensor<float, cuda> out_bad({2, 4, 32});
  const CudaPageTable good = CudaPageTable::upload(pb64.table(), pb64.num_pages, 16).value();
  st = thrown([&] { paged_decode_attention(to_device(pb64.q), to_device(pb64.k), to_device(pb64.v), good, out_bad); });
  CHECK(st.code() == errc::shape_mismatch);
}
