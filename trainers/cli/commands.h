// The `fam` subcommands. Each command lives in its own trainers/*_command.cc file and is listed by
// AllCommands(); fam_main.cc dispatches on the first argument.
#pragma once

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "trainers/cli/cli.h"

namespace fam {

struct Command {
  std::string name;
  std::string synopsis;  // argument summary for the usage line
  std::string summary;   // one line for `fam --help`
  std::vector<cli::FlagSpec> flags;
  std::function<absl::Status(const cli::Args&)> run;
};

Command InfoCommand();
Command ForwardCommand();
Command ConfigCommand();
Command TrainCommand();
Command PrepareDataCommand();
Command PrepareInstructionsCommand();
Command EvalCommand();
Command GenerateCommand();
Command ImportCommand();
Command ExportCommand();
Command SweepCommand();
Command NightlyCommand();
Command PlanCommand();
Command VersionCommand();
std::vector<Command> AllCommands();
// The lines of `fam version`: (what, description) pairs, build first, then CPU, libraries, GPUs.
std::vector<std::pair<std::string, std::string>> VersionReport();

// Reads whitespace-separated token ids; errors name the bad token and its index.
absl::StatusOr<std::vector<int64_t>> ReadTokenIds(const std::string& path);

}  // namespace fam
