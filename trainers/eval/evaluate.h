// Evaluation of trained models (`fam eval`, `fam generate`): token sampling (greedy, temperature,
// top-p from a seeded Philox stream), streaming generation with constant memory
// (FamModel::ForwardStreaming), validation perplexity (training-length windows or one long
// streamed stretch), PassKey retrieval (FAM_SPEC.md §8) with memory measurements, eval suite
// configs (configs/eval/*.yaml), model loading from a checkpoint or from safetensors, and the
// report: JSON (FORMATS.md "Eval report"), markdown and PNG plots (scripts/plot_report.sh).
// Sources, one per section below: generation.cc (text codecs, sampling, streaming inference),
// perplexity.cc, passkey.cc (with process memory), suite.cc, model_loading.cc, report.cc, and
// evaluate.cc (`fam eval`).
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "models/fam/model.h"
#include "nlohmann/json.hpp"
#include "trainers/train/run_config.h"

namespace fam::data {
class Tokenizer;
}

namespace fam::eval {

// ---- text <-> token ids ----

// What evaluation needs of a tokenizer. `starts_word`: every encode() result begins a new word
// (SentencePiece marks the start of a line), so encodings of sentences concatenate into text with
// a space between them; otherwise prompts are joined with encode(" ").
struct TextCodec {
  std::function<std::vector<int32_t>(std::string_view)> encode;
  std::function<std::string(const std::vector<int32_t>&)> decode;
  int64_t vocab_size = 0;
  bool starts_word = false;
  int32_t doc_start = -1;   // placed before a prompt (data::Tokenizer::prompt_start_id)
  int32_t stop_token = -1;  // generation stops when it is produced; -1: never
};
// A SentencePiece tokenizer; documents start after eos, as in the shards of `fam prepare-data`.
TextCodec TokenizerCodec(const data::Tokenizer& tokenizer);
// One id per byte (vocab 256), no special tokens: for tests and tokenizer-free runs.
TextCodec ByteCodec();

// ---- sampling ----

inline constexpr uint64_t kSamplingStream = 0x5341000000000001ull;  // Philox stream of sampling
inline constexpr uint64_t kPasskeyStream = 0x5041000000000000ull;   // + context length

struct SamplingOptions {
  double temperature = 0.0;  // 0: greedy (argmax)
  double top_p = 1.0;        // nucleus: smallest set of most likely tokens with mass >= top_p
  uint64_t seed = 0;
};

// Index of the largest value (the lowest index among ties).
int64_t Argmax(const std::vector<float>& logits);
// Token ids of the nucleus of a distribution: ids by decreasing probability (ties by id), cut
// after the first prefix whose mass reaches top_p (at least one id).
std::vector<int64_t> NucleusIds(const std::vector<double>& probs, double top_p);
// The next token from logits [V]: argmax when temperature is 0, else a draw from
// softmax(logits / temperature) restricted to the nucleus. `draw` indexes the Philox value used
// (the token's position in the generation), so the same seed gives the same tokens.
int64_t SampleToken(const std::vector<float>& logits, const SamplingOptions& options,
                    uint64_t draw);

// ---- streaming inference ----

// Tokens per ForwardStreaming call when `chunk` is 0: the block size (512 for full attention).
int64_t DefaultChunk(const ModelConfig& config);
// Feeds tokens through the model chunk by chunk (chunk 0: DefaultChunk), keeping only the last
// position's logits, which are returned [V]. after_chunk (optional) runs after every chunk.
std::vector<float> StreamTokens(const FamModel& model, const std::vector<int64_t>& tokens,
                                StreamingState& state, int64_t chunk = 0,
                                const std::function<void()>& after_chunk = nullptr);

struct GenerationOptions {
  int64_t max_new_tokens = 64;
  SamplingOptions sampling;
  int64_t stop_token = -1;  // generation ends after producing it; -1: never
  int64_t chunk = 0;        // prompt tokens per ForwardStreaming call (0: DefaultChunk)
};

// Streams the prompt (at least one token) through the model, then produces up to max_new_tokens
// tokens one at a time; on_token (optional) sees each one as it is produced and may return false
// to stop. Memory stays constant in the prompt length for bswa/fam. Returns the new tokens.
std::vector<int64_t> Generate(const FamModel& model, const std::vector<int64_t>& prompt,
                              const GenerationOptions& options,
                              const std::function<bool(int64_t)>& on_token = nullptr);

// Turns a stream of token ids into text pieces to print: each Push returns the text that the new
// token adds (decoding in the context of the previous tokens, so spaces and multi-byte characters
// come out right; an incomplete UTF-8 character is held back until it is complete).
class TextStreamer {
 public:
  TextStreamer(const TextCodec& codec, const std::vector<int32_t>& context);
  std::string Push(int32_t id);
  std::string Flush();  // whatever is still held back

 private:
  std::string Emit(bool final);

  TextCodec codec_;
  std::vector<int32_t> ids_;  // a few context tokens, then the new ones
  size_t context_chars_ = 0;  // decoded length of the context alone
  size_t printed_ = 0;        // characters of the new text already returned
};

// ---- validation perplexity ----

struct PerplexityResult {
  double loss = 0;  // mean next-token cross-entropy (nats)
  double ppl = 0;   // exp(loss)
  int64_t tokens = 0;
  int64_t sequences = 0;  // windows evaluated, or 1 for a streamed stretch
  std::string mode;       // "windows" or "stream"
};

// Cross-entropy summed over the targets of inputs/targets [batch, T] (Forward in inference mode).
double SumCrossEntropy(const FamModel& model, const Tensor& inputs, const Tensor& targets);
// The validation windows of the data loader (seq_len inputs + shifted targets, stream order),
// at most max_windows of them (0: all). Errors name the shards.
absl::StatusOr<PerplexityResult> WindowPerplexity(const FamModel& model,
                                                  const std::string& val_glob, int64_t seq_len,
                                                  int64_t max_windows);
// One stretch of tokens streamed through ForwardStreaming in chunks (constant memory): every token
// after the first is predicted from all before it through the model's memory.
PerplexityResult StreamingPerplexity(const FamModel& model, const std::vector<int64_t>& tokens,
                                     int64_t chunk = 0);
// The first max_tokens tokens (0: all) of the validation shards, checked against the vocabulary.
absl::StatusOr<std::vector<int64_t>> ReadShardTokens(const std::string& glob, int64_t max_tokens,
                                                     int64_t vocab_size);

// ---- PassKey retrieval (FAM_SPEC.md §8) ----

struct PasskeyPrompt {
  std::vector<int64_t> tokens;  // the whole prompt, ending with "... The pass key is"
  int64_t key = 0;              // key_digits digits (no leading zero)
  int64_t key_begin = 0;        // token range of the sentence stating the key
  int64_t key_end = 0;
  int64_t filler_units = 0;  // filler repetitions in total
  int64_t units_before = 0;  // of which before the key
  double depth = 0;          // units_before / filler_units (0 when there is no filler)
};

// The prompt for a target length in tokens: intro, filler with the key sentence at depth `depth`
// (in [0, 1]; negative: a Philox draw in [0, max_depth]), the question. The key and the random
// depth are drawn from (seed, kPasskeyStream + context_tokens, trial); the key has key_digits
// digits (1-9). The length is within one filler repetition below the target; a target shorter
// than the prompt without filler, or key_digits outside 1-9, is an InvalidArgument.
absl::StatusOr<PasskeyPrompt> BuildPasskeyPrompt(const TextCodec& codec, int64_t context_tokens,
                                                 uint64_t seed, int64_t trial, double depth = -1,
                                                 double max_depth = 1.0, int key_digits = 5);
// Shortest prompt (no filler) and tokens per filler repetition for this codec.
int64_t MinPasskeyTokens(const TextCodec& codec);
int64_t PasskeyFillerTokens(const TextCodec& codec);
// The first run of decimal digits in text, without leading zeros ("0" for zeros); nullopt if none.
std::optional<std::string> FirstInteger(std::string_view text);

struct PasskeyOptions {
  std::vector<int64_t> lengths;  // target context lengths in tokens
  int64_t trials = 10;
  int64_t max_new_tokens = 8;
  uint64_t seed = 0;
  int64_t chunk = 0;       // prompt tokens per ForwardStreaming call (0: DefaultChunk)
  double max_depth = 1.0;  // key depths drawn in [0, max_depth] (0: the start of the filler)
  int key_digits = 5;      // digits of each key (1-9)
};

struct PasskeyTrial {
  int64_t key = 0;
  double depth = 0;
  int64_t prompt_tokens = 0;
  std::string answer;  // decoded greedy continuation
  bool correct = false;
};

struct PasskeyLengthResult {
  int64_t context_tokens = 0;  // the target length
  int64_t trials = 0;
  double accuracy = 0;
  double mean_prompt_tokens = 0;
  double rss_before_mb = 0;  // current RSS before the first trial of this length
  double rss_after_mb = 0;   // and after the last
  double rss_max_mb = 0;     // largest current RSS sampled after every chunk
  double peak_rss_mb = 0;    // process peak (ru_maxrss) after this length
  int64_t state_bytes = 0;   // largest streaming state held
  double seconds = 0;
  double tokens_per_s = 0;  // prompt + generated tokens per second
  std::vector<PasskeyTrial> results;
};

// Runs every length's trials with streaming inference and greedy decoding; `log` (optional) gets
// one line per length. A length too short for the prompt is an InvalidArgument.
absl::StatusOr<std::vector<PasskeyLengthResult>> RunPasskey(
    const FamModel& model, const TextCodec& codec, const PasskeyOptions& options,
    const std::function<void(const std::string&)>& log = nullptr);
// Lengths for a model without configured ones: R/2, R, 2R, 4R for the receptive field R
// (layers x (memory_segments + 1) x block_size for bswa/fam, seq_len for full attention).
std::vector<int64_t> DefaultPasskeyLengths(const ModelConfig& config, int64_t seq_len);

// ---- process memory ----
double CurrentRssMb();  // /proc/self/statm resident pages
double PeakRssMb();     // getrusage ru_maxrss (at least the current RSS)

// ---- eval suite (configs/eval/*.yaml) ----

enum class ValMode { kWindows, kStream };

struct EvalSuite {
  std::string name = "default";
  struct Val {
    bool enabled = true;
    ValMode mode = ValMode::kWindows;
    int64_t seq_len = 0;        // windows: 0 = the run's trainer.seq_len
    int64_t max_windows = 0;    // windows: 0 = run eval.val_batches x micro_batch (0 there: all)
    int64_t stream_tokens = 0;  // stream: tokens streamed; 0 = the whole validation set
  } val;
  struct Passkey {
    bool enabled = true;
    std::vector<int64_t> lengths;  // [] = the run's eval.passkey_lengths, else sized for the model
    int64_t trials = 0;            // 0 = the run's eval.passkey_trials
    int64_t max_new_tokens = 0;    // 0 = the run's eval.max_new_tokens (8 without a run)
    int64_t seed = 0;
    int64_t chunk = 0;       // 0 = the block size
    double max_depth = 1.0;  // key depths in [0, max_depth]: < 1 keeps keys far from the question
    int64_t key_digits = 5;  // digits of each key (1-9)
  } passkey;
  bool plots = true;  // PNG plots through scripts/plot_report.sh (needs gnuplot)
};

// Loads a suite file; unknown keys, wrong types and bad values are InvalidArgument naming the
// key with file:line:column.
absl::StatusOr<EvalSuite> LoadEvalSuite(const std::string& path);
absl::StatusOr<EvalSuite> ParseEvalSuite(const std::string& yaml, const std::string& source_name);
// The suite as YAML (every key).
std::string EvalSuiteToYaml(const EvalSuite& suite);

// ---- model loading ----

// Where the model comes from: a checkpoint (directory step-XXXXXXXX, or a run directory / its
// checkpoints folder, meaning the newest valid checkpoint), with the run config two levels up, or
// a model config and a safetensors file. The other fields override what the run config says.
struct ModelSource {
  std::string checkpoint;
  std::string run_config;
  std::string model;    // model YAML (with `weights`)
  std::string weights;  // safetensors
  std::string tokenizer;
  std::string val;
  Device device = Device::CPU();  // where the model runs (loaded on the host, then moved there)
};

struct LoadedModel {
  std::unique_ptr<FamModel> model;
  std::optional<RunConfig> run;  // when a run config was found or given
  std::string checkpoint;        // the checkpoint directory, or the weights file
  std::optional<int64_t> step;   // the checkpoint's step
  std::string run_dir;           // runs/<name> of a checkpoint ("" otherwise)
  std::string tokenizer;         // resolved paths ("" = none); a checkpoint's own tokenizer first
  std::string val;
  bool portable = false;           // the checkpoint carries its own run config
  std::vector<std::string> notes;  // what was left out and why (e.g. validation data not here)
};

// Errors: a corrupt or missing checkpoint is DataLoss/NotFound naming the directory and file; a
// model config that does not match the checkpoint is FailedPrecondition.
absl::StatusOr<LoadedModel> LoadModelForEval(const ModelSource& source);

// ---- the report ----

struct EvalReport {
  std::string checkpoint;
  std::optional<int64_t> step;
  std::optional<PerplexityResult> val;
  std::vector<PasskeyLengthResult> passkey;
  double peak_rss_mb = 0;
  double seconds = 0;
  nlohmann::json model = nlohmann::json::object();  // attention type, sizes, parameter count
  std::string suite;
};

// FORMATS.md "Eval report" plus extra keys ("val" is null when there was no validation data).
nlohmann::json ReportToJson(const EvalReport& report);
// A readable summary (tables of validation and PassKey results).
std::string ReportToMarkdown(const EvalReport& report);
// The train/val loss curves of a run's metrics.jsonl as gnuplot data ("step value" lines).
struct LossCurves {
  std::string train, val;
};
absl::StatusOr<LossCurves> ReadLossCurves(const std::string& metrics_jsonl);

struct ReportFiles {
  std::string json, markdown;
  std::vector<std::string> plots;  // PNG files written
};
// Writes <out> (JSON), <out stem>.md, the plot data <out stem>.*.dat and, when `plots` and gnuplot
// and scripts/plot_report.sh are found, <out stem>.passkey.png and <out stem>.loss.png. Missing
// plot tools are a warning through `warn`, not an error.
absl::StatusOr<ReportFiles> WriteReport(const EvalReport& report, const std::string& out,
                                        const std::string& metrics_jsonl, bool plots,
                                        const std::function<void(const std::string&)>& warn);

// ---- `fam eval` ----

struct EvalRequest {
  ModelSource source;
  std::string suite;  // suite YAML; "" = the default suite
  std::string out;    // report path; "" = <run>/eval/<checkpoint name>.json
  bool plots = true;
};

// Loads the model, runs the suite, writes the report; progress lines go to `log`.
absl::StatusOr<EvalReport> RunEval(const EvalRequest& request, std::ostream& log,
                                   ReportFiles* files = nullptr);

}  // namespace fam::eval
