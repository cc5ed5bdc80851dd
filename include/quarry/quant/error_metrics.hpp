// How far a quantized matrix is from the original: max abs error, RMSE and SNR.
#pragma once

#include <cstdint>

#include "quarry/core/tensor.hpp"
#include "quarry/quant/quantized_tensor.hpp"

namespace quarry {

/// Error of an approximation against its reference, accumulated in double.
struct QuantError {
  double max_abs = 0;   ///< max |reference - approx|
  double rmse = 0;      ///< sqrt(mean((reference - approx)^2))
  double snr_db = 0;    ///< 10 log10(sum reference^2 / sum (reference - approx)^2); +inf when exact
  std::int64_t count = 0;  ///< elements compared
};

/// The error of `approx` against `reference`; the shapes must be equal (throws quarry::error
/// naming both otherwise). NaNs in either make every figure NaN.
QuantError quant_error(TensorView<const float> reference, TensorView<const float> approx);
/// The error of the dequantized `q` against the matrix it was quantized from.
QuantError quant_error(TensorView<const float> reference, const QuantizedTensor<cpu>& q);

}  // namespace quarry
