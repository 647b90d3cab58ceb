// Fuzz targets of the data readers: token shards, weight shards, instruction JSONL and the two
// tokenizer formats (Hugging Face tokenizer.json, SentencePiece .model).
#include <algorithm>
#include <string>
#include <string_view>
#include <vector>

#include "framework/core/error.h"
#include "framework/data/instructions.h"
#include "framework/data/token_shard.h"
#include "framework/data/tokenizer.h"
#include "framework/data/weight_shard.h"
#include "fuzz/fuzz_target.h"
#include "fuzz/targets.h"

namespace fam::fuzz {
namespace {

// What every loaded tokenizer is asked to encode and decode (besides a piece of the input).
constexpr std::string_view kProbeTexts[] = {
    "In the beginning God created the heaven and the earth.\n",
    "  tabs\tand\r\nnewlines  ",
    "caf\xC3\xA9 \xE4\xB8\xAD\xE6\x96\x87 \xF0\x9F\x98\x80",
    "",
    "<s></s><|endoftext|><unk>",
    "\xFF\xFE invalid \xC3 utf-8"};

void ExerciseTokenizer(const data::Tokenizer& tokenizer, std::string_view input) {
  const int64_t vocab = tokenizer.vocab_size();
  if (vocab <= 0) Violation("a loaded tokenizer has no vocabulary");
  for (int32_t id : {tokenizer.bos_id(), tokenizer.eos_id(), tokenizer.pad_id(), tokenizer.unk_id(),
                     tokenizer.prompt_start_id(), tokenizer.newline_id()}) {
    if (id < -1 || id >= vocab) Violation("a special id lies outside the vocabulary");
  }
  std::vector<std::string_view> texts(std::begin(kProbeTexts), std::end(kProbeTexts));
  texts.push_back(input.substr(input.size() - std::min<size_t>(input.size(), 200)));
  for (std::string_view text : texts) {
    const std::vector<int32_t> ids = tokenizer.Encode(text);
    for (int32_t id : ids)
      if (id < 0 || id >= vocab) Violation("Encode returned an id outside the vocabulary");
    (void)tokenizer.Decode(ids);
  }
  for (int32_t id : {0, static_cast<int32_t>(vocab / 2), static_cast<int32_t>(vocab - 1)})
    (void)tokenizer.IdToPiece(id);
  try {
    (void)tokenizer.Decode({static_cast<int32_t>(std::min<int64_t>(vocab, INT32_MAX))});
    Violation("Decode accepted an id past the vocabulary");
  } catch (const Error& e) {
    ExpectCleanError(e.ToStatus(), "");
  }
}

// `input` written as `file_name` (its extension picks the format) and loaded as a tokenizer.
void LoadAndExerciseTokenizer(std::string_view input, const std::string& file_name) {
  const std::string path = Scratch::Get().Write(file_name, input);
  absl::StatusOr<data::Tokenizer> tokenizer = data::Tokenizer::Load(path);
  if (!tokenizer.ok()) return ExpectCleanError(tokenizer.status(), file_name);
  ExerciseTokenizer(*tokenizer, input);
}

}  // namespace

void FuzzTokenShard(std::string_view input) {
  const std::string path = Scratch::Get().Write("train.tok", input);
  for (bool verify : {false, true}) {
    absl::StatusOr<data::TokenShard> shard = data::TokenShard::Open(path, verify);
    if (!shard.ok()) {
      ExpectCleanError(shard.status(), "train.tok");
      continue;
    }
    if (shard->size() < 0 ||
        shard->size() * shard->bytes_per_token() + 64 != static_cast<int64_t>(input.size()))
      Violation("an opened token shard's size disagrees with the file");
    if (absl::Status s = shard->Verify(); !s.ok()) ExpectCleanError(s, "train.tok");
    if (absl::Status s = shard->CheckIds(); !s.ok()) {
      ExpectCleanError(s, "train.tok");
      continue;
    }
    std::vector<int64_t> tokens(static_cast<size_t>(shard->size()));
    shard->Read(0, shard->size(), tokens.data());
    for (int64_t t : tokens)
      if (t < 0 || t >= shard->vocab_size()) Violation("Read returned an id past the vocabulary");
  }
}

void FuzzWeightShard(std::string_view input) {
  const std::string path = Scratch::Get().Write("train.tok.weights", input);
  for (bool verify : {false, true}) {
    absl::StatusOr<data::WeightShard> shard = data::WeightShard::Open(path, verify);
    if (!shard.ok()) {
      ExpectCleanError(shard.status(), "train.tok.weights");
      continue;
    }
    if (shard->size() < 0 || shard->size() > static_cast<int64_t>(input.size()))
      Violation("an opened weight shard claims more codes than the file holds");
    if (shard->num_classes() < 1 || shard->num_classes() > 256)
      Violation("a weight shard's class count is out of range");
    std::vector<float> weights(static_cast<size_t>(shard->size()));
    shard->Read(0, shard->size(), shard->Weights(data::RoleWeights{}), weights.data());
    for (float w : weights)
      if (!(w >= 0)) Violation("a weight shard yielded a negative or NaN weight");
  }
}

void FuzzInstructions(std::string_view input) {
  absl::StatusOr<std::vector<data::InstructionExample>> examples =
      data::ParseInstructionsJsonl(input, "train.jsonl");
  if (!examples.ok()) return ExpectCleanError(examples.status(), "train.jsonl");
  // Encode as prepare-instructions does, with a byte-level stand-in for the tokenizer.
  const data::EncodeFn encode = [](std::string_view text) {
    std::vector<int32_t> ids;
    for (unsigned char c : text) ids.push_back(c);
    return ids;
  };
  data::LossClasses classes;
  data::ExampleOptions options;
  options.repeat_tokens = 16;
  options.repeat_header = {1, 2};
  options.eos_id = 3;
  data::InstructionPacker packer(/*seq_len=*/64, /*slack=*/-1, /*pad_id=*/0);
  for (size_t i = 0; i < examples->size(); ++i) {
    absl::StatusOr<data::EncodedExample> encoded = data::EncodeExample(
        (*examples)[i], encode, options, static_cast<int64_t>(i), &classes, "train.jsonl");
    if (!encoded.ok()) return ExpectCleanError(encoded.status(), "train.jsonl");
    if (encoded->tokens.size() != encoded->classes.size())
      Violation("an encoded example has a class count unlike its token count");
    packer.Add(*encoded);
  }
  packer.Finish();
  if (packer.tokens().size() != packer.classes().size())
    Violation("the packed stream's classes and tokens differ in length");
  for (uint8_t code : packer.classes())
    if (code >= classes.weights().size()) Violation("a packed class has no weight");
}

void FuzzTokenizerJson(std::string_view input) {
  LoadAndExerciseTokenizer(input, "tokenizer.json");
}

void FuzzSentencePiece(std::string_view input) {
  LoadAndExerciseTokenizer(input, "tokenizer.model");
}

}  // namespace fam::fuzz
