// main() of the tests that need a CUDA device: exits 77 (ctest: skipped) when there is none,
// saying why, and otherwise runs the doctest cases.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include <quarry/cuda.hpp>

int main(int argc, char** argv) {
  const auto info = quarry::cuda_device_info(0);
  if (quarry::cuda_device_count() == 0 || !info.ok()) {
    std::printf("skipped: no usable CUDA device (%s)\n", info.ok() ? "cuda_device_count() is 0" : info.status().to_string().c_str());
    return 77;
  }
  std::printf("CUDA device 0: %s, sm_%d%d, %d SMs, %.1f GiB; runtime %d, driver %d\n", info->name.c_str(),
              info->compute_capability_major, info->compute_capability_minor, info->sm_count,
              static_cast<double>(info->total_memory_bytes) / (1024.0 * 1024.0 * 1024.0), info->runtime_version,
              info->driver_version);
  doctest::Context context(argc, argv);
  return context.run();
}
