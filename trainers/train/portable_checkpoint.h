// Checkpoints that work on their own, moved or shared without their run directory: the trainer
// copies the run config (config.yaml) and the tokenizer into every checkpoint and describes them
// in its manifest; `fam eval`, `export`, `generate` and `train --resume` look there first and fall
// back to the run directory two levels up for checkpoints written before they carried them.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "framework/io/checkpoint.h"

namespace fam {

inline constexpr char kCheckpointRunConfig[] = "config.yaml";

inline constexpr char kTokenizerConfig[] = "tokenizer_config.json";

// Adds the run config (its YAML text, as the run directory's config.yaml) and, when
// `tokenizer_bytes` is not empty, the tokenizer read from `tokenizer_path` to `data` as plain files
// (tokenizer.json for a Hugging Face tokenizer, else tokenizer.model or tokenizer.<its
// extension>), and to the manifest: "run_config" {file, hash} and "tokenizer" {file, source,
// sha256}. A tokenizer.json's tokenizer_config.json (its special tokens), when given, goes beside
// it and is named in "tokenizer" {config}.
void AddRunFiles(const std::string& config_yaml, const std::string& config_hash,
                 const std::string& tokenizer_path, const std::string& tokenizer_bytes,
                 io::CheckpointData* data, const std::string& tokenizer_config_bytes = "");

// The checkpoint `path` names: a checkpoint directory itself, or the newest valid checkpoint of
// a checkpoints directory or of a run directory (its checkpoints/). A path that is not a directory
// comes back as it is (loading it says what is wrong).
absl::StatusOr<std::string> ResolveCheckpoint(const std::string& path);

// The run config of a checkpoint directory: its own config.yaml, else (older checkpoints)
// config.yaml of the run directory two levels up; NotFound naming both places otherwise.
absl::StatusOr<std::string> CheckpointRunConfigPath(const std::string& checkpoint);
// True when the checkpoint carries its own config.yaml.
bool CheckpointHasRunConfig(const std::string& checkpoint);

// The checkpoint's own copy of its tokenizer; "" when it carries none.
std::string CheckpointTokenizerPath(const std::string& checkpoint);

}  // namespace fam
