#include "common/report.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>

namespace quarry::bench {

// ---- BenchRow ---------------------------------------------------------------------------------

BenchRow& BenchRow::set_value(std::string_view key, FigureValue value) {
  for (Figure& f : figures) {
    if (f.name == key) {
      f.value = std::move(value);
      return *this;
    }
  }
  figures.push_back({std::string(key), std::move(value)});
  return *this;
}

BenchRow& BenchRow::set(std::string_view key, double value) {
  return set_value(key, FigureValue(std::in_place_type<double>, value));
}

BenchRow& BenchRow::set(std::string_view key, std::string_view value) {
  return set_value(key, FigureValue(std::in_place_type<std::string>, std::string(value)));
}

BenchRow& BenchRow::set(std::string_view key, std::optional<double> value) {
  return set(key, value.value_or(std::numeric_limits<double>::quiet_NaN()));
}

const FigureValue* BenchRow::find(std::string_view key) const noexcept {
  for (const Figure& f : figures)
    if (f.name == key) return &f.value;
  return nullptr;
}

// ---- JSON -------------------------------------------------------------------------------------

std::string json_quote(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out += '"';
  for (const char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20)
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(static_cast<unsigned char>(c)));
        else
          out += c;  // bytes >= 0x80 pass through: UTF-8 stays UTF-8
    }
  }
  out += '"';
  return out;
}

namespace {

// A JSON number (shortest text that reads back to the same double), or null when not finite.
std::string json_number(double v) { return std::isfinite(v) ? fmt::format("{}", v) : std::string("null"); }

std::string json_number(std::optional<double> v) { return v ? json_number(*v) : std::string("null"); }

std::string json_value(const FigureValue& v) {
  if (const double* d = std::get_if<double>(&v)) return json_number(*d);
  if (const std::int64_t* i = std::get_if<std::int64_t>(&v)) return fmt::format("{}", *i);
  return json_quote(std::get<std::string>(v));
}

std::string json_machine(const BenchReport& report) {
  const MachineIdentity& m = report.machine;
  std::string out = fmt::format("{{\"cpu\": {}, \"isa\": {}, \"threads\": {}", json_quote(m.cpu), json_quote(m.isa),
                                m.threads);
  if (const auto& y = report.yardsticks) {
    out += fmt::format(", \"dram_gbps\": {}, \"vnni_gops\": {}", json_number(y->dram_gbps), json_number(y->vnni_gops));
    out += fmt::format(", \"dram_gbps_1thread\": {}, \"vnni_gops_1thread\": {}", json_number(y->dram_gbps_1thread),
                       json_number(y->vnni_gops_1thread));
    out += fmt::format(", \"fma_gflops\": {}, \"fma_gflops_1thread\": {}", json_number(y->fma_gflops),
                       json_number(y->fma_gflops_1thread));
    out += fmt::format(", \"dram_bytes\": {}, \"cpu_share\": {}", y->dram_bytes, json_number(y->cpu_share));
  } else {
    out += ", \"dram_gbps\": null, \"vnni_gops\": null";
  }
  out += fmt::format(", \"features\": {}}}", json_quote(m.features));
  return out;
}

std::string json_row(const BenchRow& row) {
  std::string out = fmt::format("{{\"name\": {}, \"lib\": {}, \"threads\": {}", json_quote(row.name),
                                json_quote(row.lib), row.threads);
  for (const Figure& f : row.figures) {
    if (f.name == "name" || f.name == "lib" || f.name == "threads") continue;  // one key, one value
    out += fmt::format(", {}: {}", json_quote(f.name), json_value(f.value));
  }
  out += '}';
  return out;
}

// ---- Table ------------------------------------------------------------------------------------

// Below this share of CPU time the yardsticks were measured on a busy machine.
constexpr double kBusyCpuShare = 0.9;

// A measurement with about four significant digits, never in exponent form for ordinary sizes.
std::string table_number(double v) {
  if (!std::isfinite(v)) return "-";
  const double a = std::fabs(v);
  if (a >= 1000) return fmt::format("{:.0f}", v);
  if (a >= 100) return fmt::format("{:.1f}", v);
  if (a >= 10) return fmt::format("{:.2f}", v);
  if (a >= 0.001 || a == 0) return fmt::format("{:.3f}", v);
  return fmt::format("{:.3g}", v);
}

std::string table_value(const FigureValue& v) {
  if (const double* d = std::get_if<double>(&v)) return table_number(*d);
  if (const std::int64_t* i = std::get_if<std::int64_t>(&v)) return fmt::format("{}", *i);
  return std::get<std::string>(v);
}

std::string optional_figure(std::optional<double> v, std::string_view unit) {
  return v ? fmt::format("{} {}", table_number(*v), unit) : std::string("none");
}

}  // namespace

std::string to_json(const BenchReport& report) {
  std::string out = "{\n  \"machine\": " + json_machine(report) + ",\n  \"rows\": [";
  for (std::size_t i = 0; i < report.rows.size(); ++i) {
    out += i ? ",\n    " : "\n    ";
    out += json_row(report.rows[i]);
  }
  out += report.rows.empty() ? "]\n}\n" : "\n  ]\n}\n";
  return out;
}

status write_json(const BenchReport& report, const std::string& path) {
  const std::string text = to_json(report);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return status(errc::io_error, fmt::format("cannot open '{}' for writing", path));
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  out.close();
  if (!out) return status(errc::io_error, fmt::format("cannot write {} bytes to '{}'", text.size(), path));
  return status::success();
}

void print_table(const BenchReport& report, std::FILE* out) {
  const MachineIdentity& m = report.machine;
  fmt::print(out, "machine: {} | isa: {} | threads: {}\n", m.cpu, m.isa, m.threads);
  if (const auto& y = report.yardsticks) {
    fmt::print(out, "yardsticks: DRAM read {} GB/s ({} on 1 thread) | int8 VNNI peak {} ({} on 1 thread)\n",
               table_number(y->dram_gbps), table_number(y->dram_gbps_1thread), optional_figure(y->vnni_gops, "GOP/s"),
               optional_figure(y->vnni_gops_1thread, "GOP/s"));
    if (y->cpu_share < kBusyCpuShare)
      fmt::print(out, "warning: the yardstick probes got only {:.0f}% of their CPU time (other processes were "
               "running); every ratio to these yardsticks is unreliable\n", 100 * y->cpu_share);
  }
  if (report.rows.empty()) return;

  // Columns: name, lib, threads, then every figure name in the order first seen.
  std::vector<std::string> header = {"name", "lib", "threads"};
  for (const BenchRow& row : report.rows)
    for (const Figure& f : row.figures)
      if (std::find(header.begin(), header.end(), f.name) == header.end()) header.push_back(f.name);

  std::vector<std::vector<std::string>> cells;
  cells.reserve(report.rows.size());
  for (const BenchRow& row : report.rows) {
    std::vector<std::string> line = {row.name, row.lib, fmt::format("{}", row.threads)};
    for (std::size_t c = 3; c < header.size(); ++c) {
      const FigureValue* v = row.find(header[c]);
      line.push_back(v ? table_value(*v) : std::string());
    }
    cells.push_back(std::move(line));
  }

  std::vector<std::size_t> width(header.size());
  for (std::size_t c = 0; c < header.size(); ++c) {
    width[c] = header[c].size();
    for (const auto& line : cells) width[c] = std::max(width[c], line[c].size());
  }
  // Text columns (name, lib) align left; figures align right.
  auto print_line = [&](const std::vector<std::string>& line) {
    std::string text;
    for (std::size_t c = 0; c < line.size(); ++c) {
      if (c) text += "  ";
      text += c < 2 ? fmt::format("{:<{}}", line[c], width[c]) : fmt::format("{:>{}}", line[c], width[c]);
    }
    while (!text.empty() && text.back() == ' ') text.pop_back();
    fmt::print(out, "{}\n", text);
  };
  print_line(header);
  std::size_t total = 0;
  for (std::size_t w : width) total += w;
  fmt::print(out, "{}\n", std::string(total + 2 * (width.size() - 1), '-'));
  for (const auto& line : cells) print_line(line);
}

int output_report(const BenchReport& report, const std::string& json_path) {
  print_table(report, stdout);
  std::fflush(stdout);
  if (json_path.empty()) return 0;
  if (const status st = write_json(report, json_path); !st.ok()) {
    fmt::print(stderr, "{}\n", st.to_string());
    return 1;
  }
  fmt::print("wrote {}\n", json_path);
  return 0;
}

}  // namespace quarry::bench
