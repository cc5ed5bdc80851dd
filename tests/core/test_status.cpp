#include <doctest/doctest.h>

#include <memory>
#include <string>

#include <quarry/core/checked.hpp>
#include <quarry/core/status.hpp>

using namespace quarry;

namespace {
result<int> parse_positive(int v) {
  if (v <= 0) return status(errc::invalid_argument, "value " + std::to_string(v) + " is not positive");
  return v;
}
status use_twice(int v, int* out) {
  QUARRY_ASSIGN_OR_RETURN(int x, parse_positive(v));
  *out = 2 * x;
  return {};
}
status chained(bool fail) {
  QUARRY_RETURN_IF_ERROR(fail ? status(errc::io_error, "disk said no") : status());
  return status(errc::not_found, "reached the end");
}
}  // namespace

TEST_CASE("status: ok is cheap and says so") {
  status s;
  CHECK(s.ok());
  CHECK(static_cast<bool>(s));
  CHECK(s.code() == errc::ok);
  CHECK(s.message().empty());
  CHECK(s.to_string() == "ok");
  CHECK_NOTHROW(s.throw_if_error());
}

TEST_CASE("status: an error carries code and message") {
  status s(errc::corrupt_data, "section 'codes': crc32c 0x1234 != 0x5678");
  CHECK_FALSE(s.ok());
  CHECK(s.code() == errc::corrupt_data);
  CHECK(s.to_string() == "corrupt_data: section 'codes': crc32c 0x1234 != 0x5678");
  try {
    s.throw_if_error();
    FAIL("did not throw");
  } catch (const error& e) {
    CHECK(e.code() == errc::corrupt_data);
    CHECK(std::string(e.what()) == s.to_string());
  }
}

TEST_CASE("result: value, error and propagation macros") {
  auto good = parse_positive(3);
  REQUIRE(good.ok());
  CHECK(*good == 3);
  CHECK(good.value() == 3);
  CHECK(good.status().ok());

  auto bad = parse_positive(-1);
  CHECK_FALSE(bad.ok());
  CHECK(bad.status().code() == errc::invalid_argument);
  CHECK(bad.status().message() == "value -1 is not positive");
  CHECK_THROWS_AS(bad.value(), error);

  int out = 0;
  CHECK(use_twice(4, &out).ok());
  CHECK(out == 8);
  CHECK(use_twice(0, &out).code() == errc::invalid_argument);
  CHECK(chained(true).code() == errc::io_error);
  CHECK(chained(false).code() == errc::not_found);
}

TEST_CASE("result: move-only values and a mistaken ok status") {
  result<std::unique_ptr<int>> r(std::make_unique<int>(7));
  REQUIRE(r.ok());
  std::unique_ptr<int> p = std::move(r).value();
  CHECK(*p == 7);

  result<int> wrong{status()};  // an ok status without a value is a bug, reported as such
  CHECK_FALSE(wrong.ok());
  CHECK(wrong.status().code() == errc::internal);
}

TEST_CASE("checked arithmetic catches overflow") {
  CHECK(checked_add(1, 2) == 3);
  CHECK_FALSE(checked_add(INT64_MAX, 1).has_value());
  CHECK(checked_mul(1 << 20, 1 << 20) == (std::int64_t{1} << 40));
  CHECK_FALSE(checked_mul(std::int64_t{1} << 32, std::int64_t{1} << 32).has_value());
  const std::int64_t ok_dims[] = {2, 3, 4};
  CHECK(checked_product(ok_dims) == 24);
  const std::int64_t neg_dims[] = {2, -3};
  CHECK_FALSE(checked_product(neg_dims).has_value());
  const std::int64_t huge[] = {std::int64_t{1} << 31, std::int64_t{1} << 31, 4};
  CHECK_FALSE(checked_product(huge).has_value());
}
