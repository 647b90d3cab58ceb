// Fuzz targets of the config and checkpoint readers: run-config YAML (with base:/include: files
// and model presets), HF config.json → model config, and a checkpoint directory (manifest.json,
// trainer_state.json, model.safetensors).
#include <cctype>
#include <string>
#include <string_view>
#include <vector>

#include "framework/io/checkpoint_format.h"
#include "framework/io/sha256.h"
#include "fuzz/fuzz_target.h"
#include "fuzz/targets.h"
#include "models/fam/hf_config.h"
#include "nlohmann/json.hpp"
#include "trainers/train/run_config.h"
#include "trainers/train/trainer_progress.h"

namespace fam::fuzz {
namespace {

// The checkpoint in `dir`: loaded with its digests verified, and when it loads its trainer state
// read as a resume would.
void LoadCheckpointDir(const std::string& dir) {
  absl::StatusOr<io::LoadedCheckpoint> loaded = io::LoadCheckpoint(dir, /*verify=*/true);
  if (!loaded.ok()) return ExpectCleanError(loaded.status(), dir);
  absl::StatusOr<TrainerProgress> progress = ParseTrainerProgress(loaded->trainer_state, dir);
  if (!progress.ok()) return ExpectCleanError(progress.status(), "trainer_state.json");
  if (progress->step < 0 || progress->tokens_seen < 0 || progress->consecutive_skips < 0)
    Violation("a parsed trainer state has a negative counter");
}

// Letters, digits, '.', '_', '-', not only dots: a name the scratch folder can hold.
bool IsSimpleFileName(const std::string& name) {
  if (name.empty() || name.size() > 100 || name.find_first_not_of('.') == std::string::npos)
    return false;
  for (char c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-')
      return false;
  return true;
}

}  // namespace

void FuzzRunConfig(std::string_view input) {
  // run.yaml may inherit base.yaml and include extra.yaml (both beside it); the folder is the
  // target's own, so relative paths stay inside it.
  const std::vector<std::string_view> parts = SplitParts(input, 3);
  Scratch& scratch = Scratch::Get();
  const char* names[] = {"run.yaml", "base.yaml", "extra.yaml"};
  for (size_t i = 0; i < parts.size(); ++i) scratch.Write(names[i], parts[i]);
  const std::string path = scratch.dir() + "/run.yaml";
  absl::StatusOr<RunConfig> config = LoadRunConfig(path);
  if (!config.ok()) return ExpectCleanError(config.status(), "");
  // The resolved config written out must load back to the same YAML.
  const std::string yaml = RunConfigToYaml(*config);
  absl::StatusOr<RunConfig> again = ParseRunConfig(yaml, path);
  if (!again.ok())
    Violation(absl::StrCat("a resolved config does not load back: ", again.status().message()));
  if (RunConfigToYaml(*again) != yaml) Violation("a resolved config changes when loaded back");
}

void FuzzHfConfig(std::string_view input) {
  const std::string path = Scratch::Get().Write("config.json", input);
  absl::StatusOr<nlohmann::json> json = ReadJsonObject(path);
  if (!json.ok()) return ExpectCleanError(json.status(), "config.json");
  std::vector<std::string> notes;
  absl::StatusOr<ModelConfig> config = ModelConfigFromHf(*json, path, std::nullopt, &notes);
  if (!config.ok()) return ExpectCleanError(config.status(), "config.json");
  (void)ModelConfigYaml(*config);
  absl::StatusOr<nlohmann::json> exported = HfConfigJson(*config);
  if (!exported.ok()) return ExpectCleanError(exported.status(), "");
  // What export writes, import reads back as the same model.
  absl::StatusOr<ModelConfig> back = ModelConfigFromHf(*exported, "exported", std::nullopt);
  if (!back.ok())
    Violation(absl::StrCat("an exported config.json does not import: ", back.status().message()));
  if (ModelConfigYaml(*back) != ModelConfigYaml(*config))
    Violation("import → export → import changed the model config");
}

void FuzzCheckpoint(std::string_view input) {
  const std::vector<std::string_view> parts = SplitParts(input, 3);
  Scratch& scratch = Scratch::Get();
  const char* names[] = {"manifest.json", "trainer_state.json", "model.safetensors"};
  // As given: the manifest's sizes and digests are the input's own.
  for (size_t i = 0; i < parts.size(); ++i) scratch.Write(std::string("raw/") + names[i], parts[i]);
  LoadCheckpointDir(scratch.dir() + "/raw");
  // Consistent: the manifest's entries rewritten with the files' real sizes and digests, so the
  // loader goes on to the tensors and the trainer state.
  nlohmann::json manifest = nlohmann::json::parse(parts[0], nullptr, /*allow_exceptions=*/false);
  if (!manifest.is_object() || !manifest.contains("files") || !manifest["files"].is_object())
    return;
  for (auto& [name, entry] : manifest["files"].items()) {
    std::string_view bytes;
    for (size_t i = 1; i < parts.size(); ++i)
      if (name == names[i]) bytes = parts[i];
    if (!entry.is_object()) continue;
    entry["size"] = bytes.size();
    entry["sha256"] = io::Sha256Hex(bytes);
  }
  const std::string dir = scratch.dir() + "/step-00000007";
  for (size_t i = 1; i < parts.size(); ++i)
    scratch.Write("step-00000007/" + std::string(names[i]), parts[i]);
  for (const auto& [name, entry] : manifest["files"].items()) {
    bool known = false;
    for (size_t i = 1; i < parts.size(); ++i) known = known || name == names[i];
    if (!known && IsSimpleFileName(name) && name != "manifest.json")
      scratch.Write("step-00000007/" + name, "");
  }
  scratch.Write("step-00000007/manifest.json", manifest.dump());
  LoadCheckpointDir(dir);
}

}  // namespace fam::fuzz
