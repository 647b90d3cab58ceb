#include "trainers/cli/model_info.h"

#include <cmath>

#include "absl/strings/str_format.h"
#include "trainers/train/memory_plan.h"
#include "trainers/train/run_config.h"

namespace fam {

namespace {
// The planner's breakdown for one replica (1 GPU, no sharding, no recomputation) of this model.
absl::StatusOr<MemoryBreakdown> OneReplicaMemory(const ModelConfig& c, const InfoOptions& o) {
  RunConfig config;
  config.model = c;
  config.trainer.type = TrainerType::kPretrain;
  config.trainer.micro_batch = o.batch;
  config.trainer.global_batch = o.batch;
  config.trainer.seq_len = o.seq_len;
  config.trainer.precision = o.bf16 ? DType::kBF16 : DType::kF32;
  config.optimizer.type = o.adafactor ? OptimizerType::kAdafactor : OptimizerType::kAdamW;
  PlanSettings settings;
  settings.micro_batch = o.batch;
  return EstimateMemory(config, 1, settings);
}

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
  absl::StatusOr<MemoryBreakdown> m = OneReplicaMemory(c, o);
  if (!m.ok()) {
    absl::StrAppend(&out, "training memory: ", m.status().message(), "\n");
    return out;
  }
  absl::StrAppendFormat(&out,
                        "training memory at batch %d x seq %d (%s, %s), one replica, no sharding or "
                        "recomputation (fam plan for multi-GPU settings):\n",
                        o.batch, o.seq_len, o.bf16 ? "bf16 + f32 master" : "f32",
                        o.adafactor ? "Adafactor" : "AdamW");
  absl::StrAppendFormat(&out,
                        "  weights     %s\n  master      %s\n  gradients   %s\n  optimizer   %s\n"
                        "  activations %s\n  workspace   %s\n  total       %s\n",
                        Human(m->weights), Human(m->master), Human(m->gradients),
                        Human(m->optimizer), Human(m->activations),
                        Human(m->communication + m->workspace), Human(m->total()));
  return out;
}

}  // namespace fam
