// Choosing the next token from logits: greedy, or sampling with temperature, top-k and top-p
// (nucleus), from a seeded generator so a run can be repeated exactly (quarry's nn module).
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include "quarry/core/status.hpp"

namespace quarry {

/// How the next token is chosen.
struct SamplingParams {
  float temperature = 0.f;  ///< 0: greedy (argmax); > 0: logits / temperature before the softmax
  std::int64_t top_k = 0;   ///< > 0: only the k most likely tokens are candidates
  float top_p = 1.f;        ///< < 1: the smallest set of most likely tokens whose mass reaches top_p
  std::uint64_t seed = 0;   ///< seeds the generator

  /// Errors: temperature negative or not finite, top_k negative, top_p not in (0, 1].
  status validate() const;
};

/// A sampler: one per sequence (each has its own generator, so sequences sampled in one batch
/// give what they would alone).
class Sampler {
 public:
  /// Throws quarry::error when params.validate() fails.
  explicit Sampler(const SamplingParams& params);

  /// The chosen token id for `logits` (one row of the model's output). With temperature 0 it is
  /// the argmax (the first of equals); otherwise candidates are filtered by top-k, then top-p,
  /// and drawn from their renormalized probabilities. Logits must hold at least one finite value.
  std::int32_t sample(std::span<const float> logits);

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, std::int32_t>> candidates_;
};

}  // namespace quarry
