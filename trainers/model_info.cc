#include "trainers/model_info.h"

#include <cmath>

#include "absl/strings/str_format.h"

namespace fam {

double ActivationBytesPerTokenPerLayer(const ModelConfig& c, double b) {
  const double d = c.d_model, q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim;
  const double f = c.ffn_dim;
  // Saved for backward: layer input, normed input, q/k/v before and after RoPE, attention output
  // (+ its merged copy), residual after attention, normed residual, gate, up, silu(gate), product.
  double values = 3 * d + 2 * (q + 2 * kv) + 2 * q + 4 * f;
  double per_token = values * b + 4.0 * c.n_heads;  // + f32 log-sum-exp per head
  if (c.fam_rows() > 0)  // FAM rows run through the same layer once per block
    per_token *= 1.0 + static_cast<double>(c.fam_rows()) / c.attention.block_size;
  return per_token;
}

MemoryEstimate EstimateTrainingMemory(const ModelConfig& c, const InfoOptions& o) {
  MemoryEstimate m;
  const double n = static_cast<double>(c.ParameterCount());
  const double value_bytes = o.bf16 ? 2 : 4;
  m.weights_bytes = n * value_bytes + (o.bf16 ? n * 4 : 0);  // bf16 copy + f32 master
  m.gradients_bytes = n * value_bytes;
  if (o.adafactor) {
    // Factored second moments are ~ (rows + cols) per matrix: negligible next to the momentum.
    m.optimizer_bytes = n * 4 + 4.0 * (c.n_layers * 7 * (c.d_model + c.ffn_dim) + 2 * (c.vocab_size + c.d_model));
  } else {
    m.optimizer_bytes = 2 * n * 4;
  }
  const double tokens = static_cast<double>(o.batch) * o.seq_len;
  m.activations_bytes = tokens * c.n_layers * ActivationBytesPerTokenPerLayer(c, value_bytes) +
                        tokens * (c.d_model * 2 * value_bytes + c.vocab_size * 4.0 * 2);  // head + CE
  return m;
}

namespace {
std::string Human(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  return absl::StrFormat("%.2f %s", bytes, units[u]);
}
std::string Count(double n) {
  if (n >= 1e9) return absl::StrFormat("%.3fB", n / 1e9);
  if (n >= 1e6) return absl::StrFormat("%.3fM", n / 1e6);
  if (n >= 1e3) return absl::StrFormat("%.1fK", n / 1e3);
  return absl::StrFormat("%.0f", n);
}
}  // namespace

std::string ModelInfoReport(const ModelConfig& c, const InfoOptions& o) {
  std::string out;
  absl::StrAppendFormat(&out, "model: %s attention, %d layers, d_model %d, ffn %d, heads %d (kv %d) x %d\n",
                        AttentionTypeName(c.attention.type), c.n_layers, c.d_model, c.ffn_dim,
                        c.n_heads, c.n_kv_heads, c.head_dim);
  if (c.attention.type != AttentionType::kFull)
    absl::StrAppendFormat(&out, "  block %d, memory segments %d, fam_length %d\n",
                          c.attention.block_size, c.attention.memory_segments, c.fam_rows());
  absl::StrAppendFormat(&out, "parameters: %s (%d) — non-embedding %s, embeddings %s%s\n",
                        Count(c.ParameterCount()), c.ParameterCount(),
                        Count(c.NonEmbeddingParameterCount()),
                        Count(static_cast<double>(c.vocab_size) * c.d_model),
                        c.tie_embeddings ? " (tied head)" : " + LM head");
  absl::StrAppendFormat(&out, "training FLOPs/token at seq %d: %.4g (attention spans %.1f keys/token)\n",
                        o.seq_len, c.TrainingFlopsPerToken(o.seq_len), c.AttendedKeysPerToken(o.seq_len));
  MemoryEstimate m = EstimateTrainingMemory(c, o);
  absl::StrAppendFormat(&out, "training memory at batch %d x seq %d (%s, %s), one replica:\n", o.batch,
                        o.seq_len, o.bf16 ? "bf16 + f32 master" : "f32",
                        o.adafactor ? "Adafactor" : "AdamW");
  absl::StrAppendFormat(&out, "  weights     %s\n  gradients   %s\n  optimizer   %s\n  activations %s\n  total       %s\n",
                        Human(m.weights_bytes), Human(m.gradients_bytes), Human(m.optimizer_bytes),
                        Human(m.activations_bytes), Human(m.total()));
  return out;
}

}  // namespace fam
