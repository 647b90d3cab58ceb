// Command-line plumbing for `fam`: a small per-command flag parser (--name=value or --name value,
// repeated flags allowed) that rejects unknown flags by name, and the mapping from absl::Status to
// exit codes (2: bad input or config, 1: runtime failure).
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "framework/core/device.h"
#include "framework/core/error.h"

namespace fam::cli {

struct FlagSpec {
  std::string name;
  std::string help;
  bool is_bool = false;  // --name alone means true
};

class Args {
 public:
  // Parses argv[first..] against the command's flags; unknown flags and missing values are errors.
  static absl::StatusOr<Args> Parse(const std::string& command, const std::vector<FlagSpec>& specs,
                                    int argc, char** argv, int first);
  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  std::string Get(const std::string& name, const std::string& fallback = "") const;
  std::vector<std::string> GetAll(const std::string& name) const;
  absl::StatusOr<int64_t> GetInt(const std::string& name, int64_t fallback) const;
  absl::StatusOr<double> GetDouble(const std::string& name, double fallback) const;
  // cpu, cuda or cuda:N (Device::Parse); the fallback when the flag is absent.
  absl::StatusOr<Device> GetDevice(const std::string& name, Device fallback) const;
  bool GetBool(const std::string& name) const;
  // An error unless every listed flag is present.
  absl::Status Require(const std::vector<std::string>& names) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::string command_;
  std::map<std::string, std::vector<std::string>> values_;
  std::vector<std::string> positional_;
};

// Usage text of one command from its specs.
std::string CommandUsage(const std::string& command, const std::string& synopsis,
                         const std::vector<FlagSpec>& specs);
// 2 for bad input, 1 for other failures, 0 for OK (framework/core/error.h).
using ::fam::ExitCode;

}  // namespace fam::cli
