// Element types quarry stores and the traits that describe them.
//
// f32 f64 f16 bf16 i8 u8 i32 are ordinary one-element-per-object types. `int4` and `uint4` are
// packed: two 4-bit values per byte, the element with the lower index in the low nibble.
// A Tensor of a packed type addresses elements, not bytes; its storage is `uint8_t`.
#pragma once

#include <cstdint>
#include <string_view>
#include <type_traits>

#include "quarry/core/float16.hpp"

namespace quarry {

/// A signed 4-bit integer, -8..7: the element type of packed int4 tensors.
struct int4 {
  std::int8_t value = 0;  ///< the value, -8..7
  constexpr int4() noexcept = default;
  /// Keeps the low 4 bits of `v` as a two's complement nibble (so 8 becomes -8).
  explicit constexpr int4(int v) noexcept
      : value(static_cast<std::int8_t>(static_cast<std::int8_t>((v & 0xf) << 4) >> 4)) {}
  /// The value as an int (implicit: widening loses nothing).
  constexpr operator int() const noexcept { return value; }  // NOLINT: widening
  /// The 4-bit two's complement pattern, 0..15.
  constexpr std::uint8_t nibble() const noexcept { return static_cast<std::uint8_t>(value & 0xf); }
  /// The int4 whose two's complement pattern is the low 4 bits of `n`.
  static constexpr int4 from_nibble(std::uint8_t n) noexcept { return int4(int(n)); }
  /// Equal values.
  friend constexpr bool operator==(int4, int4) noexcept = default;
};

/// An unsigned 4-bit integer, 0..15: the element type of packed uint4 tensors
/// (GPTQ/AWQ weights and GGUF Q4 nibbles before the zero point is taken off).
struct uint4 {
  std::uint8_t value = 0;  ///< the value, 0..15
  constexpr uint4() noexcept = default;
  /// Keeps the low 4 bits of `v`.
  explicit constexpr uint4(int v) noexcept : value(static_cast<std::uint8_t>(v & 0xf)) {}
  /// The value as an int (implicit: widening loses nothing).
  constexpr operator int() const noexcept { return value; }  // NOLINT: widening
  /// The 4-bit pattern, 0..15 (the value itself).
  constexpr std::uint8_t nibble() const noexcept { return value; }
  /// The uint4 of the low 4 bits of `n`.
  static constexpr uint4 from_nibble(std::uint8_t n) noexcept { return uint4(int(n)); }
  /// Equal values.
  friend constexpr bool operator==(uint4, uint4) noexcept = default;
};

/// The runtime tag of an element type.
enum class DType : std::uint8_t { f32, f64, f16, bf16, i8, u8, i32, i4, u4 };

/// "f32", "bf16", "i4", ...
constexpr std::string_view dtype_name(DType t) noexcept {
  switch (t) {
    case DType::f32: return "f32";
    case DType::f64: return "f64";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
    case DType::i8: return "i8";
    case DType::u8: return "u8";
    case DType::i32: return "i32";
    case DType::i4: return "i4";
    case DType::u4: return "u4";
  }
  return "?";
}

/// Bits one element takes in storage (4 for the packed types).
constexpr int dtype_bits(DType t) noexcept {
  switch (t) {
    case DType::f64: return 64;
    case DType::f32:
    case DType::i32: return 32;
    case DType::f16:
    case DType::bf16: return 16;
    case DType::i8:
    case DType::u8: return 8;
    case DType::i4:
    case DType::u4: return 4;
  }
  return 0;
}

/// Compile-time facts about an element type T.
/// `storage_type` is what memory holds; `elements_per_storage` is 2 for packed 4-bit types.
/// Compile-time facts of element type T: its DType tag (`dtype`), the type memory holds
/// (`storage_type`: T, or uint8_t for packed 4-bit types) and elements per storage unit.
template <class T>
struct dtype_traits;

#define QUARRY_DETAIL_PLAIN_DTYPE(Type, Tag)                    \
  template <>                                                   \
  struct dtype_traits<Type> {                                   \
    static constexpr DType dtype = DType::Tag;                  \
    using storage_type = Type;                                  \
    static constexpr int elements_per_storage = 1;              \
  }
QUARRY_DETAIL_PLAIN_DTYPE(float, f32);
QUARRY_DETAIL_PLAIN_DTYPE(double, f64);
QUARRY_DETAIL_PLAIN_DTYPE(f16, f16);
QUARRY_DETAIL_PLAIN_DTYPE(bf16, bf16);
QUARRY_DETAIL_PLAIN_DTYPE(std::int8_t, i8);
QUARRY_DETAIL_PLAIN_DTYPE(std::uint8_t, u8);
QUARRY_DETAIL_PLAIN_DTYPE(std::int32_t, i32);
#undef QUARRY_DETAIL_PLAIN_DTYPE

/// int4: packed two per byte, low nibble first.
template <>
struct dtype_traits<int4> {
  static constexpr DType dtype = DType::i4;       ///< the runtime tag
  using storage_type = std::uint8_t;              ///< memory holds bytes
  static constexpr int elements_per_storage = 2;  ///< two nibbles per byte
};
/// uint4: packed two per byte, low nibble first.
template <>
struct dtype_traits<uint4> {
  static constexpr DType dtype = DType::u4;       ///< the runtime tag
  using storage_type = std::uint8_t;              ///< memory holds bytes
  static constexpr int elements_per_storage = 2;  ///< two nibbles per byte
};

/// True for the element types quarry tensors hold.
template <class T>
concept Element = requires { dtype_traits<std::remove_const_t<T>>::dtype; };

/// True for the packed 4-bit element types.
template <class T>
inline constexpr bool is_packed_v = Element<T> && dtype_traits<std::remove_const_t<T>>::elements_per_storage > 1;

/// The DType of T.
template <Element T>
inline constexpr DType dtype_of = dtype_traits<std::remove_const_t<T>>::dtype;

/// Bytes of storage `n` elements of T take (rounded up to whole bytes for packed types).
template <Element T>
constexpr std::int64_t storage_bytes(std::int64_t n) noexcept {
  using traits = dtype_traits<std::remove_const_t<T>>;
  constexpr std::int64_t per = traits::elements_per_storage;
  return (n + per - 1) / per * static_cast<std::int64_t>(sizeof(typename traits::storage_type));
}

}  // namespace quarry
