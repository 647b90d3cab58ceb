#include "tests/test_util.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "framework/data/token_shard.h"
#include "framework/optim/adafactor.h"
#include "framework/optim/adamw.h"

namespace fam::testing {

namespace fs = std::filesystem;

std::string Slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

void Spit(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

void WriteSentenceShards(const fs::path& dir, size_t val_tokens) {
  std::vector<int32_t> tokens;
  uint32_t x = 12345;
  for (int i = 0; i < 6000; ++i) {
    x = x * 1103515245u + 12345u;
    const int sentence = (x >> 16) % 4;
    for (int j = 0; j < 7; ++j) tokens.push_back(4 + sentence * 8 + j);
    tokens.push_back(2);
  }
  ASSERT_TRUE(data::WriteTokenShard((dir / "train-00000.bin").string(), tokens, 64).ok());
  std::vector<int32_t> val(tokens.begin(), tokens.begin() + static_cast<int64_t>(val_tokens));
  ASSERT_TRUE(data::WriteTokenShard((dir / "val-00000.bin").string(), val, 64).ok());
}

std::string LearningRunYaml(const std::string& name, const fs::path& dir) {
  return "name: " + name + "\nrun_dir: " + (dir / "runs").string() + "\n" + kLearningModelYaml +
         "data: {train: " + (dir / "train-*.bin").string() +
         ", val: " + (dir / "val-*.bin").string() + R"(}
optimizer: {type: adamw, lr: 0.01, weight_decay: 0.01, grad_clip: 1.0}
schedule: {type: cosine, warmup_steps: 2, decay_steps: 12, min_lr_ratio: 0.1}
trainer: {steps: 12, global_batch: 4, micro_batch: 2, seq_len: 32, seed: 7, log_interval: 1,
          eval_interval: 6, eval_batches: 2}
checkpoint: {interval: 0, keep_last: 3}
)";
}

std::string FindMpirun() {
  const char* configured = std::getenv("FAM_MPIRUN");
  if (configured != nullptr && ::access(configured, X_OK) == 0) return configured;
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path ? path : "");
  for (std::string dir; std::getline(dirs, dir, ':');) {
    const std::string candidate = dir + "/mpirun";
    if (!dir.empty() && ::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "";
}

void SetMpirunJobEnv() {
  ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
  ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  ::setenv("OMP_NUM_THREADS", "1", 1);
}

void WorldEnvironment::SetUp() {
  dist::CommOptions o;
  o.timeout_s = 60;
  absl::StatusOr<std::shared_ptr<dist::Communicator>> comm = dist::CreateCommunicator(o);
  ASSERT_TRUE(comm.ok()) << comm.status();
  *world_ = *comm;
  if (!banner_.empty()) {
    printf("%s: rank %d of %d (%s)\n", banner_.c_str(), (*world_)->rank(), (*world_)->world_size(),
           (*world_)->backend_name().c_str());
  }
}

std::unique_ptr<Optimizer> MakeAdamW(std::vector<NamedParameter> p) {
  AdamWOptions o;
  o.weight_decay = 0.1;
  return std::make_unique<AdamW>(std::move(p), o);
}

std::unique_ptr<Optimizer> MakeAdafactor(std::vector<NamedParameter> p) {
  return std::make_unique<Adafactor>(std::move(p), AdafactorOptions{});
}

bool SameBits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.ToDoubles() == b.ToDoubles();
}

double MaxLossDifference(const std::vector<std::pair<int64_t, double>>& a,
                         const std::vector<std::pair<int64_t, double>>& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    worst = std::max(worst, std::abs(a[i].second - b[i].second));
  }
  return worst;
}

void ExpectMastersSaved(const io::LoadedCheckpoint& c) {
  ASSERT_FALSE(c.model.empty());
  for (auto& [name, t] : c.model) {
    EXPECT_EQ(t.dtype(), DType::kF32) << name;
    auto it = c.optimizer.find(name + ".master");
    ASSERT_NE(it, c.optimizer.end()) << name;
    EXPECT_EQ(it->second.dtype(), DType::kF32) << name;
    EXPECT_TRUE(SameBits(t, it->second)) << name;
  }
  int masters = 0;
  for (auto& [name, t] : c.optimizer) masters += name.ends_with(".master");
  EXPECT_EQ(masters, static_cast<int>(c.model.size()));
}

void SaveTinyCheckpoint(const std::filesystem::path& runs_dir, const std::string& run, int64_t step,
                        float value) {
  io::CheckpointOptions options;
  options.dir = (runs_dir / run / "checkpoints").string();
  io::CheckpointManager manager(options);
  io::CheckpointData data;
  data.step = step;
  data.model = {{"w", Tensor::FromFloats({value, 2.0f}, {2})}};
  ASSERT_TRUE(manager.Save(data).ok());
}

}  // namespace fam::testing
