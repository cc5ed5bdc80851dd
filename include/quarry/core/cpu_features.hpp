// CPU feature detection and the SIMD level ("ISA") the CPU kernels run at.
//
// The level is picked once, on first use, as the best kernel set that was built into the
// library and that this CPU (and its operating system) supports. `QUARRY_FORCE_ISA=scalar|avx2|
// avx512|neon` in the environment forces a level; forcing one the machine cannot run is refused
// with a message on stderr and the best supported level is used instead.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace quarry {

/// What the CPU can do, from CPUID (x86-64) or the architecture (AArch64). AVX and AVX-512
/// flags are only set when the operating system also saves the wider registers (XGETBV).
struct CpuFeatures {
  std::string vendor;  ///< "GenuineIntel", "AuthenticAMD", or the architecture name
  std::string brand;   ///< the marketing name, e.g. "AMD EPYC 9654 96-Core Processor"
  bool sse42 = false;       ///< SSE4.2
  bool avx = false;         ///< AVX (256-bit float)
  bool avx2 = false;        ///< AVX2 (256-bit integer)
  bool fma = false;         ///< FMA3 fused multiply-add
  bool f16c = false;        ///< F16C f16 <-> f32 conversion
  bool bmi2 = false;        ///< BMI2 bit manipulation
  bool avx512f = false;     ///< AVX-512 Foundation
  bool avx512bw = false;    ///< AVX-512 byte and word
  bool avx512vl = false;    ///< AVX-512 on 128/256-bit registers
  bool avx512dq = false;    ///< AVX-512 doubleword and quadword
  bool avx512cd = false;    ///< AVX-512 conflict detection
  bool avx512vnni = false;  ///< vpdpbusd on 512-bit registers
  bool avx512bf16 = false;  ///< AVX-512 bf16 dot products
  bool avxvnni = false;     ///< VEX-encoded vpdpbusd (Alder Lake and later)
  bool neon = false;        ///< AArch64 Advanced SIMD

  /// "avx2 fma f16c avx512f ..." : the flags that are set, in this struct's order.
  std::string to_string() const;
};

/// The features of the CPU this process runs on; detected once, then cached.
const CpuFeatures& cpu_features() noexcept;

/// A SIMD level with a kernel set of its own (`src/cpu/<isa>.cpp`), from least to most capable.
enum class Isa : std::uint8_t {
  scalar = 0,  ///< portable C++: the reference every other kernel is tested against
  neon = 1,    ///< AArch64 Advanced SIMD
  avx2 = 2,    ///< x86-64 AVX2 + FMA + F16C (Haswell, Zen 1 and later)
  avx512 = 3,  ///< x86-64 AVX-512 F/BW/VL/DQ/CD + VNNI (Ice Lake, Cascade Lake, Zen 4 and later;
               ///< Skylake-SP/X, which lack VNNI, run the avx2 kernels)
};

/// "scalar", "neon", "avx2", "avx512".
std::string_view isa_name(Isa isa) noexcept;
/// The Isa called `name`, or nullopt.
std::optional<Isa> parse_isa(std::string_view name) noexcept;
/// Whether this library was built with a kernel set for `isa`.
bool isa_built(Isa isa) noexcept;
/// Whether `isa` was built and the CPU can run it.
bool isa_supported(Isa isa) noexcept;
/// Every level built and runnable here, scalar first.
std::span<const Isa> supported_isas() noexcept;
/// The best level built and runnable here, ignoring QUARRY_FORCE_ISA.
Isa best_isa() noexcept;
/// The level the kernels run at: QUARRY_FORCE_ISA when set and runnable, else best_isa().
/// Chosen on the first call, then fixed for the life of the process.
Isa active_isa() noexcept;

}  // namespace quarry
