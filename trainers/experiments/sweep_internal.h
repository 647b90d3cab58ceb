// What the sweep sources (sweep_spec.cc, sweep.cc, sweep_summary.cc) share. Not for callers
// outside trainers/experiments/sweep*.cc.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <system_error>

#include "nlohmann/json.hpp"

namespace fam::sweep::sweep_internal {

// Whether `p` exists; an error looking it up counts as no.
inline bool Exists(const std::filesystem::path& p) {
  std::error_code ec;
  return std::filesystem::exists(p, ec);
}

// The JSON object in the file at `path`; nullopt when it cannot be read or is not an object.
std::optional<nlohmann::json> ReadJsonFile(const std::string& path);

}  // namespace fam::sweep::sweep_internal
