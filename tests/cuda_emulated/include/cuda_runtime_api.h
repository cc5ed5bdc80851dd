// The host API of the CUDA runtime that quarry's CUDA backend calls, implemented by the host SIMT
// emulator (tests/cuda_emulated/simt.cpp): one device, whose memory is the host's (every
// allocation tracked, so that a copy or free that is not of device memory is an error), and
// kernels run on the calling thread when launched (every call is synchronous).
#pragma once

#include <cstddef>

#include "driver_types.h"

cudaError_t cudaGetLastError();
cudaError_t cudaPeekAtLastError();
const char* cudaGetErrorName(cudaError_t error);
const char* cudaGetErrorString(cudaError_t error);

cudaError_t cudaGetDeviceCount(int* count);
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device);
cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device);
cudaError_t cudaRuntimeGetVersion(int* version);
cudaError_t cudaDriverGetVersion(int* version);
cudaError_t cudaDeviceSynchronize();
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaMemGetInfo(std::size_t* free, std::size_t* total);

cudaError_t cudaMalloc(void** ptr, std::size_t bytes);
cudaError_t cudaMallocAsync(void** ptr, std::size_t bytes, cudaStream_t stream);
cudaError_t cudaFree(void* ptr);
cudaError_t cudaFreeAsync(void* ptr, cudaStream_t stream);
cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind, cudaStream_t stream = nullptr);
cudaError_t cudaMemcpyPeer(void* dst, int dst_device, const void* src, int src_device, std::size_t bytes);
cudaError_t cudaMemset(void* ptr, int value, std::size_t bytes);
cudaError_t cudaMemsetAsync(void* ptr, int value, std::size_t bytes, cudaStream_t stream = nullptr);

// Events. Work is done when it is queued here, so an event records the host's steady clock
// (everything queued before it has finished then) and is complete at once: elapsed times are of
// the emulation on the host, not of any GPU. Destroying an event twice, or timing one that was
// never recorded, is an error (cudaErrorInvalidResourceHandle), as on a device.
cudaError_t cudaEventCreate(cudaEvent_t* event);
cudaError_t cudaEventDestroy(cudaEvent_t event);
cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t stream = nullptr);
cudaError_t cudaEventSynchronize(cudaEvent_t event);
cudaError_t cudaEventQuery(cudaEvent_t event);
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end);

/// Blocks of `block_size` threads and `dynamic_shared` bytes an SM of an H200 holds at once
/// (at most 32 blocks, 2,048 threads and 228 KiB of shared memory per SM); the kernel's own
/// registers and static shared memory are not counted.
template <class T>
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, T*, int block_size, std::size_t dynamic_shared) {
  if (blocks == nullptr || block_size < 1 || block_size > 1024) return cudaErrorInvalidValue;
  int n = 2048 / block_size < 32 ? 2048 / block_size : 32;
  if (dynamic_shared > 0 && static_cast<std::size_t>(n) * dynamic_shared > 228 * 1024) n = static_cast<int>(228 * 1024 / dynamic_shared);
  *blocks = n;
  return cudaSuccess;
}

/// Accepted and ignored (the emulator's dynamic shared memory is limited only by the opt-in
/// maximum of an H200, 227 KiB).
template <class T>
cudaError_t cudaFuncSetAttribute(T*, cudaFuncAttribute, int) {
  return cudaSuccess;
}
