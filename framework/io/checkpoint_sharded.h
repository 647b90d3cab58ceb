// Sharded checkpoints (ZeRO runs with several ranks): the ranks that save or verify one checkpoint
// together. Saving (CheckpointManager::SaveSharded, checkpoint.h): every rank writes the tensors it
// owns, in parallel, into the same temporary directory (a file system shared by all ranks):
//   model-rank-<r>-of-<N>.safetensors      the weights (or LoRA adapters) rank r owns
//   optimizer-rank-<r>-of-<N>.safetensors  the optimizer state of those parameters (the step
//                                          counter only in rank 0's)
// and hashes its own files; rank 0 writes state.safetensors, trainer_state.json and, once every
// rank has reported, the manifest (which records "shards": world size and ZeRO stage). Verifying
// over a group splits the sha256 hashing between the ranks. Loading is the same as for any
// checkpoint (checkpoint_format.h).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace fam::io {

// The ranks saving one sharded checkpoint together. all_gather is a collective (every member calls
// it, in the same order): each member's string, in rank order, on every member.
struct ShardGroup {
  int rank = 0;
  int size = 1;
  std::function<std::vector<std::string>(const std::string&)> all_gather;
};

// Collective over `group` (a sharded job resuming): VerifyCheckpoint (checkpoint_format.h) with
// the files' sha256 split between the ranks (rank r hashes every size-th file); every rank gets the
// same status.
absl::Status VerifyCheckpoint(const std::string& path, const ShardGroup& group);

}  // namespace fam::io
