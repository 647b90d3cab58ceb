// Fuzz targets of the tensor file readers: safetensors, .npy and GGUF (with `fam import --gguf`).
#include <string>
#include <string_view>

#include "framework/io/gguf.h"
#include "framework/io/npy.h"
#include "framework/io/safetensors.h"
#include "fuzz/fuzz_target.h"
#include "fuzz/targets.h"
#include "models/fam/gguf_import.h"

namespace fam::fuzz {
namespace {

// Every tensor's bytes are read: the zero-copy view and, for floating tensors, the f32 copy.
void TouchTensor(const Tensor& tensor) {
  if (tensor.numel() == 0) return;
  volatile uint8_t sink = 0;
  const auto* bytes = static_cast<const uint8_t*>(tensor.raw_data());
  const size_t n = tensor.nbytes();
  for (size_t i = 0; i < n; i += 61) sink = sink + bytes[i];
  sink = sink + bytes[n - 1];
}

}  // namespace

void FuzzSafetensors(std::string_view input) {
  const std::string path = Scratch::Get().Write("model.safetensors", input);
  absl::StatusOr<std::unique_ptr<io::SafetensorsFile>> file = io::SafetensorsFile::Open(path);
  if (!file.ok()) return ExpectCleanError(file.status(), "model.safetensors");
  for (const std::string& name : (*file)->names()) {
    absl::StatusOr<io::SafetensorsTensorInfo> info = (*file)->Info(name);
    if (!info.ok()) Violation("Info fails for a listed tensor");
    if (info->end < info->begin || info->end - info->begin > input.size())
      Violation("a tensor's byte range exceeds the file");
    absl::StatusOr<Tensor> view = (*file)->Load(name);
    if (!view.ok()) {
      ExpectCleanError(view.status(), "model.safetensors");
      continue;
    }
    TouchTensor(*view);
    const bool floating = IsFloating(info->dtype);
    absl::StatusOr<Tensor> converted = (*file)->Load(name, floating ? DType::kF32 : DType::kI64);
    if (!converted.ok()) {
      ExpectCleanError(converted.status(), "model.safetensors");
      continue;
    }
    if (converted->shape() != info->shape) Violation("a converted tensor changed its shape");
    TouchTensor(*converted);
  }
}

void FuzzNpy(std::string_view input) {
  const std::string path = Scratch::Get().Write("array.npy", input);
  absl::StatusOr<Tensor> tensor = io::ReadNpy(path);
  if (!tensor.ok()) return ExpectCleanError(tensor.status(), "array.npy");
  if (static_cast<size_t>(tensor->numel()) * DTypeSize(tensor->dtype()) > input.size())
    Violation("ReadNpy returned more data than the file holds");
  TouchTensor(*tensor);
}

void FuzzGguf(std::string_view input) {
  Scratch& scratch = Scratch::Get();
  const std::string path = scratch.Write("model.gguf", input);
  absl::StatusOr<std::unique_ptr<io::GgufFile>> file = io::GgufFile::Open(path);
  if (!file.ok()) return ExpectCleanError(file.status(), "model.gguf");
  for (const io::GgufTensorInfo& info : (*file)->tensors()) {
    if (info.offset > input.size() || info.nbytes > input.size() - info.offset)
      Violation("a GGUF tensor's bytes lie beyond the file");
    absl::StatusOr<Tensor> tensor = (*file)->Dequantize(info.name);
    if (!tensor.ok()) {
      ExpectCleanError(tensor.status(), "");
      continue;
    }
    TouchTensor(*tensor);
  }
  // The whole import: config from the metadata, every tensor renamed, un-permuted and written.
  absl::StatusOr<HfImportResult> imported =
      ImportGgufCheckpoint(path, scratch.dir() + "/imported", HfImportOptions{});
  if (!imported.ok()) ExpectCleanError(imported.status(), "");
}

}  // namespace fam::fuzz
