// `fam`: the famtrain command-line tool. Dispatches to the subcommands of trainers/commands.h.
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <string>

#include "framework/core/error.h"
#include "trainers/commands.h"

namespace {

void PrintHelp(const std::vector<fam::Command>& commands) {
  std::cout << "fam — train and evaluate TransformerFAM (Feedback Attention Memory) models\n\n"
               "usage: fam <command> [flags]     fam <command> --help for its flags\n\ncommands:\n";
  for (const fam::Command& c : commands) std::cout << "  " << c.name << std::string(c.name.size() < 14 ? 14 - c.name.size() : 2, ' ') << c.summary << "\n";
  std::cout << "\nExit codes: 0 ok, 2 bad input or config, 1 runtime failure.\n"
               "Docs: README.md, docs/, configs/reference.yaml.\n";
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
  const std::string name = argv[1];
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
    absl::Status status = args.ok() ? fam::CatchToStatus([&] { fam::ThrowIfError(c.run(*args)); })
                                    : args.status();
    if (!status.ok()) {
      std::cerr << "error: " << status.message() << "\n";
      return fam::cli::ExitCode(status);
    }
    return 0;
  }
  std::cerr << "error: unknown command \"" << name << "\" (fam --help lists them)\n";
  return 2;
}
