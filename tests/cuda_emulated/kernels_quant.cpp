// src/cuda/quant_kernels.cu compiled by the host compiler for the SIMT emulator (as nvcc does, with
// cuda_runtime.h included first).
#include <cuda_runtime.h>

#include "quant_kernels.cu"
