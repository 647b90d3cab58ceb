// `fam prepare-instructions`: instruction JSONL → token shards + loss-weight shards + data.json,
// packed into training windows (framework/data/instructions.h). With --config, the run config's
// trainer.seq_len, data.tokenizer, trainer.seed and finetune.{repeat_tokens, loss_weights} are the
// defaults; flags win.
#include <iostream>

#include "framework/data/instructions.h"
#include "trainers/cli/commands.h"
#include "trainers/train/run_config.h"

namespace fam {

Command PrepareInstructionsCommand() {
  Command c;
  c.name = "prepare-instructions";
  c.synopsis =
      "--input <data.jsonl> [--input ...] --tokenizer <tokenizer.json | .model> --out <dir> "
      "--seq-len N "
      "[--config <run.yaml>]";
  c.summary = "pack instruction JSONL into token shards with per-token loss weights";
  c.flags = {
      {"input",
       "JSONL file: {\"segments\": [{\"text\", \"role\", \"weight\"?}]} or "
       "{\"prompt\", \"response\"} per line (repeatable)"},
      {"tokenizer",
       "SentencePiece .model or tokenizer.json (default with --config: data.tokenizer)"},
      {"out", "output directory (the tokenizer, train-*.bin/.weights, val-*, data.json)"},
      {"seq-len", "training sequence length (default with --config: trainer.seq_len)"},
      {"config", "run config whose trainer/finetune settings give the defaults"},
      {"boundary-slack",
       "an example does not start in the last N tokens of a window unless it "
       "fits there (default clamp(seq_len/16, 1, 64))"},
      {"repeat-tokens", "tokens of the \"[repeat random segment]:\" copy; 0 = none (default 256)"},
      {"instruction-weight", "loss weight of instruction segments (default 0)"},
      {"answer-weight", "loss weight of answer segments (default 1)"},
      {"repeat-weight", "loss weight of the repeat copy (default 0.1)"},
      {"val-fraction", "fraction of examples held out for validation (default 0)"},
      {"shard-tokens", "maximum tokens per shard (default 1e8)"},
      {"seed", "seed of the repeat spans (default 0, or trainer.seed with --config)"}};
  c.run = [](const cli::Args& args) -> absl::Status {
    if (absl::Status s = args.Require({"input", "out"}); !s.ok()) return s;
    data::PrepareInstructionsOptions o;
    if (args.Has("config")) {
      absl::StatusOr<RunConfig> config = LoadRunConfig(args.Get("config"));
      if (!config.ok()) return config.status();
      o.seq_len = config->trainer.seq_len;
      o.tokenizer = config->data.tokenizer;
      o.seed = static_cast<uint64_t>(config->trainer.seed);
      o.repeat_tokens = config->finetune.repeat_tokens;
      o.weights.instruction = config->finetune.loss_weights.instruction;
      o.weights.answer = config->finetune.loss_weights.answer;
      o.weights.repeat = config->finetune.loss_weights.repeat;
    } else if (absl::Status s = args.Require({"tokenizer", "seq-len"}); !s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(s.message(), " (or give --config <run.yaml>)"));
    }
    o.inputs = args.GetAll("input");
    o.out_dir = args.Get("out");
    o.tokenizer = args.Get("tokenizer", o.tokenizer);
    absl::StatusOr<int64_t> seq_len = args.GetInt("seq-len", o.seq_len);
    absl::StatusOr<int64_t> slack = args.GetInt("boundary-slack", o.boundary_slack);
    absl::StatusOr<int64_t> repeat = args.GetInt("repeat-tokens", o.repeat_tokens);
    absl::StatusOr<double> wi = args.GetDouble("instruction-weight", o.weights.instruction);
    absl::StatusOr<double> wa = args.GetDouble("answer-weight", o.weights.answer);
    absl::StatusOr<double> wr = args.GetDouble("repeat-weight", o.weights.repeat);
    absl::StatusOr<double> val = args.GetDouble("val-fraction", o.val_fraction);
    absl::StatusOr<int64_t> shard = args.GetInt("shard-tokens", o.shard_tokens);
    absl::StatusOr<int64_t> seed = args.GetInt("seed", static_cast<int64_t>(o.seed));
    for (const absl::Status& s :
         {seq_len.status(), slack.status(), repeat.status(), wi.status(), wa.status(), wr.status(),
          val.status(), shard.status(), seed.status()}) {
      if (!s.ok()) return s;
    }
    o.seq_len = *seq_len;
    o.boundary_slack = *slack;
    o.repeat_tokens = *repeat;
    o.weights = {*wi, *wa, *wr};
    o.val_fraction = *val;
    o.shard_tokens = *shard;
    o.seed = static_cast<uint64_t>(*seed);
    o.log = [](const std::string& line) { std::cout << line << "\n"; };
    absl::StatusOr<data::InstructionDataSummary> summary = data::PrepareInstructions(o);
    return summary.status();
  };
  return c;
}

}  // namespace fam
