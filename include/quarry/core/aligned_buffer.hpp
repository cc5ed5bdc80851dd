// 64-byte aligned host allocation: one cache line, and a whole AVX-512 register.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>

namespace quarry {

/// Alignment of every buffer quarry allocates on the host, in bytes.
inline constexpr std::size_t kHostAlignment = 64;

namespace detail {
struct AlignedDelete {
  void operator()(std::byte* p) const noexcept { ::operator delete(p, std::align_val_t{kHostAlignment}); }
};
}  // namespace detail

/// An owning, 64-byte aligned block of raw bytes. Move-only.
class AlignedBuffer {
 public:
  AlignedBuffer() noexcept = default;
  /// Allocates `bytes` bytes (uninitialised); throws std::bad_alloc when memory runs out.
  explicit AlignedBuffer(std::size_t bytes)
      : data_(bytes ? static_cast<std::byte*>(::operator new(bytes, std::align_val_t{kHostAlignment})) : nullptr),
        size_(bytes) {}

  /// The first byte (64-byte aligned); null when empty.
  ///@{
  std::byte* data() noexcept { return data_.get(); }
  const std::byte* data() const noexcept { return data_.get(); }
  ///@}
  /// Bytes held.
  std::size_t size() const noexcept { return size_; }
  /// Sets every byte to zero.
  void zero() noexcept {
    if (size_) std::memset(data_.get(), 0, size_);
  }

 private:
  std::unique_ptr<std::byte, detail::AlignedDelete> data_;
  std::size_t size_ = 0;
};

}  // namespace quarry
