#include "quarry/core/aligned_buffer.hpp"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace quarry::detail {

void advise_huge_pages(void* p, std::size_t bytes) noexcept {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  (void)madvise(p, bytes, MADV_HUGEPAGE);  // advice: an error leaves 4 KiB pages, which work
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace quarry::detail
