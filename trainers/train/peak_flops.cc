#include "trainers/train/peak_flops.h"

#include <array>

#include "framework/backends/cuda/cuda_probe.h"
#include "framework/backends/registry.h"

namespace fam {
namespace {

struct KnownDevice {
  const char* name_part;  // matched in order: the more specific names first
  double bf16_tflops, f32_tflops;
};

// NVIDIA datasheets, dense (no 2:4 sparsity).
constexpr std::array<KnownDevice, 8> kKnownDevices = {{
    {"H100 PCIe", 756.0, 51.2},
    {"H100 NVL", 835.0, 60.0},
    {"GH200", 989.4, 66.9},
    {"H200", 989.4, 66.9},
    {"H100", 989.4, 66.9},  // SXM5
    {"H800", 989.4, 66.9},
    {"A100", 312.0, 19.5},
    {"L40S", 362.0, 91.6},
}};

}  // namespace

std::optional<double> PeakFlopsForName(const std::string& name, DType precision) {
  if (precision != DType::kBF16 && precision != DType::kF32) return std::nullopt;
  for (const KnownDevice& d : kKnownDevices) {
    if (name.find(d.name_part) == std::string::npos) continue;
    return (precision == DType::kBF16 ? d.bf16_tflops : d.f32_tflops) * 1e12;
  }
  return std::nullopt;
}

std::optional<PeakFlops> PeakFlopsFor(Device device, DType precision) {
  if (device.is_cpu() || TraitsOf(device).emulated) return std::nullopt;
  const std::string name = CudaDeviceName(device.index);
  std::optional<double> peak = PeakFlopsForName(name, precision);
  if (!peak) return std::nullopt;
  return PeakFlops{*peak, name};
}

}  // namespace fam
