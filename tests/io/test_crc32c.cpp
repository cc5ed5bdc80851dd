// CRC32C: the published check values, incremental use, and the SSE4.2 path against the portable
// one on every length 0..300 at every misalignment.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <random>
#include <string_view>
#include <vector>

#include <quarry/io/crc32c.hpp>

using namespace quarry;

namespace {

std::vector<std::byte> filled(std::size_t n, unsigned char v) { return std::vector<std::byte>(n, std::byte{v}); }

std::vector<std::byte> random_bytes(std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::byte> out(n);
  for (auto& b : out) b = static_cast<std::byte>(rng() & 0xffu);
  return out;
}

}  // namespace

TEST_CASE("crc32c: check values (RFC 3720, iSCSI)") {
  INFO("implementation: " << detail::crc32c_implementation());
  CHECK(crc32c(std::string_view("123456789")) == 0xE3069283u);
  CHECK(crc32c(filled(32, 0x00)) == 0x8A9136AAu);
  CHECK(crc32c(filled(32, 0xFF)) == 0x62A8AB43u);
  std::vector<std::byte> inc(32), dec(32);
  for (int i = 0; i < 32; ++i) {
    inc[i] = static_cast<std::byte>(i);
    dec[i] = static_cast<std::byte>(31 - i);
  }
  CHECK(crc32c(inc) == 0x46DD794Eu);
  CHECK(crc32c(dec) == 0x113FDB5Cu);
  CHECK(crc32c(std::span<const std::byte>()) == 0u);
  CHECK(crc32c(std::span<const std::byte>(), 0x12345678u) == 0x12345678u);

  for (auto* fn : {&detail::crc32c_portable, &detail::crc32c_hardware}) {
    CHECK(fn(std::as_bytes(std::span<const char>("123456789", 9)), 0) == 0xE3069283u);
    CHECK(fn(filled(32, 0x00), 0) == 0x8A9136AAu);
    CHECK(fn(filled(32, 0xFF), 0) == 0x62A8AB43u);
  }
}

TEST_CASE("crc32c: incremental splits equal one shot") {
  const auto data = random_bytes(1000, 1);
  const std::uint32_t whole = crc32c(data);
  for (std::size_t split : {std::size_t{0}, std::size_t{1}, std::size_t{7}, std::size_t{8}, std::size_t{9}, std::size_t{500}, std::size_t{999},
                            std::size_t{1000}}) {
    const std::span<const std::byte> s(data);
    CHECK(crc32c(s.subspan(split), crc32c(s.first(split))) == whole);
    CHECK(detail::crc32c_portable(s.subspan(split), detail::crc32c_portable(s.first(split))) == whole);
    CHECK(detail::crc32c_hardware(s.subspan(split), detail::crc32c_hardware(s.first(split))) == whole);
  }
  // Byte by byte.
  std::uint32_t c = 0;
  for (std::byte b : data) c = crc32c(std::span<const std::byte>(&b, 1), c);
  CHECK(c == whole);
  // "123456789" in three pieces.
  CHECK(crc32c(std::string_view("789"), crc32c(std::string_view("456"), crc32c(std::string_view("123")))) == 0xE3069283u);
}

TEST_CASE("crc32c: hardware and portable agree on every length and alignment") {
  if (!detail::crc32c_hardware_available()) MESSAGE("no SSE4.2 here: crc32c_hardware falls back to the portable code");
  const auto data = random_bytes(300 + 16, 2);
  for (std::size_t misalign = 0; misalign < 16; ++misalign) {
    for (std::size_t len = 0; len <= 300; ++len) {
      const std::span<const std::byte> s(data.data() + misalign, len);
      const std::uint32_t p = detail::crc32c_portable(s);
      REQUIRE(detail::crc32c_hardware(s) == p);
      REQUIRE(crc32c(s) == p);
      REQUIRE(detail::crc32c_hardware(s, 0xdeadbeefu) == detail::crc32c_portable(s, 0xdeadbeefu));
    }
  }
  // A larger buffer, too.
  const auto big = random_bytes(1 << 20, 3);
  CHECK(detail::crc32c_hardware(big) == detail::crc32c_portable(big));
}

TEST_CASE("crc32c: QUARRY_FORCE_ISA=scalar selects the portable code") {
  const char* forced = std::getenv("QUARRY_FORCE_ISA");
  const bool scalar = forced != nullptr && std::string_view(forced) == "scalar";
  if (scalar || !detail::crc32c_hardware_available()) CHECK(detail::crc32c_implementation() == "portable");
  else CHECK(detail::crc32c_implementation() == "sse4.2");
}
