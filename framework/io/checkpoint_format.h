// The checkpoint format (FORMATS.md "Checkpoint layout"): what a checkpoint directory holds, its
// verification and its loading. A checkpoint is a directory step-<8 digits>/ holding
//   model.safetensors      weights (FORMATS.md names)
//   optimizer.safetensors  optimizer state tensors (optional)
//   state.safetensors      other tensors of the trainer (e.g. the FAM state kept by Random State
//                          Passing), optional
//   trainer_state.json     step, data-loader position, RNG counters, schedule position, metrics ...
//   <plain files>          optional, e.g. config.yaml and the tokenizer (CheckpointData::files)
//   manifest.json          written LAST: step, world_size, config_hash, created time, and for every
//                          other file its size and sha256. A directory without a valid manifest is
//                          not a checkpoint.
// A sharded checkpoint (checkpoint_sharded.h) has model-rank-<r>-of-<N>.safetensors and
// optimizer-rank-<r>-of-<N>.safetensors files instead; loading reads every listed model*/optimizer*
// file into one map, so any world size (or an unsharded run) resumes from it. Writing checkpoints:
// CheckpointManager (checkpoint.h).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "framework/core/tensor.h"
#include "nlohmann/json.hpp"

namespace fam::io {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

struct LoadedCheckpoint {
  std::string path;  // the checkpoint directory
  int64_t step = 0;
  int world_size = 1;
  std::string config_hash;
  std::map<std::string, Tensor> model, optimizer, extra;
  nlohmann::json trainer_state;
  int shard_files = 0;      // model-rank-*/optimizer-rank-* files (0: an unsharded checkpoint)
  nlohmann::json manifest;  // the whole manifest.json
};

// "step-00001000"
std::string CheckpointDirName(int64_t step);

// The parsed manifest.json of a checkpoint directory after a size check of the files it lists
// (no hashing): for reading what a checkpoint carries without loading it.
absl::StatusOr<nlohmann::json> ReadCheckpointManifest(const std::string& path);

// Verifies a checkpoint directory: manifest present and parseable, every listed file present with
// the listed size and sha256. The error names the directory and the file at fault.
absl::Status VerifyCheckpoint(const std::string& path);

// Loads (after verifying, unless verify is false: the caller verified it) one checkpoint
// directory, unsharded or sharded: the tensors of every model*.safetensors file go to `model`, of
// every optimizer*.safetensors to `optimizer` (a name in two files is an error naming both).
// Tensors are zero-copy views of the mapped files: only what the caller touches is read.
absl::StatusOr<LoadedCheckpoint> LoadCheckpoint(const std::string& path, bool verify = true);

}  // namespace fam::io
