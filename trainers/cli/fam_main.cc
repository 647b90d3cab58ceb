// `fam`: the famtrain command-line tool. Dispatches to the subcommands of trainers/cli/commands.h.
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <string>

#include "absl/strings/str_cat.h"
#include "framework/core/error.h"
#include "framework/core/printable_text.h"
#include "framework/dist/collective_helpers.h"
#include "framework/dist/env.h"
#include "trainers/cli/commands.h"

namespace {

void PrintHelp(const std::vector<fam::Command>& commands) {
  std::cout << "fam — train and evaluate TransformerFAM (Feedback Attention Memory) models\n\n"
               "usage: fam <command> [flags]     fam <command> --help for its flags\n\ncommands:\n";
  for (const fam::Command& c : commands)
    std::cout << "  " << c.name << std::string(c.name.size() < 14 ? 14 - c.name.size() : 2, ' ')
              << c.summary << "\n";
  std::cout << "\nExit codes: 0 ok, 2 bad input or config, 1 runtime failure.\n"
               "Docs: README.md, docs/, configs/reference.yaml.\n";
}

// Prints a failed command's error as one line on stderr and returns the exit code (0 when OK).
// Under mpirun the job prints one line, not one per rank: errors the ranks agreed on are printed by
// the rank that failed first (dist::AgreeOnStatus), and errors every rank meets alike (a bad flag)
// by rank 0 alone. Bytes from files quoted in a message are escaped for the terminal.
int ReportError(const absl::Status& status, bool same_on_every_rank) {
  if (status.ok()) return 0;
  const int code = fam::cli::ExitCode(status);
  if (fam::dist::ReportedByAnotherRank(status)) return code;
  if (same_on_every_rank) {
    absl::StatusOr<fam::dist::DistEnv> env = fam::dist::DiscoverEnv();
    if (env.ok() && env->rank != 0) return code;
  }
  std::cerr << "error: " << fam::EscapeNonPrintable(std::string(status.message())) << "\n";
  return code;
}

}  // namespace

// OpenMP threads that busy-wait at barriers lose badly when the machine is shared (measured on 2
// cores with other work running: 181 vs 1800 tok/s for the tiny model). libgomp reads its settings
// before main(), so when the user has not chosen a wait policy we restart once with PASSIVE. Set
// OMP_WAIT_POLICY=ACTIVE yourself on a dedicated machine.
void EnsurePassiveOpenMpWait(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  execv("/proc/self/exe", argv);  // returns only on failure: then carry on as we are
}

int main(int argc, char** argv) {
  EnsurePassiveOpenMpWait(argv);
  std::vector<fam::Command> commands = fam::AllCommands();
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h" ||
      std::string(argv[1]) == "help") {
    PrintHelp(commands);
    return argc < 2 ? 2 : 0;
  }
  const std::string name = std::string(argv[1]) == "--version" ? "version" : argv[1];
  for (const fam::Command& c : commands) {
    if (c.name != name) continue;
    for (int i = 2; i < argc; ++i) {
      std::string a = argv[i];
      if (a == "--help" || a == "-h") {
        std::cout << fam::cli::CommandUsage(c.name, c.synopsis, c.flags);
        return 0;
      }
    }
    absl::StatusOr<fam::cli::Args> args = fam::cli::Args::Parse(c.name, c.flags, argc, argv, 2);
    if (!args.ok()) return ReportError(args.status(), /*same_on_every_rank=*/true);
    absl::Status result;
    absl::Status thrown = fam::CatchToStatus([&] { result = c.run(*args); });
    return ReportError(thrown.ok() ? result : thrown, /*same_on_every_rank=*/false);
  }
  return ReportError(absl::InvalidArgumentError(
                         absl::StrCat("unknown command \"", name, "\" (fam --help lists them)")),
                     /*same_on_every_rank=*/true);
}
