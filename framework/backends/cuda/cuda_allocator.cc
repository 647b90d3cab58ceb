#include "framework/backends/cuda/cuda_allocator.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "framework/core/error.h"

namespace fam::cuda {

CachingAllocator::CachingAllocator(RawAllocator raw) : raw_(std::move(raw)) {
  FAM_CHECK(raw_.alloc && raw_.free, "caching allocator: raw alloc/free functions are required");
}

CachingAllocator::~CachingAllocator() {
  std::lock_guard<std::mutex> lock(mu_);
  EmptyCacheLocked();
}

size_t CachingAllocator::RoundSize(size_t nbytes) {
  if (nbytes == 0) nbytes = 1;
  if (nbytes < kSmallLimit) return (nbytes + kSmallRound - 1) / kSmallRound * kSmallRound;
  return (nbytes + kLargeRound - 1) / kLargeRound * kLargeRound;
}

void* CachingAllocator::Allocate(size_t nbytes) {
  const size_t size = RoundSize(nbytes);
  std::lock_guard<std::mutex> lock(mu_);
  void* ptr = nullptr;
  auto it = free_.find(size);
  if (it != free_.end() && !it->second.empty()) {
    ptr = it->second.back();
    it->second.pop_back();
    ++stats_.cache_hits;
  } else {
    ptr = raw_.alloc(size);
    if (ptr == nullptr) {
      EmptyCacheLocked();
      ptr = raw_.alloc(size);
    }
    if (ptr == nullptr) {
      const std::string device = raw_.describe_device ? raw_.describe_device() : "device";
      ThrowError(absl::StatusCode::kResourceExhausted, "out of memory on ", device,
                 " allocating ", nbytes, " bytes (", size, " rounded); allocated by famtrain: ",
                 stats_.allocated, " bytes, reserved: ", stats_.reserved,
                 " bytes (cache emptied and retried once)");
    }
    ++stats_.raw_allocs;
    stats_.reserved += size;
  }
  live_.emplace(ptr, size);
  stats_.allocated += size;
  stats_.peak_allocated = std::max(stats_.peak_allocated, stats_.allocated);
  return ptr;
}

void CachingAllocator::Free(void* ptr) {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(ptr);
  FAM_CHECK(it != live_.end(), "caching allocator: free of a pointer it did not hand out (0x",
            absl::Hex(reinterpret_cast<uintptr_t>(ptr)), ")");
  const size_t size = it->second;
  live_.erase(it);
  stats_.allocated -= size;
  free_[size].push_back(ptr);
}

void CachingAllocator::EmptyCache() {
  std::lock_guard<std::mutex> lock(mu_);
  EmptyCacheLocked();
}

void CachingAllocator::EmptyCacheLocked() {
  for (auto& [size, blocks] : free_) {
    for (void* p : blocks) {
      raw_.free(p);
      ++stats_.raw_frees;
      stats_.reserved -= size;
    }
  }
  free_.clear();
}

AllocatorStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

void CachingAllocator::ResetPeak() {
  std::lock_guard<std::mutex> lock(mu_);
  stats_.peak_allocated = stats_.allocated;
}

}  // namespace fam::cuda
