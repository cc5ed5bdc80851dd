#include "quarry/index/fastscan.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "quarry/core/detail/dispatch.hpp"
#include "quarry/index/detail/index_kernels.hpp"

namespace quarry {

FastScanCodes::FastScanCodes(std::int64_t m) : m_(m) {
  if (m < 1 || m > 256) throw_error(errc::invalid_argument, fmt::format("fast-scan: {} sub-quantizers; 1..256 are supported", m));
}

void FastScanCodes::set(std::int64_t i, std::int64_t j, std::uint8_t c) noexcept {
  std::uint8_t& b = blocks_[static_cast<std::size_t>((i / 32) * block_bytes() + j * 16 + (i % 16))];
  b = (i % 32) < 16 ? static_cast<std::uint8_t>((b & 0xf0) | c) : static_cast<std::uint8_t>((b & 0x0f) | (c << 4));
}

void FastScanCodes::own() {
  if (!view_.data()) return;
  blocks_.assign(view_.begin(), view_.end());
  view_ = {};
}

status FastScanCodes::append(std::span<const std::uint8_t> pq_codes, std::int64_t n) {
  own();
  const std::int64_t code_size = (m_ + 1) / 2;
  if (n < 0 || static_cast<std::int64_t>(pq_codes.size()) != n * code_size)
    return {errc::shape_mismatch, fmt::format("fast-scan append: {} bytes for {} codes of {} bytes ({} sub-quantizers)",
                                              pq_codes.size(), n, code_size, m_)};
  const std::int64_t total = n_ + n;
  blocks_.resize(static_cast<std::size_t>((total + 31) / 32 * block_bytes()), 0);
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint8_t* code = pq_codes.data() + i * code_size;
    for (std::int64_t j = 0; j < m_; ++j) set(n_ + i, j, static_cast<std::uint8_t>((code[j >> 1] >> ((j & 1) * 4)) & 0xf));
  }
  n_ = total;
  return {};
}

void FastScanCodes::move(std::int64_t from, std::int64_t to) {
  own();
  for (std::int64_t j = 0; j < m_; ++j) set(to, j, code(from, j));
}

void FastScanCodes::truncate(std::int64_t n) {
  own();
  for (std::int64_t i = n; i < num_blocks() * 32 && i < (n + 31) / 32 * 32; ++i)
    for (std::int64_t j = 0; j < m_pad(); ++j) set(i, j, 0);
  n_ = n;
  blocks_.resize(static_cast<std::size_t>(num_blocks() * block_bytes()));
}

status FastScanCodes::assign_blocks(std::span<const std::uint8_t> blocks, std::int64_t n) {
  if (n < 0 || static_cast<std::int64_t>(blocks.size()) != (n + 31) / 32 * block_bytes())
    return {errc::shape_mismatch, fmt::format("fast-scan: {} bytes of blocks for {} vectors; expected {}", blocks.size(), n,
                                              (std::max<std::int64_t>(n, 0) + 31) / 32 * block_bytes())};
  blocks_.assign(blocks.begin(), blocks.end());
  view_ = {};
  n_ = n;
  return {};
}

status FastScanCodes::view_blocks(std::span<const std::uint8_t> blocks, std::int64_t n) {
  if (n < 0 || static_cast<std::int64_t>(blocks.size()) != (n + 31) / 32 * block_bytes())
    return {errc::shape_mismatch, fmt::format("fast-scan: {} bytes of blocks for {} vectors; expected {}", blocks.size(), n,
                                              (std::max<std::int64_t>(n, 0) + 31) / 32 * block_bytes())};
  blocks_.clear();
  blocks_.shrink_to_fit();
  view_ = n > 0 ? blocks : std::span<const std::uint8_t>{};
  n_ = n;
  return {};
}

std::uint32_t FastScanLut::quantized_at_least(float d) const noexcept {
  const double q = std::ceil((static_cast<double>(d) - bias) * scale);
  if (!(q > 0)) return 0;
  return q >= 65535.0 ? 65535u : static_cast<std::uint32_t>(q);
}

namespace detail {
void build_fastscan_lut(const float* a, const float* b, float alpha, std::int64_t m, float* table, FastScanLut& out) noexcept {
  out.m = m;
  out.table.resize(static_cast<std::size_t>((m + 1) / 2 * 32));  // no allocation once the buffer is large enough
  float mins[256];
  FastScanLutArgs g;
  g.a = a;
  g.b = b;
  g.alpha = alpha;
  g.m = static_cast<std::size_t>(m);
  g.table = table;
  g.lut = out.table.data();
  g.row_min = mins;
  g.scale = &out.scale;
  kernels<IndexKernels>().fastscan_lut(g);
  // four interleaved sums (one chain of m dependent additions is latency-bound), in a fixed
  // order: the same on every ISA
  double bias[4] = {0, 0, 0, 0};
  std::int64_t j = 0;
  for (; j + 4 <= m; j += 4)
    for (int u = 0; u < 4; ++u) bias[u] += mins[j + u];
  for (; j < m; ++j) bias[0] += mins[j];
  out.bias = static_cast<float>((bias[0] + bias[1]) + (bias[2] + bias[3]));
}

void quantize_fastscan_lut_into(const float* lut, std::int64_t m, FastScanLut& out) noexcept {
  build_fastscan_lut(nullptr, lut, 1.f, m, nullptr, out);
}
}  // namespace detail

result<FastScanLut> quantize_fastscan_lut(std::span<const float> lut, std::int64_t m) {
  if (m < 1 || m > 256) return status(errc::invalid_argument, fmt::format("fast-scan table: {} sub-quantizers; 1..256 are supported", m));
  if (static_cast<std::int64_t>(lut.size()) != m * 16)
    return status(errc::shape_mismatch, fmt::format("fast-scan table: {} entries for {} sub-quantizers of 16", lut.size(), m));
  for (std::size_t i = 0; i < lut.size(); ++i)
    if (!std::isfinite(lut[i]))
      return status(errc::invalid_argument, fmt::format("fast-scan table: entry ({}, {}) is {}", i / 16, i % 16, lut[i]));
  FastScanLut out;
  detail::quantize_fastscan_lut_into(lut.data(), m, out);
  return out;
}

namespace detail {
void fastscan_blocks(const FastScanCodes& codes, const FastScanLut& lut, std::int64_t b0, std::int64_t nb, std::uint16_t* out,
                     std::uint32_t* mask, std::uint16_t threshold) noexcept {
  FastScanArgs g;
  g.codes = codes.data() + b0 * codes.block_bytes();
  g.nblocks = static_cast<std::size_t>(nb);
  g.m_pad = static_cast<std::size_t>(codes.m_pad());
  g.lut = lut.table.data();
  g.out = out;
  g.mask = mask;
  g.threshold = threshold;
  kernels<IndexKernels>().fastscan(g);
}
}  // namespace detail

void fastscan_distances(const FastScanCodes& codes, const FastScanLut& lut, std::span<std::uint16_t> out) {
  if (lut.m != codes.m())
    throw_error(errc::shape_mismatch, fmt::format("fast-scan: a table for {} sub-quantizers, codes of {}", lut.m, codes.m()));
  if (static_cast<std::int64_t>(out.size()) != codes.size())
    throw_error(errc::shape_mismatch, fmt::format("fast-scan: output of {} for {} codes", out.size(), codes.size()));
  const std::int64_t full = codes.size() / 32;
  if (full > 0) detail::fastscan_blocks(codes, lut, 0, full, out.data(), nullptr, 0);
  if (full < codes.num_blocks()) {
    std::uint16_t last[32];
    detail::fastscan_blocks(codes, lut, full, 1, last, nullptr, 0);
    std::copy(last, last + (codes.size() - full * 32), out.data() + full * 32);
  }
}

}  // namespace quarry
