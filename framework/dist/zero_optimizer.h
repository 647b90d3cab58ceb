// ZeRO stage 1: optimizer state sharded across ranks by parameter. Each parameter has one owner
// rank (GradReducer::owners(), balanced by size); the owner alone keeps the
// optimizer state of that parameter and updates it, from the gradient the reducer reduce-scattered
// to it; then every rank receives the updated parameters (GradReducer::GatherParameters). Sharding
// whole parameters keeps every optimizer exact, including Adafactor's factored, per-matrix state,
// so a sharded run computes the same updates as an unsharded one. The f32 master copies of bf16
// parameters are optimizer state like the rest: only the owner keeps (and checkpoints) them.
//
// Checkpoints: StateTensors() is this rank's part (the step counter and the owned parameters'
// state, with the unsharded names), which the trainer writes as this rank's optimizer shard
// (io::CheckpointManager::SaveSharded). GatherStateTensors() (collective) returns on `root` what an
// unsharded optimizer's StateTensors() would. LoadStateTensors() takes a full state (or the union
// of every rank's shard) and keeps the entries of the parameters this rank owns, so a checkpoint
// written with N ranks resumes with any other number (and without ZeRO).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "framework/dist/communicator.h"
#include "framework/optim/optimizer.h"

namespace fam::dist {

class Zero1Optimizer : public Optimizer {
 public:
  using Factory = std::function<std::unique_ptr<Optimizer>(std::vector<NamedParameter>)>;

  // owners[i]: the rank that updates params[i]. make: builds the real optimizer over the owned
  // parameters. gather_parameters: called after each update (GradReducer::GatherParameters).
  Zero1Optimizer(std::shared_ptr<Communicator> comm, std::vector<NamedParameter> params,
                 std::vector<int> owners, const Factory& make,
                 std::function<void()> gather_parameters);

  // Updates the owned parameters, then gathers all parameters on every rank.
  void Step(double lr) override;

  // Collective (every rank must call it): the full, unsharded state on `root` (names and order as
  // an unsharded optimizer's StateTensors(): step, then per parameter); other ranks get {}.
  std::vector<std::pair<std::string, Tensor>> GatherStateTensors(int root = 0) const;

  // Takes a full (unsharded) state and restores the owned parameters' part. Entries of parameters
  // owned by other ranks are skipped; a name that belongs to no parameter is an error.
  absl::Status LoadStateTensors(const std::map<std::string, Tensor>& tensors) override;

  // The owned parameters' master copies (held by the inner optimizer).
  std::vector<std::pair<Tensor, Tensor>> MasterWeights() const override;

  // Bytes of optimizer state held by this rank.
  int64_t LocalStateBytes() const;
  const Optimizer& inner() const { return *inner_; }

 protected:
  std::vector<std::pair<std::string, Tensor>> ParameterState() const override;

 private:
  // Index of the parameter a state name "<param>.<slot>" belongs to, or -1.
  int ParamOfStateName(const std::string& name) const;

  std::shared_ptr<Communicator> comm_;
  std::vector<int> owners_;
  std::unique_ptr<Optimizer> inner_;
  std::function<void()> gather_parameters_;
  std::map<std::string, int> param_index_;
};

}  // namespace fam::dist
