// The avx2 kernel set. Compiled with -mavx2 -mfma -mf16c -mbmi2 (cmake/QuarryIsa.cmake).
// Nothing else in the library is compiled with these flags; dispatch.cpp calls in here only
// when the CPU supports avx2.
#include "cpu/kernels/core.hpp"
#include "cpu/kernels/index.hpp"
#include "cpu/kernels/kv.hpp"
#include "cpu/kernels/quant.hpp"

namespace quarry::detail {

template <>
const CoreKernels KernelTable<CoreKernels, Isa::avx2>::value = cpu_kernels::make_core_kernels<simd::avx2>();
template <>
const QuantKernels KernelTable<QuantKernels, Isa::avx2>::value = cpu_kernels::make_quant_kernels<simd::avx2>();
template <>
const IndexKernels KernelTable<IndexKernels, Isa::avx2>::value = cpu_kernels::make_index_kernels<simd::avx2>();
template <>
const KvKernels KernelTable<KvKernels, Isa::avx2>::value = cpu_kernels::make_kv_kernels<simd::avx2>();

}  // namespace quarry::detail
