// Data-parallel gradient reduction overlapped with backward. The reducer installs a hook on every
// parameter (TensorImpl::grad_ready_hook, run by AccumulateGrad once a backward pass has summed
// all of that parameter's gradient). While armed (the last micro-batch of a step: earlier
// micro-batches only accumulate locally), each ready gradient is copied into its bucket
// (bucket_layout.h); a bucket whose gradients have all arrived is handed to the communication
// thread at once, in bucket order, so communication runs while backward computes the rest.
// Finish() launches what is left (a parameter that got no gradient on this rank contributes
// zeros), waits, and writes back the average over ranks: every gradient (all-reduce), or with
// ZeRO-1 (`shard`) only the gradients of the parameters this rank owns (reduce-scatter; the
// others are dropped). A parameter that got no gradient on any rank keeps none. GatherParameters()
// is ZeRO-1's second half: after each owner updated its parameters, all ranks receive them
// (all-gather through the same buckets).
//
// Buckets hold gradients in their dtype (GradDType: f32 for bf16 parameters, so the reduction of
// a mixed-precision run is in f32); GatherParameters converts bf16 parameters to it and back
// (exact).
//
// Bucket order: first the reverse registration order; after the first reduced step, the ready
// order rank 0 observed (broadcast, so every rank uses the same buckets), as PyTorch DDP does.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "framework/dist/bucket_layout.h"
#include "framework/dist/communicator.h"
#include "framework/optim/optimizer.h"

namespace fam::dist {

struct ReducerOptions {
  int64_t bucket_bytes = int64_t{25} << 20;
  bool shard = false;                    // ZeRO-1: reduce-scatter to the owners
  bool reorder_after_first_step = true;  // rebuild buckets in observed ready order
};

struct ReducerStats {
  int buckets = 0;
  int launched_in_backward = 0;  // buckets handed to communication before backward ended
  double comm_s = 0;             // time the collectives took on the communication thread
  double wait_s = 0;             // time Finish() blocked (communication not hidden by backward)
  int64_t bytes = 0;             // gradient bytes reduced per rank
};

class GradReducer {
 public:
  // Parameters must be contiguous, of one gradient dtype, on the communicator's device.
  GradReducer(std::shared_ptr<Communicator> comm, std::vector<NamedParameter> params,
              const ReducerOptions& options);
  ~GradReducer();  // removes the hooks
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  // The next backward pass reduces gradients as they become ready.
  void Arm();
  // Completes the reduction (see above) and disarms.
  void Finish();
  // ZeRO-1: every rank receives the parameters updated by their owners.
  void GatherParameters();

  const std::vector<int>& owners() const { return owners_; }
  bool owns(size_t param) const { return owners_[param] == comm_->rank(); }
  const std::vector<NamedParameter>& params() const { return params_; }
  const BucketLayout& layout() const { return layout_; }
  // Bytes of the communication buffers on this rank.
  int64_t buffer_bytes() const;
  const ReducerStats& last_stats() const { return stats_; }

 private:
  void Allocate();
  void OnGradReady(size_t param);
  void LaunchReady();
  void Launch(size_t bucket);
  void Reorder();
  Tensor SlotView(const Tensor& buffer, int64_t offset, const Shape& shape) const;

  std::shared_ptr<Communicator> comm_;
  std::vector<NamedParameter> params_;
  ReducerOptions options_;
  std::vector<int64_t> numels_;
  std::vector<int> owners_;
  BucketLayout layout_;
  DType dtype_ = DType::kF32;     // of the gradients and the buffers
  std::vector<Tensor> buffers_;   // one per bucket: the whole bucket
  std::vector<Tensor> shards_;    // ZeRO-1: this rank's segment of each bucket
  std::vector<Work> works_;       // per bucket, this step
  std::vector<int> pending_;      // per bucket: gradients not yet arrived
  std::vector<int32_t> arrived_;  // per parameter, this step
  std::vector<size_t> arrival_order_;
  size_t next_launch_ = 0;
  bool armed_ = false;
  bool reordered_ = false;
  ReducerStats stats_;
};

}  // namespace fam::dist
