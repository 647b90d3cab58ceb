// `fam info`: parameter counts, training FLOPs per token and a memory estimate (weights, gradients,
// optimizer state, activations) for a model config at a batch size and sequence length.
#pragma once

#include <cstdint>
#include <string>

#include "models/fam/model_config.h"

namespace fam {

struct MemoryEstimate {
  double weights_bytes = 0;
  double gradients_bytes = 0;
  double optimizer_bytes = 0;
  double activations_bytes = 0;
  double total() const { return weights_bytes + gradients_bytes + optimizer_bytes + activations_bytes; }
};

struct InfoOptions {
  int64_t batch = 1;          // sequences per forward (micro-batch)
  int64_t seq_len = 8192;
  bool bf16 = false;          // bf16 weights/activations with f32 master weights + Adam state
  bool adafactor = false;     // factored second moments instead of Adam's two full moments
};

// Bytes of saved activations per token per layer for one training forward (what backward keeps).
double ActivationBytesPerTokenPerLayer(const ModelConfig& config, double bytes_per_value);
MemoryEstimate EstimateTrainingMemory(const ModelConfig& config, const InfoOptions& options);
// The human-readable report printed by `fam info`.
std::string ModelInfoReport(const ModelConfig& config, const InfoOptions& options);

}  // namespace fam
