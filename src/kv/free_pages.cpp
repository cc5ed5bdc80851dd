#include "quarry/kv/detail/free_pages.hpp"

#include <algorithm>

namespace quarry::detail {

FreePages::FreePages(std::int64_t num_pages, std::int64_t extent) : num_pages_(num_pages), extent_(std::max<std::int64_t>(1, extent)) {
  const std::int64_t extents = num_pages / extent_ + (num_pages % extent_ != 0);
  // Every vector at its largest size from the start: put never allocates.
  stack_.reserve(static_cast<std::size_t>(num_pages));
  whole_.reserve(static_cast<std::size_t>(extents));
  pos_.resize(static_cast<std::size_t>(num_pages));
  for (std::int64_t p = num_pages - 1; p >= 0; --p) {  // page 0 on top
    pos_[static_cast<std::size_t>(p)] = static_cast<std::int32_t>(stack_.size());
    stack_.push_back(static_cast<std::int32_t>(p));
  }
  free_in_.resize(static_cast<std::size_t>(extents));
  listed_.assign(static_cast<std::size_t>(extents), 0);
  for (std::int64_t k = extents - 1; k >= 0; --k) {  // extent 0 on top
    free_in_[static_cast<std::size_t>(k)] = static_cast<std::int32_t>(extent_size(k));
    if (extent_ > 1) {
      whole_.push_back(static_cast<std::int32_t>(k));
      listed_[static_cast<std::size_t>(k)] = 1;
    }
  }
}

std::int64_t FreePages::extent_size(std::int64_t k) const noexcept { return std::min(extent_, num_pages_ - k * extent_); }

void FreePages::put(std::int32_t page) noexcept {
  pos_[static_cast<std::size_t>(page)] = static_cast<std::int32_t>(stack_.size());
  stack_.push_back(page);
  const std::int64_t k = page / extent_;
  const auto ks = static_cast<std::size_t>(k);
  if (++free_in_[ks] == extent_size(k) && extent_ > 1 && listed_[ks] == 0) {
    whole_.push_back(static_cast<std::int32_t>(k));
    listed_[ks] = 1;
  }
}

void FreePages::remove(std::int32_t page) noexcept {
  const auto i = static_cast<std::size_t>(pos_[static_cast<std::size_t>(page)]);
  const std::int32_t last = stack_.back();
  stack_[i] = last;
  pos_[static_cast<std::size_t>(last)] = static_cast<std::int32_t>(i);
  stack_.pop_back();
  pos_[static_cast<std::size_t>(page)] = -1;
  --free_in_[static_cast<std::size_t>(page / extent_)];
}

std::int32_t FreePages::take(std::int32_t after) {
  if (stack_.empty()) return -1;
  if (after >= 0 && after + 1 < num_pages_ && pos_[static_cast<std::size_t>(after) + 1] >= 0) {
    remove(after + 1);
    return after + 1;
  }
  while (!whole_.empty()) {
    const std::int32_t k = whole_.back();
    whole_.pop_back();
    listed_[static_cast<std::size_t>(k)] = 0;
    if (free_in_[static_cast<std::size_t>(k)] == extent_size(k)) {
      const auto page = static_cast<std::int32_t>(k * extent_);
      remove(page);
      return page;
    }
  }
  const std::int32_t page = stack_.back();
  remove(page);
  return page;
}

}  // namespace quarry::detail
