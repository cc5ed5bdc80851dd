// GGUF Q8_0 / Q4_0 blocks: layout, import and export (lossless both ways), ggml's reference
// quantizers (hand-worked blocks and an independent transcription), and bad input.
//
// The dequantizers and the f16 decoder below are written from the format's formula, not from
// quarry's code, so an import that mixed up nibbles or scales would disagree with them.
#include <doctest/doctest.h>

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <quarry/quant/gguf_blocks.hpp>
#include <quarry/quant/quantize.hpp>

#include "test_util.hpp"

using namespace quarry;
using namespace quarry::testing;

namespace {

std::string error_of(const status& s) { return s.ok() ? "" : s.to_string(); }

// binary16 bits -> value, from the IEEE 754 definition (finite values only).
float half_value(std::uint16_t h) {
  const int e = (h >> 10) & 31, m = h & 1023;
  const double mag = e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
  return static_cast<float>((h & 0x8000) ? -mag : mag);
}

// Q8_0: element j of a block is d * qs[j].
std::vector<float> reference_dequantize(const std::vector<BlockQ8_0>& blocks) {
  std::vector<float> out;
  for (const BlockQ8_0& b : blocks)
    for (int j = 0; j < 32; ++j) out.push_back(half_value(b.d) * static_cast<float>(b.qs[j]));
  return out;
}
// Q4_0: element j < 16 is the low nibble of qs[j], element j >= 16 the high nibble of qs[j - 16].
std::vector<float> reference_dequantize(const std::vector<BlockQ4_0>& blocks) {
  std::vector<float> out;
  for (const BlockQ4_0& b : blocks)
    for (int j = 0; j < 32; ++j) {
      const int nib = j < 16 ? (b.qs[j] & 0x0f) : (b.qs[j - 16] >> 4);
      out.push_back(half_value(b.d) * static_cast<float>(nib - 8));
    }
  return out;
}

// ggml's quantize_row_q8_0_ref and quantize_row_q4_0_ref, transcribed from their definition
// (one row, a block at a time) to check quantize_gguf_* against.
std::vector<BlockQ8_0> reference_q8_0(const std::vector<float>& x) {
  std::vector<BlockQ8_0> y(x.size() / 32);
  for (std::size_t i = 0; i < y.size(); ++i) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::fabs(x[i * 32 + j]) > amax ? std::fabs(x[i * 32 + j]) : amax;
    const float d = amax / 127;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = f16(d).bits;
    for (int j = 0; j < 32; ++j) y[i].qs[j] = static_cast<std::int8_t>(roundf(x[i * 32 + j] * id));
  }
  return y;
}
std::vector<BlockQ4_0> reference_q4_0(const std::vector<float>& x) {
  std::vector<BlockQ4_0> y(x.size() / 32);
  for (std::size_t i = 0; i < y.size(); ++i) {
    float amax = 0, max = 0;
    for (int j = 0; j < 32; ++j)
      if (amax < std::fabs(x[i * 32 + j])) {
        amax = std::fabs(x[i * 32 + j]);
        max = x[i * 32 + j];
      }
    const float d = max / -8;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = f16(d).bits;
    for (int j = 0; j < 16; ++j) {
      volatile float x0 = x[i * 32 + j] * id, x1 = x[i * 32 + 16 + j] * id;
      const int xi0 = std::min(15, static_cast<int>(static_cast<std::int8_t>(x0 + 8.5f)));
      const int xi1 = std::min(15, static_cast<int>(static_cast<std::int8_t>(x1 + 8.5f)));
      y[i].qs[j] = static_cast<std::uint8_t>(xi0 | (xi1 << 4));
    }
  }
  return y;
}

template <class Block>
bool same_bytes(const std::vector<Block>& a, const std::vector<Block>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(Block)) == 0);
}

// Every value, scale and zero point of two QuantizedTensors, bit for bit.
bool same_tensor(const QuantizedTensor<cpu>& a, const QuantizedTensor<cpu>& b) {
  if (a.scheme() != b.scheme() || a.shape() != b.shape()) return false;
  for (std::int64_t r = 0; r < a.rows(); ++r)
    for (std::int64_t c = 0; c < a.row_bytes(); ++c)
      if (a.value_bytes()(r, c) != b.value_bytes()(r, c)) return false;
  const Shape s = a.scales_shape();
  for (std::int64_t i = 0; i < s[0]; ++i)
    for (std::int64_t j = 0; j < s[1]; ++j)
      if (a.scales_f16()(i, j).bits != b.scales_f16()(i, j).bits) return false;
  return true;
}

// Compares dequantize(q) with a reference, bit for bit.
void check_dequantized(const QuantizedTensor<cpu>& q, const std::vector<float>& reference) {
  const Tensor<float> back = dequantize(q);
  REQUIRE(static_cast<std::size_t>(back.numel()) == reference.size());
  std::int64_t mismatches = 0;
  for (std::size_t i = 0; i < reference.size(); ++i)
    if (std::bit_cast<std::uint32_t>(back.data()[i]) != std::bit_cast<std::uint32_t>(reference[i])) {
      if (mismatches++ < 5) CHECK_MESSAGE(false, "element ", i, ": quarry ", back.data()[i], " vs formula ", reference[i]);
    }
  CHECK(mismatches == 0);
}

// Random blocks over the full range: any finite f16 scale (negative and subnormal included),
// every int8 (-128 included) or every nibble.
template <class Block>
std::vector<Block> random_blocks(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<Block> blocks(n);
  for (Block& b : blocks) {
    do b.d = static_cast<std::uint16_t>(rng()); while ((b.d & 0x7c00) == 0x7c00);
    for (auto& q : b.qs) q = static_cast<std::remove_reference_t<decltype(q)>>(rng());
  }
  return blocks;
}


}  // namespace

TEST_CASE("block layout is ggml's") {
  CHECK(sizeof(BlockQ8_0) == 34);
  CHECK(sizeof(BlockQ4_0) == 18);
  CHECK(offsetof(BlockQ8_0, qs) == 2);
  CHECK(offsetof(BlockQ4_0, qs) == 2);
  CHECK(kGgufQ8_0Scheme == QuantScheme::int8_grouped(32, true, DType::f16));
  CHECK(kGgufQ4_0Scheme == QuantScheme::int4_grouped(32, true, DType::f16));
}

TEST_CASE("Q8_0 import keeps every int8 and scale; dequantized values are d * q exactly") {
  const std::int64_t rows = 5, cols = 96;
  const auto blocks = random_blocks<BlockQ8_0>(rows * cols / 32, 1);
  auto q = import_gguf_q8_0(std::span<const BlockQ8_0>(blocks), rows, cols);
  REQUIRE(q.ok());
  CHECK(q->scheme() == kGgufQ8_0Scheme);
  CHECK(q->shape() == Shape{rows, cols});
  CHECK(q->scales_shape() == Shape{rows, cols / 32});
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) {
      const BlockQ8_0& b = blocks[static_cast<std::size_t>(r * 3 + c / 32)];
      REQUIRE(q->value(r, c) == b.qs[c % 32]);
      REQUIRE(q->scales_f16()(r, c / 32).bits == b.d);
    }
  check_dequantized(*q, reference_dequantize(blocks));

  // The raw-byte overload gives the same tensor, from any alignment.
  for (std::size_t offset : {0u, 1u, 3u}) {
    std::vector<std::byte> storage(offset + blocks.size() * sizeof(BlockQ8_0));
    std::memcpy(storage.data() + offset, blocks.data(), blocks.size() * sizeof(BlockQ8_0));
    auto from_bytes = import_gguf_q8_0(std::span<const std::byte>(storage).subspan(offset), rows, cols);
    REQUIRE(from_bytes.ok());
    CHECK(same_tensor(*from_bytes, *q));
  }
}

TEST_CASE("Q4_0 import re-orders nibbles: stored int4 = nibble - 8; dequantized values are d * (nibble - 8) exactly") {
  const std::int64_t rows = 4, cols = 128;
  const auto blocks = random_blocks<BlockQ4_0>(rows * cols / 32, 2);
  auto q = import_gguf_q4_0(std::span<const BlockQ4_0>(blocks), rows, cols);
  REQUIRE(q.ok());
  CHECK(q->scheme() == kGgufQ4_0Scheme);
  CHECK(q->row_bytes() == cols / 2);
  bool saw_minus_8 = false;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t c = 0; c < cols; ++c) {
      const BlockQ4_0& b = blocks[static_cast<std::size_t>(r * 4 + c / 32)];
      const int j = static_cast<int>(c % 32);
      const int nib = j < 16 ? b.qs[j] & 0xf : b.qs[j - 16] >> 4;
      REQUIRE(q->value(r, c) == nib - 8);
      saw_minus_8 |= nib == 0;
    }
  CHECK(saw_minus_8);
  check_dequantized(*q, reference_dequantize(blocks));

  // One block spelled out: qs[j] = j | (15 - j) << 4, so elements 0..15 are 0..15 and
  // elements 16..31 are 15..0; quarry's byte m holds columns 2m (low) and 2m + 1 (high).
  BlockQ4_0 one{};
  one.d = 0x3c00;  // 1.0
  for (int j = 0; j < 16; ++j) one.qs[j] = static_cast<std::uint8_t>(j | ((15 - j) << 4));
  auto q1 = import_gguf_q4_0(std::span<const BlockQ4_0>(&one, 1), 1, 32);
  REQUIRE(q1.ok());
  for (int c = 0; c < 32; ++c) CHECK(q1->dequantized(0, c) == static_cast<float>((c < 16 ? c : 31 - c) - 8));
  CHECK(q1->value_bytes()(0, 0) == ((0 ^ 8) | ((1 ^ 8) << 4)));
}

TEST_CASE("export is the inverse of import, byte for byte, over the full range") {
  const auto q8 = random_blocks<BlockQ8_0>(6 * 2, 3);
  auto t8 = import_gguf_q8_0(std::span<const BlockQ8_0>(q8), 6, 64);
  REQUIRE(t8.ok());
  auto back8 = export_gguf_q8_0(*t8);
  REQUIRE(back8.ok());
  CHECK(same_bytes(*back8, q8));

  const auto q4 = random_blocks<BlockQ4_0>(3 * 5, 4);
  auto t4 = import_gguf_q4_0(std::span<const BlockQ4_0>(q4), 3, 160);
  REQUIRE(t4.ok());
  auto back4 = export_gguf_q4_0(*t4);
  REQUIRE(back4.ok());
  CHECK(same_bytes(*back4, q4));
}

TEST_CASE("a quarry-quantized tensor survives export and import unchanged") {
  const Tensor<float> w = gaussian(9, 256, 5);
  for (const QuantScheme& s : {kGgufQ8_0Scheme, kGgufQ4_0Scheme}) {
    INFO(s.to_string());
    auto q = quantize(w.view(), s);
    REQUIRE(q.ok());
    if (s.bits == 8) {
      auto blocks = export_gguf_q8_0(*q);
      REQUIRE(blocks.ok());
      auto back = import_gguf_q8_0(std::span<const BlockQ8_0>(*blocks), 9, 256);
      REQUIRE(back.ok());
      CHECK(same_tensor(*back, *q));
      check_dequantized(*q, reference_dequantize(*blocks));
    } else {
      auto blocks = export_gguf_q4_0(*q);
      REQUIRE(blocks.ok());
      auto back = import_gguf_q4_0(std::span<const BlockQ4_0>(*blocks), 9, 256);
      REQUIRE(back.ok());
      CHECK(same_tensor(*back, *q));
      check_dequantized(*q, reference_dequantize(*blocks));
    }
  }
  // Q4_0 keeps the int4 value -8, which quarry's own quantizer never makes.
  auto q = QuantizedTensor<cpu>::create(kGgufQ4_0Scheme, 1, 32);
  REQUIRE(q.ok());
  q->values<int4>()(0, 5) = int4(-8);
  q->scales_f16()(0, 0) = f16(0.25f);
  auto blocks = export_gguf_q4_0(*q);
  REQUIRE(blocks.ok());
  CHECK(((*blocks)[0].qs[5] & 0xf) == 0);
  CHECK(((*blocks)[0].qs[0] & 0xf) == 8);
  CHECK((*blocks)[0].d == f16(0.25f).bits);
}

TEST_CASE("Q8_0 quantizer: hand-worked block; rounds halves away from zero as roundf") {
  // max |x| = 127, so d = 1 and x * id = x: the rounding is visible.
  std::vector<float> x(32, 0.f);
  x[0] = 127.f, x[1] = 2.5f, x[2] = -2.5f, x[3] = 0.5f, x[4] = -0.5f, x[5] = 1.5f, x[6] = -126.4f, x[7] = 3.49f;
  Tensor<float> w({1, 32});
  for (int j = 0; j < 32; ++j) w(0, j) = x[static_cast<std::size_t>(j)];
  auto blocks = quantize_gguf_q8_0(w.view());
  REQUIRE(blocks.ok());
  REQUIRE(blocks->size() == 1);
  const BlockQ8_0& b = (*blocks)[0];
  CHECK(b.d == 0x3c00);  // 1.0
  const int expected[8] = {127, 3, -3, 1, -1, 2, -126, 3};
  for (int j = 0; j < 8; ++j) CHECK(b.qs[j] == expected[j]);
  for (int j = 8; j < 32; ++j) CHECK(b.qs[j] == 0);

  // All zeros: d = 0 and q = 0 (id = 0, never a division by zero).
  Tensor<float> zeros({2, 64});
  auto zb = quantize_gguf_q8_0(zeros.view());
  REQUIRE(zb.ok());
  for (const BlockQ8_0& z : *zb) {
    CHECK(z.d == 0);
    for (auto v : z.qs) CHECK(v == 0);
  }
}

TEST_CASE("Q4_0 quantizer: hand-worked blocks; the largest |x| keeps its sign, the first one wins ties") {
  // x_j = j - 16: the largest |x| is x_0 = -16, so d = -16 / -8 = 2, id = 0.5 and
  // nibble_j = min(15, trunc((j - 16) * 0.5 + 8.5)) = min(15, trunc((j + 1) / 2)).
  Tensor<float> w({1, 32});
  for (int j = 0; j < 32; ++j) w(0, j) = static_cast<float>(j - 16);
  auto blocks = quantize_gguf_q4_0(w.view());
  REQUIRE(blocks.ok());
  const BlockQ4_0& b = (*blocks)[0];
  CHECK(b.d == 0x4000);  // +2.0
  auto expected_nibble = [](int j) { return std::min(15, (j + 1) / 2); };
  for (int j = 0; j < 16; ++j) {
    CHECK((b.qs[j] & 0xf) == expected_nibble(j));
    CHECK((b.qs[j] >> 4) == expected_nibble(j + 16));
  }

  // x_j = 16 - j: the largest is +16, so d = -2 (a negative scale, as ggml makes).
  for (int j = 0; j < 32; ++j) w(0, j) = static_cast<float>(16 - j);
  blocks = quantize_gguf_q4_0(w.view());
  REQUIRE(blocks.ok());
  CHECK((*blocks)[0].d == 0xc000);  // -2.0
  CHECK(((*blocks)[0].qs[0] & 0xf) == 0);  // x = 16: 16 * -0.5 + 8.5 = 0.5 -> 0, i.e. (0 - 8) * -2 = 16

  // Equal magnitudes of opposite sign: the first one decides the sign of d.
  Tensor<float> tie({2, 32});
  tie(0, 3) = -3.f, tie(0, 9) = 3.f;
  tie(1, 3) = 3.f, tie(1, 9) = -3.f;
  blocks = quantize_gguf_q4_0(tie.view());
  REQUIRE(blocks.ok());
  CHECK((*blocks)[0].d == f16(0.375f).bits);
  CHECK((*blocks)[1].d == f16(-0.375f).bits);
  // The weight of the opposite sign lands on 16, clamped to 15.
  CHECK(((*blocks)[0].qs[9] & 0xf) == 15);
  CHECK(((*blocks)[0].qs[3] & 0xf) == 0);
}

TEST_CASE("quantizers match the transcribed ggml reference on Gaussian and awkward data; round trip is byte-exact") {
  Tensor<float> w = gaussian(13, 320, 6, 0.02f);
  // Awkward values: exact halves of the step, a scale that underflows f16 (while 1 / d is
  // finite), large values, repeated maxima of both signs.
  w(0, 0) = 1e-30f;
  for (int j = 0; j < 32; ++j) w(1, j) = static_cast<float>(j % 7) * 0.5f - 1.5f;
  for (int j = 32; j < 64; ++j) w(1, j) = 1e-30f * static_cast<float>(j - 40);
  for (int j = 64; j < 96; ++j) w(1, j) = 1000.f * static_cast<float>((j * 37) % 11 - 5);
  for (int j = 96; j < 128; ++j) w(1, j) = (j % 2 ? 1.f : -1.f) * 0.75f;
  const std::vector<float> flat(w.span().begin(), w.span().end());
  std::vector<BlockQ8_0> ref8;
  std::vector<BlockQ4_0> ref4;
  for (std::int64_t r = 0; r < w.dim(0); ++r) {
    const std::vector<float> row(flat.begin() + r * 320, flat.begin() + (r + 1) * 320);
    for (const auto& b : reference_q8_0(row)) ref8.push_back(b);
    for (const auto& b : reference_q4_0(row)) ref4.push_back(b);
  }

  ThreadPool pool(3);
  auto b8 = quantize_gguf_q8_0(w.view());
  auto b4 = quantize_gguf_q4_0(w.view(), &pool);
  REQUIRE(b8.ok());
  REQUIRE(b4.ok());
  CHECK(same_bytes(*b8, ref8));
  CHECK(same_bytes(*b4, ref4));

  // float -> blocks -> QuantizedTensor -> blocks: the same bytes.
  auto t8 = import_gguf_q8_0(std::span<const BlockQ8_0>(*b8), 13, 320);
  auto t4 = import_gguf_q4_0(std::span<const BlockQ4_0>(*b4), 13, 320);
  REQUIRE(t8.ok());
  REQUIRE(t4.ok());
  auto e8 = export_gguf_q8_0(*t8);
  auto e4 = export_gguf_q4_0(*t4);
  REQUIRE(e8.ok());
  REQUIRE(e4.ok());
  CHECK(same_bytes(*e8, *b8));
  CHECK(same_bytes(*e4, *b4));
  check_dequantized(*t8, reference_dequantize(*b8));
  check_dequantized(*t4, reference_dequantize(*b4));

  // Quantization error is what the formats promise: half a step for Q8_0, one step for Q4_0
  // (its grid runs from -8d to 7d, so the far end of the sign opposite the maximum clips by d).
  for (std::int64_t r = 2; r < 13; ++r)
    for (std::int64_t c = 0; c < 320; ++c) {
      const float d8 = std::fabs(t8->scale(r, c / 32)), d4 = std::fabs(t4->scale(r, c / 32));
      // Half a step, plus up to 127 q times the f16 rounding of d (2^-11 relative).
      REQUIRE(std::fabs(t8->dequantized(r, c) - w(r, c)) <= 0.57f * d8 + 1e-6f);
      REQUIRE(std::fabs(t4->dequantized(r, c) - w(r, c)) <= d4 * 1.01f + 1e-6f);
    }

  // A strided (transposed) view quantizes like its contiguous copy.
  Tensor<float> wt = Tensor<float>::uninitialized({320, 13});
  wt.view().copy_from(w.view().t());
  auto strided = quantize_gguf_q8_0(wt.view().t());
  REQUIRE(strided.ok());
  CHECK(same_bytes(*strided, *b8));
}

TEST_CASE("bad input: clear errors naming the field, never a crash") {
  const auto blocks8 = random_blocks<BlockQ8_0>(4, 7);
  const auto blocks4 = random_blocks<BlockQ4_0>(4, 8);
  const std::span<const BlockQ8_0> s8(blocks8);
  const std::span<const BlockQ4_0> s4(blocks4);

  // cols not a multiple of 32.
  CHECK(contains(error_of(import_gguf_q8_0(s8, 2, 48).status()), "cols = 48 is not a multiple of the Q8_0 block size 32"));
  CHECK(contains(error_of(import_gguf_q4_0(s4, 2, 48).status()), "cols = 48 is not a multiple of the Q4_0 block size 32"));
  CHECK(contains(error_of(import_gguf_q8_0(std::as_bytes(s8), 2, 40).status()), "cols = 40"));
  CHECK(contains(error_of(import_gguf_q8_0(s8, -1, 32).status()), "negative"));
  Tensor<float> w48({2, 48});
  CHECK(contains(error_of(quantize_gguf_q8_0(w48.view()).status()), "cols = 48 is not a multiple of the Q8_0 block size 32"));
  CHECK(contains(error_of(quantize_gguf_q4_0(w48.view()).status()), "cols = 48 is not a multiple of the Q4_0 block size 32"));
  Tensor<float> w3({2, 2, 32});
  CHECK(contains(error_of(quantize_gguf_q8_0(w3.view()).status()), "w must be a [rows, cols] matrix; its shape is [2, 2, 32]"));

  // Block and byte counts.
  CHECK(contains(error_of(import_gguf_q8_0(s8, 2, 96).status()), "blocks = 4, but a [2, 96] Q8_0 tensor is 2 rows * 3 blocks = 6 blocks"));
  CHECK(contains(error_of(import_gguf_q4_0(s4, 1, 64).status()), "blocks = 4, but a [1, 64] Q4_0 tensor is 1 rows * 2 blocks = 2 blocks"));
  const auto bytes8 = std::as_bytes(s8);
  CHECK(import_gguf_q8_0(bytes8, 2, 64).ok());
  CHECK(contains(error_of(import_gguf_q8_0(bytes8.first(135), 2, 64).status()),
                 "bytes = 135, but a [2, 64] Q8_0 tensor is 4 blocks * 34 bytes = 136 bytes"));
  const auto bytes4 = std::as_bytes(s4);
  CHECK(contains(error_of(import_gguf_q4_0(bytes4, 4, 64).status()), "bytes = 72, but a [4, 64] Q4_0 tensor is 8 blocks * 18 bytes = 144 bytes"));
  CHECK(contains(error_of(import_gguf_q8_0(bytes8, std::int64_t{1} << 62, 64).status()), "64 bits"));

  // A scale that is inf or NaN in the data.
  auto bad = blocks8;
  bad[3].d = 0x7c00;  // +inf
  auto imported = import_gguf_q8_0(std::span<const BlockQ8_0>(bad), 2, 64);
  CHECK(imported.status().code() == errc::corrupt_data);
  CHECK(contains(error_of(imported.status()), "the scale d of Q8_0 block 3 (row 1, columns 32..63) is inf"));
  auto bad4 = blocks4;
  bad4[0].d = 0x7e01;  // NaN
  CHECK(contains(error_of(import_gguf_q4_0(std::span<const BlockQ4_0>(bad4), 1, 128).status()), "the scale d of Q4_0 block 0 (row 0, columns 0..31) is nan"));

  // Export needs exactly the GGUF scheme.
  for (const QuantScheme& s : {QuantScheme::int8_per_channel(), QuantScheme::int8_grouped(64), QuantScheme::int8_grouped(32, false),
                               QuantScheme::int8_grouped(32, true, DType::f32), kGgufQ4_0Scheme}) {
    auto q = QuantizedTensor<cpu>::create(s, 2, 64);
    REQUIRE(q.ok());
    const std::string e = error_of(export_gguf_q8_0(*q).status());
    CHECK(contains(e, "export_gguf_q8_0: GGUF Q8_0 is int8 per_group(32) symmetric f16-scales; the tensor is " + s.to_string()));
  }
  {
    auto q = QuantizedTensor<cpu>::create(kGgufQ8_0Scheme, 2, 64);
    REQUIRE(q.ok());
    CHECK(contains(error_of(export_gguf_q4_0(*q).status()), "GGUF Q4_0 is int4 per_group(32) symmetric f16-scales; the tensor is int8"));
    q->scales_f16()(1, 1) = f16::from_bits(0x7e00);
    CHECK(contains(error_of(export_gguf_q8_0(*q).status()), "the scale of row 1, block 1 is nan"));
  }

  // Non-finite weights and f16 overflow of the scale.
  Tensor<float> w({3, 64});
  w(2, 40) = std::numeric_limits<float>::quiet_NaN();
  CHECK(contains(error_of(quantize_gguf_q8_0(w.view()).status()), "weight (2, 40) of the [3, 64] matrix is nan"));
  w(2, 40) = -std::numeric_limits<float>::infinity();
  CHECK(contains(error_of(quantize_gguf_q4_0(w.view()).status()), "weight (2, 40) of the [3, 64] matrix is -inf"));
  w(2, 40) = 1e7f;  // 1e7 / 127 > 65504: Q8_0's scale overflows f16
  auto over = quantize_gguf_q8_0(w.view());
  CHECK(over.status().code() == errc::out_of_range);
  CHECK(contains(error_of(over.status()), "the f16 scale of row 2, block 1 (columns 32..63, max |w| = "));
  CHECK(contains(error_of(over.status()), "overflows; the weights are too large for Q8_0"));
  w(2, 40) = 6e5f;  // fine for Q8_0, too large for Q4_0 (6e5 / 8 > 65504)
  CHECK(quantize_gguf_q8_0(w.view()).ok());
  CHECK(contains(error_of(quantize_gguf_q4_0(w.view()).status()), "the f16 scale of row 2, block 1"));

  // Weights so small that 1 / d overflows (all below ~2e-38 for Q4_0): ggml's conversion of the
  // infinite products is undefined behaviour (0 on x86); quarry writes nibble 0 and d = 0 rounds
  // the block to zeros anyway.
  Tensor<float> tiny({1, 32});
  for (int j = 0; j < 32; ++j) tiny(0, j) = std::numeric_limits<float>::denorm_min() * static_cast<float>(j);
  auto tb = quantize_gguf_q4_0(tiny.view());
  REQUIRE(tb.ok());
  CHECK(((*tb)[0].d & 0x7fff) == 0);  // -0: d = max / -8 with a positive max
  for (auto v : (*tb)[0].qs) CHECK(v == 0);

  // Empty tensors are fine.
  Tensor<float> empty({0, 64});
  auto eb = quantize_gguf_q4_0(empty.view());
  REQUIRE(eb.ok());
  CHECK(eb->empty());
  auto et = import_gguf_q4_0(std::span<const BlockQ4_0>(), 0, 64);
  REQUIRE(et.ok());
  CHECK(et->rows() == 0);
}
