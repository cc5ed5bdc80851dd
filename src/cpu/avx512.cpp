// The avx512 kernel set. Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512cd and the AVX2 flags.
// Nothing else in the library is compiled with these flags; dispatch.cpp calls in here only
// when the CPU supports avx512.
#include "cpu/kernels/core.hpp"
#include "cpu/kernels/index.hpp"
#include "cpu/kernels/kv.hpp"
#include "cpu/kernels/quant.hpp"

namespace quarry::detail {

template <>
const CoreKernels KernelTable<CoreKernels, Isa::avx512>::value = cpu_kernels::make_core_kernels<simd::avx512>();
template <>
const QuantKernels KernelTable<QuantKernels, Isa::avx512>::value = cpu_kernels::make_quant_kernels<simd::avx512>();
template <>
const IndexKernels KernelTable<IndexKernels, Isa::avx512>::value = cpu_kernels::make_index_kernels<simd::avx512>();
template <>
const KvKernels KernelTable<KvKernels, Isa::avx512>::value = cpu_kernels::make_kv_kernels<simd::avx512>();

}  // namespace quarry::detail
