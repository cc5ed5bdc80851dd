// quarry/nn/sampler.hpp: greedy is the argmax; temperature, top-k and top-p draw from the right
// distribution (frequencies over many draws with a fixed seed) and never outside the candidates;
// a seed repeats a run; bad parameters are errors.
#include <doctest/doctest.h>

#include <cmath>
#include <vector>

#include <quarry/nn/sampler.hpp>

#include "test_util.hpp"

using namespace quarry;

TEST_CASE("sampler: greedy, top-k 1 and a tiny temperature give the argmax") {
  const std::vector<float> logits = {0.1f, 2.f, -1.f, 2.f, 1.9f};
  SamplingParams p;
  CHECK(Sampler(p).sample(logits) == 1);  // the first of equals
  p.temperature = 1.f;
  p.top_k = 1;
  CHECK(Sampler(p).sample(logits) == 1);
  p.top_k = 0;
  p.temperature = 1e-4f;
  const std::vector<float> clear = {0.f, 1.f, 0.5f};
  Sampler s(p);
  for (int i = 0; i < 100; ++i) CHECK(s.sample(clear) == 1);
}

TEST_CASE("sampler: frequencies follow softmax(logits / T) over the top-k / top-p candidates") {
  // p = softmax(log([0.5, 0.3, 0.15, 0.05])) at T = 1.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  auto frequencies = [&](SamplingParams p) {
    Sampler s(p);
    std::vector<double> f(4, 0.0);
    const int n = 40000;
    for (int i = 0; i < n; ++i) f[static_cast<std::size_t>(s.sample(logits))] += 1.0 / n;
    return f;
  };
  SamplingParams p;
  p.temperature = 1.f;
  p.seed = 7;
  std::vector<double> f = frequencies(p);
  CHECK(f[0] == doctest::Approx(0.5).epsilon(0.03));
  CHECK(f[1] == doctest::Approx(0.3).epsilon(0.04));
  CHECK(f[2] == doctest::Approx(0.15).epsilon(0.06));
  CHECK(f[3] == doctest::Approx(0.05).epsilon(0.1));
  p.top_k = 2;  // renormalized over {0.5, 0.3}
  f = frequencies(p);
  CHECK(f[0] == doctest::Approx(0.625).epsilon(0.03));
  CHECK(f[2] == 0.0);
  CHECK(f[3] == 0.0);
  p.top_k = 0;
  p.top_p = 0.85f;  // 0.5 + 0.3 < 0.85 <= 0.95: three candidates
  f = frequencies(p);
  CHECK(f[2] == doctest::Approx(0.15 / 0.95).epsilon(0.06));
  CHECK(f[3] == 0.0);
  p.top_p = 1.f;
  p.temperature = 2.f;  // flatter: p ~ sqrt(p0)
  f = frequencies(p);
  const double z = std::sqrt(0.5) + std::sqrt(0.3) + std::sqrt(0.15) + std::sqrt(0.05);
  CHECK(f[3] == doctest::Approx(std::sqrt(0.05) / z).epsilon(0.08));
}

TEST_CASE("sampler: a seed repeats a run; non-finite logits are never drawn; bad parameters are errors") {
  std::vector<float> logits(50);
  for (std::size_t i = 0; i < logits.size(); ++i) logits[i] = static_cast<float>(i % 7) * 0.3f;
  logits[3] = -INFINITY;
  logits[4] = NAN;
  SamplingParams p;
  p.temperature = 0.9f;
  p.top_p = 0.9f;
  p.seed = 42;
  Sampler a(p), b(p);
  for (int i = 0; i < 200; ++i) {
    const std::int32_t x = a.sample(logits);
    CHECK(x == b.sample(logits));
    CHECK(x != 3);
    CHECK(x != 4);
  }
  SamplingParams bad;
  bad.temperature = -1.f;
  CHECK(bad.validate().code() == errc::invalid_argument);
  CHECK_THROWS_AS(Sampler{bad}, quarry::error);
  bad = {};
  bad.top_p = 0.f;
  CHECK(quarry::testing::contains(bad.validate().message(), "top_p"));
  bad = {};
  bad.top_k = -3;
  CHECK(quarry::testing::contains(bad.validate().message(), "top_k"));
}
