#include <quarry/quarry.hpp>
#include <fmt/core.h>
int main() {
  fmt::print("quarry {}: isa {}\n", QUARRY_VERSION_STRING, quarry::isa_name(quarry::active_isa()));
}
