// Fine-tuning setup for the training loop (`fam train`; the policies of
// trainers/train/model_setup.h): the model a run trains (fresh weights for pretraining; base
// weights + LoRA adapters for trainer.type finetune), the parameters the optimizer holds, the
// loader's loss-weight settings, and the model part of checkpoints — every parameter, or
// adapter-only with the base's fingerprint.
//
// The calls of the model-setup policies (trainers/train/model_setups.cc), in the loop's order:
//   model  = BuildModelForRun(config, &notes)                  // print notes
//   params = TrainableParameters(*model, config.optimizer)     // → optimizer, gradient reducer
//   loader_options.role_weights = LoaderRoleWeights(config)
//   lora_state = CheckpointLoraState(*model, config)           // once: hashes the base weights
//   resume:  RestoreModelCheckpoint(*model, loaded_checkpoint) // before the optimizer state
//   step:    SetLoraDropout(*model, true, seed, first sequence of the micro-batch)
//   eval:    SetLoraDropout(*model, false, 0, 0)
//   save:    FillModelCheckpoint(*model, lora_state, &data)   // after data.trainer_state is set
//   end:     SaveLoraAdapters(*model, <run>/adapters.safetensors, config.finetune.base_weights)
//
// Adapter-only checkpoints (models with LoRA adapters): model.safetensors holds only the tensors
// that train (the adapters, and model.fam.embeddings when lora.train_fam), and trainer_state.json
// holds "lora": LoraMetadata(model, finetune.base_weights) — the adapter settings and the base
// fingerprint (models/fam/lora.h). A resume loads the base again (BuildModelForRun) and
// RestoreModelCheckpoint checks its fingerprint against the recorded one before copying anything.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "framework/data/weight_shard.h"
#include "framework/io/checkpoint.h"
#include "framework/optim/optimizer.h"
#include "models/fam/model.h"
#include "nlohmann/json.hpp"
#include "trainers/train/run_config.h"

namespace fam {

// The model's parameters are in trainer.precision (f32, or bf16 for mixed precision).
// pretrain: FamModel(config.model), InitializeWeights(trainer.seed).
// finetune: FamModel(config.model), LoadBaseWeights(finetune.base_weights), AttachLora(lora:)
// (freezes the base), then LoadLoraAdapters(finetune.adapters) when set (its settings must match
// lora:, and its base fingerprint the loaded base). Errors name the file or key; `notes` receives
// lines worth printing (what was loaded, the FAM prompt's initialisation).
absl::StatusOr<std::unique_ptr<FamModel>> BuildModelForRun(
    const RunConfig& config, std::vector<std::string>* notes = nullptr);

// Loads base weights into a model without adapters from a safetensors file (FORMATS.md names) or
// a checkpoint (ResolveCheckpoint of trainers/train/portable_checkpoint.h; an adapter-only
// checkpoint is refused). Every parameter must be present with its shape, except
// model.fam.embeddings: a base without it (e.g. pretrained as BSWA or full attention, the paper's
// starting point) gets the FAM prompt initialised from the token embeddings of ids (vocab/2 + i)
// mod vocab, i < F (as `fam import` does), and a FAM prompt in the base of a model without FAM is
// ignored; both are reported in `notes`. Any other missing, unexpected, mis-shaped or non-floating
// tensor is an InvalidArgument listing them.
absl::Status LoadBaseWeights(FamModel& model, const std::string& path,
                             std::vector<std::string>* notes = nullptr);
// The same from tensors in memory (`source` names them in errors and notes): what
// LoadBaseWeights does once it has read the file.
absl::Status LoadBaseTensors(FamModel& model, const std::map<std::string, Tensor>& tensors,
                             const std::string& source, std::vector<std::string>* notes = nullptr);

// The parameters that require grad, in registration order (all of them in pretraining; adapters and
// the trained FAM prompt with LoRA), with pretraining's weight-decay rule: matrices decay; norm
// weights only with optimizer.decay_norms; embeddings, LM head and model.fam.embeddings only with
// optimizer.decay_embeddings. LoRA A/B are matrices.
std::vector<NamedParameter> TrainableParameters(const FamModel& model, const OptimizerConfig& o);

// finetune.loss_weights for the loader's role classes when trainer.type is finetune; unset
// otherwise (the weight shards' own weights apply).
std::optional<data::RoleWeights> LoaderRoleWeights(const RunConfig& config);

// What adapter-only checkpoints of this model record in trainer_state["lora"]: LoraMetadata(model,
// finetune.base_weights) as a JSON object of strings; null for a model without adapters (full
// checkpoints). Hashes every base value: compute it once, after BuildModelForRun.
nlohmann::json CheckpointLoraState(const FamModel& model, const RunConfig& config);

// Sets data->model (every parameter when lora_state is null; otherwise the trainable ones only)
// and adds trainer_state["lora"] = lora_state (adapter-only). Call after data->trainer_state is
// set.
void FillModelCheckpoint(const FamModel& model, const nlohmann::json& lora_state,
                         io::CheckpointData* data);

// Restores the model part of a checkpoint into a model from BuildModelForRun. Adapter-only: checks
// the base fingerprint (FailedPrecondition naming the checkpoint, the recorded base and this one),
// the adapter settings, and copies the trainable tensors. Full: copies every parameter (DataLoss
// for a missing tensor, FailedPrecondition for a changed shape). A LoRA run refuses a full
// checkpoint and the other way round (FailedPrecondition).
absl::Status RestoreModelCheckpoint(FamModel& model, const io::LoadedCheckpoint& checkpoint);

}  // namespace fam
