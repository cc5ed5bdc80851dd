// Writes a few valid section files into a folder, as a seed corpus for fuzz_section_file:
//   quarry_fuzz_section_file_seeds <folder>
#include <cstdio>
#include <string>
#include <vector>

#include <quarry/io/section_file.hpp>

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <folder>\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const quarry::FileFormat format{"QRYFUZZ0", 1, 0};
  std::vector<float> floats = {1.f, 2.f, 3.f, 4.f, 5.f};
  std::vector<std::uint8_t> codes(100);
  for (std::size_t i = 0; i < codes.size(); ++i) codes[i] = static_cast<std::uint8_t>(i);

  quarry::SectionFileWriter empty(format);
  quarry::SectionFileWriter one(format);
  one.add_array<float>("VECS", floats);
  quarry::SectionFileWriter several(format);
  several.add_stream("META", [](quarry::SectionSink& s) -> quarry::status {
    QUARRY_RETURN_IF_ERROR(s.write_value(std::uint32_t{3}));
    std::uint16_t v[3] = {1, 2, 3};
    return s.write_array<std::uint16_t>(v);
  });
  several.add_array<std::uint8_t>("CODE", codes);
  several.add_array<float>("VECS", floats);
  several.add("NONE", std::span<const std::byte>());

  const quarry::SectionFileWriter* writers[] = {&empty, &one, &several};
  for (int i = 0; i < 3; ++i) {
    const quarry::status st = writers[i]->write(dir + "/seed" + std::to_string(i) + ".qry");
    if (!st.ok()) {
      std::fprintf(stderr, "%s\n", st.to_string().c_str());
      return 1;
    }
  }
  return 0;
}
