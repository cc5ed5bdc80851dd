// Picks the ISA once: the best kernel set built in and supported by this CPU, unless
// QUARRY_FORCE_ISA asks for another that is runnable here.
#include <array>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "quarry/config.hpp"
#include "quarry/core/cpu_features.hpp"

namespace quarry {

namespace {

constexpr std::array<Isa, 4> kAllIsas = {Isa::scalar, Isa::neon, Isa::avx2, Isa::avx512};

bool cpu_can_run(Isa isa) noexcept {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case Isa::scalar: return true;
    case Isa::neon: return f.neon;
    case Isa::avx2: return f.avx2 && f.fma && f.f16c && f.bmi2;
    case Isa::avx512:
      return f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx512cd && f.avx512vnni && f.avx2 && f.fma &&
             f.f16c && f.bmi2;
  }
  return false;
}

struct SupportedList {
  std::array<Isa, 4> isas{};
  std::size_t count = 0;
};

const SupportedList& supported() noexcept {
  static const SupportedList list = [] {
    SupportedList l;
    for (Isa isa : kAllIsas)
      if (isa_built(isa) && cpu_can_run(isa)) l.isas[l.count++] = isa;
    return l;
  }();
  return list;
}

Isa choose_active() noexcept {
  const Isa best = best_isa();
  const char* forced = std::getenv("QUARRY_FORCE_ISA");
  if (forced == nullptr || *forced == '\0') return best;
  const auto parsed = parse_isa(forced);
  if (!parsed) {
    std::fprintf(stderr, "quarry: QUARRY_FORCE_ISA=%s is not one of scalar, neon, avx2, avx512; using %s\n", forced,
                 isa_name(best).data());
    return best;
  }
  if (!isa_supported(*parsed)) {
    std::fprintf(stderr, "quarry: QUARRY_FORCE_ISA=%s: %s; using %s\n", forced,
                 isa_built(*parsed) ? "this CPU cannot run it" : "this build of quarry has no kernels for it",
                 isa_name(best).data());
    return best;
  }
  return *parsed;
}

}  // namespace

std::string_view isa_name(Isa isa) noexcept {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::neon: return "neon";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
  }
  return "unknown";
}

std::optional<Isa> parse_isa(std::string_view name) noexcept {
  for (Isa isa : kAllIsas)
    if (isa_name(isa) == name) return isa;
  return std::nullopt;
}

bool isa_built(Isa isa) noexcept {
  switch (isa) {
    case Isa::scalar: return true;
    case Isa::neon: return QUARRY_BUILT_NEON != 0;
    case Isa::avx2: return QUARRY_BUILT_AVX2 != 0;
    case Isa::avx512: return QUARRY_BUILT_AVX512 != 0;
  }
  return false;
}

bool isa_supported(Isa isa) noexcept { return isa_built(isa) && cpu_can_run(isa); }

std::span<const Isa> supported_isas() noexcept { return {supported().isas.data(), supported().count}; }

Isa best_isa() noexcept { return supported_isas().back(); }

Isa active_isa() noexcept {
  static const Isa isa = choose_active();
  return isa;
}

}  // namespace quarry
