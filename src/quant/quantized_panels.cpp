#include "quarry/quant/quantized_panels.hpp"

#include <cstring>

#include <fmt/format.h>

#include "quarry/quant/detail/quant_kernels.hpp"

namespace quarry {

namespace {

// The unsigned nibble the panels hold for weight (r, c): symmetric int4 q as q + 8 (the stored
// two's-complement nibble with its top bit flipped), asymmetric uint4 as stored.
inline unsigned panel_nibble(const std::uint8_t* row, std::int64_t c, unsigned flip) noexcept {
  return ((row[c >> 1] >> ((c & 1) * 4)) & 0xfu) ^ flip;
}

}  // namespace

result<QuantizedPanels> QuantizedPanels::pack(const QuantizedTensor<cpu>& w, ThreadPool* pool) {
  const QuantScheme& s = w.scheme();
  if (!supports(s))
    return status{errc::unsupported, fmt::format("QuantizedPanels::pack: weights quantized as {}; panels hold int4 per_group and "
                                                 "int8 weights",
                                                 s.to_string())};
  const bool int8 = s.bits == 8 && s.granularity != Granularity::per_group;
  QuantizedPanels out;
  out.scheme_ = s;
  out.rows_ = w.rows();
  out.cols_ = w.cols();
  if (int8) {
    out.pack_int8(w, pool);
    return out;
  }
  const std::int64_t panels = out.panels(), groups = out.groups(), k = out.cols_;
  const std::int64_t scale_size = s.scale_dtype == DType::f16 ? 2 : 4;
  // Panels x 16 rows hold at most 15 rows more than the tensor, whose size was checked.
  const std::int64_t value_bytes = panels * out.blocks() * 64, slots = panels * groups * kPanelRows;
  out.values_ = Tensor<std::uint8_t>(Shape{value_bytes});
  out.scales_ = Tensor<std::uint8_t>(Shape{slots * scale_size});
  if (!s.symmetric) out.zeros_ = Tensor<std::uint8_t>(Shape{slots});
  const unsigned flip = s.symmetric ? 8u : 0u;
  const auto* src_scales = static_cast<const std::uint8_t*>(w.scales_data());
  const auto np = static_cast<std::size_t>(panels), nb = static_cast<std::size_t>(out.blocks()), ng = static_cast<std::size_t>(groups);
  parallel_for(pool, 0, panels, [&](std::int64_t p0, std::int64_t p1) {
    for (std::int64_t p = p0; p < p1; ++p) {
      const auto pu = static_cast<std::size_t>(p);
      for (std::int64_t r = 0; r < kPanelRows && p * kPanelRows + r < out.rows_; ++r) {
        const std::int64_t row = p * kPanelRows + r;
        const std::uint8_t* src = w.value_bytes().data() + row * w.row_bytes();
        if (s.bits == 8) {  // int8 per_group: the bytes as stored, 4 columns per block
          for (std::int64_t c = 0; c < k; ++c)
            out.values_.data()[detail::panel_block_offset(pu, np, nb, static_cast<std::size_t>(c / 4)) + r * 4 + c % 4] = src[c];
        } else {  // int4: 8 columns per block, unsigned nibbles
          for (std::int64_t b = 0; b < k / 8; ++b) {
            std::uint8_t* dst = out.values_.data() + detail::panel_block_offset(pu, np, nb, static_cast<std::size_t>(b)) + r * 4;
            for (std::int64_t i = 0; i < 4; ++i)
              dst[i] = static_cast<std::uint8_t>(panel_nibble(src, 8 * b + i, flip) | (panel_nibble(src, 8 * b + 4 + i, flip) << 4));
          }
        }
        for (std::int64_t gr = 0; gr < groups; ++gr) {
          const auto at = static_cast<std::int64_t>(detail::panel_group_slot(pu, np, ng, static_cast<std::size_t>(gr))) + r;
          std::memcpy(out.scales_.data() + at * scale_size, src_scales + (row * groups + gr) * scale_size,
                      static_cast<std::size_t>(scale_size));
          if (!s.symmetric) out.zeros_.data()[at] = w.zeros()(row, gr);
        }
      }
      // Padding rows keep zero values (and scales 0): their outputs are never written.
    }
  });
  return out;
}

void QuantizedPanels::pack_int8(const QuantizedTensor<cpu>& w, ThreadPool* pool) {
  const std::int64_t panels = this->panels(), blocks = this->blocks(), k = cols_;
  values_ = Tensor<std::uint8_t>(Shape{panels * blocks * 64});
  scales_ = Tensor<std::uint8_t>(Shape{panels * kPanelRows * 4});
  if (!scheme_.symmetric) zeros_ = Tensor<std::uint8_t>(Shape{panels * kPanelRows});
  const auto np = static_cast<std::size_t>(panels), nb = static_cast<std::size_t>(blocks);
  auto* scales = reinterpret_cast<float*>(scales_.data());
  parallel_for(pool, 0, panels, [&](std::int64_t p0, std::int64_t p1) {
    for (std::int64_t p = p0; p < p1; ++p) {
      for (std::int64_t r = 0; r < kPanelRows && p * kPanelRows + r < rows_; ++r) {
        const std::int64_t row = p * kPanelRows + r;
        const std::uint8_t* src = w.value_bytes().data() + row * w.row_bytes();
        for (std::int64_t c = 0; c < k; ++c)
          values_.data()[detail::panel_block_offset(static_cast<std::size_t>(p), np, nb, static_cast<std::size_t>(c / 4)) + r * 4 + c % 4] = src[c];
        const auto [sr, sc] = w.scale_index(row, 0);
        scales[row] = w.scale(sr, sc);  // f16 widened: exact
        if (!scheme_.symmetric) zeros_.data()[row] = static_cast<std::uint8_t>(w.zero(sr, sc));
      }
      // Padding columns and rows keep zero values (and scales 0): padding rows' outputs are
      // never written, padding columns meet zero activations.
    }
  });
}

QuantizedTensor<cpu> QuantizedPanels::unpack() const {
  auto made = QuantizedTensor<cpu>::create(scheme_, rows_, cols_);
  QuantizedTensor<cpu> q = std::move(made).value();
  if (scheme_.bits == 8 && scheme_.granularity != Granularity::per_group) {
    const auto np = static_cast<std::size_t>(panels()), nb = static_cast<std::size_t>(blocks());
    const auto* scales = reinterpret_cast<const float*>(scales_.data());
    for (std::int64_t row = 0; row < rows_; ++row) {
      std::uint8_t* dst = q.value_bytes().data() + row * q.row_bytes();
      const auto p = static_cast<std::size_t>(row / kPanelRows);
      for (std::int64_t c = 0; c < cols_; ++c)
        dst[c] = values_.data()[detail::panel_block_offset(p, np, nb, static_cast<std::size_t>(c / 4)) + row % kPanelRows * 4 + c % 4];
      const auto [sr, sc] = q.scale_index(row, 0);
      if (scheme_.scale_dtype == DType::f16) q.scales_f16()(sr, sc) = f16(scales[row]);
      else q.scales_f32()(sr, sc) = scales[row];
      if (!scheme_.symmetric) q.zeros()(sr, sc) = zeros_.data()[row];
    }
    return q;
  }
  const std::int64_t groups = this->groups(), k = cols_;
  const std::int64_t scale_size = scheme_.scale_dtype == DType::f16 ? 2 : 4;
  const unsigned flip = scheme_.symmetric ? 8u : 0u;
  auto* dst_scales = static_cast<std::uint8_t*>(q.scales_data());
  const auto np = static_cast<std::size_t>(panels()), nb = static_cast<std::size_t>(blocks()), ng = static_cast<std::size_t>(groups);
  const std::size_t cols_per_block = scheme_.bits == 4 ? 8 : 4;
  for (std::int64_t row = 0; row < rows_; ++row) {
    const std::int64_t r = row % kPanelRows;
    const auto p = static_cast<std::size_t>(row / kPanelRows);
    std::uint8_t* dst = q.value_bytes().data() + row * q.row_bytes();
    for (std::int64_t c = 0; c < k; ++c) {
      const std::uint8_t byte =
          values_.data()[detail::panel_block_offset(p, np, nb, static_cast<std::size_t>(c) / cols_per_block) + r * 4 + c % 4];
      if (scheme_.bits == 8) {
        dst[c] = byte;
        continue;
      }
      const unsigned u = ((c % 8) < 4 ? byte & 0xfu : byte >> 4) ^ flip;
      dst[c >> 1] = static_cast<std::uint8_t>(dst[c >> 1] | (u << ((c & 1) * 4)));
    }
    for (std::int64_t gr = 0; gr < groups; ++gr) {
      const auto at = static_cast<std::int64_t>(detail::panel_group_slot(p, np, ng, static_cast<std::size_t>(gr))) + r;
      std::memcpy(dst_scales + (row * groups + gr) * scale_size, scales_.data() + at * scale_size, static_cast<std::size_t>(scale_size));
      if (!scheme_.symmetric) q.zeros()(row, gr) = zeros_.data()[at];
    }
  }
  return q;
}

std::vector<std::span<const std::byte>> QuantizedPanels::buffers() const {
  std::vector<std::span<const std::byte>> out;
  out.emplace_back(reinterpret_cast<const std::byte*>(values_.data()), values_.nbytes());
  out.emplace_back(reinterpret_cast<const std::byte*>(scales_.data()), scales_.nbytes());
  if (!scheme_.symmetric) out.emplace_back(reinterpret_cast<const std::byte*>(zeros_.data()), zeros_.nbytes());
  return out;
}

}  // namespace quarry
