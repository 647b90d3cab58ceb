#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "framework/core/error.h"
#include "framework/core/rng.h"
#include "framework/metrics/metrics.h"
#include "trainers/eval/eval_internal.h"
#include "trainers/eval/evaluate.h"

namespace fam::eval {
namespace {

using eval_internal::kMiB;

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

}  // namespace fam::eval
