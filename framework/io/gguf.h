// GGUF, llama.cpp's single-file checkpoint (versions 2 and 3): the metadata key/values, the tensor
// table, and tensors dequantized to f32 from F32, F16, BF16, Q8_0, Q4_0 and Q4_1. Every count,
// size and offset is checked against the file before it is used (a header cannot make the reader
// read outside the file or allocate more than the file could hold); errors name the file and the
// key or tensor. Shapes are given in PyTorch order (GGUF lists dimensions innermost first).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "framework/core/tensor.h"
#include "framework/io/mmap_file.h"

namespace fam::io {

// One metadata value; arrays keep their element count and type only (token tables are not read).
struct GgufValue {
  enum class Kind { kInt, kFloat, kBool, kString, kArray };
  Kind kind = Kind::kInt;
  int64_t integer = 0;
  double number = 0;
  bool flag = false;
  std::string text;
  uint32_t array_type = 0;
  uint64_t array_size = 0;
};

struct GgufTensorInfo {
  std::string name;
  Shape shape;          // PyTorch order (outermost first)
  uint32_t type = 0;    // ggml type: 0 F32, 1 F16, 2 Q4_0, 3 Q4_1, 8 Q8_0, 30 BF16, ...
  uint64_t offset = 0;  // from the start of the file
  uint64_t nbytes = 0;
};

class GgufFile {
 public:
  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(const std::string& path);

  const std::string& path() const { return file_->path(); }
  uint32_t version() const { return version_; }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* Find(const std::string& name) const;

  // Typed metadata; InvalidArgument names the key when it is missing (no fallback) or mistyped.
  absl::StatusOr<int64_t> Int(const std::string& key, std::optional<int64_t> fallback) const;
  absl::StatusOr<double> Number(const std::string& key, std::optional<double> fallback) const;
  absl::StatusOr<std::string> String(const std::string& key) const;

  // The tensor as a new f32 tensor of its shape; unsupported types are named.
  absl::StatusOr<Tensor> Dequantize(const std::string& name) const;

  static const char* TypeName(uint32_t type);

 private:
  explicit GgufFile(std::shared_ptr<MmapFile> file) : file_(std::move(file)) {}
  absl::Status Parse();

  std::shared_ptr<MmapFile> file_;
  uint32_t version_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
};

}  // namespace fam::io
