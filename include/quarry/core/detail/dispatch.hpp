// The one dispatch mechanism every CPU kernel uses.
//
// A module declares a table of function pointers (e.g. CoreKernels). Each per-ISA translation
// unit src/cpu/<isa>.cpp, compiled with that ISA's flags, instantiates the module's kernel
// templates for its xsimd arch tag and defines the table as
//     template <> const CoreKernels KernelTable<CoreKernels, Isa::avx2>::value = {...};
// kernel_table<CoreKernels>(isa) returns the table of any built ISA (the conformance test walks
// them all); kernels<CoreKernels>() returns the active ISA's table, resolved once.
#pragma once

#include "quarry/config.hpp"
#include "quarry/core/cpu_features.hpp"

namespace quarry::detail {

/// The kernel table of type Table compiled for ISA I. Defined in src/cpu/<isa>.cpp.
template <class Table, Isa I>
struct KernelTable {
  static const Table value;
};

/// Declares, for a module's table type, the specialisations that src/cpu/<isa>.cpp define.
/// Use once, inside namespace quarry::detail, in the header that declares the table.
#define QUARRY_DECLARE_KERNEL_TABLES(Table)                                             \
  template <>                                                                           \
  const Table KernelTable<Table, ::quarry::Isa::scalar>::value;       \
  QUARRY_DETAIL_DECLARE_IF(QUARRY_BUILT_AVX2, Table, avx2)                              \
  QUARRY_DETAIL_DECLARE_IF(QUARRY_BUILT_AVX512, Table, avx512)                          \
  QUARRY_DETAIL_DECLARE_IF(QUARRY_BUILT_NEON, Table, neon)

#define QUARRY_DETAIL_DECLARE_IF(built, Table, isa) QUARRY_DETAIL_DECLARE_IF_I(built, Table, isa)
#define QUARRY_DETAIL_DECLARE_IF_I(built, Table, isa) QUARRY_DETAIL_DECLARE_IF_##built(Table, isa)
#define QUARRY_DETAIL_DECLARE_IF_0(Table, isa)
#define QUARRY_DETAIL_DECLARE_IF_1(Table, isa) \
  template <>                                  \
  const Table KernelTable<Table, ::quarry::Isa::isa>::value;

/// The table of `isa`, or nullptr when that ISA's kernels were not built into this library.
/// It does not check that the CPU supports `isa`: see isa_supported().
template <class Table>
const Table* kernel_table(Isa isa) noexcept {
  switch (isa) {
    case Isa::scalar: return &KernelTable<Table, Isa::scalar>::value;
#if QUARRY_BUILT_AVX2
    case Isa::avx2: return &KernelTable<Table, Isa::avx2>::value;
#endif
#if QUARRY_BUILT_AVX512
    case Isa::avx512: return &KernelTable<Table, Isa::avx512>::value;
#endif
#if QUARRY_BUILT_NEON
    case Isa::neon: return &KernelTable<Table, Isa::neon>::value;
#endif
    default: return nullptr;
  }
}

/// The active ISA's table (see active_isa()); resolved on first use.
template <class Table>
const Table& kernels() noexcept {
  static const Table* const table = kernel_table<Table>(active_isa());
  return *table;
}

}  // namespace quarry::detail
