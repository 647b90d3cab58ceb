#include "framework/backends/registry.h"

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "framework/backends/cpu/cpu_backend.h"
#include "framework/backends/cuda/cuda_probe.h"
#include "framework/backends/emulation/host_emulation_backend.h"
#ifdef FAM_HAVE_CUDA_BACKEND
#include "framework/backends/cuda/cuda_backend.h"
#endif

namespace fam {
namespace {

struct Registry {
  std::unique_ptr<Backend> cpu = MakeCpuBackend();
  // FAM_CUDA_EMULATION=host: cuda:N devices served by the CPU kernels on host memory.
  std::mutex emulated_mu;
  std::vector<std::unique_ptr<Backend>> emulated;
#ifdef FAM_HAVE_CUDA_BACKEND
  // One backend per CUDA device, created on first use. Never destroyed: storages released during
  // static destruction still reach their backend, and the CUDA runtime may already be unloading.
  std::mutex cuda_mu;
  std::vector<Backend*> cuda;
#endif
};

Registry& TheRegistry() {
  static Registry registry;
  return registry;
}

// Storage's allocators (framework/core/storage.h): each device type allocates through its backend.
class BackendAllocator final : public DeviceAllocator {
 public:
  void* Allocate(size_t nbytes, Device device) override {
    return GetBackend(device).Allocate(nbytes);
  }
  void Free(void* data, size_t nbytes, Device device) override {
    GetBackend(device).Free(data, nbytes);
  }
  bool HostAddressable(Device device) const override { return TraitsOf(device).host_memory; }
};

const bool g_allocators_registered = [] {
  static BackendAllocator allocator;
  RegisterAllocator(DeviceType::kCPU, &allocator);
  RegisterAllocator(DeviceType::kCUDA, &allocator);
  return true;
}();

}  // namespace

bool DeviceAvailable(Device device, std::string* why) {
  if (device.type == DeviceType::kCPU) return true;
  if (CudaEmulationEnabled()) {
    if (device.index >= 0 && device.index < kEmulatedCudaDevices) return true;
    if (why)
      *why = "FAM_CUDA_EMULATION=host provides cuda:0 to cuda:" +
             std::to_string(kEmulatedCudaDevices - 1) + " only";
    return false;
  }
  std::string reason = CudaUnavailableReason(device.index);
#ifdef FAM_HAVE_CUDA_BACKEND
  if (reason.empty()) return true;
#else
  // Devices are probed, but the kernels were not compiled (cmake -DFAM_BUILD_CUDA_BACKEND=ON).
  if (reason.empty())
    reason = "the CUDA kernels are not part of this build (FAM_BUILD_CUDA_BACKEND=OFF)";
#endif
  if (why) *why = reason;
  return false;
}

DeviceTraits TraitsOf(Device device) {
  if (device.type == DeviceType::kCPU)
    return {.host_memory = true, .emulated = false, .devices = 1};
  if (CudaEmulationEnabled())
    return {.host_memory = true, .emulated = true, .devices = kEmulatedCudaDevices};
  // Probed once: ops ask for every index range check (HostAddressable), and the count is fixed
  // for the process.
  static const int cuda_devices = CudaDeviceCount();
  return {.host_memory = false, .emulated = false, .devices = cuda_devices};
}

Backend& GetBackend(Device device) {
  if (device.type == DeviceType::kCPU) return *TheRegistry().cpu;
  std::string reason;
  if (CudaEmulationEnabled() && DeviceAvailable(device, &reason)) {
    Registry& registry = TheRegistry();
    std::lock_guard<std::mutex> lock(registry.emulated_mu);
    if (registry.emulated.empty()) registry.emulated.resize(kEmulatedCudaDevices);
    std::unique_ptr<Backend>& backend = registry.emulated[static_cast<size_t>(device.index)];
    if (backend == nullptr) backend = MakeHostEmulatedCudaBackend(device.index);
    return *backend;
  }
#ifdef FAM_HAVE_CUDA_BACKEND
  if (DeviceAvailable(device, &reason)) {
    Registry& registry = TheRegistry();
    std::lock_guard<std::mutex> lock(registry.cuda_mu);
    const size_t index = static_cast<size_t>(device.index);
    if (registry.cuda.size() <= index) registry.cuda.resize(index + 1, nullptr);
    if (registry.cuda[index] == nullptr) registry.cuda[index] = new cuda::CudaBackend(device.index);
    return *registry.cuda[index];
  }
#else
  DeviceAvailable(device, &reason);
#endif
  ThrowError(absl::StatusCode::kUnavailable, "device ", device.ToString(),
             " is unavailable: ", reason);
}

}  // namespace fam
