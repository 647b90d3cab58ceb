// `fam generate`: streaming text generation from a checkpoint (or safetensors weights) with
// constant memory: the prompt goes through the model block by block, then tokens are sampled one
// at a time (greedy at temperature 0, else temperature + top-p from a seeded Philox stream) and
// printed as they are produced.
#include <cstdio>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "framework/core/error.h"
#include "framework/data/tokenizer.h"
#include "framework/metrics/metrics.h"
#include "trainers/cli/commands.h"
#include "trainers/eval/evaluate.h"

namespace fam {

Command GenerateCommand() {
  Command c;
  c.name = "generate";
  c.synopsis =
      "--checkpoint <dir> --prompt \"text\" [--max-new-tokens N] [--temperature T] [--top-p P] "
      "[--seed S]";
  c.summary = "stream generated text from a checkpoint (constant memory)";
  c.flags = {
      {"checkpoint", "checkpoint directory (or a run directory: its newest valid checkpoint)"},
      {"run-config", "run config (default: the checkpoint's own config.yaml, else the run's)"},
      {"model", "model YAML, with --weights instead of --checkpoint"},
      {"weights", "safetensors weights (FORMATS.md names), with --model"},
      {"tokenizer",
       "tokenizer (.model or tokenizer.json; default: the checkpoint's copy, else "
       "data.tokenizer, else the one beside --weights)"},
      {"prompt", "text to continue (default: empty, a new document)"},
      {"max-new-tokens", "tokens to generate (default 64)"},
      {"temperature", "sampling temperature; 0 = greedy (default 0.8)"},
      {"top-p", "nucleus sampling mass in (0, 1] (default 0.95)"},
      {"seed", "seed of the sampling stream (default 0)"},
      {"ignore-eos", "keep generating after the end-of-document token (and print it)",
       /*is_bool=*/true},
      {"no-echo", "print only the generated text, not the prompt", /*is_bool=*/true},
      {"device", "where the model runs: cpu (default), cuda or cuda:N"}};
  c.run = [](const cli::Args& args) -> absl::Status {
    absl::StatusOr<int64_t> max_new = args.GetInt("max-new-tokens", 64);
    if (!max_new.ok()) return max_new.status();
    absl::StatusOr<double> temperature = args.GetDouble("temperature", 0.8);
    if (!temperature.ok()) return temperature.status();
    absl::StatusOr<double> top_p = args.GetDouble("top-p", 0.95);
    if (!top_p.ok()) return top_p.status();
    absl::StatusOr<int64_t> seed = args.GetInt("seed", 0);
    if (!seed.ok()) return seed.status();
    if (*max_new < 1)
      return absl::InvalidArgumentError(
          absl::StrCat("fam generate: --max-new-tokens must be >= 1, got ", *max_new));
    if (*temperature < 0)
      return absl::InvalidArgumentError(
          absl::StrCat("fam generate: --temperature must be >= 0, got ", *temperature));
    if (!(*top_p > 0 && *top_p <= 1))
      return absl::InvalidArgumentError(
          absl::StrCat("fam generate: --top-p must be in (0, 1], got ", *top_p));

    eval::ModelSource source;
    source.checkpoint = args.Get("checkpoint");
    source.run_config = args.Get("run-config");
    source.model = args.Get("model");
    source.weights = args.Get("weights");
    source.tokenizer = args.Get("tokenizer");
    absl::StatusOr<Device> device = args.GetDevice("device", Device::CPU());
    if (!device.ok()) return device.status();
    source.device = *device;
    absl::StatusOr<eval::LoadedModel> lm = eval::LoadModelForEval(source);
    if (!lm.ok()) return lm.status();
    if (lm->tokenizer.empty())
      return absl::InvalidArgumentError(
          "fam generate: no tokenizer: pass --tokenizer or set data.tokenizer in the run config");
    absl::StatusOr<data::Tokenizer> tok = data::Tokenizer::Load(lm->tokenizer);
    if (!tok.ok()) return tok.status();
    if (tok->vocab_size() > lm->model->config().vocab_size)
      return absl::InvalidArgumentError(absl::StrCat(
          lm->tokenizer, ": the tokenizer has ", tok->vocab_size(),
          " tokens, more than the model's vocab_size ", lm->model->config().vocab_size));
    const eval::TextCodec codec = eval::TokenizerCodec(*tok);

    const std::string prompt_text = args.Get("prompt");
    const std::vector<int32_t> prompt_ids = codec.encode(prompt_text);
    std::vector<int64_t> prompt;
    if (codec.doc_start >= 0) prompt.push_back(codec.doc_start);
    prompt.insert(prompt.end(), prompt_ids.begin(), prompt_ids.end());
    if (prompt.empty())
      return absl::InvalidArgumentError(
          "fam generate: empty prompt and the tokenizer has no end-of-document token to start "
          "from");

    eval::GenerationOptions options;
    options.max_new_tokens = *max_new;
    options.sampling.temperature = *temperature;
    options.sampling.top_p = *top_p;
    options.sampling.seed = static_cast<uint64_t>(*seed);
    options.stop_token = args.GetBool("ignore-eos") ? -1 : codec.stop_token;

    if (!args.GetBool("no-echo")) {
      std::fputs(prompt_text.c_str(), stdout);
      std::fflush(stdout);
    }
    eval::TextStreamer streamer(codec, prompt_ids);
    // With --ignore-eos the end-of-document token is part of the output and printed as its text.
    const int32_t hidden_token = args.GetBool("ignore-eos") ? -1 : codec.stop_token;
    int64_t produced = 0;
    Stopwatch clock;
    return CatchToStatus([&] {
      eval::Generate(*lm->model, prompt, options, [&](int64_t id) {
        ++produced;
        if (id != hidden_token) {
          std::fputs(streamer.Push(static_cast<int32_t>(id)).c_str(), stdout);
          std::fflush(stdout);
        }
        return true;
      });
      std::fputs(streamer.Flush().c_str(), stdout);
      std::fputs("\n", stdout);
      std::fflush(stdout);
      std::cerr << absl::StrFormat("[%d prompt tokens, %d generated, %.1f tok/s]\n", prompt.size(),
                                   produced, produced / std::max(clock.Seconds(), 1e-9));
    });
  };
  return c;
}

}  // namespace fam
