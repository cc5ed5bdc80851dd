// Import of GPTQ and AWQ checkpoints: 4-bit weights packed eight to an int32, f16 scales and
// packed 4-bit zero points per group of G input features, as the Hugging Face safetensors files
// of AutoGPTQ / GPTQModel / ExLlama ("gptq") and llm-awq / AutoAWQ ("awq", GEMM version) store
// one linear layer y = x W^T with W of shape [N out features, K in features].
//
// Both import to a [N, K] QuantizedTensor<cpu> with scheme QuantScheme::int4_grouped(G,
// asymmetric, f16): values uint4 (q, 0..15), one f16 scale and one uint8 zero point per
// (row n, group k / G). Weight (n, k) reads back as (q - z) * s exactly, in f32.
//
// Packing accepted, bit for bit (int32 words read as two's complement, bits 4j..4j+3 = nibble j):
//
// GPTQ (checkpoint_format "gptq", also called v1, and "gptq_v2"), bits = 4, K = 8 * qweight rows:
//   qweight  int32 [K / 8, N]   qweight[i][n] nibble j = q of (n, k = 8i + j)      (packed along K)
//   qzeros   int32 [K / G, N / 8]  qzeros[g][i] nibble j = stored zero of (n = 8i + j, group g)
//   scales   f16   [K / G, N]   scales[g][n] = s of (n, group g)
//   g_idx    int32 [K], optional: the group of input feature k. Only the trivial g_idx[k] = k / G
//            is accepted; act-order checkpoints (desc_act = true) permute it, and importing them
//            would need the activations permuted too, so they are refused with errc::unsupported.
//   zero     v1: z = stored + 1 (AutoGPTQ packs zeros - 1; so z is 1..16 and 16 fits the byte)
//            v2: z = stored.
//   weight   w[n][k] = (q - z) * s.
//
// AWQ (llm-awq / AutoAWQ "gemm" version), bits = 4, N = 8 * qweight columns:
//   qweight  int32 [K, N / 8]   packed along N in AWQ's interleaved order: qweight[k][i] nibble
//                               p holds n = 8i + kAwqPackOrder[p], kAwqPackOrder = {0, 2, 4, 6,
//                               1, 3, 5, 7} (so n = 8i + j sits in nibble {0, 4, 1, 5, 2, 6, 3, 7}[j],
//                               vLLM's AWQ_REVERSE_ORDER)
//   qzeros   int32 [K / G, N / 8]  same packing and order as qweight
//   scales   f16   [K / G, N]
//   weight   w[n][k] = (q - z) * s.
//
// G must be 32, 64 or 128 (G = -1, one group for all of K, is not supported) and must divide K.
// Any strides are accepted; every shape is checked against the others first, and the errors
// name the tensors and their shapes.
#pragma once

#include <array>
#include <cstdint>

#include "quarry/core/float16.hpp"
#include "quarry/core/tensor.hpp"
#include "quarry/quant/quantized_tensor.hpp"

namespace quarry {

/// How a GPTQ checkpoint stores its zero points (quantize_config.json "checkpoint_format").
enum class GptqFormat : std::uint8_t {
  v1,  ///< "gptq" (AutoGPTQ, ExLlama; the default): the stored zero is z - 1
  v2,  ///< "gptq_v2" (GPTQModel): the stored zero is z
};

/// AWQ's nibble order: nibble p of a packed int32 holds output feature 8i + kAwqPackOrder[p].
inline constexpr std::array<int, 8> kAwqPackOrder = {0, 2, 4, 6, 1, 3, 5, 7};

/// Imports one GPTQ linear layer (4 bits, group size `group_size`) as a [N, K] QuantizedTensor;
/// the packing is described at the top of this header. `g_idx` may be left empty (absent).
/// Errors: a tensor not of rank 2 (g_idx: rank 1), shapes that disagree (each named), G not in
/// {32, 64, 128} or not dividing K, a non-trivial g_idx (act-order), or a scale that is inf or NaN.
result<QuantizedTensor<cpu>> import_gptq(TensorView<const std::int32_t> qweight, TensorView<const std::int32_t> qzeros,
                                         TensorView<const f16> scales, int group_size, GptqFormat format = GptqFormat::v1,
                                         TensorView<const std::int32_t> g_idx = {});

/// Imports one AWQ (GEMM-format) linear layer (4 bits, group size `group_size`) as a [N, K]
/// QuantizedTensor; the packing is described at the top of this header. Errors as import_gptq.
result<QuantizedTensor<cpu>> import_awq(TensorView<const std::int32_t> qweight, TensorView<const std::int32_t> qzeros,
                                        TensorView<const f16> scales, int group_size);

}  // namespace quarry
