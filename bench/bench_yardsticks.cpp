// bench_yardsticks: this machine's limits, the figures every other benchmark divides by.
//
// Rows (lib "machine": no library code runs, only the probes in bench/common/):
//   dram read       GB/s reading a working set far larger than the last-level cache
//   f32 fma peak    GFLOP/s of independent FMA chains (2 flops per lane)
//   int8 vnni peak  GOP/s of independent vpdpbusd chains (2 ops per u8 x s8 multiply-add,
//                   128 per zmm instruction); absent when the CPU lacks AVX-512 VNNI
// each on 1 thread and on all threads (--threads N to choose), with "scaling" = all / 1 thread.
#include <fmt/format.h>

#include "common/machine.hpp"
#include "common/options.hpp"
#include "common/report.hpp"
#include "common/yardsticks.hpp"

int main(int argc, char** argv) {
  using namespace quarry::bench;
  const BenchOptions options = bench_options_from_command_line(
      argc, argv, "measures DRAM read bandwidth, f32 FMA peak and int8 VNNI peak on 1 and N threads");

  BenchReport report;
  report.machine = identify_machine(options.threads);
  const Yardsticks y = measure_yardsticks(report.machine.threads, options.effort());
  report.yardsticks = y;
  const std::string kernel(yardstick_kernel());
  const unsigned n = y.threads;

  auto add_pair = [&](std::string_view name, double one, double all, std::string_view unit, std::string_view counting,
                      std::string_view row_kernel) {
    BenchRow r1(std::string(name), "machine", 1);
    r1.set("gops", one).set("unit", unit).set("kernel", row_kernel).set("counting", counting);
    report.rows.push_back(std::move(r1));
    if (n > 1) {
      BenchRow rn(std::string(name), "machine", n);
      rn.set("gops", all).set("unit", unit).set("kernel", row_kernel).set("counting", counting);
      rn.set("scaling", all / one);
      report.rows.push_back(std::move(rn));
    }
  };

  // Bandwidth rows carry "gbps" (the convention's name for bandwidth), not "gops".
  const std::int64_t dram_bytes = static_cast<std::int64_t>(y.dram_bytes);
  BenchRow d1("dram read", "machine", 1);
  d1.set("gbps", y.dram_gbps_1thread).set("unit", "GB/s").set("kernel", kernel).set("bytes", dram_bytes);
  report.rows.push_back(std::move(d1));
  if (n > 1) {
    BenchRow dn("dram read", "machine", n);
    dn.set("gbps", y.dram_gbps).set("unit", "GB/s").set("kernel", kernel).set("bytes", dram_bytes);
    dn.set("scaling", y.dram_gbps / y.dram_gbps_1thread);
    report.rows.push_back(std::move(dn));
  }

  add_pair("f32 fma peak", y.fma_gflops_1thread, y.fma_gflops, "GFLOP/s", "2 flops per FMA lane", kernel);
  if (y.vnni_gops_1thread && y.vnni_gops)
    add_pair("int8 vnni peak", *y.vnni_gops_1thread, *y.vnni_gops, "GOP/s",
             "2 ops per u8*s8 MAC, 128 per zmm vpdpbusd", "avx512vnni");

  const int rc = output_report(report, options.json_path);
  if (!y.vnni_gops) fmt::print("int8 vnni peak: not measured (this CPU has no AVX-512 VNNI)\n");
  return rc;
}
