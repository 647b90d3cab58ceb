// `fam nightly --runs <runs folder>`: the nightly evaluation job behind scripts/nightly_eval.sh.
// Evaluates new checkpoints, appends the results to a history file, writes a dashboard with trend
// plots, and fails (exit code 1) naming every metric that regressed past its threshold against
// the previous night. See trainers/experiments/nightly.h and docs/evaluation.md.
#include <iostream>

#include "trainers/cli/commands.h"
#include "trainers/experiments/nightly.h"

namespace fam {

Command NightlyCommand() {
  Command c;
  c.name = "nightly";
  c.synopsis =
      "--runs <runs folder> [--suite configs/eval/SUITE.yaml ...] "
      "[--threshold metric=limit ...] [--out <dashboard folder>]";
  c.summary = "nightly eval of new checkpoints: history, dashboard, exit 1 on regressions";
  c.flags = {
      {"runs", "folder of run directories (searched 3 levels deep), or one run directory"},
      {"suite", "eval suite YAML (repeatable); default: the built-in default suite"},
      {"out", "dashboard folder (default: <runs>/nightly)"},
      {"history", "history JSONL file (default: <out>/history.jsonl)"},
      {"threshold",
       "metric=limit (repeatable): val.loss / val.ppl / peak_rss_mb / seconds as relative "
       "increases (0.02 = +2%), passkey[.<tokens>] as an accuracy drop (0.1); off = not checked. "
       "Defaults: val.loss=0.02 passkey=0.1"},
      {"reeval", "evaluate checkpoints already in the history again", /*is_bool=*/true},
      {"no-plots", "do not write PNG plots", /*is_bool=*/true}};
  c.run = [](const cli::Args& args) -> absl::Status {
    if (absl::Status s = args.Require({"runs"}); !s.ok()) return s;
    nightly::NightlyOptions options;
    options.runs_dir = args.Get("runs");
    options.suites = args.GetAll("suite");
    options.out_dir = args.Get("out");
    options.history = args.Get("history");
    options.reeval = args.GetBool("reeval");
    options.plots = !args.GetBool("no-plots");
    for (const std::string& spec : args.GetAll("threshold"))
      if (absl::Status s = nightly::ParseThreshold(spec, &options.thresholds); !s.ok()) return s;
    absl::StatusOr<nightly::NightlyResult> result = nightly::RunNightly(options, std::cout);
    if (!result.ok()) return result.status();
    return nightly::NightlyStatus(*result);
  };
  return c;
}

}  // namespace fam
