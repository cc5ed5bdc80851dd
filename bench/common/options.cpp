#include "common/options.hpp"

#include <fmt/format.h>

#include <quarry/core/checked.hpp>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <optional>

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

std::vector<const char*> take_own_options(int argc, const char* const* argv, std::string_view program, std::string_view what,
                                          const std::function<std::string()>& own_usage, std::span<const OwnOption> options) {
  std::vector<const char*> rest;
  if (argc > 0) rest.push_back(argv[0]);
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      fmt::print("{}", bench_usage(program, what));
      fmt::print("{}", own_usage());
      std::exit(0);
    }
    bool matched = false;
    for (const OwnOption& option : options) {
      const std::string_view name = option.name;
      if (!option.takes_value) {
        if (arg != name) continue;
        option.apply(std::string());
        matched = true;
        break;
      }
      std::string value;
      if (arg == name) {
        if (i + 1 >= argc) usage_error(program, fmt::format("{} wants a value", name));
        value = argv[++i];
      } else if (arg.size() > name.size() && arg.starts_with(name) && arg[name.size()] == '=') {
        value = std::string(arg.substr(name.size() + 1));
      } else {
        continue;
      }
      matched = true;
      if (value.empty()) usage_error(program, fmt::format("{} wants a value", name));
      option.apply(value);
      break;
    }
    if (!matched) rest.push_back(argv[i]);
  }
  return rest;
}

std::string_view program_name(int argc, const char* const* argv, std::string_view fallback) noexcept {
  return argc > 0 ? std::string_view(argv[0]) : fallback;
}

void usage_error(std::string_view program, std::string_view message) {
  fmt::print(stderr, "{}\nrun {} --help for the usage\n", message, program);
  std::exit(2);
}

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= text.size()) {
    const std::size_t comma = std::min(text.find(',', start), text.size());
    if (comma > start) out.push_back(text.substr(start, comma - start));
    start = comma + 1;
  }
  return out;
}

std::int64_t parse_count(std::string_view program, std::string_view name, std::string value, std::int64_t lo, std::int64_t hi,
                         CountSuffix suffix) {
  std::int64_t mult = 1;
  if (suffix == CountSuffix::kibi && !value.empty() && (value.back() == 'k' || value.back() == 'K')) {
    mult = 1024;
    value.pop_back();
  }
  char* end = nullptr;
  const long long v = std::strtoll(value.c_str(), &end, 10);
  const std::optional<std::int64_t> count = checked_mul(v, mult);  // "9000000000000000000k" overflows
  if (value.empty() || end == value.c_str() || *end != '\0' || !count || *count < lo || *count > hi)
    usage_error(program, fmt::format("{} wants a count from {} to {}, got '{}'", name, lo, hi, value));
  return *count;
}

}  // namespace quarry::bench
