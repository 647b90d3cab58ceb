// `fam info --model <yaml>`: parameter count, FLOPs per token, memory estimate.
#include <iostream>

#include "trainers/cli/commands.h"
#include "trainers/cli/model_info.h"
#include "trainers/train/run_config.h"

namespace fam {

Command InfoCommand() {
  Command c;
  c.name = "info";
  c.synopsis = "--model <model.yaml | experiment.yaml> [--batch N] [--seq N] [--bf16] [--adafactor]";
  c.summary = "parameter count, FLOPs per token and memory needed for a model config";
  c.flags = {{"model", "model preset or experiment YAML (configs/models/1b.yaml, ...)"},
             {"batch", "micro-batch (sequences) for the activation estimate (default 1)"},
             {"seq", "sequence length for FLOPs and activations (default 8192)"},
             {"bf16", "bf16 weights/activations with f32 master weights", true},
             {"adafactor", "Adafactor optimizer state instead of AdamW", true}};
  c.run = [](const cli::Args& args) -> absl::Status {
    if (absl::Status s = args.Require({"model"}); !s.ok()) return s;
    absl::StatusOr<ModelConfig> config = LoadModelConfig(args.Get("model"));
    if (!config.ok()) return config.status();
    InfoOptions o;
    absl::StatusOr<int64_t> batch = args.GetInt("batch", 1);
    absl::StatusOr<int64_t> seq = args.GetInt("seq", 8192);
    if (!batch.ok()) return batch.status();
    if (!seq.ok()) return seq.status();
    if (*batch < 1 || *seq < 1) return absl::InvalidArgumentError("fam info: --batch and --seq must be >= 1");
    o.batch = *batch;
    o.seq_len = *seq;
    o.bf16 = args.GetBool("bf16");
    o.adafactor = args.GetBool("adafactor");
    std::cout << ModelInfoReport(*config, o);
    return absl::OkStatus();
  };
  return c;
}

}  // namespace fam
