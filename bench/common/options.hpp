// The command line every bench/ program accepts: --json FILE, --quick, --threads N.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <quarry/core/status.hpp>

#include "common/yardsticks.hpp"

namespace quarry::bench {

/// What a benchmark was asked to do.
struct BenchOptions {
  std::string json_path;                ///< --json FILE: also write the rows as JSON there; empty: don't
  bool quick = false;                   ///< --quick: a short smoke run (seconds), not figures to publish
  unsigned threads = 0;                 ///< --threads N: the multi-threaded rows' thread count; 0: default_threads()
  std::vector<std::string> positional;  ///< arguments that are not options (input files, ...), in order

  /// Effort::quick under --quick, else Effort::full.
  Effort effort() const noexcept { return quick ? Effort::quick : Effort::full; }
};

/// Parses `args` (argv without the program name). Accepts `--json FILE`, `--json=FILE`,
/// `--quick`, `--threads N`, `--threads=N`; anything else starting with '-' is invalid_argument,
/// naming it. `--help` is not handled here (see bench_options_from_command_line).
result<BenchOptions> parse_bench_options(std::span<const char* const> args);

/// The usage text for a benchmark called `program` that does `what` (one line).
std::string bench_usage(std::string_view program, std::string_view what);

/// parse_bench_options for main(): prints the usage and exits 0 on --help or -h, prints the
/// error and the usage to stderr and exits 2 on a bad command line.
BenchOptions bench_options_from_command_line(int argc, const char* const* argv, std::string_view what);

}  // namespace quarry::bench
