// Loss-weight shards: the per-token loss weights of a token shard (instruction data from
// `fam prepare-instructions`), stored next to it. Each token carries a one-byte loss class; the
// file's class table gives each class its weight, and the role classes (instruction, answer,
// repeat) can be re-weighted when loading (finetune.loss_weights), so the weights of the data can
// change without preparing it again.
//
// Path: the token shard's path with ".bin" replaced by ".weights" (train-00000.bin →
// train-00000.weights; ".weights" is appended when the path does not end in ".bin").
//
// Format (all integers little-endian), version 1:
//   offset  size  field
//        0     8  magic "FAMLWT01"
//        8     4  u32 format version (1)
//       12     4  u32 bytes per token: 1 (uint8 class code)
//       16     8  u64 token count n (equals the token shard's)
//       24     8  u64 the token shard's checksum (header field at offset 32): pairs the two files
//       32     8  u64 checksum: 64-bit FNV-1a over the n class bytes (as in token_shard.h)
//       40     4  u32 number of classes k, 1..256 (every class code is < k)
//       44    20  reserved, zero
//       64  1024  f32[256] weight of each class code (entries >= k are 0)
//     1088     n  the class codes, one byte per token
// Class codes: 0 padding (weight 0), 1 instruction, 2 answer, 3 repeat (the "[repeat random
// segment]:" copy), 4.. segments with an explicit weight (the table holds it).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace fam::io {
class MmapFile;
}

namespace fam::data {

inline constexpr char kWeightShardMagic[8] = {'F', 'A', 'M', 'L', 'W', 'T', '0', '1'};
inline constexpr uint32_t kWeightShardVersion = 1;
inline constexpr int64_t kWeightShardHeaderBytes = 64 + 256 * 4;

inline constexpr uint8_t kLossClassPad = 0;
inline constexpr uint8_t kLossClassInstruction = 1;
inline constexpr uint8_t kLossClassAnswer = 2;
inline constexpr uint8_t kLossClassRepeat = 3;
inline constexpr uint8_t kLossClassFirstExplicit = 4;

// Loss weights of the role classes (FAM_SPEC.md §7: instructions 0, answers 1, repeat copy 0.1).
struct RoleWeights {
  double instruction = 0.0;
  double answer = 1.0;
  double repeat = 0.1;
};

using ClassWeights = std::array<float, 256>;

// The weight shard path that belongs to a token shard path.
std::string WeightShardPath(const std::string& token_shard_path);

// Writes a weight shard atomically. `class_weights` has 1..256 finite weights >= 0 (k = its
// size); every code must be < k. InvalidArgument names the path and the first bad value.
absl::Status WriteWeightShard(const std::string& path, const std::vector<uint8_t>& codes,
                              const std::vector<float>& class_weights, uint64_t token_checksum);

// A read-only memory-mapped weight shard. Copies share the mapping.
class WeightShard {
 public:
  WeightShard() = default;

  // Maps and validates the file (magic, version, sizes, class table, by default the checksum and
  // that every code is < k). NotFound / InvalidArgument / DataLoss name the file.
  static absl::StatusOr<WeightShard> Open(const std::string& path, bool verify_checksum = true);

  const std::string& path() const { return path_; }
  int64_t size() const { return num_tokens_; }
  uint64_t token_checksum() const { return token_checksum_; }
  int num_classes() const { return num_classes_; }
  const ClassWeights& class_weights() const { return class_weights_; }
  // The class table with the role classes replaced by `roles` (when given).
  ClassWeights Weights(const std::optional<RoleWeights>& roles) const;

  uint8_t code(int64_t i) const;
  // Writes the weights of tokens [begin, begin + count) (looked up in `table`) into out.
  void Read(int64_t begin, int64_t count, const ClassWeights& table, float* out) const;

 private:
  std::shared_ptr<io::MmapFile> mapping_;
  const uint8_t* codes_ = nullptr;
  std::string path_;
  int64_t num_tokens_ = 0;
  uint64_t token_checksum_ = 0;
  int num_classes_ = 0;
  ClassWeights class_weights_{};
};

}  // namespace fam::data
