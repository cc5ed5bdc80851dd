// What every CUDA benchmark does first: reads its command line (the common options and --tiny),
// and on a machine without a usable CUDA device says so and measures nothing (exit status 0, so
// a build-and-run check passes there).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include <quarry/cuda.hpp>

#include "../common/options.hpp"

namespace quarry::bench {

/// A CUDA benchmark's command line: the common options (--json, --quick, --threads) and
/// --tiny: the smallest sizes that still run every row, once, with the program's own checks (a
/// test that the program works, in seconds: the test suite runs each one so on the SIMT
/// emulator, tests/cuda_emulated); its figures mean nothing.
struct CudaBenchOptions {
  BenchOptions common;
  bool tiny = false;
};

inline CudaBenchOptions cuda_bench_options(int argc, char** argv, std::string_view fallback_name, std::string_view what) {
  CudaBenchOptions o;
  const std::string_view program = program_name(argc, argv, fallback_name);
  const OwnOption own[] = {{"--tiny", false, [&](const std::string&) { o.tiny = true; }}};
  const std::vector<const char*> rest = take_own_options(
      argc, argv, program, what,
      [] {
        return std::string(
            "  --tiny         the smallest sizes that run every row once: a check that the program works (the test suite\n"
            "                 runs it so on the SIMT emulator); the figures mean nothing\n");
      },
      own);
  o.common = bench_options_from_command_line(static_cast<int>(rest.size()), rest.data(), what);
  return o;
}

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
