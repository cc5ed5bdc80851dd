// The benchmarks' clock: seconds since a point, the best of repeated runs, and progress lines on
// stderr stamped with the seconds since the program started (stdout keeps only the results).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <utility>

#include <fmt/format.h>

namespace quarry::bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

/// The shortest of `reps` timed runs of f().
template <class F>
double best_seconds(int reps, F&& f) {
  double best = 1e300;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    f();
    best = std::min(best, seconds_since(t0));
  }
  return best;
}

/// When the program started (its static initialisation).
inline const Clock::time_point kProgramStart = Clock::now();

/// A progress line on stderr: "[  12.3 s] what".
template <class... Args>
void progress(fmt::format_string<Args...> f, Args&&... args) {
  fmt::print(stderr, "[{:6.1f} s] {}\n", seconds_since(kProgramStart), fmt::format(f, std::forward<Args>(args)...));
  std::fflush(stderr);
}

}  // namespace quarry::bench
