// Helpers the test files share beyond gradcheck.h: whole-file reading and writing, finding mpirun
// and the environment of the mpirun jobs the tests start, the world communicator of the
// multi-rank tests, the optimizers they compare, checks of training runs (bitwise equality, loss
// differences, the f32 master weights of bf16 checkpoints), and the model: blocks of the small YAML
// run configs that several tests train.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "framework/dist/communicator.h"
#include "framework/io/checkpoint.h"
#include "framework/optim/optimizer.h"
#include "gtest/gtest.h"

namespace fam::testing {

// The whole content of a file, bytes as they are; empty when it cannot be read.
std::string Slurp(const std::filesystem::path& path);
// Writes `text` to `path` (replacing it), creating its parent directories first.
void Spit(const std::filesystem::path& path, const std::string& text);

// mpirun from FAM_MPIRUN or the PATH; empty when there is none.
std::string FindMpirun();
// Sets what the mpirun jobs a test starts need: OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM)=1 and
// OMP_NUM_THREADS=1.
void SetMpirunJobEnv();

// A global test environment that creates the world communicator (60 s collective timeout, so a
// broken test aborts the job instead of hanging ctest) into *world, and resets it before MPI is
// finalised at exit. With a `banner`, each rank prints "<banner>: rank R of N (backend)".
class WorldEnvironment : public ::testing::Environment {
 public:
  explicit WorldEnvironment(std::shared_ptr<dist::Communicator>* world, std::string banner = "")
      : world_(world), banner_(std::move(banner)) {}
  void SetUp() override;
  void TearDown() override { world_->reset(); }

 private:
  std::shared_ptr<dist::Communicator>* world_;
  std::string banner_;
};

// AdamW with weight decay 0.1, and Adafactor with default options, over `p`.
std::unique_ptr<Optimizer> MakeAdamW(std::vector<NamedParameter> p);
std::unique_ptr<Optimizer> MakeAdafactor(std::vector<NamedParameter> p);

// Same shape and the same values, bit for bit (NaNs aside).
bool SameBits(const Tensor& a, const Tensor& b);

// Largest |a - b| over the (step, loss) lists of two runs with the same steps (a failure when the
// steps differ).
double MaxLossDifference(const std::vector<std::pair<int64_t, double>>& a,
                         const std::vector<std::pair<int64_t, double>>& b);

// A valid checkpoint with one small tensor "w" = {value, 2} at `step`, saved under
// runs_dir/<run>/checkpoints (what the nightly tests evaluate).
void SaveTinyCheckpoint(const std::filesystem::path& runs_dir, const std::string& run, int64_t step,
                        float value);

// A checkpoint of a bf16 run: f32 weights equal to the f32 master copies in the optimizer state,
// one master per trained tensor (which proves the parameters were bf16), none for anything else.
void ExpectMastersSaved(const io::LoadedCheckpoint& c);

// Token shards of a learnable stream (6000 short "sentences" of 4 kinds, vocab 64):
// dir/train-00000.bin with all of it and dir/val-00000.bin with its first `val_tokens` tokens.
void WriteSentenceShards(const std::filesystem::path& dir, size_t val_tokens);
// A run config (YAML) that trains the learning model below on WriteSentenceShards data in `dir`:
// AdamW, cosine schedule, 12 steps of 4 sequences of 32 tokens (micro-batches of 2), validation
// every 6 steps, only the final checkpoint; the run goes to dir/runs/<name>. Tests change the
// rest with overrides.
std::string LearningRunYaml(const std::string& name, const std::filesystem::path& dir);

// The model: block of a small FAM model that learns within a few steps (GQA, tied embeddings,
// both training tricks); trainer_test and dist_train_test train it.
inline constexpr char kLearningModelYaml[] = R"(model:
  vocab_size: 64
  d_model: 32
  n_layers: 2
  n_heads: 4
  n_kv_heads: 2
  head_dim: 8
  ffn_dim: 64
  tie_embeddings: true
  attention: {type: fam, block_size: 8, memory_segments: 1, fam_length: 2}
  training: {random_position_offset: true, state_passing_prob: 0.8}
)";

// The model: block of the small FAM model (4 kv heads, blocks of 16) that the `fam train` jobs of
// cli_test and dist_failure_test run.
inline constexpr char kJobModelYaml[] = R"(model:
  vocab_size: 64
  d_model: 32
  n_layers: 2
  n_heads: 4
  n_kv_heads: 4
  head_dim: 8
  ffn_dim: 64
  attention: {type: fam, block_size: 16, memory_segments: 1, fam_length: 4}
)";

}  // namespace fam::testing
