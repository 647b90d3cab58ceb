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

}  // namespace fam
