// libFuzzer target: SafetensorsFile::parse on arbitrary bytes must return an error or a file
// whose every tensor lies inside the bytes and reads through every accessor, never crash, read
// out of bounds or allocate without bound.
//
// Each input is parsed as it is, and again with its 8-byte header length set to end at the
// input's last '}', so that mutations which grow or shrink the JSON still reach the JSON parser
// and the offset checks instead of stopping at the length. quarry_fuzz_safetensors_seeds writes
// valid files as seeds; safetensors.dict holds the header's tokens (-dict=).
//
// Build the library instrumented for coverage (clang), as for fuzz_ivf_pq_load:
//   cmake -S . -B build/fuzz -DCMAKE_CXX_COMPILER=clang++ -DQUARRY_BUILD_FUZZERS=ON -DQUARRY_CUDA=OFF \
//     -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined" && cmake --build build/fuzz --target fuzz_safetensors
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include <quarry/io/safetensors.hpp>

namespace {

void exercise(std::span<const std::byte> bytes) {
  auto f = quarry::SafetensorsFile::parse(bytes, "fuzz", {.max_header_bytes = 1 << 20, .max_tensors = 4096, .max_metadata = 4096});
  if (!f.ok()) return;
  if (f->data_offset() > bytes.size()) __builtin_trap();
  for (const auto& [k, v] : f->metadata())
    if (f->find_metadata(k) == nullptr) __builtin_trap();
  for (const quarry::SafetensorsTensorInfo& t : f->tensors()) {
    if (t.offset < f->data_offset() || t.offset > bytes.size() || t.nbytes > bytes.size() - t.offset) __builtin_trap();
    if (f->find_tensor(t.name) != &t) __builtin_trap();
    const auto span = f->tensor_bytes(t);
    if (span.size() != t.nbytes) __builtin_trap();
    // Touch the data through each view that applies, and the f32 copy.
    volatile float sink = 0;
    if (auto v = f->tensor_f32(t.name); v.ok() && v->numel() > 0) sink = v->data()[v->numel() - 1];
    if (auto v = f->tensor_f16(t.name); v.ok() && v->numel() > 0) sink = float(v->data()[v->numel() - 1]);
    if (auto v = f->tensor_bf16(t.name); v.ok() && v->numel() > 0) sink = float(v->data()[v->numel() - 1]);
    if (auto v = f->tensor_f64(t.name); v.ok() && v->numel() > 0) sink = static_cast<float>(v->data()[v->numel() - 1] != 0);
    if (auto v = f->tensor_i8(t.name); v.ok() && v->numel() > 0) sink = v->data()[v->numel() - 1];
    if (auto v = f->tensor_u8(t.name); v.ok() && v->numel() > 0) sink = v->data()[v->numel() - 1];
    if (auto v = f->tensor_i32(t.name); v.ok() && v->numel() > 0) sink = static_cast<float>(v->data()[v->numel() - 1] & 1);
    if (auto d = f->tensor_dequantized_f32(t.name); d.ok()) {
      if (d->shape() != t.shape) __builtin_trap();
      if (d->numel() > 0) sink = d->data()[d->numel() - 1];
    }
    (void)sink;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  // A buffer of its own, so ASan sees exactly `size` bytes and alignment varies only with the
  // file's offsets.
  std::vector<std::byte> buf(reinterpret_cast<const std::byte*>(data), reinterpret_cast<const std::byte*>(data) + size);
  exercise(buf);
  if (size > 8) {
    for (std::size_t i = size; i-- > 8;) {
      if (buf[i] != std::byte{'}'}) continue;
      const std::uint64_t n = i + 1 - 8;
      std::uint64_t old;
      std::memcpy(&old, buf.data(), 8);
      if (old != n) {
        std::memcpy(buf.data(), &n, 8);
        exercise(buf);
      }
      break;
    }
  }
  return 0;
}
