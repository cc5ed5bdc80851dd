#include "quarry/nn/sampler.hpp"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "quarry/nn/ops.hpp"

namespace quarry {

status SamplingParams::validate() const {
  if (!(temperature >= 0.f) || !std::isfinite(temperature))
    return {errc::invalid_argument, fmt::format("temperature is {}; it must be a finite number >= 0", temperature)};
  if (top_k < 0) return {errc::invalid_argument, fmt::format("top_k is {}; it must be >= 0 (0: no limit)", top_k)};
  if (!(top_p > 0.f && top_p <= 1.f)) return {errc::invalid_argument, fmt::format("top_p is {}; it must be in (0, 1]", top_p)};
  return {};
}

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {
  const status st = params.validate();
  if (!st.ok()) throw_error(st.code(), st.message());
}

std::int32_t Sampler::sample(std::span<const float> logits) {
  if (params_.temperature == 0.f) return static_cast<std::int32_t>(argmax(logits));
  // Candidates sorted by logit, most likely first (ties by id), non-finite logits dropped.
  candidates_.clear();
  for (std::size_t i = 0; i < logits.size(); ++i)
    if (std::isfinite(logits[i])) candidates_.emplace_back(logits[i], static_cast<std::int32_t>(i));
  if (candidates_.empty()) return static_cast<std::int32_t>(argmax(logits));
  auto order = [](const auto& a, const auto& b) { return a.first > b.first || (a.first == b.first && a.second < b.second); };
  std::size_t keep = candidates_.size();
  if (params_.top_k > 0 && static_cast<std::size_t>(params_.top_k) < keep) {
    keep = static_cast<std::size_t>(params_.top_k);
    std::partial_sort(candidates_.begin(), candidates_.begin() + static_cast<std::ptrdiff_t>(keep), candidates_.end(), order);
  } else {
    std::sort(candidates_.begin(), candidates_.end(), order);
  }
  // Probabilities of the kept candidates at the temperature (in place of the logits).
  const float top = candidates_[0].first;
  double sum = 0;
  for (std::size_t i = 0; i < keep; ++i) {
    candidates_[i].first = std::exp((candidates_[i].first - top) / params_.temperature);
    sum += candidates_[i].first;
  }
  if (params_.top_p < 1.f) {
    double mass = 0;
    std::size_t n = 0;
    while (n < keep && mass < params_.top_p * sum) mass += candidates_[n++].first;
    keep = std::max<std::size_t>(n, 1);
    sum = mass > 0 ? mass : candidates_[0].first;
  }
  const double u = std::uniform_real_distribution<double>(0.0, sum)(rng_);
  double acc = 0;
  for (std::size_t i = 0; i < keep; ++i) {
    acc += candidates_[i].first;
    if (u < acc) return candidates_[i].second;
  }
  return candidates_[keep - 1].second;
}

}  // namespace quarry
