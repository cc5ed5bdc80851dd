// quarry's CUDA backend: the umbrella header of the optional quarry::cuda component
// (find_package(quarry COMPONENTS cuda); link quarry::cuda). Includes no CUDA header, so
// programs using it compile with the host compiler alone. It needs a quarry built with
// QUARRY_CUDA=ON, and says so at compile time otherwise.
#pragma once

#include "quarry/quarry.hpp"

#include "quarry/core/cuda_convert.hpp"
#include "quarry/core/cuda_device.hpp"
#include "quarry/core/cuda_tensor.hpp"
#include "quarry/index/cuda_ivf_pq.hpp"
#include "quarry/kv/cuda_kv_cache.hpp"
#include "quarry/kv/cuda_paged_attention.hpp"
#include "quarry/quant/cuda_qgemm.hpp"
#include "quarry/quant/cuda_quantized_tensor.hpp"
