#include "trainers/train/run_config.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "framework/core/hash.h"
#include "framework/io/yaml_reader.h"

namespace fam {
namespace {

namespace fs = std::filesystem;

template <typename E>
using Names = std::vector<std::pair<std::string, E>>;

const Names<AttentionType>& AttentionTypes() {
  static const Names<AttentionType> names = {
      {"full", AttentionType::kFull}, {"bswa", AttentionType::kBswa}, {"fam", AttentionType::kFam}};
  return names;
}

// ModelConfig::Validate() names the key as "model.<path>: why"; report it at that key's value.
void ReportModelError(YamlReader& r, const absl::Status& status) {
  if (status.ok()) return;
  std::string_view message(status.message().data(), status.message().size());
  std::string key;
  const size_t colon = message.find(": ");
  if (colon != std::string_view::npos && message.substr(0, 6) == "model.") {
    key = std::string(message.substr(6, colon - 6));
    message = message.substr(colon + 2);
  }
  r.Fail(key, message);
}

void VisitModel(YamlReader& r, ModelConfig* m) {
  if (!r.writing()) {  // the resolved config spells out every key instead
    std::string preset;
    r.Get("preset", &preset,
          "loaded first from configs/models/<preset>.yaml (tiny, 1b, 8b, 24b); keys here win");
  }
  r.Get("vocab_size", &m->vocab_size, 2, "vocabulary size (rows of embeddings and LM head)");
  r.Get("d_model", &m->d_model, 1, "width of the residual stream");
  r.Get("n_layers", &m->n_layers, 1, "decoder layers");
  r.Get("n_heads", &m->n_heads, 1, "query heads");
  r.Get("n_kv_heads", &m->n_kv_heads, 1,
        "key/value heads (grouped-query attention; divides n_heads; 1 = multi-query)");
  r.Get("head_dim", &m->head_dim, 2, "width of one attention head (even: RoPE rotates halves)");
  r.Get("ffn_dim", &m->ffn_dim, 1, "hidden width of the SwiGLU feed-forward");
  r.Get("norm_eps", &m->norm_eps, Positive(), "RMSNorm epsilon");
  r.Get("rope_base", &m->rope_base, Above(1), "RoPE base");
  r.Get("tie_embeddings", &m->tie_embeddings, "the LM head reuses the embedding matrix");
  r.Get("init_std", &m->init_std, Positive(),
        "std of the normal weight init (output projections scaled by 1/sqrt(2 n_layers))");
  r.Get("family", &m->family,
        "HF family of the block (llama, mistral, qwen2, gemma, gemma2): `fam export`'s layout");
  r.GetEnum(
      "activation", &m->activation,
      Names<FfnActivation>{{"silu", FfnActivation::kSilu}, {"gelu_tanh", FfnActivation::kGeluTanh}},
      "gate activation of the gated feed-forward (SwiGLU: silu; Gemma: gelu_tanh)");
  r.Get("qkv_bias", &m->qkv_bias, "biases on the q/k/v projections (Qwen2)");
  r.Get("o_bias", &m->o_bias, "bias on the attention output projection");
  r.Get("mlp_bias", &m->mlp_bias, "biases on the feed-forward projections");
  r.Get("norm_weight_offset", &m->norm_weight_offset, InRange(-16, 16),
        "RMSNorm scales by (offset + weight); Gemma: 1");
  r.Get("embedding_scale", &m->embedding_scale, "multiply embeddings by sqrt(d_model) (Gemma)");
  r.Get("sandwich_norms", &m->sandwich_norms,
        "RMSNorm after attention and after the feed-forward as well (Gemma 2)");
  r.Get("attn_softcap", &m->attn_softcap, AtLeast(0),
        "attention scores soft-capped to cap*tanh(s/cap) (Gemma 2); 0 = off");
  r.Get("final_softcap", &m->final_softcap, AtLeast(0),
        "logits soft-capped to cap*tanh(z/cap) (Gemma 2); 0 = off");
  r.Get("query_scale_dim", &m->query_scale_dim, AtLeast(0),
        "attention scale is 1/sqrt(query_scale_dim); 0 = head_dim");
  r.Section(
      "rope_scaling",
      [&](YamlReader& s) {
        s.GetEnum("type", &m->rope_scaling,
                  Names<RopeScaling>{{"none", RopeScaling::kNone},
                                     {"linear", RopeScaling::kLinear},
                                     {"llama3", RopeScaling::kLlama3}},
                  "RoPE rescaling of long-context checkpoints");
        s.Get("factor", &m->rope_factor, Positive(), "frequency divisor (linear, llama3)");
        s.Get("low_freq_factor", &m->rope_low_freq_factor, Positive(), "llama3");
        s.Get("high_freq_factor", &m->rope_high_freq_factor, Positive(), "llama3");
        s.Get("original_context", &m->rope_original_context, Positive(),
              "llama3: the pretraining context length");
      },
      "RoPE frequency rescaling (Llama 3.1+: llama3)");
  r.Section(
      "attention",
      [&](YamlReader& a) {
        a.GetEnum("type", &m->attention.type, AttentionTypes(),
                  "full causal, block sliding window (bswa) or feedback attention memory (fam)");
        a.Get("block_size", &m->attention.block_size, 1, "B: tokens per block (bswa, fam)");
        a.Get("memory_segments", &m->attention.memory_segments, 0,
              "m: previous blocks a block attends to (bswa, fam)");
        a.Get("fam_length", &m->attention.fam_length, 0, "F: feedback memory rows (fam)");
      },
      "attention variant (FAM_SPEC.md §2)");
  r.Section(
      "training",
      [&](YamlReader& t) {
        t.Get("random_position_offset", &m->training.random_position_offset,
              "Random Position Offset (FAM_SPEC.md §6); training only");
        t.Get("state_passing_prob", &m->training.state_passing_prob, InRange(0, 1),
              "Random State Passing probability (FAM_SPEC.md §6); 0 = off; training only");
      },
      "training-only tricks of FAM_SPEC.md §6 (off in inference)");
  if (r.reading()) {
    r.Finish().IgnoreError();  // a mistyped key explains a failed check better than the check
    if (r.ok()) ReportModelError(r, m->Validate());
  }
}

void VisitData(YamlReader& r, DataConfig* d) {
  r.Get("train", &d->train, "path or glob of the training token shards");
  r.Get("val", &d->val, "path or glob of the validation token shards (empty: none)");
  r.Get("tokenizer", &d->tokenizer,
        "tokenizer (SentencePiece .model or tokenizer.json) the shards were made with");
  r.Get("shuffle", &d->shuffle, "shuffle training sequences (deterministic from trainer.seed)");
}

void VisitOptimizer(YamlReader& r, OptimizerConfig* o) {
  r.GetEnum("type", &o->type,
            Names<OptimizerType>{{"adamw", OptimizerType::kAdamW},
                                 {"adafactor", OptimizerType::kAdafactor}},
            "optimizer");
  r.Get("lr", &o->lr, Positive(), "peak learning rate");
  r.Get("beta1", &o->beta1, InHalfOpen(0, 1), "first-moment decay");
  r.Get("beta2", &o->beta2, InHalfOpen(0, 1), "second-moment decay");
  r.Get("eps", &o->eps, Positive(), "denominator epsilon");
  r.Get("weight_decay", &o->weight_decay, AtLeast(0), "decoupled weight decay of matrices");
  r.Get("decay_embeddings", &o->decay_embeddings,
        "apply weight decay to embeddings, LM head and the FAM prompt");
  r.Get("decay_norms", &o->decay_norms, "apply weight decay to norm weights");
  r.Get("grad_clip", &o->grad_clip, AtLeast(0), "clip the global gradient L2 norm; 0 = off");
  r.Section(
      "adafactor",
      [&](YamlReader& a) {
        a.Get("factored", &o->adafactor.factored, "factored second moments for matrices");
        a.Get("clip_threshold", &o->adafactor.clip_threshold, Positive(),
              "clip the update's RMS to this value");
      },
      "Adafactor-only settings");
}

void VisitSchedule(YamlReader& r, ScheduleConfig* s) {
  r.GetEnum("type", &s->type,
            Names<ScheduleType>{{"constant", ScheduleType::kConstant},
                                {"cosine", ScheduleType::kCosine},
                                {"linear", ScheduleType::kLinear}},
            "learning-rate shape after warmup");
  r.Get("warmup_steps", &s->warmup_steps, 0, "linear warmup steps from 0 to lr");
  r.Get("min_lr_ratio", &s->min_lr_ratio, InRange(0, 1), "final lr as a fraction of lr");
  r.Get("decay_steps", &s->decay_steps, 0, "steps until the final lr; 0 = trainer.steps");
}

void VisitTrainer(YamlReader& r, TrainerConfig* t) {
  r.GetEnum("type", &t->type,
            Names<TrainerType>{{"pretrain", TrainerType::kPretrain},
                               {"finetune", TrainerType::kFinetune}},
            "pretraining or LoRA fine-tuning");
  r.Get("steps", &t->steps, 1, "optimizer steps");
  r.Get("global_batch", &t->global_batch, 1, "sequences per optimizer step, all ranks together");
  int64_t micro_batch = t->micro_batch_derived ? 0 : t->micro_batch;
  r.Get("micro_batch", &micro_batch, 0,
        "sequences per rank per forward; 0 = derived at start: global_batch / ranks (on cuda the "
        "largest divisor of that the memory plan fits)");
  if (r.reading()) {
    t->micro_batch = micro_batch;
    t->micro_batch_derived = false;
  }
  r.Get("seq_len", &t->seq_len, 1, "tokens per training sequence");
  r.GetEnum("precision", &t->precision, Names<DType>{{"f32", DType::kF32}, {"bf16", DType::kBF16}},
            "f32, or bf16: bf16 weights/activations, f32 master weights, gradients and "
            "optimizer state; checkpoints hold the f32 masters");
  r.Get("seed", &t->seed, 0, "seed of init, data order and training tricks");
  r.GetEnum("device", &t->device,
            Names<DeviceType>{{"cpu", DeviceType::kCPU}, {"cuda", DeviceType::kCUDA}},
            "where the model runs (cuda: one GPU per rank)");
  r.Get("threads", &t->threads, 0, "CPU threads; 0 = all cores");
  r.Get("log_interval", &t->log_interval, 1, "steps between progress lines and metrics");
  r.Get("eval_interval", &t->eval_interval, 0, "steps between validation evals; 0 = off");
  r.Get("eval_batches", &t->eval_batches, 1, "validation batches per periodic eval");
  r.Get("max_consecutive_skips", &t->max_consecutive_skips, 1,
        "non-finite steps skipped in a row before the run stops");
  r.Get("recompute", &t->recompute,
        "recompute each decoder layer in backward (keeps only layer inputs; same gradients)");
  r.Get("loss_chunk_tokens", &t->loss_chunk_tokens, 0,
        "tokens per chunk of the fused LM head + cross-entropy (at most this many x vocab logits "
        "exist at once; backward recomputes them); 0 = full logits");
  r.Get("memory_budget_gb", &t->memory_budget_gb, AtLeast(0),
        "per-GPU memory budget (GiB) checked by `fam plan`'s estimate at start; 0 = the GPU's "
        "memory on cuda, no check on cpu");
  if (r.reading()) r.Finish().IgnoreError();
  if (r.reading() && r.ok() && t->micro_batch > 0 && t->global_batch % t->micro_batch != 0) {
    r.Fail("global_batch", absl::StrCat("must be a multiple of trainer.micro_batch (",
                                        t->micro_batch, "), got ", t->global_batch));
  }
}

void VisitLora(YamlReader& r, LoraConfig* l) {
  r.Get("rank", &l->rank, 1, "adapter rank r (paper: 64)");
  r.Get("alpha", &l->alpha, Positive(), "adapter scale alpha; the update is (alpha / rank)·B·A");
  r.Get("dropout", &l->dropout, InHalfOpen(0, 1), "dropout on the adapters' input while training");
  r.Get("targets", &l->targets,
        "projections that get adapters: groups attention (q/k/v/o_proj), mlp (gate/up/down_proj), "
        "all, or globs on names like model.layers.3.mlp.up_proj / q_proj");
  r.Get("train_fam", &l->train_fam, "also train the FAM prompt model.fam.embeddings (FAM models)");
  int64_t seed = static_cast<int64_t>(l->seed);
  r.Get("seed", &seed, 0, "seed of the adapters' initial A matrices");
  l->seed = static_cast<uint64_t>(seed);
  if (r.reading() && r.ok() && l->targets.empty()) {
    r.Fail("targets", "expected at least one target, e.g. [attention, mlp]");
  }
  if (r.reading() && r.ok()) {
    for (size_t i = 0; i < l->targets.size(); ++i) {
      if (l->targets[i].empty()) {
        r.Fail("targets", absl::StrCat("target ", i, " is empty"));
        break;
      }
    }
  }
}

void VisitFinetune(YamlReader& r, FinetuneConfig* f) {
  r.Get("base_weights", &f->base_weights,
        "base model: a safetensors file (FORMATS.md names) or a checkpoint directory (or a "
        "checkpoints/run directory: its newest valid checkpoint); required for finetune");
  r.Get("adapters", &f->adapters,
        "adapter safetensors to start from (same lora settings); empty: fresh adapters");
  r.Section(
      "loss_weights",
      [&](YamlReader& w) {
        w.Get("instruction", &f->loss_weights.instruction, AtLeast(0),
              "loss weight of instruction tokens");
        w.Get("answer", &f->loss_weights.answer, AtLeast(0), "loss weight of answer tokens");
        w.Get("repeat", &f->loss_weights.repeat, AtLeast(0),
              "loss weight of the \"[repeat random segment]:\" copy");
      },
      "per-token loss weights by segment role (override those recorded in the data)");
  r.Get("repeat_tokens", &f->repeat_tokens, 0,
        "tokens of the random span repeated after each example (prepare-instructions --config); "
        "0 = none");
}

void VisitCheckpoint(YamlReader& r, CheckpointConfig* c) {
  r.Get("interval", &c->interval, 0, "steps between checkpoints; 0 = only the final one");
  r.Get("keep_last", &c->keep_last, 1, "newest checkpoints kept");
  r.Get("keep_every", &c->keep_every, 0, "also keep every N-th step's checkpoint; 0 = off");
  r.Get("async", &c->async, "write checkpoints in the background (unsharded ones)");
  r.Get("save_final", &c->save_final,
        "save a checkpoint when the run ends; false for throughput benchmarks");
  r.Get("resume", &c->resume,
        "auto (latest checkpoint of the run, if any), never, or a checkpoint directory");
  if (r.reading() && r.ok() && c->resume.empty()) {
    r.Fail("resume", "expected auto, never or a checkpoint directory, got an empty value");
  }
}

void VisitEval(YamlReader& r, EvalConfig* e) {
  r.Get("passkey_lengths", &e->passkey_lengths, AtLeast(1),
        "PassKey filler lengths in tokens; [] = no PassKey eval");
  r.Get("passkey_trials", &e->passkey_trials, 1, "PassKey trials per length");
  r.Get("val_batches", &e->val_batches, 0, "validation batches of `fam eval`; 0 = all");
  r.Get("max_new_tokens", &e->max_new_tokens, 1, "greedy tokens generated per PassKey answer");
}

void VisitDistributed(YamlReader& r, DistributedConfig* d) {
  r.GetEnum(
      "backend", &d->backend,
      Names<DistBackend>{
          {"auto", DistBackend::kAuto}, {"mpi", DistBackend::kMpi}, {"nccl", DistBackend::kNccl}},
      "communicator; auto = nccl on cuda, mpi on cpu");
  r.Get("bucket_mb", &d->bucket_mb, Positive(), "gradient all-reduce bucket size in MiB");
  r.GetEnum("zero", &d->zero,
            Names<ZeroStage>{{"none", ZeroStage::kNone},
                             {"zero1", ZeroStage::kZero1},
                             {"zero2", ZeroStage::kZero2},
                             {"zero3", ZeroStage::kZero3}},
            "ZeRO sharding of optimizer state (1), gradients (2), parameters (3)");
  r.Get("timeout_s", &d->timeout_s, Positive(), "collective timeout in seconds");
}

void VisitRunConfig(YamlReader& r, RunConfig* c) {
  r.Get("name", &c->name,
        "run name: the run directory is <run_dir>/<name> (default: the config file's name)");
  r.Get("run_dir", &c->run_dir, "root folder of run directories");
  r.Section(
      "model", [&](YamlReader& s) { VisitModel(s, &c->model); },
      "the TransformerFAM model (FORMATS.md)");
  r.Section(
      "data", [&](YamlReader& s) { VisitData(s, &c->data); }, "token shards and tokenizer");
  r.Section(
      "optimizer", [&](YamlReader& s) { VisitOptimizer(s, &c->optimizer); },
      "optimizer and gradient clipping");
  r.Section(
      "schedule", [&](YamlReader& s) { VisitSchedule(s, &c->schedule); }, "learning-rate schedule");
  r.Section(
      "trainer", [&](YamlReader& s) { VisitTrainer(s, &c->trainer); }, "training loop");
  r.Section(
      "lora", [&](YamlReader& s) { VisitLora(s, &c->lora); },
      "LoRA adapters of fine-tuning (trainer.type: finetune; FAM_SPEC.md §7)");
  r.Section(
      "finetune",
      [&](YamlReader& s) {
        VisitFinetune(s, &c->finetune);
        if (!s.reading() || !s.ok() || c->trainer.type != TrainerType::kFinetune ||
            !c->finetune.base_weights.empty()) {
          return;
        }
        const std::string why =
            "required when trainer.type is finetune (a base safetensors file or checkpoint "
            "directory)";
        if (s.node() != nullptr) {
          s.Fail("base_weights", why);  // at the finetune section
        } else {
          r.Fail("trainer.type", "finetune needs finetune.base_weights: " + why);
        }
      },
      "fine-tuning inputs and instruction loss weights (trainer.type: finetune)");
  r.Section(
      "checkpoint", [&](YamlReader& s) { VisitCheckpoint(s, &c->checkpoint); },
      "checkpoints and resuming");
  r.Section(
      "eval", [&](YamlReader& s) { VisitEval(s, &c->eval); }, "evaluation (`fam eval`)");
  r.Section(
      "distributed", [&](YamlReader& s) { VisitDistributed(s, &c->distributed); },
      "data-parallel training (mpirun, one process per GPU)");
}

bool ValidRunName(const std::string& name) {
  if (name.empty() || name == "." || name == "..") return false;
  return std::none_of(name.begin(), name.end(), [](unsigned char ch) {
    return ch == '/' || ch == '\\' || ch <= ' ' || ch == 0x7f;
  });
}

bool ValidPresetName(const std::string& name) {
  if (name.empty() || name[0] == '.') return false;
  return std::all_of(name.begin(), name.end(), [](unsigned char ch) {
    return std::isalnum(ch) || ch == '_' || ch == '-' || ch == '.';
  });
}

// The preset file `name`.yaml: in $FAM_CONFIG_DIR (or its models/), then in configs/models of the
// folder of `origin` and of each folder above it, then in ./configs/models, then in the
// configs/models of the source tree the binary was built from. Empty when not found.
std::string FindPresetFile(const std::string& name, const std::string& origin,
                           std::vector<std::string>* searched) {
  std::vector<fs::path> dirs;
  if (const char* env = std::getenv("FAM_CONFIG_DIR"); env != nullptr && *env != '\0') {
    dirs.push_back(fs::path(env) / "models");
    dirs.push_back(fs::path(env));
  }
  std::error_code ec;
  fs::path dir = fs::absolute(origin, ec).parent_path();
  while (!ec && !dir.empty()) {
    dirs.push_back(dir / "configs" / "models");
    if (dir == dir.parent_path()) break;
    dir = dir.parent_path();
  }
  dirs.push_back(fs::path("configs") / "models");
#ifdef FAM_SOURCE_CONFIG_DIR
  // The presets of the source tree this binary was built from (a run from any directory finds
  // them).
  dirs.push_back(fs::path(FAM_SOURCE_CONFIG_DIR) / "models");
#endif
  for (const fs::path& candidate_dir : dirs) {
    const fs::path file = candidate_dir / (name + ".yaml");
    if (fs::is_regular_file(file, ec)) {
      // Shown relative to the working directory when below it, else absolute.
      const fs::path relative = fs::proximate(file, ec).lexically_normal();
      if (!ec && !relative.empty() && *relative.begin() != "..") return relative.string();
      return fs::absolute(file, ec).lexically_normal().string();
    }
    if (fs::is_directory(candidate_dir, ec)) searched->push_back(candidate_dir.string());
  }
  return "";
}

std::vector<std::string> AvailablePresets(const std::vector<std::string>& dirs) {
  std::vector<std::string> names;
  std::error_code ec;
  for (const std::string& dir : dirs) {
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      if (entry.path().extension() == ".yaml") names.push_back(entry.path().stem().string());
    }
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

// Replaces `model` (a model mapping with a `preset:` key) by the preset's keys with the model's
// own keys merged on top. `origin` is the config file (for --set presets and the search start).
absl::Status ResolvePreset(ConfigNode* model, const std::string& origin,
                           std::vector<std::string> chain) {
  const ConfigNode* preset = model->Find("preset");
  if (preset == nullptr || preset->is_null()) return absl::OkStatus();
  if (!preset->is_scalar() || !ValidPresetName(preset->scalar)) {
    return ConfigError(preset->loc, "model.preset",
                       "expected a preset name like tiny or 1b, got " + preset->Describe());
  }
  const std::string name = preset->scalar;
  chain.push_back(name);
  if (std::count(chain.begin(), chain.end(), name) > 1) {
    return ConfigError(preset->loc, "model.preset",
                       "preset cycle: " + absl::StrJoin(chain, " -> "));
  }
  const bool from_file = preset->loc.line > 0 && !preset->loc.file.empty();
  std::vector<std::string> searched;
  const std::string path = FindPresetFile(name, from_file ? preset->loc.file : origin, &searched);
  if (path.empty()) {
    return ConfigError(preset->loc, "model.preset",
                       absl::StrCat("no preset \"", name, "\" (available: ",
                                    absl::StrJoin(AvailablePresets(searched), ", "),
                                    "; searched $FAM_CONFIG_DIR and configs/models upward from ",
                                    from_file ? preset->loc.file : origin, ")"));
  }
  absl::StatusOr<ConfigNode> tree = LoadYamlFile(path);
  if (!tree.ok()) return tree.status();
  ConfigNode section = tree->Find("model") != nullptr ? *tree->Find("model") : *tree;
  if (!section.is_map()) {
    return ConfigError(section.loc, "model", "expected a section, got " + section.Describe());
  }
  absl::Status status = ResolvePreset(&section, path, chain);
  if (!status.ok()) return status;
  section.Erase("preset");
  MergeInto(&section, *model);
  section.key = model->key;
  section.key_loc = model->key_loc;
  section.loc = model->loc;
  *model = std::move(section);
  return absl::OkStatus();
}

absl::StatusOr<RunConfig> BuildRunConfig(ConfigNode tree, const std::string& source,
                                         const std::vector<std::string>& overrides) {
  absl::Status status = ApplyOverrides(&tree, overrides);
  if (!status.ok()) return status;
  if (ConfigNode* model = tree.Find("model"); model != nullptr && model->is_map()) {
    status = ResolvePreset(model, source, {});
    if (!status.ok()) return status;
  }
  RunConfig config;
  YamlReader reader = YamlReader::Reading(&tree);
  VisitRunConfig(reader, &config);
  status = reader.Finish();
  if (!status.ok()) return status;
  if (config.name.empty()) config.name = fs::path(source).stem().string();
  if (!ValidRunName(config.name)) {
    reader.Fail("name", absl::StrCat("expected a folder name (no '/', no spaces), got \"",
                                     config.name, "\""));
    return reader.status();
  }
  return config;
}

std::string Fnv1a64Hex(const std::string& text) { return absl::StrFormat("%016x", Fnv1a64(text)); }

}  // namespace

absl::StatusOr<RunConfig> LoadRunConfig(const std::string& path,
                                        const std::vector<std::string>& overrides) {
  absl::StatusOr<ConfigNode> tree = LoadYamlFile(path);
  if (!tree.ok()) return tree.status();
  return BuildRunConfig(std::move(*tree), path, overrides);
}

absl::StatusOr<RunConfig> ParseRunConfig(const std::string& yaml, const std::string& source_name,
                                         const std::vector<std::string>& overrides) {
  absl::StatusOr<ConfigNode> tree = LoadYamlText(yaml, source_name);
  if (!tree.ok()) return tree.status();
  return BuildRunConfig(std::move(*tree), source_name, overrides);
}

absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path) {
  absl::StatusOr<ConfigNode> tree = LoadYamlFile(path);
  if (!tree.ok()) return tree.status();
  ConfigNode* node = tree->Find("model");
  if (node != nullptr && !node->is_map()) {
    return ConfigError(node->loc, "model",
                       "expected a section (a mapping of keys), got " + node->Describe());
  }
  if (node == nullptr) node = &*tree;
  absl::Status status = ResolvePreset(node, path, {});
  if (!status.ok()) return status;
  ModelConfig model;
  YamlReader reader = YamlReader::Reading(node, "model");
  VisitModel(reader, &model);
  status = reader.Finish();
  if (!status.ok()) return status;
  return model;
}

std::string RunConfigToYaml(const RunConfig& config) {
  RunConfig copy = config;
  ConfigNode tree;
  YamlReader writer = YamlReader::Writing(&tree);
  VisitRunConfig(writer, &copy);
  return absl::StrCat(
      "# Resolved famtrain run config (inheritance, preset and --set overrides applied, defaults\n"
      "# filled in). `fam train --config <this file>` runs it again.\n",
      EmitYaml(tree));
}

absl::Status ResolveMicroBatch(RunConfig* config, int world) {
  TrainerConfig& t = config->trainer;
  if (t.micro_batch > 0) return absl::OkStatus();
  if (world < 1 || t.global_batch % world != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "trainer.global_batch %d cannot be split evenly over %d ranks (trainer.micro_batch is not "
        "set, so each rank would take global_batch / %d sequences): pick a global batch divisible "
        "by %d, or another -np",
        t.global_batch, world, world, world));
  }
  t.micro_batch = t.global_batch / world;
  t.micro_batch_derived = true;
  return absl::OkStatus();
}

std::string DescribeBatch(const TrainerConfig& t, int world) {
  const int64_t per_rank = t.global_batch / std::max(1, world);
  const int64_t accumulation = t.micro_batch > 0 ? per_rank / t.micro_batch : 0;
  return absl::StrFormat(
      "%d sequences = %d rank%s x %d micro-batch%s of %d (trainer.micro_batch %s)", t.global_batch,
      world, world == 1 ? "" : "s", accumulation, accumulation == 1 ? "" : "es", t.micro_batch,
      t.micro_batch_derived ? "derived" : "as set");
}

std::string ExplainConfig() {
  RunConfig defaults;
  std::vector<KeyDoc> docs;
  YamlReader explainer = YamlReader::Explaining(&docs);
  VisitRunConfig(explainer, &defaults);
  size_t path_width = 0, type_width = 0, default_width = 0;
  for (const KeyDoc& doc : docs) {
    path_width = std::max(path_width, doc.path.size());
    type_width = std::max(type_width, doc.type.size());
    default_width = std::max(default_width, doc.default_value.size());
  }
  std::string text =
      "famtrain run config keys: KEY  TYPE  DEFAULT  MEANING.\n"
      "A config may start with `base: <file>` and/or `include: [<files>]` (paths relative to it;\n"
      "merged first, its own keys win). `--set key.path=value` overrides any key afterwards.\n\n";
  for (const KeyDoc& doc : docs) {
    if (doc.type == "section" && doc.path.find('.') == std::string::npos) text += "\n";
    absl::StrAppend(
        &text, absl::StrFormat("%-*s  %-*s  %-*s  %s\n", static_cast<int>(path_width), doc.path,
                               static_cast<int>(type_width), doc.type,
                               static_cast<int>(default_width), doc.default_value, doc.doc));
  }
  return text;
}

std::string ModelConfigHash(const ModelConfig& model) {
  ModelConfig copy = model;
  ConfigNode tree;
  YamlReader writer = YamlReader::Writing(&tree);
  VisitModel(writer, &copy);
  tree.Erase("init_std");
  tree.Erase("training");
  // The pretrained-family variants enter the hash only when set, so the hash of a plain block
  // (and every checkpoint written before the variants existed) is unchanged.
  const ModelConfig plain;
  if (model.family == plain.family) tree.Erase("family");
  if (model.activation == plain.activation) tree.Erase("activation");
  if (model.qkv_bias == plain.qkv_bias) tree.Erase("qkv_bias");
  if (model.o_bias == plain.o_bias) tree.Erase("o_bias");
  if (model.mlp_bias == plain.mlp_bias) tree.Erase("mlp_bias");
  if (model.norm_weight_offset == plain.norm_weight_offset) tree.Erase("norm_weight_offset");
  if (model.embedding_scale == plain.embedding_scale) tree.Erase("embedding_scale");
  if (model.sandwich_norms == plain.sandwich_norms) tree.Erase("sandwich_norms");
  if (model.attn_softcap == plain.attn_softcap) tree.Erase("attn_softcap");
  if (model.final_softcap == plain.final_softcap) tree.Erase("final_softcap");
  if (model.query_scale_dim == plain.query_scale_dim) tree.Erase("query_scale_dim");
  if (model.rope_scaling == RopeScaling::kNone) tree.Erase("rope_scaling");
  return Fnv1a64Hex(FlattenYaml(tree));
}

std::string ConfigHash(const RunConfig& config) { return ModelConfigHash(config.model); }

}  // namespace fam
