// MappedFile: a read-only memory map of a whole file, so readers can hand out zero-copy views.
#pragma once

#include <cstddef>
#include <span>
#include <string>

#include "quarry/core/status.hpp"

namespace quarry {

/// A file mapped read-only into memory; unmapped on destruction. Move-only.
class MappedFile {
 public:
  MappedFile() noexcept = default;
  /// Maps `path`. Errors: not_found, io_error (naming the path and the OS's reason).
  /// An empty file maps to an empty span.
  static result<MappedFile> open(const std::string& path);

  /// Moves the mapping; the source is left empty.
  ///@{
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  ///@}
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  /// The file's bytes; valid while this object lives.
  std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }
  std::size_t size() const noexcept { return size_; }             ///< bytes mapped
  const std::string& path() const noexcept { return path_; }      ///< the path given to open()

 private:
  void unmap() noexcept;

  const std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  std::string path_;
};

}  // namespace quarry
