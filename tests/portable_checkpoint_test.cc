// Checkpoints that travel alone: a checkpoint copied away from its run directory and its data
// still exports, generates, evaluates and resumes through the `fam` binary, with the run config and
// tokenizer it carries (trainers/train/portable_checkpoint.h); a checkpoint written before they
// were carried still loads through its run directory; a tampered carried file is refused.
#include "trainers/train/portable_checkpoint.h"

#include <filesystem>
#include <fstream>
#include <string>

#include "framework/io/atomic_file.h"
#include "framework/io/checkpoint.h"
#include "framework/io/sha256.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/gradcheck.h"
#include "tests/test_util.h"

namespace fam {
namespace {

namespace fs = std::filesystem;
using testing::RunFam;

class PortableCheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::FreshTestDir("fam_portable_ckpt_test_");
    PrepareData();
    // The run config names the data and tokenizer by absolute path: after the move they are gone.
    std::string model = testing::kJobModelYaml;
    model.replace(model.find("vocab_size: 64"), 14, "vocab_size: 320");
    testing::Spit(dir_ / "exp.yaml",
                  "name: travel\nrun_dir: " + (dir_ / "runs").string() + "\n" + model +
                      "data: {train: " + (dir_ / "data" / "train-*.bin").string() +
                      ", val: " + (dir_ / "data" / "val-*.bin").string() +
                      ", tokenizer: " + Tokenizer().string() + R"(}
schedule: {type: constant}
trainer: {steps: 4, global_batch: 2, seq_len: 32, log_interval: 1, eval_interval: 2,
          eval_batches: 1}
checkpoint: {interval: 2, keep_last: 2}
eval: {passkey_lengths: [256], passkey_trials: 2, max_new_tokens: 4}
)");
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A SentencePiece tokenizer of 320 pieces and token shards from a small text (`fam
  // prepare-data`).
  void PrepareData() {
    std::string text;
    for (int i = 0; i < 400; ++i)
      text += "In the beginning was the word " + std::to_string(i % 37) +
              ", and the light shone in the darkness.\n";
    testing::Spit(dir_ / "text.txt", text);
    testing::CommandResult prepared =
        RunFam("prepare-data --input " + (dir_ / "text.txt").string() + " --out " +
               (dir_ / "data").string() + " --vocab-size 320");
    ASSERT_EQ(prepared.exit_code, 0) << prepared.output;
  }
  fs::path Tokenizer() const { return dir_ / "data" / "tokenizer.model"; }
  fs::path Checkpoint(int step) const {
    return dir_ / "runs" / "travel" / "checkpoints" / io::CheckpointDirName(step);
  }
  // Trains 4 steps and copies the final checkpoint to moved/ck; removes the run and the data.
  fs::path TrainAndMove() {
    testing::CommandResult trained = RunFam("train --config " + (dir_ / "exp.yaml").string());
    EXPECT_EQ(trained.exit_code, 0) << trained.output;
    const fs::path moved = dir_ / "moved" / "ck";
    fs::create_directories(moved.parent_path());
    fs::copy(Checkpoint(4), moved, fs::copy_options::recursive);
    fs::remove_all(dir_ / "runs");
    fs::remove_all(dir_ / "data");
    return moved;
  }

  fs::path dir_;
};

TEST_F(PortableCheckpointTest, CarriesItsConfigAndTokenizerInTheManifest) {
  testing::CommandResult trained = RunFam("train --config " + (dir_ / "exp.yaml").string());
  ASSERT_EQ(trained.exit_code, 0) << trained.output;
  const fs::path ckpt = Checkpoint(4);
  ASSERT_TRUE(fs::exists(ckpt / "config.yaml"));
  ASSERT_TRUE(fs::exists(ckpt / "tokenizer.model"));
  EXPECT_EQ(testing::Slurp(ckpt / "tokenizer.model"), testing::Slurp(Tokenizer()));
  // The carried config is the run directory's, and it runs again as it is.
  EXPECT_EQ(testing::Slurp(ckpt / "config.yaml"),
            testing::Slurp(dir_ / "runs" / "travel" / "config.yaml"));
  const nlohmann::json manifest = nlohmann::json::parse(testing::Slurp(ckpt / "manifest.json"));
  EXPECT_TRUE(manifest["files"].contains("config.yaml"));
  EXPECT_TRUE(manifest["files"].contains("tokenizer.model"));
  EXPECT_EQ(manifest["run_config"]["file"], "config.yaml");
  EXPECT_EQ(manifest["run_config"]["hash"], manifest["config_hash"]);
  EXPECT_EQ(manifest["tokenizer"]["file"], "tokenizer.model");
  EXPECT_EQ(manifest["tokenizer"]["source"], Tokenizer().string());
  EXPECT_EQ(manifest["tokenizer"]["sha256"], io::Sha256Hex(testing::Slurp(Tokenizer())));
  EXPECT_TRUE(io::VerifyCheckpoint(ckpt.string()).ok());
}

TEST_F(PortableCheckpointTest, MovedAloneItExportsGeneratesEvaluatesAndResumes) {
  const fs::path moved = TrainAndMove();
  const std::string ck = moved.string();

  testing::CommandResult exported =
      RunFam("export --checkpoint " + ck + " --out " + (dir_ / "w.safetensors").string());
  EXPECT_EQ(exported.exit_code, 0) << exported.output;
  EXPECT_TRUE(fs::exists(dir_ / "w.safetensors"));

  testing::CommandResult generated =
      RunFam("generate --checkpoint " + ck + " --prompt 'In the beginning' --max-new-tokens 4");
  EXPECT_EQ(generated.exit_code, 0) << generated.output;
  EXPECT_NE(generated.output.find(" generated"), std::string::npos) << generated.output;

  const fs::path report = dir_ / "eval" / "report.json";
  testing::CommandResult evaluated =
      RunFam("eval --checkpoint " + ck + " --out " + report.string());
  EXPECT_EQ(evaluated.exit_code, 0) << evaluated.output;
  EXPECT_NE(evaluated.output.find("is not here: validation skipped"), std::string::npos)
      << evaluated.output;
  EXPECT_NE(evaluated.output.find("passkey"), std::string::npos) << evaluated.output;
  const nlohmann::json r = nlohmann::json::parse(testing::Slurp(report));
  EXPECT_EQ(r["step"], 4);

  // Resuming needs the training data again (the same shards), not the run directory.
  PrepareData();
  testing::CommandResult resumed = RunFam("train --resume " + ck + " --set trainer.steps=6" +
                                          " --set run_dir=" + (dir_ / "runs2").string());
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("(carried by the checkpoint)"), std::string::npos)
      << resumed.output;
  EXPECT_NE(resumed.output.find("resumed from " + ck + " at step 4"), std::string::npos)
      << resumed.output;
  EXPECT_TRUE(fs::exists(dir_ / "runs2" / "travel" / "checkpoints" / io::CheckpointDirName(6)));
  // Its checkpoints carry the tokenizer again (read from the moved checkpoint's copy).
  EXPECT_TRUE(fs::exists(dir_ / "runs2" / "travel" / "checkpoints" / io::CheckpointDirName(6) /
                         "tokenizer.model"));
}

// A checkpoint of the earlier layout (no carried files in its manifest) loads through
// <run>/config.yaml; without that either, the error names both places tried.
TEST_F(PortableCheckpointTest, OlderCheckpointsLoadThroughTheirRunDirectory) {
  testing::CommandResult trained = RunFam("train --config " + (dir_ / "exp.yaml").string());
  ASSERT_EQ(trained.exit_code, 0) << trained.output;
  const fs::path ckpt = Checkpoint(4);
  nlohmann::json manifest = nlohmann::json::parse(testing::Slurp(ckpt / "manifest.json"));
  for (const char* file : {"config.yaml", "tokenizer.model"}) {
    manifest["files"].erase(file);
    fs::remove(ckpt / file);
  }
  manifest.erase("run_config");
  manifest.erase("tokenizer");
  testing::Spit(ckpt / "manifest.json", manifest.dump(2));
  ASSERT_TRUE(io::VerifyCheckpoint(ckpt.string()).ok());

  const std::string out = (dir_ / "old.safetensors").string();
  testing::CommandResult exported =
      RunFam("export --checkpoint " + ckpt.string() + " --out " + out);
  EXPECT_EQ(exported.exit_code, 0) << exported.output;
  testing::CommandResult evaluated = RunFam("eval --checkpoint " + ckpt.string() + " --out " +
                                            (dir_ / "old" / "report.json").string());
  EXPECT_EQ(evaluated.exit_code, 0) << evaluated.output;
  EXPECT_NE(evaluated.output.find("val: loss"), std::string::npos) << evaluated.output;

  fs::remove(dir_ / "runs" / "travel" / "config.yaml");
  testing::CommandResult lost = RunFam("export --checkpoint " + ckpt.string() + " --out " + out);
  EXPECT_EQ(lost.exit_code, 2) << lost.output;
  EXPECT_NE(lost.output.find("no model config found"), std::string::npos) << lost.output;
  EXPECT_NE(lost.output.find((ckpt / "config.yaml").string()), std::string::npos) << lost.output;
  testing::CommandResult lost_eval = RunFam("eval --checkpoint " + ckpt.string() + " --out " +
                                            (dir_ / "old" / "report.json").string());
  EXPECT_EQ(lost_eval.exit_code, 2) << lost_eval.output;
  EXPECT_NE(lost_eval.output.find("no run config"), std::string::npos) << lost_eval.output;
}

// The carried files are verified like the tensors: an edited config is refused, naming it.
TEST_F(PortableCheckpointTest, ATamperedCarriedFileIsRefused) {
  const fs::path moved = TrainAndMove();
  testing::Spit(moved / "config.yaml", testing::Slurp(moved / "config.yaml") + "# edited\n");
  testing::CommandResult evaluated = RunFam("eval --checkpoint " + moved.string() + " --out " +
                                            (dir_ / "eval" / "report.json").string());
  EXPECT_EQ(evaluated.exit_code, 2) << evaluated.output;
  EXPECT_NE(evaluated.output.find("config.yaml"), std::string::npos) << evaluated.output;
}

// A Hugging Face tokenizer.json travels as tokenizer.json with its tokenizer_config.json beside it
// (its special tokens); a SentencePiece model keeps its extension and takes no config.
TEST(PortableCheckpointFiles, TokenizerJsonTravelsWithItsConfig) {
  io::CheckpointData json_data;
  AddRunFiles("a: 1\n", "h", "/data/hf/tokenizer.json", R"({"model": {}})", &json_data,
              R"({"eos_token": "</s>"})");
  ASSERT_EQ(json_data.files.size(), 3u);
  EXPECT_EQ(json_data.files[1].first, "tokenizer.json");
  EXPECT_EQ(json_data.files[2].first, "tokenizer_config.json");
  EXPECT_EQ(json_data.files[2].second, R"({"eos_token": "</s>"})");
  EXPECT_EQ(json_data.manifest_extra["tokenizer"]["file"], "tokenizer.json");
  EXPECT_EQ(json_data.manifest_extra["tokenizer"]["config"], "tokenizer_config.json");

  io::CheckpointData sp_data;
  AddRunFiles("a: 1\n", "h", "/data/tokenizer.model", "\x0a\x0bproto", &sp_data, "{}");
  ASSERT_EQ(sp_data.files.size(), 2u);
  EXPECT_EQ(sp_data.files[1].first, "tokenizer.model");
  EXPECT_FALSE(sp_data.manifest_extra["tokenizer"].contains("config"));
}

}  // namespace
}  // namespace fam
