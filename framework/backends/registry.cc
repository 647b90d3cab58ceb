#include "framework/backends/registry.h"

#include <memory>
#include <mutex>

#include "framework/backends/cpu/cpu_backend.h"
#include "framework/backends/cuda/cuda_probe.h"

namespace fam {
namespace {

struct Registry {
  std::unique_ptr<Backend> cpu = MakeCpuBackend();
};

Registry& TheRegistry() {
  static Registry registry;
  return registry;
}

}  // namespace

bool DeviceAvailable(Device device, std::string* why) {
  if (device.type == DeviceType::kCPU) return true;
  std::string reason = CudaUnavailableReason(device.index);
  // Devices are probed, but no CUDA kernels are registered yet: the CUDA backend is its own issue.
  if (reason.empty()) reason = "the CUDA kernels are not part of this build yet";
  if (why) *why = reason;
  return false;
}

Backend& GetBackend(Device device) {
  if (device.type == DeviceType::kCPU) return *TheRegistry().cpu;
  std::string reason;
  DeviceAvailable(device, &reason);
  ThrowError(absl::StatusCode::kUnavailable, "device ", device.ToString(), " is unavailable: ",
             reason);
}

}  // namespace fam
