// quarry/kv/cuda_paged_attention.hpp: the device kernel against the f64 reference and the CPU
// function, for head_dim 64 / 128 / 256, f16 / bf16 / f32 / INT8 / INT4 pages, GQA groups 1..8
// (3 and 6: a padded group), one chunk and many (merged by log-sum-exp), sliding windows; on the
// emulator, the chunks a call picks by itself; and its errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include <quarry/cuda.hpp>

#include "kv/paged_reference.hpp"
#include "test_util.hpp"

#if defined(QUARRY_SIMT_EMULATED)
#include "quarry_simt.hpp"
#endif

using namespace quarry;
using namespace quarry::testing;

namespace {

// A batch's page table, query and pages (as f32, f16 and bf16) on the device, uploaded once.
struct DeviceBatch {
  explicit DeviceBatch(const PagedBatch& pb)
      : table(CudaPageTable::upload(pb.table(), pb.num_pages, pb.page_size).value()),
        q(to_device(pb.q)),
        k32(to_device(pb.k)),
        v32(to_device(pb.v)),
        k16(to_device(pages_as<f16>(pb.k))),
        v16(to_device(pages_as<f16>(pb.v))),
        kb16(to_device(pages_as<bf16>(pb.k))),
        vb16(to_device(pages_as<bf16>(pb.v))) {}
  template <class KV>
  std::pair<const Tensor<KV, cuda>&, const Tensor<KV, cuda>&> pages() const {
    if constexpr (std::is_same_v<KV, float>) return {k32, v32};
    else if constexpr (std::is_same_v<KV, f16>) return {k16, v16};
    else return {kb16, vb16};
  }
  CudaPageTable table;
  Tensor<float, cuda> q, k32, v32;
  Tensor<f16, cuda> k16, v16;
  Tensor<bf16, cuda> kb16, vb16;
};

// Decode attention on the device over the batch's KV pages, once per chunk size (with the
// sliding window), each against the f64 reference of those pages (computed once).
template <class KV>
void check_device(const PagedBatch& pb, const DeviceBatch& d, std::initializer_list<std::int64_t> chunks, std::int64_t window = 0) {
  const std::vector<double> want = reference_decode<KV>(pb, 1.0 / std::sqrt(static_cast<double>(pb.dim)), window);
  const auto [k, v] = d.pages<KV>();
  for (const std::int64_t chunk : chunks) {
    CAPTURE(chunk);
    DecodeAttentionParams p;
    p.chunk_tokens = chunk;
    p.sliding_window = window;
    Tensor<float, cuda> out = Tensor<float, cuda>::uninitialized(pb.q.shape());
    paged_decode_attention(d.q, k, v, d.table, out, p);
    CHECK(max_abs_diff(out.to_host().data(), want) < 2e-5);
  }
}

// f16 / bf16 / f32 pages of one head_dim: GQA groups 1..8 (3 and 6 padded), pages of 16 and 7
// tokens, one chunk and many.
void check_head_dim(std::int64_t dim, std::uint32_t seed) {
  const std::vector<std::int64_t> lengths = {1, 15, 16, 17, 300, 2000};
  // Not structured bindings: CAPTURE's lambda cannot name one before C++20's P1091 (Clang 16).
  for (const auto& heads : std::vector<std::pair<std::int64_t, std::int64_t>>{{4, 4}, {8, 4}, {6, 2}, {16, 4}, {24, 3}, {8, 1}}) {
    const std::int64_t n_heads = heads.first, n_kv = heads.second;
    for (const std::int64_t page_size : {16, 7}) {
      const PagedBatch pb = make_paged_batch(lengths, n_heads, n_kv, page_size, dim, ++seed, 3, 2.f);
      const DeviceBatch d(pb);
      CAPTURE(n_heads);
      CAPTURE(n_kv);
      CAPTURE(page_size);
      check_device<f16>(pb, d, {0, 64, 4096});
      check_device<bf16>(pb, d, {0, 64, 4096});
      check_device<float>(pb, d, {0, 64, 4096});
    }
  }
}

// Decode attention on the device over INT4 pages (groups of `group` elements) of K and V
// (k_raw, v_raw), against the f64 reference of their values with deq's query (deq.k and deq.v
// become those values).
void check_int4(PagedBatch& deq, const Tensor<float>& k_raw, const Tensor<float>& v_raw, std::int64_t group, const Tensor<float, cuda>& q,
                const CudaPageTable& table, Tensor<float, cuda>& out, double scale) {
  CAPTURE(group);
  deq.k = k_raw.clone();
  deq.v = v_raw.clone();
  const Int4Owned k4 = quantize_int4(deq.k, group), v4 = quantize_int4(deq.v, group);
  const Tensor<quarry::int4, cuda> k4v = to_device(k4.values), v4v = to_device(v4.values);
  const Tensor<float, cuda> k4s = to_device(k4.scales), v4s = to_device(v4.scales);
  paged_decode_attention(q, CudaInt4KvPages{k4v, k4s}, CudaInt4KvPages{v4v, v4s}, table, out);
  CHECK(max_abs_diff(out.to_host().data(), reference_decode<float>(deq, scale)) < 2e-5);
}

}  // namespace

TEST_CASE("paged decode attention on cuda: head_dim 64, f16/bf16/f32, GQA groups, chunks, against f64") { check_head_dim(64, 10); }
TEST_CASE("paged decode attention on cuda: head_dim 128, f16/bf16/f32, GQA groups, chunks, against f64") { check_head_dim(128, 22); }
TEST_CASE("paged decode attention on cuda: head_dim 256, f16/bf16/f32, GQA groups, chunks, against f64") { check_head_dim(256, 34); }

TEST_CASE("paged decode attention on cuda: INT8 and INT4 pages against the f64 reference of their values and the CPU") {
  std::uint32_t seed = 200;
  for (const std::int64_t dim : {64, 128}) {
    for (const auto& heads : std::vector<std::pair<std::int64_t, std::int64_t>>{{8, 2}, {6, 6}, {12, 2}}) {
      const std::int64_t n_heads = heads.first, n_kv = heads.second;
      CAPTURE(dim);
      CAPTURE(n_heads);
      CAPTURE(n_kv);
      PagedBatch deq = make_paged_batch({1, 17, 300, 1500}, n_heads, n_kv, 16, dim, ++seed, 3, 2.f);
      const Tensor<float> k_raw = deq.k.clone(), v_raw = deq.v.clone(), q_raw = deq.q.clone();
      const CudaPageTable table = CudaPageTable::upload(deq.table(), deq.num_pages, deq.page_size).value();
      const Tensor<float, cuda> q = to_device(q_raw);
      Tensor<float, cuda> out(q_raw.shape());
      const double scale = 1.0 / std::sqrt(static_cast<double>(dim));

      // INT8: the query goes on the int8 grid, as on the CPU (kv_kernels.hpp).
      const Int8Owned k8 = quantize_int8(deq.k), v8 = quantize_int8(deq.v);  // deq: their values
      const Tensor<std::int8_t, cuda> k8v = to_device(k8.values), v8v = to_device(v8.values);
      const Tensor<float, cuda> k8s = to_device(k8.scales), v8s = to_device(v8.scales);
      deq.q = int8_queries(q_raw);
      const std::vector<double> want8 = reference_decode<float>(deq, scale);
      Tensor<float> cpu(q_raw.shape());
      REQUIRE(paged_decode_attention(q_raw.view(), k8.view(), v8.view(), deq.table(), cpu.view()).ok());
      for (const std::int64_t chunk : {0, 64}) {
        CAPTURE(chunk);
        DecodeAttentionParams p;
        p.chunk_tokens = chunk;
        paged_decode_attention(q, CudaInt8KvPages{k8v, k8s}, CudaInt8KvPages{v8v, v8s}, table, out, p);
        const Tensor<float> got = out.to_host();
        CHECK(max_abs_diff(got.data(), want8) < 2e-5);
        // The CPU rounds its weights of V to 8 bits, the device does not: they differ by what
        // that rounding may cost (int8_weight_bound) at most.
        const std::vector<double> gpu_got(got.data(), got.data() + got.numel());
        CHECK(excess_over_bound(cpu.data(), gpu_got, int8_weight_bound(deq, v8.scales, scale), 4e-5) <= 0);
      }

      // INT4, groups of 8 and 32 elements; the query on the int8 grid too.
      for (const std::int64_t group : {8, 32}) check_int4(deq, k_raw, v_raw, group, q, table, out, scale);
    }
  }

  // Errors: INT4 groups of 4 elements, INT8 scales of the wrong shape.
  PagedBatch pb = make_paged_batch({20, 5}, 4, 2, 16, 64, 7);
  const CudaPageTable table = CudaPageTable::upload(pb.table(), pb.num_pages, 16).value();
  const Tensor<float, cuda> q = to_device(pb.q);
  Tensor<float, cuda> out(pb.q.shape());
  Tensor<float> k_copy = pb.k.clone();
  const Int4Owned k4 = quantize_int4(k_copy, 4);
  const Tensor<quarry::int4, cuda> k4v = to_device(k4.values);
  const Tensor<float, cuda> k4s = to_device(k4.scales);
  status st = thrown([&] { paged_decode_attention(q, CudaInt4KvPages{k4v, k4s}, CudaInt4KvPages{k4v, k4s}, table, out); });
  CHECK(st.code() == errc::unsupported);
  CHECK(contains(st.message(), "multiples of 8"));
  const Int8Owned k8 = quantize_int8(k_copy);
  const Tensor<std::int8_t, cuda> k8v = to_device(k8.values);
  const Tensor<float, cuda> bad = to_device(Tensor<float>({pb.num_pages, 2, 15}));
  st = thrown([&] { paged_decode_attention(q, CudaInt8KvPages{k8v, bad}, CudaInt8KvPages{k8v, bad}, table, out); });
  CHECK(st.code() == errc::shape_mismatch);
  CHECK(contains(st.message(), "one per token and head"));
}

TEST_CASE("paged decode attention on cuda: shared prefix pages, lengths at chunk edges, INT8 / INT4 at head_dim 256 with 8 heads per kv head") {
  // Sequences 1 and 3 start with sequence 0's first pages (a forked prompt, as the prefix cache
  // hands them out); lengths at and around multiples of the 64- and 32-token chunks.
  PagedBatch pb = make_paged_batch({192, 64, 65, 128, 1, 33}, 16, 2, 16, 256, 321, 3, 2.f);
  for (std::int32_t p = 0; p < 4; ++p) pb.indices[static_cast<std::size_t>(pb.indptr[1] + p)] = pb.indices[static_cast<std::size_t>(pb.indptr[0] + p)];
  for (std::int32_t p = 0; p < 6; ++p) pb.indices[static_cast<std::size_t>(pb.indptr[3] + p)] = pb.indices[static_cast<std::size_t>(pb.indptr[0] + p)];
  const DeviceBatch d(pb);
  check_device<f16>(pb, d, {0, 64, 32});
  check_device<float>(pb, d, {0, 64, 32});
  check_device<f16>(pb, d, {64}, 65);  // a window of one chunk and a token

  // INT8 and INT4 (groups of 8 and 256 elements): the query on the int8 grid, as on the CPU.
  const Tensor<float> q_raw = pb.q.clone(), k_raw = pb.k.clone(), v_raw = pb.v.clone();
  const double scale = 1.0 / 16.0;
  PagedBatch deq = std::move(pb);  // its K and V become the quantized pages' values
  deq.q = int8_queries(q_raw);
  Tensor<float, cuda> out(q_raw.shape());
  const Int8Owned k8 = quantize_int8(deq.k), v8 = quantize_int8(deq.v);
  const std::vector<double> want8 = reference_decode<float>(deq, scale);
  const Tensor<std::int8_t, cuda> k8v = to_device(k8.values), v8v = to_device(v8.values);
  const Tensor<float, cuda> k8s = to_device(k8.scales), v8s = to_device(v8.scales);
  for (const std::int64_t chunk : {0, 64}) {
    CAPTURE(chunk);
    DecodeAttentionParams p;
    p.chunk_tokens = chunk;
    paged_decode_attention(d.q, CudaInt8KvPages{k8v, k8s}, CudaInt8KvPages{v8v, v8s}, d.table, out, p);
    CHECK(max_abs_diff(out.to_host().data(), want8) < 2e-5);
  }
  for (const std::int64_t group : {8, 256}) check_int4(deq, k_raw, v_raw, group, d.q, d.table, out, scale);
}

TEST_CASE("paged decode attention on cuda: a long sequence in over a thousand chunks (more than the merge's threads), with a short one") {
  // 20,000 tokens in chunks of 16: 1,250 chunks, more than the merge kernel's threads (4 x
  // head_dim: 256 at head_dim 64, 1,024 at 256); the short sequence's other chunks are empty, as
  // are those before a window.
  for (const std::int64_t dim : {64, 256}) {
    CAPTURE(dim);
    const PagedBatch pb = make_paged_batch({20000, 3}, 4, 2, 16, dim, 555 + static_cast<std::uint32_t>(dim), 3, 2.f);
    const DeviceBatch d(pb);
    check_device<f16>(pb, d, {16, 0});
    check_device<f16>(pb, d, {16}, 5000);
  }
}

TEST_CASE("paged decode attention on cuda: sliding windows and a batch of 64 sequences") {
  std::vector<std::int64_t> lengths;
  for (int i = 0; i < 64; ++i) lengths.push_back(1 + (i * 97) % 700);
  const PagedBatch pb = make_paged_batch(lengths, 32, 8, 16, 128, 99, 5, 2.f);
  const DeviceBatch d(pb);
  for (const std::int64_t window : {0, 1, 16, 100, 5000}) {
    CAPTURE(window);
    check_device<f16>(pb, d, {window == 100 ? std::int64_t{32} : std::int64_t{0}}, window);
  }
}

#if defined(QUARRY_SIMT_EMULATED)
// The chunk length a call picks when not told (chunk_tokens 0), seen in the decode kernel's grid
// (grid.y: chunks per sequence and kv head) on the emulator, which reports an H200's 132 SMs:
// from 256 tokens, halved while the grid has fewer than 4 blocks per SM, down to 32 tokens or
// the kernel's tile of tokens, whichever is longer (64 tokens at head_dim 64 and 128 with f16
// pages and up to 4 query heads per kv head; 32 with f32 pages; 16 at head_dim 256 with 8).
TEST_CASE("paged decode attention on cuda: automatic chunks no shorter than the kernel's tile (emulator: the grid launched)") {
  struct Case {
    std::int64_t dim, n_heads, n_kv, length;
    bool f32;
    unsigned chunks;
  };
  for (const Case& c : {Case{128, 32, 8, 300, false, 5},  // 64-token tile: 5 chunks (were 10 of 32 tokens)
                        Case{128, 32, 8, 300, true, 10},  // f32: a 32-token tile
                        Case{256, 16, 2, 300, false, 10},  // a 16-token tile: 32 tokens
                        Case{64, 8, 8, 300, false, 5},
                        Case{64, 8, 2, 40000, false, 313}}) {  // 2 x 157 blocks of 256 tokens: halved once, to 128
    CAPTURE(c.dim);
    CAPTURE(c.n_heads);
    CAPTURE(c.n_kv);
    CAPTURE(c.f32);
    const PagedBatch pb = make_paged_batch({c.length}, c.n_heads, c.n_kv, 16, c.dim, 7, 3, 2.f);
    const DeviceBatch d(pb);
    simt::clear_recent_launches();
    if (c.f32) check_device<float>(pb, d, {0});
    else check_device<f16>(pb, d, {0});
    const std::vector<simt::LaunchRecord> launches = simt::recent_launches();
    const auto decode = std::find_if(launches.begin(), launches.end(), [](const simt::LaunchRecord& l) { return l.kernel.rfind("decode_kernel", 0) == 0; });
    REQUIRE(decode != launches.end());
    CHECK(decode->grid.x == static_cast<unsigned>(c.n_kv));
    CHECK(decode->grid.y == c.chunks);
    // More than one chunk: merged by merge_kernel, one block per (sequence, query head).
    const auto merge = std::find_if(decode, launches.end(), [](const simt::LaunchRecord& l) { return l.kernel.rfind("merge_kernel", 0) == 0; });
    REQUIRE(merge != launches.end());
    CHECK(merge->grid.x == static_cast<unsigned>(c.n_heads));
  }
}
#endif

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
