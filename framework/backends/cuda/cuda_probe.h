// Run-time detection of CUDA devices. Compiled against the CUDA runtime when the toolkit was found
// at build time; otherwise reports that CUDA support is not built.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace fam {

// Empty when CUDA device `index` can be used, otherwise why not ("not built with CUDA",
// "no CUDA device present", the driver's error string, ...).
std::string CudaUnavailableReason(int index);
// Number of visible CUDA devices (0 when not built or none present).
int CudaDeviceCount();
// Total memory of CUDA device `index` in bytes (0 when not built, absent or not queryable).
int64_t CudaDeviceMemoryBytes(int index);
// The device's name ("NVIDIA H100 80GB HBM3"); empty when not built, absent or not queryable.
std::string CudaDeviceName(int index);

// The CUDA stack as `fam --version` shows it, one (name, description) pair per line: the runtime
// (loaded and built-against versions), the driver, cuBLAS/cuBLASLt (opened for the report: they
// are otherwise loaded at the first GEMM), cuDNN when present, and every visible GPU.
std::vector<std::pair<std::string, std::string>> CudaStackReport();

}  // namespace fam
