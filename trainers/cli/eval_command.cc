// `fam eval`: validation perplexity and PassKey retrieval of a checkpoint (or of safetensors
// weights), written as report JSON (FORMATS.md), markdown and PNG plots. See
// trainers/eval/evaluate.h.
#include <iostream>

#include "trainers/cli/commands.h"
#include "trainers/eval/evaluate.h"

namespace fam {

Command EvalCommand() {
  Command c;
  c.name = "eval";
  c.synopsis =
      "--checkpoint <runs/NAME/checkpoints/step-N> [--config configs/eval/SUITE.yaml] "
      "[--out report.json]\n       fam eval --model <model.yaml> --weights <file.safetensors> "
      "--tokenizer <tokenizer.json | .model> --val <shards> --out report.json";
  c.summary = "validation perplexity + PassKey retrieval; report JSON, markdown and plots";
  c.flags = {
      {"checkpoint", "checkpoint directory (or a run directory: its newest valid checkpoint)"},
      {"run-config", "run config (default: the checkpoint's own config.yaml, else the run's)"},
      {"model", "model YAML, with --weights instead of --checkpoint"},
      {"weights", "safetensors weights (FORMATS.md names), with --model"},
      {"tokenizer",
       "tokenizer (.model or tokenizer.json) for PassKey (default: the checkpoint's copy, else "
       "data.tokenizer, else the one beside --weights)"},
      {"val", "validation shards, path or glob (default: the run's data.val)"},
      {"config", "eval suite YAML (configs/eval/); default: the built-in default suite"},
      {"out", "report JSON (default: <run>/eval/<checkpoint>.json); .md and plots next to it"},
      {"no-plots", "do not write PNG plots", /*is_bool=*/true},
      {"device", "where the model runs: cpu (default), cuda or cuda:N"}};
  c.run = [](const cli::Args& args) -> absl::Status {
    eval::EvalRequest request;
    request.source.checkpoint = args.Get("checkpoint");
    request.source.run_config = args.Get("run-config");
    request.source.model = args.Get("model");
    request.source.weights = args.Get("weights");
    request.source.tokenizer = args.Get("tokenizer");
    request.source.val = args.Get("val");
    absl::StatusOr<Device> device = args.GetDevice("device", Device::CPU());
    if (!device.ok()) return device.status();
    request.source.device = *device;
    request.suite = args.Get("config");
    request.out = args.Get("out");
    request.plots = !args.GetBool("no-plots");
    absl::StatusOr<eval::EvalReport> report = eval::RunEval(request, std::cout);
    return report.status();
  };
  return c;
}

}  // namespace fam
