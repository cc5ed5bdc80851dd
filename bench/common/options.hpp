// The command line every bench/ program accepts (--json FILE, --quick, --threads N) and the
// pieces a benchmark's own options are read with (take_own_options, parse_count, split_commas).
#pragma once

#include <cstdint>
#include <functional>
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

/// One of a benchmark's own options: a flag (`--full-grid`, exactly) or an option with a value
/// (`--name VALUE` or `--name=VALUE`; an empty or missing value is a usage error).
struct OwnOption {
  std::string_view name;                            ///< "--sections"
  bool takes_value = true;                          ///< false: a flag
  std::function<void(const std::string&)> apply;    ///< called with the value ("" for a flag)
};

/// Takes a benchmark's own options out of argv, in order, calling each one's apply; returns the
/// rest (argv[0] first) for bench_options_from_command_line. On --help or -h prints
/// bench_usage(program, what), then own_usage() (the lines for its own options; called then, so it
/// can show defaults as set so far), and exits 0.
std::vector<const char*> take_own_options(int argc, const char* const* argv, std::string_view program, std::string_view what,
                                          const std::function<std::string()>& own_usage, std::span<const OwnOption> options);

/// argv[0], or `fallback` when argc is 0: the program name usage lines give.
std::string_view program_name(int argc, const char* const* argv, std::string_view fallback) noexcept;

/// Prints `message` and "run PROGRAM --help for the usage" to stderr and exits 2: what a
/// benchmark does with a bad value of one of its own options.
[[noreturn]] void usage_error(std::string_view program, std::string_view message);

/// The comma-separated items of `text`, empty ones dropped ("1k,,4k" -> "1k", "4k").
std::vector<std::string> split_commas(const std::string& text);

/// Whether parse_count takes a `k` suffix (k = 1024: "4k" is 4096).
enum class CountSuffix { none, kibi };

/// `value`, the value of option `name`, as a decimal count from `lo` to `hi`; otherwise
/// usage_error saying so.
std::int64_t parse_count(std::string_view program, std::string_view name, std::string value, std::int64_t lo, std::int64_t hi,
                         CountSuffix suffix = CountSuffix::none);

}  // namespace quarry::bench
