// The .fvecs / .bvecs / .ivecs readers on files made here (valid, truncated, bit-flipped, bad
// dimensions) and on the real bigann10k data.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include <unistd.h>

#include <quarry/io/vecs.hpp>

#include "shared_data.hpp"

#include "test_util.hpp"

using namespace quarry;
using namespace quarry::testing;

namespace {

// The bytes of a vecs file holding `rows` (each written with its own length as dimension).
template <class T>
std::vector<std::byte> vecs_bytes(const std::vector<std::vector<T>>& rows) {
  std::vector<std::byte> out;
  auto put = [&](const void* p, std::size_t n) {
    const auto* b = static_cast<const std::byte*>(p);
    out.insert(out.end(), b, b + n);
  };
  for (const auto& r : rows) {
    const auto d = static_cast<std::int32_t>(r.size());
    put(&d, 4);
    put(r.data(), r.size() * sizeof(T));
  }
  return out;
}

void set_i32(std::vector<std::byte>& bytes, std::size_t offset, std::int32_t v) { std::memcpy(bytes.data() + offset, &v, 4); }

std::string error_of(const status& s) { return s.ok() ? "" : s.to_string(); }

// A file under the temp folder, removed when the object dies.
struct TempFile {
  std::string path;
  TempFile(const std::string& name, const std::vector<std::byte>& bytes)
      : path((std::filesystem::temp_directory_path() / (std::to_string(::getpid()) + "_" + name)).string()) {
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  ~TempFile() { std::filesystem::remove(path); }
};

const std::vector<std::vector<float>> kFloatRows = {{1.f, 2.f, 3.f, 4.f}, {-1.f, 0.5f, 0.f, 1e30f}, {7.f, 8.f, 9.f, 10.f}};

}  // namespace

TEST_CASE("vecs: valid files of each kind read back exactly") {
  const auto fb = vecs_bytes(kFloatRows);
  auto f = parse_fvecs(fb, "f.fvecs");
  REQUIRE(f.ok());
  CHECK(f->shape() == Shape{3, 4});
  for (std::int64_t r = 0; r < 3; ++r)
    for (std::int64_t c = 0; c < 4; ++c) CHECK(f->at(r, c) == kFloatRows[r][c]);

  const auto bb = vecs_bytes<std::uint8_t>({{0, 255, 7}, {1, 2, 3}});
  auto b = parse_bvecs(bb, "b.bvecs");
  REQUIRE(b.ok());
  CHECK(b->shape() == Shape{2, 3});
  CHECK(b->at(0, 1) == 255);
  CHECK(b->at(1, 2) == 3);
  const Tensor<float> bf = to_float(b->view());
  CHECK(bf.shape() == Shape{2, 3});
  CHECK(bf(0, 1) == 255.f);

  const auto ib = vecs_bytes<std::int32_t>({{-1, 2147483647}, {5, 6}});
  auto i = parse_ivecs(ib, "i.ivecs");
  REQUIRE(i.ok());
  CHECK(i->shape() == Shape{2, 2});
  CHECK(i->at(0, 0) == -1);
  CHECK(i->at(0, 1) == 2147483647);

  // An empty file holds no vectors.
  auto e = parse_fvecs({}, "empty.fvecs");
  REQUIRE(e.ok());
  CHECK(e->shape() == Shape{0, 0});
}

TEST_CASE("vecs: max_rows reads a prefix") {
  const auto fb = vecs_bytes(kFloatRows);
  auto two = parse_fvecs(fb, "f.fvecs", 2);
  REQUIRE(two.ok());
  CHECK(two->shape() == Shape{2, 4});
  CHECK(two->at(1, 3) == 1e30f);
  auto none = parse_fvecs(fb, "f.fvecs", 0);
  REQUIRE(none.ok());
  CHECK(none->shape() == Shape{0, 4});
  auto more = parse_fvecs(fb, "f.fvecs", 100);
  REQUIRE(more.ok());
  CHECK(more->shape() == Shape{3, 4});
  // Records past max_rows are not read, but the file size is still checked.
  auto bad_tail = fb;
  set_i32(bad_tail, 40, 9);
  CHECK(parse_fvecs(bad_tail, "f.fvecs", 2).ok());
  CHECK(contains(error_of(parse_fvecs(bad_tail, "f.fvecs").status()), "record 2 at offset 40: dimension field is 9, but record 0's is 4"));
  bad_tail.pop_back();
  CHECK(!parse_fvecs(bad_tail, "f.fvecs", 1).ok());
}

TEST_CASE("vecs: files on disk; a missing file is not_found naming the path") {
  TempFile ff("quarry_test.fvecs", vecs_bytes(kFloatRows));
  auto f = read_fvecs(ff.path);
  REQUIRE(f.ok());
  CHECK(f->shape() == Shape{3, 4});
  CHECK(f->at(2, 0) == 7.f);

  TempFile bf("quarry_test.bvecs", vecs_bytes<std::uint8_t>({{9, 8}, {7, 6}, {5, 4}}));
  auto b = read_bvecs_as_float(bf.path, 2);
  REQUIRE(b.ok());
  CHECK(b->shape() == Shape{2, 2});
  CHECK(b->at(1, 1) == 6.f);

  TempFile ifile("quarry_test.ivecs", vecs_bytes<std::int32_t>({{1, 2, 3}}));
  auto i = read_ivecs(ifile.path);
  REQUIRE(i.ok());
  CHECK(i->at(0, 2) == 3);

  const auto missing = read_fvecs("/nonexistent/quarry/x.fvecs");
  REQUIRE(!missing.ok());
  CHECK(missing.status().code() == errc::not_found);
  CHECK(contains(missing.status(), "/nonexistent/quarry/x.fvecs"));

  // Errors name the file.
  auto bytes = vecs_bytes(kFloatRows);
  set_i32(bytes, 0, 0);
  TempFile zf("quarry_test_zero.fvecs", bytes);
  const auto z = read_fvecs(zf.path);
  REQUIRE(!z.ok());
  CHECK(contains(z.status(), zf.path + ": record 0 at offset 0: dimension field is 0"));
}

TEST_CASE("vecs: truncation at every byte is a clear error, never a crash") {
  const auto fb = vecs_bytes(kFloatRows);  // 3 records of 20 bytes
  for (std::size_t len = 0; len < fb.size(); ++len) {
    INFO("length " << len);
    const std::span<const std::byte> cut(fb.data(), len);
    auto r = parse_fvecs(cut, "cut.fvecs");
    if (len % 20 == 0) {  // a shorter, valid file
      REQUIRE(r.ok());
      CHECK(r->dim(0) == static_cast<std::int64_t>(len / 20));
      continue;
    }
    REQUIRE(!r.ok());
    CHECK(r.status().code() == errc::corrupt_data);
    CHECK(contains(r.status(), "truncated"));
    if (len >= 4)
      CHECK(contains(r.status(), fmt::format("record {} at offset {} is truncated ({} of 20 bytes)", len / 20, len / 20 * 20, len % 20)));
    else
      CHECK(contains(r.status(), "the dimension field of record 0 needs 4 bytes"));
  }
  const auto ib = vecs_bytes<std::int32_t>({{1, 2}, {3, 4}});
  for (std::size_t len = 1; len < ib.size(); ++len)
    if (len % 12 != 0) CHECK(!parse_ivecs(std::span<const std::byte>(ib.data(), len), "cut.ivecs").ok());
}

TEST_CASE("vecs: bad dimension fields") {
  const auto fb = vecs_bytes(kFloatRows);
  auto with_dim = [&](std::size_t record, std::int32_t d) {
    auto b = fb;
    set_i32(b, record * 20, d);
    return error_of(parse_fvecs(b, "d.fvecs").status());
  };
  CHECK(contains(with_dim(0, 0), "d.fvecs: record 0 at offset 0: dimension field is 0; it must be in 1..1048576"));
  CHECK(contains(with_dim(0, -3), "dimension field is -3; it must be in 1..1048576"));
  CHECK(contains(with_dim(0, std::numeric_limits<std::int32_t>::min()), "it must be in 1..1048576"));
  CHECK(contains(with_dim(0, 1 << 21), "dimension field is 2097152"));
  CHECK(contains(with_dim(0, std::numeric_limits<std::int32_t>::max()), "it must be in 1..1048576"));
  // A dimension that fits the limit but not the file size.
  CHECK(contains(with_dim(0, 5), "file size 60 bytes is not a whole number of records of 24 bytes (dimension 5 float32 values"));
  // A later record that disagrees with the first.
  CHECK(contains(with_dim(1, 3), "record 1 at offset 20: dimension field is 3, but record 0's is 4"));
  CHECK(contains(with_dim(2, 0), "record 2 at offset 40: dimension field is 0, but record 0's is 4"));
  // A smaller limit.
  VecsLimits small;
  small.max_dim = 3;
  CHECK(contains(error_of(parse_fvecs(fb, "d.fvecs", kAllRows, small).status()), "dimension field is 4; it must be in 1..3"));
  // Dimension 1 is fine.
  auto one = parse_ivecs(vecs_bytes<std::int32_t>({{4}, {5}}), "one.ivecs");
  REQUIRE(one.ok());
  CHECK(one->shape() == Shape{2, 1});
}

TEST_CASE("vecs: every single-bit flip of a dimension field is caught") {
  for (int kind = 0; kind < 3; ++kind) {
    std::vector<std::byte> bytes;
    std::size_t record = 0;
    if (kind == 0) { bytes = vecs_bytes(kFloatRows); record = 20; }
    if (kind == 1) { bytes = vecs_bytes<std::uint8_t>({{1, 2, 3}, {5, 6, 7}, {9, 10, 11}}); record = 7; }
    if (kind == 2) { bytes = vecs_bytes<std::int32_t>({{1, 2, 3, 4}, {5, 6, 7, 8}, {9, 10, 11, 12}}); record = 20; }
    for (std::size_t r = 0; r < 3; ++r)
      for (int bit = 0; bit < 32; ++bit) {
        INFO("kind " << kind << " record " << r << " bit " << bit);
        auto b = bytes;
        b[r * record + bit / 8] ^= std::byte(1u << (bit % 8));
        status st = kind == 0 ? parse_fvecs(b, "x").status() : kind == 1 ? parse_bvecs(b, "x").status() : parse_ivecs(b, "x").status();
        REQUIRE(!st.ok());
        CHECK(st.code() == errc::corrupt_data);
        CHECK(contains(st, "dimension"));
      }
  }
}

TEST_CASE("vecs: a bit flip anywhere never crashes; a non-finite float is named") {
  const auto fb = vecs_bytes(kFloatRows);
  int errors = 0;
  for (std::size_t i = 0; i < fb.size() * 8; ++i) {
    auto b = fb;
    b[i / 8] ^= std::byte(1u << (i % 8));
    auto r = parse_fvecs(b, "x.fvecs");
    if (!r.ok()) {
      ++errors;
      CHECK(r.status().code() == errc::corrupt_data);
    } else {
      CHECK(r->shape() == Shape{3, 4});  // only a value changed
    }
  }
  CHECK(errors >= 3 * 32);  // at least every dimension-field flip

  auto nan_rows = kFloatRows;
  nan_rows[1][2] = std::numeric_limits<float>::quiet_NaN();
  CHECK(contains(error_of(parse_fvecs(vecs_bytes(nan_rows), "n.fvecs").status()), "n.fvecs: record 1 at offset 20: value 2 is NaN"));
  nan_rows[1][2] = -std::numeric_limits<float>::infinity();
  CHECK(contains(error_of(parse_fvecs(vecs_bytes(nan_rows), "n.fvecs").status()), "record 1 at offset 20: value 2 is infinite"));
}

TEST_CASE("vecs: the real bigann10k base, queries and ground truth") {
  QUARRY_REQUIRE_SHARED_DATA(base_path, "ann/bigann10k/base.bvecs");
  QUARRY_REQUIRE_SHARED_DATA(query_path, "ann/bigann10k/query.bvecs");
  QUARRY_REQUIRE_SHARED_DATA(gt_path, "ann/bigann10k/groundtruth.ivecs");
  auto base = read_bvecs(base_path);
  auto query = read_bvecs(query_path);
  auto gt = read_ivecs(gt_path);
  REQUIRE(base.ok());
  REQUIRE(query.ok());
  REQUIRE(gt.ok());
  CHECK(base->shape() == Shape{9900, 128});
  CHECK(query->shape() == Shape{100, 128});
  CHECK(gt->shape() == Shape{100, 100});
  for (std::int32_t id : gt->span()) REQUIRE((id >= 0 && id < 9900));

  // The ground truth is the exact L2 order (ties to the lower id): check the first queries' top 10.
  const Tensor<float> b = to_float(base->view());
  const Tensor<float> q = to_float(query->view());
  for (std::int64_t qi = 0; qi < 8; ++qi) {
    std::vector<std::pair<double, std::int32_t>> d(9900);
    for (std::int64_t i = 0; i < 9900; ++i) {
      double s = 0;
      for (std::int64_t j = 0; j < 128; ++j) {
        const double t = double(q(qi, j)) - double(b(i, j));
        s += t * t;
      }
      d[static_cast<std::size_t>(i)] = {s, static_cast<std::int32_t>(i)};
    }
    std::partial_sort(d.begin(), d.begin() + 10, d.end());
    for (std::int64_t k = 0; k < 10; ++k) {
      INFO("query " << qi << " rank " << k);
      CHECK(gt->at(qi, k) == d[static_cast<std::size_t>(k)].second);
    }
  }
  // A prefix of the base, converted to float.
  auto head = read_bvecs_as_float(base_path, 10);
  REQUIRE(head.ok());
  CHECK(head->shape() == Shape{10, 128});
  CHECK(head->at(3, 77) == static_cast<float>(base->at(3, 77)));
}
