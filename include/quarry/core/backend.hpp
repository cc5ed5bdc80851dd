// Backend tags. Module front-ends are templates on the backend, `cpu` by default
// (`Tensor<float, cuda>`, `IvfPqIndex<cuda>`), so a caller swaps backends by changing one type.
#pragma once

#include <string_view>
#include <type_traits>

namespace quarry {

/// Host memory and the CPU kernels (SIMD level chosen at run time; see cpu_features.hpp).
struct cpu {
  static constexpr std::string_view name = "cpu";  ///< the backend's name in messages
};

/// NVIDIA GPU memory and kernels: the optional `quarry::cuda` component. Naming the tag needs
/// no CUDA; using it needs `#include <quarry/cuda.hpp>` and linking `quarry::cuda`.
struct cuda {
  static constexpr std::string_view name = "cuda";  ///< the backend's name in messages
};

/// A backend tag quarry knows.
template <class B>
concept Backend = std::is_same_v<B, cpu> || std::is_same_v<B, cuda>;

}  // namespace quarry
