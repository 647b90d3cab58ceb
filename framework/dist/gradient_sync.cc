// The none / DDP / ZeRO-1 / ZeRO-2/3 gradient synchronisations of a training step.
#include "framework/dist/gradient_sync.h"

#include "framework/optim/grad_clip.h"

namespace fam::dist {
namespace {

class LocalGradientSync final : public GradientSync {
 public:
  void BeginMicroBatch(bool) override {}
  void EndMicroBatch() override {}
  double Finish(const std::vector<NamedParameter>& params) override {
    return GradSumSquares(params);
  }
};

class AllReduceGradientSync final : public GradientSync {
 public:
  AllReduceGradientSync(GradReducer* reducer, bool owned_only, bool is_root)
      : reducer_(reducer), owned_only_(owned_only), is_root_(is_root) {}
  void BeginMicroBatch(bool last) override {
    // Buckets are reduced as they get ready during the last micro-batch's backward.
    if (last) reducer_->Arm();
  }
  void EndMicroBatch() override {}
  double Finish(const std::vector<NamedParameter>& params) override {
    reducer_->Finish();  // averaged over ranks (ZeRO-1: only the owned gradients kept)
    // ZeRO-1: each rank sums its own gradients; otherwise rank 0's copy (all are equal) counts.
    return owned_only_ || is_root_ ? GradSumSquares(params) : 0.0;
  }
  SyncStats last_stats() const override {
    const ReducerStats& rs = reducer_->last_stats();
    return {true, rs.comm_s, rs.wait_s};
  }

 private:
  GradReducer* reducer_;
  bool owned_only_, is_root_;
};

class ShardedGradientSync final : public GradientSync {
 public:
  explicit ShardedGradientSync(ShardedParameters* sharding) : sharding_(sharding) {}
  void BeginMicroBatch(bool) override { sharding_->BeginMicroBatch(); }
  void EndMicroBatch() override { sharding_->EndMicroBatch(); }
  double Finish(const std::vector<NamedParameter>& params) override {
    // The owners hold their reduced gradients (others' are released): the sum over ranks adds the
    // shards.
    sharding_->FinishStep();
    return GradSumSquares(params);
  }

 private:
  ShardedParameters* sharding_;
};

}  // namespace

std::unique_ptr<GradientSync> MakeLocalGradientSync() {
  return std::make_unique<LocalGradientSync>();
}

std::unique_ptr<GradientSync> MakeAllReduceGradientSync(GradReducer* reducer, bool owned_only,
                                                        bool is_root) {
  return std::make_unique<AllReduceGradientSync>(reducer, owned_only, is_root);
}

std::unique_ptr<GradientSync> MakeShardedGradientSync(ShardedParameters* sharding) {
  return std::make_unique<ShardedGradientSync>(sharding);
}

}  // namespace fam::dist
