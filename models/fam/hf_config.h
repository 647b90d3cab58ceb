// Hugging Face config.json ↔ ModelConfig for the families `fam import` and `fam export` handle:
// llama (Llama 2, Llama 3.x with rope_scaling llama3 or linear, attention_bias / mlp_bias),
// mistral, qwen2 (q/k/v biases), gemma ((1 + w) norms, embeddings × sqrt(d), GELU-tanh gate) and
// gemma2 (also sandwich norms, attention and final logit soft-capping, query_pre_attn_scalar).
// Both the transformers 4 keys (rope_theta, rope_scaling, torch_dtype) and the transformers 5 ones
// (rope_parameters, dtype) are read. A sliding window in the config (mistral, qwen2's
// use_sliding_window, gemma2's alternating layers) is reported in the notes and not applied: the
// imported model attends as its attention settings say (the two agree up to the window length).
// Anything that would change what the weights compute and is not understood is an error naming the
// key; other keys are listed in the notes.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "framework/core/dtype.h"
#include "models/fam/model_config.h"
#include "nlohmann/json.hpp"

namespace fam {

// The model config described by a HF config.json object; `source` names it in errors (one line
// naming the key). Notes (ignored keys, windows not applied) are appended to `notes` when given.
// The attention settings: `attention` when given, else the "famtrain_attention" object (written
// by HfConfigJson), else AttentionConfig's defaults.
absl::StatusOr<ModelConfig> ModelConfigFromHf(const nlohmann::json& hf, const std::string& source,
                                              const std::optional<AttentionConfig>& attention,
                                              std::vector<std::string>* notes = nullptr);

// A HF config.json of this model in its family's layout (config.family); `dtype` sets torch_dtype.
// The attention settings travel in "famtrain_attention" (ignored by HF, read back above). Fails,
// naming the key, when the config mixes features its family cannot express (e.g. a llama with
// norm_weight_offset 1).
absl::StatusOr<nlohmann::json> HfConfigJson(const ModelConfig& config, DType dtype = DType::kF32);

// The `model:` YAML section of a config (every architecture key; the family variants when they
// differ from the Llama block), with `comment` lines on top.
std::string ModelConfigYaml(const ModelConfig& config, const std::string& comment = "");

// Reads a JSON object from a file; errors name the path.
absl::StatusOr<nlohmann::json> ReadJsonObject(const std::string& path);

}  // namespace fam
