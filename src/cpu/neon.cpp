// The neon kernel set. Compiled with the AArch64 base ISA (Advanced SIMD is always there).
// Nothing else in the library is compiled with these flags; dispatch.cpp calls in here only
// when the CPU supports neon.
#include "cpu/kernels/core.hpp"
#include "cpu/kernels/index.hpp"
#include "cpu/kernels/kv.hpp"
#include "cpu/kernels/quant.hpp"

namespace quarry::detail {

template <>
const CoreKernels KernelTable<CoreKernels, Isa::neon>::value = cpu_kernels::make_core_kernels<simd::neon>();
template <>
const QuantKernels KernelTable<QuantKernels, Isa::neon>::value = cpu_kernels::make_quant_kernels<simd::neon>();
template <>
const IndexKernels KernelTable<IndexKernels, Isa::neon>::value = cpu_kernels::make_index_kernels<simd::neon>();
template <>
const KvKernels KernelTable<KvKernels, Isa::neon>::value = cpu_kernels::make_kv_kernels<simd::neon>();

}  // namespace quarry::detail
