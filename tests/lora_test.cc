// LoRA adapters (framework/nn/lora.h, models/fam/lora.h): a zero B leaves the model unchanged,
// AdamW on the trainable set moves only adapters and the FAM prompt (base bit-identical) and lowers
// the loss, merged weights reproduce the adapted model, gradients of the adapted Linear match
// finite differences, dropout masks are keyed and inverted, adapter files round-trip and refuse a
// base they were not trained on.
#include "framework/nn/lora.h"

#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "framework/autograd/node.h"
#include "framework/io/safetensors.h"
#include "framework/nn/module.h"
#include "framework/ops/ops.h"
#include "framework/optim/adamw.h"
#include "gtest/gtest.h"
#include "models/fam/lora.h"
#include "models/fam/model.h"
#include "models/fam/weights_io.h"
#include "tests/gradcheck.h"
#include "tests/tiny_model_config.h"

namespace fam {
namespace {

namespace fs = std::filesystem;
using testing::Gradcheck;
using testing::MaxAbsDiff;
using testing::RandomTensor;

// TinyModelConfig with another vocabulary, init scale and FAM length.
ModelConfig TinyConfig() {
  ModelConfig c = testing::TinyModelConfig(AttentionType::kFam);
  c.vocab_size = 37;
  c.init_std = 0.2;
  c.attention.fam_length = 2;
  c.training.random_position_offset = false;
  c.training.state_passing_prob = 0.0;
  return c;
}

Tensor Tokens(int64_t batch, int64_t t, int64_t vocab, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::vector<int64_t> ids(batch * t);
  for (int64_t& id : ids) id = static_cast<int64_t>(gen() % static_cast<uint64_t>(vocab));
  return Tensor::FromInts(ids, {batch, t});
}

Tensor Logits(const FamModel& model, const Tensor& tokens) {
  NoGradGuard no_grad;
  return model.Forward(tokens).logits;
}

// Gives every adapter B random values so that adapters change the output.
void RandomizeB(FamModel& model, uint64_t seed, double scale = 0.1) {
  NoGradGuard no_grad;
  for (auto& [name, t] : model.NamedParameters())
    if (name.find("lora_B") != std::string::npos)
      ops::CopyInPlace(t, RandomTensor(t.shape(), t.dtype(), seed++, scale));
}

bool BitIdentical(const Tensor& a, const Tensor& b) {
  std::vector<float> x = a.ToFloats(), y = b.ToFloats();
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

class LoraFiles : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::FreshTestDir("fam_lora_test_");
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

TEST(Lora, ZeroBLeavesLogitsUnchangedAndFreezesTheBase) {
  FamModel model(TinyConfig());
  model.InitializeWeights(1);
  Tensor tokens = Tokens(2, 11, 37, 3);
  Tensor before = Logits(model, tokens);
  LoraConfig lora;
  lora.rank = 4;
  lora.alpha = 8;
  absl::StatusOr<std::vector<std::string>> names = AttachLora(model, lora);
  ASSERT_TRUE(names.ok()) << names.status();
  EXPECT_EQ(names->size(), 14u);  // 7 projections × 2 layers (paper: all attention and FF)
  EXPECT_EQ(names->front(), "model.layers.0.self_attn.q_proj");
  EXPECT_EQ(MaxAbsDiff(Logits(model, tokens), before), 0.0);

  Tensor a = model.FindParameter("model.layers.1.mlp.down_proj.lora_A.weight");
  Tensor b = model.FindParameter("model.layers.1.mlp.down_proj.lora_B.weight");
  ASSERT_TRUE(a.defined() && b.defined());
  EXPECT_EQ(a.shape(), (Shape{4, 24}));
  EXPECT_EQ(b.shape(), (Shape{16, 4}));
  double a_abs = 0;
  for (double v : a.ToDoubles()) {
    EXPECT_LE(std::abs(v), 1.0 / std::sqrt(24.0));
    a_abs += std::abs(v);
  }
  EXPECT_GT(a_abs, 0.0);
  for (double v : b.ToDoubles()) EXPECT_EQ(v, 0.0);

  std::set<std::string> trainable;
  for (auto& [name, t] : LoraTrainableParameters(model)) trainable.insert(name);
  EXPECT_EQ(trainable.size(), 29u);  // 14 A + 14 B + the FAM prompt
  EXPECT_TRUE(trainable.count("model.fam.embeddings"));
  for (auto& [name, t] : model.NamedParameters())
    EXPECT_EQ(t.requires_grad(), trainable.count(name) > 0) << name;
  EXPECT_FALSE(AttachLora(model, lora).ok());  // twice is refused
}

TEST(Lora, AdamWMovesOnlyAdaptersAndPromptAndLowersTheLoss) {
  for (bool train_fam : {true, false}) {
    SCOPED_TRACE(train_fam ? "train_fam" : "frozen prompt");
    FamModel model(TinyConfig());
    model.InitializeWeights(2);
    std::vector<std::pair<std::string, Tensor>> base;
    for (auto& [name, t] : model.NamedParameters()) base.emplace_back(name, t.clone().detach());
    LoraConfig lora;
    lora.rank = 4;
    lora.alpha = 8;
    lora.train_fam = train_fam;
    ASSERT_TRUE(AttachLora(model, lora).ok());
    std::vector<NamedParameter> params;
    for (auto& [name, t] : LoraTrainableParameters(model)) params.push_back({name, t, false});
    AdamW optimizer(params);

    Tensor tokens = Tokens(2, 11, 37, 5);
    Tensor targets = Tokens(2, 11, 37, 6);
    std::vector<double> losses;
    for (int step = 0; step < 6; ++step) {
      optimizer.ZeroGrad();
      Tensor loss = model.Loss(model.Forward(tokens).logits, targets);
      losses.push_back(loss.item());
      loss.backward();
      optimizer.Step(2e-2);
    }
    EXPECT_LT(losses.back(), losses.front() - 0.05) << losses.front() << " → " << losses.back();

    for (auto& [name, saved] : base) {
      Tensor now = model.FindParameter(name);
      const bool trains = train_fam && name == "model.fam.embeddings";
      EXPECT_EQ(BitIdentical(now, saved), !trains) << name;
      if (!trains) {
        EXPECT_FALSE(now.grad().defined()) << name;
      }
    }
    for (auto& [name, t] : model.NamedParameters()) {
      if (name.find("lora_B") == std::string::npos) continue;
      double norm = 0;
      for (double v : t.ToDoubles()) norm += v * v;
      EXPECT_GT(norm, 0.0) << name;
    }
  }
}

TEST(Lora, MergedWeightsGiveTheSameLogits) {
  FamModel model(TinyConfig());
  model.InitializeWeights(3);
  LoraConfig lora;
  lora.rank = 3;
  lora.alpha = 6;
  ASSERT_TRUE(AttachLora(model, lora).ok());
  RandomizeB(model, 40);
  Tensor tokens = Tokens(1, 11, 37, 7);
  Tensor unmerged = Logits(model, tokens);
  FamModel plain(TinyConfig());
  plain.InitializeWeights(3);
  EXPECT_GT(MaxAbsDiff(unmerged, Logits(plain, tokens)), 1e-3);  // the adapters matter

  // Expected merged weight of one projection, from loops: W + (alpha/r)·B·A.
  auto* q = model.backbone().layers[1]->self_attn->q_proj;
  std::vector<double> w = q->weight().ToDoubles(), a = q->lora_a().ToDoubles(),
                      b = q->lora_b().ToDoubles();
  const int64_t out = 16, in = 16, r = 3;
  std::vector<double> want(out * in);
  for (int64_t o = 0; o < out; ++o)
    for (int64_t i = 0; i < in; ++i) {
      double s = 0;
      for (int64_t k = 0; k < r; ++k) s += b[o * r + k] * a[k * in + i];
      want[o * in + i] = w[o * in + i] + 2.0 * s;
    }

  MergeLora(model);
  EXPECT_FALSE(HasLora(model));
  for (auto& [name, t] : model.NamedParameters()) {
    EXPECT_FALSE(IsLoraParameterName(name)) << name;
    EXPECT_TRUE(t.requires_grad()) << name;
  }
  EXPECT_EQ(model.NamedParameters().size(), plain.NamedParameters().size());
  std::vector<double> merged = q->weight().ToDoubles();
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(merged[i], want[i], 1e-6);
  EXPECT_LT(MaxAbsDiff(Logits(model, tokens), unmerged), 1e-5);
}

TEST(Lora, LinearGradcheck) {
  nn::Linear linear(5, 3, DType::kF64);
  {
    NoGradGuard no_grad;
    ops::CopyInPlace(linear.weight(), RandomTensor({3, 5}, DType::kF64, 1));
  }
  linear.AttachLora({/*rank=*/2, /*alpha=*/3.0, /*dropout=*/0.0}, 9, 11);
  {
    NoGradGuard no_grad;
    ops::CopyInPlace(linear.lora_b(), RandomTensor({3, 2}, DType::kF64, 2));
  }
  Tensor x = RandomTensor({2, 4, 5}, DType::kF64, 3, 1.0, true);
  // Forward against a loop: y = x·Wᵀ + 1.5·x·Aᵀ·Bᵀ.
  {
    NoGradGuard no_grad;
    std::vector<double> xv = x.ToDoubles(), w = linear.weight().ToDoubles(),
                        a = linear.lora_a().ToDoubles(), b = linear.lora_b().ToDoubles();
    std::vector<double> y = linear.Forward(x).ToDoubles();
    for (int64_t row = 0; row < 8; ++row)
      for (int64_t o = 0; o < 3; ++o) {
        double want = 0;
        for (int64_t i = 0; i < 5; ++i) want += xv[row * 5 + i] * w[o * 5 + i];
        for (int64_t k = 0; k < 2; ++k) {
          double ax = 0;
          for (int64_t i = 0; i < 5; ++i) ax += xv[row * 5 + i] * a[k * 5 + i];
          want += 1.5 * ax * b[o * 2 + k];
        }
        EXPECT_NEAR(y[row * 3 + o], want, 1e-12);
      }
  }
  auto fn = [&](const std::vector<Tensor>& in) { return linear.Forward(in[0]); };
  EXPECT_TRUE(Gradcheck(fn, {x, linear.weight(), linear.lora_a(), linear.lora_b()}));

  // The adapter term with a fixed dropout mask, for x, A and B.
  Tensor a = RandomTensor({2, 5}, DType::kF64, 4, 1.0, true);
  Tensor b = RandomTensor({3, 2}, DType::kF64, 5, 1.0, true);
  Generator gen(1, 2);
  Tensor mask = nn::DropoutMask({2, 4, 5}, DType::kF64, Device::CPU(), 0.3, gen);
  auto delta = [&](const std::vector<Tensor>& in) {
    return nn::LoraDelta(in[0], in[1], in[2], 0.7, mask);
  };
  EXPECT_TRUE(Gradcheck(delta, {x, a, b}));
}

TEST(Lora, DropoutIsKeyedInvertedAndOffOutsideTraining) {
  Generator gen(3, 4);
  Tensor mask = nn::DropoutMask({20000}, DType::kF32, Device::CPU(), 0.25, gen);
  int64_t zeros = 0;
  for (float v : mask.ToFloats()) {
    EXPECT_TRUE(v == 0.0f || std::abs(v - 1.0f / 0.75f) < 1e-6f) << v;
    zeros += v == 0.0f;
  }
  EXPECT_NEAR(static_cast<double>(zeros) / 20000, 0.25, 0.015);

  nn::Linear linear(6, 4);
  {
    NoGradGuard no_grad;
    ops::CopyInPlace(linear.weight(), RandomTensor({4, 6}, DType::kF32, 1));
  }
  linear.AttachLora({2, 2.0, 0.5}, 1, 2);
  {
    NoGradGuard no_grad;
    ops::CopyInPlace(linear.lora_b(), RandomTensor({4, 2}, DType::kF32, 2));
  }
  Tensor x = RandomTensor({3, 6}, DType::kF32, 3);
  NoGradGuard no_grad;
  Tensor eval = linear.Forward(x);
  Tensor want = ops::Add(ops::Linear(x, linear.weight()),
                         nn::LoraDelta(x, linear.lora_a(), linear.lora_b(), 1.0));
  EXPECT_LT(MaxAbsDiff(eval, want), 1e-6);  // not training: no dropout
  linear.SetLoraDropout(true, 7, 100);
  Tensor first = linear.Forward(x);
  Tensor second = linear.Forward(x);  // the next call draws fresh values
  linear.SetLoraDropout(true, 7, 100);
  EXPECT_EQ(MaxAbsDiff(linear.Forward(x), first), 0.0);  // same key, same masks
  EXPECT_GT(MaxAbsDiff(first, eval), 1e-4);
  EXPECT_GT(MaxAbsDiff(second, first), 1e-4);
  linear.SetLoraDropout(true, 7, 101);
  EXPECT_GT(MaxAbsDiff(linear.Forward(x), first), 1e-4);
  linear.SetLoraDropout(false, 0, 0);
  EXPECT_EQ(MaxAbsDiff(linear.Forward(x), eval), 0.0);
}

TEST(Lora, TargetPatternsAndErrors) {
  FamModel model(TinyConfig());
  LoraConfig lora;
  lora.rank = 2;
  lora.targets = {"q_proj", "layers.1.mlp.*"};
  absl::StatusOr<std::vector<std::string>> names = AttachLora(model, lora);
  ASSERT_TRUE(names.ok()) << names.status();
  EXPECT_EQ(*names, (std::vector<std::string>{
                        "model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj",
                        "model.layers.1.mlp.gate_proj", "model.layers.1.mlp.up_proj",
                        "model.layers.1.mlp.down_proj"}));
  LoraConfig attached = AttachedLoraConfig(model);
  EXPECT_EQ(attached.targets, *names);  // not the same set in every layer: full names
  EXPECT_EQ(attached.rank, 2);

  FamModel uniform(TinyConfig());
  lora.targets = {"v_proj", "q_proj"};
  ASSERT_TRUE(AttachLora(uniform, lora).ok());
  EXPECT_EQ(AttachedLoraConfig(uniform).targets, (std::vector<std::string>{"q_proj", "v_proj"}));

  FamModel fresh(TinyConfig());
  lora.targets = {"attention", "qproj"};
  absl::Status bad = AttachLora(fresh, lora).status();
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("\"qproj\""), std::string::npos) << bad;
  EXPECT_FALSE(HasLora(fresh));  // unchanged on error
  for (auto& [name, t] : fresh.NamedParameters()) EXPECT_TRUE(t.requires_grad()) << name;
  lora.targets = {"lm_head"};
  EXPECT_FALSE(AttachLora(fresh, lora).ok());  // lm_head cannot take an adapter
  lora.targets = {"all"};
  lora.rank = 0;
  bad = AttachLora(fresh, lora).status();
  EXPECT_NE(bad.message().find("lora.rank"), std::string::npos) << bad;
  lora.rank = 2;
  lora.dropout = 1.0;
  bad = AttachLora(fresh, lora).status();
  EXPECT_NE(bad.message().find("lora.dropout"), std::string::npos) << bad;
}

TEST_F(LoraFiles, SaveLoadRoundTrip) {
  FamModel trained(TinyConfig());
  trained.InitializeWeights(4);
  LoraConfig lora;
  lora.rank = 3;
  lora.alpha = 5;
  lora.targets = {"attention", "mlp"};
  ASSERT_TRUE(AttachLora(trained, lora).ok());
  RandomizeB(trained, 50);
  {
    NoGradGuard no_grad;
    Tensor p = trained.FindParameter("model.fam.embeddings");
    ops::CopyInPlace(p, RandomTensor(p.shape(), DType::kF32, 60));
  }
  const std::string path = Path("adapters.safetensors");
  ASSERT_TRUE(SaveLoraAdapters(trained, path, "runs/base/model.safetensors").ok());

  absl::StatusOr<std::unique_ptr<io::SafetensorsFile>> file = io::SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ((*file)->names().size(), 29u);  // adapters + the prompt only
  EXPECT_FALSE((*file)->contains("model.embed_tokens.weight"));
  const auto& meta = (*file)->metadata();
  EXPECT_EQ(meta.at("format"), "famtrain-lora");
  EXPECT_EQ(meta.at("lora.rank"), "3");
  EXPECT_EQ(meta.at("lora.alpha"), "5");
  EXPECT_EQ(meta.at("lora.targets"), "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj");
  EXPECT_EQ(meta.at("lora.train_fam"), "true");
  EXPECT_EQ(meta.at("base.label"), "runs/base/model.safetensors");

  Tensor tokens = Tokens(1, 11, 37, 8);
  FamModel loaded(TinyConfig());
  loaded.InitializeWeights(4);  // the same base
  absl::Status s = LoadLoraAdapters(loaded, path);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(HasLora(loaded));
  EXPECT_EQ(MaxAbsDiff(Logits(loaded, tokens), Logits(trained, tokens)), 0.0);
  EXPECT_EQ(LoraTrainableParameters(loaded).size(), 29u);
  // Loading again into the attached adapters works too.
  EXPECT_TRUE(LoadLoraAdapters(loaded, path).ok());

  // The base fingerprint ignores F32 vs BF16 storage of the same (bf16-exact) base.
  FamModel f32_base(TinyConfig());
  f32_base.InitializeWeights(4);
  ASSERT_TRUE(SaveModelWeights(f32_base, Path("bf16.safetensors"), DType::kBF16).ok());
  FamModel rounded(TinyConfig());
  ASSERT_TRUE(LoadModelWeights(rounded, Path("bf16.safetensors")).ok());
  FamModel rounded_again(TinyConfig());
  ASSERT_TRUE(LoadModelWeights(rounded_again, Path("bf16.safetensors")).ok());
  ASSERT_TRUE(SaveModelWeights(rounded, Path("f32.safetensors")).ok());
  ASSERT_TRUE(LoadModelWeights(rounded_again, Path("f32.safetensors")).ok());
  EXPECT_EQ(FingerprintBase(rounded, {}).content, FingerprintBase(f32_base, {}).content);
  EXPECT_EQ(FingerprintBase(rounded_again, {}).content, FingerprintBase(f32_base, {}).content);
}

TEST_F(LoraFiles, MismatchedBaseIsRefusedNamingIt) {
  FamModel trained(TinyConfig());
  trained.InitializeWeights(5);
  LoraConfig lora;
  lora.rank = 2;
  ASSERT_TRUE(AttachLora(trained, lora).ok());
  RandomizeB(trained, 70);
  const std::string path = Path("adapters.safetensors");
  ASSERT_TRUE(SaveLoraAdapters(trained, path, "base-v1.safetensors").ok());

  FamModel other(TinyConfig());
  other.InitializeWeights(6);  // same architecture, other weights
  absl::Status s = LoadLoraAdapters(other, path);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find(path), std::string::npos) << s;
  EXPECT_NE(s.message().find("base-v1.safetensors"), std::string::npos) << s;
  EXPECT_NE(s.message().find("different weight values"), std::string::npos) << s;
  EXPECT_FALSE(HasLora(other));

  // One changed element is enough.
  FamModel nudged(TinyConfig());
  nudged.InitializeWeights(5);
  {
    NoGradGuard no_grad;
    float* p = nudged.FindParameter("model.layers.1.mlp.up_proj.weight").data<float>();
    p[17] += 1e-3f;
  }
  EXPECT_EQ(LoadLoraAdapters(nudged, path).code(), absl::StatusCode::kFailedPrecondition);

  ModelConfig wider = TinyConfig();
  wider.ffn_dim = 32;
  FamModel different(wider);
  different.InitializeWeights(5);
  s = LoadLoraAdapters(different, path);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(s.message().find("different architecture"), std::string::npos) << s;

  // A file that is not an adapter file is named as such.
  ASSERT_TRUE(SaveModelWeights(trained, Path("weights.safetensors")).ok());
  s = LoadLoraAdapters(other, Path("weights.safetensors"));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("not a famtrain LoRA adapter"), std::string::npos) << s;
}

}  // namespace
}  // namespace fam
