#include "trainers/train/portable_checkpoint.h"

#include <filesystem>
#include <iostream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "framework/io/sha256.h"

namespace fam {
namespace fs = std::filesystem;

void AddRunFiles(const std::string& config_yaml, const std::string& config_hash,
                 const std::string& tokenizer_path, const std::string& tokenizer_bytes,
                 io::CheckpointData* data, const std::string& tokenizer_config_bytes) {
  data->files.emplace_back(kCheckpointRunConfig, config_yaml);
  data->manifest_extra["run_config"] = {{"file", kCheckpointRunConfig}, {"hash", config_hash}};
  if (tokenizer_bytes.empty()) return;
  const std::string extension = fs::path(tokenizer_path).extension().string();
  const bool is_json = extension == ".json" || tokenizer_bytes.front() == '{';
  const std::string file =
      is_json ? "tokenizer.json"
              : absl::StrCat("tokenizer", extension.empty() ? ".model" : extension);
  data->files.emplace_back(file, tokenizer_bytes);
  data->manifest_extra["tokenizer"] = {
      {"file", file}, {"source", tokenizer_path}, {"sha256", io::Sha256Hex(tokenizer_bytes)}};
  if (is_json && !tokenizer_config_bytes.empty()) {
    data->files.emplace_back(kTokenizerConfig, tokenizer_config_bytes);
    data->manifest_extra["tokenizer"]["config"] = kTokenizerConfig;
  }
}

absl::StatusOr<std::string> ResolveCheckpoint(const std::string& path) {
  std::error_code ec;
  const fs::path p(path);
  if (!fs::is_directory(p, ec)) return path;
  if (fs::exists(p / "manifest.json", ec)) return path;
  if (fs::is_directory(p / "checkpoints", ec))
    return ResolveCheckpoint((p / "checkpoints").string());
  io::CheckpointOptions options;
  options.dir = path;
  io::CheckpointManager manager(options);
  absl::StatusOr<std::string> latest = manager.LatestValid(
      [](const std::string& warning) { std::cerr << "warning: " << warning << "\n"; });
  if (absl::IsNotFound(latest.status())) {
    return absl::NotFoundError(absl::StrCat(
        path,
        ": no manifest.json and no valid checkpoint below it (expected a checkpoint, a "
        "checkpoints directory or a run directory)"));
  }
  return latest;
}

bool CheckpointHasRunConfig(const std::string& checkpoint) {
  std::error_code ec;
  return fs::is_regular_file(fs::path(checkpoint) / kCheckpointRunConfig, ec);
}

absl::StatusOr<std::string> CheckpointRunConfigPath(const std::string& checkpoint) {
  const fs::path own = fs::path(checkpoint) / kCheckpointRunConfig;
  if (CheckpointHasRunConfig(checkpoint)) return own.string();
  std::error_code ec;
  fs::path normal = fs::absolute(fs::path(checkpoint), ec).lexically_normal();
  if (!normal.has_filename()) normal = normal.parent_path();
  const fs::path run = normal.parent_path().parent_path() / "config.yaml";
  if (fs::is_regular_file(run, ec)) return run.string();
  return absl::NotFoundError(absl::StrCat(checkpoint, ": no run config (tried ", own.string(),
                                          " and ", run.string(), "); pass --run-config"));
}

std::string CheckpointTokenizerPath(const std::string& checkpoint) {
  absl::StatusOr<nlohmann::json> manifest = io::ReadCheckpointManifest(checkpoint);
  if (!manifest.ok() || !manifest->contains("tokenizer")) return "";
  const nlohmann::json& t = (*manifest)["tokenizer"];
  if (!t.is_object() || !t.contains("file") || !t["file"].is_string()) return "";
  const std::string file = t["file"].get<std::string>();
  // Only a file the manifest lists (and so verifies), never a path leaving the directory.
  if (!(*manifest)["files"].contains(file) || file.find('/') != std::string::npos) return "";
  return (fs::path(checkpoint) / file).string();
}

}  // namespace fam
