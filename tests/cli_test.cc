// The `fam` binary as users run it: exit codes and one-line errors for bad input, `fam forward`
// parity round trip, `fam info` arithmetic, and SIGTERM / SIGKILL during training.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "framework/autograd/node.h"
#include "framework/data/token_shard.h"
#include "framework/io/npy.h"
#include "framework/ops/ops.h"
#include "gtest/gtest.h"
#include "models/fam/weights_io.h"
#include "tests/gradcheck.h"
#include "tests/test_util.h"
#include "trainers/train/run_config.h"

namespace fam {
namespace {

namespace fs = std::filesystem;

using RunOutput = testing::CommandResult;
using testing::FamBinary;
using testing::RunCommand;
using testing::RunFam;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::FreshTestDir("fam_cli_test_");
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
    return (dir_ / name).string();
  }
  std::string ModelYaml() {
    return Write("model.yaml", R"(model:
  vocab_size: 50
  d_model: 16
  n_layers: 2
  n_heads: 4
  n_kv_heads: 2
  head_dim: 4
  ffn_dim: 24
  tie_embeddings: false
  attention: {type: fam, block_size: 4, memory_segments: 1, fam_length: 2}
)");
  }
  fs::path dir_;
};

TEST_F(CliTest, HelpAndUsageErrors) {
  RunOutput help = RunFam("--help");
  EXPECT_EQ(help.exit_code, 0);
  for (const char* cmd : {"prepare-data", "train", "info", "forward", "config"})
    EXPECT_NE(help.output.find(cmd), std::string::npos) << cmd;
  RunOutput unknown = RunFam("frobnicate");
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_NE(unknown.output.find("frobnicate"), std::string::npos);
  RunOutput flag = RunFam("info --modle x.yaml");
  EXPECT_EQ(flag.exit_code, 2);
  EXPECT_NE(flag.output.find("--modle"), std::string::npos) << flag.output;
  RunOutput missing = RunFam("forward --model x.yaml");
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.output.find("missing --weights"), std::string::npos) << missing.output;
}

// `fam --version` / `fam version`: the lines a bug report needs, the commit matching the checkout.
TEST_F(CliTest, VersionNamesTheBuildAndWhatItCanUse) {
  RunOutput flag = RunFam("--version");
  RunOutput command = RunFam("version");
  ASSERT_EQ(flag.exit_code, 0) << flag.output;
  EXPECT_EQ(command.exit_code, 0);
  EXPECT_EQ(flag.output, command.output);
  for (const char* line : {"build ", "CPU ", "host memory ", "OpenMP ", "BLAS ",
                           "MPI ", "NCCL ", "CUDA backend "}) {
    EXPECT_NE(flag.output.find(std::string("\n") + line), std::string::npos) << line << flag.output;
  }
  EXPECT_EQ(flag.output.rfind("famtrain ", 0), 0u) << flag.output;
  const char* source = std::getenv("FAM_SOURCE_DIR");
  if (source != nullptr && fs::exists(fs::path(source) / ".git")) {
    RunOutput head = RunCommand(std::string("git -C ") + source + " rev-parse --short=12 HEAD");
    if (head.exit_code == 0 && head.output.size() >= 12) {
      const std::string commit = head.output.substr(0, 12);
      EXPECT_NE(flag.output.find("commit " + commit), std::string::npos)
          << "expected commit " << commit << " in:\n" << flag.output;
    }
  }
  RunOutput extra = RunFam("version --verbose");
  EXPECT_EQ(extra.exit_code, 2) << extra.output;
}

// cuBLAS/cuBLASLt are opened at the first GPU matrix multiply, not linked: a CPU command does not
// pay their ~150 MB of resident memory at start.
TEST_F(CliTest, TheBinaryDoesNotLinkCublas) {
  RunOutput needed = RunCommand("readelf -d " + FamBinary());
  if (needed.exit_code != 0) GTEST_SKIP() << "readelf unavailable: " << needed.output;
  EXPECT_NE(needed.output.find("NEEDED"), std::string::npos) << needed.output;
  EXPECT_EQ(needed.output.find("libcublas"), std::string::npos) << needed.output;
}

TEST_F(CliTest, BadConfigNamesKeyAndLine) {
  std::string path = Write("bad.yaml", "model:\n  preset: tiny\ntrainer:\n  stpes: 10\n");
  RunOutput r = RunFam("train --config " + path);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("bad.yaml:4:3"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("trainer.stpes"), std::string::npos) << r.output;
  RunOutput typed = RunFam("config --config " + Write("typed.yaml", "trainer:\n  steps: many\n"));
  EXPECT_EQ(typed.exit_code, 2);
  EXPECT_NE(typed.output.find("trainer.steps"), std::string::npos) << typed.output;
  RunOutput nofile = RunFam("train --config " + (dir_ / "nope.yaml").string());
  EXPECT_EQ(nofile.exit_code, 2);
  EXPECT_NE(nofile.output.find("nope.yaml"), std::string::npos) << nofile.output;
  // The error is one line.
  EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << r.output;
}

TEST_F(CliTest, InfoMatchesPresetArithmetic) {
  const char* source = std::getenv("FAM_SOURCE_DIR");
  std::string presets = std::string(source ? source : ".") + "/configs/models/";
  // FAM_SPEC.md §7: non-embedding parameters L·(4·d·h·hd-ish attention + 3·d·f FFN + 2·d norms) + d
  // + F·d; the 24b preset is MQA (one kv head).
  struct Case { const char* name; int64_t layers, d, f, heads, kv; };
  for (Case c : {Case{"1b", 18, 1536, 12288, 12, 12}, Case{"8b", 32, 4096, 16384, 32, 32},
                 Case{"24b", 56, 4096, 32768, 32, 1}}) {
    const int64_t hd = 128, vocab = 256000, fam = 64;
    const int64_t attn = c.d * c.heads * hd * 2 + 2 * c.d * c.kv * hd;
    const int64_t per_layer = attn + 3 * c.d * c.f + 2 * c.d;
    const int64_t total = c.layers * per_layer + c.d + fam * c.d + 2 * vocab * c.d;
    RunOutput r = RunFam("info --model " + presets + c.name + ".yaml");
    EXPECT_EQ(r.exit_code, 0) << r.output;
    EXPECT_NE(r.output.find("(" + std::to_string(total) + ")"), std::string::npos)
        << c.name << " expected " << total << "\n" << r.output;
  }
}

TEST_F(CliTest, ForwardRoundTripAndBadInput) {
  std::string model_yaml = ModelYaml();
  absl::StatusOr<ModelConfig> config = LoadModelConfig(model_yaml);
  ASSERT_TRUE(config.ok()) << config.status();
  FamModel model(*config);
  model.InitializeWeights(42);
  std::string weights = (dir_ / "w.safetensors").string();
  ASSERT_TRUE(SaveModelWeights(model, weights).ok());
  std::vector<int64_t> ids = {1, 5, 9, 13, 2, 49, 0, 7, 7, 30, 11};
  std::string tokens = Write("ids.txt", "1 5 9 13 2\n49 0 7 7 30 11\n");
  std::string out = (dir_ / "logits.npy").string();
  RunOutput r = RunFam("forward --model " + model_yaml + " --weights " + weights + " --tokens " + tokens +
                    " --out " + out);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  absl::StatusOr<Tensor> npy = io::ReadNpy(out);
  ASSERT_TRUE(npy.ok()) << npy.status();
  EXPECT_EQ(npy->shape(), (Shape{11, 50}));
  NoGradGuard no_grad;
  Tensor expect = model.Forward(Tensor::FromInts(ids, {1, 11})).logits;
  EXPECT_LT(testing::MaxAbsDiff(*npy, ops::Reshape(expect, {11, 50})), 1e-6);

  // bf16 weights load too (converted to f32).
  std::string bf16 = (dir_ / "w16.safetensors").string();
  ASSERT_TRUE(SaveModelWeights(model, bf16, DType::kBF16).ok());
  EXPECT_EQ(RunFam("forward --model " + model_yaml + " --weights " + bf16 + " --tokens " + tokens +
                " --out " + out).exit_code, 0);

  RunOutput big = RunFam("forward --model " + model_yaml + " --weights " + weights + " --tokens " +
                      Write("big.txt", "1 2 50") + " --out " + out);
  EXPECT_EQ(big.exit_code, 2);
  EXPECT_NE(big.output.find("id 50"), std::string::npos) << big.output;
  RunOutput text = RunFam("forward --model " + model_yaml + " --weights " + weights + " --tokens " +
                       Write("text.txt", "1 two 3") + " --out " + out);
  EXPECT_EQ(text.exit_code, 2);
  EXPECT_NE(text.output.find("\"two\""), std::string::npos) << text.output;

  // Weights of another shape: every culprit named.
  std::string other_yaml = Write("other.yaml", "model:\n  vocab_size: 50\n  d_model: 16\n  n_layers: 2\n"
                                               "  n_heads: 4\n  n_kv_heads: 4\n  head_dim: 4\n  ffn_dim: 24\n"
                                               "  tie_embeddings: false\n  attention: {type: bswa, block_size: 4}\n");
  RunOutput shape = RunFam("forward --model " + other_yaml + " --weights " + weights + " --tokens " + tokens +
                        " --out " + out);
  EXPECT_EQ(shape.exit_code, 2);
  EXPECT_NE(shape.output.find("model.layers.0.self_attn.k_proj.weight [8, 16]"), std::string::npos)
      << shape.output;
  EXPECT_NE(shape.output.find("unexpected: model.fam.embeddings"), std::string::npos) << shape.output;
  RunOutput nofile = RunFam("forward --model " + model_yaml + " --weights " + (dir_ / "none.safetensors").string() +
                         " --tokens " + tokens + " --out " + out);
  EXPECT_EQ(nofile.exit_code, 2);
  EXPECT_NE(nofile.output.find("none.safetensors"), std::string::npos) << nofile.output;
}

// A message quoting bytes of a file reaches the terminal escaped, on one line.
TEST_F(CliTest, ErrorsEscapeBytesQuotedFromFiles) {
  const std::string tokens = Write("raw.txt", "1 2 \xff\x1b[31mred\n3\n");
  RunOutput bad = RunFam("forward --model " + ModelYaml() + " --weights " +
                         (dir_ / "none.safetensors").string() + " --tokens " + tokens + " --out " +
                         (dir_ / "out.npy").string());
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("\"\\xff\\x1b[31mred\""), std::string::npos) << bad.output;
  EXPECT_EQ(bad.output.find('\xff'), std::string::npos);
  EXPECT_EQ(bad.output.find('\x1b'), std::string::npos);
}

// Sizes this machine can never hold are refused before allocating, naming the keys (exit 2).
TEST_F(CliTest, RefusesModelsLargerThanTheMachine) {
  std::string yaml = testing::Slurp(ModelYaml());
  yaml.replace(yaml.find("vocab_size: 50"), 14, "vocab_size: 50000000000000");
  const std::string huge = Write("huge.yaml", yaml);
  const std::string tokens = Write("ids.txt", "1 2 3\n");
  RunOutput forward = RunFam("forward --model " + huge + " --weights " +
                             (dir_ / "none.safetensors").string() + " --tokens " + tokens +
                             " --out " + (dir_ / "out.npy").string());
  EXPECT_EQ(forward.exit_code, 2) << forward.output;
  EXPECT_NE(forward.output.find("more than this machine's"), std::string::npos) << forward.output;
  EXPECT_NE(forward.output.find("token embeddings (model.vocab_size 50000000000000 x "
                                "model.d_model 16)"),
            std::string::npos)
      << forward.output;
  EXPECT_EQ(forward.output.find("out of host memory"), std::string::npos) << forward.output;
  // Counts beyond any address space are refused by the config check itself.
  yaml.replace(yaml.find("vocab_size: 50000000000000"), 26, "vocab_size: 9000000000000000000");
  RunOutput overflow = RunFam("info --model " + Write("overflow.yaml", yaml));
  EXPECT_EQ(overflow.exit_code, 2) << overflow.output;
  EXPECT_NE(overflow.output.find("more than any machine can address"), std::string::npos)
      << overflow.output;
}

class CliTrainTest : public CliTest {
 protected:
  std::string Experiment(int steps) {
    std::vector<int32_t> tokens;
    for (int i = 0; i < 20000; ++i) tokens.push_back((i * 7 + i / 13) % 60);
    EXPECT_TRUE(data::WriteTokenShard((dir_ / "train-00000.bin").string(), tokens, 64).ok());
    return Write("exp.yaml", "name: sig\nrun_dir: " + (dir_ / "runs").string() + "\n" +
                                 testing::kJobModelYaml +
                                 "data: {train: " + (dir_ / "train-*.bin").string() + R"(}
schedule: {type: constant}
trainer: {steps: )" + std::to_string(steps) +
                                 R"(, global_batch: 2, micro_batch: 2, seq_len: 64, log_interval: 1}
checkpoint: {interval: 5, keep_last: 2}
)");
  }
  std::string Metrics() { return testing::Slurp(dir_ / "runs" / "sig" / "metrics.jsonl"); }
  int64_t TrainLines() {
    std::string m = Metrics();
    int64_t n = 0;
    for (size_t p = 0; (p = m.find("\"kind\":\"train\"", p)) != std::string::npos; ++p) ++n;
    return n;
  }
  pid_t Start(const std::string& config) {
    pid_t pid = fork();
    if (pid == 0) {
      int null = open("/dev/null", O_WRONLY);
      dup2(null, 1);
      dup2(null, 2);
      std::string bin = FamBinary();
      execl(bin.c_str(), bin.c_str(), "train", "--config", config.c_str(), (char*)nullptr);
      _exit(127);
    }
    return pid;
  }
  void WaitForTrainLines(int64_t n) {
    for (int i = 0; i < 600 && TrainLines() < n; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
};

// Training keeps gradients and AdamW moments next to the weights: with less memory than that
// (FAM_HOST_MEMORY_BYTES stands in for a small machine) the run is refused before it starts.
TEST_F(CliTrainTest, RefusesARunTheMachineCannotHold) {
  const std::string config = Experiment(3);
  RunOutput small = RunCommand("FAM_HOST_MEMORY_BYTES=200000 " + FamBinary() + " train --config " +
                               config);
  EXPECT_EQ(small.exit_code, 2) << small.output;
  EXPECT_NE(small.output.find("to train (weights, f32 gradients and AdamW moments), more than "
                              "this machine's 195.3 KiB of memory"),
            std::string::npos)
      << small.output;
  EXPECT_FALSE(fs::exists(dir_ / "runs" / "sig"));
  RunOutput enough = RunCommand("FAM_HOST_MEMORY_BYTES=2000000000 " + FamBinary() +
                                " train --config " + config);
  EXPECT_EQ(enough.exit_code, 0) << enough.output;
}

TEST_F(CliTrainTest, SigtermSavesACheckpointAndExitsCleanly) {
  std::string config = Experiment(100000);
  pid_t pid = Start(config);
  WaitForTrainLines(2);
  ASSERT_GE(TrainLines(), 2);
  kill(pid, SIGTERM);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  std::ifstream latest(dir_ / "runs" / "sig" / "checkpoints" / "latest");
  std::string name;
  latest >> name;
  EXPECT_EQ(name.rfind("step-", 0), 0u) << name;
  // Rerunning resumes from that checkpoint.
  RunOutput again = RunFam("train --config " + config + " --set trainer.steps=" +
                        std::to_string(std::stoll(name.substr(5)) + 2));
  EXPECT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("resumed from"), std::string::npos) << again.output;
}

TEST_F(CliTrainTest, SigkillLosesNothingSaved) {
  std::string config = Experiment(100000);
  pid_t pid = Start(config);
  WaitForTrainLines(12);  // at least one periodic checkpoint (every 5 steps) is complete
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  RunOutput again = RunFam("train --config " + config + " --set trainer.steps=14");
  EXPECT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("resumed from"), std::string::npos) << again.output;
}

}  // namespace
}  // namespace fam
