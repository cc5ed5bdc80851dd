// Small helpers shared by the test files.
#pragma once

#include <cstdint>
#include <random>
#include <string>

#include <quarry/core/status.hpp>
#include <quarry/core/tensor.hpp>

namespace quarry::testing {

/// True in AddressSanitizer builds (the CI's Debug + ASan + UBSan run), where Eigen's products
/// run ~20x slower: tests that train on real data use fewer iterations there.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
#else
inline constexpr bool kSanitized = false;
#endif

/// True in ThreadSanitizer builds (the tsan preset), where the CUDA emulator reports a race
/// between kernel threads as such (tests/cuda_emulated/simt.cpp).
#if defined(__SANITIZE_THREAD__)
inline constexpr bool kThreadSanitized = true;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
inline constexpr bool kThreadSanitized = true;
#else
inline constexpr bool kThreadSanitized = false;
#endif
#else
inline constexpr bool kThreadSanitized = false;
#endif

/// Whether `part` occurs in `s`.
inline bool contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }
/// Whether `part` occurs in the message of `st`.
inline bool contains(const status& st, const std::string& part) { return contains(st.message(), part); }

/// Runs f and returns the quarry::error it throws as a status (its message is the full what()),
/// or ok when nothing is thrown.
template <class F>
status thrown(F&& f) {
  try {
    f();
  } catch (const error& e) {
    return status(e.code(), e.what());
  }
  return {};
}

/// A [rows, cols] matrix of Gaussian values with standard deviation `sigma`, fixed by `seed`.
inline Tensor<float> gaussian(std::int64_t rows, std::int64_t cols, std::uint32_t seed, float sigma = 1.f) {
  Tensor<float> t = Tensor<float>::uninitialized({rows, cols});
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.f, sigma);
  for (float& v : t.span()) v = d(rng);
  return t;
}

}  // namespace quarry::testing
