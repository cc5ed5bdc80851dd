// QuantScheme: how a [rows, cols] weight matrix is mapped to 8- or 4-bit integers.
//
// A weight w at (r, c) is stored as an integer q with a scale s and a zero point z shared by its
// block, and reads back as  w ~ (q - z) * s.  The block is the whole tensor (per_tensor), one
// output row (per_channel), or `group_size` consecutive columns of one row (per_group, along K,
// the reduction dimension). Symmetric schemes have z = 0.
//
// Integer ranges (what quarry's quantizer produces; imports may use the full storage range):
//   int8 symmetric   q in -127..127 (storage int8). -128 is left out so that w and -w quantize
//                    to q and -q, as GGUF Q8_0 does.
//   int8 asymmetric  q in 0..255 (storage uint8), z in 0..255.
//   int4 symmetric   q in -7..7 (storage int4, -8..7: GGUF Q4_0 imports use -8).
//   int4 asymmetric  q in 0..15 (storage uint4), z in 0..15 (a byte each, so GPTQ's z + 1 = 16 fits).
// Asymmetric blocks quantize the range [min(w, 0), max(w, 0)], so zero is always exact.
#pragma once

#include <cstdint>
#include <string>

#include <fmt/format.h>

#include "quarry/core/dtype.hpp"
#include "quarry/core/status.hpp"

namespace quarry {

/// Which weights share one scale (and zero point).
enum class Granularity : std::uint8_t {
  per_tensor,   ///< one scale for the whole matrix
  per_channel,  ///< one scale per output row
  per_group,    ///< one scale per `group_size` consecutive columns of a row
};

/// "per_tensor", "per_channel", "per_group".
constexpr const char* granularity_name(Granularity g) noexcept {
  switch (g) {
    case Granularity::per_tensor: return "per_tensor";
    case Granularity::per_channel: return "per_channel";
    case Granularity::per_group: return "per_group";
  }
  return "?";
}

/// A quantization scheme: bit width, granularity, symmetry and the type scales are stored in.
struct QuantScheme {
  int bits = 8;                                       ///< 8 or 4
  Granularity granularity = Granularity::per_channel;  ///< which weights share a scale
  int group_size = 0;                                 ///< 32, 64 or 128 for per_group; else 0
  bool symmetric = true;                              ///< false: a zero point per scale
  DType scale_dtype = DType::f32;                     ///< f32 or f16

  /// INT8, one scale for the whole matrix.
  static constexpr QuantScheme int8_per_tensor(bool symmetric = true) noexcept {
    return {8, Granularity::per_tensor, 0, symmetric, DType::f32};
  }
  /// INT8, one scale per output row (the usual W8A8 weight scheme).
  static constexpr QuantScheme int8_per_channel(bool symmetric = true) noexcept {
    return {8, Granularity::per_channel, 0, symmetric, DType::f32};
  }
  /// INT8 in groups along K (GGUF Q8_0 is int8_grouped(32), symmetric, f16 scales).
  static constexpr QuantScheme int8_grouped(int group_size, bool symmetric = true, DType scale_dtype = DType::f16) noexcept {
    return {8, Granularity::per_group, group_size, symmetric, scale_dtype};
  }
  /// INT4 in groups along K (GGUF Q4_0 is int4_grouped(32), symmetric, f16 scales; GPTQ/AWQ are
  /// asymmetric with groups of 128).
  static constexpr QuantScheme int4_grouped(int group_size, bool symmetric = true, DType scale_dtype = DType::f16) noexcept {
    return {4, Granularity::per_group, group_size, symmetric, scale_dtype};
  }

  /// The element type of the stored integers: i8, u8, i4 or u4.
  constexpr DType value_dtype() const noexcept {
    if (bits == 8) return symmetric ? DType::i8 : DType::u8;
    return symmetric ? DType::i4 : DType::u4;
  }
  /// Smallest and largest integer quarry's quantizer produces (see the table above).
  ///@{
  constexpr int qmin() const noexcept { return symmetric ? -qmax_symmetric() : 0; }
  constexpr int qmax() const noexcept { return symmetric ? qmax_symmetric() : (1 << bits) - 1; }
  ///@}
  /// The largest magnitude of a symmetric scheme of these bits: 127 or 7.
  constexpr int qmax_symmetric() const noexcept { return (1 << (bits - 1)) - 1; }

  /// Scales per row for a matrix with `cols` columns (per_tensor: 1, shared by all rows).
  constexpr std::int64_t scales_per_row(std::int64_t cols) const noexcept {
    return granularity == Granularity::per_group ? cols / group_size : 1;
  }
  /// Rows of the scale matrix for a matrix with `rows` rows.
  constexpr std::int64_t scale_rows(std::int64_t rows) const noexcept {
    return granularity == Granularity::per_tensor ? 1 : rows;
  }

  /// Whether the fields make a scheme quarry supports; the error says which field is wrong.
  status validate() const {
    if (bits != 8 && bits != 4) return {errc::invalid_argument, fmt::format("quantization bits must be 8 or 4, not {}", bits)};
    if (scale_dtype != DType::f32 && scale_dtype != DType::f16)
      return {errc::invalid_argument, fmt::format("scales must be f32 or f16, not {}", dtype_name(scale_dtype))};
    if (granularity == Granularity::per_group) {
      if (group_size != 32 && group_size != 64 && group_size != 128)
        return {errc::invalid_argument, fmt::format("group size must be 32, 64 or 128, not {}", group_size)};
    } else if (group_size != 0) {
      return {errc::invalid_argument, fmt::format("group size {} given for {} quantization", group_size, granularity_name(granularity))};
    }
    return {};
  }
  /// validate(), and that a [rows, cols] matrix fits the scheme (cols a multiple of the group,
  /// even for 4 bits so each row starts on a byte).
  status validate_for(std::int64_t rows, std::int64_t cols) const {
    QUARRY_RETURN_IF_ERROR(validate());
    if (rows < 0 || cols < 0) return {errc::shape_mismatch, fmt::format("matrix shape [{}, {}] is negative", rows, cols)};
    if (granularity == Granularity::per_group && cols % group_size != 0)
      return {errc::shape_mismatch, fmt::format("K = {} columns is not a multiple of the group size {} ({})", cols, group_size, to_string())};
    if (bits == 4 && cols % 2 != 0)
      return {errc::shape_mismatch, fmt::format("int4 rows need an even number of columns; K = {}", cols)};
    return {};
  }

  /// "int4 per_group(128) asymmetric f16-scales".
  std::string to_string() const {
    std::string g = granularity == Granularity::per_group ? fmt::format("per_group({})", group_size) : granularity_name(granularity);
    return fmt::format("int{} {} {} {}-scales", bits, g, symmetric ? "symmetric" : "asymmetric", dtype_name(scale_dtype));
  }

  /// Every field equal.
  friend constexpr bool operator==(const QuantScheme&, const QuantScheme&) noexcept = default;
};

}  // namespace quarry
