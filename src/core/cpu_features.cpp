// CPUID-based feature detection (x86-64) and the architecture's guarantees (AArch64).
#include "quarry/core/cpu_features.hpp"

#include <cstring>

#if defined(__x86_64__) || defined(_M_X64)
#define QUARRY_X86_64 1
#if defined(_MSC_VER) && !defined(__clang__)
#include <intrin.h>
#else
#include <cpuid.h>
#endif
#endif

namespace quarry {

namespace {

#ifdef QUARRY_X86_64
struct Regs {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
};

Regs cpuid(unsigned leaf, unsigned subleaf) noexcept {
  Regs r;
#if defined(_MSC_VER) && !defined(__clang__)
  int out[4];
  __cpuidex(out, static_cast<int>(leaf), static_cast<int>(subleaf));
  r = {static_cast<unsigned>(out[0]), static_cast<unsigned>(out[1]), static_cast<unsigned>(out[2]), static_cast<unsigned>(out[3])};
#else
  __cpuid_count(leaf, subleaf, r.eax, r.ebx, r.ecx, r.edx);
#endif
  return r;
}

// XCR0: which register states the OS saves on a context switch. Only meaningful when
// CPUID.1:ECX.OSXSAVE is set. Read with inline asm so this file needs no -mxsave.
unsigned long long xgetbv0() noexcept {
#if defined(_MSC_VER) && !defined(__clang__)
  return _xgetbv(0);
#else
  unsigned eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
#endif
}

bool bit(unsigned reg, int b) noexcept { return ((reg >> b) & 1u) != 0; }

CpuFeatures detect() noexcept {
  CpuFeatures f;
  const Regs r0 = cpuid(0, 0);
  char vendor[13] = {};
  std::memcpy(vendor + 0, &r0.ebx, 4);
  std::memcpy(vendor + 4, &r0.edx, 4);
  std::memcpy(vendor + 8, &r0.ecx, 4);
  f.vendor = vendor;
  const unsigned max_leaf = r0.eax;

  const Regs ext0 = cpuid(0x80000000u, 0);
  if (ext0.eax >= 0x80000004u) {
    char brand[49] = {};
    for (unsigned i = 0; i < 3; ++i) {
      const Regs r = cpuid(0x80000002u + i, 0);
      std::memcpy(brand + 16 * i + 0, &r.eax, 4);
      std::memcpy(brand + 16 * i + 4, &r.ebx, 4);
      std::memcpy(brand + 16 * i + 8, &r.ecx, 4);
      std::memcpy(brand + 16 * i + 12, &r.edx, 4);
    }
    std::string b = brand;
    const auto first = b.find_first_not_of(' ');
    const auto last = b.find_last_not_of(' ');
    f.brand = first == std::string::npos ? std::string() : b.substr(first, last - first + 1);
  }
  if (max_leaf < 1) return f;

  const Regs r1 = cpuid(1, 0);
  f.sse42 = bit(r1.ecx, 20);
  const bool osxsave = bit(r1.ecx, 27);
  const unsigned long long xcr0 = osxsave ? xgetbv0() : 0;
  const bool os_ymm = (xcr0 & 0x6) == 0x6;     // XMM and YMM state
  const bool os_zmm = (xcr0 & 0xe6) == 0xe6;   // plus opmask, ZMM_Hi256, Hi16_ZMM
  f.avx = bit(r1.ecx, 28) && os_ymm;
  f.fma = bit(r1.ecx, 12) && os_ymm;
  f.f16c = bit(r1.ecx, 29) && os_ymm;

  if (max_leaf >= 7) {
    const Regs r7 = cpuid(7, 0);
    f.avx2 = bit(r7.ebx, 5) && os_ymm;
    f.bmi2 = bit(r7.ebx, 8);
    f.avx512f = bit(r7.ebx, 16) && os_zmm;
    f.avx512dq = bit(r7.ebx, 17) && os_zmm;
    f.avx512cd = bit(r7.ebx, 28) && os_zmm;
    f.avx512bw = bit(r7.ebx, 30) && os_zmm;
    f.avx512vl = bit(r7.ebx, 31) && os_zmm;
    f.avx512vnni = bit(r7.ecx, 11) && os_zmm;
    if (r7.eax >= 1) {
      const Regs r71 = cpuid(7, 1);
      f.avxvnni = bit(r71.eax, 4) && os_ymm;
      f.avx512bf16 = bit(r71.eax, 5) && os_zmm;
    }
  }
  return f;
}
#elif defined(__aarch64__)
CpuFeatures detect() noexcept {
  CpuFeatures f;
  f.vendor = "aarch64";
  f.neon = true;  // Advanced SIMD is mandatory in AArch64
  return f;
}
#else
CpuFeatures detect() noexcept {
  CpuFeatures f;
  f.vendor = "unknown";
  return f;
}
#endif

}  // namespace

std::string CpuFeatures::to_string() const {
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(sse42, "sse4.2");
  add(avx, "avx");
  add(avx2, "avx2");
  add(fma, "fma");
  add(f16c, "f16c");
  add(bmi2, "bmi2");
  add(avx512f, "avx512f");
  add(avx512bw, "avx512bw");
  add(avx512vl, "avx512vl");
  add(avx512dq, "avx512dq");
  add(avx512cd, "avx512cd");
  add(avx512vnni, "avx512vnni");
  add(avx512bf16, "avx512bf16");
  add(avxvnni, "avxvnni");
  add(neon, "neon");
  return s.empty() ? std::string("(none)") : s;
}

const CpuFeatures& cpu_features() noexcept {
  static const CpuFeatures features = detect();
  return features;
}

}  // namespace quarry
