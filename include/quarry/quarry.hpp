// quarry: quantized inference and retrieval. The umbrella header: every CPU-side module.
// The CUDA backend has its own umbrella, <quarry/cuda.hpp> (component quarry::cuda).
#pragma once

#include "quarry/config.hpp"
#include "quarry/core/aligned_buffer.hpp"
#include "quarry/core/backend.hpp"
#include "quarry/core/checked.hpp"
#include "quarry/core/convert.hpp"
#include "quarry/core/cpu_features.hpp"
#include "quarry/core/dot.hpp"
#include "quarry/core/dtype.hpp"
#include "quarry/core/eigen.hpp"
#include "quarry/core/float16.hpp"
#include "quarry/core/shape.hpp"
#include "quarry/core/status.hpp"
#include "quarry/core/tensor.hpp"
#include "quarry/core/thread_pool.hpp"
#include "quarry/quant/error_metrics.hpp"
#include "quarry/quant/quantize.hpp"
#include "quarry/quant/quantized_tensor.hpp"
#include "quarry/quant/scheme.hpp"
