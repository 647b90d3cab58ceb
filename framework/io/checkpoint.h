// Checkpoints that are never half-written, silently corrupt, or resumed "almost" right. What a
// checkpoint directory holds, its verification and loading: checkpoint_format.h; ranks saving and
// verifying one together: checkpoint_sharded.h; both are included here. This header adds the
// writer, CheckpointManager.
// Saving writes into a temporary directory (.tmp-step-…), fsyncs every file and the directory,
// writes the manifest, renames the directory into place, then replaces the `latest` text file
// atomically. Retention keeps the newest `keep_last` checkpoints plus every step divisible by
// `keep_every`, and never deletes the newest valid one.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "framework/io/checkpoint_format.h"
#include "framework/io/checkpoint_sharded.h"
#include "nlohmann/json.hpp"

namespace fam::io {

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

struct CheckpointOptions {
  std::string dir;         // runs/<name>/checkpoints
  int keep_last = 3;       // newest checkpoints kept
  int64_t keep_every = 0;  // also keep steps divisible by this (0: none)
  // Test hook: called after each file is written during a save with the file's name; a test can
  // abort the process there to simulate a crash mid-save.
  std::function<void(const std::string&)> after_file_written;
};

// Writes checkpoints into options.dir and finds the newest valid one (checkpoint_store.cc; the
// sharded save in checkpoint_sharded.cc).
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
