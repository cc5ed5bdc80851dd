// The free pages of a BlockPool (quarry/kv/block_pool.hpp), handed out so that a sequence's
// pages tend to lie side by side in memory. Internal: BlockPool holds one.
#pragma once

#include <cstdint>
#include <vector>

namespace quarry::detail {

// A page for a sequence is, in this order: the page after the sequence's last one, when free;
// else the first page of an extent (pages [k * extent, (k + 1) * extent)) whose pages are all
// free; else any free page (the last freed). Nothing is reserved: every free page can go to any
// sequence, and the count of free pages is exact. With extent 1, a plain stack.
class FreePages {
 public:
  FreePages() = default;
  /// Pages 0 .. num_pages - 1, all free; extent >= 1. Page 0 is handed out first.
  FreePages(std::int64_t num_pages, std::int64_t extent);

  std::int64_t size() const noexcept { return static_cast<std::int64_t>(stack_.size()); }  ///< free pages
  /// Marks `page` (in range, not free) free. Never allocates.
  void put(std::int32_t page) noexcept;
  /// Takes a free page, following `after` (a page of the sequence it is for, its last; -1: none)
  /// as above; -1 when none is free.
  std::int32_t take(std::int32_t after);

 private:
  void remove(std::int32_t page) noexcept;
  std::int64_t extent_size(std::int64_t k) const noexcept;

  std::int64_t num_pages_ = 0;
  std::int64_t extent_ = 1;
  std::vector<std::int32_t> stack_;     // the free pages; the last freed at the back
  std::vector<std::int32_t> pos_;       // page -> its index in stack_; -1: not free
  std::vector<std::int32_t> free_in_;   // extent -> its free pages
  std::vector<std::int32_t> whole_;     // extents that were wholly free when listed (checked when taken)
  std::vector<std::uint8_t> listed_;    // extent -> in whole_
};

}  // namespace quarry::detail
