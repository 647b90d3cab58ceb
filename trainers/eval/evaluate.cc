#include "trainers/eval/evaluate.h"

#include <filesystem>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "framework/data/tokenizer.h"
#include "framework/metrics/metrics.h"

namespace fam::eval {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

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
