# Decides which per-ISA kernel translation units (src/cpu/<isa>.cpp) are built, and with which
# flags. Each is compiled with its own ISA's flags and nothing else is; the choice among them is
# made once at run time from CPUID (src/cpu/dispatch.cpp), so one binary runs on any x86-64.
include(CheckCXXCompilerFlag)

set(QUARRY_BUILT_AVX2 0)
set(QUARRY_BUILT_AVX512 0)
set(QUARRY_BUILT_NEON 0)
set(QUARRY_ISA_AVX2_FLAGS "")
set(QUARRY_ISA_AVX512_FLAGS "")

string(TOLOWER "${CMAKE_SYSTEM_PROCESSOR}" _quarry_proc)
if(_quarry_proc MATCHES "^(x86_64|amd64|x64)$")
  if(MSVC)
    set(QUARRY_ISA_AVX2_FLAGS /arch:AVX2)
    set(QUARRY_ISA_AVX512_FLAGS /arch:AVX512)
    set(QUARRY_BUILT_AVX2 1)
    set(QUARRY_BUILT_AVX512 1)
  else()
    set(QUARRY_ISA_AVX2_FLAGS -mavx2 -mfma -mf16c -mbmi2)
    set(QUARRY_ISA_AVX512_FLAGS -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512cd -mavx512vnni
                                -mavx2 -mfma -mf16c -mbmi2)
    check_cxx_compiler_flag("-mavx2 -mfma -mf16c" QUARRY_CXX_HAS_AVX2)
    check_cxx_compiler_flag("-mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni" QUARRY_CXX_HAS_AVX512)
    if(QUARRY_CXX_HAS_AVX2)
      set(QUARRY_BUILT_AVX2 1)
    endif()
    if(QUARRY_CXX_HAS_AVX512)
      set(QUARRY_BUILT_AVX512 1)
    endif()
  endif()
  # The claim above holds only if the baseline flags (CMAKE_CXX_FLAGS, e.g. -march=native or
  # -mavx2 put there by a user or a package manager profile) leave AVX out: they apply to every
  # file, the scalar kernels and the dispatcher included, so the library would need that CPU.
  include(CheckCXXSourceCompiles)
  unset(QUARRY_BASELINE_IS_PORTABLE CACHE)  # re-checked on every configure: the flags may change
  check_cxx_source_compiles("
#if defined(__AVX__) || defined(__AVX2__) || defined(__AVX512F__)
#error the baseline flags enable AVX
#endif
int main() { return 0; }" QUARRY_BASELINE_IS_PORTABLE)
  if(NOT QUARRY_BASELINE_IS_PORTABLE)
    message(WARNING "quarry: the compiler flags for every file (CMAKE_CXX_FLAGS: '${CMAKE_CXX_FLAGS}') "
                    "enable AVX or later, so this build runs only on CPUs that have it, whatever "
                    "the run-time dispatch picks. Leave -march/-mavx*/ /arch out of CMAKE_CXX_FLAGS "
                    "for a binary that runs on any x86-64.")
  endif()
elseif(_quarry_proc MATCHES "^(aarch64|arm64)$")
  set(QUARRY_BUILT_NEON 1)  # Advanced SIMD is part of the AArch64 base ISA: no extra flags
endif()

# quarry_isa_compile_options(<out-var> <isa>): the options for a file compiled for one ISA
# (avx2, avx512; the avx512 level includes VNNI), the same for the library's kernels and the benchmarks' probes.
function(quarry_isa_compile_options out isa)
  if(isa STREQUAL "avx2")
    set(opts ${QUARRY_ISA_AVX2_FLAGS})
  elseif(isa MATCHES "^avx512")
    set(opts ${QUARRY_ISA_AVX512_FLAGS})
    if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
      # GCC 12's avx512fintrin.h trips its own -Wmaybe-uninitialized (_mm512_undefined_*).
      list(APPEND opts -Wno-uninitialized -Wno-maybe-uninitialized)
    endif()
  else()
    message(FATAL_ERROR "quarry_isa_compile_options: unknown isa '${isa}'")
  endif()
  set(${out} ${opts} PARENT_SCOPE)
endfunction()

if(QUARRY_CUDA)
  set(QUARRY_BUILT_CUDA 1)
else()
  set(QUARRY_BUILT_CUDA 0)
endif()
message(STATUS "quarry: kernel sets built: scalar=1 avx2=${QUARRY_BUILT_AVX2} "
               "avx512=${QUARRY_BUILT_AVX512} neon=${QUARRY_BUILT_NEON}")
