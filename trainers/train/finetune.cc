#include "trainers/train/finetune.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "framework/autograd/node.h"
#include "framework/io/safetensors.h"
#include "framework/nn/named_tensors.h"
#include "framework/ops/ops.h"
#include "models/fam/lora.h"
#include "trainers/train/portable_checkpoint.h"

namespace fam {
namespace {

namespace fs = std::filesystem;

constexpr char kFamPrompt[] = "model.fam.embeddings";

// Norm scales and projection biases follow optimizer.decay_norms; embeddings, the LM head and the
// FAM prompt follow decay_embeddings.
bool IsNormOrEmbedding(const std::string& name, bool* is_norm) {
  *is_norm = name.find("layernorm") != std::string::npos || name == "model.norm.weight" ||
             absl::EndsWith(name, ".bias");
  return *is_norm || name == "model.embed_tokens.weight" || name == "lm_head.weight" ||
         name == kFamPrompt;
}

void Note(std::vector<std::string>* notes, std::string line) {
  if (notes != nullptr) notes->push_back(std::move(line));
}

// The FAM prompt from the token embeddings of ids (vocab/2 + i) mod vocab (see LoadBaseWeights).
void InitFamPromptFromTokens(FamModel& model, std::vector<std::string>* notes) {
  NoGradGuard no_grad;
  Tensor prompt = model.FindParameter(kFamPrompt);
  Tensor table = model.FindParameter("model.embed_tokens.weight");
  const int64_t vocab = table.size(0), rows = prompt.size(0);
  const int64_t start = vocab / 2;
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t id = (start + i) % vocab;
    ops::CopyInPlace(ops::Slice(prompt, 0, i, i + 1), ops::Slice(table, 0, id, id + 1));
  }
  Note(notes, absl::StrCat(kFamPrompt, " is not in the base: initialised from the embeddings of ",
                           "token ids ", start, "..", start + rows - 1, " (mod ", vocab, ")"));
}

}  // namespace

absl::Status LoadBaseTensors(FamModel& model, const std::map<std::string, Tensor>& tensors,
                             const std::string& source, std::vector<std::string>* notes) {
  const bool has_prompt = model.FindParameter(kFamPrompt).defined();
  if (!has_prompt && tensors.count(kFamPrompt) > 0)
    Note(notes, absl::StrCat(source, ": ", kFamPrompt, " ignored (this model has no FAM)"));
  nn::CopyNamedTensorsOptions options;
  options.mismatch = "base weights do not match the model config";
  options.may_be_missing = {kFamPrompt};     // initialised from the token embeddings below
  options.may_be_unexpected = {kFamPrompt};  // a base with FAM for a model without
  options.require_floating = true;
  if (absl::Status s = nn::CopyNamedTensors(model.NamedParameters(), tensors, source, options);
      !s.ok())
    return s;
  if (has_prompt && tensors.count(kFamPrompt) == 0) InitFamPromptFromTokens(model, notes);
  return absl::OkStatus();
}

namespace {

absl::StatusOr<std::map<std::string, std::string>> LoraMetaFromJson(const nlohmann::json& j,
                                                                    const std::string& source) {
  if (!j.is_object()) {
    return absl::DataLossError(
        absl::StrCat(source, ": trainer_state.json \"lora\" is not an object"));
  }
  std::map<std::string, std::string> meta;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!it.value().is_string()) {
      return absl::DataLossError(
          absl::StrCat(source, ": trainer_state.json lora.", it.key(), " is not a string"));
    }
    meta[it.key()] = it.value().get<std::string>();
  }
  return meta;
}

}  // namespace

absl::Status LoadBaseWeights(FamModel& model, const std::string& path,
                             std::vector<std::string>* notes) {
  if (HasLora(model)) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": base weights must be loaded before the LoRA adapters are attached"));
  }
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    absl::StatusOr<std::string> dir = ResolveCheckpoint(path);
    if (!dir.ok()) return dir.status();
    absl::StatusOr<io::LoadedCheckpoint> checkpoint = io::LoadCheckpoint(*dir);
    if (!checkpoint.ok()) return checkpoint.status();
    if (checkpoint->trainer_state.is_object() && checkpoint->trainer_state.contains("lora")) {
      return absl::InvalidArgumentError(absl::StrCat(
          *dir,
          ": an adapter-only (LoRA) checkpoint holds no base weights; merge it first "
          "(`fam export --merge`) and use the merged safetensors as finetune.base_weights"));
    }
    Note(notes, absl::StrCat("base weights: checkpoint ", *dir, " (step ", checkpoint->step, ")"));
    return LoadBaseTensors(model, checkpoint->model, *dir, notes);
  }
  absl::StatusOr<std::unique_ptr<io::SafetensorsFile>> file = io::SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  std::map<std::string, Tensor> tensors;
  for (const std::string& name : (*file)->names()) {
    absl::StatusOr<Tensor> t = (*file)->Load(name);  // zero-copy view into the mapping
    if (!t.ok()) return t.status();
    tensors[name] = *t;
  }
  Note(notes, absl::StrCat("base weights: ", path, " (", tensors.size(), " tensors)"));
  return LoadBaseTensors(model, tensors, path, notes);
}

absl::StatusOr<std::unique_ptr<FamModel>> BuildModelForRun(const RunConfig& config,
                                                           std::vector<std::string>* notes) {
  std::unique_ptr<FamModel> model;
  // trainer.precision bf16: every parameter is held in bf16 from the start (initialised or loaded
  // into bf16, LoRA adapters created in their projection's dtype); the optimizer keeps f32 masters.
  absl::Status status = CatchToStatus(
      [&] { model = std::make_unique<FamModel>(config.model, config.trainer.precision); });
  if (!status.ok()) return status;
  if (config.trainer.type == TrainerType::kPretrain) {
    model->InitializeWeights(static_cast<uint64_t>(config.trainer.seed));
    return model;
  }
  if (config.finetune.base_weights.empty()) {
    return absl::InvalidArgumentError(
        "finetune.base_weights: required when trainer.type is finetune");
  }
  status = LoadBaseWeights(*model, config.finetune.base_weights, notes);
  if (!status.ok()) return status;
  absl::StatusOr<std::vector<std::string>> adapted = AttachLora(*model, config.lora);
  if (!adapted.ok()) return adapted.status();
  int64_t trainable = 0;
  for (auto& [name, t] : LoraTrainableParameters(*model)) trainable += t.numel();
  Note(notes, absl::StrCat("lora: rank ", config.lora.rank, ", alpha ", config.lora.alpha, " on ",
                           adapted->size(), " projections",
                           config.lora.train_fam && model->FindParameter(kFamPrompt).defined()
                               ? " + the FAM prompt"
                               : "",
                           ": ", trainable, " of ", model->ParameterCount(), " parameters train"));
  if (!config.finetune.adapters.empty()) {
    status = LoadLoraAdapters(*model, config.finetune.adapters);
    if (!status.ok()) return status;
    Note(notes, absl::StrCat("adapters: started from ", config.finetune.adapters));
  }
  return model;
}

std::vector<NamedParameter> TrainableParameters(const FamModel& model, const OptimizerConfig& o) {
  std::vector<NamedParameter> params;
  for (auto& [name, t] : model.NamedParameters()) {
    if (!t.requires_grad()) continue;
    bool is_norm = false;
    const bool special = IsNormOrEmbedding(name, &is_norm);
    const bool decay = !special || (is_norm ? o.decay_norms : o.decay_embeddings);
    params.push_back({name, t, decay});
  }
  return params;
}

std::optional<data::RoleWeights> LoaderRoleWeights(const RunConfig& config) {
  if (config.trainer.type != TrainerType::kFinetune) return std::nullopt;
  data::RoleWeights weights;
  weights.instruction = config.finetune.loss_weights.instruction;
  weights.answer = config.finetune.loss_weights.answer;
  weights.repeat = config.finetune.loss_weights.repeat;
  return weights;
}

nlohmann::json CheckpointLoraState(const FamModel& model, const RunConfig& config) {
  if (!HasLora(model)) return nullptr;
  nlohmann::json state = nlohmann::json::object();
  for (auto& [key, value] : LoraMetadata(model, config.finetune.base_weights)) state[key] = value;
  return state;
}

void FillModelCheckpoint(const FamModel& model, const nlohmann::json& lora_state,
                         io::CheckpointData* data) {
  if (lora_state.is_null()) {
    data->model = model.NamedParameters();
    return;
  }
  data->model = LoraTrainableParameters(model);
  if (!data->trainer_state.is_object()) data->trainer_state = nlohmann::json::object();
  data->trainer_state["lora"] = lora_state;
}

absl::Status RestoreModelCheckpoint(FamModel& model, const io::LoadedCheckpoint& checkpoint) {
  const std::string& path = checkpoint.path;
  const bool adapter_only =
      checkpoint.trainer_state.is_object() && checkpoint.trainer_state.contains("lora");
  if (HasLora(model) != adapter_only) {
    return absl::FailedPreconditionError(absl::StrCat(
        path, adapter_only
                  ? ": an adapter-only (LoRA) checkpoint, but this run trains the whole model "
                    "(trainer.type pretrain); resume it with trainer.type finetune"
                  : ": a full-model checkpoint, but this run trains LoRA adapters (trainer.type "
                    "finetune); start a new run name or give it as finetune.base_weights"));
  }
  if (adapter_only) {
    absl::StatusOr<std::map<std::string, std::string>> meta =
        LoraMetaFromJson(checkpoint.trainer_state.at("lora"), path);
    if (!meta.ok()) return meta.status();
    return LoadLoraTensors(model, checkpoint.model, *meta, path);
  }
  nn::CopyNamedTensorsOptions options;
  options.report = nn::CopyNamedTensorsOptions::Report::kFirst;
  options.allow_unexpected = true;
  return nn::CopyNamedTensors(model.NamedParameters(), checkpoint.model, path, options);
}

}  // namespace fam
