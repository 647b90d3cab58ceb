#include "models/fam/weights_io.h"

#include <map>
#include <memory>
#include <utility>

#include "framework/io/safetensors.h"
#include "framework/nn/named_tensors.h"

namespace fam {

absl::Status LoadModelWeights(FamModel& model, const std::string& path) {
  absl::StatusOr<std::unique_ptr<io::SafetensorsFile>> file = io::SafetensorsFile::Open(path);
  if (!file.ok()) return file.status();
  std::map<std::string, Tensor> tensors;
  for (const std::string& name : (*file)->names()) {
    absl::StatusOr<Tensor> tensor = (*file)->Load(name);  // zero-copy; keeps the mapping alive
    if (!tensor.ok()) return tensor.status();
    tensors[name] = *std::move(tensor);
  }
  nn::CopyNamedTensorsOptions options;
  options.require_floating = true;
  return nn::CopyNamedTensors(model.NamedParameters(), tensors, path, options);
}

absl::Status SaveModelWeights(const FamModel& model, const std::string& path,
                              std::optional<DType> store_as) {
  std::map<std::string, std::string> metadata = {{"format", "pt"}, {"producer", "famtrain"}};
  return io::WriteSafetensors(path, model.NamedParameters(), metadata, store_as);
}

}  // namespace fam
