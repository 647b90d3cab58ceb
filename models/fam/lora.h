// LoRA fine-tuning of a FamModel (FAM_SPEC.md §7: rank-64 adapters on all attention and
// feed-forward projections plus the FAM prompt, base frozen): attach adapters to projections chosen
// by name patterns, freeze the base, list what trains, merge adapters into the base weights, and
// save/load adapter-only safetensors that record which base they belong to.
//
// Tensor names: an adapter of model.layers.0.self_attn.q_proj adds the parameters
//   model.layers.0.self_attn.q_proj.lora_A.weight  [r, in]
//   model.layers.0.self_attn.q_proj.lora_B.weight  [out, r]
// to FamModel::NamedParameters() (PEFT's names without its "base_model.model." prefix).
//
// How a fine-tuning trainer uses this (the finetune integration is built on this API):
//   FamModel model(config);  LoadModelWeights(model, base);      // base first, adapters after
//   AttachLora(model, lora);                                     // freezes the base
//   params = LoraTrainableParameters(model);                     // → optimizer (no state for W)
//   per step: SetLoraDropout(model, true, seed, step * world + rank); forward/backward/step
//   eval: SetLoraDropout(model, false, 0, 0)
//   checkpoint: CheckpointData.model = LoraTrainableParameters(model) (adapter-only) and
//               trainer_state["lora"] = LoraMetadata(model, base_path) (a JSON object of strings;
//               it hashes every base value, so compute it once after AttachLora and reuse it:
//               the base is frozen);
//               resume: a fresh model + base weights, then LoadLoraTensors(model, ckpt.model,
//               trainer_state["lora"], path) — it attaches the adapters and checks the base.
//   final: SaveLoraAdapters(model, "adapters.safetensors", base_path); `fam export --merge`.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "framework/nn/lora.h"
#include "models/fam/model.h"

namespace fam {

// Proposed `lora:` section of the run config; the keys carry these names.
struct LoraConfig {
  int64_t rank = 64;     // paper: 64
  double alpha = 64.0;   // scale s = alpha / rank (1 by default)
  double dropout = 0.0;  // adapter-input dropout while training
  // Which projections get adapters. Each pattern is a glob ('*' any text, dots included; '?' one
  // character) matched against the projection's full name (model.layers.3.mlp.up_proj) or any of
  // its dot-aligned suffixes ("q_proj", "mlp.up_proj", "layers.3.*"); or one of the groups
  // "attention" (q/k/v/o_proj), "mlp" (gate/up/down_proj), "all" (both). Candidates are the seven
  // projections of every layer; a pattern that matches none is an error naming it.
  std::vector<std::string> targets = {"attention", "mlp"};
  bool train_fam = true;  // model.fam.embeddings trains too (FAM models); otherwise it is frozen
  uint64_t seed = 0;      // seed of the adapters' initial A
  nn::LoraOptions options() const { return {rank, alpha, dropout}; }
};

// Attaches adapters to the matching projections, freezes every other parameter (requires_grad
// false) except model.fam.embeddings when train_fam. A of projection `name` is drawn from the
// Philox stream keyed by `name` under config.seed. Returns the adapted module names in order.
// InvalidArgument naming the key (lora.rank, lora.alpha, lora.dropout, lora.targets pattern) for
// bad settings; FailedPrecondition when the model has adapters already. On error the model is
// unchanged.
absl::StatusOr<std::vector<std::string>> AttachLora(FamModel& model, const LoraConfig& config);

bool HasLora(const FamModel& model);
// Whether a parameter name is an adapter tensor (ends in .lora_A.weight or .lora_B.weight).
bool IsLoraParameterName(const std::string& name);
// The LoRA settings of the attached adapters (those given to AttachLora).
LoraConfig AttachedLoraConfig(const FamModel& model);

// The parameters that require grad, in registration order: after AttachLora, the adapters and
// (train_fam) model.fam.embeddings. These are what an optimizer should hold.
std::vector<std::pair<std::string, Tensor>> LoraTrainableParameters(const FamModel& model);

// Switches adapter-input dropout on (training, masks keyed by (seed, key)) or off, on every
// adapter.
void SetLoraDropout(FamModel& model, bool training, uint64_t seed, uint64_t key);

// Folds every adapter into its projection's weight (W + s·B·A, in W's dtype), removes the adapters
// and makes every parameter require grad again: the model is a plain FamModel whose
// NamedParameters() are the FORMATS.md names. No-op without adapters.
void MergeLora(FamModel& model);

// Identity of the base weights an adapter belongs to: the parameters that are not adapters and
// are not stored with the adapters (model.fam.embeddings when it trains), in name order.
// layout: hash of names and shapes; content: hash of every value rounded to bf16 (so the same base
// stored as F32 or BF16 matches, and any real change of a weight does not). 16 hex digits each.
struct BaseFingerprint {
  std::string layout, content;
  int64_t tensors = 0, elements = 0;
};
BaseFingerprint FingerprintBase(const FamModel& model, const std::set<std::string>& exclude);

// The adapter file's metadata (all strings): format, lora.rank, lora.alpha, lora.dropout,
// lora.targets (comma-joined), lora.train_fam, lora.seed, base.layout, base.content, base.tensors,
// base.elements, and base.label (free text naming the base, e.g. its path) when given.
std::map<std::string, std::string> LoraMetadata(const FamModel& model,
                                                const std::string& base_label = "");
// The LoRA settings recorded in such metadata; errors name `source` and the key.
absl::StatusOr<LoraConfig> LoraConfigFromMetadata(const std::map<std::string, std::string>& meta,
                                                  const std::string& source);

// Writes LoraTrainableParameters(model) with LoraMetadata as safetensors (atomically). `tensors`,
// when given, replaces those values (same names; e.g. the f32 master copies of a bf16 run).
absl::Status SaveLoraAdapters(const FamModel& model, const std::string& path,
                              const std::string& base_label = "",
                              const std::vector<std::pair<std::string, Tensor>>* tensors = nullptr);
// Loads an adapter file into a model that holds the base weights: checks the base fingerprint
// (FailedPrecondition naming the file, the recorded base label/fingerprint and this model's),
// attaches adapters from the recorded settings when the model has none (otherwise the attached
// ones must have the same settings), and copies the adapter tensors (and model.fam.embeddings when
// stored). Missing, unexpected, mis-shaped or non-floating tensors are named.
absl::Status LoadLoraAdapters(FamModel& model, const std::string& path);
// The same from tensors and metadata already in memory (e.g. an adapter-only checkpoint).
absl::Status LoadLoraTensors(FamModel& model, const std::map<std::string, Tensor>& tensors,
                             const std::map<std::string, std::string>& meta,
                             const std::string& source);

}  // namespace fam
