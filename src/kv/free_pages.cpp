#include "quarry/kv/detail/free_pages.hpp"

#include <algorithm>
#include <bit>

namespace quarry::detail {

FreePages::FreePages(std::int64_t num_pages, std::int64_t extent)
    : num_pages_(num_pages), extent_(std::clamp<std::int64_t>(extent, 1, kMaxExtent)), free_(num_pages) {
  const std::int64_t extents = num_pages / extent_ + (num_pages % extent_ != 0);
  mask_.resize(static_cast<std::size_t>(extents));
  next_.assign(static_cast<std::size_t>(extents), -1);
  prev_.assign(static_cast<std::size_t>(extents), -1);
  head_.assign(static_cast<std::size_t>(extent_ + 1), -1);
  for (std::int64_t k = extents - 1; k >= 0; --k) {  // extent 0 at the front of its list
    const std::int64_t size = std::min(extent_, num_pages - k * extent_);
    mask_[static_cast<std::size_t>(k)] = size == 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << size) - 1;
    link(static_cast<std::int32_t>(k), static_cast<int>(size));
    top_ = std::max(top_, size);
  }
}

void FreePages::unlink(std::int32_t k, int count) noexcept {
  const auto i = static_cast<std::size_t>(k);
  if (prev_[i] >= 0) next_[static_cast<std::size_t>(prev_[i])] = next_[i];
  else head_[static_cast<std::size_t>(count)] = next_[i];
  if (next_[i] >= 0) prev_[static_cast<std::size_t>(next_[i])] = prev_[i];
}

void FreePages::link(std::int32_t k, int count) noexcept {
  const auto i = static_cast<std::size_t>(k);
  std::int32_t& head = head_[static_cast<std::size_t>(count)];
  prev_[i] = -1;
  next_[i] = head;
  if (head >= 0) prev_[static_cast<std::size_t>(head)] = k;
  head = k;
}

void FreePages::put(std::int32_t page) noexcept {
  const auto k = static_cast<std::int32_t>(page / extent_);
  std::uint64_t& m = mask_[static_cast<std::size_t>(k)];
  const int count = std::popcount(m);
  if (count > 0) unlink(k, count);
  m |= std::uint64_t{1} << (page % extent_);
  link(k, count + 1);
  top_ = std::max<std::int64_t>(top_, count + 1);
  ++free_;
}

void FreePages::remove(std::int32_t page) noexcept {
  const auto k = static_cast<std::int32_t>(page / extent_);
  std::uint64_t& m = mask_[static_cast<std::size_t>(k)];
  const int count = std::popcount(m);
  unlink(k, count);
  m &= ~(std::uint64_t{1} << (page % extent_));
  if (count > 1) link(k, count - 1);
  --free_;
}

std::int32_t FreePages::take(std::int32_t after) noexcept {
  if (free_ == 0) return -1;
  if (after >= 0 && after + 1 < num_pages_) {
    const std::int32_t next = after + 1;
    if ((mask_[static_cast<std::size_t>(next / extent_)] >> (next % extent_) & 1) != 0) {
      remove(next);
      return next;
    }
  }
  while (head_[static_cast<std::size_t>(top_)] < 0) --top_;  // free_ > 0: some list is not empty
  const std::int32_t k = head_[static_cast<std::size_t>(top_)];
  const auto page = static_cast<std::int32_t>(k * extent_ + std::countr_zero(mask_[static_cast<std::size_t>(k)]));
  remove(page);
  return page;
}

}  // namespace quarry::detail
