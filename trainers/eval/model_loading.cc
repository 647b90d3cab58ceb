#include <filesystem>
#include <memory>

#include "absl/strings/str_cat.h"
#include "framework/backends/registry.h"
#include "framework/core/error.h"
#include "framework/data/loader.h"
#include "framework/data/tokenizer.h"
#include "framework/io/checkpoint.h"
#include "framework/nn/named_tensors.h"
#include "models/fam/weights_io.h"
#include "trainers/eval/eval_internal.h"
#include "trainers/eval/evaluate.h"
#include "trainers/train/portable_checkpoint.h"

namespace fam::eval {
namespace {

namespace fs = std::filesystem;
using eval_internal::Exists;

}  // namespace

absl::StatusOr<LoadedModel> LoadModelForEval(const ModelSource& source) {
  const bool from_checkpoint = !source.checkpoint.empty();
  const bool from_weights = !source.model.empty() || !source.weights.empty();
  if (from_checkpoint == from_weights)
    return absl::InvalidArgumentError(
        "give either --checkpoint <dir> or --model <model.yaml> --weights <file.safetensors>");
  if (from_weights && (source.model.empty() || source.weights.empty()))
    return absl::InvalidArgumentError("--model and --weights go together");
  LoadedModel out;
  ModelConfig config;
  std::string checkpoint;
  if (from_checkpoint) {
    absl::StatusOr<std::string> dir = ResolveCheckpoint(source.checkpoint);
    if (!dir.ok()) return dir.status();
    checkpoint = *dir;
    fs::path normal = fs::absolute(fs::path(checkpoint)).lexically_normal();
    if (!normal.has_filename()) normal = normal.parent_path();
    out.run_dir = normal.parent_path().parent_path().string();
    std::string run_config = source.run_config;
    if (run_config.empty()) {
      // The checkpoint's own config.yaml, or the run directory's
      // (trainers/train/portable_checkpoint.h).
      absl::StatusOr<std::string> found = CheckpointRunConfigPath(checkpoint);
      if (!found.ok() && Exists(normal / "manifest.json")) return found.status();
      if (found.ok()) run_config = *found;
      out.portable = CheckpointHasRunConfig(checkpoint);
    }
    // A missing manifest is reported by LoadCheckpoint below, naming the checkpoint.
    if (Exists(run_config)) {
      absl::StatusOr<RunConfig> run = LoadRunConfig(run_config);
      if (!run.ok()) return run.status();
      out.run = *std::move(run);
      config = out.run->model;
    }
  } else {
    if (!source.run_config.empty()) {
      absl::StatusOr<RunConfig> run = LoadRunConfig(source.run_config);
      if (!run.ok()) return run.status();
      out.run = *std::move(run);
    }
    absl::StatusOr<ModelConfig> model = LoadModelConfig(source.model);
    if (!model.ok()) return model.status();
    config = *model;
  }

  if (from_checkpoint) {
    absl::StatusOr<io::LoadedCheckpoint> ckpt = io::LoadCheckpoint(checkpoint);
    if (!ckpt.ok()) return ckpt.status();
    if (!out.run)
      return absl::NotFoundError(
          absl::StrCat(checkpoint, ": no run config found; pass --run-config <config.yaml>"));
    if (!ckpt->config_hash.empty() && ckpt->config_hash != ModelConfigHash(config))
      return absl::FailedPreconditionError(
          absl::StrCat(checkpoint, ": the checkpoint was written for another model config (hash ",
                       ckpt->config_hash, ", the run config gives ", ModelConfigHash(config), ")"));
    absl::Status s = CatchToStatus([&] { out.model = std::make_unique<FamModel>(config); });
    if (!s.ok()) return s;
    nn::CopyNamedTensorsOptions options;
    options.report = nn::CopyNamedTensorsOptions::Report::kFirst;
    options.allow_unexpected = true;
    s = nn::CopyNamedTensors(out.model->NamedParameters(), ckpt->model, checkpoint, options);
    if (!s.ok()) return s;
    out.step = ckpt->step;
    out.checkpoint = checkpoint;
  } else {
    absl::Status s = CatchToStatus([&] { out.model = std::make_unique<FamModel>(config); });
    if (!s.ok()) return s;
    if (absl::Status w = LoadModelWeights(*out.model, source.weights); !w.ok()) return w;
    out.checkpoint = source.weights;
  }
  if (!source.device.is_cpu()) {
    std::string why;
    if (!DeviceAvailable(source.device, &why))
      return absl::FailedPreconditionError(
          absl::StrCat("--device ", source.device.ToString(), ": unavailable: ", why));
    absl::Status moved = CatchToStatus([&] { out.model->To(source.device); });
    if (!moved.ok()) return moved;
  }
  // The tokenizer the checkpoint carries is the one it was trained with: it wins over the run
  // config's path (which may not exist where the checkpoint was moved).
  const std::string carried = checkpoint.empty() ? "" : CheckpointTokenizerPath(checkpoint);
  // Weights without a run config (e.g. from `fam import`): the tokenizer beside them, if any.
  const std::string beside =
      from_weights && !out.run
          ? data::FindTokenizerFile(std::filesystem::path(source.weights).parent_path().string())
          : "";
  out.tokenizer = !source.tokenizer.empty() ? source.tokenizer
                  : !carried.empty()        ? carried
                  : out.run                 ? out.run->data.tokenizer
                                            : beside;
  out.val = !source.val.empty() ? source.val : out.run ? out.run->data.val : "";
  if (source.val.empty() && out.portable && !out.val.empty() &&
      !data::ExpandShardGlob(out.val).ok()) {
    // A checkpoint moved without its data: evaluate what needs no validation shards.
    out.notes.push_back(absl::StrCat("the run's data.val (", out.val,
                                     ") is not here: validation skipped (pass --val)"));
    out.val.clear();
  }
  return out;
}

}  // namespace fam::eval
