// The main of every doctest executable. When QUARRY_FORCE_ISA names a level this machine cannot
// run, the test exits 77, which ctest shows as skipped, rather than silently testing another.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>

#include <quarry/core/cpu_features.hpp>

int main(int argc, char** argv) {
  if (const char* forced = std::getenv("QUARRY_FORCE_ISA"); forced != nullptr && *forced != '\0') {
    const auto isa = quarry::parse_isa(forced);
    if (!isa || !quarry::isa_supported(*isa)) {
      std::printf("skipped: QUARRY_FORCE_ISA=%s is not runnable on this machine\n", forced);
      return 77;
    }
  }
  doctest::Context context(argc, argv);
  return context.run();
}
