// Instruction data (framework/data/instructions.h, weight_shard.h, the loader's weights): JSONL
// parsing and line-numbered errors, per-token loss classes of segments, the repeat copy, the
// block-aware packing rule against a brute-force check of its invariants, weight shards (format
// checks, pairing with their token shard), loader weights aligned with targets (token value =
// stream position, so each target's expected weight is known without the loader), role
// re-weighting, and `prepare-instructions` end to end with a real SentencePiece tokenizer.
#include "framework/data/instructions.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "framework/data/loader.h"
#include "framework/data/prepare_data.h"
#include "framework/data/token_shard.h"
#include "framework/data/tokenizer.h"
#include "framework/data/weight_shard.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "trainers/cli/cli.h"
#include "trainers/cli/commands.h"

namespace fam::data {
namespace {

namespace fs = std::filesystem;

std::string TempDirFor(const std::string& test) {
  fs::path dir =
      fs::path(::testing::TempDir()) / ("fam_instr_" + test + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

bool Contains(const absl::Status& status, const std::string& part) {
  return std::string(status.message()).find(part) != std::string::npos;
}

// One token per byte: id = byte value (vocab 256), so token counts are text lengths.
std::vector<int32_t> ByteEncode(std::string_view text) {
  std::vector<int32_t> ids;
  for (unsigned char c : text) ids.push_back(c);
  return ids;
}

// ---------------------------------------------------------------------------------------------
// JSONL

TEST(InstructionsJsonl, BothFormsBlankLinesAndLineNumbers) {
  const std::string text =
      "{\"prompt\": \"Q1\", \"response\": \"A1\", \"id\": 7}\n"
      "\n"
      "   \r\n"
      "{\"segments\": [{\"text\": \"sys\", \"role\": \"system\", \"weight\": 0.5},"
      " {\"text\": \"ask\", \"role\": \"instruction\"}, {\"text\": \"say\", \"role\": "
      "\"answer\"}]}\r\n"
      "{\"segments\": [{\"text\": \"x\", \"role\": \"answer\", \"weight\": 0}]}";  // no final \n
  absl::StatusOr<std::vector<InstructionExample>> ex = ParseInstructionsJsonl(text, "d.jsonl");
  ASSERT_TRUE(ex.ok()) << ex.status();
  ASSERT_EQ(ex->size(), 3u);
  EXPECT_EQ((*ex)[0].line, 1);
  ASSERT_EQ((*ex)[0].segments.size(), 2u);
  EXPECT_EQ((*ex)[0].segments[0].text, "Q1");
  EXPECT_EQ((*ex)[0].segments[0].role, "instruction");
  EXPECT_FALSE((*ex)[0].segments[0].weight.has_value());
  EXPECT_EQ((*ex)[0].segments[1].text, "A1");
  EXPECT_EQ((*ex)[0].segments[1].role, "answer");
  EXPECT_EQ((*ex)[1].line, 4);
  ASSERT_EQ((*ex)[1].segments.size(), 3u);
  EXPECT_EQ((*ex)[1].segments[0].role, "system");
  EXPECT_EQ((*ex)[1].segments[0].weight, 0.5);
  EXPECT_EQ((*ex)[1].segments[2].text, "say");
  EXPECT_EQ((*ex)[2].line, 5);
  EXPECT_EQ((*ex)[2].segments[0].weight, 0.0);
}

TEST(InstructionsJsonl, BadLinesAreNamedWithTheirLineNumber) {
  const std::string good = "{\"prompt\": \"q\", \"response\": \"a\"}\n";
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{\"prompt\": \"q\", \"response\": }", "not valid JSON"},
      {"[1, 2]", "expected a JSON object, got an array"},
      {"{\"text\": \"q\"}", "expected \"segments\""},
      {"{\"prompt\": \"q\"}", "\"response\": expected a string, got none"},
      {"{\"prompt\": 3, \"response\": \"a\"}", "\"prompt\": expected a string, got a number"},
      {"{\"segments\": []}", "\"segments\": expected a non-empty array, got an empty array"},
      {"{\"segments\": {\"text\": \"q\"}}",
       "\"segments\": expected a non-empty array, got an object"},
      {"{\"segments\": [\"q\"]}", "segments[0]: expected an object, got a string"},
      {"{\"segments\": [{\"text\": \"q\", \"role\": \"answer\", \"wieght\": 1}]}",
       "segments[0]: unknown key \"wieght\" (expected text, role, weight)"},
      {"{\"segments\": [{\"role\": \"answer\"}]}", "segments[0].text: expected a string, got none"},
      {"{\"segments\": [{\"text\": \"q\", \"role\": 1}]}",
       "segments[0].role: expected a string, got a number"},
      {"{\"segments\": [{\"text\": \"a\", \"role\": \"answer\"}, {\"text\": \"q\", \"role\": "
       "\"context\"}]}",
       "segments[1]: role \"context\" needs a \"weight\""},
      {"{\"segments\": [{\"text\": \"q\", \"role\": \"answer\", \"weight\": -1}]}",
       "segments[0].weight: expected a number >= 0, got -1"},
      {"{\"segments\": [{\"text\": \"q\", \"role\": \"answer\", \"weight\": \"1\"}]}",
       "segments[0].weight: expected a number >= 0, got a string"},
      {"{\"segments\": [{\"text\": \"q\", \"role\": \"answer\"}], \"prompt\": \"p\"}",
       "has both \"segments\" and \"prompt\"/\"response\""},
  };
  for (const auto& [line, what] : cases) {
    SCOPED_TRACE(line);
    // Two good lines and a blank one first: the bad one is line 4.
    absl::StatusOr<std::vector<InstructionExample>> ex =
        ParseInstructionsJsonl(good + "\n" + good + line + "\n" + good, "in.jsonl");
    ASSERT_FALSE(ex.ok());
    EXPECT_EQ(ex.status().code(), absl::StatusCode::kInvalidArgument);
    const std::string message(ex.status().message());
    EXPECT_EQ(message.rfind("in.jsonl:4: ", 0), 0u) << message;
    EXPECT_NE(message.find(what), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}

// ---------------------------------------------------------------------------------------------
// Encoding: one loss class per token

TEST(InstructionsEncode, EveryTokenGetsItsSegmentsClassAndEosTheClassBeforeIt) {
  InstructionExample ex;
  ex.line = 3;
  ex.segments = {{"Sys.", "system", 0.25},
                 {"Question?", "instruction", std::nullopt},
                 {"Answer", "answer", std::nullopt},
                 {"!!", "note", 0.25},    // same explicit weight: same class
                 {"ok", "answer", 2.0}};  // an explicit weight on a known role: fixed
  LossClasses classes(RoleWeights{0.0, 1.0, 0.1});
  ExampleOptions eo;
  eo.repeat_tokens = 0;
  eo.eos_id = 255;
  absl::StatusOr<EncodedExample> out = EncodeExample(ex, ByteEncode, eo, 0, &classes, "f.jsonl");
  ASSERT_TRUE(out.ok()) << out.status();
  // Naive expectation: text by text, byte by byte.
  std::vector<int32_t> tokens;
  std::vector<float> weights;
  const std::vector<std::pair<std::string, float>> parts = {
      {"Sys.", 0.25f}, {"Question?", 0.0f}, {"Answer", 1.0f}, {"!!", 0.25f}, {"ok", 2.0f}};
  for (const auto& [text, w] : parts) {
    for (unsigned char c : text) {
      tokens.push_back(c);
      weights.push_back(w);
    }
  }
  tokens.push_back(255);
  weights.push_back(2.0f);  // eos: the weight of the token before it
  ASSERT_EQ(out->tokens, tokens);
  ASSERT_EQ(out->classes.size(), tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    EXPECT_EQ(classes.weights()[out->classes[i]], weights[i]) << "token " << i;
  }
  EXPECT_EQ(out->classes[4], kLossClassInstruction);
  EXPECT_EQ(out->classes[13], kLossClassAnswer);
  // Classes: pad, instruction, answer, repeat, then 0.25 and 2.0 in order of first use.
  EXPECT_EQ(classes.weights(), (std::vector<float>{0.0f, 0.0f, 1.0f, 0.1f, 0.25f, 2.0f}));
  EXPECT_EQ(classes.name(0), "pad");
  EXPECT_EQ(classes.name(3), "repeat");
  EXPECT_EQ(classes.name(5), "explicit");

  // An example without tokens is an error naming its line.
  InstructionExample empty;
  empty.line = 9;
  empty.segments = {{"", "answer", std::nullopt}};
  absl::StatusOr<EncodedExample> bad = EncodeExample(empty, ByteEncode, eo, 1, &classes, "f.jsonl");
  ASSERT_FALSE(bad.ok());
  EXPECT_TRUE(Contains(bad.status(), "f.jsonl:9: the example has no tokens")) << bad.status();
}

TEST(InstructionsEncode, RepeatSegmentCopiesARandomSpanWithTheRepeatWeight) {
  InstructionExample ex;
  ex.segments = {{"abcdefghij", "instruction", std::nullopt},
                 {"KLMNOPQRSTUVWXYZ", "answer", std::nullopt}};  // n = 26 tokens
  const std::vector<int32_t> body = ByteEncode("abcdefghijKLMNOPQRSTUVWXYZ");
  ExampleOptions eo;
  eo.repeat_tokens = 5;
  eo.repeat_header = {200, 201, 202};
  eo.eos_id = 255;
  eo.seed = 11;
  std::set<int64_t> starts;
  for (int64_t index = 0; index < 200; ++index) {
    LossClasses classes(RoleWeights{0.0, 1.0, 0.1});
    absl::StatusOr<EncodedExample> out = EncodeExample(ex, ByteEncode, eo, index, &classes);
    ASSERT_TRUE(out.ok()) << out.status();
    ASSERT_EQ(out->tokens.size(), 26u + 3u + 5u + 1u);
    EXPECT_TRUE(std::equal(body.begin(), body.end(), out->tokens.begin()));
    for (int i = 26; i < 29; ++i) {
      EXPECT_EQ(out->tokens[i], 200 + (i - 26));
      EXPECT_EQ(out->classes[i], kLossClassInstruction);  // the header is an instruction
    }
    // The copy: 5 consecutive tokens of the body, repeat class (weight 0.1).
    const std::vector<int32_t> copy(out->tokens.begin() + 29, out->tokens.begin() + 34);
    auto found = std::search(body.begin(), body.end(), copy.begin(), copy.end());
    ASSERT_NE(found, body.end());
    starts.insert(found - body.begin());
    for (int i = 29; i < 34; ++i) {
      EXPECT_EQ(out->classes[i], kLossClassRepeat);
      EXPECT_FLOAT_EQ(classes.weights()[out->classes[i]], 0.1f);
    }
    EXPECT_EQ(out->tokens.back(), 255);
    EXPECT_EQ(out->classes.back(), kLossClassRepeat);
    // Deterministic in (seed, index).
    absl::StatusOr<EncodedExample> again = EncodeExample(ex, ByteEncode, eo, index, &classes);
    EXPECT_EQ(again->tokens, out->tokens);
  }
  // Every start in [0, n - k] occurs (200 uniform draws over 22 values).
  EXPECT_EQ(starts.size(), 22u);
  EXPECT_EQ(*starts.rbegin(), 21);
  // A span longer than the example copies all of it.
  eo.repeat_tokens = 100;
  LossClasses classes;
  absl::StatusOr<EncodedExample> all = EncodeExample(ex, ByteEncode, eo, 0, &classes);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->tokens.size(), 26u + 3u + 26u + 1u);
  EXPECT_TRUE(std::equal(body.begin(), body.end(), all->tokens.begin() + 29));
}

// ---------------------------------------------------------------------------------------------
// Packing

EncodedExample Example(int64_t n, int32_t id) {
  EncodedExample e;
  e.tokens.assign(static_cast<size_t>(n), id);
  e.classes.assign(static_cast<size_t>(n), kLossClassAnswer);
  return e;
}

TEST(InstructionsPack, BlockAwareBoundariesOnAWorkedExample) {
  // Windows of 16 tokens, slack 4, pad id 0; examples use their own ids.
  InstructionPacker p(16, 4, 0);
  EXPECT_EQ(p.slack(), 4);
  p.Add(Example(10, 1));  // [0, 10): 6 left
  p.Add(Example(9, 2));   // 6 >= slack: runs on into window 1 → [10, 19)
  p.Add(Example(11, 3));  // 13 left in window 1, fits → [19, 30); 2 left
  p.Add(Example(2, 4));   // 2 left but it fits → [30, 32)
  p.Add(Example(5, 5));   // window start → [32, 37)
  p.Add(Example(8, 6));   // → [37, 45); 3 left < slack
  p.Add(Example(7, 7));   // does not fit in 3: pad [45, 48), start at 48 → [48, 55)
  p.Add(Example(40, 8));  // longer than a window → [55, 95)
  p.Finish();             // pad to 6 windows + 1 = 97 tokens
  EXPECT_EQ(p.starts(), (std::vector<int64_t>{0, 10, 19, 30, 32, 37, 48, 55}));
  EXPECT_EQ(p.padding(), 3 + 2);
  EXPECT_EQ(p.longer_than_window(), 1);
  ASSERT_EQ(p.tokens().size(), 97u);
  for (int64_t i = 45; i < 48; ++i) {
    EXPECT_EQ(p.tokens()[i], 0);
    EXPECT_EQ(p.classes()[i], kLossClassPad);
  }
  EXPECT_EQ(p.tokens()[95], 0);
  EXPECT_EQ(p.classes()[96], kLossClassPad);
  EXPECT_EQ(p.tokens()[94], 8);
  // Default slack: clamp(seq_len / 16, 1, 64).
  EXPECT_EQ(DefaultBoundarySlack(8704), 64);
  EXPECT_EQ(DefaultBoundarySlack(512), 32);
  EXPECT_EQ(DefaultBoundarySlack(8), 1);
  EXPECT_EQ(InstructionPacker(512, -1, 0).slack(), 32);
}

TEST(InstructionsPack, RandomStreamsKeepTheRuleAndLoseNothing) {
  std::mt19937 gen(5);
  for (int trial = 0; trial < 50; ++trial) {
    const int64_t seq_len = 8 + gen() % 40;
    const int64_t slack = 1 + gen() % 10;
    InstructionPacker p(seq_len, slack, 0);
    std::vector<int64_t> lengths;
    for (int i = 0, n = 1 + gen() % 30; i < n; ++i) {
      lengths.push_back(1 + gen() % (2 * seq_len));
      p.Add(Example(lengths.back(), i + 1));
    }
    p.Finish();
    const std::vector<int32_t>& t = p.tokens();
    const int64_t size = static_cast<int64_t>(t.size());
    // Whole windows plus one token; no more than one window of tail padding.
    EXPECT_EQ((size - 1) % seq_len, 0);
    int64_t end = 0;  // end of the previous example
    for (size_t i = 0; i < lengths.size(); ++i) {
      const int64_t s = p.starts()[i], n = lengths[i];
      const int64_t room = seq_len - end % seq_len;
      // Padding only when the example would start in the last `slack` tokens without fitting:
      // then it starts the next window; otherwise right where the previous one ended.
      if (end % seq_len != 0 && n > room && room < slack) {
        EXPECT_EQ(s, end + room);
        EXPECT_EQ(s % seq_len, 0);
      } else {
        EXPECT_EQ(s, end);
      }
      for (int64_t j = end; j < s; ++j) EXPECT_EQ(t[j], 0);
      for (int64_t j = s; j < s + n; ++j) ASSERT_EQ(t[j], static_cast<int32_t>(i + 1));
      end = s + n;
    }
    EXPECT_LT(size - end, seq_len + 1);
    for (int64_t j = end; j < size; ++j) EXPECT_EQ(t[j], 0);
  }
}

// ---------------------------------------------------------------------------------------------
// Weight shards and the loader

class WeightedLoaderTest : public ::testing::Test {
 protected:
  static constexpr int64_t kSeqLen = 8;
  // Class of stream position p, and the class weights.
  static uint8_t ClassOf(int64_t p) { return static_cast<uint8_t>(p % 6); }
  static std::vector<float> Table() { return {0.0f, 0.0f, 1.0f, 0.1f, 0.5f, 3.0f}; }

  void SetUp() override {
    dir_ = TempDirFor(::testing::UnitTest::GetInstance()->current_test_info()->name());
    // Stream of 301 tokens (value = position) in two shards with weight shards next to them.
    int64_t pos = 0;
    for (int64_t size : {123, 178}) {
      std::vector<int32_t> tokens;
      std::vector<uint8_t> codes;
      for (int64_t i = 0; i < size; ++i, ++pos) {
        tokens.push_back(static_cast<int32_t>(pos));
        codes.push_back(ClassOf(pos));
      }
      const std::string path = dir_ + "/train-0000" + std::to_string(shards_.size()) + ".bin";
      ASSERT_TRUE(WriteTokenShard(path, tokens, 1000).ok());
      absl::StatusOr<TokenShard> shard = TokenShard::Open(path);
      ASSERT_TRUE(shard.ok());
      ASSERT_TRUE(WriteWeightShard(WeightShardPath(path), codes, Table(), shard->checksum()).ok());
      shards_.push_back(path);
    }
  }
  void TearDown() override { fs::remove_all(dir_); }

  LoaderOptions Options() const {
    LoaderOptions o;
    o.shards = shards_;
    o.seq_len = kSeqLen;
    o.global_batch = 4;
    o.micro_batch = 2;
    o.seed = 3;
    return o;
  }

  std::string dir_;
  std::vector<std::string> shards_;
};

TEST_F(WeightedLoaderTest, WeightsAreAlignedWithTargets) {
  EXPECT_EQ(WeightShardPath(dir_ + "/train-00000.bin"), dir_ + "/train-00000.weights");
  EXPECT_EQ(WeightShardPath("x/data"), "x/data.weights");
  absl::StatusOr<DataLoader> loader = DataLoader::Open(Options());
  ASSERT_TRUE(loader.ok()) << loader.status();
  EXPECT_TRUE(loader->has_weights());
  const std::vector<float> table = Table();
  int64_t checked = 0;
  for (int step = 0; step < 2 * loader->steps_per_epoch(); ++step) {  // crosses an epoch
    absl::StatusOr<std::vector<Batch>> batches = loader->NextStep();
    ASSERT_TRUE(batches.ok()) << batches.status();
    for (const Batch& b : *batches) {
      ASSERT_TRUE(b.weights.defined());
      EXPECT_EQ(b.weights.dtype(), DType::kF32);
      EXPECT_EQ(b.weights.shape(), b.targets.shape());
      const std::vector<int64_t> targets = b.targets.ToInts();
      const std::vector<float> weights = b.weights.ToFloats();
      for (size_t i = 0; i < targets.size(); ++i, ++checked) {
        ASSERT_EQ(weights[i], table[ClassOf(targets[i])]) << "target " << targets[i];
      }
    }
  }
  EXPECT_GT(checked, 300);
  // Validation batches carry them too, and a window crossing the shard boundary (tokens
  // 120..128) is right.
  absl::StatusOr<Batch> cross = loader->ReadWindows({15});
  ASSERT_TRUE(cross.ok());
  const std::vector<float> w = cross->weights.ToFloats();
  for (int64_t j = 0; j < kSeqLen; ++j) EXPECT_EQ(w[j], table[ClassOf(15 * kSeqLen + j + 1)]);
  absl::StatusOr<std::vector<Batch>> val = loader->ValBatches(2);
  ASSERT_TRUE(val.ok());
  EXPECT_TRUE(val->front().weights.defined());
}

TEST_F(WeightedLoaderTest, RoleWeightsOverrideOnlyTheRoleClasses) {
  LoaderOptions o = Options();
  o.role_weights = RoleWeights{0.5, 2.0, 0.25};
  absl::StatusOr<DataLoader> loader = DataLoader::Open(o);
  ASSERT_TRUE(loader.ok()) << loader.status();
  const std::vector<float> table = {0.0f, 0.5f, 2.0f, 0.25f, 0.5f, 3.0f};  // pad stays 0
  absl::StatusOr<Batch> b = loader->ReadWindows({0, 1, 20});
  ASSERT_TRUE(b.ok());
  const std::vector<int64_t> targets = b->targets.ToInts();
  const std::vector<float> weights = b->weights.ToFloats();
  for (size_t i = 0; i < targets.size(); ++i) EXPECT_EQ(weights[i], table[ClassOf(targets[i])]);
  // Ignored on request: no weights at all.
  o.use_weights = false;
  absl::StatusOr<DataLoader> plain = DataLoader::Open(o);
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->has_weights());
  EXPECT_FALSE(plain->ReadWindows({0})->weights.defined());
}

TEST_F(WeightedLoaderTest, MissingMismatchedOrCorruptWeightShardsAreNamed) {
  // A weight shard of another token shard (different checksum).
  std::vector<uint8_t> codes(123, 1);
  ASSERT_TRUE(WriteWeightShard(WeightShardPath(shards_[0]), codes, Table(), 0x1234).ok());
  absl::Status s = DataLoader::Open(Options()).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(s, "does not belong to token shard " + shards_[0])) << s;
  // Missing for one shard only.
  fs::remove(WeightShardPath(shards_[0]));
  s = DataLoader::Open(Options()).status();
  EXPECT_TRUE(Contains(s, shards_[1] + " has loss weights")) << s;
  EXPECT_TRUE(Contains(s, shards_[0] + " has none")) << s;
  // None at all: a plain loader.
  fs::remove(WeightShardPath(shards_[1]));
  absl::StatusOr<DataLoader> plain = DataLoader::Open(Options());
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE(plain->has_weights());
  // Corruption, truncation and bad codes in the weight shard file itself.
  const std::string path = dir_ + "/w.weights";
  EXPECT_EQ(WriteWeightShard(path, {0, 1, 6}, Table(), 1).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteWeightShard(path, {0}, {0.0f, -1.0f}, 1).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(WriteWeightShard(path, {0, 1, 2, 3, 4, 5}, Table(), 1).ok());
  absl::StatusOr<WeightShard> ok = WeightShard::Open(path);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->size(), 6);
  EXPECT_EQ(ok->num_classes(), 6);
  EXPECT_EQ(ok->class_weights()[5], 3.0f);
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(kWeightShardHeaderBytes + 2);
    f.put(static_cast<char>(4));
  }
  s = WeightShard::Open(path).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(Contains(s, path + ": checksum mismatch")) << s;
  fs::resize_file(path, kWeightShardHeaderBytes + 3);
  s = WeightShard::Open(path).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(Contains(s, "truncated")) << s;
  EXPECT_EQ(WeightShard::Open(dir_ + "/nope.weights").status().code(), absl::StatusCode::kNotFound);
  WriteText(path, std::string(2000, 'x'));
  EXPECT_TRUE(Contains(WeightShard::Open(path).status(), "bad magic"));
}

// ---------------------------------------------------------------------------------------------
// prepare-instructions end to end

class PrepareInstructionsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(TempDirFor("suite"));
    std::string corpus;
    const char* words[] = {"what", "is",     "the",      "pass",  "key",   "green", "sky",
                           "blue", "answer", "question", "river", "stone", "seven", "houses"};
    uint32_t x = 3;
    for (int l = 0; l < 300; ++l) {
      for (int w = 0; w < 8; ++w) {
        x = x * 1664525u + 1013904223u;
        corpus += std::string(w ? " " : "") + words[(x >> 16) % 14];
      }
      corpus += " " + std::to_string(x % 1000) + ".\n";
    }
    WriteText(*dir_ + "/corpus.txt", corpus);
    TokenizerTrainOptions options;
    options.hard_vocab_limit = false;  // a small corpus: up to 320 pieces
    absl::Status trained = Tokenizer::Train({*dir_ + "/corpus.txt"}, *dir_ + "/tok", 320, options);
    ASSERT_TRUE(trained.ok()) << trained;
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }
  static std::string TokenizerPath() { return *dir_ + "/tok.model"; }

  // n examples "question i?" → "answer i." (prompt/response form).
  static std::string Jsonl(int n) {
    std::string text;
    for (int i = 0; i < n; ++i) {
      text += "{\"prompt\": \"what is the question " + std::to_string(i) +
              "?\", \"response\": \"the answer is " + std::to_string(i * 7) + ".\"}\n";
    }
    return text;
  }

  static std::string* dir_;
};
std::string* PrepareInstructionsTest::dir_ = nullptr;

// All tokens of a split's shards with their weights (from the weight shards' own table).
void ReadSplit(const std::vector<std::string>& shards, std::vector<int32_t>* tokens,
               std::vector<float>* weights) {
  for (const std::string& path : shards) {
    absl::StatusOr<TokenShard> t = TokenShard::Open(path);
    absl::StatusOr<WeightShard> w = WeightShard::Open(WeightShardPath(path));
    ASSERT_TRUE(t.ok() && w.ok());
    ASSERT_EQ(t->size(), w->size());
    const ClassWeights table = w->Weights(std::nullopt);
    for (int64_t i = 0; i < t->size(); ++i) {
      tokens->push_back(static_cast<int32_t>(t->at(i)));
      weights->push_back(table[w->code(i)]);
    }
  }
}

TEST_F(PrepareInstructionsTest, AnswersCarryTheWeightAndShardsMatchTheManifest) {
  const std::string dir = TempDirFor("e2e");
  WriteText(dir + "/a.jsonl", Jsonl(30));
  PrepareInstructionsOptions o;
  o.inputs = {dir + "/a.jsonl"};
  o.tokenizer = TokenizerPath();
  o.out_dir = dir + "/out";
  o.seq_len = 32;
  o.repeat_tokens = 0;
  o.val_fraction = 0.1;
  o.shard_tokens = 200;
  absl::StatusOr<InstructionDataSummary> summary = PrepareInstructions(o);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->train.examples, 27);
  EXPECT_EQ(summary->val.examples, 3);
  EXPECT_GT(summary->train.shards.size(), 1u);
  absl::StatusOr<Tokenizer> tok = Tokenizer::Load(TokenizerPath());
  ASSERT_TRUE(tok.ok());
  // Independent truth: the weight-1 tokens, in stream order, are exactly each train example's
  // answer and eos; the weight-0 tokens other than padding are the prompts.
  std::vector<int32_t> want_answers, want_prompts;
  for (int i = 0; i < 30; ++i) {
    if (i % 10 == 9) continue;  // every 10th example went to val
    const std::vector<int32_t> p = tok->Encode("what is the question " + std::to_string(i) + "?");
    const std::vector<int32_t> a = tok->Encode("the answer is " + std::to_string(i * 7) + ".");
    want_prompts.insert(want_prompts.end(), p.begin(), p.end());
    want_answers.insert(want_answers.end(), a.begin(), a.end());
    want_answers.push_back(tok->eos_id());
  }
  std::vector<int32_t> tokens;
  std::vector<float> weights;
  ReadSplit(summary->train.shards, &tokens, &weights);
  ASSERT_EQ(static_cast<int64_t>(tokens.size()), summary->train.tokens);
  EXPECT_EQ((tokens.size() - 1) % 32, 0u);
  std::vector<int32_t> got_answers, got_prompts;
  int64_t pads = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (weights[i] == 1.0f) {
      got_answers.push_back(tokens[i]);
    } else {
      ASSERT_EQ(weights[i], 0.0f);
      if (tokens[i] == tok->pad_id()) {
        ++pads;
      } else {
        got_prompts.push_back(tokens[i]);
      }
    }
  }
  EXPECT_EQ(got_answers, want_answers);
  EXPECT_EQ(got_prompts, want_prompts);
  EXPECT_EQ(pads, summary->train.padding_tokens);
  EXPECT_EQ(summary->train.weighted_tokens, static_cast<int64_t>(want_answers.size()));

  // data.json: readable by ReadDataManifest, records the instruction settings.
  absl::StatusOr<DataManifest> manifest = ReadDataManifest(o.out_dir);
  ASSERT_TRUE(manifest.ok()) << manifest.status();
  EXPECT_EQ(manifest->train_shards, summary->train.shards);
  EXPECT_EQ(manifest->val_shards, summary->val.shards);
  EXPECT_EQ(manifest->train_tokens, summary->train.tokens);
  EXPECT_TRUE(fs::exists(manifest->tokenizer));
  std::ifstream in(o.out_dir + "/data.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j["kind"], "instructions");
  EXPECT_EQ(j["instructions"]["seq_len"], 32);
  EXPECT_EQ(j["instructions"]["boundary_slack"], 2);
  EXPECT_EQ(j["instructions"]["classes"][2]["name"], "answer");
  EXPECT_EQ(j["train"]["shards"][0]["weights"], "train-00000.weights");

  // The loader reads them with weights aligned with targets, re-weighted by role on request.
  LoaderOptions lo;
  lo.shards = manifest->train_shards;
  lo.seq_len = 32;
  lo.global_batch = 2;
  lo.micro_batch = 2;
  lo.shuffle = false;
  lo.role_weights = RoleWeights{0.0, 2.0, 0.1};
  absl::StatusOr<DataLoader> loader = DataLoader::Open(lo);
  ASSERT_TRUE(loader.ok()) << loader.status();
  absl::StatusOr<Batch> b = loader->ReadWindows({0, 1});
  ASSERT_TRUE(b.ok());
  const std::vector<int64_t> targets = b->targets.ToInts();
  const std::vector<float> bw = b->weights.ToFloats();
  for (size_t i = 0; i < targets.size(); ++i) {
    EXPECT_EQ(targets[i], tokens[i + 1]);
    EXPECT_EQ(bw[i], 2.0f * weights[i + 1]);
  }

  // Preparing again into fewer, larger shards leaves no stale shard behind.
  o.shard_tokens = 100000;
  ASSERT_TRUE(PrepareInstructions(o).ok());
  EXPECT_FALSE(fs::exists(o.out_dir + "/train-00001.bin"));
  EXPECT_FALSE(fs::exists(o.out_dir + "/train-00001.weights"));
  fs::remove_all(dir);
}

TEST_F(PrepareInstructionsTest, RepeatCopiesAndCommandLineWithConfig) {
  const std::string dir = TempDirFor("cli");
  WriteText(dir + "/a.jsonl", Jsonl(12));
  WriteText(dir + "/run.yaml",
            "trainer: {type: finetune, seq_len: 64, seed: 4}\n"
            "data: {tokenizer: " +
                TokenizerPath() +
                "}\n"
                "finetune: {base_weights: b.safetensors, repeat_tokens: 3,\n"
                "           loss_weights: {instruction: 0, answer: 1, repeat: 0.25}}\n");
  Command command = PrepareInstructionsCommand();
  std::vector<std::string> argv_s = {
      "fam",     "prepare-instructions", "--config", dir + "/run.yaml",
      "--input", dir + "/a.jsonl",       "--out",    dir + "/out"};
  std::vector<char*> argv;
  for (std::string& a : argv_s) argv.push_back(a.data());
  absl::StatusOr<cli::Args> args =
      cli::Args::Parse(command.name, command.flags, static_cast<int>(argv.size()), argv.data(), 2);
  ASSERT_TRUE(args.ok()) << args.status();
  ::testing::internal::CaptureStdout();
  absl::Status status = command.run(*args);
  ::testing::internal::GetCapturedStdout();
  ASSERT_TRUE(status.ok()) << status;
  std::ifstream in(dir + "/out/data.json");
  const nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_EQ(j["instructions"]["seq_len"], 64);
  EXPECT_EQ(j["instructions"]["repeat_tokens"], 3);
  EXPECT_EQ(j["instructions"]["seed"], 4);
  EXPECT_EQ(j["instructions"]["classes"][3]["weight"], 0.25);
  std::vector<int32_t> tokens;
  std::vector<float> weights;
  absl::StatusOr<DataManifest> manifest = ReadDataManifest(dir + "/out");
  ASSERT_TRUE(manifest.ok());
  ReadSplit(manifest->train_shards, &tokens, &weights);
  // 3 copied tokens per example, and its eos (the class of the token before it).
  EXPECT_EQ(std::count(weights.begin(), weights.end(), 0.25f), 12 * (3 + 1));

  // Without --config: --seq-len and --tokenizer are required; a bad line is named, and nothing is
  // written.
  std::vector<std::string> bad_s = {
      "fam",         "prepare-instructions", "--input",       dir + "/b.jsonl", "--out",
      dir + "/out2", "--tokenizer",          TokenizerPath(), "--seq-len",      "16"};
  WriteText(dir + "/b.jsonl", Jsonl(2) + "{\"segments\": [{\"text\": \"x\"}]}\n");
  argv.clear();
  for (std::string& a : bad_s) argv.push_back(a.data());
  args =
      cli::Args::Parse(command.name, command.flags, static_cast<int>(argv.size()), argv.data(), 2);
  ASSERT_TRUE(args.ok()) << args.status();
  status = command.run(*args);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(status, dir + "/b.jsonl:3: segments[0].role: expected a string")) << status;
  EXPECT_FALSE(fs::exists(dir + "/out2/data.json"));
  argv.resize(8);  // drop --seq-len
  args =
      cli::Args::Parse(command.name, command.flags, static_cast<int>(argv.size()), argv.data(), 2);
  ASSERT_TRUE(args.ok());
  EXPECT_TRUE(Contains(command.run(*args), "missing --seq-len"));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace fam::data
