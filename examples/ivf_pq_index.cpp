// ivf_pq_index: the index module's user story in its shortest form. Builds an IVF-PQ index
// (train, add), queries it, measures recall against brute force, saves it to a file, loads it
// back (memory-mapped) and checks the loaded index gives the same answers.
// (search_vectors is the full tool: progress, QPS, fast-scan, re-ranking, .bvecs and ground truth.)
//
// Usage: ivf_pq_index [base.fvecs query.fvecs]
//   Without arguments it generates 10000 embedding-like 64-d vectors and 100 queries (about a second).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <numeric>
#include <random>
#include <vector>

#include <fmt/core.h>

#include <quarry/index/ivf_pq.hpp>
#include <quarry/quarry.hpp>

using namespace quarry;

namespace {

// n vectors of dimension d that behave like embeddings (few underlying degrees of freedom): points
// of 50 overlapping clusters in an 8-d space, mapped linearly into d dimensions, plus a little noise.
Tensor<float> embeddings(std::int64_t n, std::int64_t d, std::uint32_t seed) {
  std::mt19937 rng(1);  // the same clusters and map for every call; `seed` varies the points
  std::normal_distribution<float> normal(0.f, 1.f);
  Tensor<float> centres({50, 8}), map({d, 8}), x({n, d});
  for (float& v : centres.span()) v = normal(rng);
  for (float& v : map.span()) v = normal(rng) / std::sqrt(8.f);
  rng.seed(seed);
  std::uniform_int_distribution<std::int64_t> pick(0, 49);
  for (std::int64_t i = 0; i < n; ++i) {
    float z[8];
    const std::int64_t c = pick(rng);
    for (std::int64_t l = 0; l < 8; ++l) z[l] = centres(c, l) + normal(rng);
    for (std::int64_t j = 0; j < d; ++j) {
      x(i, j) = 0.02f * normal(rng);
      for (std::int64_t l = 0; l < 8; ++l) x(i, j) += map(j, l) * z[l];
    }
  }
  return x;
}

// The ids of the k nearest rows of base to `query` (squared L2), by brute force.
std::vector<std::int64_t> exact_knn(TensorView<const float> base, std::span<const float> query, std::int64_t k) {
  std::vector<float> dist(static_cast<std::size_t>(base.dim(0)));
  for (std::int64_t i = 0; i < base.dim(0); ++i) {
    float s = 0;
    for (std::int64_t j = 0; j < base.dim(1); ++j) s += (base(i, j) - query[j]) * (base(i, j) - query[j]);
    dist[static_cast<std::size_t>(i)] = s;
  }
  std::vector<std::int64_t> ids(dist.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), [&](auto a, auto b) { return dist[a] < dist[b]; });
  ids.resize(static_cast<std::size_t>(k));
  return ids;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const bool files = argc == 3;
    const Tensor<float> base = files ? read_fvecs(argv[1]).value() : embeddings(10000, 64, 1);
    const Tensor<float> queries = files ? read_fvecs(argv[2], 100).value() : embeddings(100, 64, 2);
    const std::int64_t n = base.dim(0), d = base.dim(1), nq = queries.dim(0), k = 10;
    fmt::print("{} vectors of dimension {} ({}), {} queries\n", n, d, files ? argv[1] : "generated", nq);

    // Build: k-means splits the vectors into 64 lists; each vector is kept in its nearest list as
    // the PQ code of its residual: 32 sub-vectors, 4 bits each (16 bytes, scanned with fast-scan).
    ThreadPool pool(2);
    const auto t0 = std::chrono::steady_clock::now();
    IvfPqIndex<cpu> index = IvfPqIndex<cpu>::create(d, {.nlist = 64, .m = 32, .nbits = 4}).value();
    index.train(base.view(), {.pool = &pool}).throw_if_error();
    index.add(base.view(), &pool).throw_if_error();
    const double build_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    fmt::print("built in {:.2f} s: {} vectors, {:.0f} bytes each in memory, a 16-byte code and an 8-byte id "
               "(the f32 vector is {} bytes)\n", build_s, index.size(), index.bytes_per_vector(), d * 4);

    // Query, scanning the nprobe lists nearest to each query, and compare with the exact nearest
    // neighbours: more lists scanned, better recall, slower queries.
    std::vector<std::vector<std::int64_t>> truth;
    for (std::int64_t q = 0; q < nq; ++q) truth.push_back(exact_knn(base.view(), queries[q].span(), k));
    for (std::int64_t nprobe : {1, 4, 16}) {
      const SearchResults r = index.search_batch(queries.view(), k, {.nprobe = nprobe}, &pool).value();
      std::int64_t found = 0;
      for (std::int64_t q = 0; q < nq; ++q)
        for (std::int64_t i = 0; i < k; ++i) found += std::count(truth[q].begin(), truth[q].end(), r.id(q, i));
      fmt::print("nprobe {:>2}: {}-recall@{} = {:.3f} (share of the true {} nearest found)\n", nprobe, k, k,
                 double(found) / double(nq * k), k);
    }

    // Save (atomic, checksummed), load back memory-mapped, and check the answers are the same.
    const std::string path = "ivf_pq_index_example.qidx";
    index.save(path).throw_if_error();
    const IvfPqIndex<cpu> loaded = IvfPqIndex<cpu>::load(path, {.mmap = true}).value();
    const SearchResults a = index.search_batch(queries.view(), k, {.nprobe = 4}).value();
    const SearchResults b = loaded.search_batch(queries.view(), k, {.nprobe = 4}).value();
    const bool same = a.ids == b.ids && a.distances == b.distances;
    fmt::print("saved to {} ({} KiB), loaded memory-mapped: {} vectors; its answers are {}\n", path,
               std::filesystem::file_size(path) / 1024, loaded.size(), same ? "identical" : "DIFFERENT");
    std::filesystem::remove(path);
    return same ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ivf_pq_index: %s\n", e.what());
    return 1;
  }
}
