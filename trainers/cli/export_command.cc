// `fam export`: weights (a checkpoint or a safetensors file), optionally with LoRA adapters merged
// in, as one safetensors file in FORMATS.md (Hugging Face) names that `fam forward`, `fam import`
// (with --hf-config: config.json of the model's family) and transformers read.
//
// Sources: --weights <file>, or --checkpoint <dir> (a full checkpoint, or an adapter-only one
// whose trainer_state.json has a "lora" object of models/fam/lora.h metadata; then --weights
// gives the base). Adapters: --adapters <file> (models/fam/lora.h format) or such a checkpoint;
// they need --merge. The model config: --model, else <weights dir>/model.yaml, else the
// checkpoint's own config.yaml, else the run's config.yaml two levels above it.
#include <filesystem>
#include <iostream>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "framework/io/atomic_file.h"
#include "framework/io/checkpoint.h"
#include "framework/nn/named_tensors.h"
#include "models/fam/hf_import.h"
#include "models/fam/lora.h"
#include "models/fam/weights_io.h"
#include "trainers/cli/commands.h"
#include "trainers/train/portable_checkpoint.h"
#include "trainers/train/run_config.h"

namespace fam {
namespace {

namespace fs = std::filesystem;

absl::StatusOr<std::string> ModelConfigPath(const cli::Args& args) {
  if (args.Has("model")) return args.Get("model");
  std::error_code ec;
  std::vector<fs::path> candidates;
  if (args.Has("weights"))
    candidates.push_back(fs::path(args.Get("weights")).parent_path() / "model.yaml");
  for (const fs::path& p : candidates)
    if (fs::is_regular_file(p, ec)) return p.string();
  std::vector<std::string> tried;
  for (const fs::path& p : candidates) tried.push_back(p.string());
  if (args.Has("checkpoint")) {
    // The checkpoint's own config.yaml, or its run directory's
    // (trainers/train/portable_checkpoint.h).
    absl::StatusOr<std::string> run = CheckpointRunConfigPath(args.Get("checkpoint"));
    if (run.ok()) return *run;
    tried.push_back(absl::StrCat(args.Get("checkpoint"), "/", kCheckpointRunConfig));
  }
  return absl::InvalidArgumentError(absl::StrCat("fam export: no model config found (tried ",
                                                 absl::StrJoin(tried, ", "), "); pass --model"));
}

}  // namespace

Command ExportCommand() {
  Command c;
  c.name = "export";
  c.synopsis =
      "--checkpoint <dir>|--weights <file> [--adapters <file>] --out <model.safetensors> "
      "[--dtype bf16|f32] [--merge] [--model <model.yaml>] [--hf-config <config.json>]";
  c.summary = "weights (LoRA merged) as one safetensors file in Hugging Face names";
  c.flags = {
      {"checkpoint", "checkpoint directory (full, or adapter-only with --weights as base)"},
      {"weights", "safetensors weights (FORMATS.md names)"},
      {"adapters", "LoRA adapter safetensors written by fine-tuning"},
      {"out", "output safetensors file"},
      {"dtype", "stored dtype: f32 (default) or bf16"},
      {"merge", "merge the LoRA adapters into the weights", true},
      {"model", "model YAML (default: model.yaml next to --weights, or the checkpoint's config)"},
      {"hf-config",
       "also write a Hugging Face config.json here, in the model's family (model.family: llama, "
       "mistral, qwen2, gemma, gemma2)"}};
  c.run = [](const cli::Args& args) -> absl::Status {
    if (absl::Status s = args.Require({"out"}); !s.ok()) return s;
    if (!args.Has("checkpoint") && !args.Has("weights"))
      return absl::InvalidArgumentError("fam export: pass --checkpoint <dir> or --weights <file>");
    DType dtype = DType::kF32;
    if (args.Has("dtype")) {
      const std::string d = args.Get("dtype");
      if (d == "bf16")
        dtype = DType::kBF16;
      else if (d != "f32")
        return absl::InvalidArgumentError(
            absl::StrCat("fam export: --dtype expects bf16 or f32, got \"", d, "\""));
    }
    absl::StatusOr<std::string> config_path = ModelConfigPath(args);
    if (!config_path.ok()) return config_path.status();
    absl::StatusOr<ModelConfig> config = LoadModelConfig(*config_path);
    if (!config.ok()) return config.status();
    FamModel model(*config);

    if (args.Has("checkpoint")) {
      absl::StatusOr<io::LoadedCheckpoint> ckpt = io::LoadCheckpoint(args.Get("checkpoint"));
      if (!ckpt.ok()) return ckpt.status();
      if (ckpt->trainer_state.contains("lora")) {
        if (!args.Has("weights"))
          return absl::InvalidArgumentError(absl::StrCat(
              args.Get("checkpoint"), ": holds LoRA adapters only; pass --weights <base weights>"));
        if (args.Has("adapters"))
          return absl::InvalidArgumentError(absl::StrCat(
              "fam export: ", args.Get("checkpoint"), " holds adapters already; drop --adapters"));
        if (absl::Status s = LoadModelWeights(model, args.Get("weights")); !s.ok()) return s;
        std::map<std::string, std::string> meta;
        for (auto& [key, value] : ckpt->trainer_state.at("lora").items()) {
          if (!value.is_string())
            return absl::InvalidArgumentError(absl::StrCat(
                args.Get("checkpoint"), ": trainer_state lora.", key, " is not a string"));
          meta[key] = value.get<std::string>();
        }
        if (absl::Status s = LoadLoraTensors(model, ckpt->model, meta, args.Get("checkpoint"));
            !s.ok())
          return s;
      } else {
        if (args.Has("weights"))
          return absl::InvalidArgumentError(
              absl::StrCat("fam export: ", args.Get("checkpoint"),
                           " holds full weights; pass either --checkpoint or --weights"));
        if (absl::Status s =
                nn::CopyNamedTensors(model.NamedParameters(), ckpt->model, args.Get("checkpoint"));
            !s.ok())
          return s;
      }
    } else if (absl::Status s = LoadModelWeights(model, args.Get("weights")); !s.ok()) {
      return s;
    }
    if (args.Has("adapters")) {
      if (absl::Status s = LoadLoraAdapters(model, args.Get("adapters")); !s.ok()) return s;
    }
    if (HasLora(model)) {
      if (!args.GetBool("merge"))
        return absl::InvalidArgumentError(
            "fam export: the export has LoRA adapters; pass --merge to fold them into the weights");
      absl::Status merged = CatchToStatus([&] { MergeLora(model); });
      if (!merged.ok()) return merged;
      std::cout << "merged LoRA adapters into the weights\n";
    } else if (args.GetBool("merge")) {
      std::cout << "note: no adapters to merge\n";
    }
    // The HF config first: a model its family cannot express is refused before anything is
    // written.
    std::string hf_text;
    if (args.Has("hf-config")) {
      absl::StatusOr<nlohmann::json> hf = HfConfigJson(*config, dtype);
      if (!hf.ok()) return hf.status();
      hf_text = hf->dump(2) + "\n";
    }
    if (absl::Status s = SaveModelWeights(model, args.Get("out"), dtype); !s.ok()) return s;
    if (args.Has("hf-config")) {
      if (absl::Status s = io::WriteFileAtomic(args.Get("hf-config"), hf_text); !s.ok()) return s;
    }
    std::cout << "wrote " << args.Get("out") << " (" << model.NamedParameters().size()
              << " tensors, " << DTypeName(dtype) << ")\n";
    return absl::OkStatus();
  };
  return c;
}

}  // namespace fam
