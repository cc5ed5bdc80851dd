// Readers for the .fvecs / .bvecs / .ivecs dataset files of the ANN benchmarks (SIFT, GIST,
// BIGANN): per vector, a little-endian int32 dimension, then that many float32 / uint8 / int32
// values.
//
// The readers trust nothing in the file. The first record's dimension must be in
// (0, VecsLimits::max_dim]; the file size must be a whole number of records of that size (checked
// with overflow-checked arithmetic before anything is allocated); every later record must repeat
// the same dimension; fvecs values must be finite. Errors name the file, the record, its byte
// offset and the field.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "quarry/core/status.hpp"
#include "quarry/core/tensor.hpp"

namespace quarry {

/// "Read every record": the default `max_rows` of the vecs readers.
inline constexpr std::int64_t kAllRows = -1;

/// Bounds the vecs readers enforce before allocating anything.
struct VecsLimits {
  std::int64_t max_dim = std::int64_t{1} << 20;  ///< largest dimension accepted
};

/// The vectors of an .fvecs file as an [n, d] matrix: all of them, or the first `max_rows`
/// (kAllRows or any negative value: all). An empty file gives a [0, 0] matrix.
/// Errors: not_found / io_error (opening), corrupt_data (a bad dimension, a size that is not a
/// whole number of records, a record whose dimension differs from the first's, a NaN or
/// infinite value), each naming the file, the record and the field.
result<Tensor<float>> read_fvecs(const std::string& path, std::int64_t max_rows = kAllRows, const VecsLimits& limits = {});
/// The vectors of a .bvecs file (uint8 values) as an [n, d] matrix; as read_fvecs.
result<Tensor<std::uint8_t>> read_bvecs(const std::string& path, std::int64_t max_rows = kAllRows, const VecsLimits& limits = {});
/// The vectors of an .ivecs file (int32 values, e.g. ground-truth neighbour ids) as [n, d].
result<Tensor<std::int32_t>> read_ivecs(const std::string& path, std::int64_t max_rows = kAllRows, const VecsLimits& limits = {});
/// read_bvecs() converted to float (exact: every uint8 is a float).
result<Tensor<float>> read_bvecs_as_float(const std::string& path, std::int64_t max_rows = kAllRows, const VecsLimits& limits = {});

/// The parsers behind the readers, over bytes the caller holds; `what` names them in errors.
///@{
result<Tensor<float>> parse_fvecs(std::span<const std::byte> bytes, const std::string& what, std::int64_t max_rows = kAllRows, const VecsLimits& limits = {});
result<Tensor<std::uint8_t>> parse_bvecs(std::span<const std::byte> bytes, const std::string& what, std::int64_t max_rows = kAllRows, const VecsLimits& limits = {});
result<Tensor<std::int32_t>> parse_ivecs(std::span<const std::byte> bytes, const std::string& what, std::int64_t max_rows = kAllRows, const VecsLimits& limits = {});
///@}

/// A uint8 matrix (e.g. SIFT descriptors from read_bvecs) as float, element by element.
Tensor<float> to_float(TensorView<const std::uint8_t> v);

}  // namespace quarry
