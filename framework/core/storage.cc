#include "framework/core/storage.h"

#include "framework/backends/registry.h"

namespace fam {

std::shared_ptr<Storage> Storage::Allocate(size_t nbytes, Device device) {
  Backend& backend = GetBackend(device);
  void* data = backend.Allocate(nbytes);
  return std::make_shared<Storage>(data, nbytes, device,
                                   [&backend, data, nbytes] { backend.Free(data, nbytes); });
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
  Backend& backend = GetBackend(device_);
  void* data = backend.Allocate(nbytes_);
  data_ = data;
  release_ = [&backend, data, n = nbytes_] { backend.Free(data, n); };
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
