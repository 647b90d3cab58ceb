// Owner assignment and bucket building (see bucket_layout.h).
#include "framework/dist/bucket_layout.h"

#include <algorithm>

#include "framework/core/error.h"

namespace fam::dist {

std::vector<int> AssignOwners(const std::vector<int64_t>& numels, int world_size) {
  FAM_CHECK(world_size >= 1, "AssignOwners: world size ", world_size);
  // Largest first, each to the least loaded rank (ties: lowest rank); equal sizes keep index order.
  std::vector<size_t> by_size(numels.size());
  for (size_t i = 0; i < by_size.size(); ++i) by_size[i] = i;
  std::stable_sort(by_size.begin(), by_size.end(),
                   [&](size_t a, size_t b) { return numels[a] > numels[b]; });
  std::vector<int64_t> load(world_size, 0);
  std::vector<int> owners(numels.size(), 0);
  for (size_t i : by_size) {
    const int r = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    owners[i] = r;
    load[r] += numels[i];
  }
  return owners;
}

BucketLayout MakeBucketLayout(const std::vector<int64_t>& numels, const std::vector<size_t>& order,
                              const std::vector<int>& owners, int world_size,
                              int64_t bucket_elems) {
  const size_t n = numels.size();
  FAM_CHECK(order.size() == n && owners.size() == n, "MakeBucketLayout: ", n, " parameters, ",
            order.size(), " in the order, ", owners.size(), " owners");
  std::vector<bool> seen(n, false);
  for (size_t p : order) {
    FAM_CHECK(p < n && !seen[p], "MakeBucketLayout: the order is not a permutation of ", n,
              " parameters");
    seen[p] = true;
  }
  // Cut the order into groups of at most bucket_elems elements.
  std::vector<std::vector<size_t>> groups;
  int64_t current = 0;
  for (size_t p : order) {
    if (groups.empty() || (current > 0 && current + numels[p] > bucket_elems)) {
      groups.emplace_back();
      current = 0;
    }
    groups.back().push_back(p);
    current += numels[p];
  }
  BucketLayout layout;
  layout.bucket_of.assign(n, -1);
  layout.slot_of.assign(n, -1);
  for (std::vector<size_t>& group : groups) {
    std::stable_sort(group.begin(), group.end(),
                     [&](size_t a, size_t b) { return owners[a] < owners[b]; });
    Bucket bucket;
    bucket.owner_counts.assign(world_size, 0);
    bucket.owner_offsets.assign(world_size, 0);
    for (size_t p : group) {
      FAM_CHECK(owners[p] >= 0 && owners[p] < world_size, "MakeBucketLayout: owner ", owners[p],
                " of parameter ", p, " outside world size ", world_size);
      layout.bucket_of[p] = static_cast<int>(layout.buckets.size());
      layout.slot_of[p] = static_cast<int>(bucket.slots.size());
      bucket.slots.push_back({p, bucket.numel, numels[p], owners[p]});
      bucket.owner_counts[owners[p]] += numels[p];
      bucket.numel += numels[p];
    }
    int64_t offset = 0;
    for (int r = 0; r < world_size; ++r) {
      bucket.owner_offsets[r] = offset;
      offset += bucket.owner_counts[r];
    }
    layout.buckets.push_back(std::move(bucket));
  }
  return layout;
}

}  // namespace fam::dist
