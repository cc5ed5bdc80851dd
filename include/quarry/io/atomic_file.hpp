// AtomicFileWriter: replaces a file so that a reader (or a crash) sees the old content or the
// new, never a mixture.
//
// The bytes go to a temporary file in the target's directory (so the final rename stays on one
// filesystem); commit() fsyncs it, renames it over the target and fsyncs the directory, so the
// new name is durable too. Until commit() the target is untouched; a writer destroyed (or moved
// from) without a successful commit() removes its temporary file. POSIX (Linux, macOS) only:
// elsewhere create() returns errc::unsupported.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "quarry/core/status.hpp"

namespace quarry {

/// Writes a file atomically: temp file, write, fsync, rename over the target, fsync directory.
/// Move-only; not thread-safe (one writer per object).
class AtomicFileWriter {
 public:
  /// Opens a new temporary file beside `path` (".<name>.tmp.<pid>.<random>", created with
  /// O_EXCL, mode 0644 before the umask). Errors: not_found when the directory does not exist,
  /// io_error otherwise, each naming the directory or path and the OS's reason.
  static result<AtomicFileWriter> create(const std::string& path);

  /// Moves the open temp file; the source is left without one.
  ///@{
  AtomicFileWriter(AtomicFileWriter&& other) noexcept;
  AtomicFileWriter& operator=(AtomicFileWriter&& other) noexcept;
  ///@}
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  /// Without a successful commit(): closes and removes the temporary file; `path` is untouched.
  ~AtomicFileWriter();

  /// Appends `bytes` (retrying short writes and EINTR). After a failed write the writer is
  /// spoiled: commit() refuses, and the temporary file goes when the writer does.
  status write(std::span<const std::byte> bytes);
  /// Overwrites `bytes.size()` bytes at `offset` (which may extend the file), without moving
  /// the append position; for headers whose fields are known only at the end.
  status write_at(std::uint64_t offset, std::span<const std::byte> bytes);
  /// fsync, close, rename over path(), fsync the directory. Once it succeeds the writer is done;
  /// on failure the target keeps its old content (unless the rename itself succeeded and only
  /// the directory fsync failed, which the message says).
  status commit();

  /// The file this writer replaces.
  const std::string& path() const noexcept { return path_; }
  /// The temporary file being written (empty after commit or when moved from).
  const std::string& temp_path() const noexcept { return temp_path_; }
  /// Bytes appended by write() so far.
  std::uint64_t bytes_written() const noexcept { return appended_; }
  /// Whether commit() has succeeded.
  bool committed() const noexcept { return committed_; }

 private:
  AtomicFileWriter() = default;
  status fail(const std::string& message, int err);
  void discard() noexcept;

  std::string path_;
  std::string temp_path_;
  std::string dir_;
  int fd_ = -1;
  std::uint64_t appended_ = 0;
  bool spoiled_ = false;
  bool committed_ = false;
};

/// Replaces the file at `path` with `bytes`, atomically (AtomicFileWriter).
status write_file_atomically(const std::string& path, std::span<const std::byte> bytes);

}  // namespace quarry
