// The main of every doctest executable. When QUARRY_FORCE_ISA names a level this machine cannot
// run, the test exits 77, which ctest shows as skipped, rather than silently testing another.
// With QUARRY_TEST_SKIP_BEST_ISA=1 (ctest's <name>.<isa> runs) it also skips when the forced
// level is the one picked without forcing: the unforced run <name> tests exactly that.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <string_view>

#include <quarry/core/cpu_features.hpp>

int main(int argc, char** argv) {
  if (const char* forced = std::getenv("QUARRY_FORCE_ISA"); forced != nullptr && *forced != '\0') {
    const auto isa = quarry::parse_isa(forced);
    if (!isa || !quarry::isa_supported(*isa)) {
      std::printf("skipped: QUARRY_FORCE_ISA=%s is not runnable on this machine\n", forced);
      return 77;
    }
    if (const char* skip = std::getenv("QUARRY_TEST_SKIP_BEST_ISA"); skip != nullptr && std::string_view(skip) == "1" &&
        *isa == quarry::best_isa()) {
      std::printf("skipped: QUARRY_FORCE_ISA=%s is this machine's best kernel set, which the unforced run tests\n", forced);
      return 77;
    }
  }
  doctest::Context context(argc, argv);
  return context.run();
}
