// Reference-counted raw memory of one device, from the allocator its backend registered. Tensors
// share a Storage through std::shared_ptr, so views never copy and memory is released when the last
// view goes away. ZeRO-3 (framework/dist/sharded_parameters.h) can also release a Storage's memory
// in place and give it memory again later: every tensor and saved autograd view sharing the object
// then sees the new data, and reading a released storage is an error naming why it was released.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "framework/core/device.h"
#include "framework/core/error.h"

namespace fam {

// Where Storage gets memory for one device type. The backend layer registers one per type
// (framework/backends/registry.cc); core itself knows no backend.
class DeviceAllocator {
 public:
  virtual ~DeviceAllocator() = default;
  virtual void* Allocate(size_t nbytes, Device device) = 0;
  virtual void Free(void* data, size_t nbytes, Device device) = 0;
  // True when the memory it hands out for `device` is host memory (the CPU, or a device emulated
  // on the host): kernels running on the host may then read and write it.
  virtual bool HostAddressable(Device device) const = 0;
};
// Installs the allocator of `type` (not owned; it must outlive every storage it allocated).
void RegisterAllocator(DeviceType type, DeviceAllocator* allocator);
// True for CPU memory and for memory of a device whose registered allocator says it is host memory.
bool HostAddressable(Device device);

class Storage {
 public:
  // Allocates nbytes on device through its registered allocator (uninitialised).
  static std::shared_ptr<Storage> Allocate(size_t nbytes, Device device);
  // Wraps memory owned by someone else (e.g. an mmap'ed file); release runs when the storage dies.
  static std::shared_ptr<Storage> Wrap(void* data, size_t nbytes, Device device,
                                       std::function<void()> release);

  Storage(void* data, size_t nbytes, Device device, std::function<void()> release)
      : data_(data), nbytes_(nbytes), device_(device), release_(std::move(release)) {}
  ~Storage() {
    if (release_) release_();
  }
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const {
    FAM_CHECK(!released_, "use of released memory: ", released_why_);
    return data_;
  }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

  // Frees the memory now but keeps the object; data() fails with `why` until the storage is
  // materialised again. Releasing a released storage is a no-op.
  void Release(std::string why);
  // A released storage gets memory again: a fresh (uninitialised) allocation of nbytes() ...
  void Materialize();
  // ... or nbytes() bytes of `backing` from byte_offset (`backing` stays alive while used here).
  void MaterializeInto(std::shared_ptr<Storage> backing, size_t byte_offset);
  bool released() const { return released_; }

 private:
  void* data_;
  size_t nbytes_;
  Device device_;
  std::function<void()> release_;
  std::shared_ptr<Storage> backing_;  // MaterializeInto: the storage whose memory this one uses
  bool released_ = false;
  std::string released_why_;
};

}  // namespace fam
