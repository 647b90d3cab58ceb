// Data-parallel training end to end: `mpirun -np 2 fam train` against `fam train` in one process on
// the same global batch (plain all-reduce and ZeRO-1/2/3, AdamW and Adafactor, f32 and bf16;
// LoRA under ZeRO-2/3), resume with another world size or from ZeRO shards, and the refusal of a
// global batch not divisible by the world. Skipped when mpirun is not installed. ctest passes
// FAM_MPIRUN; OMPI_ALLOW_RUN_AS_ROOT* are set here too.
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>

#include "framework/io/checkpoint.h"
#include "framework/io/safetensors.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/gradcheck.h"
#include "tests/test_util.h"

namespace fam {
namespace {

namespace fs = std::filesystem;

using RunOutput = testing::CommandResult;

using testing::FamBinary;
using testing::FindMpirun;

// Every command is bounded: a hung rank fails the test instead of the CI job.
RunOutput RunCommand(const std::string& command) {
  return testing::RunCommand("timeout 300 " + command);
}

class DistTrainTest : public ::testing::Test {
 protected:
  void SetUp() override {
#ifndef FAM_HAVE_MPI
    GTEST_SKIP() << "famtrain was built without MPI";
#endif
    mpirun_ = FindMpirun();
    if (mpirun_.empty()) GTEST_SKIP() << "mpirun not found: distributed training tests skipped";
    testing::SetMpirunJobEnv();
    dir_ = testing::FreshTestDir("fam_dist_train_test_");
    testing::WriteSentenceShards(dir_, 2000);
    // FAM with both training tricks, gradient accumulation (4 micro-batches in one process, 2 per
    // rank with two ranks) and tiny buckets (many of them).
    std::ofstream(dir_ / "exp.yaml")
        << "run_dir: " << (dir_ / "runs").string() << "\n"
        << testing::kLearningModelYaml << "data: {train: " << (dir_ / "train-*.bin").string()
        << ", val: " << (dir_ / "val-*.bin").string() << R"(}
optimizer: {type: adamw, lr: 0.01, weight_decay: 0.01, grad_clip: 1.0}
schedule: {type: cosine, warmup_steps: 2, decay_steps: 12, min_lr_ratio: 0.1}
trainer: {steps: 12, global_batch: 8, micro_batch: 2, seq_len: 32, seed: 7, log_interval: 1,
          eval_interval: 6, eval_batches: 4, threads: 1}
distributed: {bucket_mb: 0.002, timeout_s: 120}
checkpoint: {interval: 0, keep_last: 2}
)";
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // `fam train` as `ranks` processes (0: without mpirun) with --set overrides; `env` (e.g.
  // "FAM_CUDA_EMULATION=host") goes before the command.
  RunOutput Train(int ranks, const std::string& name, const std::vector<std::string>& sets = {},
                  const std::string& env = "") {
    std::string command = env.empty() ? "" : "env " + env + " ";
    if (ranks > 0) {
      command += mpirun_ + " -np " + std::to_string(ranks) + " --oversubscribe --bind-to none ";
    }
    command +=
        FamBinary() + " train --config " + (dir_ / "exp.yaml").string() + " --set name=" + name;
    for (const std::string& s : sets) command += " --set " + s;
    return RunCommand(command);
  }

  std::vector<nlohmann::json> Lines(const std::string& name, const std::string& kind) {
    std::ifstream in(dir_ / "runs" / name / "metrics.jsonl");
    std::vector<nlohmann::json> out;
    for (std::string line; std::getline(in, line);) {
      nlohmann::json j = nlohmann::json::parse(line);
      if (j["kind"] == kind) out.push_back(j);
    }
    return out;
  }

  io::LoadedCheckpoint Final(const std::string& name) {
    io::CheckpointOptions o;
    o.dir = (dir_ / "runs" / name / "checkpoints").string();
    io::CheckpointManager m(o);
    absl::StatusOr<std::string> latest = m.LatestValid();
    EXPECT_TRUE(latest.ok()) << latest.status();
    absl::StatusOr<io::LoadedCheckpoint> c = io::LoadCheckpoint(*latest);
    EXPECT_TRUE(c.ok()) << c.status();
    return *c;
  }

  // <run>/adapters.safetensors: metadata and tensors.
  std::pair<std::map<std::string, std::string>, std::map<std::string, Tensor>> Adapters(
      const std::string& name) {
    absl::StatusOr<std::unique_ptr<io::SafetensorsFile>> file =
        io::SafetensorsFile::Open((dir_ / "runs" / name / "adapters.safetensors").string());
    EXPECT_TRUE(file.ok()) << file.status();
    if (!file.ok()) return {};
    std::map<std::string, Tensor> tensors;
    for (const std::string& tensor : (*file)->names()) {
      absl::StatusOr<Tensor> t = (*file)->Load(tensor);
      EXPECT_TRUE(t.ok()) << t.status();
      if (t.ok()) tensors[tensor] = *t;
    }
    return {(*file)->metadata(), tensors};
  }

  // Same losses to ~1e-6 relative, step by step, for the train and eval lines.
  void ExpectSameLosses(const std::string& a, const std::string& b, double rtol = 1e-6) {
    for (auto [kind, key] : {std::pair{"train", "loss"}, std::pair{"eval", "val_loss"}}) {
      std::vector<nlohmann::json> la = Lines(a, kind), lb = Lines(b, kind);
      ASSERT_EQ(la.size(), lb.size()) << kind;
      ASSERT_FALSE(la.empty()) << kind;
      for (size_t i = 0; i < la.size(); ++i) {
        ASSERT_EQ(la[i]["step"], lb[i]["step"]);
        const double x = la[i][key].get<double>(), y = lb[i][key].get<double>();
        EXPECT_LE(std::abs(x - y), rtol * std::abs(x)) << kind << " step " << la[i]["step"];
      }
    }
  }

  // Checkpoint tensors agree to atol + rtol·|x| element by element. Returns the largest |x - y|.
  static double ExpectClose(const std::map<std::string, Tensor>& a,
                            const std::map<std::string, Tensor>& b, double atol, double rtol) {
    EXPECT_EQ(a.size(), b.size());
    double largest = 0;
    for (const auto& [name, t] : a) {
      EXPECT_TRUE(b.count(name)) << name;
      if (!b.count(name)) continue;
      const std::vector<double> x = t.ToDoubles(), y = b.at(name).ToDoubles();
      EXPECT_EQ(x.size(), y.size()) << name;
      if (x.size() != y.size()) continue;
      double worst = 0;
      for (size_t i = 0; i < x.size(); ++i) {
        worst = std::max(worst, std::abs(x[i] - y[i]) - rtol * std::abs(x[i]));
        largest = std::max(largest, std::abs(x[i] - y[i]));
      }
      EXPECT_LE(worst, atol) << name;
    }
    return largest;
  }

  // The (step, loss) of every train line.
  std::vector<std::pair<int64_t, double>> TrainLosses(const std::string& name) {
    std::vector<std::pair<int64_t, double>> out;
    for (const nlohmann::json& j : Lines(name, "train"))
      out.emplace_back(j["step"].get<int64_t>(), j["loss"].get<double>());
    return out;
  }

  // How close a 2-rank run is to one process: losses (relative), then checkpoint and adapter
  // tensors (atol + rtol·|x|).
  struct Tolerance {
    double loss_rtol, atol, rtol;
  };

  // LoRA fine-tuning (trainer.precision `precision`) of a base pretrained here for 4 steps, in one
  // process and on 2 ranks under each of `zeros`: same losses, checkpoints and adapters file (and
  // its base fingerprint). bf16: the checkpoints and adapter files hold the f32 masters.
  void ExpectLoraUnderZeroMatchesOneProcess(const std::string& precision,
                                            const std::vector<std::string>& zeros,
                                            const Tolerance& tol) {
    if (!fs::exists(dir_ / "runs" / "base")) {
      RunOutput base = Train(0, "base", {"trainer.steps=4"});
      ASSERT_EQ(base.exit_code, 0) << base.output;
    }
    const std::vector<std::string> finetune = {
        "trainer.type=finetune",
        "finetune.base_weights=" + (dir_ / "runs" / "base").string(),
        "lora.rank=4",
        "lora.alpha=8",
        "lora.dropout=0.2",
        "optimizer.type=adafactor",
        "trainer.precision=" + precision};
    const bool bf16 = precision == "bf16";
    const std::string single = "ft_one_" + precision;
    RunOutput one = Train(0, single, finetune);
    ASSERT_EQ(one.exit_code, 0) << one.output;
    io::LoadedCheckpoint a = Final(single);
    EXPECT_FALSE(a.model.empty());
    EXPECT_EQ(a.model.count("model.embed_tokens.weight"), 0u);  // adapters (+ FAM prompt) only
    auto [one_meta, one_tensors] = Adapters(single);
    ASSERT_FALSE(one_tensors.empty());
    for (const std::string& zero : zeros) {
      SCOPED_TRACE(zero);
      const std::string name = "ft_" + zero + "_" + precision;
      std::vector<std::string> sets = finetune;
      sets.push_back("distributed.zero=" + zero);
      RunOutput two = Train(2, name, sets);
      ASSERT_EQ(two.exit_code, 0) << two.output;
      EXPECT_NE(two.output.find("zero: " + zero + " ("), std::string::npos) << two.output;
      ExpectSameLosses(single, name, tol.loss_rtol);
      io::LoadedCheckpoint b = Final(name);
      EXPECT_EQ(b.world_size, 2);
      const double weights = ExpectClose(a.model, b.model, tol.atol, tol.rtol);
      std::cout << "LoRA " << precision << ", 2 ranks (zero " << zero
                << ") vs 1 process: max |loss difference| "
                << testing::MaxLossDifference(TrainLosses(single), TrainLosses(name))
                << ", max |weight difference| " << weights << "\n";
      // The run's adapters file (rank 0, after gathering under zero3): the same tensors and the
      // same base fingerprint as the single process's.
      auto [two_meta, two_tensors] = Adapters(name);
      EXPECT_EQ(two_meta, one_meta);
      ExpectClose(one_tensors, two_tensors, tol.atol, tol.rtol);
      if (!bf16) continue;
      // bf16: the f32 masters in the checkpoint and, bit for bit, in the adapters file.
      testing::ExpectMastersSaved(b);
      for (const auto& [tensor, t] : two_tensors) {
        EXPECT_EQ(t.dtype(), DType::kF32) << tensor;
        ASSERT_TRUE(b.model.count(tensor)) << tensor;
        EXPECT_TRUE(testing::SameBits(t, b.model.at(tensor))) << tensor;
      }
    }
  }

  std::string mpirun_;
  fs::path dir_;
};

// bf16 runs on 2 ranks against one process: losses to this relative difference, weights (the f32
// masters) to atol + rtol·|x|. Measured: equal bit for bit (the gradients of one micro-batch are
// bf16 values, whose sums over the 4 micro-batches are exact in f32 whatever the order). The
// tolerances leave room for sums that do round, where a flipped bf16 rounding of a weight moves the
// run slightly; reducing in bf16 instead of f32 exceeds them (loss 1.5e-4 relative, masters 5e-3).
constexpr double kBf16LossRtol = 1e-4, kBf16WeightAtol = 5e-4, kBf16WeightRtol = 1e-3;

TEST_F(DistTrainTest, TwoRanksMatchOneProcessOnTheSameGlobalBatch) {
  struct Case {
    std::string name, optimizer, zero;
  };
  for (const Case& c :
       {Case{"adamw", "adamw", "none"}, Case{"adamw_zero1", "adamw", "zero1"},
        Case{"adafactor_zero1", "adafactor", "zero1"}, Case{"adamw_zero2", "adamw", "zero2"},
        Case{"adamw_zero3", "adamw", "zero3"}, Case{"adafactor_zero3", "adafactor", "zero3"}}) {
    SCOPED_TRACE(c.name);
    const std::string single = "one_" + c.optimizer;
    if (!fs::exists(dir_ / "runs" / single)) {
      RunOutput one = Train(0, single, {"optimizer.type=" + c.optimizer});
      ASSERT_EQ(one.exit_code, 0) << one.output;
    }
    RunOutput two =
        Train(2, c.name, {"optimizer.type=" + c.optimizer, "distributed.zero=" + c.zero});
    ASSERT_EQ(two.exit_code, 0) << two.output;
    EXPECT_NE(two.output.find("distributed: 2 ranks (mpi"), std::string::npos) << two.output;
    EXPECT_NE(two.output.find("memory per rank"), std::string::npos) << two.output;
    if (c.zero == "zero2" || c.zero == "zero3") {
      EXPECT_NE(two.output.find("zero: " + c.zero + " ("), std::string::npos) << two.output;
      EXPECT_NE(two.output.find("zero: peak memory"), std::string::npos) << two.output;
    }
    if (getenv("FAM_SHOW_DIST_OUTPUT")) std::cout << two.output;
    ExpectSameLosses(single, c.name);
    io::LoadedCheckpoint a = Final(single), b = Final(c.name);
    EXPECT_EQ(b.world_size, 2);
    EXPECT_EQ(b.step, 12);
    ExpectClose(a.model, b.model, 1e-5, 1e-5);
    ExpectClose(a.optimizer, b.optimizer, 1e-6, 1e-4);  // gathered from the shards under zero1
    ExpectClose(a.extra, b.extra, 1e-5, 1e-5);          // the kept FAM state (rank 0's sequence)
    EXPECT_EQ(a.trainer_state["tokens_seen"], b.trainer_state["tokens_seen"]);
    EXPECT_EQ(a.trainer_state["loader"], b.trainer_state["loader"]);
  }
}

TEST_F(DistTrainTest, ResumeWithAnotherWorldSizeContinuesTheSameRun) {
  RunOutput straight = Train(0, "straight");
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  // Saved with 2 ranks at step 6, resumed in one process.
  RunOutput first = Train(2, "two_then_one", {"trainer.steps=6"});
  ASSERT_EQ(first.exit_code, 0) << first.output;
  RunOutput second = Train(0, "two_then_one");
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("saved with 2 ranks, now 1"), std::string::npos) << second.output;
  ExpectSameLosses("straight", "two_then_one");
  // Saved in one process, resumed with 2 ranks and ZeRO-1 (the optimizer state is resharded).
  RunOutput third = Train(0, "one_then_two", {"trainer.steps=6"});
  ASSERT_EQ(third.exit_code, 0) << third.output;
  RunOutput fourth = Train(2, "one_then_two", {"distributed.zero=zero1"});
  ASSERT_EQ(fourth.exit_code, 0) << fourth.output;
  EXPECT_NE(fourth.output.find("saved with 1 ranks, now 2"), std::string::npos) << fourth.output;
  ExpectSameLosses("straight", "one_then_two");
  ExpectClose(Final("straight").model, Final("one_then_two").model, 1e-5, 1e-5);
}

// The files of a checkpoint directory.
std::set<std::string> FilesIn(const fs::path& dir) {
  std::set<std::string> files;
  for (const auto& entry : fs::directory_iterator(dir)) files.insert(entry.path().filename());
  return files;
}

TEST_F(DistTrainTest, ShardedCheckpointsResumeOnAnyWorldSize) {
  // A global batch of 12 divides among 1, 2 and 3 ranks; validation every 4 steps, where the runs
  // below stop.
  const std::string batch = "trainer.global_batch=12", zero1 = "distributed.zero=zero1",
                    eval = "trainer.eval_interval=4";
  RunOutput straight = Train(0, "straight12", {batch, eval});
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  // ZeRO-1 on 2 ranks to step 4: one model and one optimizer shard per rank, written by each rank
  // (nothing gathered to rank 0: no unsharded model/optimizer file); rank 0 adds the run config
  // (the test data has no tokenizer).
  RunOutput first = Train(2, "sharded", {batch, eval, zero1, "trainer.steps=4"});
  ASSERT_EQ(first.exit_code, 0) << first.output;
  const fs::path step4 = dir_ / "runs" / "sharded" / "checkpoints" / "step-00000004";
  EXPECT_EQ(FilesIn(step4),
            (std::set<std::string>{"model-rank-0-of-2.safetensors", "model-rank-1-of-2.safetensors",
                                   "optimizer-rank-0-of-2.safetensors",
                                   "optimizer-rank-1-of-2.safetensors", "state.safetensors",
                                   "trainer_state.json", "config.yaml", "manifest.json"}));
  std::ifstream manifest_in(step4 / "manifest.json");
  const nlohmann::json manifest = nlohmann::json::parse(manifest_in);
  EXPECT_EQ(manifest["shards"], (nlohmann::json{{"world_size", 2}, {"zero", "zero1"}}));
  io::LoadedCheckpoint at4 = Final("sharded");
  EXPECT_EQ(at4.shard_files, 4);
  // The merged shards are the whole model and optimizer state of the straight run's shape.
  io::LoadedCheckpoint whole = Final("straight12");
  EXPECT_EQ(at4.model.size(), whole.model.size());
  EXPECT_EQ(at4.optimizer.size(), whole.optimizer.size());
  // Resumed on 3 ranks (resharded: another owner for each parameter) to step 8, sharded again.
  RunOutput second = Train(3, "sharded", {batch, eval, zero1, "trainer.steps=8"});
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("saved with 2 ranks, now 3"), std::string::npos) << second.output;
  const fs::path step8 = dir_ / "runs" / "sharded" / "checkpoints" / "step-00000008";
  EXPECT_EQ(FilesIn(step8).count("optimizer-rank-2-of-3.safetensors"), 1u);
  // `fam export` reads the weights from every model shard.
  RunOutput exported = RunCommand(FamBinary() + " export --checkpoint " + step8.string() +
                                  " --out " + (dir_ / "exported.safetensors").string());
  ASSERT_EQ(exported.exit_code, 0) << exported.output;
  // Then in one process (unsharded) to the end: the same losses as the straight run.
  RunOutput third = Train(0, "sharded", {batch, eval});
  ASSERT_EQ(third.exit_code, 0) << third.output;
  EXPECT_NE(third.output.find("saved with 3 ranks, now 1"), std::string::npos) << third.output;
  EXPECT_EQ(FilesIn(dir_ / "runs" / "sharded" / "checkpoints" / "step-00000012")
                .count("model.safetensors"),
            1u);
  ExpectSameLosses("straight12", "sharded");
  io::LoadedCheckpoint end = Final("sharded");
  ExpectClose(whole.model, end.model, 1e-5, 1e-5);
  ExpectClose(whole.optimizer, end.optimizer, 1e-6, 1e-4);
  // Unsharded (one process) to step 8, then ZeRO-1 on 3 ranks from that checkpoint.
  RunOutput fourth = Train(0, "unsharded_then_sharded", {batch, eval, "trainer.steps=8"});
  ASSERT_EQ(fourth.exit_code, 0) << fourth.output;
  RunOutput fifth = Train(3, "unsharded_then_sharded", {batch, eval, zero1});
  ASSERT_EQ(fifth.exit_code, 0) << fifth.output;
  ExpectSameLosses("straight12", "unsharded_then_sharded");
  io::LoadedCheckpoint sharded_end = Final("unsharded_then_sharded");
  EXPECT_EQ(sharded_end.shard_files, 6);
  ExpectClose(whole.model, sharded_end.model, 1e-5, 1e-5);
  ExpectClose(whole.optimizer, sharded_end.optimizer, 1e-6, 1e-4);
  // ZeRO-3 (each rank holds only its own parameters) on 2 ranks to step 4, then one process.
  RunOutput zero3 =
      Train(2, "zero3_then_one", {batch, eval, "distributed.zero=zero3", "trainer.steps=4"});
  ASSERT_EQ(zero3.exit_code, 0) << zero3.output;
  EXPECT_EQ(Final("zero3_then_one").shard_files, 4);
  RunOutput zero3_resumed = Train(0, "zero3_then_one", {batch, eval});
  ASSERT_EQ(zero3_resumed.exit_code, 0) << zero3_resumed.output;
  ExpectSameLosses("straight12", "zero3_then_one");
  ExpectClose(whole.model, Final("zero3_then_one").model, 1e-5, 1e-5);
}

TEST_F(DistTrainTest, Zero3CheckpointResumesWithoutSharding) {
  RunOutput straight = Train(0, "straight_z3");
  ASSERT_EQ(straight.exit_code, 0) << straight.output;
  // ZeRO-3 on 2 ranks to step 6 (each rank saves the parameters it owns), then one process.
  RunOutput first = Train(2, "z3_then_one", {"trainer.steps=6", "distributed.zero=zero3"});
  ASSERT_EQ(first.exit_code, 0) << first.output;
  RunOutput second = Train(0, "z3_then_one");
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("saved with 2 ranks, now 1"), std::string::npos) << second.output;
  ExpectSameLosses("straight_z3", "z3_then_one");
  ExpectClose(Final("straight_z3").model, Final("z3_then_one").model, 1e-5, 1e-5);
}

// LoRA fine-tuning through `fam train` (trainer.type finetune) on 2 ranks under zero2 and zero3:
// the frozen base sharded with its units, the adapters and FAM prompt trained — same losses and
// same adapters as one process without sharding.
TEST_F(DistTrainTest, LoraFinetuneUnderZeroMatchesOneProcess) {
  ExpectLoraUnderZeroMatchesOneProcess("f32", {"zero2", "zero3"}, {1e-6, 1e-5, 1e-5});
}

// bf16 mixed precision on 2 ranks against one process, for every ZeRO stage: the masters are
// sharded as optimizer state (zero1/2/3), gradients are accumulated and reduced (all-reduce or
// reduce-scatter) in f32 and every rank computes with bf16(master), so only the order of f32 sums
// differs. Measured over 12 steps: max |loss difference| and max |master difference| 0 for all four
// (printed; see kBf16LossRtol). The checkpoints hold the f32 masters (gathered from the ranks'
// shards). Then ZeRO-3 in two halves (saved at step 6 with each rank's masters, resumed on 2 ranks)
// repeats the straight run bit for bit.
TEST_F(DistTrainTest, Bf16TwoRanksMatchOneProcess) {
  const std::string bf16 = "trainer.precision=bf16";
  RunOutput one = Train(0, "bf16_one", {bf16});
  ASSERT_EQ(one.exit_code, 0) << one.output;
  io::LoadedCheckpoint a = Final("bf16_one");
  testing::ExpectMastersSaved(a);
  int64_t values = 0;  // trained values
  for (const auto& [name, t] : a.model) values += t.numel();
  for (const std::string zero : {"none", "zero1", "zero2", "zero3"}) {
    SCOPED_TRACE(zero);
    const std::string name = "bf16_" + zero;
    RunOutput two = Train(2, name, {bf16, "distributed.zero=" + zero});
    ASSERT_EQ(two.exit_code, 0) << two.output;
    if (zero == "zero2" || zero == "zero3")
      EXPECT_NE(two.output.find("zero: " + zero + " ("), std::string::npos) << two.output;
    if (zero == "none") {  // bf16 parameters, f32 gradients
      const std::string memory = "memory per rank: parameters " + dist::FormatBytes(2.0 * values) +
                                 ", gradients " + dist::FormatBytes(4.0 * values);
      EXPECT_NE(two.output.find(memory), std::string::npos) << memory << "\n" << two.output;
    }
    ExpectSameLosses("bf16_one", name, kBf16LossRtol);
    io::LoadedCheckpoint b = Final(name);
    EXPECT_EQ(b.world_size, 2);
    testing::ExpectMastersSaved(b);  // f32 weights = the masters, gathered from the shards
    const double weights = ExpectClose(a.model, b.model, kBf16WeightAtol, kBf16WeightRtol);
    std::cout << "bf16, 2 ranks (zero " << zero << ") vs 1 process: max |loss difference| "
              << testing::MaxLossDifference(TrainLosses("bf16_one"), TrainLosses(name))
              << ", max |master difference| " << weights << "\n";
  }
  // ZeRO-3 in two halves: the same losses and final state as the straight ZeRO-3 run, bitwise.
  const std::vector<std::string> zero3 = {bf16, "distributed.zero=zero3"};
  std::vector<std::string> half = zero3;
  half.push_back("trainer.steps=6");
  RunOutput first = Train(2, "bf16_zero3_halves", half);
  ASSERT_EQ(first.exit_code, 0) << first.output;
  RunOutput second = Train(2, "bf16_zero3_halves", zero3);
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("resumed from "), std::string::npos) << second.output;
  ExpectSameLosses("bf16_zero3", "bf16_zero3_halves", 0.0);
  EXPECT_EQ(testing::MaxLossDifference(TrainLosses("bf16_zero3"), TrainLosses("bf16_zero3_halves")),
            0.0);
  io::LoadedCheckpoint straight = Final("bf16_zero3"), halves = Final("bf16_zero3_halves");
  ASSERT_EQ(straight.model.size(), halves.model.size());
  for (auto& [name, t] : straight.model)
    EXPECT_TRUE(testing::SameBits(t, halves.model.at(name))) << name;
  ASSERT_EQ(straight.optimizer.size(), halves.optimizer.size());
  for (auto& [name, t] : straight.optimizer)
    EXPECT_TRUE(testing::SameBits(t, halves.optimizer.at(name))) << name;
}

// Two ranks on CUDA devices emulated on the host (FAM_CUDA_EMULATION=host: the CPU kernels on
// host memory labelled cuda:0 and cuda:1): the device paths of the gradient reducer, the ZeRO
// shards and checkpointing reproduce the same job on the CPU bit for bit.
TEST_F(DistTrainTest, TwoRanksOnEmulatedDevicesMatchTheCpu) {
  const std::vector<std::vector<std::string>> variants = {
      {"distributed.zero=none"}, {"distributed.zero=zero3", "trainer.precision=bf16"}};
  for (size_t v = 0; v < variants.size(); ++v) {
    SCOPED_TRACE(variants[v][0]);
    const std::string cpu = "emu_cpu" + std::to_string(v), dev = "emu_dev" + std::to_string(v);
    std::vector<std::string> on_device = variants[v];
    on_device.push_back("trainer.device=cuda");
    RunOutput a = Train(2, cpu, variants[v]);
    RunOutput b = Train(2, dev, on_device, "FAM_CUDA_EMULATION=host");
    ASSERT_EQ(a.exit_code, 0) << a.output;
    ASSERT_EQ(b.exit_code, 0) << b.output;
    EXPECT_NE(b.output.find("on cuda:0 (emulated on the host"), std::string::npos) << b.output;
    ExpectSameLosses(cpu, dev, 0.0);
    io::LoadedCheckpoint ca = Final(cpu), cb = Final(dev);
    ASSERT_EQ(ca.model.size(), cb.model.size());
    for (auto& [name, t] : ca.model) EXPECT_TRUE(testing::SameBits(t, cb.model.at(name))) << name;
    ASSERT_EQ(ca.optimizer.size(), cb.optimizer.size());
    for (auto& [name, t] : ca.optimizer)
      EXPECT_TRUE(testing::SameBits(t, cb.optimizer.at(name))) << name;
  }
}

// LoRA fine-tuning in bf16 under ZeRO-3 on 2 ranks: the same losses as one process within bf16's
// tolerance, and F32 adapters written from the masters (gathered from their owners).
TEST_F(DistTrainTest, Bf16LoraFinetuneUnderZero3MatchesOneProcess) {
  ExpectLoraUnderZeroMatchesOneProcess("bf16", {"zero3"},
                                       {kBf16LossRtol, kBf16WeightAtol, kBf16WeightRtol});
}

// How many lines of `output` start with "error:".
int ErrorLines(const std::string& output) {
  int n = 0;
  for (size_t p = 0; (p = output.find("error:", p)) != std::string::npos; ++p)
    if (p == 0 || output[p - 1] == '\n') ++n;
  return n;
}

TEST_F(DistTrainTest, RefusesAWorldThatDoesNotDivideTheBatch) {
  RunOutput three = Train(3, "three");
  EXPECT_EQ(three.exit_code, 2) << three.output;
  EXPECT_NE(three.output.find("trainer.global_batch 8 is not a multiple of world size 3"),
            std::string::npos)
      << three.output;
  EXPECT_FALSE(fs::exists(dir_ / "runs" / "three" / "metrics.jsonl"));
  // One line for the job, from the first rank that failed, not one per rank.
  EXPECT_EQ(ErrorLines(three.output), 1) << three.output;
  EXPECT_NE(three.output.find("error: rank 0: "), std::string::npos) << three.output;
}

// One rank failing alone (here rank 1 is started with a shard glob that matches nothing, through
// mpirun's MPMD syntax): that rank's error is the job's one line, and rank 0 says nothing.
TEST_F(DistTrainTest, OneRanksErrorIsPrintedOnceByThatRank) {
  const std::string train =
      FamBinary() + " train --config " + (dir_ / "exp.yaml").string() + " --set name=one_fails";
  RunOutput run =
      RunCommand(mpirun_ + " --oversubscribe --bind-to none -np 1 " + train + " : -np 1 " + train +
                 " --set data.train=" + (dir_ / "missing-*.bin").string());
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_EQ(ErrorLines(run.output), 1) << run.output;
  EXPECT_NE(run.output.find("error: rank 1: no token shard matches"), std::string::npos)
      << run.output;
}

// A config every rank fails to read (before any communicator exists) is reported once too.
TEST_F(DistTrainTest, ABadConfigIsReportedOnceForTheJob) {
  RunOutput bad = Train(2, "bad", {"trainer.steps=0"});
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_EQ(ErrorLines(bad.output), 1) << bad.output;
  EXPECT_NE(bad.output.find("trainer.steps"), std::string::npos) << bad.output;
}

// trainer.micro_batch unset: each rank takes global_batch / ranks in one micro-batch, printed at
// start; on 2 ranks the run is the one a single process makes with micro-batches of 4, and a world
// that does not divide the global batch is refused with one line naming both.
TEST_F(DistTrainTest, DerivesTheMicroBatchFromTheNumberOfRanks) {
  RunOutput one = Train(0, "derived_one", {"trainer.micro_batch=0", "trainer.steps=1"});
  ASSERT_EQ(one.exit_code, 0) << one.output;
  EXPECT_NE(one.output.find("batch: 8 sequences = 1 rank x 1 micro-batch of 8 (trainer.micro_batch "
                            "derived)"),
            std::string::npos)
      << one.output;
  RunOutput four = Train(0, "explicit_four", {"trainer.micro_batch=4"});
  ASSERT_EQ(four.exit_code, 0) << four.output;
  EXPECT_NE(four.output.find("batch: 8 sequences = 1 rank x 2 micro-batches of 4 "
                             "(trainer.micro_batch as set)"),
            std::string::npos)
      << four.output;
  RunOutput two = Train(2, "derived_two", {"trainer.micro_batch=0"});
  ASSERT_EQ(two.exit_code, 0) << two.output;
  EXPECT_NE(two.output.find("batch: 8 sequences = 2 ranks x 1 micro-batch of 4 "
                            "(trainer.micro_batch derived)"),
            std::string::npos)
      << two.output;
  ExpectSameLosses("explicit_four", "derived_two");
  // The run directory's config keeps micro_batch unset, so a resume on other ranks derives again.
  EXPECT_NE(testing::Slurp(dir_ / "runs" / "derived_two" / "config.yaml").find("micro_batch: 0"),
            std::string::npos);
  RunOutput three = Train(3, "derived_three", {"trainer.micro_batch=0"});
  EXPECT_EQ(three.exit_code, 2) << three.output;
  EXPECT_NE(three.output.find("trainer.global_batch 8 cannot be split evenly over 3 ranks"),
            std::string::npos)
      << three.output;
  EXPECT_EQ(ErrorLines(three.output), 1) << three.output;
}

// The README's distributed command, as written there, with 2 ranks and a few steps of a small run.
TEST_F(DistTrainTest, ReadmeLaunchCommandWorksAsWritten) {
  const char* source = std::getenv("FAM_SOURCE_DIR");
  if (source == nullptr) GTEST_SKIP() << "FAM_SOURCE_DIR is not set (ctest sets it)";
  const std::string readme = testing::Slurp(fs::path(source) / "README.md");
  const size_t at = readme.find("`scripts/launch_mpirun.sh -np");
  ASSERT_NE(at, std::string::npos) << "README.md has no scripts/launch_mpirun.sh -np line";
  std::string line = readme.substr(at + 1, readme.find('`', at + 1) - at - 1);
  // "scripts/launch_mpirun.sh -np 8 build/fam train --config exp.yaml": 2 ranks, this build's fam
  // and this test's config.
  const auto replace = [&](const std::string& from, const std::string& to) {
    const size_t p = line.find(from);
    ASSERT_NE(p, std::string::npos) << line << " has no " << from;
    line.replace(p, from.size(), to);
  };
  const std::string script = (fs::path(source) / "scripts" / "launch_mpirun.sh").string();
  replace("scripts/launch_mpirun.sh", script);
  replace("-np 8", "-np 2");
  replace("build/fam", FamBinary());
  replace("exp.yaml", (dir_ / "exp.yaml").string());
  RunOutput run = RunCommand(line + " --set name=readme --set trainer.steps=3");
  ASSERT_EQ(run.exit_code, 0) << line << "\n" << run.output;
  EXPECT_NE(run.output.find("distributed: 2 ranks (mpi"), std::string::npos) << run.output;
  EXPECT_EQ(Final("readme").world_size, 2);
  // The same line with a typo'd count says so (exit 2), once.
  RunOutput bad = RunCommand(script + " -np x " + FamBinary() + " train --config exp.yaml");
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("expected a positive integer, got \"x\""), std::string::npos)
      << bad.output;
}

}  // namespace
}  // namespace fam
