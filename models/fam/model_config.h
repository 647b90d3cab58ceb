// The TransformerFAM model configuration (the `model:` section of a YAML config, FORMATS.md), with
// validation and the derived sizes (parameter count, FLOPs per token) that `fam info` prints.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace fam {

enum class AttentionType { kFull, kBswa, kFam };
const char* AttentionTypeName(AttentionType type);
bool ParseAttentionType(const std::string& text, AttentionType* type);

struct AttentionConfig {
  AttentionType type = AttentionType::kFam;
  int64_t block_size = 1024;    // B
  int64_t memory_segments = 3;  // m
  int64_t fam_length = 64;      // F (FAM only)
};

// Training-only tricks of FAM_SPEC.md §6 (both off in inference and in `fam forward`).
struct FamTrainingConfig {
  bool random_position_offset = true;
  double state_passing_prob = 0.8;  // Random State Passing probability; 0 disables it
};

struct ModelConfig {
  int64_t vocab_size = 256000;
  int64_t d_model = 1536;
  int64_t n_layers = 18;
  int64_t n_heads = 12;
  int64_t n_kv_heads = 12;
  int64_t head_dim = 128;
  int64_t ffn_dim = 12288;
  double norm_eps = 1e-6;
  double rope_base = 10000.0;
  bool tie_embeddings = false;
  double init_std = 0.02;  // N(0, init_std²) for weights; output projections scaled by 1/sqrt(2L)
  AttentionConfig attention;
  FamTrainingConfig training;

  // Checks ranges and consistency; the message names the offending key (e.g. "model.n_heads").
  absl::Status Validate() const;

  int64_t fam_rows() const {
    return attention.type == AttentionType::kFam ? attention.fam_length : 0;
  }
  // Exact number of parameters (embeddings, layers, final norm, LM head unless tied, FAM prompt).
  int64_t ParameterCount() const;
  int64_t NonEmbeddingParameterCount() const;
  // Training FLOPs per token (6·N_matmul + attention over the attended span, FAM rows included),
  // at sequence length seq_len: used for MFU.
  double TrainingFlopsPerToken(int64_t seq_len) const;
  // Average number of keys a token attends to at sequence length seq_len.
  double AttendedKeysPerToken(int64_t seq_len) const;
  // Refuses (InvalidArgument naming the keys that make it so big) a model whose parameters, at
  // `bytes_per_value` each, exceed `available_bytes` (e.g. HostMemoryBytes(); 0 = unknown: only
  // sizes beyond any address space are refused). `where` names the memory ("this machine's"),
  // `purpose` what the bytes are for (" to train (...)", or "").
  absl::Status CheckParametersFit(double bytes_per_value, double available_bytes,
                                  const std::string& where, const std::string& purpose = "") const;
};

}  // namespace fam
