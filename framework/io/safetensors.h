// Safetensors files, read and written by our own code. Format: 8-byte little-endian header length
// N, N bytes of JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
// "__metadata__": {str: str}}, then the data buffer (offsets are relative to its start).
// Reading maps the file and validates the whole header up front; Load() returns zero-copy views
// into the mapping (the view keeps the mapping alive). Writing is atomic (temp file + rename).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "framework/core/tensor.h"
#include "framework/io/mmap_file.h"

namespace fam::io {

// "F32", "F64", "BF16", "F16", "I32", "I64".
const char* SafetensorsDTypeName(DType dtype);
std::optional<DType> ParseSafetensorsDType(std::string_view name);

struct SafetensorsTensorInfo {
  DType dtype = DType::kF32;
  Shape shape;
  uint64_t begin = 0;  // byte offsets relative to the data buffer
  uint64_t end = 0;
};

class SafetensorsFile {
 public:
  // Maps and validates the file. Every error is InvalidArgument (or the open error) and names the
  // file and, where one is at fault, the tensor.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  const std::string& path() const { return file_->path(); }
  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const { return tensors_.count(name) > 0; }
  absl::StatusOr<SafetensorsTensorInfo> Info(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // The mapped file (zero-copy tensors point into it and hold a reference to it).
  const std::shared_ptr<MmapFile>& mapping() const { return file_; }

  // A CPU tensor. Without `as` (or with `as` equal to the stored dtype) it is a zero-copy view into
  // the mapping that stays valid after this object is destroyed; it is copy-on-write, so writing
  // into it never changes the file. With `as`, floating tensors convert to any floating dtype (e.g.
  // F16/BF16 → F32) and integer tensors to the other integer dtype, into new memory.
  absl::StatusOr<Tensor> Load(const std::string& name,
                              std::optional<DType> as = std::nullopt) const;

 private:
  SafetensorsFile(std::shared_ptr<MmapFile> file, size_t data_start)
      : file_(std::move(file)), data_start_(data_start) {}

  std::shared_ptr<MmapFile> file_;
  size_t data_start_;  // file offset of the data buffer (8 + header length)
  std::map<std::string, SafetensorsTensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` (any dtype, any strides, any device) to `path` atomically. Data is laid out by
// decreasing element size, then name, so every tensor is aligned to its element size in the file;
// the header is padded with spaces to a multiple of 8. `store_as` converts floating tensors (e.g.
// to BF16 or F32); integer tensors are stored as they are. Duplicate or empty names, the name
// "__metadata__" and undefined tensors are InvalidArgument errors naming the file and the tensor.
absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata = {},
                              std::optional<DType> store_as = std::nullopt);

}  // namespace fam::io
