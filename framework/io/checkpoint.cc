#include "framework/io/checkpoint.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <set>
#include <string_view>
#include <system_error>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "framework/autograd/node.h"
#include "framework/core/error.h"
#include "framework/io/atomic_file.h"
#include "framework/io/mmap_file.h"
#include "framework/io/safetensors.h"
#include "framework/io/sha256.h"
#include "framework/ops/ops.h"

namespace fam::io {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr char kFormat[] = "famtrain-checkpoint";
constexpr int kVersion = 1;
constexpr char kManifest[] = "manifest.json";
constexpr char kModel[] = "model.safetensors";
constexpr char kOptimizer[] = "optimizer.safetensors";
constexpr char kState[] = "state.safetensors";
constexpr char kTrainerState[] = "trainer_state.json";
constexpr char kLatest[] = "latest";
constexpr char kTempPrefix[] = ".tmp-step-";          // a save in progress (or crashed)
constexpr char kTrashPrefix[] = ".trash-step-";       // a checkpoint being deleted
constexpr char kLatestTempPrefix[] = ".latest.tmp-";  // AtomicFileWriter's temporary for `latest`

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

std::string JoinPath(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : absl::StrCat(dir, "/", name);
}

std::string BaseName(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

// The step of a directory named exactly CheckpointDirName(step); nullopt for anything else.
std::optional<int64_t> ParseStepDirName(std::string_view name) {
  if (!name.starts_with("step-")) return std::nullopt;
  std::string_view digits = name.substr(5);
  if (digits.empty() || digits.size() > 18) return std::nullopt;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  int64_t step = 0;
  for (char c : digits) step = step * 10 + (c - '0');  // at most 18 digits: no overflow
  if (CheckpointDirName(step) != name) return std::nullopt;
  return step;
}

// A file name inside the checkpoint directory: no path separators, no "." or "..".
bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find('/') == std::string::npos &&
         name.find('\0') == std::string::npos;
}

bool IsHexDigest(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

absl::Status WithPrefix(const absl::Status& status, const std::string& path) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat("checkpoint ", path, ": ", status.message()));
}

absl::Status StatusFromErrorCode(const std::error_code& ec, const std::string& what,
                                 const std::string& path) {
  return ErrnoStatus(ec.value(), what, path);
}

// Parses manifest.json; errors are DataLoss with a reason that names the manifest.
absl::StatusOr<Manifest> ParseManifest(const std::string& text) {
  Json j;
  try {
    j = Json::parse(text);
  } catch (const Json::exception& e) {
    return absl::DataLossError(absl::StrCat(kManifest, " is not valid JSON (", e.what(), ")"));
  }
  auto bad = [](const std::string& what) {
    return absl::DataLossError(absl::StrCat(kManifest, ": ", what));
  };
  if (!j.is_object()) return bad("not a JSON object");
  if (!j.contains("format") || j["format"] != kFormat)
    return bad(absl::StrCat("'format' is not \"", kFormat, "\""));
  if (!j.contains("version") || !j["version"].is_number_integer())
    return bad("'version' is missing or not an integer");
  if (j["version"].get<int64_t>() != kVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat(kManifest, ": format version ", j["version"].get<int64_t>(),
                     " is not supported (this build reads version ", kVersion, ")"));
  }
  Manifest m;
  m.json = j;
  if (!j.contains("step") || !j["step"].is_number_integer() || j["step"].get<int64_t>() < 0)
    return bad("'step' is missing or not a non-negative integer");
  m.step = j["step"].get<int64_t>();
  if (!j.contains("world_size") || !j["world_size"].is_number_integer() ||
      j["world_size"].get<int64_t>() < 1 || j["world_size"].get<int64_t>() > (1 << 30))
    return bad("'world_size' is missing or not a positive integer");
  m.world_size = static_cast<int>(j["world_size"].get<int64_t>());
  if (!j.contains("config_hash") || !j["config_hash"].is_string())
    return bad("'config_hash' is missing or not a string");
  m.config_hash = j["config_hash"].get<std::string>();
  if (j.contains("created_unix") && j["created_unix"].is_number_integer())
    m.created_unix = j["created_unix"].get<int64_t>();
  if (!j.contains("files") || !j["files"].is_object())
    return bad("'files' is missing or not an object");
  for (const auto& [name, entry] : j["files"].items()) {
    if (!IsPlainFileName(name) || name == kManifest)
      return bad(absl::StrCat("'files' lists '", name, "', which is not a plain file name"));
    if (!entry.is_object() || !entry.contains("size") || !entry["size"].is_number_unsigned() ||
        !entry.contains("sha256") || !entry["sha256"].is_string() ||
        !IsHexDigest(entry["sha256"].get<std::string>())) {
      return bad(absl::StrCat("entry of '", name, "' is not {\"size\": N, \"sha256\": hex}"));
    }
    m.files[name] = {entry["size"].get<uint64_t>(), entry["sha256"].get<std::string>()};
  }
  return m;
}

// Verifies `path`; the message of an error is the reason only (the caller adds the directory).
// With hash=false, file sizes are checked but not their sha256; with parts > 1, only the files
// whose index in the manifest (name order) is `part` modulo `parts` are hashed.
absl::Status VerifyReason(const std::string& path, bool hash, Manifest* manifest_out = nullptr,
                          std::string* manifest_text_out = nullptr, int part = 0, int parts = 1) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::NotFoundError("directory not found");
    return ErrnoStatus(errno, "cannot stat", path);
  }
  if (!S_ISDIR(st.st_mode)) return absl::NotFoundError("not a directory");
  const std::string manifest_path = JoinPath(path, kManifest);
  absl::StatusOr<std::string> text = ReadFile(manifest_path);
  if (!text.ok()) {
    if (absl::IsNotFound(text.status()))
      return absl::NotFoundError(absl::StrCat(kManifest, " is missing (incomplete save?)"));
    return text.status();
  }
  absl::StatusOr<Manifest> manifest = ParseManifest(*text);
  if (!manifest.ok()) return manifest.status();
  std::optional<int64_t> dir_step = ParseStepDirName(BaseName(path));
  if (dir_step && *dir_step != manifest->step) {
    return absl::DataLossError(absl::StrCat(kManifest, " says step ", manifest->step,
                                            " but the directory is named for step ", *dir_step));
  }
  size_t index = 0;
  for (const auto& [name, file] : manifest->files) {
    const bool hash_this = hash && static_cast<int>(index++ % parts) == part;
    const std::string file_path = JoinPath(path, name);
    if (::stat(file_path.c_str(), &st) != 0) {
      if (errno == ENOENT)
        return absl::NotFoundError(absl::StrCat(name, " (listed in ", kManifest, ") is missing"));
      return ErrnoStatus(errno, "cannot stat", file_path);
    }
    if (!S_ISREG(st.st_mode)) return absl::DataLossError(absl::StrCat(name, " is not a file"));
    if (static_cast<uint64_t>(st.st_size) != file.size) {
      return absl::DataLossError(absl::StrCat(name, " is ", st.st_size, " bytes but ", kManifest,
                                              " says ", file.size, " (truncated or altered)"));
    }
    if (!hash_this) continue;
    absl::StatusOr<std::string> digest = Sha256File(file_path);
    if (!digest.ok()) return digest.status();
    if (*digest != file.sha256) {
      return absl::DataLossError(absl::StrCat(name, " does not match its sha256 in ", kManifest,
                                              " (corrupt or altered: ", digest->substr(0, 12),
                                              "... instead of ", file.sha256.substr(0, 12),
                                              "...)"));
    }
  }
  if (manifest_out != nullptr) *manifest_out = *std::move(manifest);
  if (manifest_text_out != nullptr) *manifest_text_out = *std::move(text);
  return absl::OkStatus();
}

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

// Writes one safetensors file of the checkpoint. "format": "pt" is the metadata other tools
// (e.g. Hugging Face loaders) expect of a safetensors file holding named weights.
absl::Status WriteTensorFile(const std::string& path, const NamedTensors& tensors) {
  return WriteSafetensors(path, tensors, {{"format", "pt"}});
}

absl::Status LoadTensorFile(const std::string& path, std::map<std::string, Tensor>* out) {
  absl::StatusOr<std::unique_ptr<SafetensorsFile>> file = SafetensorsFile::Open(path);
  if (!file.ok()) return absl::DataLossError(file.status().message());
  for (const std::string& name : (*file)->names()) {
    absl::StatusOr<Tensor> tensor = (*file)->Load(name);  // zero-copy; keeps the mapping alive
    if (!tensor.ok()) return absl::DataLossError(tensor.status().message());
    (*out)[name] = *std::move(tensor);
  }
  return absl::OkStatus();
}

absl::Status PreviousSaveFailed(const absl::Status& previous, int64_t step) {
  return absl::Status(previous.code(),
                      absl::StrCat("the previous asynchronous checkpoint save failed (",
                                   previous.message(), "); step ", step, " was not saved"));
}

// trainer_state.json of `data` into `temp_path`.
absl::Status WriteTrainerState(const CheckpointData& data, const std::string& temp_path) {
  std::string trainer_text;
  try {
    trainer_text = data.trainer_state.dump(2) + "\n";
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint ", CheckpointDirName(data.step),
                                                   ": trainer_state cannot be written (", e.what(),
                                                   ")"));
  }
  return WriteFileAtomic(JoinPath(temp_path, kTrainerState), trainer_text);
}

// The plain files of `data` (config, tokenizer): names that cannot clash with the checkpoint's own.
absl::Status CheckPlainFiles(const CheckpointData& data) {
  for (const auto& [name, bytes] : data.files) {
    if (!IsPlainFileName(name) || name == kManifest || name == kTrainerState ||
        name.ends_with(".safetensors") || name.starts_with(".")) {
      return absl::InvalidArgumentError(absl::StrCat("checkpoint ", CheckpointDirName(data.step),
                                                     ": '", name,
                                                     "' cannot be one of its plain files"));
    }
  }
  static const char* const kReserved[] = {"format",      "version",      "step",  "world_size",
                                          "config_hash", "created_unix", "files", "shards"};
  if (!data.manifest_extra.is_object())
    return absl::InvalidArgumentError("checkpoint: manifest_extra is not a JSON object");
  for (const char* key : kReserved) {
    if (data.manifest_extra.contains(key))
      return absl::InvalidArgumentError(
          absl::StrCat("checkpoint: manifest key '", key, "' is reserved"));
  }
  return absl::OkStatus();
}

// Sharded checkpoints: "model-rank-0-of-2.safetensors".
std::string ShardFileName(const char* kind, int rank, int size) {
  return absl::StrCat(kind, "-rank-", rank, "-of-", size, ".safetensors");
}

// Which map of LoadedCheckpoint a listed file's tensors go to: model.safetensors and
// model-rank-*.safetensors → model, optimizer*.safetensors → optimizer, state*.safetensors → extra.
std::map<std::string, Tensor>* TensorMapOf(const std::string& file, LoadedCheckpoint* out) {
  if (!file.ends_with(".safetensors")) return nullptr;
  if (file == kModel || file.starts_with("model-rank-")) return &out->model;
  if (file == kOptimizer || file.starts_with("optimizer-rank-")) return &out->optimizer;
  if (file == kState) return &out->extra;
  return nullptr;
}

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

// VerifyReason over a group: each rank hashes every size-th file; the reason (it names the file)
// is the same on every rank whichever rank found it.
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

}  // namespace

std::string CheckpointDirName(int64_t step) { return absl::StrFormat("step-%08d", step); }

absl::Status VerifyCheckpoint(const std::string& path) {
  return WithPrefix(VerifyReason(path, /*hash=*/true), path);
}

absl::Status VerifyCheckpoint(const std::string& path, const ShardGroup& group) {
  if (absl::Status s = CheckGroup(group); !s.ok()) return s;
  return WithPrefix(VerifyReasonShared(path, group), path);
}

absl::StatusOr<LoadedCheckpoint> LoadCheckpoint(const std::string& path, bool verify) {
  Manifest manifest;
  if (absl::Status s = VerifyReason(path, /*hash=*/verify, &manifest); !s.ok())
    return WithPrefix(s, path);
  LoadedCheckpoint out;
  out.path = path;
  out.step = manifest.step;
  out.world_size = manifest.world_size;
  out.config_hash = manifest.config_hash;
  out.manifest = manifest.json;
  std::map<std::string, std::string> file_of;  // tensor name → the file it came from
  for (const auto& [file, entry] : manifest.files) {
    std::map<std::string, Tensor>* map = TensorMapOf(file, &out);
    if (map == nullptr) continue;
    if (file.find("-rank-") != std::string::npos) ++out.shard_files;
    std::map<std::string, Tensor> tensors;
    if (absl::Status s = LoadTensorFile(JoinPath(path, file), &tensors); !s.ok())
      return WithPrefix(s, path);
    for (auto& [name, tensor] : tensors) {
      const std::string key = (map == &out.model       ? "m:"
                               : map == &out.optimizer ? "o:"
                                                       : "s:") +
                              name;
      auto [it, inserted] = file_of.emplace(key, file);
      if (!inserted) {
        return WithPrefix(absl::DataLossError(absl::StrCat("tensor '", name, "' is in both ",
                                                           it->second, " and ", file)),
                          path);
      }
      (*map)[name] = std::move(tensor);
    }
  }
  out.trainer_state = Json::object();
  if (manifest.files.count(kTrainerState) > 0) {
    absl::StatusOr<std::string> text = ReadFile(JoinPath(path, kTrainerState));
    if (!text.ok()) return WithPrefix(text.status(), path);
    try {
      out.trainer_state = Json::parse(*text);
    } catch (const Json::exception& e) {
      return WithPrefix(
          absl::DataLossError(absl::StrCat(kTrainerState, " is not valid JSON (", e.what(), ")")),
          path);
    }
  }
  return out;
}

absl::StatusOr<Json> ReadCheckpointManifest(const std::string& path) {
  Manifest manifest;
  if (absl::Status s = VerifyReason(path, /*hash=*/false, &manifest); !s.ok())
    return WithPrefix(s, path);
  return manifest.json;
}

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
  Json manifest_json = {{"format", kFormat},
                        {"version", kVersion},
                        {"step", data.step},
                        {"world_size", data.world_size},
                        {"config_hash", data.config_hash},
                        {"created_unix", static_cast<int64_t>(std::time(nullptr))},
                        {"files", files}};
  if (!shards.is_null()) manifest_json["shards"] = shards;
  for (const auto& [key, value] : data.manifest_extra.items()) manifest_json[key] = value;
  std::string manifest_text;
  try {
    manifest_text = manifest_json.dump(2) + "\n";
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("checkpoint ", name, ": config_hash cannot be written (", e.what(), ")"));
  }
  if (absl::Status s = WriteFileAtomic(JoinPath(temp_path, kManifest), manifest_text); !s.ok())
    return s;
  if (options_.after_file_written) options_.after_file_written(kManifest);
  if (absl::Status s = FsyncDir(temp_path); !s.ok()) return s;

  if (absl::Status s = MoveIntoPlace(dir, temp_path, final_path); !s.ok()) return s;
  *renamed = true;
  if (absl::Status s = FsyncDir(dir); !s.ok()) return s;
  verified_manifests_[final_path] = manifest_text;
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
