// AtomicFileWriter: commit replaces the content; an uncommitted writer leaves the old file and no
// temporary file behind; errors name the directory or the path.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include <quarry/io/atomic_file.hpp>

#include "temp_dir.hpp"
#include "test_util.hpp"

using namespace quarry;
using namespace quarry::testing;
namespace fs = std::filesystem;

namespace {

std::vector<std::byte> bytes_of(const std::string& s) {
  std::vector<std::byte> out(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) out[i] = static_cast<std::byte>(s[i]);
  return out;
}

std::string read_all(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

void write_plain(const std::string& path, const std::string& content) {
  std::ofstream f(path, std::ios::binary);
  f << content;
}

}  // namespace

TEST_CASE("atomic_file: commit creates the file; nothing else is left in the folder") {
  TempDir dir;
  const std::string path = dir.file("index.qry");
  auto w = AtomicFileWriter::create(path);
  REQUIRE(w.ok());
  CHECK(w->path() == path);
  CHECK(fs::path(w->temp_path()).parent_path() == dir.path);
  CHECK(fs::exists(w->temp_path()));
  CHECK(!fs::exists(path));  // nothing appears at the path before commit
  REQUIRE(w->write(bytes_of("hello, ")).ok());
  REQUIRE(w->write(bytes_of("world")).ok());
  REQUIRE(w->write({}).ok());
  CHECK(w->bytes_written() == 12);
  CHECK(!fs::exists(path));
  REQUIRE(w->commit().ok());
  CHECK(w->committed());
  CHECK(w->temp_path().empty());
  CHECK(read_all(path) == "hello, world");
  CHECK(dir.names() == std::set<std::string>{"index.qry"});

  // The mode is 0644 less the umask.
  const ::mode_t mask = ::umask(0);
  ::umask(mask);
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == (0644 & ~mask));

  // A committed writer takes no more bytes and no second commit.
  CHECK(w->write(bytes_of("x")).code() == errc::invalid_argument);
  CHECK(contains(w->commit(), "already committed"));
  CHECK(read_all(path) == "hello, world");
}

TEST_CASE("atomic_file: an uncommitted writer keeps the old content and removes its temporary file") {
  TempDir dir;
  const std::string path = dir.file("data.bin");
  write_plain(path, "old content");
  std::string temp;
  {
    auto w = AtomicFileWriter::create(path);
    REQUIRE(w.ok());
    temp = w->temp_path();
    REQUIRE(w->write(bytes_of("new content that is never committed")).ok());
    CHECK(read_all(path) == "old content");
    CHECK(dir.names().size() == 2);
  }
  CHECK(!fs::exists(temp));
  CHECK(read_all(path) == "old content");
  CHECK(dir.names() == std::set<std::string>{"data.bin"});
}

TEST_CASE("atomic_file: commit replaces an existing file; the old one stays until then") {
  TempDir dir;
  const std::string path = dir.file("data.bin");
  write_plain(path, "version 1");
  auto w = AtomicFileWriter::create(path);
  REQUIRE(w.ok());
  REQUIRE(w->write(bytes_of("version 2, longer")).ok());
  CHECK(read_all(path) == "version 1");
  REQUIRE(w->commit().ok());
  CHECK(read_all(path) == "version 2, longer");
  // Shorter new content: nothing of the old survives.
  REQUIRE(write_file_atomically(path, bytes_of("v3")).ok());
  CHECK(read_all(path) == "v3");
  // Empty content.
  REQUIRE(write_file_atomically(path, {}).ok());
  CHECK(fs::file_size(path) == 0);
  CHECK(dir.names() == std::set<std::string>{"data.bin"});
}

TEST_CASE("atomic_file: write_at patches bytes without moving the append position") {
  TempDir dir;
  const std::string path = dir.file("patched.bin");
  auto w = AtomicFileWriter::create(path);
  REQUIRE(w.ok());
  REQUIRE(w->write(bytes_of("....BODY")).ok());
  REQUIRE(w->write_at(0, bytes_of("HEAD")).ok());
  REQUIRE(w->write(bytes_of("+TAIL")).ok());
  REQUIRE(w->commit().ok());
  CHECK(read_all(path) == "HEADBODY+TAIL");
}

TEST_CASE("atomic_file: a large file round-trips") {
  TempDir dir;
  const std::string path = dir.file("large.bin");
  std::string content(3 << 20, '\0');
  for (std::size_t i = 0; i < content.size(); ++i) content[i] = static_cast<char>((i * 2654435761u) >> 13);
  REQUIRE(write_file_atomically(path, bytes_of(content)).ok());
  CHECK(read_all(path) == content);
}

TEST_CASE("atomic_file: a missing directory is not_found, naming it") {
  TempDir dir;
  const std::string missing = dir.file("no_such_dir");
  const std::string path = missing + "/index.qry";
  auto w = AtomicFileWriter::create(path);
  REQUIRE(!w.ok());
  CHECK(w.status().code() == errc::not_found);
  CHECK(contains(w.status(), "'" + missing + "'"));
  CHECK(contains(w.status(), "does not exist"));
  CHECK(contains(w.status(), "No such file or directory"));
  CHECK(!fs::exists(missing));
  const status s = write_file_atomically(path, bytes_of("x"));
  CHECK(s.code() == errc::not_found);
}

TEST_CASE("atomic_file: bad paths and failures name the path; the temporary file is removed") {
  TempDir dir;
  // A path naming no file.
  CHECK(AtomicFileWriter::create("").status().code() == errc::invalid_argument);
  CHECK(contains(AtomicFileWriter::create(dir.path.string() + "/").status(), "does not name a file"));

  // A target that is a directory: the rename fails and says why; nothing is left behind.
  fs::create_directory(dir.path / "sub");
  fs::create_directory(dir.path / "sub" / "taken");
  const std::string taken = (dir.path / "sub" / "taken").string();
  {
    auto w = AtomicFileWriter::create(taken);
    REQUIRE(w.ok());
    REQUIRE(w->write(bytes_of("abc")).ok());
    const status s = w->commit();
    CHECK(s.code() == errc::io_error);
    CHECK(contains(s, "'" + taken + "'"));
    CHECK(contains(s, "the old file is kept"));
    CHECK(!w->committed());
  }
  CHECK(fs::is_directory(taken));
  CHECK(std::distance(fs::directory_iterator(dir.path / "sub"), fs::directory_iterator()) == 1);

  // A directory we may not write into (root may write anywhere: skip then).
  if (::geteuid() != 0) {
    const fs::path ro = dir.path / "read_only";
    fs::create_directory(ro);
    fs::permissions(ro, fs::perms::owner_read | fs::perms::owner_exec);
    auto w = AtomicFileWriter::create((ro / "f.bin").string());
    REQUIRE(!w.ok());
    CHECK(w.status().code() == errc::io_error);
    CHECK(contains(w.status(), "'" + ro.string() + "'"));
    CHECK(contains(w.status(), "Permission denied"));
    fs::permissions(ro, fs::perms::owner_all);
  }
}

TEST_CASE("atomic_file: moves hand over the temporary file; writers to one path never collide") {
  TempDir dir;
  const std::string path = dir.file("moved.bin");
  auto created = AtomicFileWriter::create(path);
  REQUIRE(created.ok());
  AtomicFileWriter a = std::move(*created);
  REQUIRE(a.write(bytes_of("abc")).ok());
  const std::string temp = a.temp_path();
  AtomicFileWriter b = std::move(a);
  CHECK(a.temp_path().empty());  // NOLINT(bugprone-use-after-move): checking the moved-from state
  CHECK(b.temp_path() == temp);
  CHECK(a.write(bytes_of("x")).code() == errc::invalid_argument);  // NOLINT(bugprone-use-after-move)
  REQUIRE(b.write(bytes_of("def")).ok());
  REQUIRE(b.commit().ok());
  CHECK(read_all(path) == "abcdef");

  // Move assignment over a live writer discards that writer's temporary file.
  {
    auto c = AtomicFileWriter::create(path);
    auto d = AtomicFileWriter::create(path);
    REQUIRE(c.ok());
    REQUIRE(d.ok());
    const std::string c_temp = c->temp_path();
    *c = std::move(*d);
    CHECK(!fs::exists(c_temp));
    CHECK(fs::exists(c->temp_path()));
  }

  std::vector<AtomicFileWriter> many;
  std::set<std::string> temps;
  for (int i = 0; i < 50; ++i) {
    auto w = AtomicFileWriter::create(path);
    REQUIRE(w.ok());
    temps.insert(w->temp_path());
    many.push_back(std::move(*w));
  }
  CHECK(temps.size() == 50);
  CHECK(dir.names().size() == 51);
  many.clear();
  CHECK(dir.names() == std::set<std::string>{"moved.bin"});
  CHECK(read_all(path) == "abcdef");
}
