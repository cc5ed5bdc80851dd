#include "common/machine.hpp"

#include <quarry/core/cpu_features.hpp>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace quarry::bench {

namespace {

// "32768K", "2M", "512" -> bytes; 0 when it is not a size.
std::size_t parse_cache_size(const std::string& text) {
  std::size_t pos = 0;
  unsigned long long value = 0;
  try {
    value = std::stoull(text, &pos);
  } catch (...) {
    return 0;
  }
  const char unit = pos < text.size() ? text[pos] : '\0';
  if (unit == 'K' || unit == 'k') return static_cast<std::size_t>(value) << 10;
  if (unit == 'M' || unit == 'm') return static_cast<std::size_t>(value) << 20;
  if (unit == 'G' || unit == 'g') return static_cast<std::size_t>(value) << 30;
  return static_cast<std::size_t>(value);
}

}  // namespace

unsigned default_threads() {
  if (const char* env = std::getenv("QUARRY_NUM_THREADS")) {
    const long n = std::strtol(env, nullptr, 10);
    if (n > 0) return static_cast<unsigned>(n);
  }
  return std::max(1u, std::thread::hardware_concurrency());
}

MachineIdentity identify_machine(unsigned threads) {
  const CpuFeatures& f = cpu_features();
  MachineIdentity m;
  m.cpu = f.brand.empty() ? f.vendor : f.brand;
  m.isa = std::string(isa_name(active_isa()));
  m.features = f.to_string();
  m.threads = threads ? threads : default_threads();
  return m;
}

std::size_t last_level_cache_bytes() {
  std::size_t largest = 0;
  // Linux: every cache index of cpu0; the last level is the largest.
  for (int index = 0; index < 8; ++index) {
    std::ifstream in("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/size");
    std::string text;
    if (!(in >> text)) continue;
    largest = std::max(largest, parse_cache_size(text));
  }
#if defined(_SC_LEVEL3_CACHE_SIZE) && defined(_SC_LEVEL2_CACHE_SIZE)
  if (largest == 0) {
    for (int name : {_SC_LEVEL3_CACHE_SIZE, _SC_LEVEL2_CACHE_SIZE}) {
      const long v = sysconf(name);
      if (v > 0) largest = std::max(largest, static_cast<std::size_t>(v));
    }
  }
#endif
  return largest;
}

std::size_t physical_memory_bytes() {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
  const long pages = sysconf(_SC_PHYS_PAGES);
  const long page = sysconf(_SC_PAGESIZE);
  if (pages > 0 && page > 0) return static_cast<std::size_t>(pages) * static_cast<std::size_t>(page);
#endif
  return 0;
}

std::vector<unsigned> row_thread_counts(unsigned threads) {
  std::vector<unsigned> counts = {1};
  if (threads > 1) counts.push_back(threads);
  return counts;
}

}  // namespace quarry::bench
