// A few training steps of a small FAM model on the GPU (cuda:0, the real CUDA backend) match the
// same steps on the CPU: f32 closely, bf16 mixed precision within bf16's tolerance. Skips with
// "no GPU" where there is none (and under FAM_CUDA_EMULATION, which device_emulation_test covers).
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "framework/backends/registry.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/gradcheck.h"
#include "tests/test_util.h"
#include "trainers/train/run_config.h"
#include "trainers/train/train_loop.h"

namespace fam {
namespace {

namespace fs = std::filesystem;

class CudaTrainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    if (TraitsOf(Device::CUDA(0)).emulated) GTEST_SKIP() << "no GPU: FAM_CUDA_EMULATION is set";
    if (!DeviceAvailable(Device::CUDA(0), &why)) GTEST_SKIP() << "no GPU: " << why;
    dir_ = testing::FreshTestDir("fam_cuda_train_test_");
    testing::WriteSentenceShards(dir_, 600);
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // Train losses per step and the final validation loss of a 12-step run.
  std::pair<std::vector<double>, double> Train(const std::string& name,
                                               std::vector<std::string> overrides) {
    overrides.insert(overrides.begin(),
                     {"trainer.eval_interval=12", "checkpoint.save_final=false"});
    const std::string yaml = testing::LearningRunYaml(name, dir_);
    absl::StatusOr<RunConfig> c = ParseRunConfig(yaml, (dir_ / "t.yaml").string(), overrides);
    EXPECT_TRUE(c.ok()) << c.status();
    absl::StatusOr<TrainResult> r = RunTraining(*c);
    EXPECT_TRUE(r.ok()) << r.status();
    std::vector<double> losses;
    std::ifstream in(dir_ / "runs" / name / "metrics.jsonl");
    for (std::string line; std::getline(in, line);) {
      nlohmann::json j = nlohmann::json::parse(line);
      if (j["kind"] == "train") losses.push_back(j["loss"].get<double>());
    }
    return {losses, r.ok() ? r->last_val_loss : NAN};
  }

  fs::path dir_;
};

TEST_F(CudaTrainTest, StepsMatchTheCpu) {
  const auto [cpu, cpu_val] = Train("cpu", {});
  ASSERT_EQ(cpu.size(), 12u);
  // f32 on the GPU: other summation orders only (TF32 off).
  const auto [f32, f32_val] = Train("f32", {"trainer.device=cuda"});
  ASSERT_EQ(f32.size(), 12u);
  for (size_t i = 0; i < cpu.size(); ++i) EXPECT_NEAR(f32[i], cpu[i], 1e-3) << "step " << i + 1;
  EXPECT_NEAR(f32_val, cpu_val, 1e-3);
  // bf16 parameters and activations with f32 masters, with and without recomputation.
  for (const char* recompute : {"false", "true"}) {
    const auto [bf16, bf16_val] =
        Train(std::string("bf16_") + recompute, {"trainer.device=cuda", "trainer.precision=bf16",
                                                 std::string("trainer.recompute=") + recompute});
    ASSERT_EQ(bf16.size(), 12u);
    for (size_t i = 0; i < cpu.size(); ++i)
      EXPECT_NEAR(bf16[i], cpu[i], 0.02 * std::abs(cpu[i])) << "step " << i + 1;
    EXPECT_NEAR(bf16_val, cpu_val, 0.02 * std::abs(cpu_val));
    EXPECT_LT(bf16_val, 0.9 * std::log(64.0));  // it learns
  }
}

}  // namespace
}  // namespace fam
