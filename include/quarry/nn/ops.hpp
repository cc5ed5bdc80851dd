// The element-wise and row-wise operations of a transformer decoder (quarry's nn module): RMSNorm,
// rotary position embedding, SwiGLU's gate, softmax and argmax. Plain loops over contiguous rows:
// next to the matrix products and attention they cost little, and they are the reference the
// model's exactness test leans on.
#pragma once

#include <cstdint>
#include <span>

namespace quarry {

/// out = x / sqrt(mean(x^2) + eps) * weight (RMSNorm; the mean of squares summed in double, as
/// ggml does). x, weight and out have one size; out may alias x.
void rms_norm(std::span<const float> x, std::span<const float> weight, float eps, std::span<float> out) noexcept;

/// Rotary position embedding on `heads` consecutive heads of head_dim values each, in place, for
/// a token at position `pos`: within each head, the pairs (x[2i], x[2i + 1]) for 2i < rope_dim
/// are rotated by the angle pos * base^(-2i / rope_dim) (adjacent pairs, as llama2.c and ggml's
/// "normal" RoPE do); dimensions from rope_dim on are left as they are. head_dim and rope_dim even.
void rope_adjacent_pairs(std::span<float> x, std::int64_t heads, std::int64_t head_dim, std::int64_t pos, std::int64_t rope_dim,
                         float base) noexcept;

/// gate[i] = silu(gate[i]) * up[i], silu(x) = x / (1 + exp(-x)): SwiGLU's product.
void silu_mul(std::span<float> gate, std::span<const float> up) noexcept;

/// x = softmax(x) in place (max subtracted first). Empty x is left as it is.
void softmax(std::span<float> x) noexcept;

/// The index of the largest value (the first of equals); -1 for an empty span. NaN is never
/// the largest.
std::int64_t argmax(std::span<const float> x) noexcept;

}  // namespace quarry
