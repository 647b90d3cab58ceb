#include "trainers/cli/commands.h"

#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace fam {

std::vector<Command> AllCommands() { return {PrepareDataCommand(), PrepareInstructionsCommand(), TrainCommand(), EvalCommand(), GenerateCommand(), InfoCommand(), PlanCommand(), ForwardCommand(), ImportCommand(), ExportCommand(), ConfigCommand(), SweepCommand(), NightlyCommand(), VersionCommand()}; }

absl::StatusOr<std::vector<int64_t>> ReadTokenIds(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open token file"));
  std::vector<int64_t> ids;
  std::string word;
  while (in >> word) {
    int64_t id;
    if (!absl::SimpleAtoi(word, &id))
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": token ", ids.size(), " is not an integer: \"", word, "\""));
    ids.push_back(id);
  }
  if (ids.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no token ids"));
  return ids;
}

}  // namespace fam
