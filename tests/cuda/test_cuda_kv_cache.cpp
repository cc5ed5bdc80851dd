// quarry/kv/cuda_kv_cache.hpp: a CudaKvCache driven by an accounts-only BlockPool (host_storage
// false) holds, after random appends, writes, forks (copy-on-write), truncations and releases,
// exactly the pages a host BlockPool given the same calls holds (f32, f16, bf16, and INT8 / INT4
// values and scales, bit for bit), and decode attention on the device over them equals the
// CPU's over the host pool (INT8 / INT4: the device's over the host pages uploaded); and its
// errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <random>
#include <vector>

#include <quarry/cuda.hpp>

#include "test_util.hpp"

using namespace quarry;
using namespace quarry::testing;

namespace {

BlockPoolOptions options_of(DType t) {
  BlockPoolOptions o;
  o.num_layers = 2;
  o.n_kv_heads = 2;
  o.head_dim = 64;
  o.page_size = 16;
  o.dtype = t;
  o.num_pages = 48;
  return o;
}

// A plain (f32 / f16 / bf16) device tensor of pages under the name the INT8 / INT4 pages use.
template <class T>
struct CudaPages {
  const Tensor<T, cuda>& values;
};

template <class T>
void check_cache(DType dtype) {
  BlockPoolOptions own = options_of(dtype), outside = own;
  outside.host_storage = false;
  BlockPool ref = BlockPool::create(own).value(), acct = BlockPool::create(outside).value();
  CudaKvCache cache = CudaKvCache::create(acct.options()).value();
  const std::int64_t row = own.n_kv_heads * own.head_dim;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::map<SequenceId, std::int64_t> live;  // sequence -> length
  std::size_t copies = 0;
  // Writes tokens [pos, pos + n) of s with random K/V in both pools (the cache through slots).
  auto write = [&](SequenceId s, std::int64_t pos, std::int64_t n) {
    auto slots = acct.prepare_write(s, pos, n);
    if (!slots.ok()) return false;
    const auto made = acct.take_page_copies();
    copies += made.size();
    cache.apply(made);
    for (std::int64_t l = 0; l < own.num_layers; ++l) {
      Tensor<float> k({n, own.n_kv_heads, own.head_dim}), v({n, own.n_kv_heads, own.head_dim});
      for (float& x : k.span()) x = normal(rng);
      for (float& x : v.span()) x = normal(rng);
      for (std::int64_t t = 0; t < n; ++t)
        REQUIRE(ref.write(s, l, pos + t, std::span<const float>(k.data() + t * row, static_cast<std::size_t>(row)),
                          std::span<const float>(v.data() + t * row, static_cast<std::size_t>(row)))
                    .ok());
      cache.write(l, *slots, to_device(k), to_device(v));
    }
    return true;
  };
  for (int step = 0; step < 150; ++step) {
    const unsigned op = live.empty() ? 0 : rng() % 5;
    auto pick = [&]() {
      auto it = live.begin();
      std::advance(it, static_cast<long>(rng() % live.size()));
      return it->first;
    };
    if (op == 0 && live.size() < 6) {
      const SequenceId s = ref.create();
      REQUIRE(acct.create() == s);
      live[s] = 0;
    } else if (op == 1) {  // new tokens
      const SequenceId s = pick();
      const std::int64_t n = 1 + static_cast<std::int64_t>(rng() % 20);
      const bool ok = ref.append(s, n).ok();
      REQUIRE(acct.append(s, n).ok() == ok);
      if (ok) {
        const auto made = acct.take_page_copies();
        copies += made.size();
        cache.apply(made);
        REQUIRE(write(s, live[s], n));
        live[s] += n;
      }
    } else if (op == 2) {
      const SequenceId s = pick();
      const SequenceId f = ref.fork(s).value();
      REQUIRE(acct.fork(s).value() == f);
      live[f] = live[s];
    } else if (op == 3 && live.size() > 1) {
      const SequenceId s = pick();
      const std::int64_t n = live[s] == 0 ? 0 : static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(live[s] + 1));
      REQUIRE(ref.truncate(s, n).ok());
      REQUIRE(acct.truncate(s, n).ok());
      live[s] = n;
    } else if (op == 4) {  // rewrite a few tokens: copy-on-write when shared
      const SequenceId s = pick();
      if (live[s] > 0) {
        const std::int64_t pos = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(live[s]));
        (void)write(s, pos, std::min<std::int64_t>(3, live[s] - pos));
      }
    }
  }
  CHECK(copies > 0);
  // Every written row, bit for bit (values, and scales for INT8 / INT4).
  constexpr bool kQuantized = std::is_same_v<T, std::int8_t> || std::is_same_v<T, int4>;
  const std::int64_t groups = dtype == DType::i4 ? own.head_dim / own.int4_group : dtype == DType::i8 ? 1 : 0;
  const std::int64_t row_bytes = dtype == DType::i4 ? own.head_dim / 2 : own.head_dim * static_cast<std::int64_t>(sizeof(T));
  auto device_pages = [&](std::int64_t l, int kv) {
    if constexpr (std::is_same_v<T, std::int8_t>) return kv == 0 ? cache.k_pages_int8(l) : cache.v_pages_int8(l);
    else if constexpr (std::is_same_v<T, int4>) return kv == 0 ? cache.k_pages_int4(l) : cache.v_pages_int4(l);
    else return kv == 0 ? CudaPages<T>{cache.k_pages<T>(l)} : CudaPages<T>{cache.v_pages<T>(l)};
  };
  auto host_pages = [&](std::int64_t l, int kv) {
    if constexpr (std::is_same_v<T, std::int8_t>) return kv == 0 ? ref.k_pages_int8(l) : ref.v_pages_int8(l);
    else if constexpr (std::is_same_v<T, int4>) return kv == 0 ? ref.k_pages_int4(l) : ref.v_pages_int4(l);
    else return kv == 0 ? ref.k_pages<T>(l) : ref.v_pages<T>(l);
  };
  for (std::int64_t l = 0; l < own.num_layers; ++l)
    for (int kv = 0; kv < 2; ++kv) {
      const auto dev = device_pages(l, kv);
      const auto host = host_pages(l, kv);
      const auto dev_values = dev.values.to_host();
      const auto* dv = reinterpret_cast<const std::uint8_t*>(dev_values.data());
      const void* host_values = nullptr;
      if constexpr (kQuantized) host_values = host.values.data();
      else host_values = host.data();
      const auto* hv = static_cast<const std::uint8_t*>(host_values);
      std::vector<float> dev_scales;
      if constexpr (kQuantized) {
        const Tensor<float> s = dev.scales.to_host();
        dev_scales.assign(s.data(), s.data() + s.numel());
      }
      for (const auto& [s, len] : live) {
        REQUIRE(std::ranges::equal(ref.pages(s), acct.pages(s)));
        for (std::int64_t t = 0; t < len; ++t) {
          const std::int64_t page = acct.pages(s)[static_cast<std::size_t>(t / own.page_size)];
          for (std::int64_t h = 0; h < own.n_kv_heads; ++h) {
            const std::int64_t r = (page * own.n_kv_heads + h) * own.page_size + t % own.page_size;
            REQUIRE(std::memcmp(dv + r * row_bytes, hv + r * row_bytes, static_cast<std::size_t>(row_bytes)) == 0);
            if constexpr (kQuantized)
              REQUIRE(std::memcmp(dev_scales.data() + r * groups, host.scales.data() + r * groups, static_cast<std::size_t>(groups) * sizeof(float)) == 0);
          }
        }
      }
    }
  // Decode attention over the device pages: for f32 / f16 / bf16 as the CPU's over the host pool;
  // for INT8 / INT4 (whose device kernel keeps the weights of V in f32, where the CPU rounds them
  // to 8 bits) exactly as the device's over the host pool's pages uploaded.
  std::vector<SequenceId> batch;
  for (const auto& [s, len] : live)
    if (len > 0) batch.push_back(s);
  REQUIRE(!batch.empty());
  const auto table = acct.page_table(batch).value();
  const CudaPageTable dt = CudaPageTable::upload(table.csr(), own.num_pages, own.page_size).value();
  const std::int64_t n_heads = 4 * own.n_kv_heads;
  Tensor<float> q({static_cast<std::int64_t>(batch.size()), n_heads, own.head_dim}), want(q.shape());
  for (float& x : q.span()) x = normal(rng);
  const Tensor<float, cuda> qd = to_device(q);
  for (std::int64_t l = 0; l < own.num_layers; ++l) {
    Tensor<float, cuda> out(q.shape()), uploaded(q.shape());
    if constexpr (kQuantized) {
      const auto hk = host_pages(l, 0), hv2 = host_pages(l, 1);
      const auto kvals = to_device(hk.values), vvals = to_device(hv2.values);
      const auto kscl = to_device(hk.scales), vscl = to_device(hv2.scales);
      using Pages = std::conditional_t<std::is_same_v<T, int4>, CudaInt4KvPages, CudaInt8KvPages>;
      paged_decode_attention(qd, Pages{kvals, kscl}, Pages{vvals, vscl}, dt, uploaded);
      paged_decode_attention(qd, device_pages(l, 0), device_pages(l, 1), dt, out);
      const Tensor<float> got = out.to_host(), exp = uploaded.to_host();
      REQUIRE(std::memcmp(got.data(), exp.data(), static_cast<std::size_t>(got.numel()) * sizeof(float)) == 0);
    } else {
      REQUIRE(paged_decode_attention(q.view(), ref.k_pages<T>(l), ref.v_pages<T>(l), table.csr(), want.view()).ok());
      paged_decode_attention(qd, cache.k_pages<T>(l), cache.v_pages<T>(l), dt, out);
      const Tensor<float> got = out.to_host();
      for (std::int64_t i = 0; i < q.numel(); ++i) REQUIRE(std::fabs(got.data()[i] - want.data()[i]) <= 2e-5f);
    }
  }
}

}  // namespace

TEST_CASE("CudaKvCache driven by an accounts-only BlockPool holds a host pool's pages, f32 / f16 / bf16 / INT8 / INT4") {
  check_cache<float>(DType::f32);
  check_cache<f16>(DType::f16);
  check_cache<bf16>(DType::bf16);
  check_cache<std::int8_t>(DType::i8);
  check_cache<int4>(DType::i4);
}

TEST_CASE("CudaKvCache: errors") {
  BlockPoolOptions o = options_of(DType::i4);
  o.int4_group = 24;
  CHECK(contains(CudaKvCache::create(o).status().message(), "int4_group (24) dividing it"));
  o = options_of(DType::f16);
  o.num_pages = 0;
  CHECK(contains(CudaKvCache::create(o).status().message(), "num_pages 0"));
  CudaKvCache cache = CudaKvCache::create(options_of(DType::f16)).value();
  const std::vector<BlockPool::PageCopy> bad = {{0, 48}};
  CHECK(contains(thrown([&] { cache.apply(bad); }), "the pages are 0..47"));
  const Tensor<float, cuda> k({2, 2, 64}), small({2, 2, 32});
  const std::vector<std::int64_t> slots = {0, 1};
  CHECK(contains(thrown([&] { cache.write(2, slots, k, k); }), "layer 2 of 2"));
  CHECK(contains(thrown([&] { cache.write(0, slots, small, small); }), "[tokens, n_kv_heads, head_dim]"));
  const std::vector<std::int64_t> far = {0, 48 * 16};
  CHECK(contains(thrown([&] { cache.write(0, far, k, k); }), "slot 768"));
  CHECK(contains(thrown([&] { (void)cache.k_pages<float>(0); }), "holds f16 pages"));
  CHECK(contains(thrown([&] { (void)cache.v_pages<f16>(-1); }), "layer -1"));
}
