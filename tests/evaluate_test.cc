// trainers/evaluate: sampling (greedy, nucleus, seeded), streaming generation against a
// whole-sequence reference, PassKey prompts (key once, at the requested depth, length near the
// target), perplexity against uniform logits and a naive log-softmax, eval suite configs, the
// report files, and `fam eval` / `fam generate` end to end on a tiny trained run (corrupt
// checkpoints fail with exit code 2 naming the file).
#include "trainers/eval/evaluate.h"

#include <stdlib.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "framework/autograd/node.h"
#include "framework/core/rng.h"
#include "framework/data/token_shard.h"
#include "framework/data/tokenizer.h"
#include "framework/io/atomic_file.h"
#include "framework/ops/ops.h"
#include "gtest/gtest.h"
#include "models/fam/weights_io.h"
#include "nlohmann/json.hpp"
#include "tests/test_util.h"
#include "trainers/cli/cli.h"
#include "trainers/cli/commands.h"
#include "trainers/train/train_loop.h"

namespace fam::eval {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

std::string MakeTempDir(const std::string& name) {
  std::string pattern = (fs::temp_directory_path() / ("fam_eval_" + name + "_XXXXXX")).string();
  EXPECT_NE(::mkdtemp(pattern.data()), nullptr);
  return pattern;
}

using testing::Slurp;

int Count(const std::string& text, const std::string& part) {
  int n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

std::string SourceDir() {
  const char* env = std::getenv("FAM_SOURCE_DIR");
  if (env != nullptr && *env != '\0') return env;
  fs::path dir = fs::current_path();
  while (!dir.empty() && !fs::exists(dir / "configs" / "eval")) {
    if (dir == dir.parent_path()) return "";
    dir = dir.parent_path();
  }
  return dir.string();
}

ModelConfig SmallConfig(AttentionType type, int64_t vocab) {
  ModelConfig c;
  c.vocab_size = vocab;
  c.d_model = 32;
  c.n_layers = 2;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 16;
  c.ffn_dim = 64;
  c.tie_embeddings = false;
  c.init_std = 0.3;
  c.attention.type = type;
  c.attention.block_size = 8;
  c.attention.memory_segments = 1;
  c.attention.fam_length = 4;
  c.training.random_position_offset = false;
  c.training.state_passing_prob = 0;
  return c;
}

std::vector<int64_t> RandomIds(int64_t n, int64_t vocab, uint64_t seed) {
  Generator g(seed, 11);
  std::vector<int64_t> ids(n);
  for (int64_t& id : ids) id = static_cast<int64_t>(g.UniformInt(static_cast<uint64_t>(vocab)));
  return ids;
}

// ---- sampling ----

TEST(Sampling, GreedyIsArgmaxLowestIndexOnTies) {
  EXPECT_EQ(Argmax({0.1f, 3.0f, -2.0f, 3.0f}), 1);
  EXPECT_EQ(Argmax({-1.0f}), 0);
  SamplingOptions greedy;  // temperature 0
  for (uint64_t draw = 0; draw < 5; ++draw)
    EXPECT_EQ(SampleToken({0.5f, 0.2f, 2.5f, -1.0f}, greedy, draw), 2);
}

TEST(Sampling, NucleusKeepsTheSmallestPrefixReachingTopP) {
  const std::vector<double> probs = {0.1, 0.5, 0.15, 0.25};  // order by mass: 1, 3, 2, 0
  EXPECT_EQ(NucleusIds(probs, 0.3), (std::vector<int64_t>{1}));
  EXPECT_EQ(NucleusIds(probs, 0.5), (std::vector<int64_t>{1}));
  EXPECT_EQ(NucleusIds(probs, 0.6), (std::vector<int64_t>{1, 3}));
  EXPECT_EQ(NucleusIds(probs, 0.8), (std::vector<int64_t>{1, 3, 2}));
  EXPECT_EQ(NucleusIds(probs, 1.0), (std::vector<int64_t>{1, 3, 2, 0}));
  EXPECT_EQ(NucleusIds(probs, 1e-9), (std::vector<int64_t>{1}));
  EXPECT_EQ(NucleusIds({0.25, 0.25, 0.5}, 0.7), (std::vector<int64_t>{2, 0}));  // ties by id

  // Draws at temperature 1 with top_p 0.8 land only in {1, 3, 2}, with the renormalised masses.
  std::vector<float> logits;
  for (double p : probs) logits.push_back(static_cast<float>(std::log(p)));
  SamplingOptions o;
  o.temperature = 1.0;
  o.top_p = 0.8;
  o.seed = 9;
  std::map<int64_t, int> counts;
  const int n = 6000;
  for (int i = 0; i < n; ++i) ++counts[SampleToken(logits, o, i)];
  EXPECT_EQ(counts.count(0), 0u);
  EXPECT_NEAR(counts[1] / double(n), 0.5 / 0.9, 0.03);
  EXPECT_NEAR(counts[3] / double(n), 0.25 / 0.9, 0.03);
  EXPECT_NEAR(counts[2] / double(n), 0.15 / 0.9, 0.03);

  // Temperature sharpens: at T = 0.5 the distribution is softmax(2 log p) = p² / sum p².
  o.top_p = 1.0;
  o.temperature = 0.5;
  counts.clear();
  for (int i = 0; i < n; ++i) ++counts[SampleToken(logits, o, i)];
  const double z = 0.01 + 0.25 + 0.0225 + 0.0625;
  EXPECT_NEAR(counts[1] / double(n), 0.25 / z, 0.03);
  EXPECT_NEAR(counts[0] / double(n), 0.01 / z, 0.02);
}

TEST(Sampling, SameSeedSameTokensAndGreedyMatchesWholeSequenceForward) {
  const ModelConfig config = SmallConfig(AttentionType::kFam, 48);
  FamModel model(config);
  model.InitializeWeights(4);
  const std::vector<int64_t> prompt = RandomIds(21, config.vocab_size, 2);  // not block aligned

  GenerationOptions o;
  o.max_new_tokens = 20;
  o.sampling.temperature = 1.0;
  o.sampling.top_p = 0.9;
  o.sampling.seed = 5;
  const std::vector<int64_t> a = Generate(model, prompt, o);
  const std::vector<int64_t> b = Generate(model, prompt, o);
  EXPECT_EQ(a.size(), 20u);
  EXPECT_EQ(a, b);
  o.sampling.seed = 6;
  EXPECT_NE(Generate(model, prompt, o), a);

  // Greedy streaming generation = argmax of the whole-sequence Forward, token by token.
  o.sampling.temperature = 0;
  o.chunk = 5;
  const std::vector<int64_t> greedy = Generate(model, prompt, o);
  std::vector<int64_t> seq = prompt;
  NoGradGuard no_grad;
  for (size_t i = 0; i < greedy.size(); ++i) {
    const int64_t t = static_cast<int64_t>(seq.size());
    Tensor logits = model.Forward(Tensor::FromInts(seq, {1, t})).logits;
    std::vector<float> last = ops::Slice(logits, 1, t - 1, t).ToFloats();
    int64_t best = 0;
    for (size_t v = 1; v < last.size(); ++v)
      if (last[v] > last[best]) best = static_cast<int64_t>(v);
    ASSERT_EQ(greedy[i], best) << "token " << i;
    seq.push_back(best);
  }

  // on_token can stop early; a stop token ends generation after it is produced.
  int seen = 0;
  EXPECT_EQ(Generate(model, prompt, o, [&](int64_t) { return ++seen < 3; }).size(), 3u);
  o.stop_token = greedy[1];
  EXPECT_EQ(Generate(model, prompt, o).size(), greedy[0] == greedy[1] ? 1u : 2u);
}

TEST(Streaming, StateStaysConstantWithContextLength) {
  for (AttentionType type : {AttentionType::kFam, AttentionType::kBswa}) {
    const ModelConfig config = SmallConfig(type, 32);
    FamModel model(config);
    model.InitializeWeights(1);
    StreamingState state = model.NewStreamingState(1);
    StreamTokens(model, RandomIds(3 * 8, 32, 1), state);
    const int64_t after_3_blocks = state.Bytes();
    StreamTokens(model, RandomIds(40 * 8, 32, 2), state);
    EXPECT_EQ(state.Bytes(), after_3_blocks) << AttentionTypeName(type);
    EXPECT_EQ(state.position, 43 * 8);
  }
}

// ---- text streaming ----

TEST(TextStreamer, HoldsBackIncompleteUtf8AndKeepsSpaces) {
  const TextCodec codec = ByteCodec();
  const std::string text = " h\xC3\xA9llo \xE2\x9C\x93!";  // " héllo ✓!"
  TextStreamer streamer(codec, codec.encode("say"));
  std::string out;
  for (unsigned char ch : text) {
    const std::string piece = streamer.Push(ch);
    if (ch == 0xC3 || ch == 0xE2 || ch == 0x9C) {
      EXPECT_EQ(piece, "") << int(ch);
    }
    out += piece;
  }
  out += streamer.Flush();
  EXPECT_EQ(out, text);
}

// ---- PassKey prompts ----

TEST(Passkey, FirstInteger) {
  EXPECT_EQ(FirstInteger("12345. Remember"), "12345");
  EXPECT_EQ(FirstInteger(" 00123 is it"), "123");
  EXPECT_EQ(FirstInteger("x 0 y"), "0");
  EXPECT_EQ(FirstInteger("1 2 3"), "1");
  EXPECT_EQ(FirstInteger("no digits"), std::nullopt);
  EXPECT_EQ(FirstInteger(""), std::nullopt);
}

void CheckPrompt(const TextCodec& codec, const PasskeyPrompt& p, int64_t target,
                 int key_digits = 5) {
  const int64_t unit = PasskeyFillerTokens(codec);
  EXPECT_LE(static_cast<int64_t>(p.tokens.size()), target);
  EXPECT_GT(static_cast<int64_t>(p.tokens.size()), target - unit);
  EXPECT_EQ(std::to_string(p.key).size(), static_cast<size_t>(key_digits)) << p.key;
  std::vector<int32_t> ids(p.tokens.begin(), p.tokens.end());
  if (codec.doc_start >= 0) {
    EXPECT_EQ(ids.front(), codec.doc_start);
    ids.erase(ids.begin());
  }
  const std::string text = codec.decode(ids);
  const std::string key = std::to_string(p.key);
  const std::string sentence =
      "The pass key is " + key + ". Remember it. " + key + " is the pass key.";
  EXPECT_EQ(Count(text, sentence), 1) << text.substr(0, 400);
  EXPECT_EQ(Count(text, key), 2);
  EXPECT_EQ(Count(text,
                  "The grass is green. The sky is blue. The sun is yellow. Here we go. "
                  "There and back again."),
            p.filler_units);
  EXPECT_TRUE(text.starts_with("There is a pass key hidden")) << text.substr(0, 80);
  EXPECT_TRUE(text.ends_with("What is the pass key? The pass key is")) << text;
  // The key sentence tokens decode to the sentence.
  std::vector<int32_t> key_ids(p.tokens.begin() + p.key_begin, p.tokens.begin() + p.key_end);
  EXPECT_EQ(codec.decode(key_ids), sentence);
  // Depth: the number of filler repetitions before the key sentence.
  const size_t key_at = text.find(sentence);
  EXPECT_EQ(Count(text.substr(0, key_at), "There and back again."), p.units_before);
}

TEST(Passkey, PromptWithByteCodec) {
  const TextCodec codec = ByteCodec();
  EXPECT_EQ(PasskeyFillerTokens(codec), 90);  // 89 bytes + the joining space
  for (int64_t target : {400, 1000, 4000}) {
    for (double depth : {0.0, 0.5, 1.0}) {
      absl::StatusOr<PasskeyPrompt> p = BuildPasskeyPrompt(codec, target, 7, 0, depth);
      ASSERT_TRUE(p.ok()) << p.status();
      CheckPrompt(codec, *p, target);
      EXPECT_EQ(p->units_before, std::llround(depth * p->filler_units));
    }
  }
  // At depth 0 the key directly follows the intro; at depth 1 it directly precedes the question.
  PasskeyPrompt first = *BuildPasskeyPrompt(codec, 1000, 7, 0, 0.0);
  PasskeyPrompt last = *BuildPasskeyPrompt(codec, 1000, 7, 0, 1.0);
  EXPECT_EQ(first.units_before, 0);
  EXPECT_EQ(last.units_before, last.filler_units);
  EXPECT_EQ(static_cast<size_t>(last.key_end) + 1 +
                codec.encode("What is the pass key? The pass key is").size(),
            last.tokens.size());

  // Random depth and key: reproducible per (seed, length, trial), different across trials.
  PasskeyPrompt a = *BuildPasskeyPrompt(codec, 3000, 1, 4);
  PasskeyPrompt b = *BuildPasskeyPrompt(codec, 3000, 1, 4);
  EXPECT_EQ(a.tokens, b.tokens);
  std::set<int64_t> keys, depths;
  for (int trial = 0; trial < 8; ++trial) {
    PasskeyPrompt p = *BuildPasskeyPrompt(codec, 3000, 1, trial);
    CheckPrompt(codec, p, 3000);
    keys.insert(p.key);
    depths.insert(p.units_before);
  }
  EXPECT_GE(keys.size(), 7u);
  EXPECT_GE(depths.size(), 4u);

  // max_depth: the same keys, every key in the first quarter of the filler, so most of the
  // prompt (here at least 22 of 30 filler repetitions of 90 bytes) lies after the key.
  int64_t deepest = 0;
  for (int trial = 0; trial < 40; ++trial) {
    PasskeyPrompt full = *BuildPasskeyPrompt(codec, 3000, 1, trial);
    PasskeyPrompt near = *BuildPasskeyPrompt(codec, 3000, 1, trial, -1, 0.25);
    CheckPrompt(codec, near, 3000);
    EXPECT_EQ(near.key, full.key);
    EXPECT_LE(near.units_before, std::llround(0.25 * near.filler_units)) << trial;
    EXPECT_GE(static_cast<int64_t>(near.tokens.size()) - near.key_end, 22 * 90) << trial;
    deepest = std::max(deepest, full.units_before);
  }
  EXPECT_GT(deepest, 20);  // without max_depth keys do come close to the question

  // key_digits: 2-digit keys lie in [10, 99], are stated in the prompt, and vary; 5 is the default.
  std::set<int64_t> short_keys;
  for (int trial = 0; trial < 40; ++trial) {
    PasskeyPrompt p = *BuildPasskeyPrompt(codec, 1000, 1, trial, -1, 1.0, 2);
    CheckPrompt(codec, p, 1000, 2);
    short_keys.insert(p.key);
    EXPECT_EQ(BuildPasskeyPrompt(codec, 1000, 1, trial, -1, 1.0, 5)->key,
              BuildPasskeyPrompt(codec, 1000, 1, trial)->key);
  }
  EXPECT_GE(short_keys.size(), 20u);
  EXPECT_EQ(BuildPasskeyPrompt(codec, 1000, 1, 0, -1, 1.0, 0).status().code(),
            absl::StatusCode::kInvalidArgument);

  absl::StatusOr<PasskeyPrompt> short_prompt = BuildPasskeyPrompt(codec, 50, 0, 0);
  EXPECT_EQ(short_prompt.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(short_prompt.status().message().find("50 tokens"), std::string::npos);
  EXPECT_TRUE(BuildPasskeyPrompt(codec, MinPasskeyTokens(codec), 0, 0).ok());
}

// A small corpus with the PassKey vocabulary, for a SentencePiece tokenizer trained in the tests.
std::string Corpus(int lines, uint64_t seed) {
  const std::vector<std::string> words = {
      "the",   "grass",    "is",     "green",  "sky",   "blue",       "sun",   "yellow",
      "here",  "we",       "go",     "there",  "and",   "back",       "again", "pass",
      "key",   "remember", "it",     "what",   "a",     "river",      "house", "walks",
      "under", "tower",    "quiet",  "garden", "seven", "light",      "stone", "bird",
      "sings", "over",     "hidden", "inside", "text",  "find",       "will",  "ask",
      "you",   "for",      "end",    "lot",    "of",    "irrelevant", "at",    "I"};
  Generator g(seed, 3);
  std::string text;
  for (int l = 0; l < lines; ++l) {
    const int n = 6 + static_cast<int>(g.UniformInt(8));
    for (int w = 0; w < n; ++w) {
      std::string word = words[g.UniformInt(words.size())];
      if (w == 0) word[0] = static_cast<char>(std::toupper(word[0]));
      if (w > 0) text += " ";
      text += word;
      if (g.UniformInt(9) == 0) absl::StrAppend(&text, " ", g.UniformInt(100000));
    }
    text += l % 3 == 0 ? "? " : ". ";
    text += "The grass is green. The pass key is 4711.\n";
  }
  return text;
}

TEST(Passkey, PromptWithSentencePiece) {
  const std::string dir = MakeTempDir("sp");
  ASSERT_TRUE(io::WriteFileAtomic(dir + "/corpus.txt", Corpus(300, 1)).ok());
  ASSERT_TRUE(data::Tokenizer::Train({dir + "/corpus.txt"}, dir + "/tok", 400).ok());
  absl::StatusOr<data::Tokenizer> tok = data::Tokenizer::Load(dir + "/tok.model");
  ASSERT_TRUE(tok.ok()) << tok.status();
  const TextCodec codec = TokenizerCodec(*tok);
  EXPECT_EQ(codec.doc_start, tok->eos_id());
  for (int64_t target : {256, 1000, 2048}) {
    for (int trial = 0; trial < 3; ++trial) {
      absl::StatusOr<PasskeyPrompt> p = BuildPasskeyPrompt(codec, target, 0, trial);
      ASSERT_TRUE(p.ok()) << p.status();
      CheckPrompt(codec, *p, target);
    }
  }
  // Streaming detokenization reproduces the text after the prompt, spaces included.
  const std::vector<int32_t> prompt = codec.encode("What is the pass key? The pass key is");
  const std::vector<int32_t> all =
      codec.encode("What is the pass key? The pass key is 4711. Again");
  TextStreamer streamer(codec, prompt);
  std::string out;
  for (size_t i = prompt.size(); i < all.size(); ++i) out += streamer.Push(all[i]);
  out += streamer.Flush();
  EXPECT_EQ(out, " 4711. Again");
  fs::remove_all(dir);
}

// ---- perplexity ----

TEST(Perplexity, ZeroWeightsGiveUniformLogitsAndPplEqualsVocab) {
  const std::string dir = MakeTempDir("ppl");
  const int64_t vocab = 50;
  const std::vector<int64_t> ids = RandomIds(200, vocab, 3);
  ASSERT_TRUE(
      data::WriteTokenShard(dir + "/val-0.bin", std::vector<int32_t>(ids.begin(), ids.end()), vocab)
          .ok());
  for (AttentionType type : {AttentionType::kFam, AttentionType::kFull}) {
    FamModel model(SmallConfig(type, vocab));
    for (auto& [name, t] : model.NamedParameters()) ops::FillInPlace(t, 0.0);
    absl::StatusOr<PerplexityResult> w = WindowPerplexity(model, dir + "/val-*.bin", 16, 0);
    ASSERT_TRUE(w.ok()) << w.status();
    EXPECT_EQ(w->sequences, (200 - 1) / 16);
    EXPECT_EQ(w->tokens, w->sequences * 16);
    EXPECT_NEAR(w->ppl, vocab, 1e-3);
    EXPECT_NEAR(w->loss, std::log(vocab), 1e-5);
    absl::StatusOr<PerplexityResult> limited = WindowPerplexity(model, dir + "/val-*.bin", 16, 3);
    ASSERT_TRUE(limited.ok());
    EXPECT_EQ(limited->tokens, 48);
    PerplexityResult s = StreamingPerplexity(model, ids, 0);
    EXPECT_EQ(s.tokens, 199);
    EXPECT_NEAR(s.ppl, vocab, 1e-3);
  }
  EXPECT_FALSE(WindowPerplexity(FamModel(SmallConfig(AttentionType::kFam, vocab)),
                                dir + "/missing-*.bin", 16, 0)
                   .ok());
  // A shard whose vocabulary exceeds the model's is rejected with its name.
  ASSERT_TRUE(data::WriteTokenShard(dir + "/big.bin", {1, 2, 3}, 1000).ok());
  absl::StatusOr<std::vector<int64_t>> big = ReadShardTokens(dir + "/big.bin", 0, vocab);
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.status().message().find("big.bin"), std::string::npos);
  fs::remove_all(dir);
}

// Mean next-token cross-entropy of one sequence from Forward logits, by a naive log-softmax.
double NaiveLoss(const FamModel& model, const std::vector<int64_t>& ids) {
  NoGradGuard no_grad;
  const int64_t t = static_cast<int64_t>(ids.size()) - 1;
  std::vector<int64_t> in(ids.begin(), ids.end() - 1);
  std::vector<double> logits = model.Forward(Tensor::FromInts(in, {1, t})).logits.ToDoubles();
  const int64_t v = model.config().vocab_size;
  double total = 0;
  for (int64_t i = 0; i < t; ++i) {
    const double* row = logits.data() + i * v;
    double m = row[0], z = 0;
    for (int64_t j = 0; j < v; ++j) m = std::max(m, row[j]);
    for (int64_t j = 0; j < v; ++j) z += std::exp(row[j] - m);
    total += m + std::log(z) - row[ids[i + 1]];
  }
  return total / static_cast<double>(t);
}

TEST(Perplexity, MatchesNaiveCrossEntropyInWindowsAndStreaming) {
  const std::string dir = MakeTempDir("ppl2");
  const int64_t vocab = 40;
  FamModel model(SmallConfig(AttentionType::kFam, vocab));
  model.InitializeWeights(8);
  const std::vector<int64_t> ids = RandomIds(3 * 24 + 5, vocab, 4);
  ASSERT_TRUE(
      data::WriteTokenShard(dir + "/val.bin", std::vector<int32_t>(ids.begin(), ids.end()), vocab)
          .ok());
  // Windows of 24: window w is ids[24w, 24w + 25).
  double expected = 0;
  for (int w = 0; w < 3; ++w)
    expected +=
        NaiveLoss(model, std::vector<int64_t>(ids.begin() + 24 * w, ids.begin() + 24 * w + 25));
  expected /= 3;
  absl::StatusOr<PerplexityResult> r = WindowPerplexity(model, dir + "/val.bin", 24, 0);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->tokens, 72);
  EXPECT_NEAR(r->loss, expected, 1e-4);
  EXPECT_NEAR(r->ppl, std::exp(expected), 1e-3 * std::exp(expected));
  // Streaming one stretch (chunks not aligned to blocks) = the whole-sequence forward.
  for (int64_t chunk : {0, 5, 64}) {
    PerplexityResult s = StreamingPerplexity(model, ids, chunk);
    EXPECT_EQ(s.tokens, static_cast<int64_t>(ids.size()) - 1);
    EXPECT_NEAR(s.loss, NaiveLoss(model, ids), 1e-4) << chunk;
  }
  absl::StatusOr<std::vector<int64_t>> read = ReadShardTokens(dir + "/val.bin", 10, vocab);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(*read, std::vector<int64_t>(ids.begin(), ids.begin() + 10));
  fs::remove_all(dir);
}

// ---- suites ----

TEST(EvalSuite, ShippedSuitesParseAndDefaultMatchesBuiltIn) {
  const std::string src = SourceDir();
  if (src.empty()) GTEST_SKIP() << "source dir not found (set FAM_SOURCE_DIR)";
  absl::StatusOr<EvalSuite> def = LoadEvalSuite(src + "/configs/eval/default.yaml");
  ASSERT_TRUE(def.ok()) << def.status();
  EXPECT_EQ(EvalSuiteToYaml(*def), EvalSuiteToYaml(EvalSuite{}));
  absl::StatusOr<EvalSuite> long_suite = LoadEvalSuite(src + "/configs/eval/passkey_long.yaml");
  ASSERT_TRUE(long_suite.ok()) << long_suite.status();
  EXPECT_FALSE(long_suite->val.enabled);
  EXPECT_EQ(long_suite->passkey.lengths, (std::vector<int64_t>{4096, 16384, 65536, 262144}));
  EXPECT_EQ(long_suite->name, "passkey_long");
  // Every shipped suite parses, is named after its file and survives a round trip.
  int shipped = 0;
  for (const auto& entry : fs::directory_iterator(src + "/configs/eval")) {
    if (entry.path().extension() != ".yaml") continue;
    ++shipped;
    absl::StatusOr<EvalSuite> suite = LoadEvalSuite(entry.path().string());
    ASSERT_TRUE(suite.ok()) << suite.status();
    EXPECT_EQ(suite->name, entry.path().stem().string());
    absl::StatusOr<EvalSuite> again =
        ParseEvalSuite(EvalSuiteToYaml(*suite), entry.path().filename().string());
    ASSERT_TRUE(again.ok()) << again.status();
    EXPECT_EQ(EvalSuiteToYaml(*again), EvalSuiteToYaml(*suite)) << entry.path();
  }
  EXPECT_GE(shipped, 4);
  absl::StatusOr<EvalSuite> probe = LoadEvalSuite(src + "/configs/eval/copy_probe.yaml");
  ASSERT_TRUE(probe.ok()) << probe.status();
  EXPECT_FALSE(probe->passkey.enabled);
  EXPECT_EQ(probe->val.seq_len, 512);
}

TEST(EvalSuite, ParsesValuesAndRejectsUnknownKeysAndBadValues) {
  absl::StatusOr<EvalSuite> s = ParseEvalSuite(
      "val:\n  mode: stream\n  stream_tokens: 5000\npasskey:\n  lengths: [128, 256]\n"
      "  trials: 3\nplots: false\n",
      "mine.yaml");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->name, "mine");
  EXPECT_EQ(s->val.mode, ValMode::kStream);
  EXPECT_EQ(s->val.stream_tokens, 5000);
  EXPECT_EQ(s->passkey.lengths, (std::vector<int64_t>{128, 256}));
  EXPECT_EQ(s->passkey.trials, 3);
  EXPECT_FALSE(s->plots);
  absl::StatusOr<EvalSuite> again = ParseEvalSuite(EvalSuiteToYaml(*s), "mine.yaml");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(EvalSuiteToYaml(*again), EvalSuiteToYaml(*s));

  absl::StatusOr<EvalSuite> unknown = ParseEvalSuite("passkey:\n  trails: 3\n", "bad.yaml");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("passkey.trails"), std::string::npos)
      << unknown.status();
  EXPECT_NE(unknown.status().message().find("bad.yaml:2"), std::string::npos) << unknown.status();
  absl::StatusOr<EvalSuite> mode = ParseEvalSuite("val:\n  mode: sliding\n", "bad.yaml");
  ASSERT_FALSE(mode.ok());
  EXPECT_NE(mode.status().message().find("val.mode"), std::string::npos) << mode.status();
  EXPECT_FALSE(ParseEvalSuite("passkey:\n  lengths: [0]\n", "bad.yaml").ok());
  EXPECT_FALSE(ParseEvalSuite("passkey:\n  max_new_tokens: -1\n", "bad.yaml").ok());
}

TEST(EvalSuite, DefaultPasskeyLengthsFollowTheReceptiveField) {
  ModelConfig c = SmallConfig(AttentionType::kFam, 64);
  c.n_layers = 4;
  c.attention.block_size = 64;
  c.attention.memory_segments = 1;  // R = 4 x 2 x 64 = 512
  EXPECT_EQ(DefaultPasskeyLengths(c, 512), (std::vector<int64_t>{256, 512, 1024, 2048}));
  c.attention.type = AttentionType::kFull;
  EXPECT_EQ(DefaultPasskeyLengths(c, 1024), (std::vector<int64_t>{512, 1024, 2048, 4096}));
}

// ---- report ----

EvalReport SampleReport() {
  EvalReport r;
  r.checkpoint = "runs/x/checkpoints/step-00000010";
  r.step = 10;
  r.val = PerplexityResult{2.5, std::exp(2.5), 1024, 2, "windows"};
  PasskeyLengthResult a;
  a.context_tokens = 256;
  a.trials = 4;
  a.accuracy = 0.75;
  a.results.push_back({12345, 0.5, 250, "12345.", true});
  PasskeyLengthResult b = a;
  b.context_tokens = 512;
  b.accuracy = 0.25;
  r.passkey = {a, b};
  r.peak_rss_mb = 42.5;
  r.seconds = 3.25;
  r.model = {{"attention", "fam"}, {"n_layers", 2},        {"d_model", 32},  {"parameters", 1000},
             {"block_size", 8},    {"memory_segments", 1}, {"fam_length", 4}};
  r.suite = "default";
  return r;
}

TEST(Report, JsonHasTheFormatsFields) {
  const Json j = ReportToJson(SampleReport());
  EXPECT_EQ(j["checkpoint"], "runs/x/checkpoints/step-00000010");
  EXPECT_EQ(j["step"], 10);
  EXPECT_DOUBLE_EQ(j["val"]["loss"].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ(j["val"]["ppl"].get<double>(), std::exp(2.5));
  EXPECT_EQ(j["val"]["tokens"], 1024);
  ASSERT_EQ(j["passkey"].size(), 2u);
  EXPECT_EQ(j["passkey"][0]["context_tokens"], 256);
  EXPECT_EQ(j["passkey"][0]["trials"], 4);
  EXPECT_DOUBLE_EQ(j["passkey"][1]["accuracy"].get<double>(), 0.25);
  EXPECT_EQ(j["passkey"][0]["results"][0]["answer"], "12345.");
  EXPECT_DOUBLE_EQ(j["peak_rss_mb"].get<double>(), 42.5);
  EXPECT_DOUBLE_EQ(j["seconds"].get<double>(), 3.25);
  EvalReport empty;
  empty.checkpoint = "w.safetensors";
  const Json e = ReportToJson(empty);
  EXPECT_TRUE(e["val"].is_null());
  EXPECT_TRUE(e["step"].is_null());
  EXPECT_TRUE(e["passkey"].is_array());
}

TEST(Report, WritesJsonMarkdownAndPlotData) {
  const std::string dir = MakeTempDir("report");
  ASSERT_TRUE(
      io::WriteFileAtomic(dir + "/metrics.jsonl",
                          "{\"kind\":\"train\",\"step\":1,\"loss\":5.5,\"lr\":0.1}\n"
                          "{\"kind\":\"eval\",\"step\":1,\"val_loss\":5.25,\"val_ppl\":190}\n"
                          "not json\n{\"kind\":\"event\",\"step\":1,\"event\":\"checkpoint\"}\n"
                          "{\"kind\":\"train\",\"step\":2,\"loss\":4.5,\"lr\":0.1}\n")
          .ok());
  std::vector<std::string> warnings;
  absl::StatusOr<ReportFiles> files =
      WriteReport(SampleReport(), dir + "/eval/report.json", dir + "/metrics.jsonl", false,
                  [&](const std::string& w) { warnings.push_back(w); });
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_TRUE(warnings.empty());
  EXPECT_EQ(files->markdown, dir + "/eval/report.md");
  EXPECT_TRUE(files->plots.empty());
  EXPECT_EQ(Json::parse(Slurp(dir + "/eval/report.json")), ReportToJson(SampleReport()));
  const std::string md = Slurp(dir + "/eval/report.md");
  EXPECT_NE(md.find("| 256 | 4 | 75% |"), std::string::npos) << md;
  EXPECT_NE(md.find("| windows | 2 | 1024 | 2.5000 |"), std::string::npos) << md;
  EXPECT_EQ(Slurp(dir + "/eval/report.passkey.dat"),
            "# context_tokens accuracy\n256 0.75\n512 0.25\n");
  EXPECT_EQ(Slurp(dir + "/eval/report.loss_train.dat"), "1 5.5\n2 4.5\n");
  EXPECT_EQ(Slurp(dir + "/eval/report.loss_val.dat"), "1 5.25\n");
  fs::remove_all(dir);
}

// ---- `fam eval` / `fam generate` end to end ----

absl::Status RunCommand(const Command& command, std::vector<std::string> argv) {
  argv.insert(argv.begin(), {"fam", command.name});
  std::vector<char*> raw;
  for (std::string& a : argv) raw.push_back(a.data());
  absl::StatusOr<cli::Args> args =
      cli::Args::Parse(command.name, command.flags, static_cast<int>(raw.size()), raw.data(), 2);
  if (!args.ok()) return args.status();
  return CatchToStatus([&] { ThrowIfError(command.run(*args)); });
}

class EvalEndToEnd : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(MakeTempDir("e2e"));
    const std::string& d = *dir_;
    ASSERT_TRUE(io::WriteFileAtomic(d + "/corpus.txt", Corpus(400, 5)).ok());
    ASSERT_TRUE(data::Tokenizer::Train({d + "/corpus.txt"}, d + "/tok", 400).ok());
    absl::StatusOr<data::Tokenizer> tok = data::Tokenizer::Load(d + "/tok.model");
    ASSERT_TRUE(tok.ok()) << tok.status();
    auto shard = [&](const std::string& text, const std::string& path) {
      std::vector<int32_t> ids = tok->Encode(text);
      ASSERT_TRUE(data::WriteTokenShard(path, ids, tok->vocab_size()).ok());
    };
    shard(Corpus(400, 5), d + "/train.bin");
    shard(Corpus(60, 6), d + "/val.bin");
    const std::string yaml = absl::StrCat(
        "name: e2e\nrun_dir: ", d, "/runs\n",
        "model:\n  vocab_size: 400\n  d_model: 32\n  n_layers: 2\n  n_heads: 2\n"
        "  n_kv_heads: 1\n  head_dim: 16\n  ffn_dim: 64\n  tie_embeddings: true\n"
        "  attention: {type: fam, block_size: 16, memory_segments: 1, fam_length: 4}\n",
        "data:\n  train: ", d, "/train.bin\n  val: ", d, "/val.bin\n  tokenizer: ", d,
        "/tok.model\n",
        "optimizer: {lr: 0.003}\n"
        "trainer: {steps: 4, global_batch: 2, micro_batch: 2, seq_len: 64, log_interval: 1,\n"
        "          eval_interval: 2, eval_batches: 2, seed: 3}\n"
        "checkpoint: {interval: 0}\n"
        "eval: {passkey_lengths: [128, 256], passkey_trials: 2, val_batches: 2}\n");
    absl::StatusOr<RunConfig> config = ParseRunConfig(yaml, d + "/e2e.yaml");
    ASSERT_TRUE(config.ok()) << config.status();
    ::testing::internal::CaptureStdout();
    absl::StatusOr<TrainResult> result = RunTraining(*config);
    ::testing::internal::GetCapturedStdout();
    ASSERT_TRUE(result.ok()) << result.status();
    checkpoint_ = new std::string(result->last_checkpoint);
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
    delete checkpoint_;
  }
  void SetUp() override {
    if (checkpoint_ == nullptr) GTEST_SKIP() << "training failed";
  }

  static std::string* dir_;
  static std::string* checkpoint_;
};
std::string* EvalEndToEnd::dir_ = nullptr;
std::string* EvalEndToEnd::checkpoint_ = nullptr;

TEST_F(EvalEndToEnd, EvalWritesTheReportFromTheRunConfig) {
  const std::string out = *dir_ + "/out/report.json";
  ::testing::internal::CaptureStdout();
  absl::Status s = RunCommand(EvalCommand(), {"--checkpoint", *checkpoint_, "--out", out});
  const std::string log = ::testing::internal::GetCapturedStdout();
  ASSERT_TRUE(s.ok()) << s << "\n" << log;
  const Json j = Json::parse(Slurp(out));
  EXPECT_EQ(j["checkpoint"], *checkpoint_);
  EXPECT_EQ(j["step"], 4);
  // Validation: eval.val_batches (2) x micro_batch (2) windows of trainer.seq_len (64).
  EXPECT_EQ(j["val"]["tokens"], 4 * 64);
  EXPECT_NEAR(j["val"]["ppl"].get<double>(), std::exp(j["val"]["loss"].get<double>()), 1e-6);
  EXPECT_LT(j["val"]["ppl"].get<double>(), 400 * 1.5);
  ASSERT_EQ(j["passkey"].size(), 2u);
  EXPECT_EQ(j["passkey"][0]["context_tokens"], 128);
  EXPECT_EQ(j["passkey"][1]["context_tokens"], 256);
  for (const Json& p : j["passkey"]) {
    EXPECT_EQ(p["trials"], 2);
    EXPECT_GE(p["accuracy"].get<double>(), 0.0);
    EXPECT_LE(p["accuracy"].get<double>(), 1.0);
    EXPECT_GT(p["rss_after_mb"].get<double>(), 0.0);
    EXPECT_LE(p["mean_prompt_tokens"].get<double>(), p["context_tokens"].get<double>());
  }
  EXPECT_GT(j["peak_rss_mb"].get<double>(), 0.0);
  EXPECT_GT(j["seconds"].get<double>(), 0.0);
  EXPECT_EQ(j["model"]["attention"], "fam");
  EXPECT_TRUE(fs::exists(*dir_ + "/out/report.md"));
  // Loss curves come from the run's metrics.jsonl: 4 train records and val at steps 0, 2, 4.
  EXPECT_EQ(Count(Slurp(*dir_ + "/out/report.loss_train.dat"), "\n"), 4);
  EXPECT_EQ(Count(Slurp(*dir_ + "/out/report.loss_val.dat"), "\n"), 3);
  if (std::system("command -v gnuplot >/dev/null 2>&1") == 0 && !SourceDir().empty()) {
    EXPECT_TRUE(fs::exists(*dir_ + "/out/report.passkey.png")) << log;
    EXPECT_TRUE(fs::exists(*dir_ + "/out/report.loss.png")) << log;
    EXPECT_NE(Slurp(*dir_ + "/out/report.md").find("report.passkey.png"), std::string::npos);
  }

  // The run directory also works (newest checkpoint), and the default report path is
  // <run>/eval/<checkpoint>.json. A suite overrides lengths and switches to streamed perplexity.
  ASSERT_TRUE(io::WriteFileAtomic(*dir_ + "/suite.yaml",
                                  "val: {mode: stream, stream_tokens: 300}\n"
                                  "passkey: {lengths: [160], trials: 1}\nplots: false\n")
                  .ok());
  ::testing::internal::CaptureStdout();
  s = RunCommand(EvalCommand(),
                 {"--checkpoint", *dir_ + "/runs/e2e", "--config", *dir_ + "/suite.yaml"});
  ::testing::internal::GetCapturedStdout();
  ASSERT_TRUE(s.ok()) << s;
  const Json k = Json::parse(Slurp(*dir_ + "/runs/e2e/eval/step-00000004.json"));
  EXPECT_EQ(k["val"]["mode"], "stream");
  EXPECT_EQ(k["val"]["tokens"], 299);
  ASSERT_EQ(k["passkey"].size(), 1u);
  EXPECT_EQ(k["passkey"][0]["context_tokens"], 160);
  EXPECT_EQ(k["suite"], "suite");
}

TEST_F(EvalEndToEnd, WeightsFileGivesTheSameValidationLoss) {
  ModelSource source;
  source.checkpoint = *checkpoint_;
  absl::StatusOr<LoadedModel> lm = LoadModelForEval(source);
  ASSERT_TRUE(lm.ok()) << lm.status();
  ASSERT_TRUE(SaveModelWeights(*lm->model, *dir_ + "/w.safetensors").ok());
  const std::string run_config = *dir_ + "/runs/e2e/config.yaml";
  ::testing::internal::CaptureStdout();
  absl::Status a = RunCommand(
      EvalCommand(), {"--checkpoint", *checkpoint_, "--out", *dir_ + "/a.json", "--no-plots"});
  absl::Status b = RunCommand(
      EvalCommand(), {"--model", run_config, "--weights", *dir_ + "/w.safetensors", "--run-config",
                      run_config, "--out", *dir_ + "/b.json", "--no-plots"});
  absl::Status missing_out =
      RunCommand(EvalCommand(), {"--model", run_config, "--weights", *dir_ + "/w.safetensors"});
  absl::Status both = RunCommand(
      EvalCommand(), {"--checkpoint", *checkpoint_, "--weights", *dir_ + "/w.safetensors"});
  ::testing::internal::GetCapturedStdout();
  ASSERT_TRUE(a.ok()) << a;
  ASSERT_TRUE(b.ok()) << b;
  const Json ja = Json::parse(Slurp(*dir_ + "/a.json")), jb = Json::parse(Slurp(*dir_ + "/b.json"));
  EXPECT_EQ(ja["val"]["loss"], jb["val"]["loss"]);
  EXPECT_EQ(ja["passkey"][0]["results"], jb["passkey"][0]["results"]);
  EXPECT_TRUE(jb["step"].is_null());
  EXPECT_EQ(cli::ExitCode(missing_out), 2);
  EXPECT_EQ(cli::ExitCode(both), 2);
}

TEST_F(EvalEndToEnd, GenerateStreamsTextDeterministically) {
  auto generate = [&](const std::vector<std::string>& extra) {
    std::vector<std::string> argv = {"--checkpoint", *checkpoint_,       "--prompt",
                                     "The grass is", "--max-new-tokens", "6",
                                     "--ignore-eos"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    ::testing::internal::CaptureStdout();
    ::testing::internal::CaptureStderr();
    absl::Status s = RunCommand(GenerateCommand(), argv);
    std::string out = ::testing::internal::GetCapturedStdout();
    const std::string err = ::testing::internal::GetCapturedStderr();
    EXPECT_TRUE(s.ok()) << s << err;
    EXPECT_NE(err.find("6 generated"), std::string::npos) << err;
    return out;
  };
  const std::string greedy = generate({"--temperature", "0"});
  EXPECT_TRUE(greedy.starts_with("The grass is")) << greedy;
  EXPECT_GT(greedy.size(), std::string("The grass is\n").size());
  EXPECT_EQ(generate({"--temperature", "0"}), greedy);
  EXPECT_EQ(generate({"--temperature", "1.0", "--seed", "3"}),
            generate({"--temperature", "1.0", "--seed", "3"}));
  EXPECT_FALSE(generate({"--temperature", "0", "--no-echo"}).starts_with("The grass is"));
  absl::Status bad = RunCommand(GenerateCommand(), {"--checkpoint", *checkpoint_, "--top-p", "0"});
  EXPECT_EQ(cli::ExitCode(bad), 2);
}

TEST_F(EvalEndToEnd, CorruptCheckpointFailsWithExitCode2NamingIt) {
  // A copy of the checkpoint in a run directory of its own, so the other tests keep a good one.
  const std::string run = *dir_ + "/runs/broken";
  const std::string ckpt = run + "/checkpoints/step-00000004";
  fs::create_directories(run + "/checkpoints");
  fs::copy(*checkpoint_, ckpt, fs::copy_options::recursive);
  fs::copy_file(*dir_ + "/runs/e2e/config.yaml", run + "/config.yaml");
  {
    std::fstream f(ckpt + "/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);
    f.put('\x5a');
  }
  ::testing::internal::CaptureStdout();
  absl::Status s = RunCommand(EvalCommand(), {"--checkpoint", ckpt, "--out", *dir_ + "/c.json"});
  ::testing::internal::GetCapturedStdout();
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(cli::ExitCode(s), 2) << s;
  EXPECT_NE(s.message().find(ckpt), std::string::npos) << s;
  EXPECT_NE(s.message().find("model.safetensors"), std::string::npos) << s;
  EXPECT_FALSE(fs::exists(*dir_ + "/c.json"));

  fs::remove(ckpt + "/manifest.json");
  s = RunCommand(EvalCommand(), {"--checkpoint", ckpt, "--out", *dir_ + "/c.json"});
  EXPECT_EQ(cli::ExitCode(s), 2) << s;
  EXPECT_NE(s.message().find("manifest.json"), std::string::npos) << s;
  s = RunCommand(EvalCommand(), {"--checkpoint", *dir_ + "/nowhere/step-00000001"});
  EXPECT_EQ(cli::ExitCode(s), 2) << s;
  EXPECT_NE(s.message().find("nowhere"), std::string::npos) << s;
}

}  // namespace
}  // namespace fam::eval
