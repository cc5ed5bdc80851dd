// The host SIMT emulator: kernels of src/cuda compiled by the host compiler (include/ holds the
// CUDA headers they include) and run on the CPU, one block at a time, its threads as fibers; and
// the CUDA runtime API over host memory. So the CUDA backend's own tests run, kernels and host
// code together, on machines without a GPU (CI), with AddressSanitizer watching device memory.
//
// What it checks beyond the results: threads that do not meet at a collective (a lane that
// exits or waits elsewhere while its warp shuffles, a __syncthreads not every thread reaches,
// lanes at different collectives), launch configurations CUDA refuses, and copies, sets and
// frees whose "device" side is not device memory; under ThreadSanitizer, accesses that no
// barrier orders, between a block's threads and between blocks (below). What it does not model:
// timing, concurrency within a warp between collectives (threads run one after another, so a
// kernel that needs a __syncwarp or __syncthreads it lacks may still give the right results; run
// it in reverse order, or under TSan), memory spaces (a kernel reading host memory is not
// caught), and the fast-math intrinsics' last bits.
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <new>
#include <set>
#include <string>
#include <vector>

#include "cuda_runtime_api.h"
#include "quarry/core/float16.hpp"
#include "quarry_simt.hpp"

#if defined(__SANITIZE_ADDRESS__)
#define QUARRY_SIMT_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define QUARRY_SIMT_ASAN 1
#endif
#endif
#if defined(QUARRY_SIMT_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
// ThreadSanitizer as CUDA's racecheck (tests/cuda_emulated/CMakeLists.txt defines QUARRY_SIMT_TSAN
// in a -fsanitize=thread build and compiles this file without the instrumentation, so that the
// emulator's own bookkeeping is not watched): each kernel thread is a TSan fiber, switched to
// without synchronization, and the only happens-before edges between the threads of a block are
// the ones CUDA's memory model gives: __syncthreads, and __syncwarp between the lanes of its mask
// (not shuffles or votes, which order no memory). The host's work before a launch happens before
// every block's threads, and every block's threads before the host's next step after the launch.
// Blocks, which run one after another here, are not ordered among themselves, as on a GPU: the
// threads of a block are the fibers of one of kFiberSets sets (the block's index picks it), and
// every block starts on shared memory TSan has forgotten. So a kernel thread that reads what
// another wrote, in its block or another, shared or global memory alike, without one of those
// barriers between them is reported as a data race, whichever order the emulator ran them in.
// Blocks of one set are ordered (one fiber ran both), so a race between two blocks is seen when
// their sets differ: always for the first kFiberSets blocks, for 2 of 3 pairs of the others.
#if defined(QUARRY_SIMT_TSAN)
#include <sanitizer/tsan_interface.h>
// The runtime's own (GCC's and LLVM's), not in the public header: while a thread ignores, its
// reads and writes, allocations and frees are not recorded.
extern "C" void __tsan_ignore_thread_begin();
extern "C" void __tsan_ignore_thread_end();
// Its interface for a Java VM's heap, also not in GCC's headers: the one public way to make TSan
// forget the accesses to a range it does not own (static shared memory: forget_shared_accesses).
extern "C" void __tsan_java_init(unsigned long heap_begin, unsigned long heap_size);
extern "C" void __tsan_java_alloc(unsigned long ptr, unsigned long size);
extern "C" void __tsan_java_free(unsigned long ptr, unsigned long size);
#endif

// The stack switch: a few instructions on x86-64; ucontext (a system call per switch) elsewhere,
// or where QUARRY_SIMT_UCONTEXT asks for it.
#if defined(__x86_64__) && !defined(QUARRY_SIMT_UCONTEXT)
#define QUARRY_SIMT_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

// The static __shared__ variables of every kernel in the program (include/cuda_runtime.h puts
// them in this section; the linker defines its bounds, weak: a program may have none).
extern "C" {
extern unsigned char __start_quarry_simt_shared[] __attribute__((weak));
extern unsigned char __stop_quarry_simt_shared[] __attribute__((weak));
}

namespace quarry::simt {
namespace {

// ---- Fibers: a stack each, and a switch between stacks. ----

#if defined(QUARRY_SIMT_ASM_SWITCH)
// Saves the callee-saved registers on the current stack, stores its pointer in *save, and
// resumes the stack at load (System V x86-64; MXCSR and the x87 control word are the same in
// every fiber, so they stay).
extern "C" void quarry_simt_switch(void** save, void* load);
asm(R"(
  .text
  .p2align 4
  .globl quarry_simt_switch
  .type quarry_simt_switch, @function
quarry_simt_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size quarry_simt_switch, .-quarry_simt_switch
  .section .note.GNU-stack,"",@progbits
  .text
)");
#endif

constexpr std::size_t kStackBytes = std::size_t{256} << 10;  // per kernel thread, with a guard page below
constexpr int kWarp = 32;
#if defined(QUARRY_SIMT_TSAN)
constexpr int kFiberSets = 3;  // see the top of this file: blocks of different sets are unordered
#else
constexpr int kFiberSets = 1;
#endif
constexpr std::size_t kMaxDynamicShared = 227 * 1024;  // an H200's opt-in maximum per block
// What memory no one has written holds: device memory, and shared memory at each block's start
// (NaN as f32, f16 or bf16; -1 as an integer).
constexpr unsigned char kUnwritten = 0xff;

enum class Wait { run, warp, barrier, done };

struct Fiber {
  // Its stack: mapped once, reused by every block this fiber runs in.
  char* stack = nullptr;  // lowest usable byte (above the guard page)
#if defined(QUARRY_SIMT_ASM_SWITCH)
  void* sp = nullptr;
#else
  ucontext_t context{};
#endif
  void* asan_fake = nullptr;
#if defined(QUARRY_SIMT_TSAN)
  void* tsan_fiber = nullptr;
  // What its __syncwarp calls release, by the parity of their count (so that a lane that has run
  // on to its next __syncwarp does not hand that stretch to a lane still leaving the last one).
  char tsan_syncwarp[2] = {};
  unsigned syncwarps = 0;
  std::uint32_t tsan_parities = 0;  // at a completed __syncwarp: bit m, the parity lane m released
  bool started = false;             // has run kernel code in this block
#endif
  bool abandoned = false;  // left waiting by a failed block: its stack still holds that run's frames
  uint3 tid{};
  int warp = 0, lane = 0;
  Wait wait = Wait::run;
  // The collective it waits at (Wait::warp).
  WarpOp op = WarpOp::sync;
  unsigned mask = 0;
  int arg = 0, width = kWarp;
  std::uint64_t value = 0, result = 0;
  void* data = nullptr;  // warp_apply's
};

Order default_order() noexcept {
  const char* e = std::getenv("QUARRY_SIMT_ORDER");
  return e != nullptr && std::strcmp(e, "reverse") == 0 ? Order::reverse : Order::forward;
}

// The kernel threads: kFiberSets sets of fibers, each grown to the largest block it has run. One
// pool for the program, used by one launch at a time (run_grid's turns), whichever host thread
// launches; never destroyed (static destructors may launch).
std::vector<Fiber>* fiber_sets() noexcept {
  static std::vector<Fiber>* const sets = new std::vector<Fiber>[kFiberSets];
  return sets;
}

// What a host thread's running block needs; one per host thread (launches from several threads
// take turns, since static shared memory is one for the program, but each keeps its own state).
struct Runner {
  int set = 0;  // the fiber set of the running block
  std::vector<Fiber>& fibers() noexcept { return fiber_sets()[set]; }
  int threads = 0;            // of this block
  Fiber* current = nullptr;
#if defined(QUARRY_SIMT_ASM_SWITCH)
  void* scheduler_sp = nullptr;
#else
  ucontext_t scheduler{};
#endif
  const void* scheduler_stack = nullptr;  // for AddressSanitizer's fiber annotations
  std::size_t scheduler_stack_size = 0;
  void* scheduler_fake = nullptr;
  dim3 grid, block;
  uint3 block_idx{};
  void (*body)(void*) = nullptr;
  void* context = nullptr;
  std::vector<unsigned char> shared;  // dynamic shared memory (but its size only under TSan: tsan_shared)
  Order order = default_order();
  std::string failure;  // why the block cannot go on; empty while it can
#if defined(QUARRY_SIMT_TSAN)
  void* tsan_host = nullptr;  // the launching thread's own TSan context
  char tsan_start = 0;        // released by the host when a block starts, acquired by its threads
  char tsan_end = 0;          // released by a kernel thread at its end, acquired by the host
  bool draining = false;      // a failed block's threads are being resumed to release tsan_end
  char tsan_barrier[kFiberSets][2] = {};  // released and acquired at __syncthreads, by set and parity
  unsigned char* tsan_shared = nullptr;   // dynamic shared memory: a mapping of its own (kMaxDynamicShared)
  unsigned barriers = 0;      // __syncthreads completed in this block
#endif
};

thread_local Runner t_runner;

// Where the running block's dynamic shared memory is.
unsigned char* dynamic_shared_of(Runner& r) noexcept {
#if defined(QUARRY_SIMT_TSAN)
  return r.tsan_shared;
#else
  return r.shared.data();
#endif
}
thread_local cudaError_t t_last_error = cudaSuccess;
thread_local std::string t_last_failure;  // why the last launch failed
thread_local bool t_print_failures = true;
thread_local std::deque<LaunchRecord> t_launches;  // recent_launches
constexpr std::size_t kLaunchLog = 64;

Fiber& current_fiber() noexcept { return *t_runner.current; }

void start_switch(void** fake, const void* bottom, std::size_t size) noexcept {
#if defined(QUARRY_SIMT_ASAN)
  __sanitizer_start_switch_fiber(fake, bottom, size);
#else
  (void)fake, (void)bottom, (void)size;
#endif
}
void finish_switch(void* fake, const void** bottom, std::size_t* size) noexcept {
#if defined(QUARRY_SIMT_ASAN)
  __sanitizer_finish_switch_fiber(fake, bottom, size);
#else
  (void)fake, (void)bottom, (void)size;
#endif
}

void park(Fiber& f) noexcept;

// The first code a fiber runs: the kernel, then away for good.
[[noreturn]] void fiber_main() noexcept {
  finish_switch(nullptr, nullptr, nullptr);
  Runner& r = t_runner;
#if defined(QUARRY_SIMT_TSAN)
  __tsan_acquire(&r.tsan_start);
  r.current->started = true;
#endif
  r.body(r.context);
#if defined(QUARRY_SIMT_TSAN)
  __tsan_release(&r.tsan_end);  // all it did happens before the host's next step
#endif
  Fiber& f = *t_runner.current;
  f.wait = Wait::done;
  park(f);
  std::fprintf(stderr, "quarry SIMT emulator: a finished kernel thread was resumed\n");
  std::abort();
}

#if !defined(QUARRY_SIMT_ASM_SWITCH)
void fiber_main_c() { fiber_main(); }
#endif

#if defined(QUARRY_SIMT_TSAN)
// A TSan context for the kernel thread of linear index `index` in the blocks of fiber set `set`,
// named so in reports.
void* new_tsan_fiber(std::size_t index, int set) noexcept {
  void* fiber = __tsan_create_fiber(0);
  char name[64];
  std::snprintf(name, sizeof name, "kernel thread %zu of a block of fiber set %d", index, set);
  __tsan_set_fiber_name(fiber, name);
  return fiber;
}
#endif

// Maps the fiber's stack on first use (a guard page below it: an overflow faults).
bool map_stack(Fiber& f, std::size_t index, int set) noexcept {
  if (f.stack != nullptr) return true;
  const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  void* m = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (m == MAP_FAILED) return false;
  mprotect(m, page, PROT_NONE);
  f.stack = static_cast<char*>(m) + page;
#if defined(QUARRY_SIMT_TSAN)
  f.tsan_fiber = new_tsan_fiber(index, set);
#else
  (void)index, (void)set;
#endif
  return true;
}

// Sets the fiber up to run fiber_main from the top of its stack.
void prepare(Fiber& f) noexcept {
  f.asan_fake = nullptr;
#if defined(QUARRY_SIMT_ASAN)
  if (f.abandoned) __asan_unpoison_memory_region(f.stack, kStackBytes);  // the frames it never left
#endif
#if defined(QUARRY_SIMT_TSAN)
  if (f.abandoned) {  // a fresh context: the old one's call stack holds the frames it never left
    __tsan_destroy_fiber(f.tsan_fiber);
    f.tsan_fiber = new_tsan_fiber(static_cast<std::size_t>(f.warp * kWarp + f.lane), t_runner.set);
  }
  f.syncwarps = 0;
  f.started = false;
#endif
  f.abandoned = false;
#if defined(QUARRY_SIMT_ASM_SWITCH)
  // fiber_main is entered by quarry_simt_switch's ret, with the stack as after a call (its
  // pointer 8 bytes below a multiple of 16), under six zero registers.
  auto* sp = reinterpret_cast<void**>(reinterpret_cast<std::uintptr_t>(f.stack + kStackBytes) & ~std::uintptr_t{15});
  *--sp = nullptr;  // fiber_main's return address: it never returns
  *--sp = reinterpret_cast<void*>(&fiber_main);
  for (int i = 0; i < 6; ++i) *--sp = nullptr;
  f.sp = sp;
#else
  getcontext(&f.context);
  f.context.uc_stack.ss_sp = f.stack;
  f.context.uc_stack.ss_size = kStackBytes;
  f.context.uc_link = nullptr;
  makecontext(&f.context, fiber_main_c, 0);
#endif
}

// Leaves `from` (a fiber, or the scheduler: nullptr) for `to` (likewise); returns when something
// switches back to `from`.
void switch_to(Runner& r, Fiber* from, Fiber* to) noexcept {
  void** fake = from == nullptr ? &r.scheduler_fake : from->wait == Wait::done ? nullptr : &from->asan_fake;
  start_switch(fake, to == nullptr ? r.scheduler_stack : to->stack, to == nullptr ? r.scheduler_stack_size : kStackBytes);
  r.current = to;
#if defined(QUARRY_SIMT_TSAN)
  __tsan_switch_to_fiber(to == nullptr ? r.tsan_host : to->tsan_fiber, __tsan_switch_to_fiber_no_sync);
#endif
#if defined(QUARRY_SIMT_ASM_SWITCH)
  quarry_simt_switch(from == nullptr ? &r.scheduler_sp : &from->sp, to == nullptr ? r.scheduler_sp : to->sp);
#else
  swapcontext(from == nullptr ? &r.scheduler : &from->context, to == nullptr ? &r.scheduler : &to->context);
#endif
  finish_switch(from == nullptr ? r.scheduler_fake : from->asan_fake, nullptr, nullptr);
}

const char* op_name(WarpOp op) noexcept {
  switch (op) {
    case WarpOp::sync: return "__syncwarp";
    case WarpOp::shfl: return "__shfl_sync";
    case WarpOp::shfl_xor: return "__shfl_xor_sync";
    case WarpOp::shfl_up: return "__shfl_up_sync";
    case WarpOp::shfl_down: return "__shfl_down_sync";
    case WarpOp::all: return "__all_sync";
    case WarpOp::any: return "__any_sync";
    case WarpOp::ballot: return "__ballot_sync";
    case WarpOp::apply: return "a warp-wide instruction";
  }
  return "?";
}

std::string where(const Runner& r, const Fiber& f) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "block (%u, %u, %u), thread (%u, %u, %u) (warp %d, lane %d)", r.block_idx.x, r.block_idx.y, r.block_idx.z,
                f.tid.x, f.tid.y, f.tid.z, f.warp, f.lane);
  return buf;
}

const char* wait_name(const Fiber& f) noexcept {
  switch (f.wait) {
    case Wait::run: return "running";
    case Wait::warp: return op_name(f.op);
    case Wait::barrier: return "__syncthreads";
    case Wait::done: return "exited";
  }
  return "?";
}

// Completes the collectives of warp w whose lanes have all arrived; returns how many lanes it
// released, or sets r.failure when lanes that must meet do not.
int resolve_warp(Runner& r, int w) {
  const int first = w * kWarp, count = std::min(kWarp, r.threads - first);
  Fiber* lanes = r.fibers().data() + first;
  // The common case first: the whole warp at one __shfl_xor_sync of a full mask.
  if (count == kWarp) {
    bool same = true;
    for (int l = 0; l < kWarp && same; ++l) {
      const Fiber& f = lanes[l];
      same = f.wait == Wait::warp && f.op == WarpOp::shfl_xor && f.mask == ~0u && f.width == kWarp && f.arg >= 0 && f.arg < kWarp;
    }
    if (same) {
      for (int l = 0; l < kWarp; ++l) lanes[l].result = lanes[l ^ lanes[l].arg].value;
      for (int l = 0; l < kWarp; ++l) lanes[l].wait = Wait::run;
      return kWarp;
    }
  }
  int released = 0;
  bool pending[kWarp] = {};
  for (int l = 0; l < count; ++l) pending[l] = lanes[l].wait == Wait::warp;
  for (int l = 0; l < count; ++l) {
    if (!pending[l]) continue;
    const Fiber& a = lanes[l];
    const unsigned mask = a.mask;
    if (a.width < 1 || a.width > kWarp || (a.width & (a.width - 1)) != 0) {
      r.failure = where(r, a) + ": " + op_name(a.op) + " with width " + std::to_string(a.width) + " (a power of two up to 32)";
      return 0;
    }
    if ((mask >> a.lane & 1u) == 0) {
      r.failure = where(r, a) + ": " + op_name(a.op) + " with a mask that leaves out the calling lane";
      return 0;
    }
    // Every lane of the mask must be here at the same collective.
    for (int m = 0; m < kWarp; ++m) {
      if ((mask >> m & 1u) == 0) continue;
      if (m >= count) {
        r.failure = where(r, a) + ": " + op_name(a.op) + "'s mask names lane " + std::to_string(m) + ", which the block does not have";
        return 0;
      }
      const Fiber& b = lanes[m];
      if (b.wait != Wait::warp || b.op != a.op || b.mask != a.mask || b.width != a.width || (a.op == WarpOp::apply && b.value != a.value)) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "%#x", mask);
        r.failure = where(r, a) + " waits at " + op_name(a.op) + " (mask " + buf + ") while lane " + std::to_string(m) + " " +
                    (b.wait == Wait::done ? "has exited" : std::string("waits at ") + wait_name(b)) +
                    (b.wait == Wait::warp && b.op == a.op ? " with another mask or width" : "") + ": the lanes diverged";
        return 0;
      }
    }
    if (a.op == WarpOp::apply) {  // every lane's data, to the instruction (value: its function)
      void* data[kWarp];
      for (int m = 0; m < kWarp; ++m) data[m] = lanes[m].data;
      reinterpret_cast<void (*)(void* const*)>(static_cast<std::uintptr_t>(a.value))(data);
    }
    for (int m = 0; m < kWarp && a.op != WarpOp::apply; ++m) {
      if ((mask >> m & 1u) == 0) continue;
      Fiber& b = lanes[m];
      const int seg = m & ~(b.width - 1), end = seg + b.width;
      int src = m;
      switch (b.op) {
        case WarpOp::shfl: src = seg + (b.arg & (b.width - 1)); break;
        case WarpOp::shfl_xor: src = m ^ b.arg; src = src >= end ? m : src; break;  // a later group: its own value
        case WarpOp::shfl_up: src = m - b.arg >= seg ? m - b.arg : m; break;
        case WarpOp::shfl_down: src = m + b.arg < end ? m + b.arg : m; break;
        default: break;
      }
      if (src < 0 || src >= kWarp || (mask >> src & 1u) == 0) {
        r.failure = where(r, b) + ": " + op_name(b.op) + " reads lane " + std::to_string(src) + ", which is not in its mask";
        return 0;
      }
      std::uint64_t result = lanes[src].value;
      if (b.op == WarpOp::all || b.op == WarpOp::any || b.op == WarpOp::ballot) {
        std::uint64_t ballot = 0;
        for (int k = 0; k < kWarp; ++k)
          if ((mask >> k & 1u) != 0 && lanes[k].value != 0) ballot |= std::uint64_t{1} << k;
        result = b.op == WarpOp::ballot ? ballot : b.op == WarpOp::all ? ballot == mask : ballot != 0;
      }
      b.result = result;
    }
#if defined(QUARRY_SIMT_TSAN)
    if (a.op == WarpOp::sync) {
      std::uint32_t parities = 0;
      for (int m = 0; m < kWarp; ++m)
        if ((mask >> m & 1u) != 0) parities |= ((lanes[m].syncwarps - 1) & 1u) << m;
      for (int m = 0; m < kWarp; ++m)
        if ((mask >> m & 1u) != 0) lanes[m].tsan_parities = parities;
    }
#endif
    for (int m = 0; m < kWarp; ++m)
      if ((mask >> m & 1u) != 0) {
        lanes[m].wait = Wait::run;
        pending[m] = false;
        ++released;
      }
  }
  return released;
}

// The warp's lane at position k of the run order (reverse: last lane first).
Fiber& lane_at(Runner& r, int warp, int count, int k) noexcept {
  return r.fibers()[static_cast<std::size_t>(warp * kWarp + (r.order == Order::forward ? k : count - 1 - k))];
}

// The warp's next lane to run after f has stopped: the next runnable one in order; when none is
// left, the collective they all reached is completed and the first lane goes on; nullptr when the
// warp can go no further (its lanes at __syncthreads or done, or a failure): the scheduler's turn.
Fiber* next_in_warp(Runner& r, const Fiber& f) {
  const int count = std::min(kWarp, r.threads - f.warp * kWarp);
  const int from = r.order == Order::forward ? f.lane : count - 1 - f.lane;
  for (int k = from + 1; k < count; ++k)
    if (Fiber& n = lane_at(r, f.warp, count, k); n.wait == Wait::run) return &n;
  for (int k = 0; k < from; ++k)
    if (Fiber& n = lane_at(r, f.warp, count, k); n.wait == Wait::run) return &n;
  if (resolve_warp(r, f.warp) == 0) return nullptr;
  for (int k = 0; k < count; ++k)
    if (Fiber& n = lane_at(r, f.warp, count, k); n.wait == Wait::run) return &n;
  return nullptr;
}

// Inside a fiber whose wait has been set: on to the next lane of its warp (a warp runs on until
// all its lanes are at __syncthreads or done), else back to the scheduler; returns when resumed.
void park(Fiber& f) noexcept {
  Runner& r = t_runner;
#if defined(QUARRY_SIMT_TSAN)
  __tsan_ignore_thread_begin();  // the emulator's work (its allocations, the lanes' states) is not the kernel's
#endif
  Fiber* next = nullptr;
  try {
    next = next_in_warp(r, f);
  } catch (...) {  // std::bad_alloc from a failure's message
    r.failure = "out of memory";
  }
#if defined(QUARRY_SIMT_TSAN)
  __tsan_ignore_thread_end();
#endif
  switch_to(r, &f, next);
#if defined(QUARRY_SIMT_TSAN)
  while (r.draining) {  // a failed block's thread, resumed only to hand what it did to the host
    __tsan_release(&r.tsan_end);
    switch_to(r, &f, nullptr);
  }
#endif
}

#if defined(QUARRY_SIMT_TSAN)
// Makes TSan forget every access to shared memory, without ordering anything: what the next
// block's threads do there is then checked against nothing a block before did.
// - Static shared memory (the section, among the program's other data): TSan's Java heap
//   interface is its one public call for it (__tsan_java_free drops the range's sync objects,
//   __tsan_java_alloc clears its shadow); the "Java heap" is the section, so that a report's
//   search for the block holding an address ends there. In reports it is a heap block.
// - Dynamic shared memory: its own mapping (tsan_shared), mapped afresh, which TSan's mmap clears.
void forget_shared_accesses(Runner& r, std::size_t dynamic_bytes) noexcept {
  const auto from = reinterpret_cast<std::uintptr_t>(__start_quarry_simt_shared) & ~std::uintptr_t{7},
             to = (reinterpret_cast<std::uintptr_t>(__stop_quarry_simt_shared) + 7) & ~std::uintptr_t{7};
  if (from != to) {
    static const bool java = [&] {
      __tsan_java_init(from, to - from);
      return true;
    }();
    (void)java;
    __tsan_java_free(from, to - from);
    __tsan_java_alloc(from, to - from);
  }
  if (dynamic_bytes > 0) {
    const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE)), n = (dynamic_bytes + page - 1) / page * page;
    __tsan_ignore_thread_begin();  // so that TSan's mmap clears the range instead of taking it for a write
    if (mmap(r.tsan_shared, n, PROT_READ | PROT_WRITE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0) == MAP_FAILED)
      r.failure = "no memory for dynamic shared memory";
    __tsan_ignore_thread_end();
  }
}

// The fiber set of the block of linear index b: the first kFiberSets blocks each their own, the
// others by a hash of b (so that no stride between blocks always falls in one set).
int fiber_set(std::uint64_t b) noexcept {
  if (b < kFiberSets) return static_cast<int>(b);
  b *= 0x9e3779b97f4a7c15u;
  return static_cast<int>((b >> 32) % kFiberSets);
}
#endif

// Runs the current block to its end; false (with r.failure) when its threads do not meet.
bool run_block(Runner& r) {
  for (int t = 0; t < r.threads; ++t) {
    Fiber& f = r.fibers()[static_cast<std::size_t>(t)];
    f.tid = {static_cast<unsigned>(t) % r.block.x, static_cast<unsigned>(t) / r.block.x % r.block.y,
             static_cast<unsigned>(t) / (r.block.x * r.block.y)};
    f.warp = t / kWarp;
    f.lane = t % kWarp;
    f.wait = Wait::run;
    prepare(f);
  }
#if defined(QUARRY_SIMT_TSAN)
  // The blocks before ran unordered with this one: what they did in shared memory is forgotten.
  // The refill is not recorded either (the whole section, every kernel's, at every block).
  forget_shared_accesses(r, r.shared.size());
  if (!r.failure.empty()) return false;
  __tsan_ignore_thread_begin();
#endif
  if (!r.shared.empty()) std::memset(dynamic_shared_of(r), kUnwritten, r.shared.size());
  if (unsigned char *from = __start_quarry_simt_shared, *to = __stop_quarry_simt_shared; from != to)
    std::memset(from, kUnwritten, static_cast<std::size_t>(to - from));
#if defined(QUARRY_SIMT_TSAN)
  __tsan_ignore_thread_end();
  r.barriers = 0;
  __tsan_release(&r.tsan_start);
#endif
  const int warps = (r.threads + kWarp - 1) / kWarp;
  for (;;) {
    // Each warp in turn, until its lanes are all at __syncthreads or done.
    for (int i = 0; i < warps; ++i) {
      const int w = r.order == Order::forward ? i : warps - 1 - i, count = std::min(kWarp, r.threads - w * kWarp);
      for (int k = 0; k < count; ++k)
        if (Fiber& f = lane_at(r, w, count, k); f.wait == Wait::run) {
          switch_to(r, nullptr, &f);
          break;
        }
      if (!r.failure.empty()) return false;
    }
    int done = 0, barrier = 0;
    for (int t = 0; t < r.threads; ++t) {
      done += r.fibers()[static_cast<std::size_t>(t)].wait == Wait::done;
      barrier += r.fibers()[static_cast<std::size_t>(t)].wait == Wait::barrier;
    }
    if (done == r.threads) return true;
    if (barrier == r.threads) {
#if defined(QUARRY_SIMT_TSAN)
      ++r.barriers;
#endif
      for (int t = 0; t < r.threads; ++t) r.fibers()[static_cast<std::size_t>(t)].wait = Wait::run;
      continue;
    }
    // No thread can go on: say where they wait (the first thread of each kind).
    std::string why = "the block's threads cannot go on:";
    for (const Wait kind : {Wait::barrier, Wait::warp, Wait::done}) {
      int n = 0;
      const Fiber* example = nullptr;
      for (int t = 0; t < r.threads; ++t)
        if (r.fibers()[static_cast<std::size_t>(t)].wait == kind) {
          ++n;
          if (example == nullptr) example = &r.fibers()[static_cast<std::size_t>(t)];
        }
      if (n > 0) why += " " + std::to_string(n) + " " + (kind == Wait::done ? "exited" : std::string("wait at ") + wait_name(*example)) + " (" +
                        where(r, *example) + (n > 1 ? ", ...)" : ")") + ";";
    }
    why.back() = '.';
    r.failure = why;
    return false;
  }
}

// Fails the launch: the last error, the message (last_failure), stderr.
void fail_launch(const char* kernel, cudaError_t code, const std::string& why) {
  t_last_failure = std::string(kernel) + ": " + why;
  if (t_print_failures) std::fprintf(stderr, "quarry SIMT emulator: %s\n", t_last_failure.c_str());
  t_last_error = code;
}

// ---- Device memory: host allocations, tracked. ----

struct Memory {
  std::mutex mutex;
  std::map<std::uintptr_t, std::size_t> blocks;  // start -> bytes
};
Memory& memory() {
  static Memory m;
  return m;
}

// Whether [p, p + bytes) lies inside one device allocation.
bool is_device(const void* p, std::size_t bytes) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  Memory& m = memory();
  const std::lock_guard<std::mutex> lock(m.mutex);
  auto it = m.blocks.upper_bound(a);
  if (it == m.blocks.begin()) return false;
  --it;
  return a >= it->first && a - it->first <= it->second && bytes <= it->second - (a - it->first);
}
bool touches_device(const void* p, std::size_t bytes) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  Memory& m = memory();
  const std::lock_guard<std::mutex> lock(m.mutex);
  auto it = m.blocks.upper_bound(a + (bytes > 0 ? bytes - 1 : 0));
  if (it == m.blocks.begin()) return false;
  --it;
  return it->first + it->second > a;
}

cudaError_t set_error(cudaError_t e) {
  if (e != cudaSuccess) t_last_error = e;
  return e;
}

// `what` ("destination", "source") should be device memory (device_side) or host memory, and is not.
cudaError_t bad_pointer(const char* call, bool device_side, const char* what, const void* p, std::size_t bytes) {
  if (t_print_failures)
    std::fprintf(stderr, "quarry SIMT emulator: %s: the %s %s [%p, +%zu) is %s\n", call, device_side ? "device" : "host", what, p, bytes,
                 device_side ? "not inside one device allocation" : "device memory, not host memory");
  return set_error(cudaErrorInvalidValue);
}

cudaError_t copy(const char* call, void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind) {
  if (bytes == 0) return cudaSuccess;
  if (kind == cudaMemcpyDefault) kind = touches_device(dst, bytes) ? (touches_device(src, bytes) ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                                                    : (touches_device(src, bytes) ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  const bool dst_device = kind == cudaMemcpyHostToDevice || kind == cudaMemcpyDeviceToDevice;
  const bool src_device = kind == cudaMemcpyDeviceToHost || kind == cudaMemcpyDeviceToDevice;
  if (kind < cudaMemcpyHostToHost || kind > cudaMemcpyDeviceToDevice) return set_error(cudaErrorInvalidMemcpyDirection);
  if (dst_device ? !is_device(dst, bytes) : touches_device(dst, bytes)) return bad_pointer(call, dst_device, "destination", dst, bytes);
  if (src_device ? !is_device(src, bytes) : touches_device(src, bytes)) return bad_pointer(call, src_device, "source", src, bytes);
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}

thread_local int t_device = 0;

}  // namespace

bool is_device_pointer(const void* p) noexcept { return p == nullptr || is_device(p, 0); }

// ---- Inside kernels. ----

const uint3& thread_idx() noexcept { return current_fiber().tid; }
const uint3& block_idx() noexcept { return t_runner.block_idx; }
const dim3& block_dim() noexcept { return t_runner.block; }
const dim3& grid_dim() noexcept { return t_runner.grid; }
void* dynamic_shared() noexcept { return t_runner.shared.empty() ? nullptr : dynamic_shared_of(t_runner); }

std::uint64_t warp_collective(WarpOp op, unsigned mask, std::uint64_t value, int arg, int width) noexcept {
  Fiber& f = current_fiber();
  f.op = op;
  f.mask = mask;
  f.value = value;
  f.arg = arg;
  f.width = width;
  f.wait = Wait::warp;
#if defined(QUARRY_SIMT_TSAN)
  if (op == WarpOp::sync) __tsan_release(&f.tsan_syncwarp[f.syncwarps++ & 1u]);
#endif
  park(f);
#if defined(QUARRY_SIMT_TSAN)
  if (op == WarpOp::sync) {
    Fiber* lanes = t_runner.fibers().data() + f.warp * kWarp;
    for (int m = 0; m < kWarp; ++m)
      if ((mask >> m & 1u) != 0) __tsan_acquire(&lanes[m].tsan_syncwarp[f.tsan_parities >> m & 1u]);
  }
#endif
  return f.result;
}

void warp_apply(void (*fn)(void* const* lanes), void* data) noexcept {
  Fiber& f = current_fiber();
  f.data = data;
  (void)warp_collective(WarpOp::apply, ~0u, reinterpret_cast<std::uintptr_t>(fn), 0, kWarp);
}

namespace {

struct MmaLane {
  float* c;
  unsigned a[4], b[2];
};

float low_half(unsigned u) noexcept { return quarry::f16::from_bits(static_cast<std::uint16_t>(u & 0xffffu)); }
float high_half(unsigned u) noexcept { return quarry::f16::from_bits(static_cast<std::uint16_t>(u >> 16)); }

void mma_m16n8k16(void* const* lanes) noexcept {
  float a[16][16], b[16][8], c[16][8];
  for (int lane = 0; lane < kWarp; ++lane) {
    const auto& l = *static_cast<const MmaLane*>(lanes[lane]);
    const int g = lane / 4, t = lane % 4;
    for (int half = 0; half < 2; ++half) {  // columns 2t (+ 8), 2t + 1 (+ 8) of A; rows of B likewise
      const int k = 2 * t + 8 * half;
      a[g][k] = low_half(l.a[2 * half]), a[g][k + 1] = high_half(l.a[2 * half]);
      a[g + 8][k] = low_half(l.a[2 * half + 1]), a[g + 8][k + 1] = high_half(l.a[2 * half + 1]);
      b[k][g] = low_half(l.b[half]), b[k + 1][g] = high_half(l.b[half]);
    }
    c[g][2 * t] = l.c[0], c[g][2 * t + 1] = l.c[1], c[g + 8][2 * t] = l.c[2], c[g + 8][2 * t + 1] = l.c[3];
  }
  float d[16][8];
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < 8; ++n) {
      double s = c[r][n];
      for (int k = 0; k < 16; ++k) s += static_cast<double>(a[r][k]) * b[k][n];
      d[r][n] = static_cast<float>(s);
    }
  for (int lane = 0; lane < kWarp; ++lane) {
    float* out = static_cast<const MmaLane*>(lanes[lane])->c;
    const int g = lane / 4, t = lane % 4;
    out[0] = d[g][2 * t], out[1] = d[g][2 * t + 1], out[2] = d[g + 8][2 * t], out[3] = d[g + 8][2 * t + 1];
  }
}

}  // namespace

void mma_m16n8k16_f16_f32(float (&c)[4], unsigned a0, unsigned a1, unsigned a2, unsigned a3, unsigned b0, unsigned b1) noexcept {
  MmaLane lane{c, {a0, a1, a2, a3}, {b0, b1}};
  warp_apply(&mma_m16n8k16, &lane);
}

void sync_threads() noexcept {
  Fiber& f = current_fiber();
  f.wait = Wait::barrier;
#if defined(QUARRY_SIMT_TSAN)
  char* const token = &t_runner.tsan_barrier[t_runner.set][t_runner.barriers & 1u];
  __tsan_release(token);
#endif
  park(f);
#if defined(QUARRY_SIMT_TSAN)
  __tsan_acquire(token);
#endif
}

void run_grid(const char* kernel, dim3 grid, dim3 block, std::size_t shared_bytes, const PointerArg* pointers, int n_pointers,
              void (*body)(void*), void* context) noexcept {
  Runner& r = t_runner;
  t_last_failure.clear();
  if (t_launches.size() == kLaunchLog) t_launches.pop_front();
  t_launches.push_back({kernel, grid, block, shared_bytes});
  if (r.current != nullptr) return fail_launch(kernel, cudaErrorNotSupported, "a launch from inside a kernel (dynamic parallelism) is not emulated");
  const std::uint64_t threads = std::uint64_t{block.x} * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 ||
      grid.z > 65535) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "grid (%u, %u, %u) of blocks (%u, %u, %u): not a launch CUDA accepts", grid.x, grid.y, grid.z, block.x, block.y,
                  block.z);
    return fail_launch(kernel, cudaErrorInvalidConfiguration, buf);
  }
  if (shared_bytes > kMaxDynamicShared)
    return fail_launch(kernel, cudaErrorInvalidValue, std::to_string(shared_bytes) + " bytes of dynamic shared memory (at most 227 KiB)");
  for (int i = 0; i < n_pointers; ++i)
    if (!is_device_pointer(pointers[i].pointer))
      return fail_launch(kernel, cudaErrorIllegalAddress,
                         "argument " + std::to_string(pointers[i].position) + " is not device memory (a host pointer given to a kernel?)");
#if defined(QUARRY_SIMT_ASAN)
  if (r.scheduler_stack == nullptr) {  // this thread's stack, for the switches back to it
    pthread_attr_t attr;
    void* bottom = nullptr;
    std::size_t size = 0;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
      pthread_attr_getstack(&attr, &bottom, &size);
      pthread_attr_destroy(&attr);
    }
    r.scheduler_stack = bottom;
    r.scheduler_stack_size = size;
  }
#endif
  // Static shared memory is one for the program: one launch at a time.
  static std::mutex* const turns = new std::mutex;  // never destroyed: static destructors may launch
  const std::lock_guard<std::mutex> turn(*turns);
  const std::uint64_t blocks = std::uint64_t{grid.x} * grid.y * grid.z;
  for (int s = 0; s < kFiberSets && static_cast<std::uint64_t>(s) < blocks; ++s) {
    std::vector<Fiber>& set = fiber_sets()[s];
    if (set.size() < threads) set.resize(threads);
    for (std::size_t t = 0; t < threads; ++t)
      if (!map_stack(set[t], t, s)) return fail_launch(kernel, cudaErrorMemoryAllocation, "no memory for the kernel threads' stacks");
  }
  r.threads = static_cast<int>(threads);
  r.grid = grid;
  r.block = block;
  r.body = body;
  r.context = context;
  r.shared.assign(shared_bytes, 0);
#if defined(QUARRY_SIMT_TSAN)
  if (r.tsan_shared == nullptr && shared_bytes > 0) {
    void* m = mmap(nullptr, kMaxDynamicShared, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return fail_launch(kernel, cudaErrorMemoryAllocation, "no memory for dynamic shared memory");
    r.tsan_shared = static_cast<unsigned char*>(m);
  }
#endif
  r.failure.clear();
#if defined(QUARRY_SIMT_TSAN)
  r.tsan_host = __tsan_get_current_fiber();
#endif
  std::uint64_t b = 0;  // the block's linear index
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x, ++b) {
        r.block_idx = {x, y, z};
#if defined(QUARRY_SIMT_TSAN)
        r.set = fiber_set(b);
#endif
        const bool ran = run_block(r);
        if (!ran) {
#if defined(QUARRY_SIMT_TSAN)
          // The threads left waiting: what they did so far, to the host too.
          r.draining = true;
          for (int t = 0; t < r.threads; ++t)
            if (Fiber& f = r.fibers()[static_cast<std::size_t>(t)]; f.started && f.wait != Wait::done) switch_to(r, nullptr, &f);
          r.draining = false;
          __tsan_acquire(&r.tsan_end);
#endif
          for (int t = 0; t < r.threads; ++t) r.fibers()[static_cast<std::size_t>(t)].abandoned = r.fibers()[static_cast<std::size_t>(t)].wait != Wait::done;
          const std::string why = r.failure;
          r.failure.clear();
          return fail_launch(kernel, cudaErrorLaunchFailure, why);
        }
      }
#if defined(QUARRY_SIMT_TSAN)
  __tsan_acquire(&r.tsan_end);  // every block's threads before the host's next step, not before the next block
#endif
}

std::uint64_t global_timer_ns() noexcept {
  return static_cast<std::uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()).count());
}

std::size_t live_allocations() noexcept {
  Memory& m = memory();
  const std::lock_guard<std::mutex> lock(m.mutex);
  return m.blocks.size();
}

std::size_t live_bytes() noexcept {
  Memory& m = memory();
  const std::lock_guard<std::mutex> lock(m.mutex);
  std::size_t n = 0;
  for (const auto& b : m.blocks) n += b.second;
  return n;
}

void set_thread_order(Order order) noexcept { t_runner.order = order; }

std::string last_failure() { return t_last_failure; }
std::vector<LaunchRecord> recent_launches() { return {t_launches.begin(), t_launches.end()}; }
void clear_recent_launches() noexcept { t_launches.clear(); }
void set_failure_printing(bool on) noexcept { t_print_failures = on; }

}  // namespace quarry::simt

// ---- The runtime API. ----

using namespace quarry::simt;

cudaError_t cudaGetLastError() {
  const cudaError_t e = t_last_error;
  t_last_error = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return t_last_error; }

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInitializationError: return "cudaErrorInitializationError";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevicePointer: return "cudaErrorInvalidDevicePointer";
    case cudaErrorInvalidMemcpyDirection: return "cudaErrorInvalidMemcpyDirection";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
    case cudaErrorNotReady: return "cudaErrorNotReady";
    case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    case cudaErrorUnknown: return "cudaErrorUnknown";
  }
  return "cudaErrorUnknown";
}

const char* cudaGetErrorString(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorNotReady: return "device not ready";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorLaunchFailure: return "unspecified launch failure (the SIMT emulator says why on stderr)";
    default: return "see the SIMT emulator's message on stderr";
  }
}

cudaError_t cudaGetDeviceCount(int* count) {
  *count = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  *device = t_device;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  if (device != 0) return set_error(cudaErrorInvalidDevice);
  t_device = device;
  return cudaSuccess;
}

// One device shaped as an H200 where it matters to the host code (132 SMs, sm_90, shared memory).
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return set_error(cudaErrorInvalidDevice);
  *prop = cudaDeviceProp{};
  std::snprintf(prop->name, sizeof prop->name, "quarry SIMT emulator (host CPU)");
  std::size_t free = 0;
  cudaMemGetInfo(&free, &prop->totalGlobalMem);
  prop->sharedMemPerBlock = 48 * 1024;
  prop->warpSize = 32;
  prop->maxThreadsPerBlock = 1024;
  prop->major = 9;
  prop->minor = 0;
  prop->multiProcessorCount = 132;
  return cudaSuccess;
}

cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int device) {
  if (device != 0) return set_error(cudaErrorInvalidDevice);
  switch (attr) {
    case cudaDevAttrMaxThreadsPerBlock: *value = 1024; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *value = 48 * 1024; break;
    case cudaDevAttrWarpSize: *value = 32; break;
    case cudaDevAttrMultiProcessorCount: *value = 132; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *value = 2048; break;
    case cudaDevAttrL2CacheSize: *value = 50 * 1024 * 1024; break;
    // cudaDevAttrMemoryClockRate and cudaDevAttrGlobalMemoryBusWidth: the emulator has no HBM.
    case cudaDevAttrComputeCapabilityMajor: *value = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *value = 0; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *value = static_cast<int>(227 * 1024); break;
    default: return set_error(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}

cudaError_t cudaRuntimeGetVersion(int* version) {
  *version = 12080;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* version) {
  *version = 12080;
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }

cudaError_t cudaMemGetInfo(std::size_t* free, std::size_t* total) {
  const long pages = sysconf(_SC_PHYS_PAGES), avail = sysconf(_SC_AVPHYS_PAGES), size = sysconf(_SC_PAGESIZE);
  *total = static_cast<std::size_t>(pages) * static_cast<std::size_t>(size);
  *free = static_cast<std::size_t>(avail) * static_cast<std::size_t>(size);
  return cudaSuccess;
}

// Allocations are 256-byte aligned, as cudaMalloc's, of exactly the bytes asked (so that
// AddressSanitizer sees a read past the end), and filled with 0xff bytes (NaN as f32, f16 or
// bf16), as memory no one has written.
cudaError_t cudaMalloc(void** ptr, std::size_t bytes) {
  *ptr = nullptr;
  if (bytes == 0) return cudaSuccess;
  std::size_t free = 0, total = 0;
  cudaMemGetInfo(&free, &total);
  if (bytes > total) return set_error(cudaErrorMemoryAllocation);  // more than the "device" has
  // Without AddressSanitizer's red zones between allocations, 256 bytes more that no one may use,
  // so that a host allocation never starts where a device one ends (a kernel argument pointing
  // one past the end is device memory).
#if defined(QUARRY_SIMT_ASAN)
  constexpr std::size_t kGap = 0;
#else
  constexpr std::size_t kGap = 256;
#endif
  void* p = ::operator new(bytes + kGap, std::align_val_t{256}, std::nothrow);
  if (p == nullptr) return set_error(cudaErrorMemoryAllocation);
  std::memset(p, kUnwritten, bytes);
  Memory& m = memory();
  const std::lock_guard<std::mutex> lock(m.mutex);
  m.blocks[reinterpret_cast<std::uintptr_t>(p)] = bytes;
  *ptr = p;
  return cudaSuccess;
}
cudaError_t cudaMallocAsync(void** ptr, std::size_t bytes, cudaStream_t) { return cudaMalloc(ptr, bytes); }

cudaError_t cudaFree(void* ptr) {
  if (ptr == nullptr) return cudaSuccess;
  {
    Memory& m = memory();
    const std::lock_guard<std::mutex> lock(m.mutex);
    const auto it = m.blocks.find(reinterpret_cast<std::uintptr_t>(ptr));
    if (it == m.blocks.end()) {
      if (t_print_failures) std::fprintf(stderr, "quarry SIMT emulator: cudaFree(%p): not a pointer cudaMalloc returned, or freed already\n", ptr);
      return set_error(cudaErrorInvalidValue);
    }
    m.blocks.erase(it);
  }
  ::operator delete(ptr, std::align_val_t{256});
  return cudaSuccess;
}
cudaError_t cudaFreeAsync(void* ptr, cudaStream_t) { return cudaFree(ptr); }

cudaError_t cudaMemcpy(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind) { return copy("cudaMemcpy", dst, src, bytes, kind); }
cudaError_t cudaMemcpyAsync(void* dst, const void* src, std::size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
  return copy("cudaMemcpyAsync", dst, src, bytes, kind);
}
cudaError_t cudaMemcpyPeer(void* dst, int dst_device, const void* src, int src_device, std::size_t bytes) {
  if (dst_device != 0 || src_device != 0) return set_error(cudaErrorInvalidDevice);
  return copy("cudaMemcpyPeer", dst, src, bytes, cudaMemcpyDeviceToDevice);
}

cudaError_t cudaMemset(void* ptr, int value, std::size_t bytes) {
  if (bytes == 0) return cudaSuccess;
  if (!is_device(ptr, bytes)) return bad_pointer("cudaMemset", true, "destination", ptr, bytes);
  std::memset(ptr, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* ptr, int value, std::size_t bytes, cudaStream_t) { return cudaMemset(ptr, value, bytes); }

// Events: the host's clock when recorded (what was queued before has finished then).
struct CUevent_st {
  std::chrono::steady_clock::time_point when;
  bool recorded = false;
};

namespace {

struct Events {
  std::mutex mutex;
  std::set<cudaEvent_t> live;
};
Events& events() {
  static Events* e = new Events;  // never destroyed: events may be destroyed by static destructors
  return *e;
}

// Whether e is an event cudaEventCreate made and cudaEventDestroy has not destroyed.
bool is_event(cudaEvent_t e) {
  Events& ev = events();
  const std::lock_guard<std::mutex> lock(ev.mutex);
  return ev.live.count(e) != 0;
}

}  // namespace

cudaError_t cudaEventCreate(cudaEvent_t* event) {
  if (event == nullptr) return set_error(cudaErrorInvalidValue);
  *event = new CUevent_st;
  Events& ev = events();
  const std::lock_guard<std::mutex> lock(ev.mutex);
  ev.live.insert(*event);
  return cudaSuccess;
}

cudaError_t cudaEventDestroy(cudaEvent_t event) {
  {
    Events& ev = events();
    const std::lock_guard<std::mutex> lock(ev.mutex);
    if (ev.live.erase(event) == 0) return set_error(cudaErrorInvalidResourceHandle);
  }
  delete event;
  return cudaSuccess;
}

cudaError_t cudaEventRecord(cudaEvent_t event, cudaStream_t) {
  if (!is_event(event)) return set_error(cudaErrorInvalidResourceHandle);
  event->when = std::chrono::steady_clock::now();
  event->recorded = true;
  return cudaSuccess;
}

cudaError_t cudaEventSynchronize(cudaEvent_t event) { return is_event(event) ? cudaSuccess : set_error(cudaErrorInvalidResourceHandle); }
cudaError_t cudaEventQuery(cudaEvent_t event) { return is_event(event) ? cudaSuccess : set_error(cudaErrorInvalidResourceHandle); }

cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  if (ms == nullptr) return set_error(cudaErrorInvalidValue);
  if (!is_event(start) || !is_event(end) || !start->recorded || !end->recorded) return set_error(cudaErrorInvalidResourceHandle);
  *ms = std::chrono::duration<float, std::milli>(end->when - start->when).count();
  return cudaSuccess;
}
