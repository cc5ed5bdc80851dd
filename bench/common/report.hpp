// The rows a benchmark produces, printed as a readable table and written as JSON in the one
// convention every bench/ program follows (DESIGN.md, "Benchmark output"):
//   {"machine": {"cpu": ..., "isa": ..., "threads": ..., "dram_gbps": ..., "vnni_gops": ...},
//    "rows": [{"name": ..., "lib": "quarry", "threads": 1, ...figures}]}
#pragma once

#include <concepts>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <quarry/core/status.hpp>

#include "common/machine.hpp"
#include "common/yardsticks.hpp"

namespace quarry::bench {

/// A figure's value: a measurement, a count, or a word (a unit, a build flavour). A NaN or
/// infinite measurement is written as JSON null.
using FigureValue = std::variant<double, std::int64_t, std::string>;

/// One named figure of a row: "gbps", "bw_ratio", "gops", "peak_ratio", "ms", "qps", "unit", ...
struct Figure {
  std::string name;   ///< the JSON key
  FigureValue value;  ///< its value
};

/// One line of a benchmark's output: what ran, in which library, on how many threads, and its
/// figures in the order they were set.
struct BenchRow {
  std::string name;           ///< what was measured, e.g. "qgemv w4a8 4096x4096"
  std::string lib = "quarry"; ///< whose code ran: "quarry", "faiss", "llama.cpp", "eigen", "machine"
  unsigned threads = 1;       ///< threads the measured code ran on
  std::vector<Figure> figures;  ///< in the order they were set

  BenchRow() = default;
  /// A row for `name`, run by `lib` on `threads` threads, with no figures yet.
  explicit BenchRow(std::string name, std::string lib = "quarry", unsigned threads = 1)
      : name(std::move(name)), lib(std::move(lib)), threads(threads) {}

  /// Sets figure `key` to `value` (replacing an earlier one of that name); returns *this to chain.
  BenchRow& set(std::string_view key, double value);
  /// Sets an integer figure (a count: bytes, vectors, ...).
  template <std::integral I>
  BenchRow& set(std::string_view key, I value) {
    return set_value(key, FigureValue(std::in_place_type<std::int64_t>, static_cast<std::int64_t>(value)));
  }
  /// Sets a word figure ("unit": "GB/s", "build": "avx512").
  BenchRow& set(std::string_view key, std::string_view value);
  /// Same; a string literal is a word, not a bool.
  BenchRow& set(std::string_view key, const char* value) { return set(key, std::string_view(value)); }
  /// Sets a measurement that may be absent: nullopt is written as JSON null and "-" in the table.
  BenchRow& set(std::string_view key, std::optional<double> value);

  /// The figure named `key`, or null.
  const FigureValue* find(std::string_view key) const noexcept;

 private:
  BenchRow& set_value(std::string_view key, FigureValue value);
};

/// Everything one benchmark run reports: the machine, its yardsticks (when measured), the rows.
struct BenchReport {
  MachineIdentity machine;               ///< cpu, isa, threads
  std::optional<Yardsticks> yardsticks;  ///< dram_gbps, vnni_gops, ...; null in JSON when absent
  std::vector<BenchRow> rows;            ///< in the order they were measured
};

/// `text` as a JSON string literal, quotes included: `"`, `\` and control characters escaped.
std::string json_quote(std::string_view text);

/// The report as JSON in the DESIGN.md convention, one row per line. The machine object holds
/// cpu, isa, threads, dram_gbps and vnni_gops (the all-threads figures), plus
/// dram_gbps_1thread, vnni_gops_1thread, fma_gflops, fma_gflops_1thread, dram_bytes, cpu_share
/// and features.
std::string to_json(const BenchReport& report);

/// Writes to_json(report) to `path` (replacing it). io_error when the file cannot be written.
status write_json(const BenchReport& report, const std::string& path);

/// What a benchmark's main() ends with: print_table(report) to stdout, then write_json(report,
/// json_path) unless json_path is empty. Returns the exit code: 0, or 1 (with a message on stderr)
/// when the JSON cannot be written.
int output_report(const BenchReport& report, const std::string& json_path);

/// Prints the machine and yardstick lines (with a warning when the probes did not get the CPU to
/// themselves) and the rows as an aligned table, one column per figure name.
void print_table(const BenchReport& report, std::FILE* out = stdout);

}  // namespace quarry::bench
