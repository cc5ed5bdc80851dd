// src/cuda/paged_attention_kernels.cu compiled by the host compiler for the SIMT emulator.
#include "paged_attention_kernels.cu"
