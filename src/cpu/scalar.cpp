// The scalar kernel set. Compiled with no extra flags: it runs on every CPU.
// Nothing else in the library is compiled with these flags; dispatch.cpp calls in here only
// when the CPU supports scalar.
#include "cpu/kernels/core.hpp"
#include "cpu/kernels/index.hpp"
#include "cpu/kernels/kv.hpp"
#include "cpu/kernels/quant.hpp"

namespace quarry::detail {

template <>
const CoreKernels KernelTable<CoreKernels, Isa::scalar>::value = cpu_kernels::make_core_kernels<simd::scalar>();
template <>
const QuantKernels KernelTable<QuantKernels, Isa::scalar>::value = cpu_kernels::make_quant_kernels<simd::scalar>();
template <>
const IndexKernels KernelTable<IndexKernels, Isa::scalar>::value = cpu_kernels::make_index_kernels<simd::scalar>();
template <>
const KvKernels KernelTable<KvKernels, Isa::scalar>::value = cpu_kernels::make_kv_kernels<simd::scalar>();

}  // namespace quarry::detail
