// How a data-parallel training step brings its gradients together: one interface the training
// loop calls around each micro-batch, with one implementation per distributed.zero stage.
//
//   sync->BeginMicroBatch(last)   before each micro-batch's forward
//   ... forward, loss, backward ...
//   sync->EndMicroBatch()         after its backward
//   sum = sync->Finish()          once per step: this rank's share of the sum of squared gradients
//
// Summing Finish() over every rank gives the global squared gradient norm (the loop all-reduces it
// together with the loss). Implementations:
//   none    one process: nothing to reduce, every gradient is local.
//   DDP     bucketed all-reduce launched during the last micro-batch's backward (GradReducer);
//           every rank holds every averaged gradient, so rank 0 alone reports the norm.
//   ZeRO-1  the same buckets reduce-scattered: each rank keeps (and reports) the gradients of the
//           parameters it owns.
//   ZeRO-2/3 every micro-batch's gradients are reduce-scattered unit by unit to their owners
//           (ShardedParameters; ZeRO-3 also gathers parameters through the model's layer hooks).
#pragma once

#include <memory>
#include <vector>

#include "framework/dist/grad_reducer.h"
#include "framework/dist/sharded_parameters.h"
#include "framework/optim/optimizer.h"

namespace fam::dist {

// Seconds of gradient communication in one step (all zero where nothing is communicated).
struct SyncStats {
  bool communicated = false;  // whether this step ran collectives on gradients
  double comm_s = 0;          // time the collectives took
  double wait_s = 0;          // time the step waited for them (not hidden behind backward)
};

class GradientSync {
 public:
  virtual ~GradientSync() = default;
  // `last`: the step's last micro-batch (DDP and ZeRO-1 reduce during its backward).
  virtual void BeginMicroBatch(bool last) = 0;
  virtual void EndMicroBatch() = 0;
  // Completes the step's reduction and returns this rank's part of the global sum of squared
  // gradients of `params` (the trainable parameters, in the reducer's order).
  virtual double Finish(const std::vector<NamedParameter>& params) = 0;
  virtual SyncStats last_stats() const { return {}; }
};

// One process: gradients stay as backward left them.
std::unique_ptr<GradientSync> MakeLocalGradientSync();
// DDP (owned_only false) or ZeRO-1 (owned_only true: the reducer was built with shard = true).
// `reducer` is not owned; `is_root`: this rank is rank 0.
std::unique_ptr<GradientSync> MakeAllReduceGradientSync(GradReducer* reducer, bool owned_only,
                                                        bool is_root);
// ZeRO-2/3: `sharding` is not owned.
std::unique_ptr<GradientSync> MakeShardedGradientSync(ShardedParameters* sharding);

}  // namespace fam::dist
