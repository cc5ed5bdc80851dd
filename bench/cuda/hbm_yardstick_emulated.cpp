// hbm_yardstick.cu compiled by the host compiler for the SIMT emulator (tests/cuda_emulated), so
// that the GPU benchmarks run at --tiny sizes in the test suite.
#include "hbm_yardstick.cu"
