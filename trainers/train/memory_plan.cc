#include "trainers/train/memory_plan.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "framework/dist/bucket_layout.h"
#include "nlohmann/json.hpp"

namespace fam {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// '*' any text (dots included), '?' one character.
bool GlobMatch(const char* p, const char* s) {
  if (*p == '\0') return *s == '\0';
  if (*p == '*') return GlobMatch(p + 1, s) || (*s != '\0' && GlobMatch(p, s + 1));
  if (*s == '\0') return false;
  return (*p == '?' || *p == *s) && GlobMatch(p + 1, s + 1);
}

// Whether lora.targets pattern `pattern` selects projection `full` (model.layers.3.mlp.up_proj),
// as models/fam/lora.h defines it: a group, or a glob against the name or a dot-aligned suffix.
bool TargetMatches(const std::string& pattern, const std::string& full, bool is_attention) {
  if (pattern == "all") return true;
  if (pattern == "attention") return is_attention;
  if (pattern == "mlp") return !is_attention;
  if (GlobMatch(pattern.c_str(), full.c_str())) return true;
  for (size_t i = 0; i < full.size(); ++i)
    if (full[i] == '.' && GlobMatch(pattern.c_str(), full.c_str() + i + 1)) return true;
  return false;
}

double ValueBytes(const RunConfig& c) { return c.trainer.precision == DType::kBF16 ? 2.0 : 4.0; }

// f32 optimizer state bytes of one trainable parameter.
double OptimizerBytes(const RunConfig& c, const PlannedParameter& p) {
  const double n = static_cast<double>(p.numel());
  if (c.optimizer.type == OptimizerType::kAdamW) return 2 * 4 * n;  // exp_avg + exp_avg_sq
  double values = c.optimizer.beta1 > 0 ? n : 0;                    // exp_avg (momentum)
  if (c.optimizer.adafactor.factored && p.shape.size() >= 2) {
    const int64_t rows = p.shape[p.shape.size() - 2], cols = p.shape.back();
    values += n / (static_cast<double>(rows) * cols) * (rows + cols);  // row + col statistics
  } else {
    values += n;  // exp_avg_sq like the parameter
  }
  return 4 * values;
}

// Per-rank sums of `weight` when the owners of `params` come from AssignOwners
// (framework/dist/bucket_layout.h, by element count), so the components of one rank add up.
std::vector<double> RankLoads(const std::vector<const PlannedParameter*>& params,
                              const std::vector<double>& weight, int gpus) {
  std::vector<int64_t> numels;
  for (const PlannedParameter* p : params) numels.push_back(p->numel());
  const std::vector<int> owners = dist::AssignOwners(numels, gpus);
  std::vector<double> load(gpus, 0.0);
  for (size_t i = 0; i < params.size(); ++i) load[owners[i]] += weight[i];
  return load;
}

std::string Gib(double bytes) { return absl::StrFormat("%.2f", bytes / kGiB); }

std::string SettingsText(const PlanSettings& s) {
  return absl::StrFormat("zero %s, recompute %s, micro_batch %d", PlannerZeroName(s.zero),
                         s.recompute ? "on" : "off", s.micro_batch);
}

}  // namespace

int64_t PlannedParameter::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

const char* PlannerZeroName(ZeroStage stage) {
  switch (stage) {
    case ZeroStage::kNone:
      return "none";
    case ZeroStage::kZero1:
      return "zero1";
    case ZeroStage::kZero2:
      return "zero2";
    case ZeroStage::kZero3:
      return "zero3";
  }
  return "?";
}

absl::StatusOr<std::vector<PlannedParameter>> PlannedParameters(const RunConfig& config) {
  const ModelConfig& m = config.model;
  const bool lora = config.trainer.type == TrainerType::kFinetune;
  const int64_t d = m.d_model, q = m.n_heads * m.head_dim, kv = m.n_kv_heads * m.head_dim;
  const int64_t f = m.ffn_dim, r = config.lora.rank;
  std::vector<PlannedParameter> out;
  // Frozen base under LoRA; everything trains otherwise.
  const bool base_trains = !lora;
  out.push_back({"model.embed_tokens.weight", {m.vocab_size, d}, base_trains, 0});
  std::vector<bool> pattern_used(config.lora.targets.size(), false);
  for (int64_t l = 0; l < m.n_layers; ++l) {
    const int unit = static_cast<int>(l + 1);
    const std::string prefix = absl::StrCat("model.layers.", l, ".");
    auto linear = [&](const std::string& name, int64_t out_dim, int64_t in_dim, bool attention,
                      bool bias) {
      const std::string full = prefix + name;
      out.push_back({full + ".weight", {out_dim, in_dim}, base_trains, unit});
      if (bias) out.push_back({full + ".bias", {out_dim}, base_trains, unit});
      if (!lora) return;
      bool adapted = false;
      for (size_t i = 0; i < config.lora.targets.size(); ++i) {
        if (TargetMatches(config.lora.targets[i], full, attention)) {
          adapted = true;
          pattern_used[i] = true;
        }
      }
      if (!adapted) return;
      out.push_back({full + ".lora_A.weight", {r, in_dim}, true, unit});
      out.push_back({full + ".lora_B.weight", {out_dim, r}, true, unit});
    };
    out.push_back({prefix + "input_layernorm.weight", {d}, base_trains, unit});
    linear("self_attn.q_proj", q, d, true, m.qkv_bias);
    linear("self_attn.k_proj", kv, d, true, m.qkv_bias);
    linear("self_attn.v_proj", kv, d, true, m.qkv_bias);
    linear("self_attn.o_proj", d, q, true, m.o_bias);
    out.push_back({prefix + "post_attention_layernorm.weight", {d}, base_trains, unit});
    linear("mlp.gate_proj", f, d, false, m.mlp_bias);
    linear("mlp.up_proj", f, d, false, m.mlp_bias);
    linear("mlp.down_proj", d, f, false, m.mlp_bias);
    if (m.sandwich_norms) {
      out.push_back({prefix + "pre_feedforward_layernorm.weight", {d}, base_trains, unit});
      out.push_back({prefix + "post_feedforward_layernorm.weight", {d}, base_trains, unit});
    }
  }
  if (lora) {
    for (size_t i = 0; i < pattern_used.size(); ++i)
      if (!pattern_used[i])
        return absl::InvalidArgumentError(absl::StrCat(
            "lora.targets: pattern \"", config.lora.targets[i], "\" matches no projection"));
  }
  const int last = static_cast<int>(m.n_layers + 1);
  out.push_back({"model.norm.weight", {d}, base_trains, last});
  if (m.fam_rows() > 0)
    out.push_back(
        {"model.fam.embeddings", {m.fam_rows(), d}, !lora || config.lora.train_fam, last});
  if (!m.tie_embeddings) out.push_back({"lm_head.weight", {m.vocab_size, d}, base_trains, last});
  return out;
}

double LayerActivationBytesPerRow(const ModelConfig& m, double p, int64_t lora_values) {
  const double d = m.d_model, q = m.n_heads * m.head_dim, kv = m.n_kv_heads * m.head_dim;
  const double f = m.ffn_dim;
  // Working precision: layer input x (RMSNorm), normed x (q/k/v projections), q and k after RoPE
  // and v (attention), attention output (attention), its head-merged copy (o_proj), residual after
  // attention (RMSNorm), its normed copy (gate/up), gate, up, silu(gate), silu(gate)·up (SiLU,
  // Mul, down_proj), and x·Aᵀ of every adapter. f32: two RMSNorm 1/rms and one attention
  // log-sum-exp per query head.
  const double values = 4 * d + 3 * q + 2 * kv + 4 * f + static_cast<double>(lora_values);
  return values * p + 4.0 * (2 + m.n_heads);
}

absl::StatusOr<MemoryBreakdown> EstimateMemory(const RunConfig& config, int gpus,
                                               const PlanSettings& s) {
  if (gpus < 1) return absl::InvalidArgumentError(absl::StrCat("--gpus must be >= 1, got ", gpus));
  if (s.micro_batch < 1)
    return absl::InvalidArgumentError(
        absl::StrCat("trainer.micro_batch must be >= 1, got ", s.micro_batch));
  absl::StatusOr<std::vector<PlannedParameter>> planned = PlannedParameters(config);
  if (!planned.ok()) return planned.status();
  const ModelConfig& m = config.model;
  const double p = ValueBytes(config);
  const bool bf16 = p == 2.0;
  const double grad_bytes = bf16 ? 4.0 : p;  // gradients, their buckets and ZeRO accumulators
  const ZeroStage zero = gpus > 1 ? s.zero : ZeroStage::kNone;

  // ZeRO-2/3 units (framework/dist/sharded_parameters.h): each decoder layer, and the root
  // (embeddings, final norm, FAM prompt, LM head), which stays gathered for a whole micro-batch.
  // Gradient units: each layer's trainable parameters; each root parameter on its own.
  std::vector<const PlannedParameter*> frozen, trainable;
  std::vector<double> f_numel, t_numel, t_state;
  std::vector<double> layer_numel(m.n_layers, 0.0), layer_trainable(m.n_layers, 0.0);
  double n_all = 0, n_trainable = 0, state_all = 0, largest_trainable = 0, root = 0;
  double largest_grad_unit = 0;
  int64_t lora_values = 0;
  const int last_unit = static_cast<int>(m.n_layers + 1);
  for (const PlannedParameter& q : *planned) {
    const double n = static_cast<double>(q.numel());
    const bool in_layer = q.unit >= 1 && q.unit < last_unit;
    n_all += n;
    if (in_layer)
      layer_numel[q.unit - 1] += n;
    else
      root += n;
    if (!q.trainable) {
      frozen.push_back(&q);
      f_numel.push_back(n);
      continue;
    }
    trainable.push_back(&q);
    t_numel.push_back(n);
    t_state.push_back(OptimizerBytes(config, q));
    n_trainable += n;
    state_all += t_state.back();
    if (in_layer)
      layer_trainable[q.unit - 1] += n;
    else
      largest_grad_unit = std::max(largest_grad_unit, n);
    largest_trainable = std::max(largest_trainable, n);
    if (q.unit == 1 && q.name.find(".lora_A.") != std::string::npos) lora_values += q.shape[0];
  }

  // Per-rank shares under whole-parameter ownership (the trainer's AssignOwners).
  const bool shard_state = zero != ZeroStage::kNone;
  const bool shard_grads = zero == ZeroStage::kZero2 || zero == ZeroStage::kZero3;
  const bool shard_params = zero == ZeroStage::kZero3;
  std::vector<double> own_t(gpus, n_trainable), own_state(gpus, state_all), own_all(gpus, n_all);
  if (shard_state) {
    own_t = RankLoads(trainable, t_numel, gpus);
    own_state = RankLoads(trainable, t_state, gpus);
  }
  if (shard_params) {
    // Trainable and frozen parameters get owners separately (two AssignOwners calls).
    const std::vector<double> own_f = RankLoads(frozen, f_numel, gpus);
    for (int r = 0; r < gpus; ++r) own_all[r] = own_t[r] + own_f[r];
  }
  std::sort(layer_numel.rbegin(), layer_numel.rend());
  for (double n : layer_trainable) largest_grad_unit = std::max(largest_grad_unit, n);
  // ZeRO-3 gathered working set: the root unit and two layers (the current and the prefetched).
  const double working_set =
      root + (layer_numel.empty() ? 0 : layer_numel[0]) * std::min<int64_t>(2, m.n_layers);

  // Activations (per micro-batch of micro_batch sequences of seq_len tokens).
  const double seq = static_cast<double>(config.trainer.seq_len), mb = s.micro_batch;
  const double fam = static_cast<double>(m.fam_rows());
  const double blocks = m.attention.type == AttentionType::kFull
                            ? 1
                            : std::ceil(seq / static_cast<double>(m.attention.block_size));
  const double rows = seq + fam * blocks;  // tokens + the FAM rows of every block, per layer
  const double per_row = LayerActivationBytesPerRow(m, p, lora_values);
  const double layers = static_cast<double>(m.n_layers);
  // The initial FAM state goes through each layer on its own (F rows per sequence, not recomputed).
  const double initial = layers * mb * fam * per_row;
  // Backward of one layer: gradients of the MLP intermediates (3 × ffn) and of the residual
  // stream (2 × d) alive at once.
  const double layer_grads = mb * rows * p * (3.0 * m.ffn_dim + 2.0 * m.d_model);
  // LM head: final RMSNorm input and output (+ 1/rms) and the row log-sum-exp, plus
  // - unchunked (trainer.loss_chunk_tokens 0): the logits kept by the fused cross-entropy; its
  //   backward converts them to f32 (bf16 runs), writes f32 grad_logits and casts them back;
  // - chunked (ops::LinearCrossEntropy): nothing more kept; its backward holds one f32 chunk of
  //   logits (turned into grad_logits in place) and f32 grad_hidden, grad_weight when the head
  //   trains (not under LoRA), and in bf16 runs f32 copies of hidden and the head weight plus the
  //   bf16 casts of the gradients.
  const double v = static_cast<double>(m.vocab_size), d = static_cast<double>(m.d_model);
  const double tokens = mb * seq;
  const int64_t chunk_tokens = config.trainer.loss_chunk_tokens;
  double head_kept = tokens * (2.0 * d * p + 4 + 4);
  double ce_backward = 0;
  if (chunk_tokens <= 0) {
    head_kept += tokens * v * p;
    ce_backward = tokens * v * (bf16 ? 4 + 4 + 2 : 4);
  } else {
    const double chunk = std::min(static_cast<double>(chunk_tokens), tokens);
    const bool head_trains = config.trainer.type != TrainerType::kFinetune;
    ce_backward = chunk * v * 4 + tokens * d * (bf16 ? 4 + 4 + 2 : 4) +
                  v * d * ((bf16 ? 4 : 0) + (head_trains ? (bf16 ? 4 + 2 : 4) : 0));
  }
  double kept = 0, peak = 0;
  if (s.recompute) {
    kept = layers * mb * (seq + fam) * m.d_model * p + initial;  // checkpointed layer inputs
    peak = std::max(head_kept + ce_backward, mb * rows * per_row + layer_grads);
  } else {
    kept = layers * mb * rows * per_row + initial;
    peak = std::max(head_kept + ce_backward, layer_grads);
  }

  // The most loaded rank by total.
  MemoryBreakdown best;
  for (int r = 0; r < gpus; ++r) {
    MemoryBreakdown b;
    b.weights = p * (shard_params ? own_all[r] + working_set : n_all);
    b.master = bf16 ? 4 * (shard_state ? own_t[r] : n_trainable) : 0;
    // Gradients, their buckets and the ZeRO-2/3 unit buffers and owned accumulators are f32 in
    // bf16 runs (autograd accumulates a bf16 parameter's gradient in f32: GradDType).
    b.gradients = grad_bytes * (shard_grads ? own_t[r] : n_trainable);
    b.optimizer = own_state[r];
    b.activations_kept = kept;
    b.activations_peak = peak;
    b.activations = kept + peak;
    if (gpus > 1 && n_trainable > 0) {
      if (shard_grads)  // one gradient unit filling + at most two being reduce-scattered
        b.communication = 3 * grad_bytes * largest_grad_unit;
      else
        b.communication = grad_bytes * (n_trainable + (shard_state ? own_t[r] : 0));  // all buckets
    }
    const double other = b.total();
    b.workspace = kWorkspaceFixedBytes + 4 * largest_trainable + kAllocatorSlack * other;
    if (r == 0 || b.total() > best.total()) best = b;
  }
  return best;
}

absl::StatusOr<MemoryPlan> PlanMemory(const RunConfig& config, int gpus, double budget_bytes) {
  const TrainerConfig& t = config.trainer;
  if (gpus < 1) return absl::InvalidArgumentError(absl::StrCat("--gpus must be >= 1, got ", gpus));
  if (t.global_batch % gpus != 0)
    return absl::InvalidArgumentError(absl::StrFormat(
        "trainer.global_batch %d does not split over %d GPUs", t.global_batch, gpus));
  MemoryPlan plan;
  plan.gpus = gpus;
  plan.budget_bytes = budget_bytes;
  // An unset trainer.micro_batch (0) is each GPU's whole share, as the trainer derives it.
  plan.configured = {config.distributed.zero, t.recompute,
                     t.micro_batch > 0 ? t.micro_batch : t.global_batch / gpus};
  absl::StatusOr<MemoryBreakdown> own = EstimateMemory(config, gpus, plan.configured);
  if (!own.ok()) return own.status();
  plan.configured_memory = *own;
  plan.configured_fits = own->total() <= budget_bytes;

  // Cost order: recomputation (~1/3 more compute) is the dearest, then each ZeRO stage (more
  // communication), then a smaller micro-batch (smaller GEMMs, same global batch).
  const int64_t per_rank = t.global_batch / gpus;
  std::vector<int64_t> micro;
  for (int64_t mb = per_rank; mb >= 1; --mb)
    if (per_rank % mb == 0) micro.push_back(mb);
  std::vector<ZeroStage> stages = {ZeroStage::kNone};
  if (gpus > 1)
    stages = {ZeroStage::kNone, ZeroStage::kZero1, ZeroStage::kZero2, ZeroStage::kZero3};
  // Per (recompute, stage): the largest micro-batch within the headroom, else the largest that
  // fits at all. The suggestion: the cheapest option within the headroom, else the cheapest fit.
  const double comfortable = (1.0 - kSuggestionHeadroom) * budget_bytes;
  int first_fit = -1;
  for (bool recompute : {false, true}) {
    for (ZeroStage zero : stages) {
      PlanCandidate c, best_fit;
      bool any_fit = false;
      for (int64_t mb : micro) {
        PlanSettings s{zero, recompute, mb};
        absl::StatusOr<MemoryBreakdown> b = EstimateMemory(config, gpus, s);
        if (!b.ok()) return b.status();
        c = {s, *b, b->total() <= budget_bytes};
        if (c.fits && !any_fit) {
          best_fit = c;
          any_fit = true;
        }
        if (b->total() <= comfortable) break;
      }
      if (any_fit && c.memory.total() > comfortable) c = best_fit;
      plan.options.push_back(c);
      const int index = static_cast<int>(plan.options.size()) - 1;
      if (c.fits && first_fit < 0) first_fit = index;
      if (c.fits && c.memory.total() <= comfortable && plan.suggestion < 0) plan.suggestion = index;
    }
  }
  if (plan.suggestion < 0) plan.suggestion = first_fit;
  return plan;
}

std::string PlanSummaryLine(const MemoryPlan& plan) {
  return absl::StrFormat("%s GiB of %s GiB per GPU on %d GPU(s) (%s)",
                         Gib(plan.configured_memory.total()), Gib(plan.budget_bytes), plan.gpus,
                         SettingsText(plan.configured));
}

std::string FormatMemoryPlan(const RunConfig& config, const MemoryPlan& plan) {
  std::string out;
  const bool lora = config.trainer.type == TrainerType::kFinetune;
  absl::StrAppendFormat(
      &out, "%s: %s, %s, %s, seq_len %d, global_batch %d, on %d GPU(s) of %s GiB\n", config.name,
      lora ? absl::StrCat("LoRA fine-tuning (rank ", config.lora.rank, ")") : "pretraining",
      config.trainer.precision == DType::kBF16 ? "bf16 + f32 master" : "f32",
      config.optimizer.type == OptimizerType::kAdamW ? "AdamW" : "Adafactor",
      config.trainer.seq_len, config.trainer.global_batch, plan.gpus, Gib(plan.budget_bytes));
  auto add_column = [](std::vector<std::string>& rows, const MemoryBreakdown& b) {
    const double values[] = {b.weights,     b.master,           b.gradients,        b.optimizer,
                             b.activations, b.activations_kept, b.activations_peak, b.communication,
                             b.workspace,   b.total()};
    for (size_t i = 0; i < rows.size(); ++i) rows[i] += absl::StrFormat(" %10s", Gib(values[i]));
  };
  std::vector<std::string> rows = {"weights",     "master (f32)", "gradients", "optimizer",
                                   "activations", "  kept",       "  peak",    "communication",
                                   "workspace",   "total"};
  for (std::string& r : rows) r = absl::StrFormat("  %-14s", r);
  add_column(rows, plan.configured_memory);
  const bool show_suggestion = plan.suggestion >= 0 && !plan.configured_fits;
  if (show_suggestion) add_column(rows, plan.options[plan.suggestion].memory);
  absl::StrAppendFormat(&out, "  %-14s %10s%s\n", "GiB per GPU", "config",
                        show_suggestion ? absl::StrFormat(" %10s", "suggested") : "");
  for (const std::string& r : rows) out += r + "\n";
  absl::StrAppendFormat(&out, "config (%s): %s\n", SettingsText(plan.configured),
                        plan.configured_fits ? "fits" : "does NOT fit");
  out +=
      "options, cheapest first (largest micro-batch within 90 % of the budget, else the largest "
      "that fits):\n";
  for (size_t i = 0; i < plan.options.size(); ++i) {
    const PlanCandidate& c = plan.options[i];
    absl::StrAppendFormat(
        &out, "  %-44s %9s GiB  %s\n", SettingsText(c.settings), Gib(c.memory.total()),
        c.fits ? (static_cast<int>(i) == plan.suggestion ? "fits <- suggested" : "fits")
               : "does not fit");
  }
  if (plan.suggestion < 0) {
    out += "nothing fits: use more GPUs, a shorter seq_len, or GPUs with more memory\n";
  } else {
    const PlanSettings& s = plan.options[plan.suggestion].settings;
    absl::StrAppendFormat(&out,
                          "suggestion: --set distributed.zero=%s --set trainer.recompute=%s --set "
                          "trainer.micro_batch=%d\n",
                          PlannerZeroName(s.zero), s.recompute ? "true" : "false", s.micro_batch);
  }
  return out;
}

std::string MemoryPlanJson(const RunConfig& config, const MemoryPlan& plan) {
  auto breakdown = [](const MemoryBreakdown& b) {
    return nlohmann::json{{"weights", b.weights},
                          {"master", b.master},
                          {"gradients", b.gradients},
                          {"optimizer", b.optimizer},
                          {"activations", b.activations},
                          {"activations_kept", b.activations_kept},
                          {"activations_peak", b.activations_peak},
                          {"communication", b.communication},
                          {"workspace", b.workspace},
                          {"total", b.total()}};
  };
  auto settings = [](const PlanSettings& s) {
    return nlohmann::json{{"zero", PlannerZeroName(s.zero)},
                          {"recompute", s.recompute},
                          {"micro_batch", s.micro_batch}};
  };
  nlohmann::json j;
  j["name"] = config.name;
  j["gpus"] = plan.gpus;
  j["budget_bytes"] = plan.budget_bytes;
  j["config"] = {{"settings", settings(plan.configured)},
                 {"bytes", breakdown(plan.configured_memory)},
                 {"fits", plan.configured_fits}};
  j["options"] = nlohmann::json::array();
  for (const PlanCandidate& c : plan.options)
    j["options"].push_back(
        {{"settings", settings(c.settings)}, {"bytes", breakdown(c.memory)}, {"fits", c.fits}});
  j["suggestion"] = plan.suggestion < 0 ? nlohmann::json(nullptr)
                                        : settings(plan.options[plan.suggestion].settings);
  return j.dump(2);
}

}  // namespace fam
