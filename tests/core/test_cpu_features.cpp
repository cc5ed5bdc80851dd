#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include <quarry/core/cpu_features.hpp>

using namespace quarry;

TEST_CASE("the active ISA is built, supported, and honours QUARRY_FORCE_ISA") {
  const Isa active = active_isa();
  CHECK(isa_supported(active));
  CHECK(isa_built(Isa::scalar));
  CHECK(isa_supported(Isa::scalar));
  const auto all = supported_isas();
  REQUIRE(!all.empty());
  CHECK(all.front() == Isa::scalar);
  CHECK(best_isa() == all.back());
  CHECK(std::is_sorted(all.begin(), all.end()));
  if (const char* forced = std::getenv("QUARRY_FORCE_ISA"); forced && *forced) {
    REQUIRE(parse_isa(forced).has_value());
    CHECK(active == *parse_isa(forced));
  } else {
    CHECK(active == best_isa());
  }
  MESSAGE("cpu: " << cpu_features().brand << " | " << cpu_features().to_string() << " | active isa: " << isa_name(active));
}

TEST_CASE("ISA names round-trip") {
  for (Isa isa : {Isa::scalar, Isa::neon, Isa::avx2, Isa::avx512}) CHECK(parse_isa(isa_name(isa)) == isa);
  CHECK_FALSE(parse_isa("sse9").has_value());
  CHECK_FALSE(parse_isa("").has_value());
}

TEST_CASE("feature flags are consistent with each other") {
  const CpuFeatures& f = cpu_features();
  if (f.avx2) CHECK(f.avx);
  if (f.avx512bw || f.avx512vl || f.avx512dq || f.avx512vnni) CHECK(f.avx512f);
  if (isa_supported(Isa::avx512)) CHECK(isa_supported(Isa::avx2));
#if defined(__x86_64__)
  CHECK(!f.vendor.empty());
  CHECK_FALSE(f.neon);
#endif
  CHECK(!f.to_string().empty());
}
