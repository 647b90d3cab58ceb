// Loading and saving a FamModel's weights as safetensors with FORMATS.md names. Loading checks every
// tensor's name, shape and dtype and reports everything that is missing, unexpected or mis-shaped
// in one message.
#pragma once

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "framework/core/dtype.h"
#include "models/fam/model.h"

namespace fam {

absl::Status LoadModelWeights(FamModel& model, const std::string& path);
// store_as: e.g. DType::kBF16 for export; default keeps the parameters' dtype.
absl::Status SaveModelWeights(const FamModel& model, const std::string& path,
                              std::optional<DType> store_as = std::nullopt);

}  // namespace fam
