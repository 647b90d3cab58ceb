// The TransformerFAM model configuration (the `model:` section of a YAML config, FORMATS.md), with
// validation and the derived sizes (parameter count, FLOPs per token) that `fam info` prints.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "framework/backends/rope_spec.h"

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

// Gate activation of the gated feed-forward: SwiGLU (silu) or GeGLU with GELU's tanh form.
enum class FfnActivation { kSilu, kGeluTanh };
const char* FfnActivationName(FfnActivation activation);
bool ParseFfnActivation(const std::string& text, FfnActivation* activation);
const char* RopeScalingName(RopeScaling scaling);
bool ParseRopeScaling(const std::string& text, RopeScaling* scaling);

// Hugging Face families whose layout `fam export` writes (and `fam import` reads).
bool IsKnownFamily(const std::string& family);

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

  // Variants of the block that pretrained families use (all off: FORMATS.md's Llama block).
  std::string family = "llama";  // llama | mistral | qwen2 | gemma | gemma2 (export layout)
  FfnActivation activation = FfnActivation::kSilu;
  bool qkv_bias = false;          // biases on q/k/v projections (Qwen2; Llama attention_bias)
  bool o_bias = false;            // bias on the output projection (Llama attention_bias)
  bool mlp_bias = false;          // biases on gate/up/down (Llama mlp_bias)
  double norm_weight_offset = 0;  // RMSNorm scale is (offset + w): Gemma's 1
  bool embedding_scale = false;   // embeddings × sqrt(d_model) (Gemma)
  bool sandwich_norms = false;    // Gemma 2: RMSNorm after attention and after the FFN too
  double attn_softcap = 0;        // scores → cap·tanh(s / cap) (Gemma 2); 0 = off
  double final_softcap = 0;       // logits → cap·tanh(z / cap) (Gemma 2); 0 = off
  double query_scale_dim = 0;     // attention scale 1/sqrt(this); 0 = head_dim
  // RoPE rescaling of long-context checkpoints (Llama 3.1+: llama3; linear interpolation).
  RopeScaling rope_scaling = RopeScaling::kNone;
  double rope_factor = 1.0;           // linear, llama3
  double rope_low_freq_factor = 1.0;  // llama3
  double rope_high_freq_factor = 4.0;
  double rope_original_context = 8192.0;

  AttentionConfig attention;
  FamTrainingConfig training;

  // Checks ranges and consistency; the message names the offending key (e.g. "model.n_heads").
  absl::Status Validate() const;

  double attention_scale() const;  // 1/sqrt(query_scale_dim or head_dim)
  RopeSpec rope() const;           // rope_base and the rope_scaling keys
  int64_t fam_rows() const {
    return attention.type == AttentionType::kFam ? attention.fam_length : 0;
  }
  // Exact number of parameters (embeddings, layers, final norm, LM head unless tied, FAM prompt).
  int64_t ParameterCount() const;
  int64_t NonEmbeddingParameterCount() const;
  int64_t NormParameterCount() const;  // RMSNorm scales (per layer and final)
  int64_t BiasParameterCount() const;  // projection biases
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
