// quarry/core/cuda_device.hpp: the device probe and device information (needs a device).
#include <doctest/doctest.h>

#include <string>

#include <quarry/cuda.hpp>

using namespace quarry;

TEST_CASE("cuda_device_count and cuda_device_info describe the devices") {
  const int count = cuda_device_count();
  REQUIRE(count > 0);
  CHECK(cuda_available());
  for (int d = 0; d < count; ++d) {
    const auto info = cuda_device_info(d);
    REQUIRE(info.ok());
    CHECK(info->ordinal == d);
    CHECK(!info->name.empty());
    CHECK(info->compute_capability_major >= 3);
    CHECK(info->sm_count > 0);
    CHECK(info->total_memory_bytes > 0);
    CHECK(info->runtime_version > 0);
    CHECK(info->driver_version > 0);
  }
}

TEST_CASE("cuda_device_info rejects an ordinal that does not exist, naming it") {
  const int count = cuda_device_count();
  for (int bad : {-1, count}) {
    const auto info = cuda_device_info(bad);
    REQUIRE(!info.ok());
    CHECK(info.status().code() == errc::out_of_range);
    CHECK(info.status().message().find("cuda_device_info(" + std::to_string(bad) + ")") != std::string::npos);
  }
}

TEST_CASE("cuda_set_current_device switches devices and reports a bad ordinal") {
  const int before = cuda_current_device();
  REQUIRE(before >= 0);
  CHECK(cuda_set_current_device(before).ok());
  const status bad = cuda_set_current_device(cuda_device_count());
  REQUIRE(!bad.ok());
  CHECK(bad.code() == errc::device_error);
  CHECK(bad.message().find("cudaErrorInvalidDevice") != std::string::npos);
  CHECK(cuda_current_device() == before);
}
