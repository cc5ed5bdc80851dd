// The avx512 kernel set. Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512cd and the AVX2 flags.
// Nothing else in the library is compiled with these flags; dispatch.cpp calls in here only
// when the CPU supports avx512.
#include "cpu/kernels/core.hpp"

namespace quarry::detail {

template <>
const CoreKernels KernelTable<CoreKernels, Isa::avx512>::value = cpu_kernels::make_core_kernels<simd::avx512>();

}  // namespace quarry::detail
