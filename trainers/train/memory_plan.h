// Per-GPU memory planner (`fam plan`, and the start check of `fam train`): how many bytes one rank
// of a data-parallel run needs, broken down into weights, master weights, gradients, optimizer
// state, activations, communication buffers and workspace, for a run config on N GPUs of a given
// memory; and a search over the settings that change it (ZeRO stage, activation recomputation,
// micro-batch with gradient accumulation keeping the global batch) for the cheapest one that fits.
// Pure arithmetic on the config: nothing is allocated. The formulas, each term derived from the
// model code, are written down in docs/memory.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "trainers/train/run_config.h"

namespace fam {

// One parameter tensor as the trainer would hold it (registration order of FamModel, adapters
// after their projection's weight). unit: 0 = embeddings, 1..n_layers = decoder layers,
// n_layers + 1 = final norm, FAM prompt and LM head; units 0 and n_layers + 1 together are the
// ZeRO-2/3 "root" unit (framework/dist/sharded_parameters.h).
struct PlannedParameter {
  std::string name;
  std::vector<int64_t> shape;
  bool trainable = true;
  int unit = 0;
  int64_t numel() const;
};

// The parameters of config.model (plus LoRA adapters when trainer.type is finetune, the base then
// frozen). InvalidArgument naming lora.targets for a pattern the planner does not understand.
absl::StatusOr<std::vector<PlannedParameter>> PlannedParameters(const RunConfig& config);

// The settings the planner varies.
struct PlanSettings {
  ZeroStage zero = ZeroStage::kNone;
  bool recompute = false;
  int64_t micro_batch = 1;
};

// Bytes on the most loaded rank.
struct MemoryBreakdown {
  double weights = 0;        // working copy (trainer.precision) of the parameters it holds
  double master = 0;         // f32 master copy of trainable parameters (bf16 runs only)
  double gradients = 0;      // gradients in the working precision
  double optimizer = 0;      // AdamW moments / Adafactor statistics, f32
  double activations = 0;    // saved for backward + the peak transient of backward
  double communication = 0;  // gradient bucket buffers (and ZeRO-1 shards)
  double workspace = 0;      // fixed allowance + allocator slack
  // Parts of `activations`, for the report.
  double activations_kept = 0;  // saved tensors alive at the start of backward (logits excluded)
  double activations_peak = 0;  // the larger of the LM head/CE backward and one layer's backward
  double total() const {
    return weights + master + gradients + optimizer + activations + communication + workspace;
  }
};

// Constants of the model (docs/memory.md).
inline constexpr double kWorkspaceFixedBytes = 1024.0 * 1024.0 * 1024.0;  // context, cuBLAS, NCCL
inline constexpr double kAllocatorSlack = 0.05;  // fraction of everything else
// The search prefers settings that leave this fraction of the budget free (the estimate is not
// exact): a suggestion at 99 % of the GPU is taken only when nothing leaves that margin.
inline constexpr double kSuggestionHeadroom = 0.10;

// The breakdown for run `config` on `gpus` ranks with `settings` (instead of the config's
// distributed.zero, trainer.recompute and trainer.micro_batch).
absl::StatusOr<MemoryBreakdown> EstimateMemory(const RunConfig& config, int gpus,
                                               const PlanSettings& settings);

// Saved activation bytes of one row (token or FAM row) of one decoder layer, without recompute.
// value_bytes: 2 (bf16) or 4 (f32); lora_values: adapter ranks summed over the layer's adapted
// projections (0 without LoRA).
double LayerActivationBytesPerRow(const ModelConfig& model, double value_bytes,
                                  int64_t lora_values);

struct PlanCandidate {
  PlanSettings settings;
  MemoryBreakdown memory;
  bool fits = false;
};

struct MemoryPlan {
  int gpus = 1;
  double budget_bytes = 0;
  PlanSettings configured;  // the config's own settings
  MemoryBreakdown configured_memory;
  bool configured_fits = false;
  // For each (recompute, zero stage) in cost order: the largest micro-batch within the headroom,
  // else the largest that fits, else micro-batch 1.
  std::vector<PlanCandidate> options;
  int suggestion = -1;  // index into options of the cheapest that fits; -1 = nothing fits
};

// Plans `config` on `gpus` GPUs of `budget_bytes` each. InvalidArgument when the global batch does
// not split over the GPUs or the config cannot be planned.
absl::StatusOr<MemoryPlan> PlanMemory(const RunConfig& config, int gpus, double budget_bytes);

// The `fam plan` table (GiB per component, the options and the suggestion).
std::string FormatMemoryPlan(const RunConfig& config, const MemoryPlan& plan);
// The same as one JSON object.
std::string MemoryPlanJson(const RunConfig& config, const MemoryPlan& plan);
// One line: "<total> GiB of <budget> GiB per GPU (settings)".
std::string PlanSummaryLine(const MemoryPlan& plan);
const char* PlannerZeroName(ZeroStage stage);  // "none", "zero1", ...

}  // namespace fam
