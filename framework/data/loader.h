// Deterministic, resumable training data loader over token shards.
//
// Stream and windows: the shards, in the order given, form one token stream of N tokens. Window w
// covers tokens [w·seq_len, w·seq_len + seq_len + 1): inputs are its first seq_len tokens, targets
// its last seq_len (shifted by one). Input chunks do not overlap, so every token after the first is
// a target exactly once per epoch; windows may cross shard boundaries. NumWindows() =
// floor((N − 1) / seq_len).
//
// Order: epoch e visits the windows in a permutation that is a pure function of (seed, e): a
// Fisher-Yates shuffle driven by the Philox generator (framework/core/rng.h) on stream
// kDataOrderStream + e; shuffle = false uses the identity order.
//
// Steps and ranks: a global step takes the next global_batch positions [p, p + global_batch) of the
// epoch's order. They are split into world_size contiguous blocks of global_batch / world_size, one
// per rank; rank r's block is cut into micro batches of micro_batch windows (gradient accumulation
// steps = global_batch / (world_size · micro_batch)). So the windows of one step, over all ranks,
// are the same set whatever the world size, which lets a run resume on another world size without
// repeating or skipping windows. When fewer than global_batch positions remain, the rest of the
// epoch is skipped and the next epoch starts at position 0.
//
// State: {epoch, samples_consumed} — position in the current epoch's order, counted in windows and
// the same on every rank. state() after a step, passed to Restore(), continues identically.
//
// Loss weights: when every shard has a weight shard next to it (weight_shard.h; written by
// `fam prepare-instructions`), batches also carry per-token loss weights aligned with the targets
// (the weight of target token t is the weight of that token in the stream). Either all shards have
// one or none (a mix is an error naming a shard without one).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "framework/core/tensor.h"
#include "framework/data/token_shard.h"
#include "framework/data/weight_shard.h"

namespace fam::data {

// Philox stream base for the window order (epoch e uses kDataOrderStream + e).
inline constexpr uint64_t kDataOrderStream = 0xDA7A000000000000ull;

// Expands a shard list: comma-separated entries, each a path or a glob pattern (sorted). A pattern
// with no match is NotFound naming it.
absl::StatusOr<std::vector<std::string>> ExpandShardGlob(const std::string& patterns);

struct LoaderOptions {
  std::vector<std::string> shards;  // in stream order (see ExpandShardGlob)
  int64_t seq_len = 0;
  int64_t global_batch = 0;  // windows per optimizer step, all ranks together
  int64_t micro_batch = 0;   // windows per forward/backward on one rank
  int world_size = 1;
  int rank = 0;
  uint64_t seed = 0;
  bool shuffle = true;
  bool verify_checksums = true;  // checksum every shard on open
  int64_t max_vocab_size = 0;    // > 0: shards whose header vocab exceeds it are rejected
  bool use_weights = true;       // read weight shards when they exist (false: ignore them)
  // Weights of the role classes (instruction, answer, repeat) replacing those in the weight
  // shards; unset keeps the shards' own (finetune.loss_weights sets it).
  std::optional<RoleWeights> role_weights;
};

struct LoaderState {
  int64_t epoch = 0;
  int64_t samples_consumed = 0;  // windows consumed in this epoch (global, rank-independent)
};

// One micro batch: inputs and targets, both kI64 [micro_batch, seq_len] on the CPU, and the
// targets' loss weights, kF32 [micro_batch, seq_len], when the shards have weight shards
// (undefined otherwise).
struct Batch {
  Tensor inputs;
  Tensor targets;
  Tensor weights;
};

class DataLoader {
 public:
  DataLoader() = default;

  // Opens and validates the shards and the batch arithmetic (global_batch divisible by
  // world_size · micro_batch, at least one step per epoch). Errors name the shard or option.
  static absl::StatusOr<DataLoader> Open(const LoaderOptions& options);

  int64_t NumWindows() const { return num_windows_; }
  int64_t NumTokens() const { return total_tokens_; }
  int64_t vocab_size() const { return vocab_size_; }
  bool has_weights() const { return !weight_shards_.empty(); }
  int64_t steps_per_epoch() const { return num_windows_ / options_.global_batch; }
  int64_t accumulation_steps() const {
    return options_.global_batch / (options_.world_size * options_.micro_batch);
  }
  const LoaderOptions& options() const { return options_; }

  // This rank's micro batches of the next global step (accumulation_steps() of them); advances
  // the state. A token id >= the shard's vocab_size is an InvalidArgument naming shard and offset.
  absl::StatusOr<std::vector<Batch>> NextStep();

  LoaderState state() const { return state_; }
  absl::Status Restore(const LoaderState& state);

  // The state a step taken at `state` starts from: the next epoch when fewer than global_batch
  // windows remain in this one.
  LoaderState StepStart(LoaderState state) const;
  // Window ids (into the stream) of the global step taken at `state` (all ranks, position order).
  std::vector<int64_t> StepWindows(LoaderState state) const;
  // Window ids this rank reads in micro batch `micro` of the step taken at `state`.
  std::vector<int64_t> RankMicroWindows(LoaderState state, int64_t micro) const;
  // The order of epoch `epoch`: position → window id.
  std::vector<int64_t> EpochOrder(int64_t epoch) const;

  // Builds a batch from explicit window ids.
  absl::StatusOr<Batch> ReadWindows(const std::vector<int64_t>& window_ids) const;

  // Validation: windows in stream order (no shuffle) grouped into batches of micro_batch; global
  // batch b goes to rank b % world_size. Returns this rank's batches among the first max_batches
  // global ones (max_batches <= 0: all).
  absl::StatusOr<std::vector<Batch>> ValBatches(int64_t max_batches) const;

 private:
  // Opens the weight shards next to the token shards, when there are any.
  absl::Status OpenWeights();
  // Copies stream tokens [begin, begin + count) into out (crossing shards), checking ids.
  void ReadStream(int64_t begin, int64_t count, int64_t* out) const;
  // The same for the loss weights (has_weights() only).
  void ReadStreamWeights(int64_t begin, int64_t count, float* out) const;
  void EnsureOrder(int64_t epoch) const;

  LoaderOptions options_;
  std::vector<TokenShard> shards_;
  std::vector<int64_t> shard_starts_;        // stream offset of each shard's first token
  std::vector<WeightShard> weight_shards_;   // one per shard, or none
  std::vector<ClassWeights> weight_tables_;  // class → weight of each weight shard
  int64_t total_tokens_ = 0;
  int64_t num_windows_ = 0;
  int64_t vocab_size_ = 0;
  LoaderState state_;
  mutable int64_t order_epoch_ = -1;  // epoch of the cached order
  mutable std::vector<int64_t> order_;
};

}  // namespace fam::data
