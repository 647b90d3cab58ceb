#include "framework/io/checkpoint_format.h"

#include <sys/stat.h>

#include <cerrno>
#include <ctime>
#include <map>
#include <memory>
#include <optional>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "framework/core/error.h"
#include "framework/io/atomic_file.h"
#include "framework/io/checkpoint_internal.h"
#include "framework/io/mmap_file.h"
#include "framework/io/safetensors.h"
#include "framework/io/sha256.h"

namespace fam::io::checkpoint_internal {
namespace {

constexpr char kFormat[] = "famtrain-checkpoint";
constexpr int kVersion = 1;

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

}  // namespace

std::string JoinPath(const std::string& dir, const std::string& name) {
  if (dir.empty()) return name;
  return dir.back() == '/' ? dir + name : absl::StrCat(dir, "/", name);
}

std::string BaseName(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

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

absl::Status WithPrefix(const absl::Status& status, const std::string& path) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrCat("checkpoint ", path, ": ", status.message()));
}

absl::Status StatusFromErrorCode(const std::error_code& ec, const std::string& what,
                                 const std::string& path) {
  return ErrnoStatus(ec.value(), what, path);
}

absl::Status VerifyReason(const std::string& path, bool hash, Manifest* manifest_out,
                          std::string* manifest_text_out, int part, int parts) {
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

absl::Status WriteTensorFile(const std::string& path, const NamedTensors& tensors) {
  return WriteSafetensors(path, tensors, {{"format", "pt"}});
}

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

absl::StatusOr<std::string> ManifestText(const CheckpointData& data, const Json& files,
                                         const Json& shards) {
  Json manifest_json = {{"format", kFormat},
                        {"version", kVersion},
                        {"step", data.step},
                        {"world_size", data.world_size},
                        {"config_hash", data.config_hash},
                        {"created_unix", static_cast<int64_t>(std::time(nullptr))},
                        {"files", files}};
  if (!shards.is_null()) manifest_json["shards"] = shards;
  for (const auto& [key, value] : data.manifest_extra.items()) manifest_json[key] = value;
  try {
    return manifest_json.dump(2) + "\n";
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("checkpoint ", CheckpointDirName(data.step),
                                                   ": config_hash cannot be written (", e.what(),
                                                   ")"));
  }
}

}  // namespace fam::io::checkpoint_internal

namespace fam::io {
namespace {

using checkpoint_internal::JoinPath;
using checkpoint_internal::Json;
using checkpoint_internal::kModel;
using checkpoint_internal::kOptimizer;
using checkpoint_internal::kState;
using checkpoint_internal::kTrainerState;
using checkpoint_internal::Manifest;
using checkpoint_internal::VerifyReason;
using checkpoint_internal::WithPrefix;

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

// Which map of LoadedCheckpoint a listed file's tensors go to: model.safetensors and
// model-rank-*.safetensors → model, optimizer*.safetensors → optimizer, state*.safetensors → extra.
std::map<std::string, Tensor>* TensorMapOf(const std::string& file, LoadedCheckpoint* out) {
  if (!file.ends_with(".safetensors")) return nullptr;
  if (file == kModel || file.starts_with("model-rank-")) return &out->model;
  if (file == kOptimizer || file.starts_with("optimizer-rank-")) return &out->optimizer;
  if (file == kState) return &out->extra;
  return nullptr;
}

}  // namespace

std::string CheckpointDirName(int64_t step) { return absl::StrFormat("step-%08d", step); }

absl::Status VerifyCheckpoint(const std::string& path) {
  return WithPrefix(VerifyReason(path, /*hash=*/true), path);
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

}  // namespace fam::io
