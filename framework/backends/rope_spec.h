// RoPE's frequencies: the base and the context-extension rescalings of pretrained models (linear
// position interpolation, Llama 3's per-frequency scaling), with the inverse frequency of rotated
// pair i as one __host__ __device__ formula shared by the CPU and the CUDA kernels. Plain C++17.
#pragma once

#include <math.h>

#include <cstdint>

#include "framework/backends/host_device.h"

namespace fam {

enum class RopeScaling : uint8_t {
  kNone,
  kLinear,  // every frequency / factor (positions interpolated by 1 / factor)
  kLlama3,  // long wavelengths / factor, short ones kept, a smooth blend between
};

struct RopeSpec {
  double base = 10000.0;
  RopeScaling scaling = RopeScaling::kNone;
  double factor = 1.0;               // kLinear, kLlama3
  double low_freq_factor = 1.0;      // kLlama3
  double high_freq_factor = 4.0;     // kLlama3
  double original_context = 8192.0;  // kLlama3: the pretraining context length
};

namespace formula {

// Inverse frequency of the rotated pair i of a head of width d: base^(-2i/d), then rescaled.
FAM_HOST_DEVICE inline double RopeInverseFrequency(const RopeSpec& r, int64_t i, int64_t d) {
  const double f = ::pow(r.base, -2.0 * static_cast<double>(i) / static_cast<double>(d));
  switch (r.scaling) {
    case RopeScaling::kNone:
      return f;
    case RopeScaling::kLinear:
      return f / r.factor;
    case RopeScaling::kLlama3: {
      const double wavelength = 2.0 * 3.14159265358979323846 / f;
      const double low_freq_wavelength = r.original_context / r.low_freq_factor;
      const double high_freq_wavelength = r.original_context / r.high_freq_factor;
      if (wavelength < high_freq_wavelength) return f;
      if (wavelength > low_freq_wavelength) return f / r.factor;
      const double smooth = (r.original_context / wavelength - r.low_freq_factor) /
                            (r.high_freq_factor - r.low_freq_factor);
      return (1.0 - smooth) * f / r.factor + smooth * f;
    }
  }
  return f;
}

}  // namespace formula
}  // namespace fam
