#include "framework/backends/emulation/host_emulation_backend.h"

#include <cstdlib>
#include <string>

#include "framework/backends/cpu/cpu_backend.h"

namespace fam {

bool CudaEmulationEnabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("FAM_CUDA_EMULATION");
    return v != nullptr && std::string(v) == "host";
  }();
  return enabled;
}

namespace {

// The CPU backend under another identity. Its memory is host memory that the registry reports as
// such (TraitsOf), so the CPU kernels accept these tensors (Tensor::kernel_data) while host-facing
// code (Tensor::data) still refuses them; host <-> device copies are the CPU's memcpy.
class HostEmulatedCudaBackend final : public CpuBackend {
 public:
  explicit HostEmulatedCudaBackend(int index) : index_(index) {}

  DeviceType type() const override { return DeviceType::kCUDA; }
  std::string name() const override {
    return "cuda:" + std::to_string(index_) + " (emulated on the host: FAM_CUDA_EMULATION=host)";
  }

 private:
  int index_;
};

}  // namespace

std::unique_ptr<Backend> MakeHostEmulatedCudaBackend(int index) {
  return std::make_unique<HostEmulatedCudaBackend>(index);
}

}  // namespace fam
