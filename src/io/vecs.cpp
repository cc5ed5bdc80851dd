#include "quarry/io/vecs.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <utility>

#include <fmt/format.h>

#include "quarry/core/checked.hpp"
#include "quarry/io/mapped_file.hpp"

namespace quarry {

namespace {

template <class T>
constexpr const char* value_name() {
  if constexpr (std::is_same_v<T, float>) return "float32";
  else if constexpr (std::is_same_v<T, std::uint8_t>) return "uint8";
  else return "int32";
}

template <class T>
T load_le(const std::byte* p) noexcept {
  T v;
  std::memcpy(&v, p, sizeof(T));
  if constexpr (std::endian::native == std::endian::big && sizeof(T) > 1) {
    unsigned char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    for (std::size_t i = 0; i < sizeof(T) / 2; ++i) std::swap(b[i], b[sizeof(T) - 1 - i]);
    std::memcpy(&v, b, sizeof(T));
  }
  return v;
}

template <class T>
result<Tensor<T>> parse_vecs(std::span<const std::byte> bytes, const std::string& what, std::int64_t max_rows,
                             const VecsLimits& limits) {
  auto fail = [&](const std::string& message) { return status(errc::corrupt_data, what + ": " + message); };
  const auto size = static_cast<std::int64_t>(bytes.size());
  if (size == 0) return Tensor<T>(Shape{0, 0});
  if (size < 4)
    return fail(fmt::format("truncated: the dimension field of record 0 needs 4 bytes but the file has {}", size));

  const std::int32_t dim = load_le<std::int32_t>(bytes.data());
  if (dim <= 0 || dim > limits.max_dim)
    return fail(fmt::format("record 0 at offset 0: dimension field is {}; it must be in 1..{}", dim, limits.max_dim));

  // Every record is 4 + dim * sizeof(T) bytes; the file must hold a whole number of them.
  const auto value_bytes = checked_mul(dim, static_cast<std::int64_t>(sizeof(T)));
  const auto record = value_bytes ? checked_add(*value_bytes, 4) : std::nullopt;
  if (!record) return fail(fmt::format("record 0: dimension {} overflows the record size", dim));
  const std::int64_t records = size / *record;
  if (size % *record != 0)
    return fail(fmt::format(
        "file size {} bytes is not a whole number of records of {} bytes (dimension {} {} values, from record 0): "
        "record {} at offset {} is truncated ({} of {} bytes)",
        size, *record, dim, value_name<T>(), records, records * *record, size % *record, *record));

  const std::int64_t rows = max_rows < 0 ? records : std::min(max_rows, records);
  // rows * dim * sizeof(T) <= size: the allocation is bounded by the file.
  Tensor<T> out = Tensor<T>::uninitialized(Shape{rows, dim});
  T* dst = out.data();
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::int64_t offset = r * *record;
    const std::byte* p = bytes.data() + offset;
    const std::int32_t d = load_le<std::int32_t>(p);
    if (d != dim)
      return fail(fmt::format("record {} at offset {}: dimension field is {}, but record 0's is {}", r, offset, d, dim));
    p += 4;
    if constexpr (std::endian::native == std::endian::little || sizeof(T) == 1) {
      std::memcpy(dst, p, static_cast<std::size_t>(*value_bytes));
    } else {
      for (std::int32_t j = 0; j < dim; ++j) dst[j] = load_le<T>(p + j * sizeof(T));
    }
    if constexpr (std::is_same_v<T, float>) {
      for (std::int32_t j = 0; j < dim; ++j)
        if (!std::isfinite(dst[j]))
          return fail(fmt::format("record {} at offset {}: value {} is {}", r, offset, j, std::isnan(dst[j]) ? "NaN" : "infinite"));
    }
    dst += dim;
  }
  return out;
}

template <class T>
result<Tensor<T>> read_vecs(const std::string& path, std::int64_t max_rows, const VecsLimits& limits) {
  QUARRY_ASSIGN_OR_RETURN(MappedFile file, MappedFile::open(path));
  return parse_vecs<T>(file.bytes(), path, max_rows, limits);
}

}  // namespace

result<Tensor<float>> parse_fvecs(std::span<const std::byte> bytes, const std::string& what, std::int64_t max_rows, const VecsLimits& limits) {
  return parse_vecs<float>(bytes, what, max_rows, limits);
}
result<Tensor<std::uint8_t>> parse_bvecs(std::span<const std::byte> bytes, const std::string& what, std::int64_t max_rows, const VecsLimits& limits) {
  return parse_vecs<std::uint8_t>(bytes, what, max_rows, limits);
}
result<Tensor<std::int32_t>> parse_ivecs(std::span<const std::byte> bytes, const std::string& what, std::int64_t max_rows, const VecsLimits& limits) {
  return parse_vecs<std::int32_t>(bytes, what, max_rows, limits);
}

result<Tensor<float>> read_fvecs(const std::string& path, std::int64_t max_rows, const VecsLimits& limits) {
  return read_vecs<float>(path, max_rows, limits);
}
result<Tensor<std::uint8_t>> read_bvecs(const std::string& path, std::int64_t max_rows, const VecsLimits& limits) {
  return read_vecs<std::uint8_t>(path, max_rows, limits);
}
result<Tensor<std::int32_t>> read_ivecs(const std::string& path, std::int64_t max_rows, const VecsLimits& limits) {
  return read_vecs<std::int32_t>(path, max_rows, limits);
}
result<Tensor<float>> read_bvecs_as_float(const std::string& path, std::int64_t max_rows, const VecsLimits& limits) {
  QUARRY_ASSIGN_OR_RETURN(Tensor<std::uint8_t> b, read_bvecs(path, max_rows, limits));
  return to_float(b.view());
}

Tensor<float> to_float(TensorView<const std::uint8_t> v) {
  const Tensor<std::uint8_t> c = v.contiguous();
  Tensor<float> out = Tensor<float>::uninitialized(v.shape());
  const std::uint8_t* src = c.data();
  float* dst = out.data();
  for (std::int64_t i = 0, n = out.numel(); i < n; ++i) dst[i] = static_cast<float>(src[i]);
  return out;
}

}  // namespace quarry
