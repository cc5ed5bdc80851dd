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

/// Buffers of at least this many bytes are aligned to it and asked to be backed by huge pages
/// (Linux transparent huge pages, `madvise(MADV_HUGEPAGE)`; nothing elsewhere or when THP is
/// off). Weights and K/V pools are streamed or read in scattered pages every token: with 4 KiB
/// pages each 4 KiB costs a TLB miss and stops the hardware prefetchers at the page's end.
inline constexpr std::size_t kHugePageBytes = std::size_t{2} << 20;

namespace detail {
/// The alignment of an allocation of `bytes` bytes (see kHugePageBytes).
constexpr std::size_t host_alignment_for(std::size_t bytes) noexcept {
  return bytes >= kHugePageBytes ? kHugePageBytes : kHostAlignment;
}
/// Asks the OS to back [p, p + bytes) with huge pages; p is kHugePageBytes-aligned. Advice only:
/// failure (THP off, an old kernel) changes nothing. Defined in src/core/aligned_buffer.cpp.
void advise_huge_pages(void* p, std::size_t bytes) noexcept;

struct AlignedDelete {
  std::size_t alignment = kHostAlignment;
  void operator()(std::byte* p) const noexcept { ::operator delete(p, std::align_val_t{alignment}); }
};
}  // namespace detail

/// An owning, 64-byte aligned block of raw bytes. Move-only.
class AlignedBuffer {
 public:
  AlignedBuffer() noexcept = default;
  /// Allocates `bytes` bytes (uninitialised); throws std::bad_alloc when memory runs out. From
  /// kHugePageBytes up the block is aligned to that and advised to be backed by huge pages.
  explicit AlignedBuffer(std::size_t bytes)
      : data_(allocate(bytes), detail::AlignedDelete{detail::host_alignment_for(bytes)}), size_(bytes) {}

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
  static std::byte* allocate(std::size_t bytes) {
    if (!bytes) return nullptr;
    const std::size_t alignment = detail::host_alignment_for(bytes);
    auto* p = static_cast<std::byte*>(::operator new(bytes, std::align_val_t{alignment}));
    if (alignment == kHugePageBytes) detail::advise_huge_pages(p, bytes);
    return p;
  }

  std::unique_ptr<std::byte, detail::AlignedDelete> data_;
  std::size_t size_ = 0;
};

}  // namespace quarry
