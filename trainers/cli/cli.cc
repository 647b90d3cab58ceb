#include "trainers/cli/cli.h"

#include <cstdlib>
#include <optional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace fam::cli {

absl::StatusOr<Args> Args::Parse(const std::string& command, const std::vector<FlagSpec>& specs,
                                 int argc, char** argv, int first) {
  Args args;
  args.command_ = command;
  std::map<std::string, const FlagSpec*> known;
  for (const FlagSpec& s : specs) known[s.name] = &s;
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--", 0) != 0 || a == "--") {
      args.positional_.push_back(a);
      continue;
    }
    std::string name = a.substr(2), value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    auto it = known.find(name);
    if (it == known.end()) {
      std::vector<std::string> names;
      for (const FlagSpec& s : specs) names.push_back("--" + s.name);
      return absl::InvalidArgumentError(absl::StrCat("fam ", command, ": unknown flag --", name,
                                                     " (known: ", absl::StrJoin(names, " "), ")"));
    }
    if (!has_value) {
      if (it->second->is_bool) {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat("fam ", command, ": flag --", name, " needs a value"));
      }
    }
    args.values_[name].push_back(value);
  }
  return args;
}

std::string Args::Get(const std::string& name, const std::string& fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second.back();
}

std::vector<std::string> Args::GetAll(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

absl::StatusOr<int64_t> Args::GetInt(const std::string& name, int64_t fallback) const {
  if (!Has(name)) return fallback;
  int64_t v;
  if (!absl::SimpleAtoi(Get(name), &v))
    return absl::InvalidArgumentError(
        absl::StrCat("fam ", command_, ": --", name, " expects an integer, got \"", Get(name), "\""));
  return v;
}

absl::StatusOr<double> Args::GetDouble(const std::string& name, double fallback) const {
  if (!Has(name)) return fallback;
  double v;
  if (!absl::SimpleAtod(Get(name), &v))
    return absl::InvalidArgumentError(
        absl::StrCat("fam ", command_, ": --", name, " expects a number, got \"", Get(name), "\""));
  return v;
}

absl::StatusOr<Device> Args::GetDevice(const std::string& name, Device fallback) const {
  if (!Has(name)) return fallback;
  std::optional<Device> device = Device::Parse(Get(name));
  if (!device)
    return absl::InvalidArgumentError(absl::StrCat(
        "fam ", command_, ": --", name, " expects cpu, cuda or cuda:N, got \"", Get(name), "\""));
  return *device;
}

bool Args::GetBool(const std::string& name) const {
  std::string v = Get(name, "false");
  return v == "true" || v == "1" || v == "yes";
}

absl::Status Args::Require(const std::vector<std::string>& names) const {
  for (const std::string& n : names)
    if (!Has(n))
      return absl::InvalidArgumentError(absl::StrCat("fam ", command_, ": missing --", n));
  return absl::OkStatus();
}

std::string CommandUsage(const std::string& command, const std::string& synopsis,
                         const std::vector<FlagSpec>& specs) {
  std::string out = absl::StrCat("usage: fam ", command, " ", synopsis, "\n");
  for (const FlagSpec& s : specs)
    absl::StrAppendFormat(&out, "  --%-18s %s\n", s.name + (s.is_bool ? "" : " X"), s.help);
  return out;
}

}  // namespace fam::cli
