// Hugging Face interchange for TransformerFAM: import a HF Llama-architecture checkpoint directory
// (config.json + model.safetensors, or shards listed by model.safetensors.index.json) as our model
// YAML + weights, and describe one of our models as a HF Llama config.json (for `fam export`).
//
// Supported: model_type "llama" (LlamaForCausalLM) and "mistral" without a sliding window — both
// are exactly FORMATS.md's block (pre-RMSNorm, SwiGLU with silu, rotate-half RoPE, GQA, no
// biases), so HF weights keep their names and values. config.json keys read: hidden_size,
// intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads (default: heads),
// head_dim (default hidden_size / heads), rms_norm_eps (1e-6), rope_theta (10000), vocab_size,
// tie_word_embeddings (false), initializer_range (→ init_std, 0.02), hidden_act (must be silu).
// Refused with the key named: rope_scaling (any), attention_bias / mlp_bias true, sliding_window
// set, partial_rotary_factor ≠ 1, other hidden_act; and other architectures (Gemma: embeddings
// scaled by sqrt(hidden_size), GeGLU and (1 + w) norms; Qwen2: q/k/v biases; Phi-3: fused
// projections; …). Other keys are ignored and listed as notes. Weights in F32/BF16/F16; every
// expected tensor must be present with its FORMATS.md shape; rotary_emb.inv_freq buffers and a
// lm_head.weight of a tied model are ignored (noted); any other tensor is an error (e.g. biases).
//
// The FAM prompt (model.fam.embeddings, FAM_SPEC.md says only that it is learned) is initialised
// by default from the token embeddings of a fixed span of ids [start, start + F) (wrapping around
// the vocabulary; start defaults to vocab_size / 2, a run of ordinary word pieces away from the
// special and byte tokens at the start of SentencePiece vocabularies): rows that look like token
// inputs keep the pretrained layers in the regime they were trained in (norms, attention
// patterns), whereas N(0, init_std²) rows would be far smaller than typical embeddings. The
// alternative, kNormal, draws N(0, init_std²) from the same Philox stream FamModel::
// InitializeWeights uses for this tensor. Either way the prompt is meant to be fine-tuned
// (LoraConfig::train_fam). A checkpoint that stores model.fam.embeddings of the right shape (one
// written by `fam export`) keeps its own.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "framework/core/dtype.h"
#include "models/fam/model_config.h"
#include "nlohmann/json.hpp"

namespace fam {

enum class FamInit { kTokenSpan, kNormal };

struct HfImportOptions {
  // Attention of the imported model. Unset: the config.json's "famtrain_attention" object (written
  // by HfConfigJson) when present, else AttentionConfig's defaults (fam, B 1024, m 3, F 64).
  std::optional<AttentionConfig> attention;
  FamInit fam_init = FamInit::kTokenSpan;
  int64_t fam_init_start = -1;  // kTokenSpan: first id of the span; -1 = vocab_size / 2
  uint64_t seed = 0;            // kNormal
  // Stored dtype of the output weights; unset keeps every tensor's dtype (zero-copy) and stores
  // the FAM prompt as F32.
  std::optional<DType> dtype;
};

struct HfImportResult {
  ModelConfig config;
  std::string model_yaml;          // <out>/model.yaml
  std::string weights;             // <out>/model.safetensors
  std::vector<std::string> notes;  // ignored keys and tensors, copied tokenizer, FAM init
};

// The model config described by a HF config.json object; `source` names it in errors (one line
// naming the key). Ignored keys are appended to `notes` when given.
absl::StatusOr<ModelConfig> ModelConfigFromHf(const nlohmann::json& hf, const std::string& source,
                                              const std::optional<AttentionConfig>& attention,
                                              std::vector<std::string>* notes = nullptr);

// Reads <hf_dir>, checks everything, then writes <out_dir>/model.yaml (a `model:` section that
// `fam forward`/`fam train` load), <out_dir>/model.safetensors (FORMATS.md names, plus the FAM
// prompt for FAM models) and copies <hf_dir>/tokenizer.model when present. Nothing is written
// when a check fails.
absl::StatusOr<HfImportResult> ImportHfCheckpoint(const std::string& hf_dir,
                                                  const std::string& out_dir,
                                                  const HfImportOptions& options);

// The `model:` YAML section of a config (every architecture key), with `comment` lines on top.
std::string ModelConfigYaml(const ModelConfig& config, const std::string& comment = "");

// A HF LlamaForCausalLM config.json for this model; `dtype` sets torch_dtype. The attention
// settings travel in "famtrain_attention" (ignored by HF, read back by ModelConfigFromHf).
nlohmann::json HfConfigJson(const ModelConfig& config, DType dtype = DType::kF32);

}  // namespace fam
