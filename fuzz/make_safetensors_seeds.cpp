// Writes fuzz_safetensors seeds into the folder given: small valid safetensors files built byte
// by byte (quarry has no safetensors writer): an empty header, metadata alone, a tensor of every
// dtype, a scalar and empty tensors, escaped and non-ASCII names in a header laid out with
// whitespace and no padding, and a file of many tensors listed out of offset order. Each is
// checked to parse.
//   quarry_fuzz_safetensors_seeds <folder>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <quarry/io/safetensors.hpp>

namespace {

// A file: the header's length (padded with spaces to a multiple of 8 when `pad`), the header,
// the data.
std::vector<char> file_of(std::string header, const std::vector<char>& data, bool pad = true) {
  if (pad)
    while (header.size() % 8) header += ' ';
  std::vector<char> out(8);
  const std::uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

// Tensors laid out in the order added; `name` is written into the JSON as it is (escapes and all).
struct Builder {
  std::string entries;
  std::vector<char> data;
  Builder& tensor(const std::string& name, const std::string& dtype, const std::string& shape, std::size_t nbytes) {
    const std::size_t begin = data.size();
    for (std::size_t i = 0; i < nbytes; ++i) data.push_back(static_cast<char>(i * 37 + 11));
    entries += (entries.empty() ? "" : ",") + name + ":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape + ",\"data_offsets\":[" +
               std::to_string(begin) + "," + std::to_string(data.size()) + "]}";
    return *this;
  }
  std::vector<char> file(const std::string& metadata = "") const {
    std::string h = "{";
    if (!metadata.empty()) h += "\"__metadata__\":" + metadata + (entries.empty() ? "" : ",");
    return file_of(h + entries + "}", data);
  }
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <folder>\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  std::vector<std::pair<std::string, std::vector<char>>> seeds;

  seeds.emplace_back("empty", file_of("{}", {}));
  seeds.emplace_back("metadata", Builder().file(R"({"format":"pt","note":"a\"b\\c\n\u00e9\ud83d\ude00"})"));

  Builder every;  // widest first, as the reference writer orders them, so views are aligned
  every.tensor("\"f64\"", "F64", "[2]", 16).tensor("\"i64\"", "I64", "[1,1]", 8).tensor("\"u64\"", "U64", "[1]", 8).tensor("\"c64\"", "C64", "[1]", 8);
  every.tensor("\"f32\"", "F32", "[2,3]", 24).tensor("\"i32\"", "I32", "[2]", 8).tensor("\"u32\"", "U32", "[1]", 4);
  every.tensor("\"f16\"", "F16", "[3]", 6).tensor("\"bf16\"", "BF16", "[1,3]", 6).tensor("\"i16\"", "I16", "[1]", 2).tensor("\"u16\"", "U16", "[1]", 2);
  every.tensor("\"i8\"", "I8", "[3]", 3).tensor("\"u8\"", "U8", "[2,2]", 4).tensor("\"bool\"", "BOOL", "[2]", 2);
  every.tensor("\"e5m2\"", "F8_E5M2", "[4]", 4).tensor("\"e4m3\"", "F8_E4M3", "[2,2]", 4).tensor("\"e8m0\"", "F8_E8M0", "[2]", 2);
  every.tensor("\"f4\"", "F4", "[4]", 2).tensor("\"f6a\"", "F6_E2M3", "[4]", 3).tensor("\"f6b\"", "F6_E3M2", "[4]", 3);
  seeds.emplace_back("every-dtype", every.file(R"({"format":"pt"})"));

  Builder shapes;
  shapes.tensor("\"empty\"", "F32", "[0]", 0).tensor("\"scalar\"", "F32", "[]", 4).tensor("\"empty3\"", "F16", "[3,0,2]", 0);
  shapes.tensor("\"rank8\"", "U8", "[1,1,1,1,1,1,1,2]", 2).tensor("\"last\"", "BF16", "[0,4]", 0);
  seeds.emplace_back("shapes", shapes.file());

  const std::string spaced = "{ \"n\\u00e9\\t\\\"\\\\\\/\xe2\x82\xac\" :\n\t{ \"data_offsets\" : [ 0 , 8 ] , \"shape\" : [ 2 ] , \"dtype\" : \"F32\" } ,\r\n"
                             "  \"__metadata__\" : { \"k\" : \"v\" }\n}";
  seeds.emplace_back("whitespace-unpadded", file_of(spaced, std::vector<char>(8, '\x01'), false));

  // Listed in reverse offset order.
  std::string many = "{";
  std::vector<char> many_data(4 * 24);
  for (int i = 23; i >= 0; --i)
    many += "\"layers." + std::to_string(i) + ".weight\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[" + std::to_string(4 * i) + "," +
            std::to_string(4 * i + 4) + "]}" + (i ? "," : "}");
  seeds.emplace_back("many", file_of(many, many_data));

  for (const auto& [name, bytes] : seeds) {
    auto f = quarry::SafetensorsFile::parse(std::as_bytes(std::span(bytes)), name);
    if (!f.ok()) {
      std::fprintf(stderr, "seed %s does not parse: %s\n", name.c_str(), f.status().to_string().c_str());
      return 1;
    }
    std::ofstream out(dir + "/" + name + ".safetensors", std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) {
      std::fprintf(stderr, "cannot write %s/%s.safetensors\n", dir.c_str(), name.c_str());
      return 1;
    }
  }
  std::printf("%zu seeds written\n", seeds.size());
  return 0;
}
