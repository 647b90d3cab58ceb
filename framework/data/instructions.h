// Instruction data for fine-tuning (FAM_SPEC.md §7): JSONL examples → token shards plus loss-weight
// shards (weight_shard.h), packed back to back into training windows without per-example masks.
//
// Input: JSONL, one example per line (blank lines are skipped), in one of two forms:
//   {"segments": [{"text": "Summarise: ...", "role": "instruction"},
//                 {"text": "The text says ...", "role": "answer", "weight": 1.0}, ...]}
//   {"prompt": "...", "response": "..."}   (= two segments: prompt as instruction, response as
//                                           answer)
// A segment has "text" (a string, used verbatim: add your own separators), "role" (a string) and
// an optional "weight" (a number >= 0). Roles "instruction" and "answer" take the role weights
// (defaults 0 and 1, re-weightable at training time by finetune.loss_weights); any other role
// (e.g. "system", "context") must give a "weight"; a segment with a "weight" keeps exactly that
// weight. Other top-level keys (e.g. "id") are ignored; other segment keys are errors. Every error
// names "<file>:<line>".
//
// Tokens of an example: each segment encoded on its own (SentencePiece marks its start as a word
// start, so a segment need not begin with a space) and concatenated, every token taking its
// segment's loss class; then, with repeat_tokens > 0, the header "[repeat random segment]:"
// (instruction class) and a copy of k = min(repeat_tokens, n) consecutive tokens of the example's
// n tokens starting at a uniform random offset in [0, n − k] (Philox keyed by seed and the
// example's index; repeat class, weight 0.1 by default); then eos, in the class of the token before
// it.
//
// Packing ("block-aware boundaries"): the stream is cut into the loader's windows, one every
// seq_len tokens (a window holds seq_len + 1 tokens: its last target is the next window's first
// token). With r = seq_len − (position mod seq_len) tokens of room left in the current window, an
// example of n tokens is appended where the stream ends when n <= r (it fits) or r >= slack (it
// runs on into the next window, as the paper's packing does); otherwise, when it would start in
// the last `slack` tokens of a window without fitting there, r padding tokens (pad id, weight 0)
// fill the window and the example starts the next one. slack defaults to
// clamp(seq_len / 16, 1, 64). The end of the stream is padded to a whole number of windows plus
// one token, so every example lands in a window the loader reads.
//
// Output in out_dir (PrepareInstructions): the tokenizer (copied as by CopyTokenizer:
// tokenizer.model, or tokenizer.json + tokenizer_config.json), train-00000.bin … with
// train-00000.weights … next to them, val-… likewise, and data.json (written last): the
// prepare-data fields that ReadDataManifest reads ("format": "famtrain-data", vocab_size, special
// ids, tokenizer, train/val {tokens, documents (= examples), shards [{file, tokens, bytes,
// weights, weights_bytes}]}) plus "instructions": {seq_len, boundary_slack, repeat_tokens,
// repeat_header, seed, val_fraction, classes [{code, name, weight}], and per split examples,
// padding_tokens, weighted_tokens, longer_than_window}.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "framework/data/weight_shard.h"

namespace fam::data {

inline constexpr char kRepeatHeader[] = "[repeat random segment]:";

struct InstructionSegment {
  std::string text;
  std::string role;
  std::optional<double> weight;  // explicit weight (fixed)
};

struct InstructionExample {
  std::vector<InstructionSegment> segments;
  int64_t line = 0;  // 1-based line in its file
};

// Parses JSONL text standing for the file `source`; the first bad line is an InvalidArgument
// "<source>:<line>: what".
absl::StatusOr<std::vector<InstructionExample>> ParseInstructionsJsonl(std::string_view text,
                                                                       const std::string& source);
absl::StatusOr<std::vector<InstructionExample>> ReadInstructionsJsonl(const std::string& path);

// The loss classes of a data set: pad, instruction, answer, repeat, then one class per distinct
// explicit weight (in order of first use; at most 252 of them).
class LossClasses {
 public:
  explicit LossClasses(const RoleWeights& roles = {});
  // The class of a segment (adds an explicit-weight class on first use). Errors for an unknown
  // role without a weight, a bad weight, or too many distinct weights.
  absl::StatusOr<uint8_t> ForSegment(const InstructionSegment& segment);
  // Weight of every class (the weight shards' table).
  const std::vector<float>& weights() const { return weights_; }
  std::string name(uint8_t code) const;

 private:
  std::vector<float> weights_;
  std::map<float, uint8_t> explicit_;  // weight → class
};

using EncodeFn = std::function<std::vector<int32_t>(std::string_view)>;

struct ExampleOptions {
  int64_t repeat_tokens = 256;         // 0: no repeat segment
  std::vector<int32_t> repeat_header;  // tokens of kRepeatHeader
  int32_t eos_id = -1;                 // < 0: no eos after an example
  uint64_t seed = 0;                   // of the repeat spans
};

struct EncodedExample {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> classes;  // one per token
};

// The tokens and loss classes of example number `index` (see the top of this file). Errors name
// the example's line.
absl::StatusOr<EncodedExample> EncodeExample(const InstructionExample& example,
                                             const EncodeFn& encode, const ExampleOptions& options,
                                             int64_t index, LossClasses* classes,
                                             const std::string& source = "");

int64_t DefaultBoundarySlack(int64_t seq_len);

// Packs examples into one stream with the block-aware boundary rule.
class InstructionPacker {
 public:
  // slack < 0: DefaultBoundarySlack(seq_len).
  InstructionPacker(int64_t seq_len, int64_t slack, int32_t pad_id);

  void Add(const EncodedExample& example);
  // Pads the end to a whole number of windows plus one token (nothing when the stream is empty).
  void Finish();

  const std::vector<int32_t>& tokens() const { return tokens_; }
  const std::vector<uint8_t>& classes() const { return classes_; }
  std::vector<int32_t>& mutable_tokens() { return tokens_; }
  std::vector<uint8_t>& mutable_classes() { return classes_; }
  // Stream offset where each added example starts.
  const std::vector<int64_t>& starts() const { return starts_; }
  int64_t padding() const { return padding_; }
  int64_t longer_than_window() const { return longer_; }
  int64_t slack() const { return slack_; }

 private:
  void Pad(int64_t count);

  int64_t seq_len_, slack_;
  int32_t pad_id_;
  std::vector<int32_t> tokens_;
  std::vector<uint8_t> classes_;
  std::vector<int64_t> starts_;
  int64_t padding_ = 0, longer_ = 0;
};

struct PrepareInstructionsOptions {
  std::vector<std::string> inputs;  // JSONL files
  std::string tokenizer;            // SentencePiece .model (copied into out_dir)
  std::string out_dir;
  int64_t seq_len = 0;               // the training run's trainer.seq_len
  int64_t boundary_slack = -1;       // < 0: DefaultBoundarySlack(seq_len)
  int64_t repeat_tokens = 256;       // 0: no repeat segment
  RoleWeights weights;               // recorded in the weight shards
  double val_fraction = 0.0;         // in [0, 0.5]: every 1/val_fraction-th example goes to val
  int64_t shard_tokens = 100000000;  // max tokens per shard
  uint64_t seed = 0;                 // repeat spans
  std::function<void(const std::string&)> log;  // progress lines (optional)
};

struct InstructionSplitSummary {
  int64_t examples = 0, tokens = 0, padding_tokens = 0, weighted_tokens = 0;
  int64_t longer_than_window = 0;
  std::vector<std::string> shards;  // token shard paths
};

struct InstructionDataSummary {
  InstructionSplitSummary train, val;
  std::vector<float> class_weights;
};

// Reads, encodes, splits, packs and writes everything (see the top of this file). Errors name the
// input line, file or option at fault; data.json is removed first and written last.
absl::StatusOr<InstructionDataSummary> PrepareInstructions(const PrepareInstructionsOptions& o);

}  // namespace fam::data
