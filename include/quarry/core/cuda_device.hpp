// Finding CUDA devices: how many there are and what they are. Part of the quarry::cuda component.
//
// The probe never throws and treats any CUDA error (no driver, a driver older than the runtime,
// no device, a device that fails to initialise) as "no device", so a program can ask first and
// fall back to the CPU. No CUDA header is included here.
#pragma once

#include <cstddef>
#include <string>

#include "quarry/config.hpp"
#include "quarry/core/status.hpp"

// (QUARRY_SIMT_EMULATED: quarry's own tests of the CUDA backend on the host SIMT emulator,
// tests/cuda_emulated, which stands in for quarry::cuda in any build.)
#if !QUARRY_BUILT_CUDA && !defined(QUARRY_SIMT_EMULATED)
#error "this quarry was built without its CUDA backend (QUARRY_CUDA=OFF or no nvcc): quarry::cuda is not available"
#endif

namespace quarry {

/// What a CUDA device is: enough to print a benchmark's machine line or to pick a device.
struct CudaDeviceInfo {
  /// The device ordinal, as cudaSetDevice takes it.
  int ordinal = 0;
  /// The marketing name ("NVIDIA H200").
  std::string name;
  /// Compute capability, major and minor (9 and 0 for sm_90).
  ///@{
  int compute_capability_major = 0;
  int compute_capability_minor = 0;
  ///@}
  /// Streaming multiprocessors.
  int sm_count = 0;
  /// Global memory, in bytes.
  std::size_t total_memory_bytes = 0;
  /// The CUDA runtime quarry was linked against and the installed driver's CUDA version,
  /// both as 1000 * major + 10 * minor (13000 is CUDA 13.0).
  ///@{
  int runtime_version = 0;
  int driver_version = 0;
  ///@}
};

/// The number of usable CUDA devices; 0 when the CUDA runtime reports any error.
int cuda_device_count() noexcept;

/// True when at least one CUDA device is usable (cuda_device_count() > 0).
inline bool cuda_available() noexcept { return cuda_device_count() > 0; }

/// What device `ordinal` is. The error (device_error, or out_of_range for a bad ordinal) names
/// the CUDA error, so with no device it says why ("cudaErrorNoDevice: no CUDA-capable device...").
result<CudaDeviceInfo> cuda_device_info(int ordinal = 0);

/// The device the calling thread allocates on and launches to (cudaGetDevice); -1 on error.
int cuda_current_device() noexcept;

/// Makes `ordinal` the calling thread's current device (cudaSetDevice): later device tensors
/// are allocated there. The error names the ordinal and the CUDA error.
status cuda_set_current_device(int ordinal);

}  // namespace quarry
