#include "models/fam/model_config.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "framework/core/host_memory.h"

namespace fam {

const char* AttentionTypeName(AttentionType type) {
  switch (type) {
    case AttentionType::kFull:
      return "full";
    case AttentionType::kBswa:
      return "bswa";
    case AttentionType::kFam:
      return "fam";
  }
  return "?";
}

bool ParseAttentionType(const std::string& text, AttentionType* type) {
  if (text == "full")
    *type = AttentionType::kFull;
  else if (text == "bswa")
    *type = AttentionType::kBswa;
  else if (text == "fam")
    *type = AttentionType::kFam;
  else
    return false;
  return true;
}

const char* FfnActivationName(FfnActivation activation) {
  return activation == FfnActivation::kGeluTanh ? "gelu_tanh" : "silu";
}

bool ParseFfnActivation(const std::string& text, FfnActivation* activation) {
  if (text == "silu")
    *activation = FfnActivation::kSilu;
  else if (text == "gelu_tanh")
    *activation = FfnActivation::kGeluTanh;
  else
    return false;
  return true;
}

const char* RopeScalingName(RopeScaling scaling) {
  switch (scaling) {
    case RopeScaling::kNone:
      return "none";
    case RopeScaling::kLinear:
      return "linear";
    case RopeScaling::kLlama3:
      return "llama3";
  }
  return "?";
}

bool ParseRopeScaling(const std::string& text, RopeScaling* scaling) {
  for (RopeScaling s : {RopeScaling::kNone, RopeScaling::kLinear, RopeScaling::kLlama3}) {
    if (text == RopeScalingName(s)) {
      *scaling = s;
      return true;
    }
  }
  return false;
}

bool IsKnownFamily(const std::string& family) {
  return family == "llama" || family == "mistral" || family == "qwen2" || family == "gemma" ||
         family == "gemma2";
}

double ModelConfig::attention_scale() const {
  return 1.0 / std::sqrt(query_scale_dim > 0 ? query_scale_dim : static_cast<double>(head_dim));
}

RopeSpec ModelConfig::rope() const {
  RopeSpec r;
  r.base = rope_base;
  r.scaling = rope_scaling;
  r.factor = rope_factor;
  r.low_freq_factor = rope_low_freq_factor;
  r.high_freq_factor = rope_high_freq_factor;
  r.original_context = rope_original_context;
  return r;
}

absl::Status ModelConfig::Validate() const {
  auto bad = [](const char* key, const auto&... why) {
    return absl::InvalidArgumentError(absl::StrCat("model.", key, ": ", why...));
  };
  if (vocab_size < 2) return bad("vocab_size", "must be at least 2, got ", vocab_size);
  if (d_model < 1) return bad("d_model", "must be positive, got ", d_model);
  if (n_layers < 1) return bad("n_layers", "must be positive, got ", n_layers);
  if (n_heads < 1) return bad("n_heads", "must be positive, got ", n_heads);
  if (n_kv_heads < 1 || n_kv_heads > n_heads || n_heads % n_kv_heads != 0)
    return bad("n_kv_heads", "must divide n_heads (", n_heads, "), got ", n_kv_heads);
  if (head_dim < 2 || head_dim % 2 != 0)
    return bad("head_dim", "must be even and positive (RoPE rotates halves), got ", head_dim);
  if (ffn_dim < 1) return bad("ffn_dim", "must be positive, got ", ffn_dim);
  if (!(norm_eps > 0)) return bad("norm_eps", "must be positive, got ", norm_eps);
  if (!(rope_base > 1)) return bad("rope_base", "must be > 1, got ", rope_base);
  if (!(init_std > 0)) return bad("init_std", "must be positive, got ", init_std);
  if (!IsKnownFamily(family))
    return bad("family", "expected llama, mistral, qwen2, gemma or gemma2, got \"", family, "\"");
  if (!std::isfinite(norm_weight_offset))
    return bad("norm_weight_offset", "must be finite, got ", norm_weight_offset);
  if (!(attn_softcap >= 0) || !std::isfinite(attn_softcap))
    return bad("attn_softcap", "must be >= 0 (0 = off), got ", attn_softcap);
  if (!(final_softcap >= 0) || !std::isfinite(final_softcap))
    return bad("final_softcap", "must be >= 0 (0 = off), got ", final_softcap);
  if (!(query_scale_dim >= 0) || !std::isfinite(query_scale_dim))
    return bad("query_scale_dim", "must be >= 0 (0 = head_dim), got ", query_scale_dim);
  if (rope_scaling != RopeScaling::kNone && !(rope_factor > 0))
    return bad("rope_scaling.factor", "must be positive, got ", rope_factor);
  if (rope_scaling == RopeScaling::kLlama3) {
    if (!(rope_low_freq_factor > 0))
      return bad("rope_scaling.low_freq_factor", "must be positive, got ", rope_low_freq_factor);
    if (!(rope_high_freq_factor > rope_low_freq_factor))
      return bad("rope_scaling.high_freq_factor", "must exceed low_freq_factor (",
                 rope_low_freq_factor, "), got ", rope_high_freq_factor);
    if (!(rope_original_context > 0))
      return bad("rope_scaling.original_context", "must be positive, got ", rope_original_context);
  }
  if (attention.type != AttentionType::kFull) {
    if (attention.block_size < 1)
      return bad("attention.block_size", "must be positive, got ", attention.block_size);
    if (attention.memory_segments < 0)
      return bad("attention.memory_segments", "must be >= 0, got ", attention.memory_segments);
  }
  if (attention.type == AttentionType::kFam && attention.fam_length < 0)
    return bad("attention.fam_length", "must be >= 0, got ", attention.fam_length);
  if (training.state_passing_prob < 0 || training.state_passing_prob > 1)
    return bad("training.state_passing_prob", "must be in [0, 1], got ",
               training.state_passing_prob);
  // Sizes whose element counts would overflow (whatever the memory).
  return CheckParametersFit(1, 0, "");
}

absl::Status ModelConfig::CheckParametersFit(double bytes_per_value, double available_bytes,
                                             const std::string& where,
                                             const std::string& purpose) const {
  // In doubles: a config this check is for overflows int64 element counts.
  const double d = static_cast<double>(d_model), layers = static_cast<double>(n_layers);
  const double q = static_cast<double>(n_heads) * static_cast<double>(head_dim);
  const double kv = static_cast<double>(n_kv_heads) * static_cast<double>(head_dim);
  struct Group {
    std::string what;  // the tensors and the keys that size them
    double values;
  };
  const double embed = static_cast<double>(vocab_size) * d;
  const std::vector<Group> groups = {
      {absl::StrCat("the token embeddings (model.vocab_size ", vocab_size, " x model.d_model ",
                    d_model, ")"),
       embed},
      {absl::StrCat("the LM head (model.vocab_size ", vocab_size, " x model.d_model ", d_model,
                    "; model.tie_embeddings false)"),
       tie_embeddings ? 0 : embed},
      {absl::StrCat("the attention projections (model.n_layers ", n_layers, " x model.d_model ",
                    d_model, " x (2 x model.n_heads ", n_heads, " + 2 x model.n_kv_heads ",
                    n_kv_heads, ") x model.head_dim ", head_dim, ")"),
       layers * d * (2 * q + 2 * kv)},
      {absl::StrCat("the feed-forward layers (model.n_layers ", n_layers, " x 3 x model.d_model ",
                    d_model, " x model.ffn_dim ", ffn_dim, ")"),
       layers * 3 * d * static_cast<double>(ffn_dim)},
      {absl::StrCat("the FAM prompt (model.attention.fam_length ", fam_rows(), " x model.d_model ",
                    d_model, ")"),
       static_cast<double>(fam_rows()) * d}};
  double total = layers * (sandwich_norms ? 4 : 2) * d + d;  // norms (biases are smaller)
  const Group* largest = &groups[0];
  for (const Group& g : groups) {
    total += g.values;
    if (g.values > largest->values) largest = &g;
  }
  const double bytes = total * bytes_per_value;
  // Element counts must stay far inside int64 whatever the memory (shapes, offsets, FLOPs).
  constexpr double kMaxValues = 4.0e18;
  const bool too_many = total > kMaxValues || largest->values > kMaxValues;
  if (!too_many && (available_bytes <= 0 || bytes <= available_bytes)) return absl::OkStatus();
  std::string limit = too_many ? "more than any machine can address"
                               : absl::StrCat("more than ", where, " ",
                                              FormatByteSize(available_bytes), " of memory");
  return absl::InvalidArgumentError(
      absl::StrCat("the model's ", absl::StrFormat("%.4g", total), " parameters need ",
                   FormatByteSize(bytes), purpose, ", ", limit, "; the largest part is ",
                   largest->what, ": ", FormatByteSize(largest->values * bytes_per_value)));
}

int64_t ModelConfig::NormParameterCount() const {
  return n_layers * (sandwich_norms ? 4 : 2) * d_model + d_model /*final norm*/;
}

int64_t ModelConfig::BiasParameterCount() const {
  const int64_t q = n_heads * head_dim, kv = n_kv_heads * head_dim;
  return n_layers * ((qkv_bias ? q + 2 * kv : 0) + (o_bias ? d_model : 0) +
                     (mlp_bias ? 2 * ffn_dim + d_model : 0));
}

int64_t ModelConfig::NonEmbeddingParameterCount() const {
  const int64_t q = n_heads * head_dim, kv = n_kv_heads * head_dim;
  const int64_t attn = d_model * q + 2 * d_model * kv + q * d_model;
  const int64_t ffn = 3 * d_model * ffn_dim;
  return n_layers * (attn + ffn) + NormParameterCount() + BiasParameterCount() +
         fam_rows() * d_model;
}

int64_t ModelConfig::ParameterCount() const {
  const int64_t embed = vocab_size * d_model;
  return NonEmbeddingParameterCount() + embed + (tie_embeddings ? 0 : embed);
}

double ModelConfig::AttendedKeysPerToken(int64_t seq_len) const {
  double total = 0;
  if (attention.type == AttentionType::kFull) {
    return (static_cast<double>(seq_len) + 1) / 2;
  }
  const int64_t b = attention.block_size, m = attention.memory_segments, f = fam_rows();
  for (int64_t start = 0, tau = 0; start < seq_len; start += b, ++tau) {
    const int64_t n = std::min(b, seq_len - start);
    const int64_t memory = std::min(tau, m) * b;
    total += n * (memory + f) + n * (n + 1) / 2.0;  // block tokens
    total += f * (f + n);                           // FAM rows (counted per token below)
  }
  return total / static_cast<double>(seq_len);
}

double ModelConfig::TrainingFlopsPerToken(int64_t seq_len) const {
  const int64_t embed_head = vocab_size * d_model;  // LM head matmul
  const int64_t not_matmul = fam_rows() * d_model + NormParameterCount() + BiasParameterCount();
  double matmul_params =
      static_cast<double>(NonEmbeddingParameterCount() - not_matmul + embed_head);
  // FAM rows go through every layer's projections and FFN as extra rows: F/B more per token.
  double extra_rows = 0;
  if (fam_rows() > 0) extra_rows = static_cast<double>(fam_rows()) / attention.block_size;
  double per_layer_linear =
      static_cast<double>(NonEmbeddingParameterCount() - not_matmul) / n_layers;
  double flops = 6.0 * matmul_params + 6.0 * extra_rows * per_layer_linear * n_layers;
  // Attention: QKᵀ and PV, 2 FLOPs per MAC each, ×3 for forward + backward.
  flops += 6.0 * 2.0 * n_layers * n_heads * head_dim * AttendedKeysPerToken(seq_len);
  return flops;
}

}  // namespace fam
