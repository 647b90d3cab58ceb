// The backend registry: the one piece of global state. Maps a device type to its backend. The CPU
// backend is always present; CUDA registers itself when compiled in and a device is found.
#pragma once

#include <string>

#include "framework/backends/backend.h"

namespace fam {

// The backend for a device; throws fam::Error(kUnavailable) with a clear reason when that device's
// backend is not built or no such device is present.
Backend& GetBackend(Device device);
// True when the device can be used; *why explains when it cannot.
bool DeviceAvailable(Device device, std::string* why = nullptr);

}  // namespace fam
