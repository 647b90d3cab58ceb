// Dense peak FLOP/s of known accelerators (vendor datasheets, without sparsity), the denominator
// of model FLOPs utilisation (MFU) in training metrics and bench/train_device_bench.
#pragma once

#include <optional>
#include <string>

#include "framework/core/device.h"
#include "framework/core/dtype.h"

namespace fam {

struct PeakFlops {
  double flops_per_s = 0;
  std::string device_name;  // as the driver reports it
};

// The peak of `device` for GEMMs in `precision` (bf16: tensor cores; f32: plain FP32, since TF32
// is off by default). nullopt for the CPU, an emulated or unknown device: MFU is then not reported.
std::optional<PeakFlops> PeakFlopsFor(Device device, DType precision);

// The same from a device name (the table behind PeakFlopsFor; exposed for tests).
std::optional<double> PeakFlopsForName(const std::string& name, DType precision);

}  // namespace fam
