// The trainer's progress as trainer_state.json records it in a checkpoint (FORMATS.md): step,
// tokens seen, the skip counter, elapsed time, the data loader's position and the last losses.
// Reading checks every field's type and range, so a damaged or hand-edited file is an error
// naming the file and the key rather than a wrapped-around counter.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "framework/data/loader.h"
#include "nlohmann/json.hpp"

namespace fam {

struct TrainerProgress {
  int64_t step = 0;
  int64_t tokens_seen = 0;
  int consecutive_skips = 0;
  double elapsed_s = 0;
  data::LoaderState loader;
  // Negative: not recorded.
  double first_val_loss = -1, last_val_loss = -1, last_train_loss = -1;
};

// `state` is the parsed trainer_state.json of the checkpoint directory `path`. DataLoss errors
// name <path>/trainer_state.json and the key.
absl::StatusOr<TrainerProgress> ParseTrainerProgress(const nlohmann::json& state,
                                                     const std::string& path);

}  // namespace fam
