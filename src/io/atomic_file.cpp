#include "quarry/io/atomic_file.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <utility>

#include <fmt/format.h>

#if defined(__unix__) || defined(__APPLE__)
#define QUARRY_ATOMIC_FILE_POSIX 1
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace quarry {

#ifdef QUARRY_ATOMIC_FILE_POSIX

namespace {

// A suffix no other writer (in this process or another) is likely to pick; O_EXCL settles the
// rest.
std::string unique_suffix(int attempt) {
  static std::atomic<std::uint64_t> counter{0};
  const auto now = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  std::uint64_t x = now ^ (counter.fetch_add(1, std::memory_order_relaxed) * 0x9E3779B97F4A7C15ull) ^
                    (static_cast<std::uint64_t>(attempt) << 48);
  x ^= x >> 33;  // a splitmix-style finaliser, so consecutive names differ in every digit
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return fmt::format("{}.{:012x}", static_cast<long>(::getpid()), x & 0xffffffffffffull);
}

int fsync_fully(int fd) noexcept {
#if defined(__APPLE__) && defined(F_FULLFSYNC)
  if (::fcntl(fd, F_FULLFSYNC) == 0) return 0;  // fsync alone does not reach the disk on macOS
#endif
  int rc;
  do {
    rc = ::fsync(fd);
  } while (rc != 0 && errno == EINTR);
  return rc;
}

}  // namespace

result<AtomicFileWriter> AtomicFileWriter::create(const std::string& path) {
  const std::filesystem::path p(path);
  const std::string name = p.filename().string();
  if (path.empty() || name.empty() || name == "." || name == "..")
    return status(errc::invalid_argument, fmt::format("cannot write '{}': the path does not name a file", path));
  const std::string dir = p.has_parent_path() ? p.parent_path().string() : std::string(".");

  AtomicFileWriter w;
  w.path_ = path;
  w.dir_ = dir;
  for (int attempt = 0; attempt < 100; ++attempt) {
    std::string temp = (std::filesystem::path(dir) / fmt::format(".{}.tmp.{}", name, unique_suffix(attempt))).string();
    const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0) {
      w.fd_ = fd;
      w.temp_path_ = std::move(temp);
      return w;
    }
    const int err = errno;
    if (err == EEXIST || err == EINTR) continue;
    if (err == ENOENT || err == ENOTDIR)
      return status(errc::not_found, fmt::format("cannot write '{}': directory '{}' does not exist ({})", path, dir, std::strerror(err)));
    return status(errc::io_error, fmt::format("cannot write '{}': cannot create a temporary file in directory '{}': {}", path, dir, std::strerror(err)));
  }
  return status(errc::io_error, fmt::format("cannot write '{}': no unused temporary file name in directory '{}' after 100 attempts", path, dir));
}

AtomicFileWriter::AtomicFileWriter(AtomicFileWriter&& other) noexcept
    : path_(std::move(other.path_)),
      temp_path_(std::exchange(other.temp_path_, {})),
      dir_(std::move(other.dir_)),
      fd_(std::exchange(other.fd_, -1)),
      appended_(std::exchange(other.appended_, 0)),
      spoiled_(std::exchange(other.spoiled_, false)),
      committed_(std::exchange(other.committed_, false)) {}

AtomicFileWriter& AtomicFileWriter::operator=(AtomicFileWriter&& other) noexcept {
  if (this != &other) {
    discard();
    path_ = std::move(other.path_);
    temp_path_ = std::exchange(other.temp_path_, {});
    dir_ = std::move(other.dir_);
    fd_ = std::exchange(other.fd_, -1);
    appended_ = std::exchange(other.appended_, 0);
    spoiled_ = std::exchange(other.spoiled_, false);
    committed_ = std::exchange(other.committed_, false);
  }
  return *this;
}

AtomicFileWriter::~AtomicFileWriter() { discard(); }

void AtomicFileWriter::discard() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (!committed_ && !temp_path_.empty()) ::unlink(temp_path_.c_str());
  temp_path_.clear();
}

status AtomicFileWriter::fail(const std::string& message, int err) {
  spoiled_ = true;
  return status(errc::io_error, fmt::format("cannot write '{}' (temporary file '{}'): {}: {}", path_, temp_path_, message, std::strerror(err)));
}

status AtomicFileWriter::write(std::span<const std::byte> bytes) {
  if (fd_ < 0 || spoiled_)
    return status(errc::invalid_argument, fmt::format("cannot write '{}': the writer is {}", path_, committed_ ? "already committed" : spoiled_ ? "spoiled by an earlier error" : "closed"));
  const std::byte* p = bytes.data();
  std::size_t left = bytes.size();
  while (left > 0) {
    const ::ssize_t n = ::write(fd_, p, left);
    if (n < 0) {
      const int err = errno;
      if (err == EINTR) continue;
      return fail(fmt::format("write of {} bytes at offset {}", left, appended_), err);
    }
    if (n == 0) return fail(fmt::format("write of {} bytes at offset {} made no progress", left, appended_), EIO);
    p += n;
    left -= static_cast<std::size_t>(n);
    appended_ += static_cast<std::uint64_t>(n);
  }
  return {};
}

status AtomicFileWriter::write_at(std::uint64_t offset, std::span<const std::byte> bytes) {
  if (fd_ < 0 || spoiled_)
    return status(errc::invalid_argument, fmt::format("cannot write '{}': the writer is {}", path_, committed_ ? "already committed" : spoiled_ ? "spoiled by an earlier error" : "closed"));
  const std::byte* p = bytes.data();
  std::size_t left = bytes.size();
  std::uint64_t at = offset;
  while (left > 0) {
    const ::ssize_t n = ::pwrite(fd_, p, left, static_cast<::off_t>(at));
    if (n < 0) {
      const int err = errno;
      if (err == EINTR) continue;
      return fail(fmt::format("write of {} bytes at offset {}", left, at), err);
    }
    if (n == 0) return fail(fmt::format("write of {} bytes at offset {} made no progress", left, at), EIO);
    p += n;
    left -= static_cast<std::size_t>(n);
    at += static_cast<std::uint64_t>(n);
  }
  return {};
}

status AtomicFileWriter::commit() {
  if (committed_) return status(errc::invalid_argument, fmt::format("cannot commit '{}': already committed", path_));
  if (fd_ < 0) return status(errc::invalid_argument, fmt::format("cannot commit '{}': the writer is closed", path_));
  if (spoiled_) return status(errc::io_error, fmt::format("cannot commit '{}': an earlier write failed; the old file is kept", path_));
  if (fsync_fully(fd_) != 0) {
    const int err = errno;
    return fail("fsync", err);
  }
  const int fd = std::exchange(fd_, -1);
  if (::close(fd) != 0) {
    const int err = errno;
    return fail("close", err);
  }
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    const int err = errno;
    spoiled_ = true;
    return status(errc::io_error, fmt::format("cannot rename '{}' over '{}': {}; the old file is kept", temp_path_, path_, std::strerror(err)));
  }
  committed_ = true;
  temp_path_.clear();
  // The rename is durable only once the directory entry is: fsync the directory.
  const int dfd = ::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    const int err = errno;
    return status(errc::io_error, fmt::format("'{}' was replaced, but its directory '{}' could not be opened to fsync it: {}", path_, dir_, std::strerror(err)));
  }
  const int rc = fsync_fully(dfd);
  const int err = errno;
  ::close(dfd);
  // Some filesystems cannot fsync a directory (EINVAL): nothing more can be done there.
  if (rc != 0 && err != EINVAL && err != EROFS)
    return status(errc::io_error, fmt::format("'{}' was replaced, but fsync of its directory '{}' failed: {}", path_, dir_, std::strerror(err)));
  return {};
}

#else  // not POSIX

namespace {
status unsupported(const std::string& path) {
  return status(errc::unsupported, fmt::format("cannot write '{}': atomic file replacement is not supported on this platform (POSIX only)", path));
}
}  // namespace

result<AtomicFileWriter> AtomicFileWriter::create(const std::string& path) { return unsupported(path); }
AtomicFileWriter::AtomicFileWriter(AtomicFileWriter&& other) noexcept : path_(std::move(other.path_)) {}
AtomicFileWriter& AtomicFileWriter::operator=(AtomicFileWriter&& other) noexcept {
  path_ = std::move(other.path_);
  return *this;
}
AtomicFileWriter::~AtomicFileWriter() = default;
void AtomicFileWriter::discard() noexcept {}
status AtomicFileWriter::fail(const std::string&, int) { return unsupported(path_); }
status AtomicFileWriter::write(std::span<const std::byte>) { return unsupported(path_); }
status AtomicFileWriter::write_at(std::uint64_t, std::span<const std::byte>) { return unsupported(path_); }
status AtomicFileWriter::commit() { return unsupported(path_); }

#endif

status write_file_atomically(const std::string& path, std::span<const std::byte> bytes) {
  QUARRY_ASSIGN_OR_RETURN(AtomicFileWriter w, AtomicFileWriter::create(path));
  QUARRY_RETURN_IF_ERROR(w.write(bytes));
  return w.commit();
}

}  // namespace quarry
