#include "framework/data/weight_shard.h"

#include <bit>
#include <cmath>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "framework/core/error.h"
#include "framework/data/token_shard.h"
#include "framework/io/atomic_file.h"
#include "framework/io/mmap_file.h"

namespace fam::data {

static_assert(std::endian::native == std::endian::little,
              "weight shards are little-endian; big-endian hosts are not supported");

namespace {

// Header layout (see weight_shard.h).
struct WeightHeader {
  char magic[8];
  uint32_t version;
  uint32_t bytes_per_token;
  uint64_t num_tokens;
  uint64_t token_checksum;
  uint64_t checksum;
  uint32_t num_classes;
  uint8_t reserved[20];
  float class_weights[256];
};
static_assert(sizeof(WeightHeader) == kWeightShardHeaderBytes);

bool ValidWeight(float w) { return std::isfinite(w) && w >= 0.0f; }

}  // namespace

std::string WeightShardPath(const std::string& token_shard_path) {
  if (absl::EndsWith(token_shard_path, ".bin")) {
    return absl::StrCat(token_shard_path.substr(0, token_shard_path.size() - 4), ".weights");
  }
  return absl::StrCat(token_shard_path, ".weights");
}

absl::Status WriteWeightShard(const std::string& path, const std::vector<uint8_t>& codes,
                              const std::vector<float>& class_weights, uint64_t token_checksum) {
  if (class_weights.empty() || class_weights.size() > 256) {
    return absl::InvalidArgumentError(absl::StrCat(
        "weight shard ", path, ": ", class_weights.size(), " loss classes (expected 1 to 256)"));
  }
  WeightHeader header;
  std::memset(&header, 0, sizeof(header));
  for (size_t c = 0; c < class_weights.size(); ++c) {
    if (!ValidWeight(class_weights[c])) {
      return absl::InvalidArgumentError(absl::StrCat("weight shard ", path, ": class ", c,
                                                     " has weight ", class_weights[c],
                                                     " (expected a finite value >= 0)"));
    }
    header.class_weights[c] = class_weights[c];
  }
  for (size_t i = 0; i < codes.size(); ++i) {
    if (codes[i] >= class_weights.size()) {
      return absl::InvalidArgumentError(absl::StrCat("weight shard ", path, ": token ", i,
                                                     " has class ", codes[i],
                                                     " >= ", class_weights.size(), " classes"));
    }
  }
  std::memcpy(header.magic, kWeightShardMagic, 8);
  header.version = kWeightShardVersion;
  header.bytes_per_token = 1;
  header.num_tokens = codes.size();
  header.token_checksum = token_checksum;
  header.checksum = Fnv1a64(codes.data(), codes.size());
  header.num_classes = static_cast<uint32_t>(class_weights.size());
  absl::StatusOr<std::unique_ptr<io::AtomicFileWriter>> writer = io::AtomicFileWriter::Create(path);
  if (!writer.ok()) return writer.status();
  absl::Status status = (*writer)->Write(&header, sizeof(header));
  if (status.ok() && !codes.empty()) status = (*writer)->Write(codes.data(), codes.size());
  if (status.ok()) status = (*writer)->Commit();
  return status;
}

absl::StatusOr<WeightShard> WeightShard::Open(const std::string& path, bool verify_checksum) {
  absl::StatusOr<std::shared_ptr<io::MmapFile>> file = io::MmapFile::Open(path);
  if (!file.ok()) {
    if (absl::IsNotFound(file.status())) {
      return absl::NotFoundError(absl::StrCat("weight shard not found: ", path));
    }
    return file.status();
  }
  const size_t file_size = (*file)->size();
  if (file_size < sizeof(WeightHeader)) {
    return absl::DataLossError(absl::StrCat("weight shard ", path, " truncated: ", file_size,
                                            " bytes, smaller than the ", sizeof(WeightHeader),
                                            "-byte header"));
  }
  WeightHeader header;
  std::memcpy(&header, (*file)->data(), sizeof(header));
  if (std::memcmp(header.magic, kWeightShardMagic, 8) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("weight shard ", path, ": bad magic (not a FAMLWT01 weight shard)"));
  }
  if (header.version != kWeightShardVersion || header.bytes_per_token != 1) {
    return absl::InvalidArgumentError(absl::StrCat("weight shard ", path, ": format version ",
                                                   header.version, ", ", header.bytes_per_token,
                                                   " bytes per token (supported: version 1, 1)"));
  }
  if (header.num_classes < 1 || header.num_classes > 256) {
    return absl::InvalidArgumentError(absl::StrCat("weight shard ", path, ": ", header.num_classes,
                                                   " classes (expected 1..256)"));
  }
  for (uint32_t c = 0; c < 256; ++c) {
    const float w = header.class_weights[c];
    if (c < header.num_classes ? !ValidWeight(w) : w != 0.0f) {
      return absl::InvalidArgumentError(
          absl::StrCat("weight shard ", path, ": class ", c, " has a bad weight ", w));
    }
  }
  const uint64_t data_bytes = file_size - sizeof(WeightHeader);
  if (header.num_tokens != data_bytes) {
    return absl::DataLossError(absl::StrCat(
        "weight shard ", path,
        header.num_tokens > data_bytes ? " truncated" : " has trailing bytes", ": header says ",
        header.num_tokens, " tokens, file has ", data_bytes, " data bytes"));
  }
  WeightShard shard;
  shard.codes_ = (*file)->data() + sizeof(WeightHeader);
  shard.mapping_ = *std::move(file);
  shard.path_ = path;
  shard.num_tokens_ = static_cast<int64_t>(header.num_tokens);
  shard.token_checksum_ = header.token_checksum;
  shard.num_classes_ = static_cast<int>(header.num_classes);
  std::memcpy(shard.class_weights_.data(), header.class_weights, sizeof(header.class_weights));
  if (verify_checksum) {
    const uint64_t actual = Fnv1a64(shard.codes_, static_cast<size_t>(shard.num_tokens_));
    if (actual != header.checksum) {
      return absl::DataLossError(
          absl::StrCat("weight shard ", path, ": checksum mismatch (corrupted data): header ",
                       absl::Hex(header.checksum), ", data ", absl::Hex(actual)));
    }
    for (int64_t i = 0; i < shard.num_tokens_; ++i) {
      if (shard.codes_[i] >= shard.num_classes_) {
        return absl::DataLossError(absl::StrCat("weight shard ", path, ": token ", i, " has class ",
                                                shard.codes_[i], " >= ", shard.num_classes_,
                                                " classes"));
      }
    }
  }
  return shard;
}

ClassWeights WeightShard::Weights(const std::optional<RoleWeights>& roles) const {
  ClassWeights table = class_weights_;
  if (roles.has_value()) {
    table[kLossClassInstruction] = static_cast<float>(roles->instruction);
    table[kLossClassAnswer] = static_cast<float>(roles->answer);
    table[kLossClassRepeat] = static_cast<float>(roles->repeat);
  }
  table[kLossClassPad] = 0.0f;
  return table;
}

uint8_t WeightShard::code(int64_t i) const {
  FAM_CHECK(i >= 0 && i < num_tokens_, "weight shard ", path_, ": index ", i, " outside [0, ",
            num_tokens_, ")");
  return codes_[i];
}

void WeightShard::Read(int64_t begin, int64_t count, const ClassWeights& table, float* out) const {
  FAM_CHECK(begin >= 0 && count >= 0 && begin + count <= num_tokens_, "weight shard ", path_,
            ": read [", begin, ", ", begin + count, ") outside [0, ", num_tokens_, ")");
  for (int64_t i = 0; i < count; ++i) out[i] = table[codes_[begin + i]];
}

}  // namespace fam::data
