#include "quarry/nn/ops.hpp"

#include <cmath>
#include <limits>

namespace quarry {

void rms_norm(std::span<const float> x, std::span<const float> weight, float eps, std::span<float> out) noexcept {
  double sum = 0.0;
  for (const float v : x) sum += static_cast<double>(v) * static_cast<double>(v);
  const float mean = static_cast<float>(sum / static_cast<double>(x.size()));
  const float inv = 1.f / std::sqrt(mean + eps);
  for (std::size_t i = 0; i < x.size(); ++i) out[i] = x[i] * inv * weight[i];
}

void rope_adjacent_pairs(std::span<float> x, std::int64_t heads, std::int64_t head_dim, std::int64_t pos, std::int64_t rope_dim,
                         float base) noexcept {
  // The angle of pair i is pos * step^i with step = base^(-2 / rope_dim), multiplied up in
  // float as ggml's rope cache does (so the angles agree with llama.cpp's to the last bit).
  const float step = std::pow(base, -2.f / static_cast<float>(rope_dim));
  float theta = static_cast<float>(pos);
  for (std::int64_t i = 0; i < rope_dim; i += 2) {
    const float c = std::cos(theta), s = std::sin(theta);
    for (std::int64_t h = 0; h < heads; ++h) {
      float* p = x.data() + h * head_dim + i;
      const float a = p[0], b = p[1];
      p[0] = a * c - b * s;
      p[1] = a * s + b * c;
    }
    theta *= step;
  }
}

void silu_mul(std::span<float> gate, std::span<const float> up) noexcept {
  for (std::size_t i = 0; i < gate.size(); ++i) gate[i] = gate[i] / (1.f + std::exp(-gate[i])) * up[i];
}

void softmax(std::span<float> x) noexcept {
  if (x.empty()) return;
  float m = -std::numeric_limits<float>::infinity();
  for (const float v : x) m = std::fmax(m, v);
  float sum = 0.f;
  for (float& v : x) sum += (v = std::exp(v - m));
  const float inv = 1.f / sum;
  for (float& v : x) v *= inv;
}

std::int64_t argmax(std::span<const float> x) noexcept {
  std::int64_t best = -1;
  for (std::size_t i = 0; i < x.size(); ++i)
    if (!std::isnan(x[i]) && (best < 0 || x[i] > x[static_cast<std::size_t>(best)])) best = static_cast<std::int64_t>(i);
  return best;
}

}  // namespace quarry
