// Work handles, argument checks, the world-size-1 communicator and the backend choice.
#include "framework/dist/communicator.h"

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "framework/autograd/node.h"
#include "framework/backends/registry.h"
#include "framework/dist/env.h"
#include "framework/dist/mpi_communicator.h"
#include "framework/dist/nccl_communicator.h"
#include "framework/ops/ops.h"

namespace fam::dist {

const char* ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kMax:
      return "max";
    case ReduceOp::kMin:
      return "min";
  }
  return "?";
}

const char* BackendName(Backend backend) {
  switch (backend) {
    case Backend::kAuto:
      return "auto";
    case Backend::kMpi:
      return "mpi";
    case Backend::kNccl:
      return "nccl";
  }
  return "?";
}

void Work::Wait() const {
  if (!state_) return;
  std::unique_lock<std::mutex> lock(state_->mu);
  state_->cv.wait(lock, [&] { return state_->done; });
  if (!state_->error.empty()) ThrowError(absl::StatusCode::kInternal, state_->error);
}

bool Work::Done() const {
  if (!state_) return true;
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->done;
}

double Work::seconds() const {
  if (!state_) return 0;
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->seconds;
}

void Communicator::CheckTensor(const char* op, const Tensor& t) const {
  FAM_CHECK(t.defined(), backend_name(), " ", op, ": undefined tensor");
  FAM_CHECK(t.is_contiguous(), backend_name(), " ", op, ": tensor ", t.Describe(),
            " is not contiguous");
  FAM_CHECK(t.device() == device(), backend_name(), " ", op, ": tensor ", t.Describe(),
            " is not on ", device().ToString());
}

void Communicator::CheckCounts(const char* op, const std::vector<int64_t>& counts,
                               const Tensor& full, const Tensor& part) const {
  CheckTensor(op, full);
  CheckTensor(op, part);
  FAM_CHECK(full.dtype() == part.dtype(), backend_name(), " ", op, ": dtypes ",
            DTypeName(full.dtype()), " and ", DTypeName(part.dtype()), " differ");
  FAM_CHECK(static_cast<int>(counts.size()) == world_size(), backend_name(), " ", op, ": ",
            counts.size(), " counts for world size ", world_size());
  int64_t total = 0;
  for (int64_t c : counts) {
    FAM_CHECK(c >= 0, backend_name(), " ", op, ": negative count ", c);
    total += c;
  }
  FAM_CHECK(full.numel() == total, backend_name(), " ", op, ": the full tensor ", full.Describe(),
            " does not hold the ", total, " elements of the counts");
  FAM_CHECK(part.numel() == counts[rank()], backend_name(), " ", op, ": rank ", rank(), "'s part ",
            part.Describe(), " does not hold its count ", counts[rank()]);
}

namespace {

// World size 1: reductions are identities, scatter/gather are copies.
class LocalCommunicator : public Communicator {
 public:
  explicit LocalCommunicator(Device device) : device_(device) {}
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  std::string backend_name() const override { return "local"; }
  Device device() const override { return device_; }

  Work AllReduce(const Tensor& t, ReduceOp) override {
    CheckTensor("all_reduce", t);
    return Work();
  }
  Work ReduceScatter(const Tensor& input, const Tensor& output, const std::vector<int64_t>& counts,
                     ReduceOp) override {
    CheckCounts("reduce_scatter", counts, input, output);
    Copy(input, output);
    return Work();
  }
  Work AllGather(const Tensor& input, const Tensor& output,
                 const std::vector<int64_t>& counts) override {
    CheckCounts("all_gather", counts, output, input);
    Copy(input, output);
    return Work();
  }
  Work Broadcast(const Tensor& t, int root) override {
    CheckTensor("broadcast", t);
    FAM_CHECK(root == 0, "local broadcast: root ", root, " of world size 1");
    return Work();
  }
  Work Barrier() override { return Work(); }
  [[noreturn]] void Abort(const std::string& message, int exit_code) override {
    std::cerr << "fam: rank 0 of 1: " << message << std::endl;
    std::fflush(nullptr);
    std::_Exit(exit_code);
  }

 private:
  static void Copy(const Tensor& from, const Tensor& to) {
    if (from.same(to) || from.numel() == 0) return;
    NoGradGuard no_grad;
    ops::CopyInPlace(to.reshape({to.numel()}), from.reshape({from.numel()}));
  }
  Device device_;
};

}  // namespace

std::shared_ptr<Communicator> MakeLocalCommunicator(Device device) {
  return std::make_shared<LocalCommunicator>(device);
}

absl::StatusOr<std::shared_ptr<Communicator>> CreateCommunicator(const CommOptions& options) {
  absl::StatusOr<DistEnv> env = DiscoverEnv();
  if (!env.ok()) return env.status();
  Backend backend = options.backend;
  // A device emulated on the host (FAM_CUDA_EMULATION=host) holds host memory, which MPI carries.
  const DeviceTraits traits = TraitsOf(options.device);
  const bool emulated = !options.device.is_cpu() && traits.emulated;
  if (emulated && backend == Backend::kNccl)
    return absl::InvalidArgumentError(
        "distributed.backend nccl needs real GPUs; under FAM_CUDA_EMULATION=host use auto or mpi");
  if (backend == Backend::kAuto)
    backend = options.device.is_cpu() || emulated ? Backend::kMpi : Backend::kNccl;
  if (backend == Backend::kNccl && options.device.is_cpu()) {
    return absl::InvalidArgumentError(
        "distributed.backend nccl moves CUDA tensors, but the model runs on the CPU "
        "(trainer.device: cpu); use mpi (or auto)");
  }
  if (backend == Backend::kMpi && !options.device.is_cpu() && !emulated) {
    return absl::InvalidArgumentError(
        absl::StrCat("distributed.backend mpi moves CPU tensors, but the model runs on ",
                     options.device.ToString(), "; use nccl (or auto)"));
  }
  if (!(options.timeout_s > 0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("distributed.timeout_s = ", options.timeout_s, " must be > 0"));
  }
  if (env->world_size == 1) return MakeLocalCommunicator(options.device);
  if (backend == Backend::kMpi) {
    // One device per rank on a node, as NCCL picks them.
    const Device device = emulated ? Device::CUDA(env->local_rank % traits.devices) : Device::CPU();
    return CreateMpiCommunicator(*env, options.timeout_s, device);
  }
  return CreateNcclCommunicator(*env, options.device, options.timeout_s);
}

}  // namespace fam::dist
