// Hugging Face checkpoint import: a HF checkpoint directory (config.json + model.safetensors, or
// shards listed by model.safetensors.index.json) of a family hf_config.h reads becomes our model
// YAML + weights. HF tensor names are FORMATS.md's (plus .bias tensors and Gemma 2's
// pre_/post_feedforward_layernorm where the family has them), so weights keep names and values.
// Weights in F32/BF16/F16; every expected tensor must be present with its shape;
// rotary_emb.inv_freq buffers and a lm_head.weight of a tied model are ignored (noted); any other
// tensor is an error. The tokenizer the model loads (data::FindTokenizerFile: tokenizer.json with
// its tokenizer_config.json, else tokenizer.model) is copied next to the weights.
//
// The FAM prompt (model.fam.embeddings, FAM_SPEC.md says only that it is learned) is initialised
// by default from the token embeddings of a fixed span of ids [start, start + F) (wrapping around
// the vocabulary; start defaults to vocab_size / 2, a run of ordinary word pieces away from the
// special and byte tokens at the start of most vocabularies), scaled like the model's input
// embeddings: rows that look like token inputs keep the pretrained layers in the regime they were
// trained in (norms, attention patterns), whereas N(0, init_std²) rows would be far smaller than
// typical embeddings. The alternative, kNormal, draws N(0, init_std²) from the same Philox stream
// FamModel::InitializeWeights uses for this tensor. Either way the prompt is meant to be
// fine-tuned (LoraConfig::train_fam). A checkpoint that stores model.fam.embeddings of the right
// shape (one written by `fam export`) keeps its own.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "framework/core/dtype.h"
#include "framework/core/tensor.h"
#include "models/fam/hf_config.h"
#include "models/fam/model_config.h"

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

// Reads <hf_dir>, checks everything, then writes <out_dir>/model.yaml (a `model:` section that
// `fam forward`/`fam train` load), <out_dir>/model.safetensors (FORMATS.md names, plus the FAM
// prompt for FAM models) and copies the tokenizer (data::CopyTokenizer). Nothing is written
// when a check fails.
absl::StatusOr<HfImportResult> ImportHfCheckpoint(const std::string& hf_dir,
                                                  const std::string& out_dir,
                                                  const HfImportOptions& options);

// The common end of an import (HF or GGUF): adds the FAM prompt (HfImportOptions; unless `tensors`
// holds one), then writes <out_dir>/model.safetensors (`source` in its metadata) and
// <out_dir>/model.yaml (`description` in its comment). Fills result's config, paths and notes.
absl::Status WriteImportedModel(const ModelConfig& config,
                                std::vector<std::pair<std::string, Tensor>> tensors,
                                const std::string& source, const std::string& description,
                                const std::string& out_dir, const HfImportOptions& options,
                                HfImportResult* result);

}  // namespace fam
