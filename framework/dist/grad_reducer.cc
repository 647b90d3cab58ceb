// GradReducer: hooks, bucket copies, in-order launches, write-back and ZeRO-1 parameter gather.
#include "framework/dist/grad_reducer.h"

#include <chrono>

#include "framework/autograd/node.h"
#include "framework/backends/registry.h"
#include "framework/ops/ops.h"

namespace fam::dist {
namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

GradReducer::GradReducer(std::shared_ptr<Communicator> comm, std::vector<NamedParameter> params,
                         const ReducerOptions& options)
    : comm_(std::move(comm)), params_(std::move(params)), options_(options) {
  FAM_CHECK(comm_ != nullptr, "GradReducer: no communicator");
  FAM_CHECK(options.bucket_bytes > 0, "GradReducer: bucket size ", options.bucket_bytes,
            " bytes must be > 0");
  for (size_t i = 0; i < params_.size(); ++i) {
    const Tensor& p = params_[i].param;
    if (i == 0) dtype_ = GradDType(p.dtype());
    FAM_CHECK(GradDType(p.dtype()) == dtype_, "GradReducer: parameter '", params_[i].name,
              "' has gradients in ", DTypeName(GradDType(p.dtype())), ", the others in ",
              DTypeName(dtype_));
    FAM_CHECK(p.is_contiguous(), "GradReducer: parameter '", params_[i].name, "' (", p.Describe(),
              ") is not contiguous");
    FAM_CHECK(p.device() == comm_->device(), "GradReducer: parameter '", params_[i].name,
              "' is on ", p.device().ToString(), ", the communicator on ",
              comm_->device().ToString());
    numels_.push_back(p.numel());
  }
  const int world = comm_->world_size();
  owners_ = options_.shard ? AssignOwners(numels_, world) : std::vector<int>(params_.size(), 0);
  std::vector<size_t> order;
  for (size_t i = params_.size(); i-- > 0;) order.push_back(i);
  const int64_t bucket_elems =
      std::max<int64_t>(1, options_.bucket_bytes / static_cast<int64_t>(DTypeSize(dtype_)));
  layout_ = MakeBucketLayout(numels_, order, owners_, world, bucket_elems);
  Allocate();
  for (size_t i = 0; i < params_.size(); ++i)
    params_[i].param.impl().grad_ready_hook = [this, i] { OnGradReady(i); };
}

GradReducer::~GradReducer() {
  for (NamedParameter& p : params_) p.param.impl().grad_ready_hook = nullptr;
}

void GradReducer::Allocate() {
  buffers_.clear();
  shards_.clear();
  const Device device = comm_->device();
  for (const Bucket& b : layout_.buckets) {
    buffers_.push_back(Tensor::Zeros({b.numel}, dtype_, device));
    if (options_.shard)
      shards_.push_back(Tensor::Zeros({b.owner_counts[comm_->rank()]}, dtype_, device));
  }
  works_.assign(layout_.buckets.size(), Work());
  pending_.assign(layout_.buckets.size(), 0);
  arrived_.assign(params_.size(), 0);
}

int64_t GradReducer::buffer_bytes() const {
  int64_t bytes = 0;
  for (const Tensor& t : buffers_) bytes += static_cast<int64_t>(t.nbytes());
  for (const Tensor& t : shards_) bytes += static_cast<int64_t>(t.nbytes());
  return bytes;
}

Tensor GradReducer::SlotView(const Tensor& buffer, int64_t offset, const Shape& shape) const {
  return Tensor::MakeView(buffer.storage(), shape, ContiguousStrides(shape),
                          buffer.offset() + offset, buffer.dtype());
}

void GradReducer::Arm() {
  FAM_CHECK(!armed_, "GradReducer: Arm() twice without Finish()");
  armed_ = true;
  next_launch_ = 0;
  arrival_order_.clear();
  std::fill(arrived_.begin(), arrived_.end(), 0);
  for (size_t b = 0; b < layout_.buckets.size(); ++b) {
    pending_[b] = static_cast<int>(layout_.buckets[b].slots.size());
    works_[b] = Work();
  }
  stats_ = ReducerStats();
  stats_.buckets = static_cast<int>(layout_.buckets.size());
}

void GradReducer::OnGradReady(size_t i) {
  if (!armed_ || arrived_[i]) return;
  const Tensor grad = params_[i].param.grad();
  if (!grad.defined()) return;
  arrived_[i] = 1;
  arrival_order_.push_back(i);
  const int b = layout_.bucket_of[i];
  const BucketSlot& slot = layout_.buckets[b].slots[layout_.slot_of[i]];
  ops::CopyInPlace(SlotView(buffers_[b], slot.offset, grad.shape()), grad);
  if (--pending_[b] == 0) {
    const size_t before = next_launch_;
    LaunchReady();
    stats_.launched_in_backward += static_cast<int>(next_launch_ - before);
  }
}

void GradReducer::LaunchReady() {
  while (next_launch_ < layout_.buckets.size() && pending_[next_launch_] == 0)
    Launch(next_launch_++);
}

void GradReducer::Launch(size_t b) {
  stats_.bytes += static_cast<int64_t>(buffers_[b].nbytes());
  if (options_.shard) {
    works_[b] = comm_->ReduceScatter(buffers_[b], shards_[b], layout_.buckets[b].owner_counts);
  } else {
    works_[b] = comm_->AllReduce(buffers_[b]);
  }
}

void GradReducer::Finish() {
  FAM_CHECK(armed_, "GradReducer: Finish() without Arm()");
  NoGradGuard no_grad;
  const double begin = Now();
  // Buckets still waiting for a gradient that did not come in this backward: a gradient
  // accumulated by earlier micro-batches is taken as it is, zeros stand in for a missing one.
  for (size_t b = next_launch_; b < layout_.buckets.size(); ++b) {
    for (const BucketSlot& slot : layout_.buckets[b].slots) {
      if (arrived_[slot.param]) continue;
      const Tensor grad = params_[slot.param].param.grad();
      if (grad.defined()) {
        ops::CopyInPlace(SlotView(buffers_[b], slot.offset, grad.shape()), grad);
        arrived_[slot.param] = 1;
      } else {
        ops::FillInPlace(SlotView(buffers_[b], slot.offset, {slot.numel}), 0.0);
      }
    }
    pending_[b] = 0;
  }
  LaunchReady();
  // Which parameters got a gradient on some rank.
  Tensor present = Tensor::FromInts(std::vector<int64_t>(arrived_.begin(), arrived_.end()),
                                    {static_cast<int64_t>(arrived_.size())}, DType::kI32);
  Tensor present_dev = comm_->device().is_cpu() ? present : ops::To(present, comm_->device());
  Work presence = comm_->AllReduce(present_dev, ReduceOp::kMax);
  for (const Work& w : works_) w.Wait();
  presence.Wait();
  stats_.wait_s = Now() - begin;
  for (const Work& w : works_) stats_.comm_s += w.seconds();
  if (!present_dev.same(present)) present = ops::To(present_dev, Device::CPU());
  const std::vector<int64_t> any = present.ToInts();

  const int world = comm_->world_size();
  const int rank = comm_->rank();
  const std::vector<Tensor>& reduced = options_.shard ? shards_ : buffers_;
  if (world > 1) {
    for (const Tensor& t : reduced) {
      if (t.numel() > 0) GetBackend(t.device()).Affine(t, 1.0 / world, 0.0, t);
    }
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    Tensor& param = params_[i].param;
    if (!any[i] || (options_.shard && owners_[i] != rank)) {
      param.zero_grad();
      continue;
    }
    const int b = layout_.bucket_of[i];
    const Bucket& bucket = layout_.buckets[b];
    const BucketSlot& slot = bucket.slots[layout_.slot_of[i]];
    const int64_t offset = options_.shard ? slot.offset - bucket.owner_offsets[rank] : slot.offset;
    Tensor src = SlotView(reduced[b], offset, param.shape());
    Tensor grad = param.grad();
    if (grad.defined() && grad.shape() == param.shape() && grad.is_contiguous() &&
        grad.dtype() == dtype_) {
      ops::CopyInPlace(grad, src);
    } else {
      param.set_grad(ops::Clone(src));
    }
  }
  armed_ = false;
  if (!reordered_ && options_.reorder_after_first_step) Reorder();
}

void GradReducer::Reorder() {
  reordered_ = true;
  // Rank 0's observed ready order, then the parameters that never arrived (reverse order).
  std::vector<int64_t> order(arrival_order_.begin(), arrival_order_.end());
  std::vector<bool> seen(params_.size(), false);
  for (size_t i : arrival_order_) seen[i] = true;
  for (size_t i = params_.size(); i-- > 0;)
    if (!seen[i]) order.push_back(static_cast<int64_t>(i));
  Tensor t = Tensor::FromInts(order, {static_cast<int64_t>(order.size())}, DType::kI64);
  if (comm_->world_size() > 1) {
    Tensor d = comm_->device().is_cpu() ? t : ops::To(t, comm_->device());
    comm_->Broadcast(d, 0).Wait();
    if (!d.same(t)) t = ops::To(d, Device::CPU());
  }
  std::vector<size_t> new_order;
  for (int64_t i : t.ToInts()) new_order.push_back(static_cast<size_t>(i));
  const int64_t bucket_elems =
      std::max<int64_t>(1, options_.bucket_bytes / static_cast<int64_t>(DTypeSize(dtype_)));
  layout_ = MakeBucketLayout(numels_, new_order, owners_, comm_->world_size(), bucket_elems);
  Allocate();
}

void GradReducer::GatherParameters() {
  FAM_CHECK(options_.shard, "GradReducer: GatherParameters() needs shard = true (ZeRO-1)");
  NoGradGuard no_grad;
  const int rank = comm_->rank();
  std::vector<Work> works;
  for (size_t b = 0; b < layout_.buckets.size(); ++b) {
    const Bucket& bucket = layout_.buckets[b];
    for (const BucketSlot& slot : bucket.slots) {
      if (slot.owner != rank) continue;
      const Tensor& p = params_[slot.param].param;
      ops::CopyInPlace(SlotView(shards_[b], slot.offset - bucket.owner_offsets[rank], p.shape()),
                       p);
    }
    works.push_back(comm_->AllGather(shards_[b], buffers_[b], bucket.owner_counts));
  }
  for (size_t b = 0; b < layout_.buckets.size(); ++b) {
    works[b].Wait();
    for (const BucketSlot& slot : layout_.buckets[b].slots) {
      if (slot.owner == rank) continue;
      Tensor& p = params_[slot.param].param;
      ops::CopyInPlace(p, SlotView(buffers_[b], slot.offset, p.shape()));
    }
  }
}

}  // namespace fam::dist
