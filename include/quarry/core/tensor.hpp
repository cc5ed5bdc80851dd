// Tensor<T, Backend> (owning) and TensorView<T> (non-owning, strided).
//
// A view is a pointer to storage plus a layout: shape, element strides and an element offset,
// in the spirit of CuTe's Engine x Layout. Slicing, reshape and transpose make new views of the
// same memory; `contiguous()` makes an owning, row-major copy. Offsets and strides count
// elements, so packed int4/uint4 views (two elements per byte, low nibble first) slice and
// transpose like any other.
//
// Element access with operator() is unchecked in release builds; `at()` checks and throws
// quarry::error naming the index and the shape. Shape errors name the shapes involved.
#pragma once

#include <cassert>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <span>
#include <type_traits>
#include <utility>

#include <fmt/format.h>

#include "quarry/core/aligned_buffer.hpp"
#include "quarry/core/backend.hpp"
#include "quarry/core/dtype.hpp"
#include "quarry/core/shape.hpp"
#include "quarry/core/status.hpp"

namespace quarry {

template <Element T>
class TensorView;
template <Element T, class B = cpu>
class Tensor;

namespace detail {

/// A reference to one element of a packed 4-bit tensor: a byte and which nibble.
template <class T>
class PackedRef {
 public:
  PackedRef(std::uint8_t* byte, int shift) noexcept : byte_(byte), shift_(shift) {}
  operator T() const noexcept { return T::from_nibble(static_cast<std::uint8_t>((*byte_ >> shift_) & 0xf)); }  // NOLINT
  /// The element's integer value.
  explicit operator int() const noexcept { return static_cast<int>(T(*this)); }
  PackedRef& operator=(T v) noexcept {
    *byte_ = static_cast<std::uint8_t>((*byte_ & ~(0xf << shift_)) | (v.nibble() << shift_));
    return *this;
  }
  PackedRef& operator=(const PackedRef& other) noexcept { return *this = T(other); }

 private:
  std::uint8_t* byte_;
  int shift_;
};

/// Calls f(offset) for the element offset of every element of a strided layout, in row-major
/// order of the indices.
template <class F>
void for_each_offset(const Shape& shape, const Strides& strides, std::int64_t offset, F&& f) {
  const int rank = shape.rank();
  for (int d = 0; d < rank; ++d)
    if (shape[d] == 0) return;
  if (rank == 0) {
    f(offset);
    return;
  }
  std::int64_t idx[kMaxRank] = {};
  const std::int64_t inner = shape[rank - 1];
  const std::int64_t inner_stride = strides[rank - 1];
  for (;;) {
    std::int64_t off = offset;
    for (int d = 0; d + 1 < rank; ++d) off += idx[d] * strides[d];
    for (std::int64_t i = 0; i < inner; ++i) f(off + i * inner_stride);
    int d = rank - 2;
    for (; d >= 0; --d) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
    if (d < 0) return;
  }
}

}  // namespace detail

/// A non-owning, strided view of elements of type T (const T for a read-only view).
/// Cheap to copy; it does not keep the memory alive.
template <Element T>
class TensorView {
 public:
  using element_type = T;                                   ///< T as given (const for read-only views)
  using value_type = std::remove_const_t<T>;                ///< T without const
  static constexpr bool is_const = std::is_const_v<T>;      ///< true for a read-only view
  static constexpr bool packed = is_packed_v<value_type>;   ///< true for int4 / uint4 (two per byte)
  /// What memory holds: T itself, or (const) uint8_t for packed types.
  using storage_type = std::conditional_t<is_const, const typename dtype_traits<value_type>::storage_type,
                                          typename dtype_traits<value_type>::storage_type>;
  /// What operator() returns: T&, or a nibble proxy (by value when const) for packed types.
  using reference = std::conditional_t<packed, std::conditional_t<is_const, value_type, detail::PackedRef<value_type>>, T&>;

  TensorView() noexcept = default;
  /// A row-major contiguous view of `shape` starting at `data`.
  TensorView(storage_type* data, Shape shape) : TensorView(data, shape, contiguous_strides(shape), 0) {}
  /// A general strided view; `offset` and `strides` count elements.
  TensorView(storage_type* data, Shape shape, Strides strides, std::int64_t offset = 0)
      : data_(data), shape_(shape), strides_(strides), offset_(offset) {
    if (shape.rank() != strides.rank())
      throw_error(errc::shape_mismatch, fmt::format("shape {} and strides {} differ in rank", shape, strides));
    (void)numel_of(shape);
  }
  /// A view of a mutable tensor converts to a read-only one.
  template <class U>
    requires(std::is_same_v<const U, T> && !std::is_same_v<U, T>)
  TensorView(const TensorView<U>& other) noexcept  // NOLINT: implicit like T* -> const T*
      : data_(other.storage()), shape_(other.shape()), strides_(other.strides()), offset_(other.offset()) {}

  /// Number of dimensions.
  int rank() const noexcept { return shape_.rank(); }
  /// Extent of each dimension.
  const Shape& shape() const noexcept { return shape_; }
  /// Distance between neighbours along each dimension, in elements.
  const Strides& strides() const noexcept { return strides_; }
  /// Offset of element (0, ..., 0) from `storage()`, in elements.
  std::int64_t offset() const noexcept { return offset_; }
  /// Extent of dimension `d`; throws when `d` is not in [0, rank).
  std::int64_t dim(int d) const {
    check_dim(d, "dim");
    return shape_[d];
  }
  /// Number of elements.
  std::int64_t numel() const noexcept { return *shape_.checked_numel(); }
  /// True when numel() is 0.
  bool empty() const noexcept { return numel() == 0; }
  /// True when elements are laid out row-major with no gaps (size-1 dimensions may have any stride).
  bool is_contiguous() const noexcept {
    if (empty()) return true;  // no element to place (contiguous_strides of [3, 0] is [1, 1])
    std::int64_t expected = 1;
    for (int d = rank() - 1; d >= 0; --d) {
      if (shape_[d] != 1 && strides_[d] != expected) return false;
      expected *= shape_[d];
    }
    return true;
  }

  /// The storage pointer the offset counts from.
  storage_type* storage() const noexcept { return data_; }
  /// Pointer to element (0, ..., 0). For packed types it points at the byte holding it, and the
  /// view must start on a byte boundary (even offset); throws otherwise.
  storage_type* data() const {
    if constexpr (packed) {
      if (offset_ % 2 != 0)
        throw_error(errc::invalid_argument, fmt::format("packed view of shape {} starts mid-byte (element offset {}); data() needs a byte boundary", shape_, offset_));
      return data_ + offset_ / 2;
    } else {
      return data_ + offset_;
    }
  }
  /// The elements as a span; the view must be contiguous and not packed.
  std::span<T> span() const
    requires(!packed)
  {
    if (!is_contiguous())
      throw_error(errc::invalid_argument, fmt::format("span() of a non-contiguous view (shape {}, strides {})", shape_, strides_));
    return {data(), static_cast<std::size_t>(numel())};
  }

  /// Element at the given indices, one per dimension; unchecked (asserted in debug builds).
  template <std::integral... I>
  reference operator()(I... idx) const noexcept {
    assert(static_cast<int>(sizeof...(I)) == rank());
    std::int64_t off = offset_;
    int d = 0;
    ((off += static_cast<std::int64_t>(idx) * strides_[d++]), ...);
    return ref_at(off);
  }
  /// Element at the given indices; throws quarry::error naming the index and shape when out of range.
  template <std::integral... I>
  reference at(I... idx) const {
    const std::int64_t ix[] = {static_cast<std::int64_t>(idx)...};
    if (static_cast<int>(sizeof...(I)) != rank())
      throw_error(errc::out_of_range, fmt::format("at() with {} indices on a tensor of shape {} (rank {})", sizeof...(I), shape_, rank()));
    std::int64_t off = offset_;
    for (int d = 0; d < rank(); ++d) {
      if (ix[d] < 0 || ix[d] >= shape_[d])
        throw_error(errc::out_of_range, fmt::format("index [{}] is out of range for shape {} (dimension {})",
                                                    fmt::join(std::begin(ix), std::end(ix), ", "), shape_, d));
      off += ix[d] * strides_[d];
    }
    return ref_at(off);
  }

  /// Elements start, start+step, ... < stop of dimension `d` (Python's d[start:stop:step]);
  /// start/stop are clamped to [0, dim(d)], as Python does; step must be positive.
  TensorView slice(int d, std::int64_t start, std::int64_t stop, std::int64_t step = 1) const {
    check_dim(d, "slice");
    if (step <= 0) throw_error(errc::invalid_argument, fmt::format("slice step {} must be positive (shape {})", step, shape_));
    const std::int64_t n = shape_[d];
    start = std::clamp<std::int64_t>(start, 0, n);
    stop = std::clamp<std::int64_t>(stop, start, n);
    TensorView v = *this;
    v.offset_ += start * strides_[d];
    v.shape_[d] = (stop - start + step - 1) / step;
    v.strides_[d] *= step;
    return v;
  }
  /// The sub-tensor at `index` along dimension `d`, which is removed (rank - 1).
  TensorView select(int d, std::int64_t index) const {
    check_dim(d, "select");
    if (index < 0 || index >= shape_[d])
      throw_error(errc::out_of_range, fmt::format("select index {} out of range for dimension {} of shape {}", index, d, shape_));
    TensorView v = *this;
    v.offset_ += index * strides_[d];
    v.shape_.erase(d);
    v.strides_.erase(d);
    return v;
  }
  /// select(0, index): row `index` of a matrix, matrix `index` of a batch.
  TensorView operator[](std::int64_t index) const { return select(0, index); }

  /// The same elements under another shape with the same element count; one extent may be -1
  /// (inferred). The view must be contiguous: otherwise call contiguous() first.
  TensorView reshape(Shape new_shape) const {
    int infer = -1;
    std::int64_t known = 1;
    for (int d = 0; d < new_shape.rank(); ++d) {
      if (new_shape[d] == -1) {
        if (infer >= 0) throw_error(errc::shape_mismatch, fmt::format("reshape of {} to {}: more than one -1", shape_, new_shape));
        infer = d;
      } else if (new_shape[d] < 0) {
        throw_error(errc::shape_mismatch, fmt::format("reshape of {} to {}: negative extent", shape_, new_shape));
      } else {
        auto k = checked_mul(known, new_shape[d]);
        if (!k) throw_error(errc::shape_mismatch, fmt::format("reshape of {} to {}: element count overflows", shape_, new_shape));
        known = *k;
      }
    }
    const std::int64_t n = numel();
    if (infer >= 0) {
      if (known == 0 || n % known != 0)
        throw_error(errc::shape_mismatch, fmt::format("reshape of {} ({} elements) to {}: -1 cannot be inferred", shape_, n, new_shape));
      new_shape[infer] = n / known;
      known = n;
    }
    if (known != n)
      throw_error(errc::shape_mismatch, fmt::format("reshape of {} ({} elements) to {} ({} elements)", shape_, n, new_shape, known));
    if (!is_contiguous())
      throw_error(errc::shape_mismatch, fmt::format("reshape of a non-contiguous view (shape {}, strides {}) to {}; call contiguous() first", shape_, strides_, new_shape));
    return TensorView(data_, new_shape, contiguous_strides(new_shape), offset_);
  }
  /// Swaps dimensions a and b (a view; no data moves).
  TensorView transpose(int a, int b) const {
    check_dim(a, "transpose");
    check_dim(b, "transpose");
    TensorView v = *this;
    std::swap(v.shape_[a], v.shape_[b]);
    std::swap(v.strides_[a], v.strides_[b]);
    return v;
  }
  /// The matrix transpose of a rank-2 view.
  TensorView t() const {
    if (rank() != 2) throw_error(errc::shape_mismatch, fmt::format("t() needs a matrix; shape is {}", shape_));
    return transpose(0, 1);
  }
  /// Reorders dimensions: result dimension i is this view's dimension order[i].
  TensorView permute(const Dims& order) const {
    if (order.rank() != rank()) throw_error(errc::shape_mismatch, fmt::format("permute {} of shape {}: rank differs", order, shape_));
    bool seen[kMaxRank] = {};
    TensorView v = *this;
    for (int i = 0; i < rank(); ++i) {
      const std::int64_t d = order[i];
      if (d < 0 || d >= rank() || seen[d]) throw_error(errc::invalid_argument, fmt::format("permute {} of shape {}: not a permutation", order, shape_));
      seen[d] = true;
      v.shape_[i] = shape_[static_cast<int>(d)];
      v.strides_[i] = strides_[static_cast<int>(d)];
    }
    return v;
  }

  /// An owning, row-major copy of the viewed elements.
  Tensor<value_type> contiguous() const;

  /// Sets every viewed element to `v`.
  void fill(value_type v) const
    requires(!is_const)
  {
    detail::for_each_offset(shape_, strides_, offset_, [&](std::int64_t off) { ref_at(off) = v; });
  }
  /// Copies `src` element by element into this view; the shapes must be equal.
  void copy_from(TensorView<const value_type> src) const
    requires(!is_const)
  {
    if (src.shape() != shape_)
      throw_error(errc::shape_mismatch, fmt::format("copy_from: source shape {} differs from destination shape {}", src.shape(), shape_));
    if constexpr (!packed) {
      if (is_contiguous() && src.is_contiguous()) {
        if (const std::int64_t n = numel()) std::memmove(data(), src.data(), static_cast<std::size_t>(n) * sizeof(T));
        return;
      }
    }
    // Walk both layouts in the same index order.
    Tensor<value_type> staged = src.contiguous();
    const auto* flat = staged.storage();
    std::int64_t i = 0;
    detail::for_each_offset(shape_, strides_, offset_, [&](std::int64_t off) {
      if constexpr (packed)
        ref_at(off) = value_type::from_nibble(static_cast<std::uint8_t>((flat[i >> 1] >> ((i & 1) * 4)) & 0xf));
      else
        ref_at(off) = flat[i];
      ++i;
    });
  }

 private:
  template <Element U>
  friend class TensorView;

  reference ref_at(std::int64_t off) const noexcept {
    if constexpr (packed) {
      if constexpr (is_const)
        return value_type::from_nibble(static_cast<std::uint8_t>((data_[off >> 1] >> ((off & 1) * 4)) & 0xf));
      else
        return detail::PackedRef<value_type>(data_ + (off >> 1), static_cast<int>((off & 1) * 4));
    } else {
      return data_[off];
    }
  }
  void check_dim(int d, const char* what) const {
    if (d < 0 || d >= rank())
      throw_error(errc::out_of_range, fmt::format("{}: dimension {} does not exist in shape {} (rank {})", what, d, shape_, rank()));
  }

  storage_type* data_ = nullptr;
  Shape shape_{0};
  Strides strides_{1};
  std::int64_t offset_ = 0;
};

/// An owning, 64-byte aligned, row-major tensor in host memory. Move-only: copy explicitly with
/// clone(). It converts to TensorView<T> / TensorView<const T>, and forwards the view operations.
template <Element T>
class Tensor<T, cpu> {
  static_assert(!std::is_const_v<T>, "Tensor<const T> is not a thing; use TensorView<const T>");

 public:
  using value_type = T;                                          ///< the element type
  using backend = cpu;                                           ///< the backend tag
  using view_type = TensorView<T>;                               ///< a mutable view of it
  using const_view_type = TensorView<const T>;                   ///< a read-only view of it
  using storage_type = typename dtype_traits<T>::storage_type;   ///< T, or uint8_t for packed types

  /// An empty tensor of shape [0].
  Tensor() = default;
  /// A zero-filled tensor of `shape`; throws quarry::error on a bad shape, std::bad_alloc when
  /// memory runs out.
  explicit Tensor(Shape shape) : Tensor(shape, uninit_tag{}) { buffer_.zero(); }
  /// A tensor of `shape` holding `values` in row-major order; their count must equal numel.
  Tensor(Shape shape, std::initializer_list<T> values) : Tensor(shape) {
    if (static_cast<std::int64_t>(values.size()) != numel())
      throw_error(errc::shape_mismatch, fmt::format("{} values given for shape {} ({} elements)", values.size(), shape, numel()));
    std::int64_t i = 0;
    for (const T& v : values) flat(i++) = v;
  }
  /// A tensor of `shape` whose contents are unspecified (faster when every element is written next).
  static Tensor uninitialized(Shape shape) { return Tensor(shape, uninit_tag{}); }
  /// A tensor of `shape` with every element equal to `v`.
  static Tensor full(Shape shape, T v) {
    Tensor t = uninitialized(shape);
    t.view().fill(v);
    return t;
  }

  /// Moves the memory; the source is left empty.
  ///@{
  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;
  ///@}
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;
  /// A deep copy.
  Tensor clone() const {
    Tensor t = uninitialized(shape_);
    if (buffer_.size()) std::memcpy(t.buffer_.data(), buffer_.data(), buffer_.size());
    return t;
  }

  /// A view of the whole tensor (not of a temporary: it would dangle).
  ///@{
  view_type view() & { return view_type(storage(), shape_); }
  const_view_type view() const& { return const_view_type(storage(), shape_); }
  ///@}
  view_type view() && = delete;  // would dangle
  /// Converts to a view, so a Tensor can be passed where a TensorView is taken.
  ///@{
  operator view_type() & { return view(); }              // NOLINT: implicit by design
  operator const_view_type() const& { return view(); }   // NOLINT: implicit by design
  ///@}
  operator view_type() && = delete;
  operator const_view_type() const&& = delete;

  /// Number of dimensions.
  int rank() const noexcept { return shape_.rank(); }
  /// Extent of each dimension.
  const Shape& shape() const noexcept { return shape_; }
  /// Row-major strides of shape(), in elements.
  Strides strides() const noexcept { return contiguous_strides(shape_); }
  /// Extent of dimension `d`; throws when `d` is not in [0, rank).
  std::int64_t dim(int d) const { return view().dim(d); }
  /// Number of elements.
  std::int64_t numel() const noexcept { return *shape_.checked_numel(); }
  /// True when numel() is 0.
  bool empty() const noexcept { return numel() == 0; }
  /// Bytes of storage (packed types: half a byte per element, rounded up).
  std::size_t nbytes() const noexcept { return buffer_.size(); }
  /// The first element's storage (packed types: the first byte), 64-byte aligned.
  ///@{
  storage_type* storage() noexcept { return reinterpret_cast<storage_type*>(buffer_.data()); }
  const storage_type* storage() const noexcept { return reinterpret_cast<const storage_type*>(buffer_.data()); }
  storage_type* data() noexcept { return storage(); }
  const storage_type* data() const noexcept { return storage(); }
  ///@}
  /// All elements in row-major order (not for packed types).
  ///@{
  std::span<T> span() noexcept requires(!is_packed_v<T>) { return {data(), static_cast<std::size_t>(numel())}; }
  std::span<const T> span() const noexcept requires(!is_packed_v<T>) { return {data(), static_cast<std::size_t>(numel())}; }
  ///@}

  /// Element (i, j, ...), unchecked: as TensorView::operator().
  ///@{
  template <std::integral... I>
  typename view_type::reference operator()(I... idx) noexcept { return view()(idx...); }
  template <std::integral... I>
  typename const_view_type::reference operator()(I... idx) const noexcept { return view()(idx...); }
  ///@}
  /// Element (i, j, ...), bounds-checked: as TensorView::at().
  ///@{
  template <std::integral... I>
  typename view_type::reference at(I... idx) { return view().at(idx...); }
  template <std::integral... I>
  typename const_view_type::reference at(I... idx) const { return view().at(idx...); }
  ///@}

  /// A view of elements start, start + step, ... before stop along dimension d: as TensorView::slice().
  ///@{
  view_type slice(int d, std::int64_t start, std::int64_t stop, std::int64_t step = 1) & { return view().slice(d, start, stop, step); }
  const_view_type slice(int d, std::int64_t start, std::int64_t stop, std::int64_t step = 1) const& { return view().slice(d, start, stop, step); }
  ///@}
  /// A view of index `index` of dimension d, one rank lower: as TensorView::select().
  ///@{
  view_type select(int d, std::int64_t index) & { return view().select(d, index); }
  const_view_type select(int d, std::int64_t index) const& { return view().select(d, index); }
  ///@}
  /// select(0, index): row `index`.
  ///@{
  view_type operator[](std::int64_t index) & { return view()[index]; }
  const_view_type operator[](std::int64_t index) const& { return view()[index]; }
  ///@}
  /// A view with shape `s` (same element count): as TensorView::reshape().
  ///@{
  view_type reshape(Shape s) & { return view().reshape(s); }
  const_view_type reshape(Shape s) const& { return view().reshape(s); }
  ///@}
  /// A view with dimensions a and b swapped: as TensorView::transpose().
  ///@{
  view_type transpose(int a, int b) & { return view().transpose(a, b); }
  const_view_type transpose(int a, int b) const& { return view().transpose(a, b); }
  ///@}
  /// The transposed view of a matrix: as TensorView::t().
  ///@{
  view_type t() & { return view().t(); }
  const_view_type t() const& { return view().t(); }
  ///@}
  /// A view with the dimensions in `order`: as TensorView::permute().
  ///@{
  view_type permute(const Dims& order) & { return view().permute(order); }
  const_view_type permute(const Dims& order) const& { return view().permute(order); }
  ///@}
  /// An owning copy (a Tensor is always contiguous; this is clone()).
  Tensor contiguous() const { return clone(); }

  /// Gives this tensor a new shape with the same element count, keeping the data.
  void reshape_in_place(Shape s) { shape_ = view().reshape(s).shape(); }

 private:
  struct uninit_tag {};
  Tensor(Shape shape, uninit_tag) : shape_(shape), buffer_(static_cast<std::size_t>(bytes_for(shape))) {}

  static std::int64_t bytes_for(const Shape& shape) {
    const std::int64_t n = numel_of(shape);
    if (n > (std::int64_t{1} << 60))
      throw_error(errc::out_of_range, fmt::format("shape {} has {} elements; more than quarry allocates", shape, n));
    return storage_bytes<T>(n);
  }
  typename view_type::reference flat(std::int64_t i) noexcept {
    if constexpr (is_packed_v<T>)
      return detail::PackedRef<T>(storage() + (i >> 1), static_cast<int>((i & 1) * 4));
    else
      return storage()[i];
  }

  Shape shape_{0};
  AlignedBuffer buffer_;
};

template <Element T>
Tensor<std::remove_const_t<T>> TensorView<T>::contiguous() const {
  Tensor<value_type> out = Tensor<value_type>::uninitialized(shape_);
  if constexpr (!packed) {
    if (is_contiguous()) {
      if (const std::int64_t n = numel()) std::memcpy(out.data(), data(), static_cast<std::size_t>(n) * sizeof(T));
      return out;
    }
    value_type* dst = out.data();
    detail::for_each_offset(shape_, strides_, offset_, [&](std::int64_t off) { *dst++ = data_[off]; });
  } else {
    auto* dst = out.storage();
    // Zero every byte, the pad nibble of an odd element count included (filling the view's
    // elements would leave it as the allocator left it).
    if (const std::int64_t n = numel()) std::memset(dst, 0, static_cast<std::size_t>(storage_bytes<T>(n)));
    std::int64_t i = 0;
    detail::for_each_offset(shape_, strides_, offset_, [&](std::int64_t off) {
      const auto nib = static_cast<std::uint8_t>((data_[off >> 1] >> ((off & 1) * 4)) & 0xf);
      dst[i >> 1] = static_cast<std::uint8_t>(dst[i >> 1] | (nib << ((i & 1) * 4)));
      ++i;
    });
  }
  return out;
}

}  // namespace quarry
