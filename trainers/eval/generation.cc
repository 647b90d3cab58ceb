#include <algorithm>
#include <array>
#include <cmath>
#include <memory>
#include <numeric>

#include "framework/core/error.h"
#include "framework/core/rng.h"
#include "framework/data/tokenizer.h"
#include "framework/ops/ops.h"
#include "trainers/eval/evaluate.h"

namespace fam::eval {
namespace {

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
  codec.doc_start = tok->prompt_start_id();
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

}  // namespace fam::eval
