// What every CUDA benchmark does first: on a machine without a usable CUDA device it says so and
// measures nothing (exit status 0, so a build-and-run check passes there).
#pragma once

#include <string>
#include <string_view>

#include <fmt/format.h>

#include <quarry/cuda.hpp>

namespace quarry::bench {

/// True, after printing "<program>: no CUDA device available (<why>); nothing measured", when
/// there is no CUDA device to measure on; false when there is one.
inline bool no_cuda_device(std::string_view program) {
  if (cuda_device_count() != 0) return false;
  const auto info = cuda_device_info(0);
  fmt::print("{}: no CUDA device available ({}); nothing measured\n", program,
             info.ok() ? std::string("no device reported") : info.status().message());
  return true;
}

}  // namespace quarry::bench
