#include "framework/core/storage.h"

#include <array>
#include <atomic>

namespace fam {
namespace {

// One slot per DeviceType; written once at start-up by the backend layer.
std::array<std::atomic<DeviceAllocator*>, 2> g_allocators{};

DeviceAllocator& AllocatorFor(Device device) {
  const auto slot = static_cast<size_t>(device.type);
  DeviceAllocator* allocator = slot < g_allocators.size() ? g_allocators[slot].load() : nullptr;
  if (allocator == nullptr)
    ThrowError(absl::StatusCode::kUnavailable, "no allocator is registered for ", device.ToString(),
               " (the backend layer registers them)");
  return *allocator;
}

}  // namespace

void RegisterAllocator(DeviceType type, DeviceAllocator* allocator) {
  const auto slot = static_cast<size_t>(type);
  FAM_ASSERT(slot < g_allocators.size());
  g_allocators[slot].store(allocator);
}

bool HostAddressable(Device device) {
  if (device.is_cpu()) return true;
  const auto slot = static_cast<size_t>(device.type);
  DeviceAllocator* allocator = slot < g_allocators.size() ? g_allocators[slot].load() : nullptr;
  return allocator != nullptr && allocator->HostAddressable(device);
}

std::shared_ptr<Storage> Storage::Allocate(size_t nbytes, Device device) {
  DeviceAllocator& allocator = AllocatorFor(device);
  void* data = allocator.Allocate(nbytes, device);
  return std::make_shared<Storage>(data, nbytes, device, [&allocator, data, nbytes, device] {
    allocator.Free(data, nbytes, device);
  });
}

std::shared_ptr<Storage> Storage::Wrap(void* data, size_t nbytes, Device device,
                                       std::function<void()> release) {
  return std::make_shared<Storage>(data, nbytes, device, std::move(release));
}

void Storage::Release(std::string why) {
  if (released_) return;
  if (release_) release_();
  release_ = nullptr;
  backing_.reset();
  data_ = nullptr;
  released_ = true;
  released_why_ = std::move(why);
}

void Storage::Materialize() {
  FAM_CHECK(released_, "Storage::Materialize: the storage of ", nbytes_, " bytes holds memory");
  DeviceAllocator& allocator = AllocatorFor(device_);
  void* data = allocator.Allocate(nbytes_, device_);
  data_ = data;
  release_ = [&allocator, data, n = nbytes_, device = device_] { allocator.Free(data, n, device); };
  released_ = false;
}

void Storage::MaterializeInto(std::shared_ptr<Storage> backing, size_t byte_offset) {
  FAM_CHECK(released_, "Storage::MaterializeInto: the storage of ", nbytes_, " bytes holds memory");
  FAM_CHECK(backing != nullptr && backing->device() == device_ &&
                byte_offset + nbytes_ <= backing->nbytes(),
            "Storage::MaterializeInto: ", nbytes_, " bytes at ", byte_offset,
            " do not fit the backing storage");
  data_ = static_cast<char*>(backing->data()) + byte_offset;
  backing_ = std::move(backing);
  released_ = false;
}

}  // namespace fam
