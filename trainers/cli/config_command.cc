// `fam config`: explain every key, or print a resolved config (base/include/--set applied).
#include <iostream>

#include "trainers/cli/commands.h"
#include "trainers/train/run_config.h"

namespace fam {

Command ConfigCommand() {
  Command c;
  c.name = "config";
  c.synopsis = "--explain | --config <yaml> [--set a.b=c ...]";
  c.summary = "document every config key, or print a config fully resolved";
  c.flags = {{"explain", "print every key with its type, default and meaning", true},
             {"config", "experiment YAML to resolve and print"},
             {"set", "override a key, e.g. --set trainer.steps=100 (repeatable)"},
             {"print-run-dir", "print only the run directory (<run_dir>/<name>)", true}};
  c.run = [](const cli::Args& args) -> absl::Status {
    if (args.GetBool("explain")) {
      std::cout << ExplainConfig();
      return absl::OkStatus();
    }
    if (absl::Status s = args.Require({"config"}); !s.ok()) return s;
    absl::StatusOr<RunConfig> config = LoadRunConfig(args.Get("config"), args.GetAll("set"));
    if (!config.ok()) return config.status();
    if (args.GetBool("print-run-dir")) {
      std::cout << config->RunPath() << "\n";
      return absl::OkStatus();
    }
    std::cout << RunConfigToYaml(*config);
    return absl::OkStatus();
  };
  return c;
}

}  // namespace fam
