// quarry/core/cuda_convert.hpp: the f32 <-> f16 / bf16 kernels agree bit for bit with the
// scalar reference (quarry/core/float16.hpp): all 65536 inputs of f16 and bf16, and rounding
// edges, specials and random bits of f32 (tests/cuda/f32_test_values.hpp).
#include <doctest/doctest.h>

#include <bit>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include <fmt/format.h>

#include <quarry/cuda.hpp>

#include "cuda/f32_test_values.hpp"

using namespace quarry;

namespace {

// Index of the first element whose bits differ, or -1.
template <class A, class B>
std::int64_t first_difference(const Tensor<A>& got, const std::vector<B>& want) {
  static_assert(sizeof(A) == sizeof(B));
  for (std::size_t i = 0; i < want.size(); ++i)
    if (std::memcmp(got.data() + i, &want[i], sizeof(B)) != 0) return static_cast<std::int64_t>(i);
  return -1;
}

// A host tensor holding these bits as elements of T.
template <class T, class Bits>
Tensor<T> from_bits(const std::vector<Bits>& bits) {
  static_assert(sizeof(T) == sizeof(Bits));
  Tensor<T> t = Tensor<T>::uninitialized({static_cast<std::int64_t>(bits.size())});
  if (!bits.empty()) std::memcpy(static_cast<void*>(t.data()), bits.data(), bits.size() * sizeof(Bits));
  return t;
}

std::vector<std::uint16_t> all_16_bit_patterns() {
  std::vector<std::uint16_t> v(0x10000);
  for (std::uint32_t i = 0; i < 0x10000u; ++i) v[i] = static_cast<std::uint16_t>(i);
  return v;
}

}  // namespace

TEST_CASE("convert f16 -> f32 on cuda: all 65536 inputs, bit-exact") {
  const auto patterns = all_16_bit_patterns();
  std::vector<std::uint32_t> want(patterns.size());
  for (std::size_t i = 0; i < patterns.size(); ++i) want[i] = detail::f16_bits_to_f32_bits(patterns[i]);

  const auto src = to_device(from_bits<f16>(patterns));
  Tensor<float, cuda> dst({static_cast<std::int64_t>(patterns.size())});
  convert(src, dst);
  const std::int64_t bad = first_difference(dst.to_host(), want);
  CHECK_MESSAGE(bad == -1, fmt::format("first difference at f16 bits {:#06x}", bad < 0 ? 0 : patterns[static_cast<std::size_t>(bad)]));
  CHECK(first_difference(cast<float>(src).to_host(), want) == -1);
}

TEST_CASE("convert bf16 -> f32 on cuda: all 65536 inputs, bit-exact") {
  const auto patterns = all_16_bit_patterns();
  std::vector<std::uint32_t> want(patterns.size());
  for (std::size_t i = 0; i < patterns.size(); ++i) want[i] = std::bit_cast<std::uint32_t>(float(bf16::from_bits(patterns[i])));

  const auto src = to_device(from_bits<bf16>(patterns));
  Tensor<float, cuda> dst({static_cast<std::int64_t>(patterns.size())});
  convert(src, dst);
  const std::int64_t bad = first_difference(dst.to_host(), want);
  CHECK_MESSAGE(bad == -1, fmt::format("first difference at bf16 bits {:#06x}", bad < 0 ? 0 : patterns[static_cast<std::size_t>(bad)]));
}

TEST_CASE("convert f32 -> f16 and f32 -> bf16 on cuda: rounding edges, specials, random; bit-exact") {
  const auto inputs = test::f32_conversion_test_bits();
  std::vector<std::uint16_t> want_f16(inputs.size()), want_bf16(inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    want_f16[i] = detail::f32_bits_to_f16_bits(inputs[i]);
    want_bf16[i] = detail::f32_bits_to_bf16_bits(inputs[i]);
  }
  const auto src = to_device(from_bits<float>(inputs));

  Tensor<f16, cuda> halves = Tensor<f16, cuda>::uninitialized(src.shape());
  convert(src, halves);
  std::int64_t bad = first_difference(halves.to_host(), want_f16);
  CHECK_MESSAGE(bad == -1, fmt::format("f32 -> f16: first difference at f32 bits {:#010x}", bad < 0 ? 0u : inputs[static_cast<std::size_t>(bad)]));

  const Tensor<bf16, cuda> brains = cast<bf16>(src);
  bad = first_difference(brains.to_host(), want_bf16);
  CHECK_MESSAGE(bad == -1, fmt::format("f32 -> bf16: first difference at f32 bits {:#010x}", bad < 0 ? 0u : inputs[static_cast<std::size_t>(bad)]));
}

TEST_CASE("convert on cuda: odd lengths, empty tensors, the same type, agreement with the CPU cast") {
  for (std::int64_t n : {0, 1, 3, 255, 256, 257, 100003}) {
    CAPTURE(n);
    Tensor<float> host = Tensor<float>::uninitialized({n});
    for (std::int64_t i = 0; i < n; ++i) host(i) = static_cast<float>(i) * 0.37f - 1000.0f;
    const auto dev = to_device(host);
    const Tensor<f16> halves = cast<f16>(dev).to_host();
    const Tensor<float> back = cast<float>(cast<f16>(dev)).to_host();
    for (std::int64_t i = 0; i < n; ++i) {
      CHECK(halves(i).bits == f16(host(i)).bits);
      CHECK(std::bit_cast<std::uint32_t>(back(i)) == std::bit_cast<std::uint32_t>(float(f16(host(i)))));
    }
    CHECK(cast<float>(dev).to_host().nbytes() == host.nbytes());
  }
}

TEST_CASE("convert on cuda: a shape mismatch names both shapes") {
  const Tensor<float, cuda> src({4, 5});
  Tensor<f16, cuda> dst({5, 4});
  std::string message;
  try {
    convert(src, dst);
  } catch (const error& e) {
    CHECK(e.code() == errc::shape_mismatch);
    message = e.what();
  }
  CHECK(message.find("f32 -> f16") != std::string::npos);
  CHECK(message.find("[4, 5]") != std::string::npos);
  CHECK(message.find("[5, 4]") != std::string::npos);
}
