#include "framework/nn/named_tensors.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "framework/autograd/node.h"
#include "framework/core/dtype.h"
#include "framework/core/error.h"
#include "framework/core/shape.h"
#include "framework/ops/ops.h"

namespace fam::nn {

absl::Status CopyNamedTensors(const std::vector<std::pair<std::string, Tensor>>& targets,
                              const std::map<std::string, Tensor>& source,
                              const std::string& source_label,
                              const CopyNamedTensorsOptions& options) {
  const bool first = options.report == CopyNamedTensorsOptions::Report::kFirst;
  std::vector<std::string> missing, misshaped, not_floating, unexpected;
  for (const auto& [name, target] : targets) {
    auto it = source.find(name);
    if (it == source.end()) {
      if (options.may_be_missing.count(name) > 0) continue;
      if (first) {
        return absl::DataLossError(
            absl::StrCat(source_label, ": model tensor ", name, " is missing"));
      }
      missing.push_back(name);
      continue;
    }
    const Tensor& value = it->second;
    if (value.shape() != target.shape()) {
      if (first) {
        return absl::FailedPreconditionError(
            absl::StrCat(source_label, ": ", name, " has shape ", ShapeString(value.shape()),
                         ", the model expects ", ShapeString(target.shape())));
      }
      misshaped.push_back(absl::StrCat(name, " ", ShapeString(value.shape()), " (expected ",
                                       ShapeString(target.shape()), ")"));
    }
    if (options.require_floating && !IsFloating(value.dtype())) {
      if (first) {
        return absl::FailedPreconditionError(absl::StrCat(
            source_label, ": ", name, " is ", DTypeName(value.dtype()), ", not floating"));
      }
      not_floating.push_back(absl::StrCat(name, " ", DTypeName(value.dtype())));
    }
  }
  if (!options.allow_unexpected) {
    std::set<std::string> known;
    for (const auto& [name, target] : targets) known.insert(name);
    for (const auto& [name, value] : source) {
      if (known.count(name) > 0 || options.may_be_unexpected.count(name) > 0) continue;
      if (first) {
        return absl::InvalidArgumentError(absl::StrCat(source_label, ": unexpected tensor ", name));
      }
      unexpected.push_back(name);
    }
  }
  std::vector<std::string> parts;
  if (!missing.empty()) parts.push_back(absl::StrCat("missing: ", absl::StrJoin(missing, ", ")));
  if (!misshaped.empty()) {
    parts.push_back(absl::StrCat("wrong shape: ", absl::StrJoin(misshaped, ", ")));
  }
  if (!not_floating.empty()) {
    parts.push_back(absl::StrCat("not floating: ", absl::StrJoin(not_floating, ", ")));
  }
  if (!unexpected.empty()) {
    parts.push_back(absl::StrCat("unexpected: ", absl::StrJoin(unexpected, ", ")));
  }
  if (!parts.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source_label, ": ", options.mismatch, " (", absl::StrJoin(parts, "; "), ")"));
  }
  return CatchToStatus([&] {
    NoGradGuard no_grad;
    for (const auto& [name, target] : targets) {
      auto it = source.find(name);
      if (it != source.end()) ops::CopyInPlace(target, it->second);
    }
  });
}

}  // namespace fam::nn
