// Kernel launches and dynamic shared memory in a form that two compilers read:
//  - nvcc (the CUDA backend): QUARRY_LAUNCH(grid, block, shared_bytes, kernel)(args...) is
//    kernel<<<grid, block, shared_bytes>>>(args...), and QUARRY_DYNAMIC_SHARED(T, name) is
//    `extern __shared__ __align__(16) T name[]`;
//  - the host compiler with QUARRY_SIMT_EMULATED (tests/cuda_emulated: the SIMT emulator that
//    runs these kernels on the CPU, so that CI runs them where there is no GPU): a call of the
//    emulator's launch, and a pointer to the block's dynamic shared memory (aligned to 16 bytes
//    at least, as there).
// A kernel whose template arguments hold commas is written as the last argument, as is:
// QUARRY_LAUNCH(grid, 128, 0, decode_kernel<kD, kG, KvType::f16>)(args).
#pragma once

#if defined(QUARRY_SIMT_EMULATED)
#define QUARRY_LAUNCH(grid, block, shared_bytes, ...) ::quarry::simt::launch(grid, block, shared_bytes, #__VA_ARGS__, __VA_ARGS__)
#define QUARRY_DYNAMIC_SHARED(type, name) type* name = static_cast<type*>(::quarry::simt::dynamic_shared())
#else
#define QUARRY_LAUNCH(grid, block, shared_bytes, ...) __VA_ARGS__<<<grid, block, shared_bytes>>>
#define QUARRY_DYNAMIC_SHARED(type, name) extern __shared__ __align__(16) type name[]
#endif
