// Checkpoints that are never half-written, silently corrupt, or resumed "almost" right
// (FORMATS.md "Checkpoint layout"). A checkpoint is a directory step-<8 digits>/ holding
//   model.safetensors      weights (FORMATS.md names)
//   optimizer.safetensors  optimizer state tensors (optional)
//   state.safetensors      other tensors of the trainer (e.g. the FAM state kept by Random State
//                          Passing), optional
//   trainer_state.json     step, data-loader position, RNG counters, schedule position, metrics ...
//   <plain files>          optional, e.g. config.yaml and the tokenizer (CheckpointData::files)
//   manifest.json          written LAST: step, world_size, config_hash, created time, and for every
//                          other file its size and sha256. A directory without a valid manifest is
//                          not a checkpoint.
// Sharded checkpoints (ZeRO runs with several ranks, SaveSharded): every rank writes the tensors it
// owns, in parallel, into the same temporary directory (a file system shared by all ranks):
//   model-rank-<r>-of-<N>.safetensors      the weights (or LoRA adapters) rank r owns
//   optimizer-rank-<r>-of-<N>.safetensors  the optimizer state of those parameters (the step
//                                          counter only in rank 0's)
// and hashes its own files; rank 0 writes state.safetensors, trainer_state.json and, once every
// rank has reported, the manifest (which records "shards": world size and ZeRO stage). Loading
// reads every listed model*/optimizer* file into one map, so any world size (or an unsharded run)
// resumes from it.
// Saving writes into a temporary directory (.tmp-step-…), fsyncs every file and the directory,
// writes the manifest, renames the directory into place, then replaces the `latest` text file
// atomically. Retention keeps the newest `keep_last` checkpoints plus every step divisible by
// `keep_every`, and never deletes the newest valid one.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "framework/core/tensor.h"
#include "nlohmann/json.hpp"

namespace fam::io {

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

struct CheckpointData {
  int64_t step = 0;
  int world_size = 1;
  std::string config_hash;  // hash of the model config: a changed model shape is an error
  NamedTensors model;       // → model.safetensors
  NamedTensors optimizer;   // → optimizer.safetensors (may be empty)
  NamedTensors extra;       // → state.safetensors (may be empty)
  nlohmann::json trainer_state = nlohmann::json::object();  // → trainer_state.json
  // SaveSharded only: the ZeRO stage recorded in the manifest ("zero1", ...).
  std::string sharding;
  // Plain files written as they are (name, bytes) and listed in the manifest like the others:
  // what makes the checkpoint usable on its own, e.g. the run config and the tokenizer. Written by
  // rank 0 of a sharded save.
  std::vector<std::pair<std::string, std::string>> files;
  // More top-level manifest keys (e.g. "run_config", "tokenizer"); the reserved ones (format,
  // version, step, world_size, config_hash, created_unix, files, shards) are refused.
  nlohmann::json manifest_extra = nlohmann::json::object();
};

// The ranks saving one sharded checkpoint together. all_gather is a collective (every member calls
// it, in the same order): each member's string, in rank order, on every member.
struct ShardGroup {
  int rank = 0;
  int size = 1;
  std::function<std::vector<std::string>(const std::string&)> all_gather;
};

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

// The parsed manifest.json of a checkpoint directory after a size check of the files it lists
// (no hashing): for reading what a checkpoint carries without loading it.
absl::StatusOr<nlohmann::json> ReadCheckpointManifest(const std::string& path);

struct CheckpointOptions {
  std::string dir;         // runs/<name>/checkpoints
  int keep_last = 3;       // newest checkpoints kept
  int64_t keep_every = 0;  // also keep steps divisible by this (0: none)
  // Test hook: called after each file is written during a save with the file's name; a test can
  // abort the process there to simulate a crash mid-save.
  std::function<void(const std::string&)> after_file_written;
};

// "step-00001000"
std::string CheckpointDirName(int64_t step);

// Verifies a checkpoint directory: manifest present and parseable, every listed file present with
// the listed size and sha256. The error names the directory and the file at fault.
absl::Status VerifyCheckpoint(const std::string& path);

// Collective over `group` (a sharded job resuming): the same check, with the files' sha256 split
// between the ranks (rank r hashes every size-th file); every rank gets the same status.
absl::Status VerifyCheckpoint(const std::string& path, const ShardGroup& group);

// Loads (after verifying, unless verify is false: the caller verified it) one checkpoint
// directory, unsharded or sharded: the tensors of every model*.safetensors file go to `model`, of
// every optimizer*.safetensors to `optimizer` (a name in two files is an error naming both).
// Tensors are zero-copy views of the mapped files: only what the caller touches is read.
absl::StatusOr<LoadedCheckpoint> LoadCheckpoint(const std::string& path, bool verify = true);

class CheckpointManager {
 public:
  explicit CheckpointManager(CheckpointOptions options);
  ~CheckpointManager();  // waits for a pending asynchronous save
  CheckpointManager(const CheckpointManager&) = delete;
  CheckpointManager& operator=(const CheckpointManager&) = delete;

  // Saves synchronously (tensors are read during the call).
  absl::Status Save(const CheckpointData& data);
  // Copies the tensors now (host snapshot), then writes in a background thread. Waits first for
  // the previous asynchronous save, and returns that save's error, if any.
  absl::Status SaveAsync(CheckpointData data);
  // Collective over `group`, synchronous: every rank writes its shard files (data.model and
  // data.optimizer hold the tensors it owns; data.extra and data.trainer_state are taken from rank
  // 0) into one temporary directory; rank 0 writes the manifest, moves it into place and replaces
  // `latest`. Every rank returns the same status; on any rank's failure nothing is moved into place
  // and the temporary directory is removed.
  absl::Status SaveSharded(const CheckpointData& data, const ShardGroup& group);
  // Waits for a pending asynchronous save; returns its status.
  absl::Status Wait();

  // Checkpoint directories in the dir, oldest first (by step), valid or not.
  std::vector<std::string> List() const;
  // The newest checkpoint that verifies; each invalid newer one is reported through `warn` (one
  // line naming it and why) and skipped. NotFound when there is none. With a group (collective:
  // every rank of a job resuming), the hashing is split between the ranks and they all agree.
  absl::StatusOr<std::string> LatestValid(
      const std::function<void(const std::string&)>& warn = nullptr,
      const ShardGroup* group = nullptr) const;

 private:
  absl::Status SaveImpl(const CheckpointData& data);
  absl::Status SaveShardedImpl(const CheckpointData& data, const ShardGroup& group);
  // Writes the manifest (listing `files`, and `shards` unless null) into the complete temporary
  // directory, moves it into place, replaces `latest`, applies retention. *renamed: moved.
  absl::Status Commit(const CheckpointData& data, const std::string& temp_path,
                      const nlohmann::json& files, const nlohmann::json& shards, bool* renamed);
  absl::Status ApplyRetention(int64_t newest_step);

  CheckpointOptions options_;
  std::thread worker_;
  std::mutex mutex_;
  absl::Status async_status_;
  // Retention's memory of checkpoints already verified by sha256 (path → manifest text): one whose
  // manifest is unchanged is re-checked by file sizes only, so a save does not re-hash the kept
  // ones.
  std::map<std::string, std::string> verified_manifests_;
};

}  // namespace fam::io
