// Read-only view of a whole file mapped into memory (mmap), shared by the readers that hand out
// zero-copy tensors: a tensor view keeps the mapping alive through a shared_ptr to the MmapFile.
// Pages are mapped private and writable (copy-on-write), so writing into a view never reaches the
// file and never faults.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace fam::io {

class MmapFile {
 public:
  // Maps the whole file. NotFound / PermissionDenied / Internal errors name the path.
  static absl::StatusOr<std::shared_ptr<MmapFile>> Open(const std::string& path);

  ~MmapFile();
  MmapFile(const MmapFile&) = delete;
  MmapFile& operator=(const MmapFile&) = delete;

  // Start of the mapping (nullptr for an empty file) and its length in bytes.
  uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  MmapFile(std::string path, uint8_t* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}

  std::string path_;
  uint8_t* data_;
  size_t size_;
};

// An absl::Status for a failed system call on `path`: the code follows errno (ENOENT → NotFound,
// EACCES → PermissionDenied, ...), the message is "<what> <path>: <strerror>".
absl::Status ErrnoStatus(int error_number, const std::string& what, const std::string& path);

}  // namespace fam::io
