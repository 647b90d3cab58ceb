// Checkpoints that are never half-written, silently corrupt, or resumed "almost" right
// (FORMATS.md "Checkpoint layout"). A checkpoint is a directory step-<8 digits>/ holding
//   model.safetensors      weights (FORMATS.md names)
//   optimizer.safetensors  optimizer state tensors (optional)
//   state.safetensors      other tensors of the trainer (e.g. the FAM state kept by Random State
//                          Passing), optional
//   trainer_state.json     step, data-loader position, RNG counters, schedule position, metrics ...
//   manifest.json          written LAST: step, world_size, config_hash, created time, and for every
//                          other file its size and sha256. A directory without a valid manifest is
//                          not a checkpoint.
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
};

struct LoadedCheckpoint {
  std::string path;  // the checkpoint directory
  int64_t step = 0;
  int world_size = 1;
  std::string config_hash;
  std::map<std::string, Tensor> model, optimizer, extra;
  nlohmann::json trainer_state;
};

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

// Loads (after verifying) one checkpoint directory.
absl::StatusOr<LoadedCheckpoint> LoadCheckpoint(const std::string& path);

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
  // Waits for a pending asynchronous save; returns its status.
  absl::Status Wait();

  // Checkpoint directories in the dir, oldest first (by step), valid or not.
  std::vector<std::string> List() const;
  // The newest checkpoint that verifies; each invalid newer one is reported through `warn` (one
  // line naming it and why) and skipped. NotFound when there is none.
  absl::StatusOr<std::string> LatestValid(
      const std::function<void(const std::string&)>& warn = nullptr) const;

 private:
  absl::Status SaveImpl(const CheckpointData& data);
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
