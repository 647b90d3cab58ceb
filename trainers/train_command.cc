// `fam train --config <yaml> [--set a.b=c ...]`: pretraining (and, later, fine-tuning) from a config.
#include <cmath>
#include <iostream>

#include "absl/strings/str_format.h"
#include "trainers/commands.h"
#include "trainers/pretrain.h"
#include "trainers/run_config.h"

namespace fam {

Command TrainCommand() {
  Command c;
  c.name = "train";
  c.synopsis = "--config <experiment.yaml> [--set key=value ...]";
  c.summary = "train a model from a YAML config (resumes from the newest valid checkpoint)";
  c.flags = {{"config", "experiment YAML (see configs/experiments/, configs/reference.yaml)"},
             {"set", "override a config key, e.g. --set trainer.steps=100 (repeatable)"}};
  c.run = [](const cli::Args& args) -> absl::Status {
    if (absl::Status s = args.Require({"config"}); !s.ok()) return s;
    absl::StatusOr<RunConfig> config = LoadRunConfig(args.Get("config"), args.GetAll("set"));
    if (!config.ok()) return config.status();
    absl::StatusOr<TrainResult> result = RunTraining(*config);
    if (!result.ok()) return result.status();
    std::cout << absl::StrFormat("done: step %d, train loss %.4f", result->final_step,
                                 result->last_train_loss);
    if (result->first_val_loss >= 0)
      std::cout << absl::StrFormat(", val loss %.4f → %.4f (ppl %.1f → %.1f)", result->first_val_loss,
                                   result->last_val_loss, std::exp(result->first_val_loss),
                                   std::exp(result->last_val_loss));
    std::cout << "\ncheckpoint: " << result->last_checkpoint << "\n";
    if (result->interrupted) std::cout << "(interrupted by a signal; rerun the same command to resume)\n";
    return absl::OkStatus();
  };
  return c;
}

}  // namespace fam
