// The free pages of a BlockPool (quarry/kv/block_pool.hpp), handed out so that a sequence's
// pages tend to lie side by side in memory. Internal: BlockPool holds one.
#pragma once

#include <cstdint>
#include <vector>

namespace quarry::detail {

// The pages are cut into extents of `extent` pages (pages [k * extent, (k + 1) * extent), the
// last one maybe shorter). A page for a sequence is, in this order: the page after the
// sequence's last one, when free; else the first free page of the extent with the most free
// pages (a wholly free one when there is one; among equals, the one whose count changed last).
// Nothing is reserved: every free page can go to any sequence, and the count of free pages is
// exact. With extent 1, a plain stack (the last freed page first). O(1) per call.
class FreePages {
 public:
  static constexpr std::int64_t kMaxExtent = 64;  ///< an extent's free pages are one 64-bit mask

  FreePages() = default;
  /// Pages 0 .. num_pages - 1 (< 2^31), all free; 1 <= extent <= kMaxExtent. Page 0 is handed
  /// out first.
  FreePages(std::int64_t num_pages, std::int64_t extent);

  std::int64_t size() const noexcept { return free_; }  ///< free pages
  /// Marks `page` (in range, not free) free. Never allocates.
  void put(std::int32_t page) noexcept;
  /// Takes a free page, following `after` (a page of the sequence it is for, its last; -1: none)
  /// as above; -1 when none is free.
  std::int32_t take(std::int32_t after) noexcept;

 private:
  void unlink(std::int32_t k, int count) noexcept;  // from the list of extents with `count` free pages
  void link(std::int32_t k, int count) noexcept;    // to its front
  void remove(std::int32_t page) noexcept;

  std::int64_t num_pages_ = 0;
  std::int64_t extent_ = 1;
  std::int64_t free_ = 0;
  std::int64_t top_ = 0;               // no extent has more free pages than this
  std::vector<std::uint64_t> mask_;    // extent -> its free pages (bit i: page k * extent + i)
  std::vector<std::int32_t> next_;     // the lists of extents by free count, doubly linked
  std::vector<std::int32_t> prev_;
  std::vector<std::int32_t> head_;     // free count (1 .. extent) -> first extent of its list; -1: none
};

}  // namespace quarry::detail
