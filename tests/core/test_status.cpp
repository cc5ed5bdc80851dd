#include <doctest/doctest.h>
#include <quarry/quarry.hpp>
TEST_CASE("placeholder") { CHECK(true); }
