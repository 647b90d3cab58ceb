// The run configuration of `fam train` / `fam eval`: typed sections with defaults, loaded from YAML
// (with `base:` / `include:` inheritance, model presets and `--set a.b=value` overrides; errors
// name the file, line:column and key), emitted back as the resolved YAML saved as
// runs/<name>/config.yaml, explained key by key for `fam config --explain`, and hashed (model
// section) for checkpoint compatibility checks. The schema itself is written once, in
// run_config.cc, against YamlReader (framework/io/yaml_reader.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "framework/core/device.h"
#include "framework/core/dtype.h"
#include "framework/optim/schedule.h"  // ScheduleType
#include "models/fam/lora.h"           // LoraConfig: the `lora:` section
#include "models/fam/model_config.h"

namespace fam {

struct DataConfig {
  std::string train;      // path or glob of training token shards
  std::string val;        // path or glob of validation token shards ("" = none)
  std::string tokenizer;  // SentencePiece .model the shards were made with
  bool shuffle = true;    // loader shuffles sequences (deterministically, from trainer.seed)
};

enum class OptimizerType { kAdamW, kAdafactor };

struct AdafactorConfig {
  bool factored = true;         // factored second moments for matrices
  double clip_threshold = 1.0;  // update clipping (RMS of the update)
};

struct OptimizerConfig {
  OptimizerType type = OptimizerType::kAdamW;
  double lr = 3e-4;  // peak learning rate
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;  // decoupled; matrices only unless the switches below say so
  bool decay_embeddings = false;
  bool decay_norms = false;
  double grad_clip = 1.0;  // global L2 norm; 0 = off
  AdafactorConfig adafactor;
};

struct ScheduleConfig {
  ScheduleType type = ScheduleType::kCosine;
  int64_t warmup_steps = 0;   // linear warmup from 0
  double min_lr_ratio = 0.1;  // final lr = min_lr_ratio · lr (cosine, linear)
  int64_t decay_steps = 0;    // steps of warmup + decay; 0 = trainer.steps
};

enum class TrainerType { kPretrain, kFinetune };

struct TrainerConfig {
  TrainerType type = TrainerType::kPretrain;
  int64_t steps = 1000;
  int64_t global_batch = 8;  // sequences per optimizer step (all ranks)
  // Sequences per rank per forward; 0 = derived at start by ResolveMicroBatch (each rank's whole
  // share of global_batch, or on CUDA the largest part of it the memory plan fits).
  int64_t micro_batch = 0;
  // Set when micro_batch was derived rather than read: files written from the config keep 0, so a
  // run resumed on another number of ranks derives it again.
  bool micro_batch_derived = false;
  int64_t seq_len = 2048;
  DType precision = DType::kF32;  // kF32 or kBF16
  int64_t seed = 0;
  DeviceType device = DeviceType::kCPU;
  int64_t threads = 0;  // CPU threads; 0 = all cores
  int64_t log_interval = 10;
  int64_t eval_interval = 0;  // 0 = off
  int64_t eval_batches = 8;
  int64_t max_consecutive_skips = 5;  // non-finite steps skipped in a row before giving up
  bool recompute = false;             // activation recomputation in backward
  // Tokens per chunk of the fused LM head + cross-entropy (ops::LinearCrossEntropy): the training
  // loss never holds more than loss_chunk_tokens × vocab logits. 0 = unchunked (full logits).
  int64_t loss_chunk_tokens = 2048;
  // Per-GPU memory budget in GiB for the start check of `fam train` (trainers/train/memory_plan.h):
  // a run whose estimate exceeds it is refused. 0 = the GPU's own memory on CUDA, no check on CPU.
  double memory_budget_gb = 0;
};

// Per-token loss weights of instruction data by segment role (FAM_SPEC.md §7). Token shards
// prepared by `fam prepare-instructions` store each token's role; when trainer.type is finetune the
// loader weighs the roles with these values (they win over the ones recorded in data.json).
struct LossWeightsConfig {
  double instruction = 0.0;  // instruction / prompt segments
  double answer = 1.0;       // answer / response segments
  double repeat = 0.1;       // the "[repeat random segment]:" copy appended to each example
};

// LoRA fine-tuning of a pretrained base (trainer.type: finetune; the adapters follow `lora:`).
struct FinetuneConfig {
  std::string base_weights;  // base safetensors file, or a checkpoint / checkpoints / run dir
  std::string adapters;      // optional adapter safetensors to start from ("" = fresh adapters)
  LossWeightsConfig loss_weights;
  // Tokens of the random span copied after each example by `fam prepare-instructions --config`
  // (0 = no repeat segment).
  int64_t repeat_tokens = 256;
};

struct CheckpointConfig {
  int64_t interval = 1000;  // steps; 0 = only the final checkpoint
  int64_t keep_last = 2;
  int64_t keep_every = 0;  // also keep every N-th step's checkpoint; 0 = off
  bool async = false;
  bool save_final = true;       // false: no checkpoint at the end (benchmarks, smoke runs)
  std::string resume = "auto";  // auto | never | <checkpoint directory>
};

struct EvalConfig {
  std::vector<int64_t> passkey_lengths;  // filler lengths in tokens; empty = no PassKey eval
  int64_t passkey_trials = 10;
  int64_t val_batches = 0;  // 0 = the whole validation set
  int64_t max_new_tokens = 16;
};

enum class DistBackend { kAuto, kMpi, kNccl };
enum class ZeroStage { kNone, kZero1, kZero2, kZero3 };

struct DistributedConfig {
  DistBackend backend = DistBackend::kAuto;
  double bucket_mb = 25.0;  // gradient all-reduce bucket size
  ZeroStage zero = ZeroStage::kNone;
  double timeout_s = 300.0;
};

struct RunConfig {
  std::string name;  // default: the config file's name without extension
  std::string run_dir = "runs";
  ModelConfig model;
  DataConfig data;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  TrainerConfig trainer;
  LoraConfig lora;          // used when trainer.type is finetune
  FinetuneConfig finetune;  // used when trainer.type is finetune
  CheckpointConfig checkpoint;
  EvalConfig eval;
  DistributedConfig distributed;

  std::string RunPath() const { return run_dir + "/" + name; }
};

// Loads a run config: inheritance resolved, overrides ("a.b.c=value") applied, the model preset
// loaded, every value checked. Errors are InvalidArgument, one line with file:line:column and key.
absl::StatusOr<RunConfig> LoadRunConfig(const std::string& path,
                                        const std::vector<std::string>& overrides = {});
// The same from YAML text standing for the file `source_name` (relative paths resolve against it).
absl::StatusOr<RunConfig> ParseRunConfig(const std::string& yaml, const std::string& source_name,
                                         const std::vector<std::string>& overrides = {});
// Loads a model config from a file whose top level is a `model:` section (other sections are
// ignored, so a run config works too) or the model keys directly; presets allowed.
absl::StatusOr<ModelConfig> LoadModelConfig(const std::string& path);

// The resolved config as YAML (every key, no preset, no inheritance): loading it gives this config.
std::string RunConfigToYaml(const RunConfig& config);

// Fills in a derived trainer.micro_batch (0 in the config) for `world` ranks: global_batch / world,
// with micro_batch_derived set. An explicit value is left for the trainer to check. Fails when the
// global batch cannot be split evenly over the ranks.
absl::Status ResolveMicroBatch(RunConfig* config, int world);
// The batch arithmetic in words, e.g. "8 sequences = 2 ranks x 1 micro-batch of 4 (derived)".
std::string DescribeBatch(const TrainerConfig& t, int world);
// Every key with its type, default and meaning (`fam config --explain`).
std::string ExplainConfig();
// 16 hex digits: a stable hash of the model's architecture keys (all model keys except init_std
// and training.*, which do not change what the weights mean). Checkpoints record it.
std::string ConfigHash(const RunConfig& config);
std::string ModelConfigHash(const ModelConfig& model);

}  // namespace fam
