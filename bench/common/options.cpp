#include "common/options.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>

namespace quarry::bench {

namespace {

status parse_threads(std::string_view text, unsigned& threads) {
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value == 0 || value > 4096)
    return status(errc::invalid_argument, fmt::format("--threads wants a count from 1 to 4096, got '{}'", text));
  threads = value;
  return status::success();
}

}  // namespace

result<BenchOptions> parse_bench_options(std::span<const char* const> args) {
  BenchOptions options;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string_view arg = args[i];
    // The value of an option given as "--name VALUE" or "--name=VALUE"; false when missing.
    auto value_of = [&](std::string_view name, std::string_view& value) -> bool {
      if (arg == name) {
        if (i + 1 >= args.size()) return false;
        value = args[++i];
        return true;
      }
      value = arg.substr(name.size() + 1);
      return true;
    };
    auto is_option = [&](std::string_view name) {
      return arg == name || (arg.size() > name.size() && arg.starts_with(name) && arg[name.size()] == '=');
    };

    if (arg == "--quick") {
      options.quick = true;
    } else if (is_option("--json")) {
      std::string_view path;
      if (!value_of("--json", path) || path.empty())
        return status(errc::invalid_argument, "--json wants a file name");
      options.json_path = std::string(path);
    } else if (is_option("--threads")) {
      std::string_view count;
      if (!value_of("--threads", count)) return status(errc::invalid_argument, "--threads wants a count");
      QUARRY_RETURN_IF_ERROR(parse_threads(count, options.threads));
    } else if (arg.size() > 1 && arg.front() == '-') {
      return status(errc::invalid_argument, fmt::format("unknown option '{}'", arg));
    } else {
      options.positional.emplace_back(arg);
    }
  }
  return options;
}

std::string bench_usage(std::string_view program, std::string_view what) {
  return fmt::format(
      "{}: {}\n"
      "usage: {} [--quick] [--threads N] [--json FILE]\n"
      "  --quick        a short smoke run (seconds); figures not for publishing\n"
      "  --threads N    thread count of the multi-threaded rows (default: QUARRY_NUM_THREADS or all)\n"
      "  --json FILE    also write the rows as JSON to FILE (bench/ output convention)\n",
      program, what, program);
}

BenchOptions bench_options_from_command_line(int argc, const char* const* argv, std::string_view what) {
  const std::string_view program = argc > 0 ? argv[0] : "bench";
  std::span<const char* const> args(argv + (argc > 0 ? 1 : 0), static_cast<std::size_t>(argc > 0 ? argc - 1 : 0));
  for (std::string_view a : args) {
    if (a == "--help" || a == "-h") {
      fmt::print("{}", bench_usage(program, what));
      std::exit(0);
    }
  }
  result<BenchOptions> parsed = parse_bench_options(args);
  if (!parsed) {
    fmt::print(stderr, "{}\n{}", parsed.status().message(), bench_usage(program, what));
    std::exit(2);
  }
  return std::move(*parsed);
}

}  // namespace quarry::bench
