#include "models/fam/weights_io.h"

#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "framework/autograd/node.h"
#include "framework/io/safetensors.h"
#include "framework/ops/ops.h"

namespace fam {

absl::Status LoadModelWeights(FamModel& model, const std::string& path) {
  absl::StatusOr<std::unique_ptr<io::SafetensorsFile>> file = io::SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  std::vector<std::string> missing, misshaped, bad_dtype;
  std::set<std::string> expected;
  auto params = model.NamedParameters();
  for (auto& [name, t] : params) {
    expected.insert(name);
    if (!(*file)->contains(name)) {
      missing.push_back(name);
      continue;
    }
    absl::StatusOr<io::SafetensorsTensorInfo> info = (*file)->Info(name);
    if (!info.ok()) return info.status();
    if (info->shape != t.shape())
      misshaped.push_back(absl::StrCat(name, " ", ShapeString(info->shape), " (expected ",
                                       ShapeString(t.shape()), ")"));
    if (!IsFloating(info->dtype)) bad_dtype.push_back(absl::StrCat(name, " ", DTypeName(info->dtype)));
  }
  std::vector<std::string> unexpected;
  for (const std::string& name : (*file)->names())
    if (!expected.count(name)) unexpected.push_back(name);
  if (!missing.empty() || !misshaped.empty() || !bad_dtype.empty() || !unexpected.empty()) {
    std::vector<std::string> parts;
    if (!missing.empty()) parts.push_back(absl::StrCat("missing: ", absl::StrJoin(missing, ", ")));
    if (!misshaped.empty()) parts.push_back(absl::StrCat("wrong shape: ", absl::StrJoin(misshaped, ", ")));
    if (!bad_dtype.empty()) parts.push_back(absl::StrCat("not floating: ", absl::StrJoin(bad_dtype, ", ")));
    if (!unexpected.empty()) parts.push_back(absl::StrCat("unexpected: ", absl::StrJoin(unexpected, ", ")));
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": weights do not match the model config (", absl::StrJoin(parts, "; "), ")"));
  }
  NoGradGuard no_grad;
  for (auto& [name, t] : params) {
    absl::StatusOr<Tensor> value = (*file)->Load(name);
    if (!value.ok()) return value.status();
    absl::Status s = CatchToStatus([&] { ops::CopyInPlace(t, *value); });
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status SaveModelWeights(const FamModel& model, const std::string& path,
                              std::optional<DType> store_as) {
  std::map<std::string, std::string> metadata = {{"format", "pt"}, {"producer", "famtrain"}};
  return io::WriteSafetensors(path, model.NamedParameters(), metadata, store_as);
}

}  // namespace fam
