// Tensor<T, cuda>: an owning, row-major tensor in CUDA device memory. Part of quarry::cuda.
//
// It mirrors Tensor<T, cpu> where that makes sense on a device: shape, numel, nbytes, a device
// data() pointer, move-only with an explicit clone(). Data moves between host and device only
// through the named copies (from_host, copy_from_host, copy_to_host, to_host), which take any
// host view, strided or packed. Every element type works, packed int4/uint4 included (two
// elements per byte, low nibble first; nbytes() == storage_bytes<T>(numel())).
//
// Everything runs in order on the legacy default stream: copies to the host return when the
// data has arrived, and from a host view when it has been read; device-to-device copies and
// zero() may still be running on the device when they return. Errors throw quarry::error:
// shape errors name both shapes; CUDA errors name the tensor's type and shape, the operation,
// and the CUDA error (name and description). No CUDA header is included here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>
#include <type_traits>
#include <utility>

#include <fmt/format.h>

#include "quarry/core/backend.hpp"
#include "quarry/core/cuda_device.hpp"
#include "quarry/core/dtype.hpp"
#include "quarry/core/shape.hpp"
#include "quarry/core/status.hpp"
#include "quarry/core/tensor.hpp"

namespace quarry {

namespace detail {

/// An owning block of memory on one CUDA device. Move-only; freeing never throws.
class DeviceBuffer {
 public:
  /// Holds nothing (device() is -1).
  DeviceBuffer() noexcept = default;
  /// `bytes` of uninitialised memory on device `device` (-1: the current device). Zero bytes
  /// allocate nothing and touch no CUDA API. Errors: out_of_memory, device_error.
  static result<DeviceBuffer> allocate(std::size_t bytes, int device = -1);

  /// Takes over `other`'s memory; `other` then holds nothing.
  DeviceBuffer(DeviceBuffer&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)),
        device_(std::exchange(other.device_, -1)) {}
  /// Frees this buffer's memory and takes over `other`'s.
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      release();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
      device_ = std::exchange(other.device_, -1);
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() { release(); }

  /// The device pointer; null when size() is 0.
  void* data() const noexcept { return data_; }
  /// Bytes held.
  std::size_t size() const noexcept { return size_; }
  /// The ordinal of the device holding the memory; -1 when nothing is held.
  int device() const noexcept { return device_; }

 private:
  DeviceBuffer(void* data, std::size_t size, int device) noexcept : data_(data), size_(size), device_(device) {}
  /// cudaFree on the owning device; errors are ignored (the runtime may already be unloading).
  void release() noexcept;

  void* data_ = nullptr;
  std::size_t size_ = 0;
  int device_ = -1;
};

/// Copies `bytes` bytes of host memory to device memory of device `device`.
status cuda_copy_host_to_device(void* dst_device, const void* src_host, std::size_t bytes, int device);
/// Copies `bytes` bytes of device memory of device `device` to host memory.
status cuda_copy_device_to_host(void* dst_host, const void* src_device, std::size_t bytes, int device);
/// Copies `bytes` bytes between device allocations, on one device or between two.
status cuda_copy_device_to_device(void* dst, int dst_device, const void* src, int src_device, std::size_t bytes);
/// Sets `bytes` bytes of device memory of device `device` to zero.
status cuda_zero(void* dst_device, std::size_t bytes, int device);

/// Throws quarry::error with `st`'s code and "context: message".
[[noreturn]] inline void throw_in_context(const status& st, std::string_view context) {
  throw_error(st.code(), fmt::format("{}: {}", context, st.message()));
}

}  // namespace detail

/// An owning, row-major tensor in the memory of one CUDA device. Move-only: copy explicitly
/// with clone(). Host code cannot dereference data(); move data with the copy functions.
template <Element T>
class Tensor<T, cuda> {
  static_assert(!std::is_const_v<T>, "Tensor<const T, cuda> is not a thing");

 public:
  using value_type = T;   ///< the element type
  using backend = cuda;   ///< the backend tag
  /// What device memory holds: T, or uint8_t (two elements per byte) for packed types.
  using storage_type = typename dtype_traits<T>::storage_type;
  /// The host tensor with the same element type.
  using host_type = Tensor<T, cpu>;

  /// An empty tensor of shape [0]; allocates nothing.
  Tensor() = default;
  /// A zero-filled tensor of `shape` on the current device. Throws quarry::error naming the
  /// shape: invalid_argument / out_of_range for a bad shape, out_of_memory or device_error
  /// (with the CUDA error) when the device refuses.
  explicit Tensor(Shape shape) : Tensor(uninitialized(shape)) { zero(); }
  /// A tensor of `shape` whose contents are unspecified, on device `device` (-1: the current one).
  static Tensor uninitialized(Shape shape, int device = -1) { return allocate(shape, device, "uninitialized"); }
  /// A tensor of `shape` on the current device with every element equal to `value`.
  static Tensor full(Shape shape, T value) {
    host_type host = host_type::full(shape, value);
    return from_host(host.view());
  }
  /// A device copy of the host view `src` (any strides), on the current device.
  static Tensor from_host(TensorView<const T> src) {
    Tensor t = allocate(src.shape(), -1, "from_host");
    t.upload(src, "from_host");
    return t;
  }

  /// Takes over `other`'s memory; `other` becomes an empty tensor of shape [0].
  Tensor(Tensor&& other) noexcept : shape_(std::exchange(other.shape_, Shape{0})), buffer_(std::move(other.buffer_)) {}
  /// Frees this tensor's memory and takes over `other`'s; `other` becomes empty.
  Tensor& operator=(Tensor&& other) noexcept {
    if (this != &other) {
      shape_ = std::exchange(other.shape_, Shape{0});
      buffer_ = std::move(other.buffer_);
    }
    return *this;
  }
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;
  ~Tensor() = default;

  /// A deep copy on the same device (device to device; the host is not involved).
  Tensor clone() const {
    Tensor t = allocate(shape_, buffer_.device(), "clone");
    t.copy_from(*this);
    return t;
  }
  /// Copies the device tensor `src` (same shape, any device) into this one.
  void copy_from(const Tensor& src) {
    if (src.shape_ != shape_)
      throw_error(errc::shape_mismatch, fmt::format("{}::copy_from: source shape {} differs from destination shape {}", type_name(), src.shape_, shape_));
    if (&src == this || nbytes() == 0) return;
    const status st = detail::cuda_copy_device_to_device(buffer_.data(), buffer_.device(), src.buffer_.data(), src.buffer_.device(), nbytes());
    if (!st.ok()) detail::throw_in_context(st, context("copy_from"));
  }
  /// Copies the host view `src` (same shape, any strides) into this tensor.
  void copy_from_host(TensorView<const T> src) {
    if (src.shape() != shape_)
      throw_error(errc::shape_mismatch, fmt::format("{}::copy_from_host: host shape {} differs from device shape {}", type_name(), src.shape(), shape_));
    upload(src, "copy_from_host");
  }
  /// Copies this tensor into the host view `dst` (same shape, any strides). Elements outside
  /// `dst` are left alone, including the other nibble of a byte `dst` shares.
  void copy_to_host(TensorView<T> dst) const {
    if (dst.shape() != shape_)
      throw_error(errc::shape_mismatch, fmt::format("{}::copy_to_host: host shape {} differs from device shape {}", type_name(), dst.shape(), shape_));
    if (numel() == 0) return;
    if (is_byte_exact(dst)) {
      download(dst.data(), "copy_to_host");
    } else {
      host_type staged = host_type::uninitialized(shape_);
      download(staged.data(), "copy_to_host");
      dst.copy_from(staged.view());
    }
  }
  /// A host copy of this tensor.
  host_type to_host() const {
    host_type out = host_type::uninitialized(shape_);
    download(out.data(), "to_host");
    return out;
  }
  /// Sets every element (and the pad nibble of an odd packed count) to zero.
  void zero() {
    const status st = detail::cuda_zero(buffer_.data(), nbytes(), buffer_.device());
    if (!st.ok()) detail::throw_in_context(st, context("zero"));
  }

  /// Number of dimensions.
  int rank() const noexcept { return shape_.rank(); }
  /// Extents, outermost first.
  const Shape& shape() const noexcept { return shape_; }
  /// Row-major element strides.
  Strides strides() const noexcept { return contiguous_strides(shape_); }
  /// Extent of dimension `d`; throws when `d` is not in [0, rank).
  std::int64_t dim(int d) const {
    if (d < 0 || d >= rank())
      throw_error(errc::out_of_range, fmt::format("{}::dim: dimension {} does not exist in shape {} (rank {})", type_name(), d, shape_, rank()));
    return shape_[d];
  }
  /// Number of elements.
  std::int64_t numel() const noexcept { return *shape_.checked_numel(); }
  /// True when numel() is 0.
  bool empty() const noexcept { return numel() == 0; }
  /// Bytes of device storage: storage_bytes<T>(numel()).
  std::size_t nbytes() const noexcept { return buffer_.size(); }
  /// The device pointer to element 0 (null when empty); not dereferenceable on the host.
  ///@{
  storage_type* data() noexcept { return static_cast<storage_type*>(buffer_.data()); }
  const storage_type* data() const noexcept { return static_cast<const storage_type*>(buffer_.data()); }
  ///@}
  /// Same as data(), named as Tensor<T, cpu> names it.
  ///@{
  storage_type* storage() noexcept { return data(); }
  const storage_type* storage() const noexcept { return data(); }
  ///@}
  /// The ordinal of the device holding the data; -1 when no memory is held (empty tensors).
  int device() const noexcept { return buffer_.device(); }

  /// Gives this tensor a new shape with the same element count, keeping the data; one extent
  /// may be -1 (inferred).
  void reshape_in_place(Shape s) {
    // The host reshape rules and messages, applied to a data-less view.
    shape_ = TensorView<const T>(nullptr, shape_).reshape(s).shape();
  }

 private:
  /// "Tensor<f32, cuda>".
  static std::string type_name() { return fmt::format("Tensor<{}, cuda>", dtype_name(dtype_of<T>)); }
  std::string context(std::string_view op) const { return fmt::format("{}::{} of shape {}", type_name(), op, shape_); }

  static Tensor allocate(const Shape& shape, int device, std::string_view op) {
    const std::int64_t n = numel_of(shape);
    if (n > (std::int64_t{1} << 60))
      throw_error(errc::out_of_range, fmt::format("{}::{}: shape {} has {} elements; more than quarry allocates", type_name(), op, shape, n));
    auto buffer = detail::DeviceBuffer::allocate(static_cast<std::size_t>(storage_bytes<T>(n)), device);
    if (!buffer.ok()) detail::throw_in_context(buffer.status(), fmt::format("{}::{} of shape {}", type_name(), op, shape));
    Tensor t;
    t.shape_ = shape;
    t.buffer_ = std::move(*buffer);
    return t;
  }
  /// True when a host view's bytes are exactly this tensor's bytes: contiguous and, for packed
  /// types, starting on a byte boundary with an even count (so no byte is shared with elements
  /// outside the view, and the pad nibble of an odd count is defined as zero by staging).
  static bool is_byte_exact(const TensorView<const T>& v) noexcept {
    if (!v.is_contiguous()) return false;
    if constexpr (is_packed_v<T>) return v.offset() % 2 == 0 && v.numel() % 2 == 0;
    return true;
  }
  void upload(TensorView<const T> src, std::string_view op) {
    if (numel() == 0) return;
    const status st = is_byte_exact(src)
                          ? detail::cuda_copy_host_to_device(buffer_.data(), src.data(), nbytes(), buffer_.device())
                          : upload_staged(src);
    if (!st.ok()) detail::throw_in_context(st, context(op));
  }
  status upload_staged(TensorView<const T> src) {
    const host_type staged = src.contiguous();  // row-major, pad nibble zero
    return detail::cuda_copy_host_to_device(buffer_.data(), staged.data(), nbytes(), buffer_.device());
  }
  void download(storage_type* dst_host, std::string_view op) const {
    if (nbytes() == 0) return;
    const status st = detail::cuda_copy_device_to_host(dst_host, buffer_.data(), nbytes(), buffer_.device());
    if (!st.ok()) detail::throw_in_context(st, context(op));
  }

  Shape shape_{0};
  detail::DeviceBuffer buffer_;
};

/// A device copy of the host view `src` on the current device (Tensor<T, cuda>::from_host).
template <Element T>
Tensor<std::remove_const_t<T>, cuda> to_device(TensorView<T> src) {
  return Tensor<std::remove_const_t<T>, cuda>::from_host(src);
}
/// A device copy of the host tensor `src` on the current device.
template <Element T>
Tensor<T, cuda> to_device(const Tensor<T, cpu>& src) {
  return Tensor<T, cuda>::from_host(src.view());
}
/// A host copy of the device tensor `src` (Tensor<T, cuda>::to_host).
template <Element T>
Tensor<T, cpu> to_host(const Tensor<T, cuda>& src) {
  return src.to_host();
}

}  // namespace quarry
