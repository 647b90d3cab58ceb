// Where gradients sit during data-parallel reduction. Parameters are grouped into buckets (flat
// buffers of at most bucket_elems elements; a larger parameter gets a bucket of its own) in the
// order their gradients are expected to become ready in backward, so a bucket can be reduced
// while backward goes on. For ZeRO-1 every parameter has an owner rank (the one that updates it),
// chosen to balance the element counts (largest parameter first, to the least loaded rank; a
// parameter is never split, so one huge embedding can dominate a rank); inside a bucket the
// parameters are grouped by owner, so that a reduce-scatter with per-rank counts leaves each owner
// exactly the summed gradients of its own parameters.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace fam::dist {

struct BucketSlot {
  size_t param = 0;    // index into the parameter list
  int64_t offset = 0;  // first element within the bucket
  int64_t numel = 0;
  int owner = 0;
};

struct Bucket {
  std::vector<BucketSlot> slots;  // grouped by owner (ascending), ready order within an owner
  int64_t numel = 0;
  std::vector<int64_t> owner_counts;   // per rank: elements of its parameters in this bucket
  std::vector<int64_t> owner_offsets;  // per rank: where its segment starts in this bucket
};

struct BucketLayout {
  std::vector<Bucket> buckets;
  std::vector<int> bucket_of;  // parameter → bucket
  std::vector<int> slot_of;    // parameter → slot index within its bucket
};

// Owner rank of each parameter (sizes in registration order), balanced as described above.
std::vector<int> AssignOwners(const std::vector<int64_t>& numels, int world_size);

// Buckets over the parameters in `order` (a permutation of their indices, expected ready order).
// owners: one per parameter (all 0 when nothing is sharded).
BucketLayout MakeBucketLayout(const std::vector<int64_t>& numels, const std::vector<size_t>& order,
                              const std::vector<int>& owners, int world_size, int64_t bucket_elems);

}  // namespace fam::dist
