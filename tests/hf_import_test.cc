// Hugging Face import and export (models/fam/hf_import.h, `fam import`, `fam export`): a small
// Llama checkpoint written here (config.json, two safetensors shards F32 + BF16, the index) imports
// to a model whose logits equal the independent spec reference (tests/fam_reference.h) with full
// and FAM attention; the FAM prompt is initialised as documented; unsupported settings and tensors
// are named; `fam import` → LoRA adapters → `fam export --merge` → `fam forward` reproduces the
// adapted model, also from an adapter-only checkpoint, and the exported config.json imports back.
#include "models/fam/hf_import.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "framework/autograd/node.h"
#include "framework/io/checkpoint.h"
#include "framework/io/npy.h"
#include "framework/io/safetensors.h"
#include "framework/ops/ops.h"
#include "gtest/gtest.h"
#include "models/fam/lora.h"
#include "models/fam/model.h"
#include "models/fam/weights_io.h"
#include "nlohmann/json.hpp"
#include "tests/fam_reference.h"
#include "tests/gradcheck.h"
#include "trainers/train/run_config.h"

namespace fam {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using reference::RefAttention;
using reference::RefConfig;
using reference::Reference;
using reference::RefWeights;

constexpr int64_t kVocab = 37, kHidden = 16, kFfn = 24, kLayers = 2, kHeads = 4, kKvHeads = 2;
constexpr int64_t kHeadDim = 4;

Json LlamaConfig() {
  return Json{{"architectures", {"LlamaForCausalLM"}},
              {"model_type", "llama"},
              {"vocab_size", kVocab},
              {"hidden_size", kHidden},
              {"intermediate_size", kFfn},
              {"num_hidden_layers", kLayers},
              {"num_attention_heads", kHeads},
              {"num_key_value_heads", kKvHeads},
              {"rms_norm_eps", 1e-5},
              {"rope_theta", 20000.0},
              {"hidden_act", "silu"},
              {"tie_word_embeddings", false},
              {"initializer_range", 0.05},
              {"max_position_embeddings", 4096},
              {"bos_token_id", 1},
              {"torch_dtype", "bfloat16"},
              {"rope_scaling", nullptr},
              {"attention_bias", false},
              {"foo_key", 3}};
}

struct HfWeights {
  std::vector<std::pair<std::string, Shape>> order;  // FORMATS.md order
  RefWeights values;                                 // exactly what the files store
};

// Random Llama weights (norm scales away from 1 so a norm that ignores them is caught). Tensors of
// layer 1 and after are rounded to bf16, the values the BF16 shard will hold.
HfWeights RandomWeights(bool tie, uint64_t seed) {
  HfWeights w;
  const int64_t q = kHeads * kHeadDim, kv = kKvHeads * kHeadDim;
  w.order.push_back({"model.embed_tokens.weight", {kVocab, kHidden}});
  for (int64_t i = 0; i < kLayers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    w.order.push_back({p + "input_layernorm.weight", {kHidden}});
    w.order.push_back({p + "self_attn.q_proj.weight", {q, kHidden}});
    w.order.push_back({p + "self_attn.k_proj.weight", {kv, kHidden}});
    w.order.push_back({p + "self_attn.v_proj.weight", {kv, kHidden}});
    w.order.push_back({p + "self_attn.o_proj.weight", {kHidden, q}});
    w.order.push_back({p + "post_attention_layernorm.weight", {kHidden}});
    w.order.push_back({p + "mlp.gate_proj.weight", {kFfn, kHidden}});
    w.order.push_back({p + "mlp.up_proj.weight", {kFfn, kHidden}});
    w.order.push_back({p + "mlp.down_proj.weight", {kHidden, kFfn}});
  }
  w.order.push_back({"model.norm.weight", {kHidden}});
  if (!tie) w.order.push_back({"lm_head.weight", {kVocab, kHidden}});
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal(0.0, 0.3);
  std::uniform_real_distribution<double> norm_scale(0.6, 1.4);
  for (const auto& [name, shape] : w.order) {
    std::vector<double> v(NumElements(shape));
    const bool is_norm = name.find("norm") != std::string::npos;
    const bool bf16 = name.rfind("model.layers.0.", 0) != 0 && name != "model.embed_tokens.weight";
    for (double& x : v) {
      x = is_norm ? norm_scale(gen) : normal(gen);
      float f = static_cast<float>(x);
      if (bf16) f = BF16::ToFloat(BF16::FromFloat(f));
      x = f;
    }
    w.values[name] = v;
  }
  return w;
}

void WriteJson(const fs::path& path, const Json& json) { std::ofstream(path) << json.dump(2); }

// A HF directory: config.json and the weights, as two shards (embeddings + layer 0 in F32, the
// rest in BF16) with model.safetensors.index.json, or as one model.safetensors. `extra` tensors
// are added to the first file.
void WriteHfDir(const fs::path& dir, const Json& config, const HfWeights& w, bool sharded,
                const std::vector<std::pair<std::string, Shape>>& extra = {}) {
  fs::create_directories(dir);
  WriteJson(dir / "config.json", config);
  std::vector<std::pair<std::string, Tensor>> first, second;
  for (const auto& [name, shape] : w.order) {
    Tensor t = Tensor::FromVector(w.values.at(name), shape, DType::kF32);
    const bool in_first =
        !sharded || name.rfind("model.layers.0.", 0) == 0 || name == "model.embed_tokens.weight";
    (in_first ? first : second).emplace_back(name, t);
  }
  for (const auto& [name, shape] : extra) first.emplace_back(name, Tensor::Ones(shape));
  const std::map<std::string, std::string> meta = {{"format", "pt"}};
  if (!sharded) {
    ASSERT_TRUE(io::WriteSafetensors((dir / "model.safetensors").string(), first, meta).ok());
    return;
  }
  const std::string a = "model-00001-of-00002.safetensors", b = "model-00002-of-00002.safetensors";
  ASSERT_TRUE(io::WriteSafetensors((dir / a).string(), first, meta).ok());
  ASSERT_TRUE(io::WriteSafetensors((dir / b).string(), second, meta, DType::kBF16).ok());
  Json map = Json::object();
  for (const auto& [name, t] : first) map[name] = a;
  for (const auto& [name, t] : second) map[name] = b;
  WriteJson(dir / "model.safetensors.index.json",
            Json{{"metadata", {{"total_size", 0}}}, {"weight_map", map}});
}

RefConfig RefFor(RefAttention type, int64_t block, int64_t memory, int64_t fam_length, bool tie) {
  RefConfig r;
  r.vocab_size = kVocab;
  r.d_model = kHidden;
  r.n_layers = kLayers;
  r.n_heads = kHeads;
  r.n_kv_heads = kKvHeads;
  r.head_dim = kHeadDim;
  r.ffn_dim = kFfn;
  r.norm_eps = 1e-5;
  r.rope_base = 20000.0;
  r.tie_embeddings = tie;
  r.type = type;
  r.block_size = block;
  r.memory_segments = memory;
  r.fam_length = fam_length;
  return r;
}

const std::vector<int64_t> kIds = {3, 17, 0, 36, 5, 5, 22, 9, 14, 30, 2};

std::vector<double> ModelLogits(const FamModel& model) {
  NoGradGuard no_grad;
  const int64_t t = static_cast<int64_t>(kIds.size());
  return model.Forward(Tensor::FromInts(kIds, {1, t})).logits.ToDoubles();
}

// max |a - b| / max(1, max |b|).
double RelDiff(const std::vector<double>& a, const std::vector<double>& b) {
  EXPECT_EQ(a.size(), b.size());
  double diff = 0, scale = 1;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    diff = std::max(diff, std::abs(a[i] - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return diff / scale;
}

bool Contains(const std::vector<std::string>& notes, const std::string& part) {
  for (const std::string& n : notes)
    if (n.find(part) != std::string::npos) return true;
  return false;
}

class HfImportTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_ = testing::FreshTestDir("fam_hf_test_"); }
  void TearDown() override { fs::remove_all(dir_); }
  std::string P(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

TEST_F(HfImportTest, ShardedLlamaMatchesReferenceWithFullAttention) {
  HfWeights w = RandomWeights(/*tie=*/false, 1);
  WriteHfDir(dir_ / "hf", LlamaConfig(), w, /*sharded=*/true,
             {{"model.layers.0.self_attn.rotary_emb.inv_freq", {2}}});
  HfImportOptions options;
  options.attention = AttentionConfig{AttentionType::kFull, 1024, 3, 64};
  absl::StatusOr<HfImportResult> r = ImportHfCheckpoint(P("hf"), P("out"), options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(Contains(r->notes, "foo_key")) << "unknown keys are listed";
  EXPECT_TRUE(Contains(r->notes, "rotary_emb.inv_freq"));

  absl::StatusOr<ModelConfig> config = LoadModelConfig(r->model_yaml);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->head_dim, kHeadDim);  // hidden_size / heads
  EXPECT_EQ(config->n_kv_heads, kKvHeads);
  EXPECT_EQ(config->norm_eps, 1e-5);
  EXPECT_EQ(config->rope_base, 20000.0);
  EXPECT_EQ(config->init_std, 0.05);
  EXPECT_EQ(config->attention.type, AttentionType::kFull);

  const std::vector<double> want =
      Reference(RefFor(RefAttention::kFull, 1, 0, 0, false), w.values).Logits(kIds);
  FamModel f64(*config, DType::kF64);
  ASSERT_TRUE(LoadModelWeights(f64, r->weights).ok());
  EXPECT_LT(RelDiff(ModelLogits(f64), want), 1e-9);
  FamModel f32(*config);
  ASSERT_TRUE(LoadModelWeights(f32, r->weights).ok());
  EXPECT_LT(RelDiff(ModelLogits(f32), want), 1e-5);
  // Without --dtype every tensor keeps its stored dtype.
  auto file = io::SafetensorsFile::Open(r->weights);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->Info("model.layers.0.mlp.up_proj.weight")->dtype, DType::kF32);
  EXPECT_EQ((*file)->Info("model.layers.1.mlp.up_proj.weight")->dtype, DType::kBF16);
}

TEST_F(HfImportTest, FamImportInitialisesThePromptAsDocumented) {
  HfWeights w = RandomWeights(/*tie=*/true, 2);
  Json config = LlamaConfig();
  config["tie_word_embeddings"] = true;
  // A tied checkpoint that still stores lm_head (some do): ignored.
  WriteHfDir(dir_ / "hf", config, w, /*sharded=*/false, {{"lm_head.weight", {kVocab, kHidden}}});
  HfImportOptions options;
  options.attention = AttentionConfig{AttentionType::kFam, 4, 1, 3};
  absl::StatusOr<HfImportResult> r = ImportHfCheckpoint(P("hf"), P("span"), options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(Contains(r->notes, "lm_head.weight"));
  absl::StatusOr<ModelConfig> mc = LoadModelConfig(r->model_yaml);
  ASSERT_TRUE(mc.ok()) << mc.status();
  EXPECT_TRUE(mc->tie_embeddings);
  EXPECT_EQ(mc->attention.type, AttentionType::kFam);
  EXPECT_EQ(mc->attention.fam_length, 3);

  auto prompt_of = [&](const std::string& weights) {
    auto file = io::SafetensorsFile::Open(weights);
    EXPECT_TRUE(file.ok());
    return (*(*file)->Load("model.fam.embeddings")).ToDoubles();
  };
  auto embed_rows = [&](const std::vector<int64_t>& ids) {
    std::vector<double> rows;
    for (int64_t id : ids) {
      const auto& e = w.values.at("model.embed_tokens.weight");
      rows.insert(rows.end(), e.begin() + id * kHidden, e.begin() + (id + 1) * kHidden);
    }
    return rows;
  };
  EXPECT_EQ(prompt_of(r->weights), embed_rows({18, 19, 20}));  // the span from vocab_size / 2

  // The imported FAM model against the reference (same weights, prompt included).
  RefWeights ref = w.values;
  ref["model.fam.embeddings"] = prompt_of(r->weights);
  FamModel model(*mc, DType::kF64);
  ASSERT_TRUE(LoadModelWeights(model, r->weights).ok());
  EXPECT_LT(RelDiff(ModelLogits(model),
                    Reference(RefFor(RefAttention::kFam, 4, 1, 3, true), ref).Logits(kIds)),
            1e-9);

  options.fam_init_start = 35;  // wraps around the vocabulary
  r = ImportHfCheckpoint(P("hf"), P("wrap"), options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(prompt_of(r->weights), embed_rows({35, 36, 0}));

  options.fam_init = FamInit::kNormal;
  options.seed = 9;
  r = ImportHfCheckpoint(P("hf"), P("normal"), options);
  ASSERT_TRUE(r.ok()) << r.status();
  FamModel fresh(*mc);
  fresh.InitializeWeights(9);  // the same stream as the model's own init, std = initializer_range
  EXPECT_EQ(prompt_of(r->weights), fresh.FindParameter("model.fam.embeddings").ToDoubles());
  double sum_sq = 0;
  for (double v : prompt_of(r->weights)) sum_sq += v * v;
  EXPECT_NEAR(std::sqrt(sum_sq / (3 * kHidden)), 0.05, 0.02);

  options.fam_init = FamInit::kTokenSpan;
  options.fam_init_start = kVocab;
  EXPECT_FALSE(ImportHfCheckpoint(P("hf"), P("bad"), options).ok());
}

TEST_F(HfImportTest, UnsupportedSettingsAndTensorsAreNamed) {
  auto error_of = [](Json config) {
    return ModelConfigFromHf(config, "hf/config.json", std::nullopt).status();
  };
  ASSERT_TRUE(error_of(LlamaConfig()).ok());
  struct Case {
    std::string key;
    Json value;
    std::string expect;
  };
  for (const Case& c : std::vector<Case>{
           {"rope_scaling", Json{{"rope_type", "yarn"}, {"factor", 4.0}}, "rope_scaling.rope_type"},
           {"rope_scaling", Json{{"rope_type", "llama3"}, {"factor", 8.0}},
            "rope_scaling.original_max_position_embeddings: missing"},
           {"rope_parameters", Json{{"rope_type", "dynamic"}}, "rope_parameters.rope_type"},
           {"attention_bias", "yes", "attention_bias"},
           {"partial_rotary_factor", 0.5, "partial_rotary_factor"},
           {"hidden_act", "gelu_pytorch_tanh", "hidden_act"},
           {"model_type", "gemma3", "q/k norms"},
           {"model_type", "qwen2", "Qwen2ForCausalLM"},
           {"num_attention_heads", "four", "num_attention_heads"},
           {"num_key_value_heads", 3, "n_kv_heads"}}) {
    Json config = LlamaConfig();
    config[c.key] = c.value;
    absl::Status s = error_of(config);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.key;
    EXPECT_NE(s.message().find(c.expect), std::string::npos) << s;
    EXPECT_NE(s.message().find("hf/config.json"), std::string::npos) << s;
  }
  Json no_hidden = LlamaConfig();
  no_hidden.erase("hidden_size");
  EXPECT_NE(error_of(no_hidden).message().find("hidden_size: missing"), std::string::npos);
  Json mistral = LlamaConfig();
  mistral["model_type"] = "mistral";
  mistral["architectures"] = {"MistralForCausalLM"};
  mistral["sliding_window"] = nullptr;
  EXPECT_TRUE(error_of(mistral).ok());

  // Weights: a bias (another architecture) and a missing tensor are named; nothing is written.
  HfWeights w = RandomWeights(false, 3);
  WriteHfDir(dir_ / "bias", LlamaConfig(), w, true,
             {{"model.layers.0.self_attn.q_proj.bias", {16}}});
  HfImportOptions options;
  absl::StatusOr<HfImportResult> r = ImportHfCheckpoint(P("bias"), P("out"), options);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("model.layers.0.self_attn.q_proj.bias"), std::string::npos)
      << r.status();
  EXPECT_FALSE(fs::exists(dir_ / "out"));
  w.order.erase(w.order.begin() + 10);  // model.layers.1.input_layernorm.weight
  WriteHfDir(dir_ / "missing", LlamaConfig(), w, false);
  r = ImportHfCheckpoint(P("missing"), P("out"), options);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("missing: model.layers.1.input_layernorm.weight"),
            std::string::npos)
      << r.status();
  fs::create_directories(dir_ / "empty");
  WriteJson(dir_ / "empty" / "config.json", LlamaConfig());
  EXPECT_EQ(ImportHfCheckpoint(P("empty"), P("out"), options).status().code(),
            absl::StatusCode::kNotFound);
}

// ---- the `fam` binary ----

using RunOutput = testing::CommandResult;
using testing::RunFam;

TEST_F(HfImportTest, ImportLoraExportForwardRoundTrip) {
  HfWeights w = RandomWeights(false, 4);
  WriteHfDir(dir_ / "hf", LlamaConfig(), w, true);
  RunOutput imported = RunFam("import --hf " + P("hf") + " --out " + P("imp") +
                              " --attention fam --block-size 4 --memory-segments 1 "
                              "--fam-length 2 --dtype f32");
  ASSERT_EQ(imported.exit_code, 0) << imported.output;
  EXPECT_NE(imported.output.find("foo_key"), std::string::npos) << imported.output;

  // Fine-tuned adapters (random B) on the imported base, and the adapted model's logits.
  absl::StatusOr<ModelConfig> config = LoadModelConfig(P("imp/model.yaml"));
  ASSERT_TRUE(config.ok()) << config.status();
  FamModel model(*config);
  ASSERT_TRUE(LoadModelWeights(model, P("imp/model.safetensors")).ok());
  LoraConfig lora;
  lora.rank = 2;
  lora.alpha = 4;
  ASSERT_TRUE(AttachLora(model, lora).ok());
  {
    NoGradGuard no_grad;
    uint64_t seed = 100;
    for (auto& [name, t] : LoraTrainableParameters(model))
      ops::CopyInPlace(t, testing::RandomTensor(t.shape(), DType::kF32, seed++, 0.2));
  }
  ASSERT_TRUE(SaveLoraAdapters(model, P("adapters.safetensors"), P("imp/model.safetensors")).ok());
  const std::vector<double> want = ModelLogits(model);
  std::ofstream(P("ids.txt")) << "3 17 0 36 5 5 22 9 14 30 2\n";

  RunOutput unmerged = RunFam("export --weights " + P("imp/model.safetensors") + " --adapters " +
                              P("adapters.safetensors") + " --out " + P("x.safetensors"));
  EXPECT_EQ(unmerged.exit_code, 2) << unmerged.output;
  EXPECT_NE(unmerged.output.find("--merge"), std::string::npos) << unmerged.output;

  fs::create_directories(dir_ / "exp");
  RunOutput exported = RunFam("export --weights " + P("imp/model.safetensors") + " --adapters " +
                              P("adapters.safetensors") + " --merge --out " +
                              P("exp/model.safetensors") + " --hf-config " + P("exp/config.json"));
  ASSERT_EQ(exported.exit_code, 0) << exported.output;
  auto forward = [&](const std::string& weights) {
    RunOutput f = RunFam("forward --model " + P("imp/model.yaml") + " --weights " + weights +
                         " --tokens " + P("ids.txt") + " --out " + P("logits.npy"));
    EXPECT_EQ(f.exit_code, 0) << f.output;
    absl::StatusOr<Tensor> logits = io::ReadNpy(P("logits.npy"));
    EXPECT_TRUE(logits.ok());
    return logits.ok() ? logits->ToDoubles() : std::vector<double>();
  };
  EXPECT_LT(
      testing::MaxAbsDiff(Tensor::FromVector(forward(P("exp/model.safetensors")), {11, kVocab}),
                          Tensor::FromVector(want, {11, kVocab})),
      1e-5);
  auto names = io::SafetensorsFile::Open(P("exp/model.safetensors"));
  ASSERT_TRUE(names.ok());
  for (const std::string& n : (*names)->names()) EXPECT_FALSE(IsLoraParameterName(n)) << n;

  RunOutput bf16 =
      RunFam("export --weights " + P("imp/model.safetensors") + " --adapters " +
             P("adapters.safetensors") + " --merge --dtype bf16 --out " + P("bf16.safetensors"));
  ASSERT_EQ(bf16.exit_code, 0) << bf16.output;
  // The bf16 export is the f32 export rounded (to nearest even), tensor by tensor.
  auto f32_file = io::SafetensorsFile::Open(P("exp/model.safetensors"));
  auto bf16_file = io::SafetensorsFile::Open(P("bf16.safetensors"));
  ASSERT_TRUE(f32_file.ok() && bf16_file.ok());
  EXPECT_EQ((*bf16_file)->names(), (*f32_file)->names());
  for (const std::string& n : (*f32_file)->names()) {
    EXPECT_EQ((*bf16_file)->Info(n)->dtype, DType::kBF16) << n;
    std::vector<float> full = (*(*f32_file)->Load(n)).ToFloats();
    std::vector<float> half = (*(*bf16_file)->Load(n)).ToFloats();
    ASSERT_EQ(full.size(), half.size());
    for (size_t i = 0; i < full.size(); ++i)
      ASSERT_EQ(half[i], BF16::ToFloat(BF16::FromFloat(full[i]))) << n << " " << i;
  }
  std::vector<double> bf16_logits = forward(P("bf16.safetensors"));
  ASSERT_EQ(bf16_logits.size(), want.size());
  EXPECT_LT(RelDiff(bf16_logits, want), 0.2);  // bf16 weights: close, not equal

  // The exported directory (config.json + model.safetensors) imports back to the same model.
  RunOutput again = RunFam("import --hf " + P("exp") + " --out " + P("again"));
  ASSERT_EQ(again.exit_code, 0) << again.output;
  absl::StatusOr<ModelConfig> back = LoadModelConfig(P("again/model.yaml"));
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(ModelConfigHash(*back), ModelConfigHash(*config));
  EXPECT_LT(RelDiff(forward(P("again/model.safetensors")), want), 1e-5);

  // Adapters on another base are refused, naming the base they belong to.
  HfWeights other = RandomWeights(false, 5);
  WriteHfDir(dir_ / "hf2", LlamaConfig(), other, true);
  ASSERT_EQ(RunFam("import --hf " + P("hf2") + " --out " + P("imp2") +
                   " --attention fam --block-size 4 --memory-segments 1 --fam-length 2")
                .exit_code,
            0);
  RunOutput wrong = RunFam("export --weights " + P("imp2/model.safetensors") + " --adapters " +
                           P("adapters.safetensors") + " --merge --out " + P("w.safetensors"));
  EXPECT_EQ(wrong.exit_code, 2) << wrong.output;
  EXPECT_NE(wrong.output.find(P("imp/model.safetensors")), std::string::npos) << wrong.output;

  RunOutput bad = RunFam("import --hf " + P("hf") + " --out " + P("x") + " --attention sparse");
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.output.find("--attention"), std::string::npos) << bad.output;
}

TEST_F(HfImportTest, ExportFromAnAdapterOnlyCheckpoint) {
  HfWeights w = RandomWeights(false, 6);
  WriteHfDir(dir_ / "hf", LlamaConfig(), w, false);
  HfImportOptions options;
  options.attention = AttentionConfig{AttentionType::kFam, 4, 1, 2};
  absl::StatusOr<HfImportResult> imported = ImportHfCheckpoint(P("hf"), P("imp"), options);
  ASSERT_TRUE(imported.ok()) << imported.status();
  FamModel model(imported->config);
  ASSERT_TRUE(LoadModelWeights(model, imported->weights).ok());
  LoraConfig lora;
  lora.rank = 2;
  lora.targets = {"q_proj", "v_proj", "down_proj"};
  ASSERT_TRUE(AttachLora(model, lora).ok());
  {
    NoGradGuard no_grad;
    uint64_t seed = 200;
    for (auto& [name, t] : LoraTrainableParameters(model))
      ops::CopyInPlace(t, testing::RandomTensor(t.shape(), DType::kF32, seed++, 0.2));
  }
  // What the fine-tuning trainer writes (models/fam/lora.h): adapter tensors as the checkpoint's
  // model and the LoRA metadata in trainer_state["lora"].
  io::CheckpointOptions ckpt_options;
  ckpt_options.dir = P("run/checkpoints");
  io::CheckpointManager manager(ckpt_options);
  io::CheckpointData data;
  data.step = 5;
  data.config_hash = "lora";
  data.model = LoraTrainableParameters(model);
  data.trainer_state["lora"] = LoraMetadata(model, imported->weights);
  ASSERT_TRUE(manager.Save(data).ok());
  const std::string ckpt = P("run/checkpoints/step-00000005");
  std::ofstream(P("ids.txt")) << "3 17 0 36 5 5 22 9 14 30 2\n";

  RunOutput no_base = RunFam("export --checkpoint " + ckpt + " --model " + imported->model_yaml +
                             " --merge --out " + P("m.safetensors"));
  EXPECT_EQ(no_base.exit_code, 2) << no_base.output;
  EXPECT_NE(no_base.output.find("--weights"), std::string::npos) << no_base.output;
  RunOutput ok =
      RunFam("export --checkpoint " + ckpt + " --weights " + imported->weights + " --model " +
             imported->model_yaml + " --merge --out " + P("m.safetensors"));
  ASSERT_EQ(ok.exit_code, 0) << ok.output;
  RunOutput f =
      RunFam("forward --model " + imported->model_yaml + " --weights " + P("m.safetensors") +
             " --tokens " + P("ids.txt") + " --out " + P("logits.npy"));
  ASSERT_EQ(f.exit_code, 0) << f.output;
  absl::StatusOr<Tensor> logits = io::ReadNpy(P("logits.npy"));
  ASSERT_TRUE(logits.ok());
  EXPECT_LT(RelDiff(logits->ToDoubles(), ModelLogits(model)), 1e-5);

  // A full (pretraining) checkpoint: the model config comes from the run's config.yaml.
  FamModel plain(imported->config);
  ASSERT_TRUE(LoadModelWeights(plain, imported->weights).ok());
  fs::create_directories(dir_ / "full");
  fs::copy_file(imported->model_yaml, dir_ / "full" / "config.yaml");
  ckpt_options.dir = P("full/checkpoints");
  io::CheckpointManager full_manager(ckpt_options);
  io::CheckpointData full;
  full.step = 7;
  full.config_hash = "full";
  full.model = plain.NamedParameters();
  ASSERT_TRUE(full_manager.Save(full).ok());
  RunOutput from_full = RunFam("export --checkpoint " + P("full/checkpoints/step-00000007") +
                               " --out " + P("full.safetensors"));
  ASSERT_EQ(from_full.exit_code, 0) << from_full.output;
  f = RunFam("forward --model " + imported->model_yaml + " --weights " + P("full.safetensors") +
             " --tokens " + P("ids.txt") + " --out " + P("logits.npy"));
  ASSERT_EQ(f.exit_code, 0) << f.output;
  logits = io::ReadNpy(P("logits.npy"));
  ASSERT_TRUE(logits.ok());
  EXPECT_EQ(RelDiff(logits->ToDoubles(), ModelLogits(plain)), 0.0);
  RunOutput both = RunFam("export --checkpoint " + P("full/checkpoints/step-00000007") +
                          " --weights " + imported->weights + " --out " + P("x.safetensors"));
  EXPECT_EQ(both.exit_code, 2) << both.output;
}

}  // namespace
}  // namespace fam
