// The host SIMT emulator's interface (tests/cuda_emulated/simt.cpp): what the CUDA shims of this
// folder call inside a kernel, the launch that src/cuda/launch.cuh expands to, and what its own
// tests inspect.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "driver_types.h"
#include "vector_types.h"

namespace quarry::simt {

/// The calling kernel thread's built-in variables (only inside a kernel run by launch).
const uint3& thread_idx() noexcept;
const uint3& block_idx() noexcept;
const dim3& block_dim() noexcept;
const dim3& grid_dim() noexcept;
/// The block's dynamic shared memory (the launch's shared_bytes, filled with 0xff bytes at the
/// start of each block, as uninitialised memory; so are static __shared__ variables).
void* dynamic_shared() noexcept;

enum class WarpOp : int { sync, shfl, shfl_xor, shfl_up, shfl_down, all, any, ballot, apply };

/// A warp collective: the calling lane waits until every lane of `mask` has reached a collective
/// of the same op, mask and width, then gets its result (shuffles: the source lane's `value`;
/// all / any / ballot: of the lanes' values as booleans). `arg` is the shuffle's lane, lane mask
/// or delta.
std::uint64_t warp_collective(WarpOp op, unsigned mask, std::uint64_t value, int arg, int width) noexcept;
/// __syncthreads: waits until every thread of the block has reached it.
void sync_threads() noexcept;
/// A warp-wide instruction: waits until all 32 lanes of the warp have called warp_apply with the
/// same fn, then runs fn once with their `data` pointers in lane order (fn reads and writes them).
void warp_apply(void (*fn)(void* const* lanes), void* data) noexcept;
/// PTX mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 (D = A B + C, in place in c), with the
/// instruction's fragment layout: lane (g = lane / 4, t = lane % 4) holds A's f16 pairs (g, 2t),
/// (g + 8, 2t), (g, 2t + 8), (g + 8, 2t + 8) in a0..a3, B's (k = 2t, n = g), (2t + 8, g) in b0, b1,
/// and C / D's (g, 2t), (g + 8, 2t) pairs in c; each element's sum in double, rounded to f32.
void mma_m16n8k16_f16_f32(float (&c)[4], unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0, unsigned b1) noexcept;

template <class T>
T shuffle(WarpOp op, unsigned mask, T v, int arg, int width) noexcept {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "a shuffle moves up to 8 bytes");
  std::uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  bits = warp_collective(op, mask, bits, arg, width);
  T r;
  std::memcpy(&r, &bits, sizeof(T));
  return r;
}

/// PTX's %globaltimer, the device's nanosecond clock: the host's steady clock, in ns.
std::uint64_t global_timer_ns() noexcept;

/// A pointer argument of a launch: its position (from 1) and value.
struct PointerArg {
  int position;
  const void* pointer;
};

/// Runs body(context) as every thread of every block of `grid` (blocks in order of x, then y,
/// then z; a block's threads as fibers on this thread). A launch that is not valid (block of 0
/// or more than 1024 threads, grid beyond CUDA's limits, more than 227 KiB of dynamic shared
/// memory), one with a pointer argument that is neither null nor device memory (a GPU would
/// fault on it: cudaErrorIllegalAddress), or whose threads fail to meet at a collective sets the
/// calling thread's last error (cudaGetLastError) and prints why to stderr, naming `kernel`.
/// Launches from several host threads take turns (static shared memory is one for the program).
void run_grid(const char* kernel, dim3 grid, dim3 block, std::size_t shared_bytes, const PointerArg* pointers, int n_pointers,
              void (*body)(void*), void* context) noexcept;

/// Whether p is null or points into (or just past the end of) memory cudaMalloc returned.
bool is_device_pointer(const void* p) noexcept;

/// What QUARRY_LAUNCH(grid, block, shared, kernel)(args...) is under the emulator: the arguments
/// converted to the kernel's parameter types (as a CUDA launch converts them), then run_grid
/// with those that are pointers. (Pointers inside struct parameters are not looked at.)
template <class... P>
class Launch {
 public:
  Launch(const char* name, dim3 grid, dim3 block, std::size_t shared_bytes, void (*kernel)(P...)) noexcept
      : name_(name), grid_(grid), block_(block), shared_(shared_bytes), kernel_(kernel) {}

  template <class... A>
  void operator()(A&&... args) const {
    static_assert(sizeof...(A) == sizeof...(P), "a kernel launch passes one argument per parameter");
    struct Call {
      void (*kernel)(P...);
      std::tuple<std::decay_t<P>...> params;
    } call{kernel_, {static_cast<std::decay_t<P>>(std::forward<A>(args))...}};
    std::array<PointerArg, sizeof...(P)> pointers{};
    int n = 0, position = 0;
    auto collect = [&](const auto& param) {
      ++position;
      if constexpr (std::is_pointer_v<std::decay_t<decltype(param)>>) pointers[static_cast<std::size_t>(n++)] = {position, param};
    };
    std::apply([&](const auto&... params) { (collect(params), ...); }, call.params);
    run_grid(
        name_, grid_, block_, shared_, pointers.data(), n,
        [](void* c) {
          auto* call = static_cast<Call*>(c);
          std::apply(call->kernel, call->params);  // each thread gets its own copies of the parameters
        },
        &call);
  }

 private:
  const char* name_;
  dim3 grid_, block_;
  std::size_t shared_;
  void (*kernel_)(P...);
};

template <class... P>
Launch<P...> launch(dim3 grid, dim3 block, std::size_t shared_bytes, const char* name, void (*kernel)(P...)) noexcept {
  return Launch<P...>(name, grid, block, shared_bytes, kernel);
}

/// Device memory the emulator holds now: allocations and their bytes (for leak checks).
std::size_t live_allocations() noexcept;
std::size_t live_bytes() noexcept;

/// The order in which a block's warps, and a warp's lanes, take their turns on this host thread:
/// forward (the first first; the default) or reverse (the default where the environment has
/// QUARRY_SIMT_ORDER=reverse). A kernel whose result depends on it has a race between its
/// threads: a missing __syncthreads or __syncwarp before reading what another thread wrote shows
/// in one order or the other.
enum class Order { forward, reverse };
void set_thread_order(Order order) noexcept;

/// A launch as the host code asked for it: the kernel as written at QUARRY_LAUNCH, grid, block
/// and dynamic shared memory (whether it ran or failed).
struct LaunchRecord {
  std::string kernel;
  dim3 grid, block;
  std::size_t shared_bytes = 0;
};
/// This host thread's last launches (at most 64), oldest first: what host code asked of the
/// device (a test can check the grid a heuristic chose).
std::vector<LaunchRecord> recent_launches();
void clear_recent_launches() noexcept;

/// Why this host thread's last launch failed ("" when it did not); also printed to stderr unless
/// printing is turned off (for tests that make launches fail on purpose).
std::string last_failure();
void set_failure_printing(bool on) noexcept;

}  // namespace quarry::simt
