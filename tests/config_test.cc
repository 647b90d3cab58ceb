// Typed YAML configuration: the generic reader (types, ranges, unknown keys, enums, locations),
// inheritance (base/include), presets, --set overrides, the emitted resolved config round trip, the
// presets and reference config against the spec, and many bad configs whose error must name the
// file, line:column and key.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <vector>

#include "framework/io/edit_distance.h"
#include "framework/io/yaml_reader.h"
#include "gtest/gtest.h"
#include "trainers/train/run_config.h"

namespace fam {
namespace {

namespace fs = std::filesystem;

fs::path SourceDir() {
  if (const char* env = std::getenv("FAM_SOURCE_DIR"); env != nullptr && *env != '\0') return env;
  return fs::path(__FILE__).parent_path().parent_path();
}

// The status must be one InvalidArgument line starting "<where>: <key>: " and containing `what`.
::testing::AssertionResult IsConfigError(const absl::Status& status, const std::string& where,
                                         const std::string& key, const std::string& what) {
  if (status.ok()) return ::testing::AssertionFailure() << "expected an error, got OK";
  const std::string message(status.message());
  const std::string prefix = key.empty() ? where + ": " : where + ": " + key + ": ";
  if (status.code() != absl::StatusCode::kInvalidArgument ||
      message.find('\n') != std::string::npos || message.rfind(prefix, 0) != 0 ||
      message.find(what) == std::string::npos) {
    return ::testing::AssertionFailure() << "got \"" << message << "\"\nwanted prefix \"" << prefix
                                         << "\" and \"" << what << "\"";
  }
  return ::testing::AssertionSuccess();
}

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::path(::testing::TempDir()) /
           (std::string("fam_config_") + info->name() + "_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    setenv("FAM_CONFIG_DIR", (SourceDir() / "configs").c_str(), 1);
  }
  void TearDown() override {
    fs::remove_all(dir_);
    unsetenv("FAM_CONFIG_DIR");
  }
  std::string Write(const std::string& name, const std::string& text) {
    const fs::path path = dir_ / name;
    fs::create_directories(path.parent_path());
    std::ofstream(path) << text;
    return path.string();
  }
  RunConfig Load(const std::string& name, const std::string& text,
                 const std::vector<std::string>& overrides = {}) {
    absl::StatusOr<RunConfig> config = LoadRunConfig(Write(name, text), overrides);
    EXPECT_TRUE(config.ok()) << config.status();
    return config.ok() ? *config : RunConfig{};
  }
  fs::path dir_;
};

// ---------------------------------------------------------------------------------------------
// Good configs.

TEST_F(ConfigTest, EmptyFileGivesDefaultsAndNameFromFile) {
  RunConfig c = Load("my_run.yaml", "");
  const RunConfig defaults;
  EXPECT_EQ(c.name, "my_run");
  EXPECT_EQ(c.run_dir, "runs");
  EXPECT_EQ(c.RunPath(), "runs/my_run");
  EXPECT_EQ(c.model.d_model, defaults.model.d_model);
  EXPECT_EQ(c.trainer.steps, 1000);
  EXPECT_EQ(c.trainer.max_consecutive_skips, 5);
  EXPECT_EQ(c.checkpoint.resume, "auto");
  EXPECT_FALSE(c.optimizer.decay_embeddings);
  EXPECT_FALSE(c.optimizer.decay_norms);
  EXPECT_TRUE(c.eval.passkey_lengths.empty());
}

TEST_F(ConfigTest, FullConfigParsesToExpectedValues) {
  RunConfig c = Load("full.yaml", R"(
name: exp1
run_dir: /tmp/famruns
model:
  vocab_size: 512
  d_model: 64
  n_layers: 2
  n_heads: 4
  n_kv_heads: 1
  head_dim: 16
  ffn_dim: 96
  norm_eps: 1e-5
  rope_base: 500000
  tie_embeddings: yes
  init_std: 0.01
  attention: {type: bswa, block_size: 16, memory_segments: 2, fam_length: 4}
  training:
    random_position_offset: off
    state_passing_prob: 0
data:
  train: data/train-*.bin
  val: data/val.bin
  tokenizer: data/sp.model
  shuffle: false
optimizer:
  type: adafactor
  lr: 1e-4
  beta1: 0
  beta2: 0.99
  eps: 1e-30
  weight_decay: 0
  decay_embeddings: true
  decay_norms: True
  grad_clip: 0
  adafactor: {factored: false, clip_threshold: 2.5}
schedule: {type: linear, warmup_steps: 10, min_lr_ratio: 0, decay_steps: 90}
trainer:
  type: finetune
  steps: 100
  global_batch: 12
  micro_batch: 3
  seq_len: 256
  precision: bf16
  seed: 42
  device: cuda
  threads: 2
  log_interval: 5
  eval_interval: 50
  eval_batches: 2
  max_consecutive_skips: 3
  recompute: true
lora:
  rank: 8
  alpha: 32
  dropout: 0.05
  targets: [q_proj, "mlp.*", layers.1.self_attn.o_proj]
  train_fam: false
  seed: 7
finetune:
  base_weights: base/model.safetensors
  adapters: start/adapters.safetensors
  loss_weights: {instruction: 0.25, answer: 2, repeat: 0}
  repeat_tokens: 0
checkpoint: {interval: 0, keep_last: 1, keep_every: 500, async: true, resume: never}
eval: {passkey_lengths: [1024, 4096], passkey_trials: 3, val_batches: 7, max_new_tokens: 6}
distributed: {backend: nccl, bucket_mb: 12.5, zero: zero2, timeout_s: 30}
)");
  EXPECT_EQ(c.name, "exp1");
  EXPECT_EQ(c.run_dir, "/tmp/famruns");
  EXPECT_EQ(c.model.vocab_size, 512);
  EXPECT_EQ(c.model.d_model, 64);
  EXPECT_EQ(c.model.n_layers, 2);
  EXPECT_EQ(c.model.n_heads, 4);
  EXPECT_EQ(c.model.n_kv_heads, 1);
  EXPECT_EQ(c.model.head_dim, 16);
  EXPECT_EQ(c.model.ffn_dim, 96);
  EXPECT_DOUBLE_EQ(c.model.norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.model.rope_base, 500000);
  EXPECT_TRUE(c.model.tie_embeddings);
  EXPECT_DOUBLE_EQ(c.model.init_std, 0.01);
  EXPECT_EQ(c.model.attention.type, AttentionType::kBswa);
  EXPECT_EQ(c.model.attention.block_size, 16);
  EXPECT_EQ(c.model.attention.memory_segments, 2);
  EXPECT_EQ(c.model.attention.fam_length, 4);
  EXPECT_FALSE(c.model.training.random_position_offset);
  EXPECT_EQ(c.model.training.state_passing_prob, 0.0);
  EXPECT_EQ(c.data.train, "data/train-*.bin");
  EXPECT_EQ(c.data.val, "data/val.bin");
  EXPECT_EQ(c.data.tokenizer, "data/sp.model");
  EXPECT_FALSE(c.data.shuffle);
  EXPECT_EQ(c.optimizer.type, OptimizerType::kAdafactor);
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 1e-4);
  EXPECT_EQ(c.optimizer.beta1, 0.0);
  EXPECT_DOUBLE_EQ(c.optimizer.beta2, 0.99);
  EXPECT_DOUBLE_EQ(c.optimizer.eps, 1e-30);
  EXPECT_EQ(c.optimizer.weight_decay, 0.0);
  EXPECT_TRUE(c.optimizer.decay_embeddings);
  EXPECT_TRUE(c.optimizer.decay_norms);
  EXPECT_EQ(c.optimizer.grad_clip, 0.0);
  EXPECT_FALSE(c.optimizer.adafactor.factored);
  EXPECT_DOUBLE_EQ(c.optimizer.adafactor.clip_threshold, 2.5);
  EXPECT_EQ(c.schedule.type, ScheduleType::kLinear);
  EXPECT_EQ(c.schedule.warmup_steps, 10);
  EXPECT_EQ(c.schedule.min_lr_ratio, 0.0);
  EXPECT_EQ(c.schedule.decay_steps, 90);
  EXPECT_EQ(c.trainer.type, TrainerType::kFinetune);
  EXPECT_EQ(c.trainer.steps, 100);
  EXPECT_EQ(c.trainer.global_batch, 12);
  EXPECT_EQ(c.trainer.micro_batch, 3);
  EXPECT_EQ(c.trainer.seq_len, 256);
  EXPECT_EQ(c.trainer.precision, DType::kBF16);
  EXPECT_EQ(c.trainer.seed, 42);
  EXPECT_EQ(c.trainer.device, DeviceType::kCUDA);
  EXPECT_EQ(c.trainer.threads, 2);
  EXPECT_EQ(c.trainer.log_interval, 5);
  EXPECT_EQ(c.trainer.eval_interval, 50);
  EXPECT_EQ(c.trainer.eval_batches, 2);
  EXPECT_EQ(c.trainer.max_consecutive_skips, 3);
  EXPECT_TRUE(c.trainer.recompute);
  EXPECT_EQ(c.lora.rank, 8);
  EXPECT_EQ(c.lora.alpha, 32.0);
  EXPECT_DOUBLE_EQ(c.lora.dropout, 0.05);
  EXPECT_EQ(c.lora.targets,
            (std::vector<std::string>{"q_proj", "mlp.*", "layers.1.self_attn.o_proj"}));
  EXPECT_FALSE(c.lora.train_fam);
  EXPECT_EQ(c.lora.seed, 7u);
  EXPECT_EQ(c.finetune.base_weights, "base/model.safetensors");
  EXPECT_EQ(c.finetune.adapters, "start/adapters.safetensors");
  EXPECT_EQ(c.finetune.loss_weights.instruction, 0.25);
  EXPECT_EQ(c.finetune.loss_weights.answer, 2.0);
  EXPECT_EQ(c.finetune.loss_weights.repeat, 0.0);
  EXPECT_EQ(c.finetune.repeat_tokens, 0);
  EXPECT_EQ(c.checkpoint.interval, 0);
  EXPECT_EQ(c.checkpoint.keep_last, 1);
  EXPECT_EQ(c.checkpoint.keep_every, 500);
  EXPECT_TRUE(c.checkpoint.async);
  EXPECT_EQ(c.checkpoint.resume, "never");
  EXPECT_EQ(c.eval.passkey_lengths, (std::vector<int64_t>{1024, 4096}));
  EXPECT_EQ(c.eval.passkey_trials, 3);
  EXPECT_EQ(c.eval.val_batches, 7);
  EXPECT_EQ(c.eval.max_new_tokens, 6);
  EXPECT_EQ(c.distributed.backend, DistBackend::kNccl);
  EXPECT_DOUBLE_EQ(c.distributed.bucket_mb, 12.5);
  EXPECT_EQ(c.distributed.zero, ZeroStage::kZero2);
  EXPECT_DOUBLE_EQ(c.distributed.timeout_s, 30);
}

TEST_F(ConfigTest, PresetsMatchTheSpecTable) {
  const fs::path models = SourceDir() / "configs" / "models";
  absl::StatusOr<ModelConfig> tiny = LoadModelConfig((models / "tiny.yaml").string());
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  EXPECT_EQ(tiny->vocab_size, 2048);
  EXPECT_EQ(tiny->d_model, 128);
  EXPECT_EQ(tiny->n_layers, 4);
  EXPECT_EQ(tiny->n_heads, 4);
  EXPECT_EQ(tiny->n_kv_heads, 2);
  EXPECT_EQ(tiny->head_dim, 32);
  EXPECT_EQ(tiny->ffn_dim, 384);
  EXPECT_TRUE(tiny->tie_embeddings);
  EXPECT_EQ(tiny->attention.type, AttentionType::kFam);
  EXPECT_EQ(tiny->attention.block_size, 64);
  EXPECT_EQ(tiny->attention.memory_segments, 1);
  EXPECT_EQ(tiny->attention.fam_length, 8);
  // FAM_SPEC.md §7: layers, d_model, ffn_dim, heads, kv heads, approx. non-embedding params.
  struct Row {
    const char* name;
    int64_t layers, d_model, ffn, heads, kv;
    double params;
  };
  for (const Row& row :
       {Row{"1b", 18, 1536, 12288, 12, 12, 1.2e9}, Row{"8b", 32, 4096, 16384, 32, 32, 8.6e9},
        Row{"24b", 56, 4096, 32768, 32, 1, 24.5e9}}) {
    SCOPED_TRACE(row.name);
    absl::StatusOr<ModelConfig> m =
        LoadModelConfig((models / (row.name + std::string(".yaml"))).string());
    ASSERT_TRUE(m.ok()) << m.status();
    EXPECT_EQ(m->vocab_size, 256000);
    EXPECT_EQ(m->head_dim, 128);
    EXPECT_EQ(m->n_layers, row.layers);
    EXPECT_EQ(m->d_model, row.d_model);
    EXPECT_EQ(m->ffn_dim, row.ffn);
    EXPECT_EQ(m->n_heads, row.heads);
    EXPECT_EQ(m->n_kv_heads, row.kv);
    EXPECT_FALSE(m->tie_embeddings);
    EXPECT_EQ(m->attention.type, AttentionType::kFam);
    EXPECT_EQ(m->attention.block_size, 1024);
    EXPECT_EQ(m->attention.memory_segments, 3);
    EXPECT_EQ(m->attention.fam_length, 64);
    EXPECT_NEAR(static_cast<double>(m->NonEmbeddingParameterCount()), row.params,
                0.01 * row.params);
  }
}

TEST_F(ConfigTest, PresetIsTheBottomLayerOfTheModelSection) {
  RunConfig c = Load("p.yaml",
                     "model:\n  preset: tiny\n  d_model: 256\n  attention:\n"
                     "    type: bswa\n");
  EXPECT_EQ(c.model.d_model, 256);                          // given here
  EXPECT_EQ(c.model.n_layers, 4);                           // from the preset
  EXPECT_EQ(c.model.attention.type, AttentionType::kBswa);  // given here
  EXPECT_EQ(c.model.attention.block_size, 64);              // preset, same section
  EXPECT_TRUE(c.model.tie_embeddings);
  // Keys from a base file also beat the preset named in the child; --set can switch the preset.
  Write("base.yaml", "model:\n  n_layers: 7\n");
  RunConfig d = Load("child.yaml", "base: base.yaml\nmodel:\n  preset: tiny\n");
  EXPECT_EQ(d.model.n_layers, 7);
  EXPECT_EQ(d.model.d_model, 128);
  RunConfig e =
      Load("child2.yaml", "base: base.yaml\nmodel:\n  preset: tiny\n", {"model.preset=8b"});
  EXPECT_EQ(e.model.d_model, 4096);
  EXPECT_EQ(e.model.n_layers, 7);
  // LoadModelConfig: bare model keys with a preset, and a run config's model section.
  absl::StatusOr<ModelConfig> bare =
      LoadModelConfig(Write("bare.yaml", "preset: tiny\nffn_dim: 512\n"));
  ASSERT_TRUE(bare.ok()) << bare.status();
  EXPECT_EQ(bare->ffn_dim, 512);
  EXPECT_EQ(bare->d_model, 128);
  absl::StatusOr<ModelConfig> run = LoadModelConfig(
      Write("run.yaml", "trainer: {steps: 3}\nmodel: {preset: tiny, n_layers: 1}\n"));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->n_layers, 1);
}

TEST_F(ConfigTest, PresetIsFoundUpwardFromTheConfigFile) {
  unsetenv("FAM_CONFIG_DIR");
  Write("proj/configs/models/mini.yaml", "model:\n  preset: mini_base\n  d_model: 48\n");
  Write("proj/configs/models/mini_base.yaml",
        "n_layers: 3\nd_model: 32\nn_heads: 2\n"
        "n_kv_heads: 2\nhead_dim: 8\n");
  RunConfig c = Load("proj/configs/experiments/x.yaml", "model:\n  preset: mini\n");
  EXPECT_EQ(c.model.d_model, 48);  // mini over mini_base
  EXPECT_EQ(c.model.n_layers, 3);
  EXPECT_EQ(c.model.head_dim, 8);
}

TEST_F(ConfigTest, BaseAndIncludeMergeInOrderThisFileWins) {
  Write("common/base.yaml",
        "trainer:\n  steps: 1\n  seq_len: 100\n  seed: 1\n"
        "model: {preset: tiny, attention: {block_size: 32}}\n");
  Write("common/inc1.yaml", "trainer: {steps: 2, seed: 2, log_interval: 3}\n");
  Write("inc2.yaml", "trainer: {steps: 3}\ndata: {train: a.bin}\n");
  const std::string child =
      "base: ../common/base.yaml\n"
      "include: [../common/inc1.yaml, ../inc2.yaml]\n"
      "trainer:\n  steps: 4\nmodel:\n  attention: {type: bswa}\n";
  RunConfig c = Load("exp/child.yaml", child);
  EXPECT_EQ(c.trainer.steps, 4);         // own key
  EXPECT_EQ(c.trainer.seed, 2);          // include beats base
  EXPECT_EQ(c.trainer.seq_len, 100);     // base only
  EXPECT_EQ(c.trainer.log_interval, 3);  // include only
  EXPECT_EQ(c.data.train, "a.bin");
  EXPECT_EQ(c.model.attention.block_size, 32);  // deep merge of model.attention
  EXPECT_EQ(c.model.attention.type, AttentionType::kBswa);
  EXPECT_EQ(c.model.d_model, 128);
  EXPECT_EQ(c.name, "child");
  // --set wins over everything; a single include may be a string.
  RunConfig d = Load("exp/child.yaml", child, {"trainer.steps=5"});
  EXPECT_EQ(d.trainer.steps, 5);
  RunConfig e = Load("one.yaml", "include: inc2.yaml\n");
  EXPECT_EQ(e.trainer.steps, 3);
}

TEST_F(ConfigTest, OverridesAreTypedYamlScalars) {
  RunConfig c =
      Load("o.yaml", "trainer: {steps: 10}\n",
           {"trainer.steps=100", "model.attention.type=bswa", "optimizer.lr=1e-3",
            "eval.passkey_lengths=[10, 20]", "data.train=*.bin",
            "data.val=", "trainer.recompute=true", "name=123", "schedule={type: constant}"});
  EXPECT_EQ(c.trainer.steps, 100);
  EXPECT_EQ(c.model.attention.type, AttentionType::kBswa);
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 1e-3);
  EXPECT_EQ(c.eval.passkey_lengths, (std::vector<int64_t>{10, 20}));
  EXPECT_EQ(c.data.train, "*.bin");  // not valid YAML (an alias): taken as a string
  EXPECT_EQ(c.data.val, "");
  EXPECT_TRUE(c.trainer.recompute);
  EXPECT_EQ(c.name, "123");
  EXPECT_EQ(c.schedule.type, ScheduleType::kConstant);
}

TEST_F(ConfigTest, EmittedYamlRoundTrips) {
  Write("base.yaml", "model: {preset: tiny}\noptimizer: {lr: 0.000123456789, eps: 1e-9}\n");
  RunConfig c = Load("rt.yaml",
                     "base: base.yaml\nname: '007'\ndata: {train: 'a: b', tokenizer: 'true', "
                     "val: ''}\neval: {passkey_lengths: [3, 1]}\n",
                     {"model.norm_eps=3.3e-7", "trainer.seed=9", "model.rope_base=12345.678"});
  const std::string text = RunConfigToYaml(c);
  EXPECT_EQ(text.find("preset:"), std::string::npos) << text;
  EXPECT_EQ(text.find("\nbase:"), std::string::npos) << text;
  const std::string saved = Write("runs/rt/config.yaml", text);
  absl::StatusOr<RunConfig> again = LoadRunConfig(saved);
  ASSERT_TRUE(again.ok()) << again.status() << "\n" << text;
  EXPECT_EQ(RunConfigToYaml(*again), text);
  EXPECT_EQ(again->name, "007");
  EXPECT_EQ(again->data.train, "a: b");
  EXPECT_EQ(again->data.tokenizer, "true");
  EXPECT_EQ(again->data.val, "");
  EXPECT_EQ(again->model.norm_eps, 3.3e-7);  // bit-exact
  EXPECT_EQ(again->model.rope_base, 12345.678);
  EXPECT_EQ(again->optimizer.lr, 0.000123456789);
  EXPECT_EQ(again->model.d_model, 128);
  EXPECT_EQ(again->eval.passkey_lengths, (std::vector<int64_t>{3, 1}));
  EXPECT_EQ(ConfigHash(*again), ConfigHash(c));
  // Text too (ParseRunConfig): identical.
  absl::StatusOr<RunConfig> parsed = ParseRunConfig(text, "whatever.yaml");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(RunConfigToYaml(*parsed), text);
}

TEST_F(ConfigTest, ReferenceConfigListsEveryKeyWithItsDefault) {
  const std::string path = (SourceDir() / "configs" / "reference.yaml").string();
  absl::StatusOr<RunConfig> reference = LoadRunConfig(path);
  ASSERT_TRUE(reference.ok()) << reference.status();
  RunConfig defaults;
  defaults.name = "reference";
  EXPECT_EQ(RunConfigToYaml(*reference), RunConfigToYaml(defaults));
  // Same key set as the schema writes.
  auto keys = [](const ConfigNode& tree) {
    std::set<std::string> out;
    std::string flat = FlattenYaml(tree);
    for (size_t start = 0; start < flat.size();) {
      size_t end = flat.find('\n', start);
      if (end == std::string::npos) end = flat.size();
      const std::string line = flat.substr(start, end - start);
      out.insert(line.substr(0, line.find_first_of("=[")));
      start = end + 1;
    }
    return out;
  };
  absl::StatusOr<ConfigNode> file = LoadYamlFile(path);
  absl::StatusOr<ConfigNode> schema = ParseYamlText(RunConfigToYaml(defaults), "schema");
  ASSERT_TRUE(file.ok() && schema.ok());
  EXPECT_EQ(keys(*file), keys(*schema));
  // --explain names every key, preset included.
  const std::string explain = ExplainConfig();
  for (const std::string& key : keys(*schema))
    EXPECT_NE(explain.find(key), std::string::npos) << key;
  EXPECT_NE(explain.find("model.preset"), std::string::npos);
  EXPECT_NE(explain.find("one of full|bswa|fam"), std::string::npos);
}

TEST_F(ConfigTest, LoraAndFinetuneSectionsRoundTripAndOverride) {
  RunConfig c = Load("ft.yaml",
                     "trainer: {type: finetune}\n"
                     "finetune: {base_weights: 'runs/base', adapters: a.safetensors}\n"
                     "lora: {targets: ['layers.1.*', q_proj], rank: 4}\n",
                     {"lora.alpha=8", "finetune.loss_weights.repeat=0.5"});
  EXPECT_EQ(c.trainer.type, TrainerType::kFinetune);
  EXPECT_EQ(c.lora.targets, (std::vector<std::string>{"layers.1.*", "q_proj"}));
  EXPECT_EQ(c.lora.rank, 4);
  EXPECT_EQ(c.lora.alpha, 8.0);
  EXPECT_EQ(c.finetune.loss_weights.repeat, 0.5);
  EXPECT_EQ(c.finetune.loss_weights.answer, 1.0);  // default
  const std::string text = RunConfigToYaml(c);
  absl::StatusOr<RunConfig> again = ParseRunConfig(text, "again.yaml");
  ASSERT_TRUE(again.ok()) << again.status() << "\n" << text;
  EXPECT_EQ(RunConfigToYaml(*again), text);
  EXPECT_EQ(again->lora.targets, c.lora.targets);
  EXPECT_EQ(again->finetune.base_weights, "runs/base");
  // A list override replaces the whole list; defaults are the paper's.
  RunConfig d = Load("d.yaml", "", {"lora.targets=[v_proj, down_proj]"});
  EXPECT_EQ(d.lora.targets, (std::vector<std::string>{"v_proj", "down_proj"}));
  const RunConfig defaults;
  EXPECT_EQ(defaults.lora.rank, 64);
  EXPECT_EQ(defaults.lora.alpha, 64.0);
  EXPECT_EQ(defaults.lora.dropout, 0.0);
  EXPECT_EQ(defaults.lora.targets, (std::vector<std::string>{"attention", "mlp"}));
  EXPECT_TRUE(defaults.lora.train_fam);
  EXPECT_EQ(defaults.lora.seed, 0u);
  EXPECT_EQ(defaults.finetune.loss_weights.instruction, 0.0);
  EXPECT_EQ(defaults.finetune.loss_weights.answer, 1.0);
  EXPECT_EQ(defaults.finetune.loss_weights.repeat, 0.1);
  EXPECT_EQ(defaults.finetune.repeat_tokens, 256);
  const std::string explain = ExplainConfig();
  EXPECT_NE(explain.find("lora.targets"), std::string::npos);
  EXPECT_NE(explain.find("list of strings"), std::string::npos);
  EXPECT_NE(explain.find("finetune.loss_weights.repeat"), std::string::npos);
}

TEST_F(ConfigTest, FinetunePresetsFollowThePaperRecipe) {
  const fs::path experiments = SourceDir() / "configs" / "experiments";
  struct Row {
    const char* name;
    double lr;
    int64_t d_model;
  };
  for (const Row& row : {Row{"finetune_1b", 1e-4, 1536}, Row{"finetune_8b", 3e-3, 4096},
                         Row{"finetune_24b", 3e-3, 4096}}) {
    SCOPED_TRACE(row.name);
    absl::StatusOr<RunConfig> c =
        LoadRunConfig((experiments / (std::string(row.name) + ".yaml")).string());
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_EQ(c->model.d_model, row.d_model);
    EXPECT_EQ(c->trainer.type, TrainerType::kFinetune);
    EXPECT_EQ(c->trainer.seq_len, 8704);  // 8.5k = 8.5 blocks of 1024
    EXPECT_EQ(c->trainer.global_batch, 128);
    EXPECT_EQ(c->trainer.steps, 50000);
    EXPECT_EQ(c->optimizer.type, OptimizerType::kAdafactor);
    EXPECT_EQ(c->optimizer.beta1, 0.9);
    EXPECT_EQ(c->optimizer.beta2, 0.99);
    EXPECT_EQ(c->optimizer.lr, row.lr);
    EXPECT_EQ(c->schedule.type, ScheduleType::kConstant);
    EXPECT_EQ(c->schedule.warmup_steps, 0);
    EXPECT_EQ(c->lora.rank, 64);
    EXPECT_EQ(c->lora.targets, (std::vector<std::string>{"attention", "mlp"}));
    EXPECT_TRUE(c->lora.train_fam);
    EXPECT_EQ(c->finetune.loss_weights.instruction, 0.0);
    EXPECT_EQ(c->finetune.loss_weights.answer, 1.0);
    EXPECT_EQ(c->finetune.loss_weights.repeat, 0.1);
    EXPECT_EQ(c->finetune.repeat_tokens, 256);
    EXPECT_FALSE(c->finetune.base_weights.empty());
  }
  absl::StatusOr<RunConfig> tiny =
      LoadRunConfig((experiments / "finetune_tiny_passkey.yaml").string());
  ASSERT_TRUE(tiny.ok()) << tiny.status();
  EXPECT_EQ(tiny->trainer.type, TrainerType::kFinetune);
  EXPECT_EQ(tiny->model.d_model, 128);
  EXPECT_EQ(tiny->optimizer.type, OptimizerType::kAdafactor);
  // Examples up to ~1.7k tokens fit a window; fillers start beyond the BSWA receptive field.
  const ModelConfig& m = tiny->model;
  EXPECT_GT(600, m.n_layers * (m.attention.memory_segments + 1) * m.attention.block_size);
  EXPECT_GE(tiny->trainer.seq_len, 2048);
}

TEST_F(ConfigTest, ConfigHashCoversTheArchitectureOnly) {
  RunConfig a;
  const std::string hash = ConfigHash(a);
  EXPECT_EQ(hash.size(), 16u);
  EXPECT_EQ(hash.find_first_not_of("0123456789abcdef"), std::string::npos);
  RunConfig b = a;
  b.trainer.steps = 7;
  b.model.init_std = 0.5;
  b.model.training.state_passing_prob = 0;
  EXPECT_EQ(ConfigHash(b), hash);
  b.model.attention.fam_length = 32;
  EXPECT_NE(ConfigHash(b), hash);
  RunConfig c = a;
  c.model.d_model = 1024;
  EXPECT_NE(ConfigHash(c), hash);
  EXPECT_EQ(ModelConfigHash(a.model), hash);
  // Golden value: if this changes, checkpoints written before no longer match their config.
  EXPECT_EQ(hash, "6b72814bdb7d6d75");
}

// The generic reader on a schema of its own: reading, writing back, explaining, unknown keys.
struct Toy {
  enum class Color { kRed, kBlue };
  int64_t count = 3;
  double ratio = 0.5;
  Color color = Color::kRed;
  std::vector<int64_t> sizes = {1, 2};
  std::string label = "x";
};

void VisitToy(YamlReader& r, Toy* t) {
  r.Get("count", &t->count, 1, "how many");
  r.Section("inner", [&](YamlReader& s) {
    s.Get("ratio", &t->ratio, InRange(0, 1), "a ratio");
    s.GetEnum("color", &t->color, {{"red", Toy::Color::kRed}, {"blue", Toy::Color::kBlue}});
    s.Get("sizes", &t->sizes, Positive());
  });
  r.Get("label", &t->label);
}

TEST(YamlReader, ReadsWritesAndExplainsOneSchema) {
  absl::StatusOr<ConfigNode> tree =
      ParseYamlText("count: 9\ninner:\n  color: blue\n  sizes: [4]\n", "toy.yaml");
  ASSERT_TRUE(tree.ok()) << tree.status();
  Toy toy;
  YamlReader reader = YamlReader::Reading(&*tree);
  VisitToy(reader, &toy);
  ASSERT_TRUE(reader.Finish().ok()) << reader.status();
  EXPECT_EQ(toy.count, 9);
  EXPECT_EQ(toy.ratio, 0.5);
  EXPECT_EQ(toy.color, Toy::Color::kBlue);
  EXPECT_EQ(toy.sizes, std::vector<int64_t>{4});
  ConfigNode out;
  YamlReader writer = YamlReader::Writing(&out);
  VisitToy(writer, &toy);
  EXPECT_EQ(FlattenYaml(out),
            "count=9\ninner.color=blue\ninner.ratio=0.5\ninner.sizes[0]=4\n"
            "label=x");
  std::vector<KeyDoc> docs;
  YamlReader explainer = YamlReader::Explaining(&docs);
  Toy defaults;
  VisitToy(explainer, &defaults);
  ASSERT_EQ(docs.size(), 6u);
  EXPECT_EQ(docs[0].path, "count");
  EXPECT_EQ(docs[0].type, "integer >= 1");
  EXPECT_EQ(docs[0].default_value, "3");
  EXPECT_EQ(docs[2].path, "inner.ratio");
  EXPECT_EQ(docs[2].type, "number in [0, 1]");
  EXPECT_EQ(docs[3].type, "one of red|blue");
  EXPECT_EQ(docs[4].default_value, "[1, 2]");
  // Unknown keys: the closest known key is suggested, at the key's own line:column.
  absl::StatusOr<ConfigNode> typo = ParseYamlText("inner:\n  colr: red\n", "toy.yaml");
  ASSERT_TRUE(typo.ok());
  YamlReader typo_reader = YamlReader::Reading(&*typo);
  VisitToy(typo_reader, &toy);
  EXPECT_TRUE(IsConfigError(typo_reader.Finish(), "toy.yaml:2:3", "inner.colr",
                            "unknown key (did you mean \"color\"?)"));
}

TEST(YamlReader, MergeAndOverridesKeepLocations) {
  absl::StatusOr<ConfigNode> base = ParseYamlText("a:\n  b: 1\n  c: 2\nd: [1]\n", "base.yaml");
  absl::StatusOr<ConfigNode> over = ParseYamlText("a:\n  c: 3\nd: [5, 6]\n", "over.yaml");
  ASSERT_TRUE(base.ok() && over.ok());
  MergeInto(&*base, *over);
  EXPECT_EQ(FlattenYaml(*base), "a.b=1\na.c=3\nd[0]=5\nd[1]=6");
  EXPECT_EQ(base->FindPath("a.b")->loc.ToString(), "base.yaml:2:6");
  EXPECT_EQ(base->FindPath("a.c")->loc.ToString(), "over.yaml:2:6");
  ASSERT_TRUE(ApplyOverrides(&*base, {"a.c=x", "e.f.g='7'"}).ok());
  EXPECT_EQ(base->FindPath("a.c")->loc.ToString(), "--set");
  EXPECT_EQ(base->FindPath("e.f.g")->scalar, "7");
  EXPECT_TRUE(base->FindPath("e.f.g")->quoted);
  EXPECT_EQ(FlattenYaml(*base), "a.b=1\na.c=x\nd[0]=5\nd[1]=6\ne.f.g=\"7\"");
}

// ---------------------------------------------------------------------------------------------
// Bad configs: every error is one line naming file:line:column (or --set), the key path, and what
// was wrong.

struct BadCase {
  const char* yaml;
  std::vector<std::string> overrides;
  const char* where;  // ":line:column" after the file's path, or "--set"
  const char* key;
  const char* what;
};

TEST_F(ConfigTest, BadConfigsNameFileLineColumnAndKey) {
  const std::vector<BadCase> cases = {
      {"model:\n  d_model: abc\n",
       {},
       ":2:12",
       "model.d_model",
       "expected an integer >= 1, got \"abc\""},
      {"trainer:\n  steps: 1.5\n",
       {},
       ":2:10",
       "trainer.steps",
       "expected an integer >= 1, got 1.5"},
      {"optimizer:\n  lr: [1, 2]\n",
       {},
       ":2:7",
       "optimizer.lr",
       "expected a number > 0, got a sequence"},
      {"model:\n  tie_embeddings: maybe\n",
       {},
       ":2:19",
       "model.tie_embeddings",
       "expected true or false, got \"maybe\""},
      {"model:\n  tie_embeddings: 1\n",
       {},
       ":2:19",
       "model.tie_embeddings",
       "expected true or false, got 1"},
      {"trainer:\n  steps: 0\n", {}, ":2:10", "trainer.steps", "expected an integer >= 1, got 0"},
      {"optimizer:\n  beta1: 1.0\n",
       {},
       ":2:10",
       "optimizer.beta1",
       "expected a number in [0, 1), got 1.0"},
      {"optimizer:\n  weight_decay: -0.1\n",
       {},
       ":2:17",
       "optimizer.weight_decay",
       "expected a number >= 0, got -0.1"},
      {"optimizer:\n  lr: 0\n", {}, ":2:7", "optimizer.lr", "expected a number > 0, got 0"},
      {"optimizer:\n  lr: .nan\n", {}, ":2:7", "optimizer.lr", "expected a number > 0"},
      {"model:\n  training:\n    state_passing_prob: 1.5\n",
       {},
       ":3:25",
       "model.training.state_passing_prob",
       "expected a number in [0, 1], got 1.5"},
      {"trainr:\n  steps: 5\n", {}, ":1:1", "trainr", "unknown key (did you mean \"trainer\"?)"},
      {"model:\n  attention:\n    blok_size: 3\n",
       {},
       ":3:5",
       "model.attention.blok_size",
       "unknown key (did you mean \"block_size\"?)"},
      {"colour: red\n", {}, ":1:1", "colour", "unknown key (known keys here: name, run_dir, model"},
      {"model:\n  attention:\n    type: sparse\n",
       {},
       ":3:11",
       "model.attention.type",
       "expected one of full|bswa|fam, got \"sparse\""},
      {"optimizer:\n  type: sgd\n",
       {},
       ":2:9",
       "optimizer.type",
       "expected one of adamw|adafactor, got \"sgd\""},
      {"distributed:\n  zero: 4\n",
       {},
       ":2:9",
       "distributed.zero",
       "expected one of none|zero1|zero2|zero3, got 4"},
      {"model:\n  d_model: 64\n  d_model: 128\n",
       {},
       ":3:3",
       "model.d_model",
       "duplicate key (first written at line 2)"},
      {"trainer:\n  steps: \"100\"\n",
       {},
       ":2:10",
       "trainer.steps",
       "got the quoted string \"100\""},
      {"trainer: 5\n", {}, ":1:10", "trainer", "expected a section (a mapping of keys), got 5"},
      {"- a\n- b\n", {}, ":1:1", "", "the top level must be a mapping of keys, got a sequence"},
      {"trainer:\n  steps: 99999999999999999999\n",
       {},
       ":2:10",
       "trainer.steps",
       "expected an integer >= 1"},
      {"trainer:\n  steps:\n",
       {},
       ":2:3",
       "trainer.steps",
       "expected an integer >= 1, got an empty value"},
      {"name: a/b\n", {}, ":1:7", "name", "expected a folder name"},
      {"checkpoint:\n  resume: \"\"\n",
       {},
       ":2:11",
       "checkpoint.resume",
       "expected auto, never or a checkpoint directory"},
      {"eval:\n  passkey_lengths: [1024, x]\n",
       {},
       ":2:27",
       "eval.passkey_lengths[1]",
       "expected an integer >= 1, got \"x\""},
      {"eval:\n  passkey_lengths: 1024\n",
       {},
       ":2:20",
       "eval.passkey_lengths",
       "expected a list of integers >= 1 like [1, 2], got 1024"},
      {"data:\n  train: [a, b]\n", {}, ":2:10", "data.train", "expected a string, got a sequence"},
      {"include: {a: 1}\n", {}, ":1:10", "include", "expected a file path or a list of them"},
      {"trainer:\n  global_batch: 10\n  micro_batch: 4\n",
       {},
       ":2:17",
       "trainer.global_batch",
       "must be a multiple of trainer.micro_batch (4), got 10"},
      {"model:\n  n_heads: 4\n  n_kv_heads: 3\n",
       {},
       ":3:15",
       "model.n_kv_heads",
       "must divide n_heads (4), got 3"},
      {"model:\n  preset: tiny\n  head_dim: 3\n",
       {},
       ":3:13",
       "model.head_dim",
       "must be even and positive"},
      {"model:\n  attention:\n    fam_length: -1\n",
       {},
       ":3:17",
       "model.attention.fam_length",
       "expected an integer >= 0, got -1"},
      {"model:\n  preset: huge\n", {}, ":2:11", "model.preset", "no preset \"huge\" (available: "},
      {"model:\n  preset: [tiny]\n", {}, ":2:11", "model.preset", "expected a preset name"},
      {"model:\n  d_model: [1, 2\ntrainer: {}\n",
       {},
       ":3:8",
       "",
       "YAML syntax error: end of sequence flow not found"},
      {"lora:\n  rank: 0\n", {}, ":2:9", "lora.rank", "expected an integer >= 1, got 0"},
      {"lora:\n  alpha: 0\n", {}, ":2:10", "lora.alpha", "expected a number > 0, got 0"},
      {"lora:\n  dropout: 1\n", {}, ":2:12", "lora.dropout", "expected a number in [0, 1), got 1"},
      {"lora:\n  targets: attention\n",
       {},
       ":2:12",
       "lora.targets",
       "expected a list of strings like [a, b], got \"attention\""},
      {"lora:\n  targets: []\n",
       {},
       ":2:12",
       "lora.targets",
       "expected at least one target, e.g. [attention, mlp]"},
      {"lora:\n  targets: [attention, [mlp]]\n",
       {},
       ":2:24",
       "lora.targets[1]",
       "expected a string, got a sequence"},
      {"lora:\n  rnak: 4\n", {}, ":2:3", "lora.rnak", "unknown key (did you mean \"rank\"?)"},
      {"lora:\n  seed: -1\n", {}, ":2:9", "lora.seed", "expected an integer >= 0, got -1"},
      {"finetune:\n  loss_weights:\n    answer: -1\n",
       {},
       ":3:13",
       "finetune.loss_weights.answer",
       "expected a number >= 0, got -1"},
      {"finetune:\n  repeat_tokens: -5\n",
       {},
       ":2:18",
       "finetune.repeat_tokens",
       "expected an integer >= 0, got -5"},
      {"finetune:\n  base_weigths: a.safetensors\n",
       {},
       ":2:3",
       "finetune.base_weigths",
       "unknown key (did you mean \"base_weights\"?)"},
      {"finetune:\n  base_weights: [a, b]\n",
       {},
       ":2:17",
       "finetune.base_weights",
       "expected a string, got a sequence"},
      {"trainer:\n  type: finetune\nfinetune:\n  adapters: a.safetensors\n",
       {},
       ":3:1",
       "finetune.base_weights",
       "required when trainer.type is finetune"},
      {"trainer:\n  type: finetune\n",
       {},
       ":2:9",
       "trainer.type",
       "finetune needs finetune.base_weights: required when trainer.type is finetune"},
      // Overrides: the source is --set.
      {"trainer:\n  steps: 3\n",
       {"trainer.stepz=3"},
       "--set",
       "trainer.stepz",
       "unknown key (did you mean \"steps\"?)"},
      {"",
       {"trainer.steps=abc"},
       "--set",
       "trainer.steps",
       "expected an integer >= 1, got \"abc\""},
      {"", {"trainer.steps"}, "--set", "", "expected key.path=value, got \"trainer.steps\""},
      {"trainer:\n  steps: 3\n",
       {"trainer.steps.x=1"},
       "--set",
       "trainer.steps",
       "is a value, not a section: cannot set trainer.steps.x"},
      {"", {"model..type=fam"}, "--set", "", "bad key path \"model..type\""},
      {"",
       {"model.attention.type=sparse"},
       "--set",
       "model.attention.type",
       "expected one of full|bswa|fam"},
  };
  int index = 0;
  for (const BadCase& bad : cases) {
    const std::string path = Write("bad" + std::to_string(index++) + ".yaml", bad.yaml);
    SCOPED_TRACE(bad.yaml);
    absl::StatusOr<RunConfig> config = LoadRunConfig(path, bad.overrides);
    const std::string where = bad.where[0] == ':' ? path + bad.where : bad.where;
    EXPECT_TRUE(IsConfigError(config.status(), where, bad.key, bad.what));
  }
}

TEST_F(ConfigTest, FileErrorsPointIntoTheFileThatWroteTheKey) {
  // A missing config file.
  const std::string missing = (dir_ / "nope.yaml").string();
  EXPECT_TRUE(IsConfigError(LoadRunConfig(missing).status(), missing, "",
                            "cannot open config file: No such file or directory"));
  // A missing base file: reported at the `base:` value.
  const std::string a = Write("a.yaml", "trainer: {steps: 2}\nbase: other.yaml\n");
  EXPECT_TRUE(IsConfigError(LoadRunConfig(a).status(), a + ":2:7", "base",
                            "cannot open \"" + (dir_ / "other.yaml").string() + "\""));
  // A device or an oversized file named as a base: refused, not read to the end.
  const std::string dev = Write("dev.yaml", "base: /dev/zero\n");
  EXPECT_TRUE(IsConfigError(LoadRunConfig(dev).status(), dev + ":1:7", "base",
                            "cannot open \"/dev/zero\": is not a regular file"));
  const std::string huge = Write("huge.yaml", "# " + std::string((16 << 20) + 10, 'x') + "\n");
  const std::string big = Write("big.yaml", "base: huge.yaml\n");
  EXPECT_TRUE(
      IsConfigError(LoadRunConfig(big).status(), big + ":1:7", "base", "too large for a config"));
  // A cycle through base and include: reported where it closes.
  const std::string b = Write("b.yaml", "base: c.yaml\n");
  const std::string c = Write("c.yaml", "include:\n  - d.yaml\n");
  const std::string d = Write("d.yaml", "base: b.yaml\n");
  EXPECT_TRUE(IsConfigError(LoadRunConfig(b).status(), d + ":1:7", "base",
                            "inheritance cycle: " + b + " -> " + c + " -> " + d + " -> " + b));
  const std::string self = Write("self.yaml", "include: [self.yaml]\n");
  EXPECT_TRUE(IsConfigError(LoadRunConfig(self).status(), self + ":1:11", "include[0]",
                            "inheritance cycle"));
  // An unknown key written in a base file is reported in the base file.
  const std::string base = Write("base.yaml", "trainer:\n  seed: 1\n  stepz: 5\n");
  const std::string child = Write("child.yaml", "base: base.yaml\ntrainer:\n  steps: 7\n");
  EXPECT_TRUE(IsConfigError(LoadRunConfig(child).status(), base + ":3:3", "trainer.stepz",
                            "did you mean \"steps\"?"));
  // A syntax error in an included file names that file.
  const std::string broken = Write("broken.yaml", "a: [1,\n");
  const std::string includer = Write("includer.yaml", "include: broken.yaml\n");
  absl::Status status = LoadRunConfig(includer).status();
  EXPECT_NE(status.message().find(broken + ":"), std::string::npos) << status;
  EXPECT_NE(status.message().find("YAML syntax error"), std::string::npos) << status;
  // A bad value inside a preset file is reported in the preset file; a preset cycle is an error.
  unsetenv("FAM_CONFIG_DIR");
  Write("proj/configs/models/broken.yaml", "model:\n  d_model: -4\n");
  const std::string user = Write("proj/configs/x.yaml", "model:\n  preset: broken\n");
  status = LoadRunConfig(user).status();
  EXPECT_NE(status.message().find("broken.yaml:2:12: model.d_model: expected an integer >= 1"),
            std::string::npos)
      << status;
  Write("proj/configs/models/p.yaml", "model:\n  preset: q\n");
  Write("proj/configs/models/q.yaml", "preset: p\n");
  const std::string cyclic = Write("proj/configs/y.yaml", "model:\n  preset: p\n");
  status = LoadRunConfig(cyclic).status();
  EXPECT_NE(status.message().find("model.preset: preset cycle: p -> q -> p"), std::string::npos)
      << status;
  // LoadModelConfig reports with the model key path too.
  const std::string model = Write("m.yaml", "d_model: 8\nn_layer: 2\n");
  EXPECT_TRUE(IsConfigError(LoadModelConfig(model).status(), model + ":2:1", "model.n_layer",
                            "unknown key (did you mean \"n_layers\"?)"));
}

// The distance behind every "did you mean" (config keys, sweep axes): optimal string alignment.
TEST(EditDistanceTest, CountsEditsAndAdjacentSwaps) {
  EXPECT_EQ(io::EditDistance("learning_rate", "learning_rate"), 0u);
  EXPECT_EQ(io::EditDistance("laerning", "learning"), 1u);  // one swap
  EXPECT_EQ(io::EditDistance("kitten", "sitting"), 3u);
  EXPECT_EQ(io::EditDistance("", "abc"), 3u);
  EXPECT_EQ(io::EditDistance("abc", ""), 3u);
  EXPECT_EQ(io::EditDistance("ca", "abc"), 3u);  // a swapped pair is not edited again (OSA)
  EXPECT_EQ(io::EditDistance("steps", "step"), 1u);
}

}  // namespace
}  // namespace fam
