// The backend registry: the one piece of global state. Maps a device type to its backend. The CPU
// backend is always present; CUDA registers itself when compiled in and a device is found, and
// FAM_CUDA_EMULATION=host serves cuda:N from host memory (backends/emulation). Callers ask
// TraitsOf(device) what a device's memory is; none of them needs to know about the emulation.
#pragma once

#include <string>

#include "framework/backends/backend.h"

namespace fam {

// The backend for a device; throws fam::Error(kUnavailable) with a clear reason when that device's
// backend is not built or no such device is present.
Backend& GetBackend(Device device);
// True when the device can be used; *why explains when it cannot.
bool DeviceAvailable(Device device, std::string* why = nullptr);

// What a device is, answered without creating its backend.
struct DeviceTraits {
  // Its tensors live in host memory (the CPU, or CUDA emulated on the host): host kernels compute
  // on them and MPI carries them as they are.
  bool host_memory = false;
  // A stand-in for the device type with no hardware behind it (no NCCL, no peak FLOPs).
  bool emulated = false;
  // How many devices of this type one process can use (1 for the CPU).
  int devices = 0;
};
DeviceTraits TraitsOf(Device device);

}  // namespace fam
