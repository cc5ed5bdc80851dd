// Where tests find the real data in ../shared/data (QUARRY_DATA_DIR overrides it), and a clear
// skip message when it is absent.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

namespace quarry::testing {

/// The path of `relative` under the shared data folder, or "" when that file is absent.
inline std::string shared_data_file(const std::string& relative) {
  const char* env = std::getenv("QUARRY_DATA_DIR");
  const std::filesystem::path root = env && *env ? std::filesystem::path(env) : std::filesystem::path(QUARRY_SHARED_DATA_DIR);
  const auto p = root / relative;
  return std::filesystem::exists(p) ? p.string() : std::string();
}

}  // namespace quarry::testing

/// In a doctest case: binds `var` to the data file's path, or reports a skip and returns.
#define QUARRY_REQUIRE_SHARED_DATA(var, relative)                                                     \
  const std::string var = ::quarry::testing::shared_data_file(relative);                             \
  if (var.empty()) {                                                                                  \
    MESSAGE("skipped: ../shared/data/" relative " is absent (set QUARRY_DATA_DIR to its folder)"); \
    return;                                                                                           \
  }
