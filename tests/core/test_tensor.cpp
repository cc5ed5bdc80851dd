#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include <quarry/core/aligned_buffer.hpp>
#include <quarry/core/convert.hpp>
#include <quarry/core/tensor.hpp>

#include "test_util.hpp"

using namespace quarry;
using namespace quarry::testing;


TEST_CASE("Tensor: zero-filled, aligned, row-major") {
  Tensor<float> t({2, 3, 4});
  CHECK(t.rank() == 3);
  CHECK(t.numel() == 24);
  CHECK(t.nbytes() == 96);
  CHECK(t.shape() == Shape{2, 3, 4});
  CHECK(t.strides() == Strides{12, 4, 1});
  CHECK(reinterpret_cast<std::uintptr_t>(t.data()) % 64 == 0);
  for (float v : t.span()) CHECK(v == 0.f);
  t(1, 2, 3) = 5.f;
  CHECK(t.data()[23] == 5.f);
  CHECK(t.at(1, 2, 3) == 5.f);

  Tensor<std::int32_t> m({2, 2}, {1, 2, 3, 4});
  CHECK(m(1, 0) == 3);
  Tensor<std::int32_t> c = m.clone();
  c(0, 0) = 9;
  CHECK(m(0, 0) == 1);

  Tensor<double> scalar(Shape{});
  CHECK(scalar.numel() == 1);
  Tensor<float> empty;
  CHECK(empty.numel() == 0);
  CHECK(empty.empty());
}

TEST_CASE("AlignedBuffer: 64-byte aligned; from 2 MiB up aligned to 2 MiB (huge pages); moves keep the block") {
  for (const std::size_t bytes : {std::size_t{1}, std::size_t{4096}, kHugePageBytes - 1, kHugePageBytes, kHugePageBytes * 3 + 17}) {
    CAPTURE(bytes);
    AlignedBuffer b(bytes);
    REQUIRE(b.data() != nullptr);
    CHECK(b.size() == bytes);
    const auto at = reinterpret_cast<std::uintptr_t>(b.data());
    CHECK(at % kHostAlignment == 0);
    if (bytes >= kHugePageBytes) CHECK(at % kHugePageBytes == 0);
    b.zero();
    b.data()[bytes - 1] = std::byte{7};
    AlignedBuffer moved(std::move(b));
    CHECK(b.data() == nullptr);
    CHECK(reinterpret_cast<std::uintptr_t>(moved.data()) == at);
    CHECK(moved.data()[bytes - 1] == std::byte{7});
    CHECK(moved.data()[0] == static_cast<std::byte>(bytes == 1 ? 7 : 0));
  }  // each block is freed with the alignment it was allocated with (ASan checks new / delete pairs)
  CHECK(AlignedBuffer(0).data() == nullptr);
}

TEST_CASE("Tensor: errors name the shapes and indices involved") {
  Tensor<float> t({2, 3});
  CHECK(contains(thrown([&] { (void)t.at(2, 0); }), "index [2, 0] is out of range for shape [2, 3]"));
  CHECK(contains(thrown([&] { (void)t.at(0); }), "1 indices on a tensor of shape [2, 3]"));
  CHECK(contains(thrown([&] { (void)t.reshape({4, 2}); }), "reshape of [2, 3] (6 elements) to [4, 2] (8 elements)"));
  CHECK(contains(thrown([&] { (void)t.t().reshape({6}); }), "non-contiguous view (shape [3, 2], strides [1, 3])"));
  CHECK(contains(thrown([&] { (void)t.select(2, 0); }), "dimension 2 does not exist in shape [2, 3]"));
  CHECK(contains(thrown([&] { (void)t.permute({0, 0}); }), "not a permutation"));
  CHECK(contains(thrown([&] { Tensor<float> u({2, 3}, {1.f, 2.f}); }), "2 values given for shape [2, 3]"));
  CHECK(contains(thrown([&] { Tensor<float> u({-1, 3}); }), "shape [-1, 3] has a negative extent"));
  CHECK(contains(thrown([&] { Tensor<float> u({1 << 20, 1 << 20, 1 << 21}); }), "more than quarry allocates"));
  CHECK(contains(thrown([&] { (void)Shape{1, 2, 3, 4, 5, 6, 7, 8, 9}; }), "9 dimensions given"));
  Tensor<float> u({3, 2});
  CHECK(contains(thrown([&] { t.view().copy_from(u.view()); }), "source shape [3, 2] differs from destination shape [2, 3]"));
}

TEST_CASE("TensorView: slice, select, transpose, permute, reshape are views") {
  Tensor<int> t({3, 4});
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 4; ++j) t(i, j) = 10 * i + j;

  auto cols = t.slice(1, 1, 4, 2);  // columns 1 and 3
  CHECK(cols.shape() == Shape{3, 2});
  CHECK(cols(2, 1) == 23);
  CHECK_FALSE(cols.is_contiguous());
  cols(0, 0) = -1;
  CHECK(t(0, 1) == -1);  // same memory

  CHECK(t.slice(0, -5, 100).shape() == Shape{3, 4});  // clamped like Python
  CHECK(t.slice(0, 2, 1).numel() == 0);

  auto row = t[2];
  CHECK(row.shape() == Shape{4});
  CHECK(row(3) == 23);

  auto tt = t.t();
  CHECK(tt.shape() == Shape{4, 3});
  CHECK(tt(3, 2) == 23);
  auto tc = tt.contiguous();
  CHECK(tc.strides() == Strides{3, 1});
  CHECK(tc(3, 2) == 23);
  CHECK(tc(1, 0) == -1);

  auto flat = t.reshape({-1});
  CHECK(flat.shape() == Shape{12});
  CHECK(flat(11) == 23);
  auto r = t.reshape({2, -1, 3});
  CHECK(r.shape() == Shape{2, 2, 3});

  Tensor<float> b({2, 3, 4});
  b(1, 2, 3) = 7.f;
  auto p = b.permute({2, 0, 1});
  CHECK(p.shape() == Shape{4, 2, 3});
  CHECK(p(3, 1, 2) == 7.f);

  TensorView<const int> ro = t.view();  // mutable -> read-only
  CHECK(ro(1, 1) == 11);
}

TEST_CASE("TensorView: copy_from and fill through strided views") {
  Tensor<float> a({4, 4});
  a.slice(0, 1, 3).slice(1, 1, 3).fill(1.f);  // the 2x2 centre
  float sum = 0;
  for (float v : a.span()) sum += v;
  CHECK(sum == 4.f);

  Tensor<float> src({2, 2}, {1.f, 2.f, 3.f, 4.f});
  a.slice(0, 0, 4, 2).slice(1, 0, 4, 2).copy_from(src.t());
  CHECK(a(0, 0) == 1.f);
  CHECK(a(0, 2) == 3.f);
  CHECK(a(2, 0) == 2.f);
  CHECK(a(2, 2) == 4.f);
}

TEST_CASE("packed int4: two per byte, low nibble first, addressable like any tensor") {
  Tensor<int4> q({2, 3});
  CHECK(q.nbytes() == 3);
  q(0, 0) = int4(-8);
  q(0, 1) = int4(7);
  q(0, 2) = int4(-1);
  q(1, 0) = int4(3);
  const std::uint8_t* bytes = q.storage();
  CHECK(bytes[0] == 0x78);  // element 0 (-8 = 0x8) low, element 1 (7) high
  CHECK(bytes[1] == 0x3f);  // element 2 (-1 = 0xf) low, element 3 (3) high
  CHECK(int(q(0, 0)) == -8);
  CHECK(int(q(0, 2)) == -1);
  CHECK(int(q.at(1, 0)) == 3);

  // A view starting mid-byte, and a transpose.
  auto tail = q.view().reshape({6}).slice(0, 1, 6);
  CHECK(int(tail(0)) == 7);
  CHECK(int(tail(2)) == 3);
  CHECK_THROWS_AS((void)tail.data(), error);
  auto qt = q.t().contiguous();
  CHECK(qt.shape() == Shape{3, 2});
  CHECK(int(qt(0, 1)) == 3);
  CHECK(int(qt(2, 0)) == -1);

  Tensor<uint4> u({5}, {uint4(1), uint4(15), uint4(0), uint4(9), uint4(4)});
  CHECK(u.nbytes() == 3);
  CHECK(u.storage()[1] == 0x90);
  CHECK(u.storage()[2] == 0x04);  // the pad nibble is zero
  CHECK(int(u(1)) == 15);
  CHECK(int(int4(8)) == -8);  // wraps to 4 bits
}

TEST_CASE("contiguous() of a packed view with an odd count zeroes the pad nibble; empty views are contiguous") {
  // Found on a GPU (test_cuda_tensor): contiguous() filled only the viewed elements, so the pad
  // nibble kept whatever the allocator's memory held. Dirty the heap with 0xff bytes of the same
  // size first, so a stale pad nibble would show.
  const Tensor<int4> src({9}, {int4(1), int4(2), int4(3), int4(4), int4(5), int4(6), int4(7), int4(-1), int4(-1)});
  for (int round = 0; round < 8; ++round) {
    {
      Tensor<std::uint8_t> dirty({4});
      dirty.view().fill(0xff);
    }
    const Tensor<int4> head = src.view().slice(0, 0, 7).contiguous();  // shares byte 3 with element 7 in src
    CHECK(head.nbytes() == 4);
    CHECK((head.storage()[3] >> 4) == 0);
    CHECK((head.storage()[3] & 0xf) == 7);
  }
  // contiguous_strides([3, 0]) is [1, 1]; a view with no elements is contiguous all the same.
  Tensor<float> none({3, 0});
  CHECK(none.view().is_contiguous());
  CHECK(none.view().reshape({-1}).shape() == Shape{0});
  CHECK(none.view().span().empty());
}

TEST_CASE("cast between dtypes") {
  Tensor<float> f({2, 2}, {1.5f, -2.25f, 65504.f, 1e-8f});
  auto h = cast<f16>(f.view());
  CHECK(static_cast<float>(h(0, 0)) == 1.5f);
  CHECK(static_cast<float>(h(1, 0)) == 65504.f);
  auto back = cast<float>(TensorView<const f16>(h.view()));
  CHECK(back(0, 1) == -2.25f);
  auto b = cast<bf16>(f.t());
  CHECK(static_cast<float>(b(0, 1)) == 65536.f);  // 65504 in bf16 rounds to 65536
  auto i = cast<std::int8_t>(f.view());
  CHECK(i(0, 0) == 1);
  CHECK(i(0, 1) == -2);
  Tensor<std::int8_t> s({3}, {-8, 7, 3});
  auto q = cast<int4>(s.view());
  CHECK(int(q(0)) == -8);
  CHECK(int(q(1)) == 7);
  auto w = cast<float>(TensorView<const int4>(q.view()));
  CHECK(w(2) == 3.f);
}
