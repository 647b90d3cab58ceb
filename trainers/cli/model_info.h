// `fam info`: parameter counts, training FLOPs per token and the memory planner's one-replica
// estimate (trainers/train/memory_plan.h) for a model config at a batch size and sequence length.
#pragma once

#include <cstdint>
#include <string>

#include "models/fam/model_config.h"

namespace fam {

struct InfoOptions {
  int64_t batch = 1;          // sequences per forward (micro-batch)
  int64_t seq_len = 8192;
  bool bf16 = false;          // bf16 weights/activations with f32 master weights + Adam state
  bool adafactor = false;     // factored second moments instead of Adam's two full moments
};

// The human-readable report printed by `fam info`.
std::string ModelInfoReport(const ModelConfig& config, const InfoOptions& options);

}  // namespace fam
