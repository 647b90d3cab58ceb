// NcclCommunicator: NCCL collectives on a communication stream, bootstrapped over MPI.
#include "framework/dist/nccl_communicator.h"

#include "absl/strings/str_cat.h"

#ifdef FAM_HAVE_NCCL
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <chrono>
#include <iostream>
#include <thread>

#include "framework/core/error.h"
#include "framework/dist/comm_worker.h"
#include "framework/dist/mpi_communicator.h"
#endif

namespace fam::dist {

#ifndef FAM_HAVE_NCCL

bool NcclBuilt() { return false; }

std::string NcclDescription() {
  return "not built (CUDA and nccl.h/libnccl were not found at configure time)";
}

absl::StatusOr<std::shared_ptr<Communicator>> CreateNcclCommunicator(const DistEnv& env, Device,
                                                                     double) {
  return absl::UnimplementedError(absl::StrCat(
      "rank ", env.rank, " of ", env.world_size,
      ": NCCL support not built (CUDA and nccl.h/libnccl were not found at configure time); "
      "rebuild on a machine with NCCL or use distributed.backend: mpi with trainer.device: cpu"));
}

#else  // FAM_HAVE_NCCL

bool NcclBuilt() { return true; }

std::string NcclDescription() {
  int v = 0;
  if (ncclGetVersion(&v) != ncclSuccess) return "unknown";
  // NCCL >= 2.9 encodes major*10000 + minor*100 + patch.
  return absl::StrCat(v / 10000, ".", (v % 10000) / 100, ".", v % 100, " (built against ",
                      NCCL_MAJOR, ".", NCCL_MINOR, ".", NCCL_PATCH, ")");
}

namespace {

void CheckCuda(cudaError_t err, const char* call) {
  if (err != cudaSuccess)
    ThrowError(absl::StatusCode::kInternal, call, " failed: ", cudaGetErrorString(err));
}

void CheckNccl(ncclResult_t r, const char* call) {
  if (r != ncclSuccess && r != ncclInProgress)
    ThrowError(absl::StatusCode::kInternal, call, " failed: ", ncclGetErrorString(r));
}

ncclDataType_t NcclType(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kF64:
      return ncclFloat64;
    case DType::kBF16:
      return ncclBfloat16;
    case DType::kF16:
      return ncclFloat16;
    case DType::kI32:
      return ncclInt32;
    case DType::kI64:
      return ncclInt64;
  }
  ThrowInvalid("nccl: unsupported dtype ", DTypeName(dtype));
}

ncclRedOp_t NcclOp(ReduceOp op) {
  return op == ReduceOp::kSum ? ncclSum : op == ReduceOp::kMax ? ncclMax : ncclMin;
}

std::string Describe(const char* op, const Tensor& t) {
  return absl::StrCat(op, " ", DTypeName(t.dtype()), "[", t.numel(), "]");
}

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, int rank, int world, int device, double timeout_s)
      : comm_(comm), rank_(rank), world_(world), device_(device) {
    CheckCuda(cudaSetDevice(device_), "cudaSetDevice");
    CheckCuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    const std::string who =
        absl::StrCat("rank ", rank, " of ", world, " (nccl, cuda:", device, ")");
    worker_ = std::make_unique<CommWorker>(who, timeout_s, [this](const std::string& message) {
      std::cerr << "\nfam: " << message << std::endl;
      ncclCommAbort(comm_);
      AbortJob(1);
    });
  }
  ~NcclCommunicator() override {
    worker_.reset();
    cudaStreamDestroy(stream_);
    ncclCommDestroy(comm_);
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  std::string backend_name() const override { return "nccl"; }
  Device device() const override { return Device::CUDA(device_); }

  Work AllReduce(const Tensor& t, ReduceOp op) override {
    CheckTensor("all_reduce", t);
    void* p = t.raw_data();
    const size_t n = static_cast<size_t>(t.numel());
    const ncclDataType_t type = NcclType(t.dtype());
    return Submit(absl::StrCat(Describe("all_reduce", t), " ", ReduceOpName(op)), {t}, [=, this] {
      CheckNccl(ncclAllReduce(p, p, n, type, NcclOp(op), comm_, stream_), "ncclAllReduce");
    });
  }

  Work ReduceScatter(const Tensor& input, const Tensor& output, const std::vector<int64_t>& counts,
                     ReduceOp op) override {
    CheckCounts("reduce_scatter", counts, input, output);
    char* in = static_cast<char*>(input.raw_data());
    void* out = output.raw_data();
    const size_t elem = DTypeSize(input.dtype());
    const ncclDataType_t type = NcclType(input.dtype());
    bool even = true;
    for (int64_t c : counts) even = even && c == counts[0];
    return Submit(absl::StrCat(Describe("reduce_scatter", input), " ", ReduceOpName(op)),
                  {input, output}, [=, this] {
                    if (even) {
                      CheckNccl(ncclReduceScatter(in, out, static_cast<size_t>(counts[0]), type,
                                                  NcclOp(op), comm_, stream_),
                                "ncclReduceScatter");
                      return;
                    }
                    CheckNccl(ncclGroupStart(), "ncclGroupStart");
                    int64_t offset = 0;
                    for (int r = 0; r < world_; ++r) {
                      if (counts[r] > 0) {
                        CheckNccl(
                            ncclReduce(in + offset * elem, out, static_cast<size_t>(counts[r]),
                                       type, NcclOp(op), r, comm_, stream_),
                            "ncclReduce");
                      }
                      offset += counts[r];
                    }
                    CheckNccl(ncclGroupEnd(), "ncclGroupEnd");
                  });
  }

  Work AllGather(const Tensor& input, const Tensor& output,
                 const std::vector<int64_t>& counts) override {
    CheckCounts("all_gather", counts, output, input);
    void* in = input.raw_data();
    char* out = static_cast<char*>(output.raw_data());
    const size_t elem = DTypeSize(input.dtype());
    const ncclDataType_t type = NcclType(input.dtype());
    bool even = true;
    for (int64_t c : counts) even = even && c == counts[0];
    return Submit(Describe("all_gather", output), {input, output}, [=, this] {
      if (even) {
        CheckNccl(ncclAllGather(in, out, static_cast<size_t>(counts[0]), type, comm_, stream_),
                  "ncclAllGather");
        return;
      }
      CheckNccl(ncclGroupStart(), "ncclGroupStart");
      int64_t offset = 0;
      for (int r = 0; r < world_; ++r) {
        if (counts[r] > 0) {
          CheckNccl(ncclBroadcast(in, out + offset * elem, static_cast<size_t>(counts[r]), type, r,
                                  comm_, stream_),
                    "ncclBroadcast");
        }
        offset += counts[r];
      }
      CheckNccl(ncclGroupEnd(), "ncclGroupEnd");
    });
  }

  Work Broadcast(const Tensor& t, int root) override {
    CheckTensor("broadcast", t);
    FAM_CHECK(root >= 0 && root < world_, "nccl broadcast: root ", root, " of world size ", world_);
    void* p = t.raw_data();
    const size_t n = static_cast<size_t>(t.numel());
    const ncclDataType_t type = NcclType(t.dtype());
    return Submit(absl::StrCat(Describe("broadcast", t), " from rank ", root), {t}, [=, this] {
      CheckNccl(ncclBroadcast(p, p, n, type, root, comm_, stream_), "ncclBroadcast");
    });
  }

  Work Barrier() override {
    // A one-element all-reduce on a scratch buffer: NCCL has no barrier.
    if (!barrier_.defined()) {
      void* p = nullptr;
      CheckCuda(cudaMalloc(&p, sizeof(float)), "cudaMalloc");
      barrier_ = Tensor::MakeView(Storage::Wrap(p, sizeof(float), device(), [p] { cudaFree(p); }),
                                  {1}, {1}, 0, DType::kF32);
    }
    void* p = barrier_.raw_data();
    return Submit("barrier", {barrier_}, [=, this] {
      CheckNccl(ncclAllReduce(p, p, 1, ncclFloat32, ncclSum, comm_, stream_), "ncclAllReduce");
    });
  }

  [[noreturn]] void Abort(const std::string& message, int exit_code) override {
    std::cerr << "\nfam: rank " << rank_ << " of " << world_ << ": " << message << std::endl;
    ncclCommAbort(comm_);
    AbortJob(exit_code);
  }

 private:
  // Submits `issue` (NCCL calls on stream_) to run after the work already queued on the default
  // stream; complete once the communicator has enqueued it and the stream has passed it.
  Work Submit(std::string what, std::vector<Tensor> keep, std::function<void()> issue) {
    struct State {
      cudaEvent_t ready = nullptr, done = nullptr;
      bool enqueued = false;
    };
    auto state = std::make_shared<State>();
    CheckCuda(cudaSetDevice(device_), "cudaSetDevice");
    CheckCuda(cudaEventCreateWithFlags(&state->ready, cudaEventDisableTiming), "cudaEventCreate");
    CheckCuda(cudaEventCreateWithFlags(&state->done, cudaEventDisableTiming), "cudaEventCreate");
    CheckCuda(cudaEventRecord(state->ready, cudaStreamLegacy), "cudaEventRecord");
    CommWorker::Op op;
    op.what = std::move(what);
    op.start = [this, state, issue] {
      CheckCuda(cudaSetDevice(device_), "cudaSetDevice");
      CheckCuda(cudaStreamWaitEvent(stream_, state->ready, 0), "cudaStreamWaitEvent");
      issue();
    };
    op.test = [this, state, keep] {
      if (!state->enqueued) {
        ncclResult_t async = ncclSuccess;
        CheckNccl(ncclCommGetAsyncError(comm_, &async), "ncclCommGetAsyncError");
        if (async == ncclInProgress) return false;
        CheckNccl(async, "NCCL collective");
        CheckCuda(cudaEventRecord(state->done, stream_), "cudaEventRecord");
        state->enqueued = true;
      }
      const cudaError_t q = cudaEventQuery(state->done);
      if (q == cudaErrorNotReady) return false;
      CheckCuda(q, "cudaEventQuery");
      cudaEventDestroy(state->ready);
      cudaEventDestroy(state->done);
      return true;
    };
    return worker_->Submit(std::move(op));
  }

  ncclComm_t comm_;
  int rank_, world_, device_;
  cudaStream_t stream_ = nullptr;
  Tensor barrier_;
  std::unique_ptr<CommWorker> worker_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<Communicator>> CreateNcclCommunicator(const DistEnv& env,
                                                                     Device device,
                                                                     double timeout_s) {
  if (device.is_cpu()) return absl::InvalidArgumentError("nccl communicator needs a CUDA device");
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0)
    return absl::FailedPreconditionError(
        absl::StrCat("rank ", env.rank, ": no CUDA device visible"));
  if (env.local_size > count) {
    return absl::FailedPreconditionError(absl::StrCat(
        "rank ", env.rank, ": ", env.local_size, " ranks on this node but ", count,
        " visible GPUs (one GPU per rank; check -np / --gpus-per-node / CUDA_VISIBLE_DEVICES)"));
  }
  const int gpu = env.local_rank % count;
  if (cudaSetDevice(gpu) != cudaSuccess)
    return absl::FailedPreconditionError(
        absl::StrCat("rank ", env.rank, ": cudaSetDevice(", gpu, ") failed"));
  if (absl::Status s = EnsureMpiInitialized(env); !s.ok()) return s;
  ncclUniqueId id;
  if (env.rank == 0) {
    if (ncclResult_t r = ncclGetUniqueId(&id); r != ncclSuccess)
      return absl::InternalError(absl::StrCat("ncclGetUniqueId failed: ", ncclGetErrorString(r)));
  }
  if (absl::Status s = MpiBroadcastBytes(&id, sizeof id, 0, timeout_s); !s.ok()) return s;
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  ncclComm_t comm = nullptr;
  ncclResult_t r = ncclCommInitRankConfig(&comm, env.world_size, id, env.rank, &config);
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                            std::chrono::duration<double>(timeout_s));
  while (r == ncclInProgress) {
    if (std::chrono::steady_clock::now() > deadline) {
      ncclCommAbort(comm);
      return absl::DeadlineExceededError(
          absl::StrCat("rank ", env.rank, " of ", env.world_size,
                       ": ncclCommInitRankConfig did not complete within ", timeout_s,
                       " s (a rank did not start, died or cannot reach the others; NCCL_DEBUG=INFO "
                       "tells more)"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ncclCommGetAsyncError(comm, &r);
  }
  if (r != ncclSuccess) {
    return absl::InternalError(absl::StrCat(
        "rank ", env.rank, ": ncclCommInitRankConfig failed: ", ncclGetErrorString(r)));
  }
  absl::StatusOr<std::shared_ptr<Communicator>> out;
  absl::Status s = CatchToStatus([&] {
    out = std::shared_ptr<Communicator>(
        std::make_shared<NcclCommunicator>(comm, env.rank, env.world_size, gpu, timeout_s));
  });
  if (!s.ok()) return s;
  return out;
}

#endif  // FAM_HAVE_NCCL

}  // namespace fam::dist
