// Caching device allocator of the CUDA backend. cudaMalloc/cudaFree are slow and synchronise the
// device, so freed blocks are kept in free lists per size class and reused. Sizes round up to
// 512 B below 1 MiB and to 2 MiB multiples above. The raw allocation functions are injected, so the
// bookkeeping is plain C++ and unit-tested on machines without a GPU.
//
// Reuse is safe without events because the CUDA backend issues all work of a device on one stream:
// a block freed on the host is only reused by work queued after everything that used it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace fam::cuda {

struct RawAllocator {
  // Returns nullptr when the device is out of memory (other failures throw).
  std::function<void*(size_t nbytes)> alloc;
  std::function<void(void* ptr)> free;
  // Describes the device's memory for an out-of-memory message ("total X, free Y on cuda:0").
  std::function<std::string()> describe_device;
};

struct AllocatorStats {
  size_t allocated = 0;       // bytes in blocks handed out (rounded sizes)
  size_t reserved = 0;        // bytes obtained from the raw allocator (handed out + cached)
  size_t peak_allocated = 0;  // highest `allocated` since construction or ResetPeak
  int64_t raw_allocs = 0;     // calls to the raw allocator that succeeded
  int64_t raw_frees = 0;
  int64_t cache_hits = 0;     // allocations served from a free list
};

class CachingAllocator {
 public:
  static constexpr size_t kSmallLimit = size_t{1} << 20;  // below: 512 B classes
  static constexpr size_t kSmallRound = 512;
  static constexpr size_t kLargeRound = size_t{2} << 20;

  explicit CachingAllocator(RawAllocator raw);
  ~CachingAllocator();  // returns every cached block; blocks still handed out are leaked
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  // The size class of a request (0 bytes rounds to the smallest class).
  static size_t RoundSize(size_t nbytes);

  // A block of at least nbytes. On raw failure, empties the cache and retries once; then throws
  // fam::Error(kResourceExhausted) naming the bytes requested, allocated, reserved and the device.
  void* Allocate(size_t nbytes);
  // Returns a block from Allocate to its free list; an unknown pointer is an error.
  void Free(void* ptr);
  // Gives every cached (free) block back to the raw allocator.
  void EmptyCache();

  AllocatorStats stats() const;
  void ResetPeak();

 private:
  void EmptyCacheLocked();

  RawAllocator raw_;
  mutable std::mutex mu_;
  std::map<size_t, std::vector<void*>> free_;      // size class -> cached blocks
  std::unordered_map<void*, size_t> live_;         // handed-out block -> size class
  AllocatorStats stats_;
};

}  // namespace fam::cuda
