// What the checkpoint sources share (checkpoint_format.cc, checkpoint_store.cc,
// checkpoint_sharded.cc): the file names inside a checkpoint directory, the parsed manifest, its
// verification, and the steps of a save. Included by those files only; callers use checkpoint.h.
#pragma once

#include <cstdint>
#include <map>
#include <new>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "framework/core/error.h"
#include "framework/io/checkpoint.h"
#include "nlohmann/json.hpp"

namespace fam::io::checkpoint_internal {

using Json = nlohmann::json;

inline constexpr char kManifest[] = "manifest.json";
inline constexpr char kModel[] = "model.safetensors";
inline constexpr char kOptimizer[] = "optimizer.safetensors";
inline constexpr char kState[] = "state.safetensors";
inline constexpr char kTrainerState[] = "trainer_state.json";
inline constexpr char kLatest[] = "latest";

struct ManifestFile {
  uint64_t size = 0;
  std::string sha256;
};

struct Manifest {
  int64_t step = 0;
  int world_size = 1;
  std::string config_hash;
  int64_t created_unix = 0;
  std::map<std::string, ManifestFile> files;
  Json json;  // all of it
};

std::string JoinPath(const std::string& dir, const std::string& name);
std::string BaseName(const std::string& path);
// The step of a directory named exactly CheckpointDirName(step); nullopt for anything else.
std::optional<int64_t> ParseStepDirName(std::string_view name);
// "checkpoint <path>: <message>" with the code of `status`; OK stays OK.
absl::Status WithPrefix(const absl::Status& status, const std::string& path);
absl::Status StatusFromErrorCode(const std::error_code& ec, const std::string& what,
                                 const std::string& path);

// Verifies `path`; the message of an error is the reason only (the caller adds the directory).
// With hash=false, file sizes are checked but not their sha256; with parts > 1, only the files
// whose index in the manifest (name order) is `part` modulo `parts` are hashed.
absl::Status VerifyReason(const std::string& path, bool hash, Manifest* manifest_out = nullptr,
                          std::string* manifest_text_out = nullptr, int part = 0, int parts = 1);

// Writes one safetensors file of the checkpoint. "format": "pt" is the metadata other tools
// (e.g. Hugging Face loaders) expect of a safetensors file holding named weights.
absl::Status WriteTensorFile(const std::string& path, const NamedTensors& tensors);
// trainer_state.json of `data` into `temp_path`.
absl::Status WriteTrainerState(const CheckpointData& data, const std::string& temp_path);
// The plain files of `data` (config, tokenizer): names that cannot clash with the checkpoint's own.
absl::Status CheckPlainFiles(const CheckpointData& data);
// The text of manifest.json for `data` listing `files` (name → {"size", "sha256"}) and, unless
// null, `shards`.
absl::StatusOr<std::string> ManifestText(const CheckpointData& data, const Json& files,
                                         const Json& shards);

// Runs a save step, turning exceptions (tensor errors, std::filesystem, bad_alloc) into a Status.
template <typename Fn>
absl::Status RunGuarded(Fn&& fn) {
  try {
    return fn();
  } catch (const Error& e) {
    return e.ToStatus();
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError("checkpoint: out of host memory");
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("checkpoint: ", e.what()));
  }
}

absl::Status PreviousSaveFailed(const absl::Status& previous, int64_t step);

// An InvalidArgument unless `group` is usable (rank within size, all_gather set).
absl::Status CheckGroup(const ShardGroup& group);
// VerifyReason over a group: each rank hashes every size-th file; the reason (it names the file)
// is the same on every rank whichever rank found it.
absl::Status VerifyReasonShared(const std::string& path, const ShardGroup& group);

}  // namespace fam::io::checkpoint_internal
