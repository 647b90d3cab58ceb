#include "trainers/eval/evaluate.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <numeric>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "framework/autograd/node.h"
#include "framework/backends/registry.h"
#include "framework/core/error.h"
#include "framework/core/rng.h"
#include "framework/data/loader.h"
#include "framework/data/token_shard.h"
#include "framework/data/tokenizer.h"
#include "framework/io/atomic_file.h"
#include "framework/io/checkpoint.h"
#include "framework/io/yaml_reader.h"
#include "framework/metrics/metrics.h"
#include "framework/ops/ops.h"
#include "models/fam/weights_io.h"
#include "trainers/train/portable_checkpoint.h"
#include "trainers/experiments/shell_words.h"

namespace fam::eval {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr double kMiB = 1024.0 * 1024.0;

// A uniform double in [0, 1) with 53 random bits from one Philox block.
double UniformDouble(uint64_t seed, uint64_t stream, uint64_t index) {
  const std::array<uint32_t, 4> w = Philox(seed, stream, index);
  const uint64_t bits = (static_cast<uint64_t>(w[0]) << 21) ^ (w[1] >> 11);
  return static_cast<double>(bits & ((uint64_t{1} << 53) - 1)) / 9007199254740992.0;
}

// Number of bytes at the end of `text` that belong to an incomplete UTF-8 character, plus any
// trailing U+FFFD (what a decoder makes of a partial byte sequence).
size_t IncompleteUtf8Tail(const std::string& text) {
  size_t end = text.size();
  static const std::string kReplacement = "\xEF\xBF\xBD";
  while (end >= 3 && text.compare(end - 3, 3, kReplacement) == 0) end -= 3;
  // Walk back over continuation bytes to the lead byte of the last character.
  size_t i = end, continuation = 0;
  while (i > 0 && continuation < 4 && (static_cast<unsigned char>(text[i - 1]) & 0xC0) == 0x80) {
    --i;
    ++continuation;
  }
  if (i > 0) {
    const unsigned char lead = static_cast<unsigned char>(text[i - 1]);
    size_t need = 0;
    if ((lead & 0xE0) == 0xC0)
      need = 1;
    else if ((lead & 0xF0) == 0xE0)
      need = 2;
    else if ((lead & 0xF8) == 0xF0)
      need = 3;
    if (need > continuation) end = i - 1;
  }
  return text.size() - end;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Text codecs

TextCodec TokenizerCodec(const data::Tokenizer& tokenizer) {
  auto tok = std::make_shared<data::Tokenizer>(tokenizer);
  TextCodec codec;
  codec.encode = [tok](std::string_view text) { return tok->Encode(text); };
  codec.decode = [tok](const std::vector<int32_t>& ids) { return tok->Decode(ids); };
  codec.vocab_size = tok->vocab_size();
  codec.starts_word = true;
  codec.doc_start = tok->eos_id();
  codec.stop_token = tok->eos_id();
  return codec;
}

TextCodec ByteCodec() {
  TextCodec codec;
  codec.encode = [](std::string_view text) {
    std::vector<int32_t> ids;
    ids.reserve(text.size());
    for (unsigned char ch : text) ids.push_back(ch);
    return ids;
  };
  codec.decode = [](const std::vector<int32_t>& ids) {
    std::string text;
    text.reserve(ids.size());
    for (int32_t id : ids) {
      FAM_CHECK(id >= 0 && id < 256, "byte codec: id ", id, " is not a byte");
      text.push_back(static_cast<char>(id));
    }
    return text;
  };
  codec.vocab_size = 256;
  return codec;
}

// ---------------------------------------------------------------------------------------------
// Sampling

int64_t Argmax(const std::vector<float>& logits) {
  FAM_CHECK(!logits.empty(), "Argmax of empty logits");
  int64_t best = 0;
  for (size_t i = 1; i < logits.size(); ++i)
    if (logits[i] > logits[best] || std::isnan(logits[best])) best = static_cast<int64_t>(i);
  return best;
}

std::vector<int64_t> NucleusIds(const std::vector<double>& probs, double top_p) {
  FAM_CHECK(!probs.empty(), "NucleusIds of an empty distribution");
  std::vector<int64_t> ids(probs.size());
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(),
                   [&](int64_t a, int64_t b) { return probs[a] > probs[b]; });
  double mass = 0;
  size_t keep = 0;
  while (keep < ids.size()) {
    mass += probs[ids[keep]];
    ++keep;
    if (mass >= top_p) break;
  }
  ids.resize(std::max<size_t>(keep, 1));
  return ids;
}

int64_t SampleToken(const std::vector<float>& logits, const SamplingOptions& options,
                    uint64_t draw) {
  if (options.temperature <= 0) return Argmax(logits);
  FAM_CHECK(options.top_p > 0 && options.top_p <= 1, "top_p must be in (0, 1], got ",
            options.top_p);
  const double max_logit = logits[Argmax(logits)];
  std::vector<double> probs(logits.size());
  double total = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    const double p =
        std::isfinite(logits[i]) ? std::exp((logits[i] - max_logit) / options.temperature) : 0.0;
    probs[i] = p;
    total += p;
  }
  for (double& p : probs) p /= total;
  std::vector<int64_t> ids;
  if (options.top_p < 1) {
    ids = NucleusIds(probs, options.top_p);
  } else {
    ids.resize(probs.size());
    std::iota(ids.begin(), ids.end(), 0);
  }
  double mass = 0;
  for (int64_t id : ids) mass += probs[id];
  const double target = UniformDouble(options.seed, kSamplingStream, draw) * mass;
  double cumulative = 0;
  for (int64_t id : ids) {
    cumulative += probs[id];
    if (target < cumulative) return id;
  }
  for (auto it = ids.rbegin(); it != ids.rend(); ++it)  // rounding: the last id with mass
    if (probs[*it] > 0) return *it;
  return ids.front();
}

// ---------------------------------------------------------------------------------------------
// Streaming inference and generation

int64_t DefaultChunk(const ModelConfig& config) {
  return config.attention.type == AttentionType::kFull ? 512 : config.attention.block_size;
}

std::vector<float> StreamTokens(const FamModel& model, const std::vector<int64_t>& tokens,
                                StreamingState& state, int64_t chunk,
                                const std::function<void()>& after_chunk) {
  FAM_CHECK(!tokens.empty(), "streaming needs at least one token");
  if (chunk <= 0) chunk = DefaultChunk(model.config());
  const int64_t n = static_cast<int64_t>(tokens.size());
  Tensor last;
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const int64_t len = std::min(chunk, n - begin);
    std::vector<int64_t> piece(tokens.begin() + begin, tokens.begin() + begin + len);
    Tensor logits = model.ForwardStreaming(Tensor::FromInts(piece, {1, len}), state);
    if (begin + len == n) last = ops::Slice(logits, 1, len - 1, len);
    if (after_chunk) after_chunk();
  }
  return last.ToFloats();
}

std::vector<int64_t> Generate(const FamModel& model, const std::vector<int64_t>& prompt,
                              const GenerationOptions& options,
                              const std::function<bool(int64_t)>& on_token) {
  FAM_CHECK(!prompt.empty(), "generation needs a prompt of at least one token");
  StreamingState state = model.NewStreamingState(1);
  std::vector<float> logits = StreamTokens(model, prompt, state, options.chunk);
  std::vector<int64_t> out;
  for (int64_t i = 0; i < options.max_new_tokens; ++i) {
    const int64_t id = SampleToken(logits, options.sampling, static_cast<uint64_t>(i));
    out.push_back(id);
    const bool go_on = on_token ? on_token(id) : true;
    if (!go_on || id == options.stop_token || i + 1 == options.max_new_tokens) break;
    logits = StreamTokens(model, {id}, state, 1);
  }
  return out;
}

TextStreamer::TextStreamer(const TextCodec& codec, const std::vector<int32_t>& context)
    : codec_(codec) {
  constexpr size_t kContext = 8;  // enough to decode the next token's leading space correctly
  const size_t from = context.size() > kContext ? context.size() - kContext : 0;
  ids_.assign(context.begin() + from, context.end());
  context_chars_ = ids_.empty() ? 0 : codec_.decode(ids_).size();
}

std::string TextStreamer::Emit(bool final) {
  const std::string text = codec_.decode(ids_);
  const size_t begin = std::min(context_chars_, text.size());
  size_t end = text.size();
  if (!final) end -= IncompleteUtf8Tail(text);
  if (end < begin + printed_) return "";
  std::string piece = text.substr(begin + printed_, end - begin - printed_);
  printed_ = end - begin;
  return piece;
}

std::string TextStreamer::Push(int32_t id) {
  ids_.push_back(id);
  return Emit(false);
}

std::string TextStreamer::Flush() { return Emit(true); }

// ---------------------------------------------------------------------------------------------
// Perplexity

double SumCrossEntropy(const FamModel& model, const Tensor& inputs, const Tensor& targets) {
  NoGradGuard no_grad;
  // The chunked LM head + cross-entropy: at most 2048 × vocab logits at once.
  ForwardOptions fo;
  fo.compute_logits = false;
  Tensor hidden = model.Forward(inputs, fo).hidden;
  Tensor losses =
      ops::LinearCrossEntropy(ops::Reshape(hidden, {-1, hidden.size(-1)}), model.lm_head_weight(),
                              model.OnDevice(ops::Reshape(targets, {-1})), Tensor(), 2048);
  double sum = 0;
  for (double x : losses.ToDoubles()) sum += x;
  return sum;
}

absl::StatusOr<PerplexityResult> WindowPerplexity(const FamModel& model,
                                                  const std::string& val_glob, int64_t seq_len,
                                                  int64_t max_windows) {
  absl::StatusOr<std::vector<std::string>> shards = data::ExpandShardGlob(val_glob);
  if (!shards.ok()) return shards.status();
  data::LoaderOptions lo;
  lo.shards = *shards;
  lo.seq_len = seq_len;
  lo.global_batch = 1;
  lo.micro_batch = 1;
  lo.shuffle = false;
  lo.max_vocab_size = model.config().vocab_size;
  absl::StatusOr<data::DataLoader> loader = data::DataLoader::Open(lo);
  if (!loader.ok()) return loader.status();
  int64_t windows = loader->NumWindows();
  if (max_windows > 0) windows = std::min(windows, max_windows);
  PerplexityResult r;
  r.mode = "windows";
  double total = 0;
  for (int64_t w = 0; w < windows; ++w) {
    absl::StatusOr<data::Batch> batch = loader->ReadWindows({w});
    if (!batch.ok()) return batch.status();
    absl::Status s =
        CatchToStatus([&] { total += SumCrossEntropy(model, batch->inputs, batch->targets); });
    if (!s.ok()) return s;
    r.tokens += batch->targets.numel();
  }
  r.sequences = windows;
  r.loss = r.tokens > 0 ? total / static_cast<double>(r.tokens) : 0.0;
  r.ppl = std::exp(r.loss);
  return r;
}

PerplexityResult StreamingPerplexity(const FamModel& model, const std::vector<int64_t>& tokens,
                                     int64_t chunk) {
  FAM_CHECK(tokens.size() >= 2, "streaming perplexity needs at least 2 tokens, got ",
            tokens.size());
  if (chunk <= 0) chunk = DefaultChunk(model.config());
  NoGradGuard no_grad;
  StreamingState state = model.NewStreamingState(1);
  const int64_t n = static_cast<int64_t>(tokens.size()) - 1;  // predicted positions
  double total = 0;
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const int64_t len = std::min(chunk, n - begin);
    std::vector<int64_t> in(tokens.begin() + begin, tokens.begin() + begin + len);
    std::vector<int64_t> target(tokens.begin() + begin + 1, tokens.begin() + begin + len + 1);
    Tensor logits = model.ForwardStreaming(Tensor::FromInts(in, {1, len}), state);
    Tensor losses = ops::CrossEntropy(ops::Reshape(logits, {len, logits.size(-1)}),
                                      model.OnDevice(Tensor::FromInts(target, {len})));
    for (double x : losses.ToDoubles()) total += x;
  }
  PerplexityResult r;
  r.mode = "stream";
  r.tokens = n;
  r.sequences = 1;
  r.loss = total / static_cast<double>(n);
  r.ppl = std::exp(r.loss);
  return r;
}

absl::StatusOr<std::vector<int64_t>> ReadShardTokens(const std::string& glob, int64_t max_tokens,
                                                     int64_t vocab_size) {
  absl::StatusOr<std::vector<std::string>> paths = data::ExpandShardGlob(glob);
  if (!paths.ok()) return paths.status();
  std::vector<int64_t> tokens;
  for (const std::string& path : *paths) {
    if (max_tokens > 0 && static_cast<int64_t>(tokens.size()) >= max_tokens) break;
    absl::StatusOr<data::TokenShard> shard = data::TokenShard::Open(path);
    if (!shard.ok()) return shard.status();
    if (shard->vocab_size() > vocab_size)
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": shard vocabulary ", shard->vocab_size(), " exceeds the model's ", vocab_size));
    int64_t count = shard->size();
    if (max_tokens > 0) count = std::min(count, max_tokens - static_cast<int64_t>(tokens.size()));
    const size_t at = tokens.size();
    tokens.resize(at + count);
    absl::Status s = CatchToStatus([&] { shard->Read(0, count, tokens.data() + at); });
    if (!s.ok()) return s;
  }
  return tokens;
}

// ---------------------------------------------------------------------------------------------
// PassKey

namespace {

constexpr char kPasskeyIntro[] =
    "There is a pass key hidden inside a lot of irrelevant text. Find it and remember it. "
    "I will ask you for the pass key at the end.";
constexpr char kPasskeyFiller[] =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
constexpr char kPasskeyQuestion[] = "What is the pass key? The pass key is";

std::string KeySentence(int64_t key) {
  return absl::StrCat("The pass key is ", key, ". Remember it. ", key, " is the pass key.");
}

// The encoded parts of a PassKey prompt; `sep` goes between consecutive parts.
struct PasskeyParts {
  std::vector<int32_t> intro, filler, question, sep;
};

PasskeyParts EncodeParts(const TextCodec& codec) {
  PasskeyParts p;
  p.intro = codec.encode(kPasskeyIntro);
  p.filler = codec.encode(kPasskeyFiller);
  p.question = codec.encode(kPasskeyQuestion);
  if (!codec.starts_word) p.sep = codec.encode(" ");
  return p;
}

int64_t FixedTokens(const TextCodec& codec, const PasskeyParts& p, size_t key_tokens) {
  return (codec.doc_start >= 0 ? 1 : 0) + p.intro.size() + key_tokens + p.question.size() +
         2 * p.sep.size();
}

}  // namespace

int64_t MinPasskeyTokens(const TextCodec& codec) {
  PasskeyParts p = EncodeParts(codec);
  return FixedTokens(codec, p, codec.encode(KeySentence(99999)).size());
}

int64_t PasskeyFillerTokens(const TextCodec& codec) {
  PasskeyParts p = EncodeParts(codec);
  return static_cast<int64_t>(p.filler.size() + p.sep.size());
}

absl::StatusOr<PasskeyPrompt> BuildPasskeyPrompt(const TextCodec& codec, int64_t context_tokens,
                                                 uint64_t seed, int64_t trial, double depth,
                                                 double max_depth, int key_digits) {
  if (key_digits < 1 || key_digits > 9)
    return absl::InvalidArgumentError(
        absl::StrCat("passkey: key_digits must be in 1-9, got ", key_digits));
  const std::array<uint32_t, 4> draw = Philox(
      seed, kPasskeyStream + static_cast<uint64_t>(context_tokens), static_cast<uint64_t>(trial));
  PasskeyPrompt out;
  int64_t lowest = 1;  // 10^(key_digits - 1)
  for (int d = 1; d < key_digits; ++d) lowest *= 10;
  out.key = lowest + static_cast<int64_t>(draw[0] % static_cast<uint32_t>(9 * lowest));
  if (depth < 0) {
    depth = std::clamp(max_depth, 0.0, 1.0) * (static_cast<double>(draw[1]) / 4294967296.0);
  }
  depth = std::min(depth, 1.0);

  const PasskeyParts p = EncodeParts(codec);
  const std::vector<int32_t> key = codec.encode(KeySentence(out.key));
  const int64_t fixed = FixedTokens(codec, p, key.size());
  const int64_t unit = static_cast<int64_t>(p.filler.size() + p.sep.size());
  if (context_tokens < fixed)
    return absl::InvalidArgumentError(absl::StrCat(
        "passkey: a context of ", context_tokens,
        " tokens is shorter than the PassKey prompt without filler (", fixed, " tokens)"));
  out.filler_units = unit > 0 ? (context_tokens - fixed) / unit : 0;
  out.units_before = std::llround(depth * static_cast<double>(out.filler_units));
  out.depth = out.filler_units > 0
                  ? static_cast<double>(out.units_before) / static_cast<double>(out.filler_units)
                  : 0.0;

  std::vector<int64_t>& t = out.tokens;
  t.reserve(context_tokens);
  auto append = [&t](const std::vector<int32_t>& ids) {
    t.insert(t.end(), ids.begin(), ids.end());
  };
  if (codec.doc_start >= 0) t.push_back(codec.doc_start);
  append(p.intro);
  for (int64_t u = 0; u < out.units_before; ++u) {
    append(p.sep);
    append(p.filler);
  }
  append(p.sep);
  out.key_begin = static_cast<int64_t>(t.size());
  append(key);
  out.key_end = static_cast<int64_t>(t.size());
  for (int64_t u = out.units_before; u < out.filler_units; ++u) {
    append(p.sep);
    append(p.filler);
  }
  append(p.sep);
  append(p.question);
  return out;
}

std::optional<std::string> FirstInteger(std::string_view text) {
  size_t i = 0;
  while (i < text.size() && !std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  if (i == text.size()) return std::nullopt;
  size_t end = i;
  while (end < text.size() && std::isdigit(static_cast<unsigned char>(text[end]))) ++end;
  while (i + 1 < end && text[i] == '0') ++i;
  return std::string(text.substr(i, end - i));
}

namespace {

// An answer is complete once a run of digits is followed by something else.
bool AnswerComplete(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && !std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  return i > 0 && i < text.size() && std::isdigit(static_cast<unsigned char>(text[i - 1]));
}

}  // namespace

absl::StatusOr<std::vector<PasskeyLengthResult>> RunPasskey(
    const FamModel& model, const TextCodec& codec, const PasskeyOptions& options,
    const std::function<void(const std::string&)>& log) {
  if (codec.vocab_size > model.config().vocab_size)
    return absl::InvalidArgumentError(absl::StrCat("passkey: the tokenizer has ", codec.vocab_size,
                                                   " tokens, more than the model's vocab_size ",
                                                   model.config().vocab_size));
  std::vector<PasskeyLengthResult> results;
  for (int64_t length : options.lengths) {
    PasskeyLengthResult r;
    r.context_tokens = length;
    r.trials = options.trials;
    r.rss_before_mb = CurrentRssMb();
    r.rss_max_mb = r.rss_before_mb;
    Stopwatch clock;
    int64_t tokens = 0, correct = 0;
    for (int64_t trial = 0; trial < options.trials; ++trial) {
      absl::StatusOr<PasskeyPrompt> prompt =
          BuildPasskeyPrompt(codec, length, options.seed, trial,
                             /*depth=*/-1, options.max_depth, options.key_digits);
      if (!prompt.ok()) return prompt.status();
      PasskeyTrial result;
      result.key = prompt->key;
      result.depth = prompt->depth;
      result.prompt_tokens = static_cast<int64_t>(prompt->tokens.size());
      absl::Status s = CatchToStatus([&] {
        StreamingState state = model.NewStreamingState(1);
        std::vector<float> logits = StreamTokens(model, prompt->tokens, state, options.chunk, [&] {
          r.rss_max_mb = std::max(r.rss_max_mb, CurrentRssMb());
        });
        tokens += result.prompt_tokens;
        std::vector<int32_t> answer;
        for (int64_t i = 0; i < options.max_new_tokens; ++i) {
          const int64_t id = Argmax(logits);
          if (id == codec.stop_token) break;
          answer.push_back(static_cast<int32_t>(id));
          ++tokens;
          result.answer = codec.decode(answer);
          if (AnswerComplete(result.answer) || i + 1 == options.max_new_tokens) break;
          logits = StreamTokens(model, {id}, state, 1);
        }
        r.state_bytes = std::max(r.state_bytes, state.Bytes());
      });
      if (!s.ok()) return s;
      result.correct = FirstInteger(result.answer) == std::to_string(result.key);
      correct += result.correct;
      r.mean_prompt_tokens += static_cast<double>(result.prompt_tokens);
      r.results.push_back(std::move(result));
    }
    r.seconds = clock.Seconds();
    r.accuracy = r.trials > 0 ? static_cast<double>(correct) / static_cast<double>(r.trials) : 0;
    if (r.trials > 0) r.mean_prompt_tokens /= static_cast<double>(r.trials);
    r.tokens_per_s = static_cast<double>(tokens) / std::max(r.seconds, 1e-9);
    r.rss_after_mb = CurrentRssMb();
    r.rss_max_mb = std::max(r.rss_max_mb, r.rss_after_mb);
    r.peak_rss_mb = PeakRssMb();
    if (log)
      log(absl::StrFormat(
          "passkey %7d tokens: %d/%d correct (%.0f%%), %.1f s, %.0f tok/s, RSS %.1f -> %.1f MB "
          "(max %.1f), state %.2f MB",
          length, correct, r.trials, 100 * r.accuracy, r.seconds, r.tokens_per_s, r.rss_before_mb,
          r.rss_after_mb, r.rss_max_mb, r.state_bytes / kMiB));
    results.push_back(std::move(r));
  }
  return results;
}

std::vector<int64_t> DefaultPasskeyLengths(const ModelConfig& config, int64_t seq_len) {
  int64_t field = seq_len > 0 ? seq_len : 2048;
  if (config.attention.type != AttentionType::kFull)
    field = config.n_layers * (config.attention.memory_segments + 1) * config.attention.block_size;
  std::vector<int64_t> lengths;
  for (int64_t len : {field / 2, field, 2 * field, 4 * field}) {
    len = std::max<int64_t>(len, 256);
    if (lengths.empty() || lengths.back() != len) lengths.push_back(len);
  }
  return lengths;
}

// ---------------------------------------------------------------------------------------------
// Process memory

double CurrentRssMb() {
  std::ifstream in("/proc/self/statm");
  int64_t size = 0, resident = 0;
  if (!(in >> size >> resident)) return 0;
  return static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / kMiB;
}

double PeakRssMb() {
  rusage usage{};
  if (getrusage(RUSAGE_SELF, &usage) != 0) return CurrentRssMb();
  // Linux reports kilobytes; the kernel's high-water mark can lag the resident pages a little.
  return std::max(static_cast<double>(usage.ru_maxrss) / 1024.0, CurrentRssMb());
}

// ---------------------------------------------------------------------------------------------
// Eval suites

namespace {

void VisitSuite(YamlReader& r, EvalSuite* s) {
  r.Get("name", &s->name, "suite name, shown in the report");
  r.Section(
      "val",
      [&](YamlReader& v) {
        v.Get("enabled", &s->val.enabled, "evaluate validation perplexity (needs data.val)");
        v.GetEnum("mode", &s->val.mode,
                  std::vector<std::pair<std::string, ValMode>>{{"windows", ValMode::kWindows},
                                                               {"stream", ValMode::kStream}},
                  "windows: windows of seq_len with Forward; stream: one long stretch streamed");
        v.Get("seq_len", &s->val.seq_len, 0, "windows mode: window length; 0 = trainer.seq_len");
        v.Get("max_windows", &s->val.max_windows, 0,
              "windows mode: windows evaluated; 0 = eval.val_batches x trainer.micro_batch of "
              "the run (global_batch when micro_batch is derived; all when that is 0)");
        v.Get("stream_tokens", &s->val.stream_tokens, 0,
              "stream mode: tokens streamed; 0 = the whole validation set");
      },
      "validation perplexity");
  r.Section(
      "passkey",
      [&](YamlReader& p) {
        p.Get("enabled", &s->passkey.enabled, "run PassKey retrieval (needs a tokenizer)");
        p.Get("lengths", &s->passkey.lengths, AtLeast(1),
              "context lengths in tokens; [] = the run's eval.passkey_lengths, else sized for "
              "the model");
        p.Get("trials", &s->passkey.trials, 0, "trials per length; 0 = eval.passkey_trials");
        p.Get("max_new_tokens", &s->passkey.max_new_tokens, 0,
              "greedy tokens per answer; 0 = the run's eval.max_new_tokens");
        p.Get("seed", &s->passkey.seed, 0, "seed of the keys and their depths");
        p.Get("chunk", &s->passkey.chunk, 0,
              "prompt tokens per streaming call; 0 = the block size");
        p.Get("max_depth", &s->passkey.max_depth, InRange(0, 1),
              "key depths drawn in [0, max_depth]; below 1 keeps every key at least "
              "(1 - max_depth) x length tokens before the question");
        p.Get("key_digits", &s->passkey.key_digits, InRange(1, 9),
              "digits of each pass key (5 as the paper; fewer makes copying easier for tiny "
              "models)");
      },
      "PassKey retrieval (FAM_SPEC.md section 8)");
  r.Get("plots", &s->plots, "write PNG plots (gnuplot)");
}

}  // namespace

absl::StatusOr<EvalSuite> ParseEvalSuite(const std::string& yaml, const std::string& source_name) {
  absl::StatusOr<ConfigNode> tree = LoadYamlText(yaml, source_name);
  if (!tree.ok()) return tree.status();
  EvalSuite suite;
  suite.name = fs::path(source_name).stem().string();
  YamlReader reader = YamlReader::Reading(&*tree);
  VisitSuite(reader, &suite);
  if (absl::Status s = reader.Finish(); !s.ok()) return s;
  return suite;
}

absl::StatusOr<EvalSuite> LoadEvalSuite(const std::string& path) {
  absl::StatusOr<std::string> text = io::ReadFile(path);
  if (!text.ok()) return text.status();
  return ParseEvalSuite(*text, path);
}

std::string EvalSuiteToYaml(const EvalSuite& suite) {
  ConfigNode root = ConfigNode::Map();
  EvalSuite copy = suite;
  YamlReader writer = YamlReader::Writing(&root);
  VisitSuite(writer, &copy);
  return EmitYaml(root);
}

// ---------------------------------------------------------------------------------------------
// Model loading

namespace {

bool Exists(const fs::path& p) {
  std::error_code ec;
  return fs::exists(p, ec);
}

// A checkpoint directory, or the newest valid checkpoint of a run directory / checkpoints folder.
}  // namespace

absl::StatusOr<LoadedModel> LoadModelForEval(const ModelSource& source) {
  const bool from_checkpoint = !source.checkpoint.empty();
  const bool from_weights = !source.model.empty() || !source.weights.empty();
  if (from_checkpoint == from_weights)
    return absl::InvalidArgumentError(
        "give either --checkpoint <dir> or --model <model.yaml> --weights <file.safetensors>");
  if (from_weights && (source.model.empty() || source.weights.empty()))
    return absl::InvalidArgumentError("--model and --weights go together");
  LoadedModel out;
  ModelConfig config;
  std::string checkpoint;
  if (from_checkpoint) {
    absl::StatusOr<std::string> dir = ResolveCheckpoint(source.checkpoint);
    if (!dir.ok()) return dir.status();
    checkpoint = *dir;
    fs::path normal = fs::absolute(fs::path(checkpoint)).lexically_normal();
    if (!normal.has_filename()) normal = normal.parent_path();
    out.run_dir = normal.parent_path().parent_path().string();
    std::string run_config = source.run_config;
    if (run_config.empty()) {
      // The checkpoint's own config.yaml, or the run directory's (trainers/train/portable_checkpoint.h).
      absl::StatusOr<std::string> found = CheckpointRunConfigPath(checkpoint);
      if (!found.ok() && Exists(normal / "manifest.json")) return found.status();
      if (found.ok()) run_config = *found;
      out.portable = CheckpointHasRunConfig(checkpoint);
    }
    // A missing manifest is reported by LoadCheckpoint below, naming the checkpoint.
    if (Exists(run_config)) {
      absl::StatusOr<RunConfig> run = LoadRunConfig(run_config);
      if (!run.ok()) return run.status();
      out.run = *std::move(run);
      config = out.run->model;
    }
  } else {
    if (!source.run_config.empty()) {
      absl::StatusOr<RunConfig> run = LoadRunConfig(source.run_config);
      if (!run.ok()) return run.status();
      out.run = *std::move(run);
    }
    absl::StatusOr<ModelConfig> model = LoadModelConfig(source.model);
    if (!model.ok()) return model.status();
    config = *model;
  }

  if (from_checkpoint) {
    absl::StatusOr<io::LoadedCheckpoint> ckpt = io::LoadCheckpoint(checkpoint);
    if (!ckpt.ok()) return ckpt.status();
    if (!out.run)
      return absl::NotFoundError(
          absl::StrCat(checkpoint, ": no run config found; pass --run-config <config.yaml>"));
    if (!ckpt->config_hash.empty() && ckpt->config_hash != ModelConfigHash(config))
      return absl::FailedPreconditionError(
          absl::StrCat(checkpoint, ": the checkpoint was written for another model config (hash ",
                       ckpt->config_hash, ", the run config gives ", ModelConfigHash(config), ")"));
    absl::Status s = CatchToStatus([&] {
      out.model = std::make_unique<FamModel>(config);
      NoGradGuard no_grad;
      for (auto& [name, t] : out.model->NamedParameters()) {
        auto it = ckpt->model.find(name);
        if (it == ckpt->model.end())
          ThrowError(absl::StatusCode::kDataLoss, checkpoint, ": model tensor ", name,
                     " is missing");
        if (it->second.shape() != t.shape())
          ThrowError(absl::StatusCode::kFailedPrecondition, checkpoint, ": ", name, " has shape ",
                     ShapeString(it->second.shape()), ", the model expects ",
                     ShapeString(t.shape()));
        ops::CopyInPlace(t, it->second);
      }
    });
    if (!s.ok()) return s;
    out.step = ckpt->step;
    out.checkpoint = checkpoint;
  } else {
    absl::Status s = CatchToStatus([&] { out.model = std::make_unique<FamModel>(config); });
    if (!s.ok()) return s;
    if (absl::Status w = LoadModelWeights(*out.model, source.weights); !w.ok()) return w;
    out.checkpoint = source.weights;
  }
  if (!source.device.is_cpu()) {
    std::string why;
    if (!DeviceAvailable(source.device, &why))
      return absl::FailedPreconditionError(
          absl::StrCat("--device ", source.device.ToString(), ": unavailable: ", why));
    absl::Status moved = CatchToStatus([&] { out.model->To(source.device); });
    if (!moved.ok()) return moved;
  }
  // The tokenizer the checkpoint carries is the one it was trained with: it wins over the run
  // config's path (which may not exist where the checkpoint was moved).
  const std::string carried = checkpoint.empty() ? "" : CheckpointTokenizerPath(checkpoint);
  out.tokenizer = !source.tokenizer.empty() ? source.tokenizer
                  : !carried.empty()        ? carried
                  : out.run                 ? out.run->data.tokenizer
                                            : "";
  out.val = !source.val.empty() ? source.val : out.run ? out.run->data.val : "";
  if (source.val.empty() && out.portable && !out.val.empty() &&
      !data::ExpandShardGlob(out.val).ok()) {
    // A checkpoint moved without its data: evaluate what needs no validation shards.
    out.notes.push_back(absl::StrCat("the run's data.val (", out.val,
                                     ") is not here: validation skipped (pass --val)"));
    out.val.clear();
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Report

Json ReportToJson(const EvalReport& report) {
  Json j;
  j["checkpoint"] = report.checkpoint;
  j["step"] = report.step ? Json(*report.step) : Json(nullptr);
  if (report.val) {
    j["val"] = {{"loss", report.val->loss},
                {"ppl", report.val->ppl},
                {"tokens", report.val->tokens},
                {"sequences", report.val->sequences},
                {"mode", report.val->mode}};
  } else {
    j["val"] = nullptr;
  }
  j["passkey"] = Json::array();
  for (const PasskeyLengthResult& r : report.passkey) {
    Json trials = Json::array();
    for (const PasskeyTrial& t : r.results)
      trials.push_back({{"key", t.key},
                        {"depth", t.depth},
                        {"prompt_tokens", t.prompt_tokens},
                        {"answer", t.answer},
                        {"correct", t.correct}});
    j["passkey"].push_back({{"context_tokens", r.context_tokens},
                            {"trials", r.trials},
                            {"accuracy", r.accuracy},
                            {"mean_prompt_tokens", r.mean_prompt_tokens},
                            {"rss_before_mb", r.rss_before_mb},
                            {"rss_after_mb", r.rss_after_mb},
                            {"rss_max_mb", r.rss_max_mb},
                            {"peak_rss_mb", r.peak_rss_mb},
                            {"state_bytes", r.state_bytes},
                            {"seconds", r.seconds},
                            {"tokens_per_s", r.tokens_per_s},
                            {"results", trials}});
  }
  j["peak_rss_mb"] = report.peak_rss_mb;
  j["seconds"] = report.seconds;
  j["model"] = report.model;
  j["suite"] = report.suite;
  return j;
}

std::string ReportToMarkdown(const EvalReport& report) {
  std::string md = "# Evaluation report\n\n";
  absl::StrAppend(&md, "- checkpoint: `", report.checkpoint, "`");
  if (report.step) absl::StrAppend(&md, " (step ", *report.step, ")");
  md += "\n";
  const Json& m = report.model;
  if (m.contains("attention")) {
    absl::StrAppendFormat(&md, "- model: %s attention, %d layers, d_model %d, %d parameters",
                          m.value("attention", ""), m.value("n_layers", 0), m.value("d_model", 0),
                          m.value("parameters", int64_t{0}));
    if (m.value("attention", "") != "full")
      absl::StrAppendFormat(&md, ", block %d, memory segments %d", m.value("block_size", 0),
                            m.value("memory_segments", 0));
    if (m.value("attention", "") == "fam")
      absl::StrAppendFormat(&md, ", FAM length %d", m.value("fam_length", 0));
    md += "\n";
  }
  absl::StrAppendFormat(&md, "- suite: %s; %.1f s; peak RSS %.1f MB\n\n", report.suite,
                        report.seconds, report.peak_rss_mb);
  md += "## Validation\n\n";
  if (report.val) {
    md += "| mode | sequences | tokens | loss | perplexity |\n|---|---|---|---|---|\n";
    absl::StrAppendFormat(&md, "| %s | %d | %d | %.4f | %.2f |\n\n", report.val->mode,
                          report.val->sequences, report.val->tokens, report.val->loss,
                          report.val->ppl);
  } else {
    md += "No validation data.\n\n";
  }
  md += "## PassKey retrieval\n\n";
  if (report.passkey.empty()) {
    md += "Not run.\n\n";
  } else {
    md +=
        "| context tokens | trials | accuracy | prompt tokens | RSS before → after (MB) | "
        "max RSS (MB) | state (MB) | seconds | tok/s |\n"
        "|---|---|---|---|---|---|---|---|---|\n";
    for (const PasskeyLengthResult& r : report.passkey)
      absl::StrAppendFormat(
          &md, "| %d | %d | %.0f%% | %.0f | %.1f → %.1f | %.1f | %.2f | %.1f | %.0f |\n",
          r.context_tokens, r.trials, 100 * r.accuracy, r.mean_prompt_tokens, r.rss_before_mb,
          r.rss_after_mb, r.rss_max_mb, r.state_bytes / kMiB, r.seconds, r.tokens_per_s);
    md += "\n";
  }
  return md;
}

absl::StatusOr<LossCurves> ReadLossCurves(const std::string& metrics_jsonl) {
  std::ifstream in(metrics_jsonl);
  if (!in) return absl::NotFoundError(absl::StrCat(metrics_jsonl, ": cannot open"));
  LossCurves curves;
  std::string line;
  while (std::getline(in, line)) {
    Json j = Json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || !j.contains("step") || !j["step"].is_number()) continue;
    const std::string kind = j.value("kind", "");
    if (kind == "train" && j.contains("loss") && j["loss"].is_number())
      absl::StrAppend(&curves.train, j["step"].get<int64_t>(), " ", j["loss"].get<double>(), "\n");
    if (kind == "eval" && j.contains("val_loss") && j["val_loss"].is_number())
      absl::StrAppend(&curves.val, j["step"].get<int64_t>(), " ", j["val_loss"].get<double>(),
                      "\n");
  }
  return curves;
}

namespace {

// scripts/plot_report.sh: under $FAM_SOURCE_DIR, or upward from the working directory or from
// the executable's folder. "" when not found.
std::string FindPlotScript() {
  const fs::path rel = fs::path("scripts") / "plot_report.sh";
  if (const char* env = std::getenv("FAM_SOURCE_DIR"); env != nullptr && *env != '\0')
    if (Exists(fs::path(env) / rel)) return (fs::path(env) / rel).string();
  std::error_code ec;
  std::vector<fs::path> starts = {fs::current_path(ec)};
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) starts.push_back(exe.parent_path());
  for (fs::path dir : starts) {
    while (!dir.empty()) {
      if (Exists(dir / rel)) return (dir / rel).string();
      if (dir == dir.parent_path()) break;
      dir = dir.parent_path();
    }
  }
  return "";
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  return io::WriteFileAtomic(path, text);
}

}  // namespace

absl::StatusOr<ReportFiles> WriteReport(const EvalReport& report, const std::string& out,
                                        const std::string& metrics_jsonl, bool plots,
                                        const std::function<void(const std::string&)>& warn) {
  ReportFiles files;
  files.json = out;
  std::string stem = out;
  if (fs::path(out).extension() == ".json") stem = out.substr(0, out.size() - 5);
  files.markdown = stem + ".md";
  std::error_code ec;
  const fs::path parent = fs::path(out).parent_path();
  if (!parent.empty()) fs::create_directories(parent, ec);
  if (ec)
    return absl::PermissionDeniedError(
        absl::StrCat(parent.string(), ": cannot create the report directory: ", ec.message()));

  // Plot data.
  bool have_data = false;
  if (!report.passkey.empty()) {
    std::string dat = "# context_tokens accuracy\n";
    for (const PasskeyLengthResult& r : report.passkey)
      absl::StrAppend(&dat, r.context_tokens, " ", r.accuracy, "\n");
    if (absl::Status s = WriteText(stem + ".passkey.dat", dat); !s.ok()) return s;
    have_data = true;
  }
  if (!metrics_jsonl.empty() && Exists(metrics_jsonl)) {
    absl::StatusOr<LossCurves> curves = ReadLossCurves(metrics_jsonl);
    if (curves.ok()) {
      if (absl::Status s = WriteText(stem + ".loss_train.dat", curves->train); !s.ok()) return s;
      if (absl::Status s = WriteText(stem + ".loss_val.dat", curves->val); !s.ok()) return s;
      have_data = have_data || !curves->train.empty() || !curves->val.empty();
    } else if (warn) {
      warn(std::string(curves.status().message()));
    }
  }
  if (plots && have_data) {
    const std::string script = FindPlotScript();
    if (!OnPath("gnuplot")) {
      if (warn) warn("gnuplot not found: skipping the plots (install gnuplot-nox)");
    } else if (script.empty()) {
      if (warn) warn("scripts/plot_report.sh not found (set FAM_SOURCE_DIR): skipping the plots");
    } else {
      const std::string command =
          absl::StrCat("bash ", ShellQuote(script), " ", ShellQuote(stem), " >/dev/null");
      const int rc = std::system(command.c_str());
      if (rc != 0 && warn) warn(absl::StrCat("plotting failed: `", command, "` returned ", rc));
      for (const char* suffix : {".passkey.png", ".loss.png"})
        if (Exists(stem + suffix)) files.plots.push_back(stem + suffix);
    }
  }

  std::string md = ReportToMarkdown(report);
  if (!files.plots.empty()) {
    md += "## Plots\n\n";
    for (const std::string& png : files.plots)
      absl::StrAppend(&md, "![", fs::path(png).filename().string(), "](",
                      fs::path(png).filename().string(), ")\n");
  }
  if (absl::Status s = WriteText(files.markdown, md); !s.ok()) return s;
  if (absl::Status s = WriteText(out, ReportToJson(report).dump(2) + "\n"); !s.ok()) return s;
  return files;
}

// ---------------------------------------------------------------------------------------------
// `fam eval`

namespace {

Json ModelJson(const FamModel& model) {
  const ModelConfig& c = model.config();
  return {{"attention", AttentionTypeName(c.attention.type)},
          {"n_layers", c.n_layers},
          {"d_model", c.d_model},
          {"vocab_size", c.vocab_size},
          {"block_size", c.attention.block_size},
          {"memory_segments", c.attention.memory_segments},
          {"fam_length", c.fam_rows()},
          {"parameters", model.ParameterCount()}};
}

}  // namespace

absl::StatusOr<EvalReport> RunEval(const EvalRequest& request, std::ostream& log,
                                   ReportFiles* files) {
  Stopwatch clock;
  EvalSuite suite;
  if (!request.suite.empty()) {
    absl::StatusOr<EvalSuite> loaded = LoadEvalSuite(request.suite);
    if (!loaded.ok()) return loaded.status();
    suite = *loaded;
  }
  absl::StatusOr<LoadedModel> lm = LoadModelForEval(request.source);
  if (!lm.ok()) return lm.status();
  const FamModel& model = *lm->model;
  const ModelConfig& config = model.config();
  const std::optional<RunConfig>& run = lm->run;

  std::string out = request.out;
  if (out.empty()) {
    if (lm->run_dir.empty())
      return absl::InvalidArgumentError("fam eval: --out is required with --model/--weights");
    out = (fs::path(lm->run_dir) / "eval" /
           (fs::path(lm->checkpoint).lexically_normal().filename().string() + ".json"))
              .string();
  }

  EvalReport report;
  report.checkpoint = lm->checkpoint;
  report.step = lm->step;
  report.model = ModelJson(model);
  report.suite = suite.name;
  log << "eval " << lm->checkpoint;
  if (lm->step) log << " (step " << *lm->step << ")";
  log << ": " << AttentionTypeName(config.attention.type) << ", " << model.ParameterCount()
      << " parameters, suite " << suite.name << std::endl;
  for (const std::string& note : lm->notes) log << "note: " << note << std::endl;

  if (suite.val.enabled) {
    if (lm->val.empty()) {
      log << "val: no validation shards (data.val or --val): skipped" << std::endl;
    } else if (suite.val.mode == ValMode::kWindows) {
      int64_t seq_len = suite.val.seq_len;
      if (seq_len <= 0) seq_len = run ? run->trainer.seq_len : 1024;
      int64_t max_windows = suite.val.max_windows;
      if (max_windows <= 0 && run)
        max_windows =
            run->eval.val_batches *
            (run->trainer.micro_batch > 0 ? run->trainer.micro_batch : run->trainer.global_batch);
      absl::StatusOr<PerplexityResult> val = WindowPerplexity(model, lm->val, seq_len, max_windows);
      if (!val.ok()) return val.status();
      report.val = *val;
      log << absl::StrFormat("val: loss %.4f, ppl %.2f over %d tokens (%d windows of %d)\n",
                             val->loss, val->ppl, val->tokens, val->sequences, seq_len)
          << std::flush;
    } else {
      absl::StatusOr<std::vector<int64_t>> tokens =
          ReadShardTokens(lm->val, suite.val.stream_tokens, config.vocab_size);
      if (!tokens.ok()) return tokens.status();
      absl::Status s = CatchToStatus(
          [&] { report.val = StreamingPerplexity(model, *tokens, suite.passkey.chunk); });
      if (!s.ok()) return s;
      log << absl::StrFormat("val: loss %.4f, ppl %.2f over %d tokens (streamed)\n",
                             report.val->loss, report.val->ppl, report.val->tokens)
          << std::flush;
    }
  }

  if (suite.passkey.enabled) {
    PasskeyOptions po;
    po.lengths = suite.passkey.lengths;
    if (po.lengths.empty() && run) po.lengths = run->eval.passkey_lengths;
    if (po.lengths.empty())
      po.lengths = DefaultPasskeyLengths(config, run ? run->trainer.seq_len : 0);
    po.trials = suite.passkey.trials > 0 ? suite.passkey.trials
                : run                    ? run->eval.passkey_trials
                                         : 10;
    po.max_new_tokens = suite.passkey.max_new_tokens > 0 ? suite.passkey.max_new_tokens
                        : run                            ? run->eval.max_new_tokens
                                                         : 8;
    po.seed = static_cast<uint64_t>(suite.passkey.seed);
    po.chunk = suite.passkey.chunk;
    po.max_depth = suite.passkey.max_depth;
    po.key_digits = static_cast<int>(suite.passkey.key_digits);
    if (lm->tokenizer.empty()) {
      log << "passkey: no tokenizer (data.tokenizer or --tokenizer): skipped" << std::endl;
    } else {
      absl::StatusOr<data::Tokenizer> tok = data::Tokenizer::Load(lm->tokenizer);
      if (!tok.ok()) return tok.status();
      absl::StatusOr<std::vector<PasskeyLengthResult>> pk =
          RunPasskey(model, TokenizerCodec(*tok), po,
                     [&](const std::string& line) { log << line << std::endl; });
      if (!pk.ok()) return pk.status();
      report.passkey = *std::move(pk);
    }
  }
  report.peak_rss_mb = PeakRssMb();
  report.seconds = clock.Seconds();

  const std::string metrics =
      lm->run_dir.empty() ? "" : (fs::path(lm->run_dir) / "metrics.jsonl").string();
  absl::StatusOr<ReportFiles> written =
      WriteReport(report, out, metrics, request.plots && suite.plots,
                  [&](const std::string& w) { log << "warning: " << w << std::endl; });
  if (!written.ok()) return written.status();
  log << "report: " << written->json << " (+ " << fs::path(written->markdown).filename().string();
  for (const std::string& png : written->plots) log << ", " << fs::path(png).filename().string();
  log << ")" << std::endl;
  if (files != nullptr) *files = *written;
  return report;
}

}  // namespace fam::eval
