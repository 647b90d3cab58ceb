// Where a tensor's storage lives. Ops dispatch to the backend registered for the device's type.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace fam {

enum class DeviceType : uint8_t { kCPU, kCUDA };

struct Device {
  DeviceType type = DeviceType::kCPU;
  int index = 0;

  static Device CPU() { return Device{DeviceType::kCPU, 0}; }
  static Device CUDA(int index = 0) { return Device{DeviceType::kCUDA, index}; }
  bool is_cpu() const { return type == DeviceType::kCPU; }
  bool operator==(const Device& other) const = default;
  std::string ToString() const {
    return type == DeviceType::kCPU ? "cpu" : "cuda:" + std::to_string(index);
  }
  // "cpu", "cuda" (= cuda:0) or "cuda:N"; nullopt for anything else.
  static std::optional<Device> Parse(const std::string& text) {
    if (text == "cpu") return CPU();
    if (text == "cuda") return CUDA(0);
    if (text.rfind("cuda:", 0) != 0 || text.size() == 5 || text.size() > 8) return std::nullopt;
    int index = 0;
    for (char c : text.substr(5)) {
      if (c < '0' || c > '9') return std::nullopt;
      index = index * 10 + (c - '0');
    }
    return CUDA(index);
  }
};

}  // namespace fam
