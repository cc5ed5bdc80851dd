#include "quarry/quant/gptq.hpp"

#include <cmath>
#include <string>

#include <fmt/format.h>

#include "quarry/quant/scheme.hpp"

namespace quarry {

namespace {

// Nibble j (bits 4j..4j+3) of a packed int32, read as the unsigned 32-bit pattern.
inline unsigned nibble(std::int32_t word, int j) noexcept {
  return (static_cast<std::uint32_t>(word) >> (4 * j)) & 0xfu;
}

template <class T>
status check_rank(const char* fn, const char* name, const TensorView<const T>& t, int rank) {
  if (t.rank() != rank)
    return {errc::shape_mismatch, fmt::format("{}: {} must have rank {}; its shape is {}", fn, name, rank, t.shape())};
  return {};
}

status check_group_size(const char* fn, int group_size, std::int64_t k) {
  if (group_size != 32 && group_size != 64 && group_size != 128)
    return {errc::invalid_argument, fmt::format("{}: group_size must be 32, 64 or 128, not {}{}", fn, group_size,
                                                group_size == -1 ? " (one group for all of K is not supported)" : "")};
  if (k % group_size != 0)
    return {errc::shape_mismatch, fmt::format("{}: K = {} in features is not a multiple of group_size {}", fn, k, group_size)};
  return {};
}

// The shapes shared by both formats: qzeros [K / G, N / 8] and scales [K / G, N].
status check_zeros_scales(const char* fn, TensorView<const std::int32_t> qzeros, TensorView<const f16> scales, std::int64_t k,
                          std::int64_t n, int group_size, const std::string& derived) {
  const Shape want_zeros{k / group_size, n / 8}, want_scales{k / group_size, n};
  if (n % 8 != 0)
    return {errc::shape_mismatch, fmt::format("{}: N = {} out features ({}) is not a multiple of 8, as packed qzeros need", fn, n, derived)};
  if (scales.shape() != want_scales)
    return {errc::shape_mismatch, fmt::format("{}: scales has shape {}; [K / G, N] = {} expected ({}, G = {})", fn, scales.shape(),
                                              want_scales, derived, group_size)};
  if (qzeros.shape() != want_zeros)
    return {errc::shape_mismatch, fmt::format("{}: qzeros has shape {}; [K / G, N / 8] = {} expected ({}, G = {})", fn, qzeros.shape(),
                                              want_zeros, derived, group_size)};
  return {};
}

// Copies scales [K / G, N] transposed into q's [N, K / G] f16 scales, refusing inf and NaN.
status copy_scales(const char* fn, TensorView<const f16> scales, QuantizedTensor<cpu>& q) {
  TensorView<f16> dst = q.scales_f16();
  for (std::int64_t g = 0; g < scales.dim(0); ++g)
    for (std::int64_t n = 0; n < scales.dim(1); ++n) {
      const f16 s = scales(g, n);
      if (!std::isfinite(static_cast<float>(s)))
        return {errc::invalid_argument, fmt::format("{}: scales[{}, {}] (group {} of out feature {}) is {}", fn, g, n, g, n, float(s))};
      dst(n, g) = s;
    }
  return {};
}

// g_idx, when present, must be [K] with g_idx[k] = k / G.
status check_g_idx(const char* fn, TensorView<const std::int32_t> g_idx, std::int64_t k, int group_size) {
  if (g_idx.rank() == 1 && g_idx.dim(0) == 0) return {};  // absent (or K = 0)
  QUARRY_RETURN_IF_ERROR(check_rank(fn, "g_idx", g_idx, 1));
  if (g_idx.dim(0) != k)
    return {errc::shape_mismatch, fmt::format("{}: g_idx has shape {}; [K] = [{}] expected", fn, g_idx.shape(), k)};
  for (std::int64_t i = 0; i < k; ++i)
    if (g_idx(i) != i / group_size)
      return {errc::unsupported,
              fmt::format("{}: g_idx[{}] = {}, not {} = k / G: an act-order (desc_act) checkpoint; quarry imports only the trivial "
                          "g_idx[k] = k / G, since other orders would need the activations permuted",
                          fn, i, g_idx(i), i / group_size)};
  return {};
}

}  // namespace

result<QuantizedTensor<cpu>> import_gptq(TensorView<const std::int32_t> qweight, TensorView<const std::int32_t> qzeros,
                                         TensorView<const f16> scales, int group_size, GptqFormat format,
                                         TensorView<const std::int32_t> g_idx) {
  constexpr const char* fn = "import_gptq";
  QUARRY_RETURN_IF_ERROR(check_rank(fn, "qweight", qweight, 2));
  QUARRY_RETURN_IF_ERROR(check_rank(fn, "qzeros", qzeros, 2));
  QUARRY_RETURN_IF_ERROR(check_rank(fn, "scales", scales, 2));
  const std::int64_t k = qweight.dim(0) * 8, n = qweight.dim(1);
  const std::string derived = fmt::format("K = 8 * qweight rows = {}, N = qweight columns = {}, qweight {}", k, n, qweight.shape());
  QUARRY_RETURN_IF_ERROR(check_group_size(fn, group_size, k));
  QUARRY_RETURN_IF_ERROR(check_zeros_scales(fn, qzeros, scales, k, n, group_size, derived));
  QUARRY_RETURN_IF_ERROR(check_g_idx(fn, g_idx, k, group_size));

  QUARRY_ASSIGN_OR_RETURN(QuantizedTensor<cpu> q, QuantizedTensor<cpu>::create(QuantScheme::int4_grouped(group_size, false, DType::f16), n, k));
  QUARRY_RETURN_IF_ERROR(copy_scales(fn, scales, q));

  // qweight[i][n] holds k = 8i .. 8i + 7 in nibbles 0..7, and quarry's row n holds column 2m in
  // the low nibble of byte m: the word's four little-endian bytes are bytes 4i .. 4i + 3 of row n.
  for (std::int64_t i = 0; i < qweight.dim(0); ++i)
    for (std::int64_t c = 0; c < n; ++c) {
      const auto word = static_cast<std::uint32_t>(qweight(i, c));
      std::uint8_t* dst = q.value_bytes().data() + c * q.row_bytes() + 4 * i;
      for (int b = 0; b < 4; ++b) dst[b] = static_cast<std::uint8_t>(word >> (8 * b));
    }

  const unsigned offset = format == GptqFormat::v1 ? 1u : 0u;  // v1 stores z - 1
  TensorView<std::uint8_t> zeros = q.zeros();
  for (std::int64_t g = 0; g < qzeros.dim(0); ++g)
    for (std::int64_t i = 0; i < qzeros.dim(1); ++i)
      for (int j = 0; j < 8; ++j) zeros(8 * i + j, g) = static_cast<std::uint8_t>(nibble(qzeros(g, i), j) + offset);
  return q;
}

result<QuantizedTensor<cpu>> import_awq(TensorView<const std::int32_t> qweight, TensorView<const std::int32_t> qzeros,
                                        TensorView<const f16> scales, int group_size) {
  constexpr const char* fn = "import_awq";
  QUARRY_RETURN_IF_ERROR(check_rank(fn, "qweight", qweight, 2));
  QUARRY_RETURN_IF_ERROR(check_rank(fn, "qzeros", qzeros, 2));
  QUARRY_RETURN_IF_ERROR(check_rank(fn, "scales", scales, 2));
  const std::int64_t k = qweight.dim(0), n = qweight.dim(1) * 8;
  const std::string derived = fmt::format("K = qweight rows = {}, N = 8 * qweight columns = {}, qweight {}", k, n, qweight.shape());
  QUARRY_RETURN_IF_ERROR(check_group_size(fn, group_size, k));
  QUARRY_RETURN_IF_ERROR(check_zeros_scales(fn, qzeros, scales, k, n, group_size, derived));

  QUARRY_ASSIGN_OR_RETURN(QuantizedTensor<cpu> q, QuantizedTensor<cpu>::create(QuantScheme::int4_grouped(group_size, false, DType::f16), n, k));
  QUARRY_RETURN_IF_ERROR(copy_scales(fn, scales, q));

  // Nibble p of qweight[k][i] is (n = 8i + kAwqPackOrder[p], k): a transpose with a shuffle.
  std::uint8_t* values = q.value_bytes().data();
  const std::int64_t row_bytes = q.row_bytes();
  for (std::int64_t kk = 0; kk < k; ++kk)
    for (std::int64_t i = 0; i < qweight.dim(1); ++i) {
      const std::int32_t word = qweight(kk, i);
      for (int p = 0; p < 8; ++p) {
        std::uint8_t& byte = values[(8 * i + kAwqPackOrder[p]) * row_bytes + kk / 2];
        byte = static_cast<std::uint8_t>(kk & 1 ? (byte & 0x0fu) | (nibble(word, p) << 4) : (byte & 0xf0u) | nibble(word, p));
      }
    }

  TensorView<std::uint8_t> zeros = q.zeros();
  for (std::int64_t g = 0; g < qzeros.dim(0); ++g)
    for (std::int64_t i = 0; i < qzeros.dim(1); ++i)
      for (int p = 0; p < 8; ++p) zeros(8 * i + kAwqPackOrder[p], g) = static_cast<std::uint8_t>(nibble(qzeros(g, i), p));
  return q;
}

}  // namespace quarry
