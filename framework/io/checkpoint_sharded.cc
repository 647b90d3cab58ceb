#include "framework/io/checkpoint_sharded.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "framework/io/atomic_file.h"
#include "framework/io/checkpoint.h"
#include "framework/io/checkpoint_internal.h"
#include "framework/io/mmap_file.h"
#include "framework/io/sha256.h"

namespace fam::io::checkpoint_internal {
namespace {

// A status as one line of JSON, for the all_gather of a ShardGroup, and back.
std::string EncodeStatus(const absl::Status& status, Json extra = Json::object()) {
  extra["code"] = static_cast<int>(status.code());
  extra["message"] = std::string(status.message());
  return extra.dump();
}

// The first error (lowest rank) among every rank's EncodeStatus; the same on every rank.
absl::Status FirstError(const std::vector<std::string>& all, bool name_rank,
                        std::vector<Json>* parsed = nullptr) {
  absl::Status first;
  for (size_t r = 0; r < all.size(); ++r) {
    Json j = Json::parse(all[r]);
    const auto code = static_cast<absl::StatusCode>(j.at("code").get<int>());
    if (code != absl::StatusCode::kOk && first.ok()) {
      const std::string message = j.at("message").get<std::string>();
      first = absl::Status(
          code, name_rank && all.size() > 1 ? absl::StrCat("rank ", r, ": ", message) : message);
    }
    if (parsed != nullptr) parsed->push_back(std::move(j));
  }
  return first;
}

}  // namespace

absl::Status VerifyReasonShared(const std::string& path, const ShardGroup& group) {
  absl::Status mine = RunGuarded(
      [&] { return VerifyReason(path, /*hash=*/true, nullptr, nullptr, group.rank, group.size); });
  return FirstError(group.all_gather(EncodeStatus(mine)), /*name_rank=*/false);
}

absl::Status CheckGroup(const ShardGroup& group) {
  if (group.size < 1 || group.rank < 0 || group.rank >= group.size || !group.all_gather) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint: bad shard group (rank ", group.rank, " of ", group.size,
                     ", all_gather set: ", static_cast<bool>(group.all_gather), ")"));
  }
  return absl::OkStatus();
}

}  // namespace fam::io::checkpoint_internal

namespace fam::io {
namespace {

namespace fs = std::filesystem;
using checkpoint_internal::CheckGroup;
using checkpoint_internal::CheckPlainFiles;
using checkpoint_internal::EncodeStatus;
using checkpoint_internal::FirstError;
using checkpoint_internal::JoinPath;
using checkpoint_internal::Json;
using checkpoint_internal::kState;
using checkpoint_internal::kTrainerState;
using checkpoint_internal::PreviousSaveFailed;
using checkpoint_internal::RunGuarded;
using checkpoint_internal::StatusFromErrorCode;
using checkpoint_internal::VerifyReasonShared;
using checkpoint_internal::WithPrefix;
using checkpoint_internal::WriteTensorFile;
using checkpoint_internal::WriteTrainerState;

// Sharded checkpoints: "model-rank-0-of-2.safetensors".
std::string ShardFileName(const char* kind, int rank, int size) {
  return absl::StrCat(kind, "-rank-", rank, "-of-", size, ".safetensors");
}

}  // namespace

absl::Status VerifyCheckpoint(const std::string& path, const ShardGroup& group) {
  if (absl::Status s = CheckGroup(group); !s.ok()) return s;
  return WithPrefix(VerifyReasonShared(path, group), path);
}

absl::Status CheckpointManager::SaveSharded(const CheckpointData& data, const ShardGroup& group) {
  if (absl::Status s = CheckGroup(group); !s.ok()) return s;  // no collective possible
  return SaveShardedImpl(data, group);
}

// Three rounds of all_gather, always all three on every rank (an error is carried through them):
// (1) rank 0 created the temporary directory (and says its pid, which names it); (2) every rank
// wrote and hashed its files; (3) rank 0 wrote the manifest and moved the directory into place.
absl::Status CheckpointManager::SaveShardedImpl(const CheckpointData& data,
                                                const ShardGroup& group) {
  const bool root = group.rank == 0;
  const std::string& dir = options_.dir;
  const std::string name = CheckpointDirName(data.step);
  bool renamed = false;
  std::string temp_path;
  // Rank 0 removes the temporary directory unless it was moved into place.
  struct RemoveTemp {
    const bool root;
    const std::string& path;
    const bool& renamed;
    ~RemoveTemp() {
      std::error_code ignored;
      if (root && !path.empty() && !renamed) fs::remove_all(path, ignored);
    }
  } remove_temp{root, temp_path, renamed};

  // Round 1.
  absl::Status mine = Wait();
  if (!mine.ok()) mine = PreviousSaveFailed(mine, data.step);
  if (mine.ok() && dir.empty())
    mine = absl::InvalidArgumentError("checkpoint: options.dir is empty");
  if (mine.ok() && data.step < 0)
    mine = absl::InvalidArgumentError(absl::StrCat("checkpoint: step ", data.step, " < 0"));
  if (mine.ok() && data.world_size != group.size) {
    mine = absl::InvalidArgumentError(absl::StrCat("checkpoint: world_size ", data.world_size,
                                                   " but ", group.size, " ranks save"));
  }
  if (mine.ok() && root) {
    mine = RunGuarded([&]() -> absl::Status {
      const std::string path = JoinPath(dir, absl::StrCat(".tmp-", name, "-", ::getpid()));
      std::error_code ec;
      fs::create_directories(dir, ec);
      if (ec) return StatusFromErrorCode(ec, "cannot create checkpoint directory", dir);
      fs::remove_all(path, ec);
      if (ec) return StatusFromErrorCode(ec, "cannot remove stale temporary directory", path);
      fs::create_directory(path, ec);
      if (ec) return StatusFromErrorCode(ec, "cannot create temporary directory", path);
      temp_path = path;
      return FsyncDir(dir);  // visible to the other ranks' processes before they write
    });
  }
  std::vector<Json> round1;
  const absl::Status first =
      FirstError(group.all_gather(EncodeStatus(mine, {{"pid", static_cast<int64_t>(::getpid())}})),
                 /*name_rank=*/true, &round1);
  if (!first.ok()) return first;
  temp_path = JoinPath(dir, absl::StrCat(".tmp-", name, "-", round1[0].at("pid").get<int64_t>()));

  // Round 2: this rank's files, each hashed by the rank that wrote it.
  Json files = Json::object();
  mine = RunGuarded([&]() -> absl::Status {
    auto write = [&](const std::string& file, const NamedTensors* tensors) -> absl::Status {
      const std::string file_path = JoinPath(temp_path, file);
      if (tensors != nullptr) {
        if (absl::Status s = WriteTensorFile(file_path, *tensors); !s.ok()) return s;
      }
      struct stat st;
      if (::stat(file_path.c_str(), &st) != 0) return ErrnoStatus(errno, "cannot stat", file_path);
      absl::StatusOr<std::string> digest = Sha256File(file_path);
      if (!digest.ok()) return digest.status();
      files[file] = {{"size", static_cast<uint64_t>(st.st_size)}, {"sha256", *digest}};
      if (options_.after_file_written) options_.after_file_written(file);
      return absl::OkStatus();
    };
    if (!data.model.empty()) {
      if (absl::Status s = write(ShardFileName("model", group.rank, group.size), &data.model);
          !s.ok())
        return s;
    }
    if (!data.optimizer.empty()) {
      if (absl::Status s =
              write(ShardFileName("optimizer", group.rank, group.size), &data.optimizer);
          !s.ok())
        return s;
    }
    if (!root) return absl::OkStatus();
    if (absl::Status s = CheckPlainFiles(data); !s.ok()) return s;
    if (!data.extra.empty()) {
      if (absl::Status s = write(kState, &data.extra); !s.ok()) return s;
    }
    if (absl::Status s = WriteTrainerState(data, temp_path); !s.ok()) return s;
    for (const auto& [file, bytes] : data.files) {
      if (absl::Status s = WriteFileAtomic(JoinPath(temp_path, file), bytes); !s.ok()) return s;
      if (absl::Status s = write(file, nullptr); !s.ok()) return s;
    }
    return write(kTrainerState, nullptr);
  });
  std::vector<Json> round2;
  const absl::Status written = FirstError(group.all_gather(EncodeStatus(mine, {{"files", files}})),
                                          /*name_rank=*/true, &round2);
  if (!written.ok()) return written;

  // Round 3: rank 0 commits.
  mine = absl::OkStatus();
  if (root) {
    mine = RunGuarded([&]() -> absl::Status {
      if (absl::Status s = FsyncDir(temp_path); !s.ok()) return s;
      Json all_files = Json::object();
      for (const Json& r : round2) {
        for (const auto& [file, entry] : r.at("files").items()) {
          if (all_files.contains(file)) {
            return absl::InternalError(
                absl::StrCat("checkpoint ", name, ": two ranks wrote ", file));
          }
          all_files[file] = entry;
        }
      }
      const Json shards = {{"world_size", group.size}, {"zero", data.sharding}};
      return Commit(data, temp_path, all_files, shards, &renamed);
    });
  }
  return FirstError(group.all_gather(EncodeStatus(mine)), /*name_rank=*/false);
}

}  // namespace fam::io
