// libFuzzer target: IvfPqIndex::load_bytes on files whose container is valid (CRCs right), so
// the fuzzer works on what the index loader itself must check: the META fields, the section
// sizes against each other, list sizes, ids, values. The input is a version byte then, for each
// section tag in order, a 32-bit length and that many payload bytes (a short input ends the
// list of sections). fuzz_ivf_pq_seeds writes real indexes in this form.
//
// Build the library instrumented for coverage (clang):
//   cmake -S . -B build/fuzz -DCMAKE_CXX_COMPILER=clang++ -DQUARRY_BUILD_FUZZERS=ON -DQUARRY_CUDA=OFF \
//     -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined" && cmake --build build/fuzz --target fuzz_ivf_pq_load
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include <quarry/index/ivf_pq.hpp>
#include <quarry/io/section_file.hpp>

namespace {
constexpr const char* kTags[] = {"META", "CENT", "PQCB", "LSIZ", "IDS_", "CODE", "OPQR", "VECS"};
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint16_t minor = data[0] & 1;
  std::size_t at = 1;
  quarry::SectionFileWriter w(quarry::FileFormat{"QRYIVFPQ", 1, minor});
  for (const char* tag : kTags) {
    if (size - at < 4) break;
    std::uint32_t len;
    std::memcpy(&len, data + at, 4);
    at += 4;
    if (len == 0xffffffffu) continue;  // this section absent
    len = static_cast<std::uint32_t>(std::min<std::size_t>(len, size - at));
    const auto* p = reinterpret_cast<const std::byte*>(data + at);
    w.add(tag, std::vector<std::byte>(p, p + len));
    at += len;
  }
  const auto bytes = w.to_bytes();
  if (!bytes.ok()) return 0;
  for (bool mmap : {false, true}) {
    auto index = quarry::IvfPqIndex<quarry::cpu>::load_bytes(*bytes, {.mmap = mmap});
    if (!index.ok()) continue;
    // A loaded index must be usable: search it once.
    std::vector<float> q(static_cast<std::size_t>(index->dim()), 0.5f);
    (void)index->search(q, 3, {.nprobe = 2, .refine_factor = 2});
  }
  return 0;
}
