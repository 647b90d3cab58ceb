// Fine-tuning setup (trainers/train/finetune.h): the model of a run (fresh init, or base weights from
// safetensors / checkpoint / run directories + LoRA, starting adapters), which parameters train
// and decay, zero-weight tokens contributing no gradient (checked against a run whose targets at
// those tokens differ), adapter-only checkpoints (tensors, trainer_state["lora"], restore round
// trip) and the refusal of a different base, of mixed checkpoint kinds and of bad base files.
#include "trainers/train/finetune.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "framework/autograd/node.h"
#include "framework/data/loader.h"
#include "framework/data/token_shard.h"
#include "framework/data/weight_shard.h"
#include "framework/io/checkpoint.h"
#include "framework/ops/ops.h"
#include "gtest/gtest.h"
#include "models/fam/lora.h"
#include "models/fam/weights_io.h"
#include "tests/gradcheck.h"
#include "tests/tiny_model_config.h"

namespace fam {
namespace {

namespace fs = std::filesystem;

// TinyModelConfig with another vocabulary, init scale and FAM length.
ModelConfig TinyConfig(AttentionType type = AttentionType::kFam) {
  ModelConfig c = testing::TinyModelConfig(type);
  c.vocab_size = 37;
  c.init_std = 0.2;
  c.attention.fam_length = type == AttentionType::kFam ? 2 : 0;
  c.training.random_position_offset = false;
  c.training.state_passing_prob = 0.0;
  return c;
}

Tensor Tokens(int64_t batch, int64_t t, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::vector<int64_t> ids(batch * t);
  for (int64_t& id : ids) id = static_cast<int64_t>(gen() % 37);
  return Tensor::FromInts(ids, {batch, t});
}

Tensor Logits(const FamModel& model) {
  NoGradGuard no_grad;
  return model.Forward(Tokens(2, 11, 9)).logits;
}

bool BitIdentical(const Tensor& a, const Tensor& b) {
  std::vector<float> x = a.ToFloats(), y = b.ToFloats();
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

// Gives every adapter B (and the FAM prompt) random values so that the adapters matter.
void Perturb(FamModel& model, uint64_t seed) {
  NoGradGuard no_grad;
  for (auto& [name, t] : LoraTrainableParameters(model)) {
    if (name.find("lora_A") != std::string::npos) continue;
    ops::CopyInPlace(t, testing::RandomTensor(t.shape(), t.dtype(), seed++, 0.2));
  }
}

bool Contains(const absl::Status& status, const std::string& part) {
  return std::string(status.message()).find(part) != std::string::npos;
}

class FinetuneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           (std::string("fam_finetune_") +
            ::testing::UnitTest::GetInstance()->current_test_info()->name() + "_" +
            std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    base_ = std::make_unique<FamModel>(TinyConfig());
    base_->InitializeWeights(3);
    base_path_ = (dir_ / "base.safetensors").string();
    ASSERT_TRUE(SaveModelWeights(*base_, base_path_).ok());
  }
  void TearDown() override { fs::remove_all(dir_); }

  RunConfig Config(const std::string& base) const {
    RunConfig c;
    c.model = TinyConfig();
    c.trainer.type = TrainerType::kFinetune;
    c.trainer.seed = 1;
    c.lora.rank = 2;
    c.lora.alpha = 4;
    c.finetune.base_weights = base;
    return c;
  }
  std::unique_ptr<FamModel> Build(const RunConfig& config,
                                  std::vector<std::string>* notes = nullptr) {
    absl::StatusOr<std::unique_ptr<FamModel>> model = BuildModelForRun(config, notes);
    EXPECT_TRUE(model.ok()) << model.status();
    return model.ok() ? *std::move(model) : nullptr;
  }
  // Saves a checkpoint under <dir>/<run>/checkpoints; returns the checkpoint directory.
  std::string SaveCheckpoint(const std::string& run, const io::CheckpointData& data) {
    io::CheckpointOptions o;
    o.dir = (dir_ / run / "checkpoints").string();
    io::CheckpointManager manager(o);
    EXPECT_TRUE(manager.Save(data).ok());
    return (dir_ / run / "checkpoints" / io::CheckpointDirName(data.step)).string();
  }

  fs::path dir_;
  std::unique_ptr<FamModel> base_;
  std::string base_path_;
};

TEST_F(FinetuneTest, PretrainIsAFreshSeededModelWithEveryParameterTraining) {
  RunConfig config;
  config.model = TinyConfig();
  config.trainer.seed = 5;
  std::unique_ptr<FamModel> model = Build(config);
  ASSERT_NE(model, nullptr);
  FamModel reference(TinyConfig());
  reference.InitializeWeights(5);
  EXPECT_TRUE(BitIdentical(Logits(*model), Logits(reference)));
  EXPECT_FALSE(HasLora(*model));
  OptimizerConfig o;
  std::vector<NamedParameter> params = TrainableParameters(*model, o);
  ASSERT_EQ(params.size(), model->NamedParameters().size());
  for (const NamedParameter& p : params) {
    const bool matrix = p.name.find("proj") != std::string::npos;
    EXPECT_EQ(p.weight_decay, matrix) << p.name;  // norms, embeddings, FAM prompt: no decay
  }
  o.decay_norms = true;
  o.decay_embeddings = true;
  for (const NamedParameter& p : TrainableParameters(*model, o)) EXPECT_TRUE(p.weight_decay);
  EXPECT_FALSE(LoaderRoleWeights(config).has_value());
  EXPECT_TRUE(CheckpointLoraState(*model, config).is_null());
}

TEST_F(FinetuneTest, FinetuneLoadsTheBaseAndTrainsOnlyAdapters) {
  std::vector<std::string> notes;
  std::unique_ptr<FamModel> model = Build(Config(base_path_), &notes);
  ASSERT_NE(model, nullptr);
  EXPECT_FALSE(notes.empty());
  // B = 0: the adapted model computes the base model.
  EXPECT_TRUE(BitIdentical(Logits(*model), Logits(*base_)));
  ASSERT_TRUE(HasLora(*model));
  OptimizerConfig o;
  std::vector<NamedParameter> params = TrainableParameters(*model, o);
  ASSERT_EQ(params.size(), 2u * 7u * 2u + 1u);  // A and B of 7 projections x 2 layers, FAM prompt
  std::set<std::string> trainable;
  for (const NamedParameter& p : params) {
    trainable.insert(p.name);
    if (p.name == "model.fam.embeddings") {
      EXPECT_FALSE(p.weight_decay);
    } else {
      EXPECT_TRUE(IsLoraParameterName(p.name)) << p.name;
      EXPECT_TRUE(p.weight_decay) << p.name;
    }
  }
  for (auto& [name, t] : model->NamedParameters()) {
    EXPECT_EQ(t.requires_grad(), trainable.count(name) > 0) << name;
  }
  // Gradients reach only the trainable tensors.
  Tensor tokens = Tokens(2, 9, 4);
  model->Loss(model->Forward(tokens).logits, Tokens(2, 9, 5)).backward();
  for (auto& [name, t] : model->NamedParameters()) {
    EXPECT_EQ(t.grad().defined(), trainable.count(name) > 0) << name;
  }
  // Without train_fam the FAM prompt is frozen too.
  RunConfig config = Config(base_path_);
  config.lora.train_fam = false;
  model = Build(config);
  EXPECT_EQ(TrainableParameters(*model, o).size(), 28u);
  EXPECT_FALSE(model->FindParameter("model.fam.embeddings").requires_grad());
  // The loader's role weights come from finetune.loss_weights.
  config.finetune.loss_weights = {0.5, 2.0, 0.25};
  std::optional<data::RoleWeights> roles = LoaderRoleWeights(config);
  ASSERT_TRUE(roles.has_value());
  EXPECT_EQ(roles->instruction, 0.5);
  EXPECT_EQ(roles->answer, 2.0);
  EXPECT_EQ(roles->repeat, 0.25);
}

TEST_F(FinetuneTest, BaseFromCheckpointOrRunDirAndFromANonFamModel) {
  io::CheckpointData data;
  data.step = 40;
  data.model = base_->NamedParameters();
  const std::string ckpt = SaveCheckpoint("pre", data);
  for (const std::string& where :
       {ckpt, (dir_ / "pre" / "checkpoints").string(), (dir_ / "pre").string()}) {
    SCOPED_TRACE(where);
    std::unique_ptr<FamModel> model = Build(Config(where));
    ASSERT_NE(model, nullptr);
    EXPECT_TRUE(BitIdentical(Logits(*model), Logits(*base_)));
  }
  // A BSWA base has no FAM prompt: it is taken from the token embeddings (vocab/2 + i).
  FamModel bswa(TinyConfig(AttentionType::kBswa));
  bswa.InitializeWeights(8);
  const std::string bswa_path = (dir_ / "bswa.safetensors").string();
  ASSERT_TRUE(SaveModelWeights(bswa, bswa_path).ok());
  std::vector<std::string> notes;
  std::unique_ptr<FamModel> model = Build(Config(bswa_path), &notes);
  ASSERT_NE(model, nullptr);
  const std::vector<float> prompt = model->FindParameter("model.fam.embeddings").ToFloats();
  const std::vector<float> table = bswa.FindParameter("model.embed_tokens.weight").ToFloats();
  for (int64_t i = 0; i < 2; ++i) {
    for (int64_t d = 0; d < 16; ++d) EXPECT_EQ(prompt[i * 16 + d], table[(18 + i) * 16 + d]);
  }
  bool noted = false;
  for (const std::string& n : notes) noted |= n.find("token ids 18..19") != std::string::npos;
  EXPECT_TRUE(noted);
  // ... and a FAM base loads into a BSWA model (its prompt ignored, with a note).
  RunConfig to_bswa = Config(base_path_);
  to_bswa.model = TinyConfig(AttentionType::kBswa);
  notes.clear();
  ASSERT_NE(Build(to_bswa, &notes), nullptr);
  EXPECT_NE(notes.front().find("base weights: " + base_path_), std::string::npos);
}

TEST_F(FinetuneTest, BadBasesAreRefusedWithTheTensorNamed) {
  RunConfig wide = Config(base_path_);
  wide.model.ffn_dim = 32;
  absl::Status s = BuildModelForRun(wide).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(s, base_path_ + ": base weights do not match the model config")) << s;
  EXPECT_TRUE(Contains(s, "wrong shape: model.layers.0.mlp.gate_proj.weight")) << s;
  RunConfig tied = Config(base_path_);  // the base has an LM head, this model does not
  tied.model.tie_embeddings = true;
  EXPECT_TRUE(Contains(BuildModelForRun(tied).status(), "unexpected: lm_head.weight"));
  FamModel tied_base(tied.model);
  tied_base.InitializeWeights(2);
  const std::string tied_path = (dir_ / "tied.safetensors").string();
  ASSERT_TRUE(SaveModelWeights(tied_base, tied_path).ok());
  EXPECT_TRUE(Contains(BuildModelForRun(Config(tied_path)).status(), "missing: lm_head.weight"));
  EXPECT_EQ(BuildModelForRun(Config((dir_ / "nope.safetensors").string())).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(BuildModelForRun(Config((dir_ / "empty_dir").string())).status().code(),
            absl::StatusCode::kNotFound);
  fs::create_directories(dir_ / "empty_dir");
  EXPECT_TRUE(Contains(BuildModelForRun(Config((dir_ / "empty_dir").string())).status(),
                       "no valid checkpoint"));
  RunConfig no_base = Config("");
  EXPECT_TRUE(Contains(BuildModelForRun(no_base).status(), "finetune.base_weights"));
  RunConfig bad_target = Config(base_path_);
  bad_target.lora.targets = {"nothing_proj"};
  EXPECT_TRUE(Contains(BuildModelForRun(bad_target).status(), "lora.targets: pattern"));
}

TEST_F(FinetuneTest, ZeroWeightTokensGiveNoGradient) {
  // Shards: 49 tokens; positions with (p % 4 < 2) are instructions (weight 0), the others answers.
  std::vector<int32_t> tokens;
  std::vector<uint8_t> codes;
  for (int32_t p = 0; p < 49; ++p) {
    tokens.push_back((p * 7 + 3) % 37);
    codes.push_back(p % 4 < 2 ? data::kLossClassInstruction : data::kLossClassAnswer);
  }
  const std::string shard = (dir_ / "train-00000.bin").string();
  ASSERT_TRUE(data::WriteTokenShard(shard, tokens, 37).ok());
  absl::StatusOr<data::TokenShard> opened = data::TokenShard::Open(shard);
  ASSERT_TRUE(opened.ok());
  ASSERT_TRUE(data::WriteWeightShard(data::WeightShardPath(shard), codes, {0.0f, 0.0f, 1.0f, 0.1f},
                                     opened->checksum())
                  .ok());
  RunConfig config = Config(base_path_);
  data::LoaderOptions lo;
  lo.shards = {shard};
  lo.seq_len = 12;
  lo.global_batch = 2;
  lo.micro_batch = 2;
  lo.shuffle = false;
  lo.role_weights = LoaderRoleWeights(config);
  absl::StatusOr<data::DataLoader> loader = data::DataLoader::Open(lo);
  ASSERT_TRUE(loader.ok()) << loader.status();
  absl::StatusOr<data::Batch> batch = loader->ReadWindows({0, 2});
  ASSERT_TRUE(batch.ok());
  ASSERT_TRUE(batch->weights.defined());

  std::unique_ptr<FamModel> model = Build(config);
  ASSERT_NE(model, nullptr);
  Perturb(*model, 21);  // adapters that matter, so every trainable tensor gets a gradient
  // Gradients of the trainable tensors and the loss for some targets.
  auto run = [&](const Tensor& targets, double* loss) {
    for (auto& [name, t] : model->NamedParameters()) Tensor(t).zero_grad();
    Tensor l = model->Loss(model->Forward(batch->inputs).logits, targets, batch->weights);
    l.backward();
    *loss = l.item();
    std::vector<Tensor> grads;
    for (const NamedParameter& p : TrainableParameters(*model, config.optimizer)) {
      EXPECT_TRUE(p.param.grad().defined()) << p.name;
      grads.push_back(ops::Clone(p.param.grad()));
    }
    return grads;
  };
  const std::vector<int64_t> targets = batch->targets.ToInts();
  const std::vector<float> weights = batch->weights.ToFloats();
  std::vector<int64_t> changed = targets, answer_changed = targets;
  int zero = 0;
  for (size_t i = 0; i < targets.size(); ++i) {
    if (weights[i] == 0.0f) {
      changed[i] = (targets[i] + 11) % 37;
      ++zero;
    }
  }
  ASSERT_GT(zero, 8);
  for (size_t i = 0; i < targets.size(); ++i) {
    if (weights[i] == 1.0f) {
      answer_changed[i] = (targets[i] + 11) % 37;
      break;
    }
  }
  double loss_a = 0, loss_b = 0, loss_c = 0;
  std::vector<Tensor> a = run(batch->targets, &loss_a);
  std::vector<Tensor> b = run(Tensor::FromInts(changed, batch->targets.shape()), &loss_b);
  std::vector<Tensor> c = run(Tensor::FromInts(answer_changed, batch->targets.shape()), &loss_c);
  EXPECT_EQ(loss_a, loss_b);
  EXPECT_NE(loss_a, loss_c);
  double diff_b = 0, diff_c = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff_b = std::max(diff_b, testing::MaxAbsDiff(a[i], b[i]));
    diff_c = std::max(diff_c, testing::MaxAbsDiff(a[i], c[i]));
  }
  EXPECT_EQ(diff_b, 0.0);   // instruction targets do not matter at all
  EXPECT_GT(diff_c, 1e-6);  // an answer target does
}

TEST_F(FinetuneTest, AdapterOnlyCheckpointRoundTripAndBaseCheck) {
  RunConfig config = Config(base_path_);
  std::unique_ptr<FamModel> model = Build(config);
  ASSERT_NE(model, nullptr);
  Perturb(*model, 5);
  const Tensor logits = Logits(*model);
  EXPECT_FALSE(BitIdentical(logits, Logits(*base_)));
  const nlohmann::json lora_state = CheckpointLoraState(*model, config);
  ASSERT_TRUE(lora_state.is_object());
  EXPECT_EQ(lora_state["lora.rank"], "2");
  EXPECT_EQ(lora_state["base.label"], base_path_);
  EXPECT_EQ(lora_state["base.content"].get<std::string>().size(), 16u);

  io::CheckpointData data;
  data.step = 7;
  data.trainer_state = {{"step", 7}};
  FillModelCheckpoint(*model, lora_state, &data);
  EXPECT_EQ(data.trainer_state["step"], 7);
  EXPECT_EQ(data.trainer_state["lora"], lora_state);
  std::vector<std::string> names, want;
  for (auto& [name, t] : data.model) names.push_back(name);
  for (auto& [name, t] : LoraTrainableParameters(*model)) want.push_back(name);
  EXPECT_EQ(names, want);
  EXPECT_EQ(names.size(), 29u);
  const std::string ckpt_dir = SaveCheckpoint("ft", data);
  absl::StatusOr<io::LoadedCheckpoint> ckpt = io::LoadCheckpoint(ckpt_dir);
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  EXPECT_EQ(ckpt->model.size(), 29u);

  // Resume: a fresh model of the same run gets back exactly the trained adapters.
  std::unique_ptr<FamModel> resumed = Build(config);
  ASSERT_NE(resumed, nullptr);
  ASSERT_TRUE(RestoreModelCheckpoint(*resumed, *ckpt).ok());
  EXPECT_TRUE(BitIdentical(Logits(*resumed), logits));
  for (auto& [name, t] : LoraTrainableParameters(*model)) {
    EXPECT_TRUE(BitIdentical(resumed->FindParameter(name), t)) << name;
  }

  // Another base: refused before anything changes.
  FamModel other(TinyConfig());
  other.InitializeWeights(4);
  const std::string other_path = (dir_ / "other.safetensors").string();
  ASSERT_TRUE(SaveModelWeights(other, other_path).ok());
  std::unique_ptr<FamModel> wrong = Build(Config(other_path));
  ASSERT_NE(wrong, nullptr);
  const Tensor before = Logits(*wrong);
  absl::Status s = RestoreModelCheckpoint(*wrong, *ckpt);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(s, ckpt_dir + ": these adapters belong to base " + base_path_)) << s;
  EXPECT_TRUE(Contains(s, "the same architecture with different weight values")) << s;
  EXPECT_TRUE(BitIdentical(Logits(*wrong), before));
  // Other adapter settings: refused too.
  RunConfig rank3 = Config(base_path_);
  rank3.lora.rank = 3;
  std::unique_ptr<FamModel> other_rank = Build(rank3);
  EXPECT_TRUE(Contains(RestoreModelCheckpoint(*other_rank, *ckpt), "do not fit the attached"));

  // Mixed kinds: an adapter-only checkpoint into a pretraining model and the other way round.
  RunConfig pretrain = config;
  pretrain.trainer.type = TrainerType::kPretrain;
  std::unique_ptr<FamModel> full = Build(pretrain);
  s = RestoreModelCheckpoint(*full, *ckpt);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(s, "an adapter-only (LoRA) checkpoint")) << s;
  io::CheckpointData full_data;
  full_data.step = 3;
  FillModelCheckpoint(*base_, nullptr, &full_data);
  EXPECT_EQ(full_data.model.size(), base_->NamedParameters().size());
  EXPECT_FALSE(full_data.trainer_state.contains("lora"));
  absl::StatusOr<io::LoadedCheckpoint> full_ckpt =
      io::LoadCheckpoint(SaveCheckpoint("full", full_data));
  ASSERT_TRUE(full_ckpt.ok());
  s = RestoreModelCheckpoint(*resumed, *full_ckpt);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(s, "a full-model checkpoint")) << s;
  // A full checkpoint restores a pretraining model; an adapter-only one is no base.
  ASSERT_TRUE(RestoreModelCheckpoint(*full, *full_ckpt).ok());
  EXPECT_TRUE(BitIdentical(Logits(*full), Logits(*base_)));
  s = BuildModelForRun(Config(ckpt_dir)).status();
  EXPECT_TRUE(Contains(s, "an adapter-only (LoRA) checkpoint holds no base weights")) << s;
}

TEST_F(FinetuneTest, StartingAdaptersAreLoadedAndChecked) {
  std::unique_ptr<FamModel> trained = Build(Config(base_path_));
  ASSERT_NE(trained, nullptr);
  Perturb(*trained, 40);
  const std::string adapters = (dir_ / "adapters.safetensors").string();
  ASSERT_TRUE(SaveLoraAdapters(*trained, adapters, base_path_).ok());
  RunConfig config = Config(base_path_);
  config.finetune.adapters = adapters;
  std::vector<std::string> notes;
  std::unique_ptr<FamModel> model = Build(config, &notes);
  ASSERT_NE(model, nullptr);
  EXPECT_TRUE(BitIdentical(Logits(*model), Logits(*trained)));
  EXPECT_NE(notes.back().find("adapters: started from " + adapters), std::string::npos);
  config.lora.rank = 4;
  EXPECT_TRUE(Contains(BuildModelForRun(config).status(), "do not fit the attached"));
  FamModel other(TinyConfig());
  other.InitializeWeights(6);
  const std::string other_path = (dir_ / "other.safetensors").string();
  ASSERT_TRUE(SaveModelWeights(other, other_path).ok());
  RunConfig wrong = Config(other_path);
  wrong.finetune.adapters = adapters;
  absl::Status s = BuildModelForRun(wrong).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(s, "belong to base " + base_path_)) << s;
}

}  // namespace
}  // namespace fam
