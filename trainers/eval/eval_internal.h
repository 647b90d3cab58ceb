// What the evaluation sources (trainers/eval/*.cc) share. Not for callers outside trainers/eval.
#pragma once

#include <filesystem>
#include <system_error>

namespace fam::eval::eval_internal {

inline constexpr double kMiB = 1024.0 * 1024.0;

// Whether `p` exists; an error looking it up counts as no.
inline bool Exists(const std::filesystem::path& p) {
  std::error_code ec;
  return std::filesystem::exists(p, ec);
}

}  // namespace fam::eval::eval_internal
