// quarry/core/cuda_tensor.hpp: Tensor<T, cuda> allocation, host <-> device and device <-> device
// copies for every element type (packed int4/uint4 included), and its error messages.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <quarry/cuda.hpp>

#include "test_util.hpp"

using namespace quarry;
using namespace quarry::testing;

namespace {


// An element of type T made from a small random integer.
template <class T>
T element_from(int r) {
  if constexpr (std::is_same_v<T, f16> || std::is_same_v<T, bf16>) return T(static_cast<float>(r) * 0.25f);
  else if constexpr (is_packed_v<T>) return T(r);
  else if constexpr (std::is_floating_point_v<T>) return static_cast<T>(r) * T(0.5);
  else return static_cast<T>(r);
}

// A host tensor of `shape` with random elements (the pad nibble of an odd packed count is zero).
template <class T>
Tensor<T> random_host(Shape shape, std::uint32_t seed) {
  Tensor<T> t(shape);
  std::mt19937 rng(seed);
  auto flat = t.view().reshape({-1});
  for (std::int64_t i = 0; i < t.numel(); ++i) flat(i) = element_from<T>(static_cast<int>(rng() % 200) - 100);
  return t;
}

// True when two host tensors have the same shape and the same bytes.
template <class T>
bool same_bytes(const Tensor<T>& a, const Tensor<T>& b) {
  return a.shape() == b.shape() && a.nbytes() == b.nbytes() && (a.nbytes() == 0 || std::memcmp(a.data(), b.data(), a.nbytes()) == 0);
}

const Shape kShapes[] = {Shape{0}, Shape{3, 0}, Shape{}, Shape{1}, Shape{7}, Shape{5, 3}, Shape{2, 3, 4}, Shape{1000, 17}, Shape{4, 1, 33}};

}  // namespace

TEST_CASE_TEMPLATE("Tensor<T, cuda>: host -> device -> host round trips, clone, copy_to_host", T,
                   float, double, f16, bf16, std::int8_t, std::uint8_t, std::int32_t, int4, uint4) {
  std::uint32_t seed = 1;
  for (const Shape& shape : kShapes) {
    CAPTURE(shape.to_string());
    const Tensor<T> host = random_host<T>(shape, seed++);
    Tensor<T, cuda> dev = Tensor<T, cuda>::from_host(host.view());
    CHECK(dev.shape() == shape);
    CHECK(dev.numel() == host.numel());
    CHECK(dev.nbytes() == static_cast<std::size_t>(storage_bytes<T>(host.numel())));
    CHECK((dev.data() == nullptr) == (dev.nbytes() == 0));
    CHECK(same_bytes(dev.to_host(), host));

    const Tensor<T, cuda> copy = dev.clone();
    CHECK((copy.data() != dev.data() || dev.nbytes() == 0));
    CHECK(same_bytes(copy.to_host(), host));

    Tensor<T> back(shape);
    copy.copy_to_host(back.view());
    CHECK(same_bytes(back, host));

    Tensor<T, cuda> zeros(shape);
    CHECK(same_bytes(zeros.to_host(), Tensor<T>(shape)));
    zeros.copy_from_host(host.view());
    CHECK(same_bytes(zeros.to_host(), host));
    zeros.zero();
    CHECK(same_bytes(zeros.to_host(), Tensor<T>(shape)));
    zeros.copy_from(copy);
    CHECK(same_bytes(to_host(zeros), host));
  }
}

TEST_CASE_TEMPLATE("Tensor<T, cuda>: strided host views in and out", T, float, f16, std::int8_t, int4, uint4) {
  const Tensor<T> host = random_host<T>({5, 7}, 42);
  const auto transposed = host.t();  // shape [7, 5], not contiguous
  Tensor<T, cuda> dev = to_device(transposed);
  CHECK(dev.shape() == Shape{7, 5});
  CHECK(same_bytes(dev.to_host(), transposed.contiguous()));

  Tensor<T> out({5, 7});
  dev.copy_to_host(out.t());
  CHECK(same_bytes(out, host));
}

TEST_CASE_TEMPLATE("Tensor<T, cuda>: packed views that share bytes with their neighbours", T, int4, uint4) {
  const Tensor<T> host = random_host<T>({9}, 7);
  SUBCASE("odd offset") {
    const auto inner = host.slice(0, 1, 8);  // elements 1..7: starts mid-byte
    const Tensor<T, cuda> dev = Tensor<T, cuda>::from_host(inner);
    CHECK(same_bytes(dev.to_host(), inner.contiguous()));
    Tensor<T> dst = Tensor<T>::full({9}, T(5));
    dev.copy_to_host(dst.slice(0, 1, 8));
    CHECK(int(std::as_const(dst)(0)) == 5);
    CHECK(int(std::as_const(dst)(8)) == 5);
    for (int i = 1; i < 8; ++i) CHECK(int(std::as_const(dst)(i)) == int(host(i)));
  }
  SUBCASE("even offset, odd count: the last byte is shared") {
    const auto head = host.slice(0, 0, 7);
    const Tensor<T, cuda> dev = Tensor<T, cuda>::from_host(head);
    const Tensor<T> back = dev.to_host();
    CHECK(same_bytes(back, head.contiguous()));
    CHECK((back.data()[3] >> 4) == 0);  // the pad nibble is zero on the device
    Tensor<T> dst = Tensor<T>::full({9}, T(5));
    dev.copy_to_host(dst.slice(0, 0, 7));
    CHECK(int(std::as_const(dst)(7)) == 5);
    CHECK(int(std::as_const(dst)(8)) == 5);
    for (int i = 0; i < 7; ++i) CHECK(int(std::as_const(dst)(i)) == int(host(i)));
  }
}

TEST_CASE("Tensor<T, cuda>: construction, moves, full, reshape_in_place") {
  Tensor<float, cuda> empty;
  CHECK(empty.shape() == Shape{0});
  CHECK(empty.data() == nullptr);
  CHECK(empty.device() == -1);
  CHECK(empty.to_host().numel() == 0);

  Tensor<float, cuda> a = Tensor<float, cuda>::full({2, 3}, 1.5f);
  CHECK(a.device() == cuda_current_device());
  const float* where = a.data();
  Tensor<float, cuda> b = std::move(a);
  CHECK(b.data() == where);
  CHECK(a.data() == nullptr);  // NOLINT: moved-from is empty by contract
  CHECK(a.shape() == Shape{0});
  CHECK(a.numel() == 0);
  a = std::move(b);
  CHECK(a.data() == where);

  const Tensor<float> host = a.to_host();
  for (std::int64_t i = 0; i < 2; ++i)
    for (std::int64_t j = 0; j < 3; ++j) CHECK(host(i, j) == 1.5f);

  a.reshape_in_place({3, -1});
  CHECK(a.shape() == Shape{3, 2});
  CHECK(a.dim(1) == 2);
  CHECK(a.strides() == Strides{2, 1});
}

TEST_CASE("Tensor<T, cuda>: error messages name the shapes") {
  Tensor<float, cuda> dev({2, 3});
  Tensor<float> wrong({3, 2});

  status st = thrown([&] { dev.copy_to_host(wrong.view()); });
  CHECK(st.code() == errc::shape_mismatch);
  CHECK(contains(st.message(), "Tensor<f32, cuda>::copy_to_host"));
  CHECK(contains(st.message(), "[3, 2]"));
  CHECK(contains(st.message(), "[2, 3]"));

  st = thrown([&] { dev.copy_from_host(wrong.view()); });
  CHECK(st.code() == errc::shape_mismatch);
  CHECK(contains(st.message(), "[3, 2]"));
  CHECK(contains(st.message(), "[2, 3]"));

  st = thrown([&] { dev.copy_from(Tensor<float, cuda>({6})); });
  CHECK(st.code() == errc::shape_mismatch);
  CHECK(contains(st.message(), "[6]"));

  st = thrown([&] { (void)dev.dim(2); });
  CHECK(st.code() == errc::out_of_range);
  CHECK(contains(st.message(), "[2, 3]"));

  st = thrown([&] { dev.reshape_in_place({4, 2}); });
  CHECK(st.code() == errc::shape_mismatch);
  CHECK(contains(st.message(), "[4, 2]"));

  st = thrown([&] { (void)Tensor<float, cuda>({2, -3}); });
  CHECK(st.code() == errc::invalid_argument);
  CHECK(contains(st.message(), "[2, -3]"));
}

TEST_CASE("Tensor<T, cuda>: a failed device allocation names the shape and the CUDA error") {
  const Shape huge{std::int64_t{1} << 46};  // 256 TiB of floats
  const status st = thrown([&] { (void)Tensor<float, cuda>::uninitialized(huge); });
  CHECK(st.code() == errc::out_of_memory);
  CHECK(contains(st.message(), "Tensor<f32, cuda>::uninitialized of shape [70368744177664]"));
  CHECK(contains(st.message(), "cudaErrorMemoryAllocation"));
  // The error is not sticky: the device still works.
  const Tensor<int4> host = random_host<int4>({11}, 3);
  CHECK(same_bytes(to_device(host).to_host(), host));
}
