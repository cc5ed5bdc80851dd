// Writes fuzz_ivf_pq_load seeds into the folder given: small real indexes (8- and 4-bit, with
// and without stored vectors and OPQ) in the fuzzer's input form.
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <quarry/index/ivf_pq.hpp>
#include <quarry/io/section_file.hpp>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s corpus-folder\n", argv[0]);
    return 2;
  }
  using namespace quarry;
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  Tensor<float> x({300, 8});
  for (float& v : x.span()) v = nd(rng);
  int n = 0;
  for (int nbits : {8, 4})
    for (bool store : {false, true})
      for (bool opq : {false, true}) {
        auto idx = IvfPqIndex<cpu>::create(8, {.nlist = 2, .m = 2, .nbits = nbits, .store_vectors = store, .opq = opq}).value();
        IvfPqTrainOptions to;
        to.opq_iterations = 2;
        idx.train(x.view(), to).throw_if_error();
        idx.add(TensorView<const float>(x.data(), Shape{20, 8})).throw_if_error();
        const std::string tmp = std::string(argv[1]) + "/.index.tmp";
        idx.save(tmp).throw_if_error();
        auto file = SectionFile::open(tmp, FileFormat{"QRYIVFPQ", 1, 1}).value();
        std::vector<char> out{static_cast<char>(file.minor())};
        for (const char* tag : {"META", "CENT", "PQCB", "LSIZ", "IDS_", "CODE", "OPQR", "VECS"}) {
          std::uint32_t len = 0xffffffffu;
          std::span<const std::byte> b;
          if (file.contains(tag)) {
            b = file.section(tag).value();
            len = static_cast<std::uint32_t>(b.size());
          }
          const char* lp = reinterpret_cast<const char*>(&len);
          out.insert(out.end(), lp, lp + 4);
          out.insert(out.end(), reinterpret_cast<const char*>(b.data()), reinterpret_cast<const char*>(b.data()) + b.size());
        }
        std::remove(tmp.c_str());
        std::ofstream(std::string(argv[1]) + "/seed" + std::to_string(n++), std::ios::binary).write(out.data(), static_cast<std::streamsize>(out.size()));
      }
  std::printf("%d seeds written\n", n);
  return 0;
}
