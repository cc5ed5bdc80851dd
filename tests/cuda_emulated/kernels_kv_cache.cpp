// src/cuda/kv_cache_kernels.cu compiled by the host compiler for the SIMT emulator.
#include "kv_cache_kernels.cu"
