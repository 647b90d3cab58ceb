#include "trainers/train/trainer_progress.h"

#include <cmath>
#include <limits>
#include <optional>

#include "absl/strings/str_cat.h"

namespace fam {
namespace {

using Json = nlohmann::json;

class ProgressReader {
 public:
  ProgressReader(const Json& state, const std::string& path) : state_(state), path_(path) {}

  absl::Status Error(const std::string& key, const std::string& what) const {
    return absl::DataLossError(absl::StrCat(path_, "/trainer_state.json: ", key, " ", what));
  }
  // A required integer in [0, max] at state[section][key] (section empty: the top level).
  absl::StatusOr<int64_t> Count(const std::string& section, const std::string& key,
                                int64_t max = std::numeric_limits<int64_t>::max()) const {
    const std::string name = section.empty() ? key : absl::StrCat(section, ".", key);
    const Json* parent = &state_;
    if (!section.empty()) {
      if (!state_.contains(section) || !state_[section].is_object())
        return Error(section, "is missing or not an object");
      parent = &state_[section];
    }
    if (!parent->contains(key)) return Error(name, "is missing");
    const Json& value = (*parent)[key];
    if (value.is_number_unsigned()) {
      if (value.get<uint64_t>() > static_cast<uint64_t>(max)) return Error(name, "is too large");
      return static_cast<int64_t>(value.get<uint64_t>());
    }
    if (!value.is_number_integer() || value.get<int64_t>() < 0)
      return Error(name, "is not a non-negative integer");
    if (value.get<int64_t>() > max) return Error(name, "is too large");
    return value.get<int64_t>();
  }
  // A finite number (required or optional: then `fallback` when absent).
  absl::StatusOr<double> Number(const std::string& key, std::optional<double> fallback) const {
    if (!state_.contains(key)) {
      if (fallback) return *fallback;
      return Error(key, "is missing");
    }
    const Json& value = state_[key];
    if (!value.is_number() || !std::isfinite(value.get<double>()))
      return Error(key, "is not a finite number");
    return value.get<double>();
  }

 private:
  const Json& state_;
  const std::string& path_;
};

}  // namespace

absl::StatusOr<TrainerProgress> ParseTrainerProgress(const Json& state, const std::string& path) {
  const ProgressReader reader(state, path);
  if (!state.is_object()) return reader.Error("the top level", "is not an object");
  TrainerProgress p;
  absl::StatusOr<int64_t> step = reader.Count("", "step");
  if (!step.ok()) return step.status();
  absl::StatusOr<int64_t> tokens = reader.Count("", "tokens_seen");
  if (!tokens.ok()) return tokens.status();
  absl::StatusOr<int64_t> skips =
      reader.Count("", "consecutive_skips", std::numeric_limits<int>::max());
  if (!skips.ok()) return skips.status();
  absl::StatusOr<double> elapsed = reader.Number("elapsed_s", std::nullopt);
  if (!elapsed.ok()) return elapsed.status();
  if (*elapsed < 0) return reader.Error("elapsed_s", "is negative");
  absl::StatusOr<int64_t> epoch = reader.Count("loader", "epoch");
  if (!epoch.ok()) return epoch.status();
  absl::StatusOr<int64_t> consumed = reader.Count("loader", "samples_consumed");
  if (!consumed.ok()) return consumed.status();
  p.step = *step;
  p.tokens_seen = *tokens;
  p.consecutive_skips = static_cast<int>(*skips);
  p.elapsed_s = *elapsed;
  p.loader.epoch = *epoch;
  p.loader.samples_consumed = *consumed;
  for (auto [key, out] : {std::pair{"first_val_loss", &p.first_val_loss},
                          std::pair{"last_val_loss", &p.last_val_loss},
                          std::pair{"last_train_loss", &p.last_train_loss}}) {
    absl::StatusOr<double> loss = reader.Number(key, -1.0);
    if (!loss.ok()) return loss.status();
    *out = *loss;
  }
  return p;
}

}  // namespace fam
