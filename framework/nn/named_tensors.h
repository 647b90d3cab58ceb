// Copying named tensors (a checkpoint's, a weights file's, an adapter file's) into the tensors they
// are meant for, usually a model's NamedParameters(): every name and shape is checked first, and
// nothing is copied unless all of them fit.
#pragma once

#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "framework/core/tensor.h"

namespace fam::nn {

struct CopyNamedTensorsOptions {
  enum class Report {
    // One InvalidArgument naming everything that does not fit: "<source>: <mismatch> (missing: a,
    // b; wrong shape: c [2, 3] (expected [3, 2]); not floating: d i32; unexpected: e)".
    kList,
    // The first misfit in target order, as a restored checkpoint reports it: a missing tensor is
    // DataLoss "<source>: model tensor a is missing", another shape FailedPrecondition "<source>:
    // c has shape [2, 3], the model expects [3, 2]"; a dtype that is not floating is
    // FailedPrecondition, an unexpected name InvalidArgument.
    kFirst,
  };
  Report report = Report::kList;
  // What kList says does not match.
  std::string mismatch = "weights do not match the model config";
  // Targets that may be absent from the source: they keep their values.
  std::set<std::string> may_be_missing;
  // Source names that may have no target: they are skipped.
  std::set<std::string> may_be_unexpected;
  // Every source name that is no target is skipped instead of reported.
  bool allow_unexpected = false;
  // Source tensors must have a floating dtype (the copy converts between floating dtypes).
  bool require_floating = false;
};

// Checks `source` against `targets` (name → tensor, e.g. NamedParameters()) and, when everything
// fits, copies each source tensor into the target of its name (no autograd history; any devices).
// `source_label` (a file or checkpoint path) begins every error message.
absl::Status CopyNamedTensors(const std::vector<std::pair<std::string, Tensor>>& targets,
                              const std::map<std::string, Tensor>& source,
                              const std::string& source_label,
                              const CopyNamedTensorsOptions& options = {});

}  // namespace fam::nn
