// Reference-counted raw memory owned by one device's backend. Tensors share a Storage through
// std::shared_ptr, so views never copy and memory is released when the last view goes away.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>

#include "framework/core/device.h"

namespace fam {

class Storage {
 public:
  // Allocates nbytes on device through its backend (uninitialised).
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

  void* data() const { return data_; }
  size_t nbytes() const { return nbytes_; }
  Device device() const { return device_; }

 private:
  void* data_;
  size_t nbytes_;
  Device device_;
  std::function<void()> release_;
};

}  // namespace fam
