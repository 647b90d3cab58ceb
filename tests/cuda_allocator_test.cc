// The CUDA caching allocator's bookkeeping (size classes, reuse, stats, cache emptying, the
// out-of-memory retry and message), run on any machine through an injected fake raw allocator.
#include "framework/backends/cuda/cuda_allocator.h"

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "framework/core/error.h"

namespace fam::cuda {
namespace {

// Hands out fake, never dereferenced addresses within a byte budget.
struct FakeDevice {
  size_t budget = 0;
  size_t used = 0;
  uintptr_t next = 0x10000;
  std::map<void*, size_t> live;  // block -> size
  int alloc_calls = 0;  // including failed ones

  RawAllocator Raw() {
    RawAllocator raw;
    raw.alloc = [this](size_t n) -> void* {
      ++alloc_calls;
      if (used + n > budget) return nullptr;
      used += n;
      void* p = reinterpret_cast<void*>(next);
      next += n + 4096;
      live.emplace(p, n);
      return p;
    };
    raw.free = [this](void* p) {
      auto it = live.find(p);
      ASSERT_TRUE(it != live.end()) << "raw free of an unknown block";
      used -= it->second;
      live.erase(it);
    };
    raw.describe_device = [] { return std::string("fake:0 (total 10 MiB)"); };
    return raw;
  }
};

constexpr size_t kMiB = size_t{1} << 20;

TEST(CudaAllocatorTest, SizeClasses) {
  EXPECT_EQ(CachingAllocator::RoundSize(0), 512u);
  EXPECT_EQ(CachingAllocator::RoundSize(1), 512u);
  EXPECT_EQ(CachingAllocator::RoundSize(512), 512u);
  EXPECT_EQ(CachingAllocator::RoundSize(513), 1024u);
  EXPECT_EQ(CachingAllocator::RoundSize(kMiB - 1), kMiB);
  EXPECT_EQ(CachingAllocator::RoundSize(kMiB), 2 * kMiB);
  EXPECT_EQ(CachingAllocator::RoundSize(2 * kMiB), 2 * kMiB);
  EXPECT_EQ(CachingAllocator::RoundSize(2 * kMiB + 1), 4 * kMiB);
  EXPECT_EQ(CachingAllocator::RoundSize(7 * kMiB), 8 * kMiB);
}

TEST(CudaAllocatorTest, ReusesFreedBlocksOfTheSameClass) {
  FakeDevice dev;
  dev.budget = 100 * kMiB;
  size_t freed_raw = 0;
  {
    CachingAllocator alloc(dev.Raw());
    void* a = alloc.Allocate(1000);  // class 1024
    EXPECT_EQ(alloc.stats().raw_allocs, 1);
    alloc.Free(a);
    void* b = alloc.Allocate(700);  // same class: served from the cache
    EXPECT_EQ(b, a);
    EXPECT_EQ(alloc.stats().raw_allocs, 1);
    EXPECT_EQ(alloc.stats().cache_hits, 1);
    void* c = alloc.Allocate(1025);  // class 1536: a new block
    EXPECT_NE(c, a);
    EXPECT_EQ(alloc.stats().raw_allocs, 2);
    void* d = alloc.Allocate(1000);  // class 1024 but the cached block is in use
    EXPECT_NE(d, b);
    EXPECT_EQ(alloc.stats().raw_allocs, 3);
    AllocatorStats s = alloc.stats();
    EXPECT_EQ(s.allocated, 1024u + 1536u + 1024u);
    EXPECT_EQ(s.reserved, s.allocated);
    alloc.Free(b);
    alloc.Free(c);
    alloc.Free(d);
    s = alloc.stats();
    EXPECT_EQ(s.allocated, 0u);
    EXPECT_EQ(s.reserved, 1024u + 1536u + 1024u);
    EXPECT_EQ(s.peak_allocated, 1024u + 1536u + 1024u);
    EXPECT_EQ(dev.live.size(), 3u);
    freed_raw = static_cast<size_t>(s.raw_frees);
  }
  EXPECT_EQ(freed_raw, 0u);
  EXPECT_TRUE(dev.live.empty()) << "destructor returns cached blocks";
}

TEST(CudaAllocatorTest, EmptyCacheReturnsOnlyFreeBlocks) {
  FakeDevice dev;
  dev.budget = 100 * kMiB;
  CachingAllocator alloc(dev.Raw());
  void* big = alloc.Allocate(3 * kMiB);  // 4 MiB class
  void* small = alloc.Allocate(100);
  alloc.Free(big);
  EXPECT_EQ(alloc.stats().reserved, 4 * kMiB + 512);
  alloc.EmptyCache();
  AllocatorStats s = alloc.stats();
  EXPECT_EQ(s.reserved, 512u);
  EXPECT_EQ(s.allocated, 512u);
  EXPECT_EQ(s.raw_frees, 1);
  EXPECT_EQ(dev.live.size(), 1u);
  EXPECT_EQ(dev.live.count(small), 1u);
  alloc.ResetPeak();
  EXPECT_EQ(alloc.stats().peak_allocated, 512u);
  alloc.Free(small);
}

TEST(CudaAllocatorTest, OutOfMemoryEmptiesTheCacheAndRetriesOnce) {
  FakeDevice dev;
  dev.budget = 10 * kMiB;
  CachingAllocator alloc(dev.Raw());
  void* a = alloc.Allocate(4 * kMiB);
  alloc.Free(a);  // 4 MiB cached
  void* b = alloc.Allocate(8 * kMiB);  // 4 + 8 > 10: fails, cache emptied, retry succeeds
  ASSERT_NE(b, nullptr);
  AllocatorStats s = alloc.stats();
  EXPECT_EQ(s.raw_frees, 1);
  EXPECT_EQ(s.reserved, 8 * kMiB);
  EXPECT_EQ(dev.alloc_calls, 3);
  alloc.Free(b);
}

TEST(CudaAllocatorTest, OutOfMemoryErrorNamesTheNumbers) {
  FakeDevice dev;
  dev.budget = 10 * kMiB;
  CachingAllocator alloc(dev.Raw());
  void* a = alloc.Allocate(8 * kMiB);
  try {
    alloc.Allocate(3 * kMiB + 5);
    FAIL() << "expected an out-of-memory error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), absl::StatusCode::kResourceExhausted);
    const std::string msg = e.what();
    EXPECT_NE(msg.find("3145733 bytes"), std::string::npos) << msg;
    EXPECT_NE(msg.find("allocated by famtrain: 8388608"), std::string::npos) << msg;
    EXPECT_NE(msg.find("reserved: 8388608"), std::string::npos) << msg;
    EXPECT_NE(msg.find("fake:0 (total 10 MiB)"), std::string::npos) << msg;
  }
  EXPECT_EQ(alloc.stats().allocated, 8 * kMiB);  // unchanged by the failure
  alloc.Free(a);
}

TEST(CudaAllocatorTest, FreeOfAnUnknownPointerIsAnError) {
  FakeDevice dev;
  dev.budget = kMiB;
  CachingAllocator alloc(dev.Raw());
  int x = 0;
  EXPECT_THROW(alloc.Free(&x), Error);
  void* a = alloc.Allocate(10);
  alloc.Free(a);
  EXPECT_THROW(alloc.Free(a), Error) << "double free";
  alloc.Free(nullptr);  // no-op
}

}  // namespace
}  // namespace fam::cuda
