// libFuzzer target: GgufFile::parse on arbitrary bytes must return an error or a file whose
// metadata reads back and whose every tensor lies inside the bytes and reads through every
// accessor (views, the Q8_0 / Q4_0 import, the f32 copy), never crash, read out of bounds or
// allocate without bound.
//
// Each input is parsed as it is, and again with the magic and version patched (to GGUF v2 or
// v3, as the input's last byte says), so that mutations reach the counts, metadata and tensor
// infos. quarry_fuzz_gguf_seeds writes small valid files (and stories260K's header when it is
// given) as seeds.
//
// Build the library instrumented for coverage (clang), as for fuzz_ivf_pq_load:
//   cmake -S . -B build/fuzz -DCMAKE_CXX_COMPILER=clang++ -DQUARRY_BUILD_FUZZERS=ON -DQUARRY_CUDA=OFF \
//     -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined" && cmake --build build/fuzz --target fuzz_gguf
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include <quarry/io/gguf.hpp>

namespace {

// Limits well under the defaults, so that no input can ask for more than a few MB.
const quarry::GgufFile::Limits kLimits{.max_tensors = 4096,
                                       .max_metadata = 4096,
                                       .max_string_bytes = 1 << 20,
                                       .max_key_bytes = 1 << 12,
                                       .max_array_elements = 1 << 20,
                                       .max_array_depth = 4};

void exercise(std::span<const std::byte> bytes) {
  auto f = quarry::GgufFile::parse(bytes, "fuzz", kLimits);
  if (!f.ok()) return;
  for (const auto& [key, value] : f->metadata()) {
    if (f->find(key) == nullptr) __builtin_trap();
    (void)f->get_int(key);
    (void)f->get_float(key);
    (void)f->get_string(key);
  }
  for (const quarry::GgufTensorInfo& t : f->tensors()) {
    if (t.offset < f->data_offset() || t.offset > bytes.size() || t.nbytes > bytes.size() - t.offset) __builtin_trap();
    if (f->tensor_bytes(t).size() != t.nbytes) __builtin_trap();
    volatile float sink = 0;
    if (auto v = f->tensor_f32(t.name); v.ok() && v->numel() > 0) sink = v->data()[v->numel() - 1];
    if (auto v = f->tensor_f16(t.name); v.ok() && v->numel() > 0) sink = float(v->data()[v->numel() - 1]);
    if (auto v = f->tensor_bf16(t.name); v.ok() && v->numel() > 0) sink = float(v->data()[v->numel() - 1]);
    (void)f->tensor_quantized(t.name);
    if (auto d = f->tensor_dequantized_f32(t.name); d.ok()) {
      if (d->shape() != t.shape) __builtin_trap();
      if (d->numel() > 0) sink = d->data()[d->numel() - 1];
    }
    (void)sink;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // A buffer of its own, so ASan sees exactly `size` bytes.
  std::vector<std::byte> buf(reinterpret_cast<const std::byte*>(data), reinterpret_cast<const std::byte*>(data) + size);
  exercise(buf);
  if (size >= 8) {
    const std::uint32_t magic = 0x46554747, version = (data[size - 1] & 1) ? 2 : 3;
    std::uint32_t had[2];
    std::memcpy(had, buf.data(), 8);
    if (had[0] != magic || had[1] != version) {
      std::memcpy(buf.data(), &magic, 4);
      std::memcpy(buf.data() + 4, &version, 4);
      exercise(buf);
    }
  }
  return 0;
}
