// ShardedParameters: unit layouts, gathers with prefetch, in-place release, the backward boundary
// node, per-unit gradient reduce-scatter and owner accumulation.
#include "framework/dist/sharded_parameters.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "framework/autograd/node.h"
#include "framework/backends/registry.h"
#include "framework/dist/bucket_layout.h"
#include "framework/ops/ops.h"

namespace fam::dist {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Tensor FlatView(const Tensor& buffer, int64_t offset, const Shape& shape) {
  return Tensor::MakeView(buffer.storage(), shape, ContiguousStrides(shape),
                          buffer.offset() + offset, buffer.dtype());
}

// Identity in forward; in backward it first lets the sharding gather its unit again.
class UnitBoundary : public Node {
 public:
  UnitBoundary(ShardedParameters* sharding, int unit) : sharding_(sharding), unit_(unit) {}
  std::vector<Tensor> Backward(const Tensor& grad_output) override {
    sharding_->OnBackwardReach(unit_);
    return {grad_output};
  }
  std::string name() const override { return "ZeroUnitBoundary"; }

 private:
  ShardedParameters* sharding_;
  int unit_;
};

}  // namespace

ShardedParameters::ShardedParameters(std::shared_ptr<Communicator> comm,
                                     std::vector<NamedParameter> params, std::vector<int> unit_of,
                                     int num_units, bool shard_parameters)
    : comm_(std::move(comm)),
      params_(std::move(params)),
      unit_of_(std::move(unit_of)),
      num_units_(num_units),
      shard_parameters_(shard_parameters) {
  FAM_CHECK(comm_ != nullptr, "ShardedParameters: no communicator");
  FAM_CHECK(num_units_ >= 1 && unit_of_.size() == params_.size(),
            "ShardedParameters: ", unit_of_.size(), " unit indices for ", params_.size(),
            " parameters");
  const int world = comm_->world_size();
  std::vector<int64_t> trainable_numels, frozen_numels;
  if (!params_.empty()) grad_dtype_ = GradDType(params_[0].param.dtype());
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i].param;
    FAM_CHECK(unit_of_[i] >= 0 && unit_of_[i] < num_units_, "ShardedParameters: parameter '",
              params_[i].name, "' in unit ", unit_of_[i], " of ", num_units_);
    FAM_CHECK(p.dtype() == params_[0].param.dtype(), "ShardedParameters: parameter '",
              params_[i].name, "' is ", DTypeName(p.dtype()), ", the first one ",
              DTypeName(params_[0].param.dtype()));
    FAM_CHECK(p.is_contiguous() && p.offset() == 0 && p.storage()->nbytes() == p.nbytes(),
              "ShardedParameters: parameter '", params_[i].name, "' (", p.Describe(),
              ") does not own its whole storage");
    FAM_CHECK(p.device() == comm_->device(), "ShardedParameters: parameter '", params_[i].name,
              "' is on ", p.device().ToString(), ", the communicator on ",
              comm_->device().ToString());
    (p.requires_grad() ? trainable_numels : frozen_numels).push_back(p.numel());
  }
  // Owners balanced separately over the trainable and the frozen parameters.
  const std::vector<int> trainable_owners = AssignOwners(trainable_numels, world);
  const std::vector<int> frozen_owners = AssignOwners(frozen_numels, world);
  size_t t = 0, f = 0;
  for (const NamedParameter& p : params_)
    owners_.push_back(p.param.requires_grad() ? trainable_owners[t++] : frozen_owners[f++]);

  // Gradient units: the layer units, then each trainable root parameter alone (the root's
  // gradients arrive at both ends of backward: embeddings last, lm_head first).
  grad_unit_of_ = unit_of_;
  int grad_units = root();
  for (size_t i = 0; i < params_.size(); ++i) {
    if (unit_of_[i] == root() && params_[i].param.requires_grad()) grad_unit_of_[i] = grad_units++;
  }
  grad_units = std::max(grad_units, num_units_);
  slot_of_.assign(params_.size(), -1);
  for (int u = 0; u < num_units_; ++u)
    param_layout_.push_back(MakeLayout(unit_of_, u, !shard_parameters_));
  for (int u = 0; u < grad_units; ++u) {
    grad_layout_.push_back(MakeLayout(grad_unit_of_, u, true));
    const Layout& g = grad_layout_.back();
    for (size_t k = 0; k < g.params.size(); ++k) slot_of_[g.params[k]] = g.offsets[k];
  }
  // The owned parameters move into one shard buffer per unit (the all-gather's input).
  const int rank = comm_->rank();
  NoGradGuard no_grad;
  for (int u = 0; u < num_units_; ++u) {
    const Layout& l = param_layout_[u];
    Tensor shard =
        Tensor::Empty({l.counts[rank]}, params_.empty() ? DType::kF32 : params_[0].param.dtype(),
                      comm_->device());
    for (size_t k = 0; k < l.params.size(); ++k) {
      Tensor& p = params_[l.params[k]].param;
      if (owners_[l.params[k]] != rank) continue;
      const int64_t at = l.offsets[k] - l.displs[rank];
      ops::CopyInPlace(FlatView(shard, at, p.shape()), p);
      p.storage()->Release("re-homed into a ZeRO shard buffer");
      p.storage()->MaterializeInto(shard.storage(),
                                   (shard.offset() + at) * DTypeSize(shard.dtype()));
    }
    shards_.push_back(shard);
  }
  gathered_.assign(num_units_, Tensor());
  gather_work_.assign(num_units_, Work());
  state_.assign(num_units_, State::kGathered);
  prefetched_.assign(num_units_, false);
  release_pending_.assign(num_units_, false);
  boundaries_.assign(num_units_, 0);
  boundaries_run_.assign(num_units_, 0);
  reached_.assign(num_units_, false);
  grad_buffers_.assign(grad_units, Tensor());
  grad_pending_.assign(grad_units, 0);
  grad_launched_.assign(grad_units, false);
  arrived_.assign(params_.size(), 0);
  present_.assign(params_.size(), 0);
  accum_.assign(params_.size(), Tensor());
  for (size_t i = 0; i < params_.size(); ++i) {
    if (params_[i].param.requires_grad())
      params_[i].param.impl().grad_ready_hook = [this, i] { OnGradReady(i); };
  }
}

ShardedParameters::~ShardedParameters() {
  for (NamedParameter& p : params_) p.param.impl().grad_ready_hook = nullptr;
}

ShardedParameters::Layout ShardedParameters::MakeLayout(const std::vector<int>& unit_of, int unit,
                                                        bool trainable_only) const {
  Layout l;
  const int world = comm_->world_size();
  l.counts.assign(world, 0);
  l.displs.assign(world, 0);
  for (int r = 0; r < world; ++r) {
    l.displs[r] = l.numel;
    for (size_t i = 0; i < params_.size(); ++i) {
      if (unit_of[i] != unit || owners_[i] != r) continue;
      if (trainable_only && !params_[i].param.requires_grad()) continue;
      l.params.push_back(i);
      l.offsets.push_back(l.numel);
      l.numel += params_[i].param.numel();
      l.counts[r] += params_[i].param.numel();
    }
  }
  return l;
}

std::vector<NamedParameter> ShardedParameters::trainable() const {
  std::vector<NamedParameter> out;
  for (const NamedParameter& p : params_)
    if (p.param.requires_grad()) out.push_back(p);
  return out;
}

std::vector<int> ShardedParameters::trainable_owners() const {
  std::vector<int> out;
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].param.requires_grad()) out.push_back(owners_[i]);
  return out;
}

int64_t ShardedParameters::persistent_param_bytes() const {
  int64_t bytes = 0;
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!shard_parameters_ || owners_[i] == comm_->rank())
      bytes += static_cast<int64_t>(params_[i].param.nbytes());
  }
  return bytes;
}

void ShardedParameters::Shard() {
  if (!shard_parameters_) return;
  for (int u = 0; u < num_units_; ++u) {
    state_[u] = State::kGathered;
    Release(u);
  }
  stats_.peak_gathered_bytes = 0;
}

// ---- parameter gathers ----

void ShardedParameters::LaunchGather(int u, bool prefetch) {
  if (state_[u] != State::kReleased) return;
  const Layout& l = param_layout_[u];
  gathered_[u] = Tensor::Empty({l.numel}, shards_[u].dtype(), comm_->device());
  gathered_bytes_ += static_cast<int64_t>(gathered_[u].nbytes());
  // The peak counts training (ZeRO-3 evaluation and checkpoints gather everything on purpose).
  if (armed_ || !shard_parameters_)
    stats_.peak_gathered_bytes = std::max(stats_.peak_gathered_bytes, gathered_bytes_);
  gather_work_[u] = comm_->AllGather(shards_[u], gathered_[u], l.counts);
  state_[u] = State::kGathering;
  prefetched_[u] = prefetch;
  ++stats_.gathers;
  if (prefetch) ++stats_.prefetched;
}

void ShardedParameters::WaitGather(int u) {
  if (state_[u] == State::kGathered) return;
  if (state_[u] == State::kReleased) LaunchGather(u, false);
  if (prefetched_[u] && gather_work_[u].Done()) ++stats_.prefetch_ready;
  const double begin = Now();
  gather_work_[u].Wait();
  stats_.gather_wait_s += Now() - begin;
  gather_work_[u] = Work();
  const Layout& l = param_layout_[u];
  const int rank = comm_->rank();
  const size_t elem = DTypeSize(gathered_[u].dtype());
  for (size_t k = 0; k < l.params.size(); ++k) {
    if (owners_[l.params[k]] == rank) continue;
    Tensor& p = params_[l.params[k]].param;
    if (shard_parameters_) {
      p.storage()->MaterializeInto(gathered_[u].storage(),
                                   (gathered_[u].offset() + l.offsets[k]) * elem);
    } else {
      ops::CopyInPlace(p, FlatView(gathered_[u], l.offsets[k], p.shape()));
    }
  }
  if (!shard_parameters_) {  // ZeRO-2: the parameters hold their own copies
    gathered_bytes_ -= static_cast<int64_t>(gathered_[u].nbytes());
    gathered_[u] = Tensor();
  }
  state_[u] = State::kGathered;
}

void ShardedParameters::Release(int u) {
  if (!shard_parameters_ || state_[u] == State::kReleased) return;
  if (state_[u] == State::kGathering) WaitGather(u);
  const Layout& l = param_layout_[u];
  const int rank = comm_->rank();
  for (size_t k = 0; k < l.params.size(); ++k) {
    if (owners_[l.params[k]] == rank) continue;
    const NamedParameter& p = params_[l.params[k]];
    p.param.storage()->Release(absl::StrCat("parameter '", p.name, "' is sharded (ZeRO-3) and ",
                                            "not gathered here; it is owned by rank ",
                                            owners_[l.params[k]]));
  }
  if (gathered_[u].defined()) gathered_bytes_ -= static_cast<int64_t>(gathered_[u].nbytes());
  gathered_[u] = Tensor();
  state_[u] = State::kReleased;
  release_pending_[u] = false;
}

void ShardedParameters::GatherAll() {
  NoGradGuard no_grad;
  if (shard_parameters_) {
    for (int u = 0; u < num_units_; ++u) LaunchGather(u, false);
    for (int u = 0; u < num_units_; ++u) WaitGather(u);
    return;
  }
  // ZeRO-2: every unit's owners send their (updated) parameters to everyone, two units in flight.
  for (int u = 0; u < num_units_; ++u) {
    state_[u] = State::kReleased;
    LaunchGather(u, false);
    if (u > 0) WaitGather(u - 1);
  }
  if (num_units_ > 0) WaitGather(num_units_ - 1);
}

void ShardedParameters::ReleaseAll() {
  for (int u = 0; u < num_units_; ++u) Release(u);
}

// ---- forward and backward of one micro-batch ----

void ShardedParameters::BeginMicroBatch() {
  FAM_CHECK(!armed_, "ShardedParameters: BeginMicroBatch twice without EndMicroBatch");
  armed_ = true;
  std::fill(arrived_.begin(), arrived_.end(), 0);
  for (size_t g = 0; g < grad_layout_.size(); ++g) {
    grad_pending_[g] = static_cast<int>(grad_layout_[g].params.size());
    grad_launched_[g] = false;
  }
  for (int u = 0; u < num_units_; ++u) {
    boundaries_[u] = boundaries_run_[u] = 0;
    reached_[u] = false;
  }
  if (!shard_parameters_) return;
  NoGradGuard no_grad;
  LaunchGather(root(), false);
  if (num_units_ > 1) LaunchGather(0, true);
  WaitGather(root());
}

void ShardedParameters::BeforeUnit(int u) {
  if (!shard_parameters_) return;
  FAM_CHECK(u >= 0 && u < root(), "ShardedParameters: BeforeUnit(", u, ") of ", root(),
            " layer units");
  NoGradGuard no_grad;
  for (int v = 0; v < root(); ++v)
    if (release_pending_[v] && v != u) Release(v);
  WaitGather(u);
  if (u + 1 < root()) LaunchGather(u + 1, true);
}

Tensor ShardedParameters::AfterUnit(int u, const Tensor& output) {
  if (!shard_parameters_) return output;
  // Released when the next unit starts (the FAM model runs a layer twice before that); the last
  // layer stays gathered for backward, which starts with it.
  if (u + 1 < root()) release_pending_[u] = true;
  if (!GradEnabled() || !(output.requires_grad() || output.grad_fn())) return output;
  Tensor out = Tensor::MakeView(output.storage(), output.shape(), output.strides(), output.offset(),
                                output.dtype());
  RecordNode(std::make_shared<UnitBoundary>(this, u), {output}, out);
  ++boundaries_[u];
  return out;
}

void ShardedParameters::OnBackwardReach(int u) {
  NoGradGuard no_grad;
  const bool first = !reached_[u];
  reached_[u] = true;
  if (first) WaitGather(u);
  // Every output of unit u has its gradient: nothing of unit u + 1 needs its parameters any more.
  if (++boundaries_run_[u] == boundaries_[u] && u + 1 < root()) Release(u + 1);
  if (first && u > 0) LaunchGather(u - 1, true);  // prefetch, after the release when possible
}

void ShardedParameters::EndMicroBatch() {
  FAM_CHECK(armed_, "ShardedParameters: EndMicroBatch without BeginMicroBatch");
  NoGradGuard no_grad;
  // Units with a gradient that did not come (zeros stand in), in unit order on every rank.
  for (int u = 0; u < static_cast<int>(grad_layout_.size()); ++u) {
    if (grad_launched_[u] || grad_layout_[u].params.empty()) continue;
    const Layout& g = grad_layout_[u];
    if (!grad_buffers_[u].defined()) {
      grad_buffers_[u] = Tensor::Empty({g.numel}, grad_dtype_, comm_->device());
      NoteGradBytes(static_cast<int64_t>(grad_buffers_[u].nbytes()));
    }
    for (size_t k = 0; k < g.params.size(); ++k) {
      if (!arrived_[g.params[k]])
        ops::FillInPlace(
            FlatView(grad_buffers_[u], g.offsets[k], {params_[g.params[k]].param.numel()}), 0.0);
    }
    LaunchReduce(u);
  }
  Drain(true);
  armed_ = false;
  if (shard_parameters_) ReleaseAll();
}

void ShardedParameters::FinishStep() {
  FAM_CHECK(!armed_, "ShardedParameters: FinishStep inside a micro-batch");
  NoGradGuard no_grad;
  Tensor present = Tensor::FromInts(std::vector<int64_t>(present_.begin(), present_.end()),
                                    {static_cast<int64_t>(present_.size())}, DType::kI32);
  Tensor present_dev = comm_->device().is_cpu() ? present : ops::To(present, comm_->device());
  comm_->AllReduce(present_dev, ReduceOp::kMax).Wait();
  if (!present_dev.same(present)) present = ops::To(present_dev, Device::CPU());
  const std::vector<int64_t> any = present.ToInts();
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& p = params_[i].param;
    if (accum_[i].defined() && any[i]) {
      p.set_grad(accum_[i]);
    } else {
      p.zero_grad();
    }
    if (accum_[i].defined()) NoteGradBytes(-static_cast<int64_t>(accum_[i].nbytes()));
    accum_[i] = Tensor();
  }
  std::fill(present_.begin(), present_.end(), 0);
}

// ---- gradients ----

void ShardedParameters::NoteGradBytes(int64_t delta) {
  grad_bytes_ += delta;
  stats_.peak_grad_bytes = std::max(stats_.peak_grad_bytes, grad_bytes_);
}

void ShardedParameters::OnGradReady(size_t i) {
  if (!armed_ || arrived_[i]) return;
  Tensor& p = params_[i].param;
  const Tensor grad = p.grad();
  if (!grad.defined()) return;
  arrived_[i] = 1;
  present_[i] = 1;
  const int u = grad_unit_of_[i];
  if (!grad_buffers_[u].defined()) {
    grad_buffers_[u] = Tensor::Empty({grad_layout_[u].numel}, grad_dtype_, comm_->device());
    NoteGradBytes(static_cast<int64_t>(grad_buffers_[u].nbytes()));
  }
  // A bf16 or f32 contribution: converted to grad_dtype_ (exact for bf16).
  ops::CopyInPlace(FlatView(grad_buffers_[u], slot_of_[i], grad.shape()), grad);
  p.zero_grad();  // the local gradient is in the unit buffer now
  if (--grad_pending_[u] == 0) LaunchReduce(u);
}

void ShardedParameters::LaunchReduce(int u) {
  const Layout& g = grad_layout_[u];
  InFlight f;
  f.unit = u;
  f.reduced = Tensor::Empty({g.counts[comm_->rank()]}, grad_buffers_[u].dtype(), comm_->device());
  NoteGradBytes(static_cast<int64_t>(f.reduced.nbytes()));
  f.work = comm_->ReduceScatter(grad_buffers_[u], f.reduced, g.counts);
  grad_launched_[u] = true;
  ++stats_.reduce_scatters;
  in_flight_.push_back(std::move(f));
  Drain(false);
  // At most kMaxInFlight units' gradient buffers exist at once: backward waits for the oldest.
  constexpr size_t kMaxInFlight = 2;
  while (in_flight_.size() > kMaxInFlight) {
    const InFlight& oldest = in_flight_.front();
    oldest.work.Wait();
    Drain(false);
  }
}

void ShardedParameters::Drain(bool wait_all) {
  const int rank = comm_->rank();
  const double scale = 1.0 / comm_->world_size();
  while (!in_flight_.empty() && (wait_all || in_flight_.front().work.Done())) {
    InFlight f = std::move(in_flight_.front());
    in_flight_.pop_front();
    f.work.Wait();
    const int u = f.unit;
    const Layout& g = grad_layout_[u];
    for (size_t k = 0; k < g.params.size(); ++k) {
      const size_t i = g.params[k];
      if (owners_[i] != rank) continue;
      const Tensor src =
          FlatView(f.reduced, g.offsets[k] - g.displs[rank], params_[i].param.shape());
      if (!accum_[i].defined()) {
        accum_[i] = Tensor::Zeros(params_[i].param.shape(), grad_dtype_, comm_->device());
        NoteGradBytes(static_cast<int64_t>(accum_[i].nbytes()));
      }
      ops::AddInPlace(accum_[i], src, scale);
    }
    NoteGradBytes(-static_cast<int64_t>(f.reduced.nbytes() + grad_buffers_[u].nbytes()));
    grad_buffers_[u] = Tensor();
  }
}

}  // namespace fam::dist
