#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <set>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "framework/autograd/node.h"
#include "framework/core/error.h"
#include "framework/io/atomic_file.h"
#include "framework/io/checkpoint.h"
#include "framework/io/checkpoint_internal.h"
#include "framework/io/mmap_file.h"
#include "framework/io/sha256.h"
#include "framework/ops/ops.h"

namespace fam::io::checkpoint_internal {

absl::Status PreviousSaveFailed(const absl::Status& previous, int64_t step) {
  return absl::Status(previous.code(),
                      absl::StrCat("the previous asynchronous checkpoint save failed (",
                                   previous.message(), "); step ", step, " was not saved"));
}

}  // namespace fam::io::checkpoint_internal

namespace fam::io {
namespace {

namespace fs = std::filesystem;
using checkpoint_internal::BaseName;
using checkpoint_internal::CheckGroup;
using checkpoint_internal::CheckPlainFiles;
using checkpoint_internal::JoinPath;
using checkpoint_internal::Json;
using checkpoint_internal::kLatest;
using checkpoint_internal::kManifest;
using checkpoint_internal::kModel;
using checkpoint_internal::kOptimizer;
using checkpoint_internal::kState;
using checkpoint_internal::kTrainerState;
using checkpoint_internal::Manifest;
using checkpoint_internal::ManifestText;
using checkpoint_internal::ParseStepDirName;
using checkpoint_internal::PreviousSaveFailed;
using checkpoint_internal::RunGuarded;
using checkpoint_internal::StatusFromErrorCode;
using checkpoint_internal::VerifyReason;
using checkpoint_internal::VerifyReasonShared;
using checkpoint_internal::WriteTensorFile;
using checkpoint_internal::WriteTrainerState;

constexpr char kTempPrefix[] = ".tmp-step-";          // a save in progress (or crashed)
constexpr char kTrashPrefix[] = ".trash-step-";       // a checkpoint being deleted
constexpr char kLatestTempPrefix[] = ".latest.tmp-";  // AtomicFileWriter's temporary for `latest`

// New contiguous host copies of `tensors` (no autograd history), so that the caller may change
// the originals while a background save writes the copies.
NamedTensors SnapshotTensors(const NamedTensors& tensors) {
  NoGradGuard no_grad;
  NamedTensors out;
  out.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    FAM_CHECK(tensor.defined(), "checkpoint: tensor '", name, "' is undefined");
    Tensor source = tensor.detach();
    Tensor copy = source.device().is_cpu() ? ops::Clone(source) : ops::To(source, Device::CPU());
    out.emplace_back(name, copy.detach());
  }
  return out;
}

bool ProcessAlive(pid_t pid) {
  if (pid <= 0) return false;
  return ::kill(pid, 0) == 0 || errno == EPERM;
}

// The pid in a leftover name "<prefix><...>-<pid>" (the last dash-separated field) or, for
// ".latest.tmp-<pid>-<n>", the first field after the prefix.
std::optional<pid_t> LeftoverPid(const std::string& name) {
  std::string field;
  if (name.starts_with(kLatestTempPrefix)) {
    std::string rest = name.substr(sizeof(kLatestTempPrefix) - 1);
    field = rest.substr(0, rest.find('-'));
  } else {
    size_t dash = name.rfind('-');
    if (dash == std::string::npos) return std::nullopt;
    field = name.substr(dash + 1);
  }
  if (field.empty() || field.size() > 9) return std::nullopt;
  int64_t pid = 0;
  for (char c : field) {
    if (c < '0' || c > '9') return std::nullopt;
    pid = pid * 10 + (c - '0');
  }
  if (pid <= 0) return std::nullopt;
  return static_cast<pid_t>(pid);
}

// Removes what crashed or failed saves left behind in `dir`: .tmp-step-* and .trash-step-*
// directories and temporary `latest` files, unless a live process other than this one owns them.
void CleanLeftovers(const std::string& dir) {
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec) return;
  for (const fs::directory_entry& entry : it) {
    const std::string name = entry.path().filename().string();
    const bool dir_leftover = name.starts_with(kTempPrefix) || name.starts_with(kTrashPrefix);
    const bool file_leftover = name.starts_with(kLatestTempPrefix);
    if (!dir_leftover && !file_leftover) continue;
    std::optional<pid_t> pid = LeftoverPid(name);
    if (!pid) continue;
    if (*pid != ::getpid() && ProcessAlive(*pid)) continue;
    std::error_code remove_ec;
    if (dir_leftover && entry.is_directory(remove_ec) && !entry.is_symlink(remove_ec)) {
      fs::remove_all(entry.path(), remove_ec);
    } else if (file_leftover && entry.is_regular_file(remove_ec)) {
      fs::remove(entry.path(), remove_ec);
    }
  }
}

// Renames the complete temporary directory onto `final_path`. An existing checkpoint of the same
// step is swapped out atomically (RENAME_EXCHANGE) and deleted afterwards, so at every instant
// one complete checkpoint of that step exists; where the file system cannot exchange, the old one
// is moved aside first and deleted only after the new one is in place.
absl::Status MoveIntoPlace(const std::string& dir, const std::string& temp_path,
                           const std::string& final_path) {
  struct stat st;
  if (::lstat(final_path.c_str(), &st) != 0) {
    if (errno != ENOENT) return ErrnoStatus(errno, "cannot stat", final_path);
    if (::rename(temp_path.c_str(), final_path.c_str()) != 0)
      return ErrnoStatus(errno, "cannot rename checkpoint into place at", final_path);
    return absl::OkStatus();
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot save checkpoint: ", final_path, " exists and is not a directory"));
  }
  std::error_code ec;
  if (::renameat2(AT_FDCWD, temp_path.c_str(), AT_FDCWD, final_path.c_str(), RENAME_EXCHANGE) ==
      0) {
    // temp_path now holds the old checkpoint.
    if (absl::Status s = FsyncDir(dir); !s.ok()) return s;
    fs::remove_all(temp_path, ec);
    return absl::OkStatus();
  }
  if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
    return ErrnoStatus(errno, "cannot exchange checkpoint into place at", final_path);
  const std::string trash =
      JoinPath(dir, absl::StrCat(kTrashPrefix, BaseName(final_path).substr(5), "-", ::getpid()));
  fs::remove_all(trash, ec);
  if (::rename(final_path.c_str(), trash.c_str()) != 0)
    return ErrnoStatus(errno, "cannot move the old checkpoint aside", final_path);
  if (::rename(temp_path.c_str(), final_path.c_str()) != 0) {
    const int error_number = errno;
    ::rename(trash.c_str(), final_path.c_str());  // put the old one back
    return ErrnoStatus(error_number, "cannot rename checkpoint into place at", final_path);
  }
  if (absl::Status s = FsyncDir(dir); !s.ok()) return s;
  fs::remove_all(trash, ec);
  return absl::OkStatus();
}

// Deletes a checkpoint directory: renamed to a hidden name first (so that it is never seen half
// deleted), then removed.
absl::Status DeleteCheckpointDir(const std::string& dir, const std::string& path) {
  const std::string trash =
      JoinPath(dir, absl::StrCat(kTrashPrefix, BaseName(path).substr(5), "-", ::getpid()));
  std::error_code ec;
  fs::remove_all(trash, ec);
  if (::rename(path.c_str(), trash.c_str()) != 0)
    return ErrnoStatus(errno, "cannot delete old checkpoint", path);
  fs::remove_all(trash, ec);
  if (ec) return StatusFromErrorCode(ec, "cannot delete old checkpoint", trash);
  return absl::OkStatus();
}

}  // namespace

CheckpointManager::CheckpointManager(CheckpointOptions options) : options_(std::move(options)) {}

CheckpointManager::~CheckpointManager() {
  absl::Status status = Wait();
  if (!status.ok()) {
    std::fprintf(stderr, "famtrain: asynchronous checkpoint save failed: %s\n",
                 std::string(status.message()).c_str());
  }
}

absl::Status CheckpointManager::Wait() {
  if (worker_.joinable()) worker_.join();
  std::lock_guard<std::mutex> lock(mutex_);
  absl::Status status = async_status_;
  async_status_ = absl::OkStatus();
  return status;
}

absl::Status CheckpointManager::Save(const CheckpointData& data) {
  if (absl::Status previous = Wait(); !previous.ok())
    return PreviousSaveFailed(previous, data.step);
  return RunGuarded([&] { return SaveImpl(data); });
}

absl::Status CheckpointManager::SaveAsync(CheckpointData data) {
  if (absl::Status previous = Wait(); !previous.ok())
    return PreviousSaveFailed(previous, data.step);
  absl::Status snapshot = RunGuarded([&] {
    data.model = SnapshotTensors(data.model);
    data.optimizer = SnapshotTensors(data.optimizer);
    data.extra = SnapshotTensors(data.extra);
    return absl::OkStatus();
  });
  if (!snapshot.ok()) return snapshot;
  worker_ = std::thread([this, data = std::move(data)] {
    absl::Status status = RunGuarded([&] { return SaveImpl(data); });
    std::lock_guard<std::mutex> lock(mutex_);
    async_status_ = status;
  });
  return absl::OkStatus();
}

absl::Status CheckpointManager::SaveImpl(const CheckpointData& data) {
  const std::string& dir = options_.dir;
  if (dir.empty()) return absl::InvalidArgumentError("checkpoint: options.dir is empty");
  if (data.step < 0)
    return absl::InvalidArgumentError(absl::StrCat("checkpoint: step ", data.step, " < 0"));
  if (data.world_size < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint: world_size ", data.world_size, " < 1"));
  }
  if (absl::Status s = CheckPlainFiles(data); !s.ok()) return s;
  const std::string name = CheckpointDirName(data.step);
  const std::string final_path = JoinPath(dir, name);
  const std::string temp_path = JoinPath(dir, absl::StrCat(".tmp-", name, "-", ::getpid()));

  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return StatusFromErrorCode(ec, "cannot create checkpoint directory", dir);
  fs::remove_all(temp_path, ec);
  if (ec) return StatusFromErrorCode(ec, "cannot remove stale temporary directory", temp_path);
  fs::create_directory(temp_path, ec);
  if (ec) return StatusFromErrorCode(ec, "cannot create temporary directory", temp_path);
  // Until the rename succeeds, any failure removes the temporary directory.
  bool renamed = false;
  struct RemoveTemp {
    const std::string& path;
    const bool& renamed;
    ~RemoveTemp() {
      std::error_code ignored;
      if (!renamed) fs::remove_all(path, ignored);
    }
  } remove_temp{temp_path, renamed};

  Manifest manifest;
  auto record = [&](const std::string& file) -> absl::Status {
    const std::string file_path = JoinPath(temp_path, file);
    struct stat st;
    if (::stat(file_path.c_str(), &st) != 0) return ErrnoStatus(errno, "cannot stat", file_path);
    absl::StatusOr<std::string> digest = Sha256File(file_path);
    if (!digest.ok()) return digest.status();
    manifest.files[file] = {static_cast<uint64_t>(st.st_size), *digest};
    if (options_.after_file_written) options_.after_file_written(file);
    return absl::OkStatus();
  };

  const std::pair<const char*, const NamedTensors*> tensor_files[] = {
      {kModel, &data.model}, {kOptimizer, &data.optimizer}, {kState, &data.extra}};
  for (const auto& [file, tensors] : tensor_files) {
    if (tensors->empty()) continue;
    if (absl::Status s = WriteTensorFile(JoinPath(temp_path, file), *tensors); !s.ok()) return s;
    if (absl::Status s = record(file); !s.ok()) return s;
  }

  if (absl::Status s = WriteTrainerState(data, temp_path); !s.ok()) return s;
  if (absl::Status s = record(kTrainerState); !s.ok()) return s;
  for (const auto& [file, bytes] : data.files) {
    if (absl::Status s = WriteFileAtomic(JoinPath(temp_path, file), bytes); !s.ok()) return s;
    if (absl::Status s = record(file); !s.ok()) return s;
  }

  Json files = Json::object();
  for (const auto& [file, entry] : manifest.files)
    files[file] = {{"size", entry.size}, {"sha256", entry.sha256}};
  return Commit(data, temp_path, files, Json(), &renamed);
}

absl::Status CheckpointManager::Commit(const CheckpointData& data, const std::string& temp_path,
                                       const nlohmann::json& files, const nlohmann::json& shards,
                                       bool* renamed) {
  const std::string& dir = options_.dir;
  const std::string name = CheckpointDirName(data.step);
  const std::string final_path = JoinPath(dir, name);
  absl::StatusOr<std::string> manifest_text = ManifestText(data, files, shards);
  if (!manifest_text.ok()) return manifest_text.status();
  if (absl::Status s = WriteFileAtomic(JoinPath(temp_path, kManifest), *manifest_text); !s.ok())
    return s;
  if (options_.after_file_written) options_.after_file_written(kManifest);
  if (absl::Status s = FsyncDir(temp_path); !s.ok()) return s;

  if (absl::Status s = MoveIntoPlace(dir, temp_path, final_path); !s.ok()) return s;
  *renamed = true;
  if (absl::Status s = FsyncDir(dir); !s.ok()) return s;
  verified_manifests_[final_path] = *manifest_text;
  if (absl::Status s = WriteFileAtomic(JoinPath(dir, kLatest), name + "\n"); !s.ok()) return s;

  CleanLeftovers(dir);
  if (absl::Status s = ApplyRetention(data.step); !s.ok()) {
    return absl::Status(s.code(),
                        absl::StrCat("checkpoint ", final_path,
                                     " was saved, but deleting old ones failed: ", s.message()));
  }
  return absl::OkStatus();
}

absl::Status CheckpointManager::ApplyRetention(int64_t newest_step) {
  const std::string& dir = options_.dir;
  const std::vector<std::string> checkpoints = List();
  std::set<std::string> keep = {JoinPath(dir, CheckpointDirName(newest_step))};
  // At least one: the newest valid checkpoint is never deleted.
  const int64_t keep_last = std::max(options_.keep_last, 1);
  int64_t valid_kept = 0;
  for (auto it = checkpoints.rbegin(); it != checkpoints.rend(); ++it) {
    const std::string& path = *it;
    const int64_t step = *ParseStepDirName(BaseName(path));
    if (options_.keep_every > 0 && step % options_.keep_every == 0) keep.insert(path);
    if (valid_kept >= keep_last) continue;
    // Valid: unchanged since a full verification in this process (sizes re-checked), or verified
    // now by sha256.
    bool valid = false;
    absl::StatusOr<std::string> text = ReadFile(JoinPath(path, kManifest));
    auto known = verified_manifests_.find(path);
    if (text.ok() && known != verified_manifests_.end() && known->second == *text) {
      valid = VerifyReason(path, /*hash=*/false).ok();
    } else {
      std::string verified_text;
      valid = VerifyReason(path, /*hash=*/true, nullptr, &verified_text).ok();
      if (valid) verified_manifests_[path] = verified_text;
    }
    if (!valid) {
      verified_manifests_.erase(path);
      continue;
    }
    keep.insert(path);
    ++valid_kept;
  }
  absl::Status status;
  bool deleted = false;
  for (const std::string& path : checkpoints) {
    if (keep.count(path) > 0) continue;
    verified_manifests_.erase(path);
    absl::Status s = DeleteCheckpointDir(dir, path);
    if (!s.ok() && status.ok()) status = s;
    deleted = deleted || s.ok();
  }
  if (deleted) {
    if (absl::Status s = FsyncDir(dir); !s.ok() && status.ok()) status = s;
  }
  return status;
}

std::vector<std::string> CheckpointManager::List() const {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  fs::directory_iterator it(options_.dir, ec);
  if (ec) return {};
  for (const fs::directory_entry& entry : it) {
    const std::string name = entry.path().filename().string();
    std::optional<int64_t> step = ParseStepDirName(name);
    std::error_code type_ec;
    if (!step || !entry.is_directory(type_ec)) continue;
    found.emplace_back(*step, JoinPath(options_.dir, name));
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> paths;
  paths.reserve(found.size());
  for (auto& [step, path] : found) paths.push_back(std::move(path));
  return paths;
}

absl::StatusOr<std::string> CheckpointManager::LatestValid(
    const std::function<void(const std::string&)>& warn, const ShardGroup* group) const {
  if (group != nullptr) {
    if (absl::Status s = CheckGroup(*group); !s.ok()) return s;
  }
  const std::string& dir = options_.dir;
  std::vector<std::string> order;
  const std::string latest_path = JoinPath(dir, kLatest);
  absl::StatusOr<std::string> latest = ReadFile(latest_path);
  if (latest.ok()) {
    const std::string name(absl::StripAsciiWhitespace(*latest));
    if (ParseStepDirName(name)) {
      order.push_back(JoinPath(dir, name));
    } else if (warn) {
      warn(absl::StrCat("checkpoint index ", latest_path, " names '", name,
                        "', which is not a checkpoint directory; scanning ", dir));
    }
  }
  const std::vector<std::string> checkpoints = List();
  for (auto it = checkpoints.rbegin(); it != checkpoints.rend(); ++it) {
    if (std::find(order.begin(), order.end(), *it) == order.end()) order.push_back(*it);
  }
  for (const std::string& path : order) {
    absl::Status status =
        group != nullptr ? VerifyReasonShared(path, *group) : VerifyReason(path, /*hash=*/true);
    if (status.ok()) return path;
    if (warn) {
      warn(absl::StrCat("checkpoint ", path, " is corrupt (", status.message(),
                        "); falling back to the previous one"));
    }
  }
  if (order.empty()) return absl::NotFoundError(absl::StrCat("no checkpoint in ", dir));
  return absl::NotFoundError(
      absl::StrCat("no valid checkpoint in ", dir, " (", order.size(), " invalid)"));
}

}  // namespace fam::io
