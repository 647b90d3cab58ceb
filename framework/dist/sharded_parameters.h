// ZeRO-2 and ZeRO-3 data parallelism. Every parameter has one owner rank (AssignOwners, whole
// parameters, so every optimizer stays exact); parameters are grouped in units (the trainer uses
// one unit per decoder layer, in forward order, plus a last "root" unit: embeddings, final norm,
// lm_head, FAM prompt). Per unit, a flat layout lists its parameters owner by owner, so one
// reduce-scatter / all-gather with per-rank counts moves exactly each owner's parameters.
//
// Gradients (both stages): each micro-batch's backward copies every ready gradient into its unit's
// flat buffer (the root's parameters are gradient units of their own) and drops it at once; a unit
// whose gradients have all arrived is reduce-scattered to the owners while backward goes on (at
// most two units in flight: backward waits for the oldest beyond that), and each owner accumulates
// the averaged result of its own parameters. FinishStep() hands the owners their gradients
// (non-owners keep none); the optimizer (Zero1Optimizer) updates the owned parameters.
// Gradient buffers, reduce-scatters and owned accumulators are in the gradient dtype (GradDType,
// framework/autograd/node.h): f32 for bf16 parameters (mixed precision), whose micro-batch
// gradients arrive in f32 or bf16; the parameters themselves are gathered in their own dtype, so
// with bf16 parameters every rank computes with the bf16 copies of the owners' f32 masters (kept by
// the optimizer as state of the owned parameters).
//
// ZeRO-2 keeps every parameter replicated: GatherAll() after the update copies the owners'
// parameters to everyone. ZeRO-3 keeps only the owned parameters (in one persistent shard buffer
// per unit); the others' storages are released (framework/core/storage.h) and re-materialised,
// in place, inside a gathered unit buffer: before the unit's forward (BeforeUnit, which also
// prefetches the next unit), and again when backward reaches the unit (the identity returned by
// AfterUnit, which prefetches the previous unit). A unit is released when the next unit starts its
// forward (the last layer stays for backward), and in backward once every boundary of the unit
// below it has run. The root unit stays gathered from BeginMicroBatch to EndMicroBatch.
// Frozen parameters (requires_grad false, e.g. a LoRA base) are sharded and gathered with their
// unit under ZeRO-3 and replicated under ZeRO-2; they get no gradient and no optimizer state.
// Every rank issues the same collectives in the same order as long as the graphs are the same.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "framework/dist/communicator.h"
#include "framework/optim/optimizer.h"

namespace fam::dist {

struct ShardingStats {
  int gathers = 0;                  // unit all-gathers launched
  int prefetched = 0;               // of them, launched before the unit was needed
  int prefetch_ready = 0;           // of those, complete when the unit was needed
  int reduce_scatters = 0;          // unit gradient reduce-scatters launched
  double gather_wait_s = 0;         // time spent waiting for gathers
  int64_t peak_gathered_bytes = 0;  // gathered (non-owned) parameter bytes held at once
  int64_t peak_grad_bytes = 0;      // gradient bytes held at once (buffers + owned accumulators)
};

class ShardedParameters {
 public:
  // params: every parameter of the model (trainable or frozen), unit_of[i] its unit in
  // [0, num_units); units 0 .. num_units-2 run in this order in forward; unit num_units-1 is the
  // root. shard_parameters: ZeRO-3 (false: ZeRO-2). Parameters must be contiguous, of one dtype
  // (f32, or bf16 with f32 gradients), each the only user of its storage. Installs gradient hooks
  // on the trainable parameters.
  ShardedParameters(std::shared_ptr<Communicator> comm, std::vector<NamedParameter> params,
                    std::vector<int> unit_of, int num_units, bool shard_parameters);
  ~ShardedParameters();  // removes the hooks
  ShardedParameters(const ShardedParameters&) = delete;
  ShardedParameters& operator=(const ShardedParameters&) = delete;

  // ZeRO-3: releases the non-owned parameters (call once the weights agree on every rank).
  void Shard();

  // One micro-batch: BeginMicroBatch, forward (BeforeUnit / AfterUnit around each layer unit),
  // backward, EndMicroBatch. FinishStep after the last micro-batch of a step.
  void BeginMicroBatch();
  void BeforeUnit(int unit);
  Tensor AfterUnit(int unit, const Tensor& output);
  void EndMicroBatch();
  void FinishStep();

  // Every unit gathered (ZeRO-3: for evaluation and checkpoints; ZeRO-2: after the update, the
  // owners' parameters to every rank). ReleaseAll undoes it under ZeRO-3.
  void GatherAll();
  void ReleaseAll();

  // Reached by the boundary node of `unit` in backward (public for the node; not for callers).
  void OnBackwardReach(int unit);

  bool shard_parameters() const { return shard_parameters_; }
  const std::vector<int>& owners() const { return owners_; }
  // The trainable parameters, in the order given, and their owners (for Zero1Optimizer).
  std::vector<NamedParameter> trainable() const;
  std::vector<int> trainable_owners() const;
  // Parameter bytes this rank keeps between steps (ZeRO-3: the owned ones; ZeRO-2: all).
  int64_t persistent_param_bytes() const;
  const ShardingStats& stats() const { return stats_; }
  void ResetStats() { stats_ = ShardingStats(); }

 private:
  struct Layout {  // one unit's parameters (a subset), owner by owner
    std::vector<size_t> params;
    std::vector<int64_t> offsets;  // per member, in elements
    std::vector<int64_t> counts;   // per rank
    std::vector<int64_t> displs;   // per rank
    int64_t numel = 0;
  };
  struct InFlight {
    int unit;
    Work work;
    Tensor reduced;  // this rank's segment
  };
  enum class State { kReleased, kGathering, kGathered };

  Layout MakeLayout(const std::vector<int>& unit_of, int unit, bool trainable_only) const;
  void LaunchGather(int unit, bool prefetch);
  void WaitGather(int unit);
  void Release(int unit);
  void OnGradReady(size_t param);
  void LaunchReduce(int unit);
  void Drain(bool wait_all);
  void NoteGradBytes(int64_t delta);
  int root() const { return num_units_ - 1; }

  std::shared_ptr<Communicator> comm_;
  std::vector<NamedParameter> params_;
  std::vector<int> unit_of_;
  int num_units_;
  bool shard_parameters_;
  std::vector<int> owners_;
  DType grad_dtype_ = DType::kF32;    // GradDType of the parameters' dtype
  std::vector<Layout> param_layout_;  // ZeRO-3: all parameters; ZeRO-2: trainable ones
  std::vector<int> grad_unit_of_;     // per parameter: its gradient unit (see the constructor)
  std::vector<Layout> grad_layout_;   // per gradient unit: its trainable parameters
  std::vector<int64_t> slot_of_;      // per parameter: offset in its unit's grad layout
  std::vector<Tensor> shards_;        // per unit: the owned parameters (their persistent memory)
  std::vector<Tensor> gathered_;      // per unit: the gathered flat buffer (ZeRO-3) while held
  std::vector<Work> gather_work_;
  std::vector<State> state_;
  std::vector<bool> prefetched_;
  std::vector<bool> release_pending_;  // forward: release when the next unit starts
  std::vector<int> boundaries_, boundaries_run_;
  std::vector<bool> reached_;
  // Gradients.
  bool armed_ = false;
  std::vector<Tensor> grad_buffers_;  // per gradient unit, this micro-batch
  std::vector<int> grad_pending_;
  std::vector<bool> grad_launched_;
  std::vector<int32_t> arrived_;  // per parameter, this micro-batch
  std::vector<int32_t> present_;  // per parameter, this step
  std::vector<Tensor> accum_;     // per owned trainable parameter: averaged gradient so far
  std::deque<InFlight> in_flight_;
  int64_t gathered_bytes_ = 0, grad_bytes_ = 0;
  ShardingStats stats_;
};

}  // namespace fam::dist
