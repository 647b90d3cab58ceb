// Token shard files: a flat array of token ids with a small header, memory-mapped for reading.
//
// Format (all integers little-endian), version 1:
//   offset  size  field
//        0     8  magic "FAMTOK01"
//        8     4  u32 format version (1)
//       12     4  u32 dtype = bytes per token: 2 (uint16) or 4 (uint32)
//       16     8  u64 vocab_size (every token id is < vocab_size)
//       24     8  u64 token count n
//       32     8  u64 checksum: 64-bit FNV-1a over the n·dtype token bytes (offset basis
//                 0xcbf29ce484222325, prime 0x100000001b3, one byte at a time)
//       40    24  reserved, zero
//       64  n·dtype  the tokens
// The file size is exactly 64 + n·dtype. Writers use uint16 when vocab_size <= 65536.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "framework/core/hash.h"  // Fnv1a64: the shard checksum

namespace fam::data {

inline constexpr char kTokenShardMagic[8] = {'F', 'A', 'M', 'T', 'O', 'K', '0', '1'};
inline constexpr uint32_t kTokenShardVersion = 1;
inline constexpr int64_t kTokenShardHeaderBytes = 64;

// Writes a shard atomically (temporary file in the same directory, fsync, rename). Every token
// must be in [0, vocab_size); InvalidArgument names the first bad one. IO errors name the path.
absl::Status WriteTokenShard(const std::string& path, const std::vector<int32_t>& tokens,
                             int64_t vocab_size);

// A read-only memory-mapped shard. Copies share the mapping.
class TokenShard {
 public:
  TokenShard() = default;

  // Maps the file and validates magic, version, dtype and size; by default also the checksum
  // (verify_checksum = false skips the pass over the data for huge files; call Verify later).
  // NotFound / InvalidArgument (bad header) / DataLoss (truncated, checksum) name the file.
  static absl::StatusOr<TokenShard> Open(const std::string& path, bool verify_checksum = true);

  // Recomputes the checksum over the token bytes.
  absl::Status Verify() const;
  // Checks that every token in [begin, end) is < vocab_size (end = -1: to the end).
  absl::Status CheckIds(int64_t begin = 0, int64_t end = -1) const;

  const std::string& path() const { return path_; }
  int64_t size() const { return num_tokens_; }
  int64_t vocab_size() const { return vocab_size_; }
  int bytes_per_token() const { return bytes_per_token_; }
  uint64_t checksum() const { return checksum_; }

  // Token i (no range check on the id; 0 <= i < size() is checked).
  int64_t at(int64_t i) const;
  // Copies tokens [begin, begin + count) into out, checking each id < vocab_size; a bad id throws
  // fam::Error naming the file and the token offset.
  void Read(int64_t begin, int64_t count, int64_t* out) const;

 private:
  struct Mapping;
  std::shared_ptr<const Mapping> mapping_;
  const unsigned char* tokens_ = nullptr;  // into the mapping, after the header
  std::string path_;
  int64_t num_tokens_ = 0;
  int64_t vocab_size_ = 0;
  int bytes_per_token_ = 0;
  uint64_t checksum_ = 0;
};

}  // namespace fam::data
