// Zero1Optimizer: owned-parameter optimizer, state gather for checkpoints, reshard on load.
#include "framework/dist/zero_optimizer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "framework/autograd/node.h"
#include "framework/dist/collective_helpers.h"
#include "framework/ops/ops.h"
#include "nlohmann/json.hpp"

namespace fam::dist {
namespace {

DType DTypeFromName(const std::string& name) {
  for (DType d : {DType::kF32, DType::kF64, DType::kBF16, DType::kF16, DType::kI32, DType::kI64})
    if (name == DTypeName(d)) return d;
  ThrowError(absl::StatusCode::kInternal, "zero1: unknown dtype name '", name, "'");
}

}  // namespace

Zero1Optimizer::Zero1Optimizer(std::shared_ptr<Communicator> comm,
                               std::vector<NamedParameter> params, std::vector<int> owners,
                               const Factory& make, std::function<void()> gather_parameters)
    : Optimizer(std::move(params), /*masters=*/false),  // the inner optimizer keeps them
      comm_(std::move(comm)),
      owners_(std::move(owners)),
      gather_parameters_(std::move(gather_parameters)) {
  FAM_CHECK(owners_.size() == params_.size(), "zero1: ", owners_.size(), " owners for ",
            params_.size(), " parameters");
  std::vector<NamedParameter> owned;
  for (size_t i = 0; i < params_.size(); ++i) {
    param_index_[params_[i].name] = static_cast<int>(i);
    if (owners_[i] == comm_->rank()) owned.push_back(params_[i]);
  }
  inner_ = make(std::move(owned));
  FAM_CHECK(inner_ != nullptr, "zero1: the optimizer factory returned nothing");
}

void Zero1Optimizer::Step(double lr) {
  AdvanceStep();
  inner_->Step(lr);
  if (gather_parameters_) gather_parameters_();
}

std::vector<std::pair<Tensor, Tensor>> Zero1Optimizer::MasterWeights() const {
  return inner_->MasterWeights();
}

std::vector<std::pair<std::string, Tensor>> Zero1Optimizer::ParameterState() const {
  std::vector<std::pair<std::string, Tensor>> state = inner_->StateTensors();
  state.erase(state.begin());  // the step counter; the base class adds its own
  return state;
}

int64_t Zero1Optimizer::LocalStateBytes() const {
  int64_t bytes = 0;
  for (const auto& [name, t] : ParameterState()) bytes += static_cast<int64_t>(t.nbytes());
  return bytes;
}

int Zero1Optimizer::ParamOfStateName(const std::string& name) const {
  for (size_t dot = name.rfind('.'); dot != std::string::npos && dot > 0;
       dot = name.rfind('.', dot - 1)) {
    auto it = param_index_.find(name.substr(0, dot));
    if (it != param_index_.end()) return it->second;
  }
  return -1;
}

std::vector<std::pair<std::string, Tensor>> Zero1Optimizer::GatherStateTensors(int root) const {
  NoGradGuard no_grad;
  const int rank = comm_->rank();
  std::vector<std::pair<std::string, Tensor>> local = ParameterState();
  nlohmann::json meta = nlohmann::json::array();
  for (const auto& [name, t] : local) {
    meta.push_back({{"name", name}, {"dtype", DTypeName(t.dtype())}, {"shape", t.shape()}});
  }
  const std::vector<std::string> all = AllGatherStrings(*comm_, meta.dump());
  struct Entry {
    int param;
    std::string name;
    Tensor tensor;
  };
  std::vector<Entry> gathered;  // on root
  // One tensor at a time from its owner to root; ranks that are neither receive into a scratch
  // buffer, so no rank but root ever holds more than one foreign tensor.
  Tensor scratch;
  for (int r = 0; r < comm_->world_size(); ++r) {
    const nlohmann::json entries = nlohmann::json::parse(all[r]);
    for (size_t k = 0; k < entries.size(); ++k) {
      const std::string name = entries[k]["name"].get<std::string>();
      const Shape shape = entries[k]["shape"].get<Shape>();
      const DType dtype = DTypeFromName(entries[k]["dtype"].get<std::string>());
      if (r == root) {
        if (rank == root)
          gathered.push_back({ParamOfStateName(name), name, ops::Clone(local[k].second)});
        continue;
      }
      Tensor buffer;
      if (rank == r) {
        buffer = ops::Contiguous(local[k].second);
      } else if (rank == root) {
        buffer = Tensor::Empty(shape, dtype, comm_->device());
      } else {
        const int64_t n = NumElements(shape);
        if (!scratch.defined() || scratch.dtype() != dtype || scratch.numel() < n)
          scratch = Tensor::Empty({n}, dtype, comm_->device());
        buffer = scratch.slice(0, 0, n);
      }
      comm_->Broadcast(buffer, r).Wait();
      if (rank == root) gathered.push_back({ParamOfStateName(name), name, buffer});
    }
  }
  std::vector<std::pair<std::string, Tensor>> out;
  if (rank != root) return out;
  // The unsharded order: step, then parameter by parameter (each owner lists its slots in order).
  std::stable_sort(gathered.begin(), gathered.end(),
                   [](const Entry& a, const Entry& b) { return a.param < b.param; });
  out.emplace_back(kOptimizerStepName, Tensor::FromInts({step_count()}, {1}));
  for (Entry& e : gathered) out.emplace_back(std::move(e.name), std::move(e.tensor));
  return out;
}

absl::Status Zero1Optimizer::LoadStateTensors(const std::map<std::string, Tensor>& tensors) {
  const int rank = comm_->rank();
  std::map<std::string, Tensor> mine;
  for (const auto& [name, t] : tensors) {
    if (name == kOptimizerStepName) {
      mine.emplace(name, t);
      continue;
    }
    const int p = ParamOfStateName(name);
    if (p < 0) {
      return absl::InvalidArgumentError(absl::StrCat("optimizer state: unexpected tensor '", name,
                                                     "' (not a state of this optimizer)"));
    }
    if (owners_[p] == rank) mine.emplace(name, t);
  }
  if (absl::Status s = inner_->LoadStateTensors(mine); !s.ok()) return s;
  return Optimizer::LoadStateTensors(mine);  // the step counter of this wrapper
}

}  // namespace fam::dist
