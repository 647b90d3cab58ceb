// MpiCommunicator: non-blocking MPI collectives on the communication thread; MPI init/finalize.
#include "framework/dist/mpi_communicator.h"

#include <cstdio>
#include <cstdlib>
#include <iostream>

#include "absl/strings/str_cat.h"
#include "framework/backends/registry.h"
#include "framework/core/error.h"

#ifdef FAM_HAVE_MPI
// The C API only (MPI_C links libmpi, not the deprecated C++ bindings).
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>

#include <chrono>
#include <climits>
#include <mutex>
#include <thread>

#include "framework/dist/comm_worker.h"
#endif

namespace fam::dist {

#ifndef FAM_HAVE_MPI

absl::StatusOr<std::shared_ptr<Communicator>> CreateMpiCommunicator(const DistEnv& env, double,
                                                                    Device) {
  return absl::UnimplementedError(absl::StrCat(
      "this process is rank ", env.rank, " of ", env.world_size, " (launcher ", env.launcher,
      "), but famtrain was built without MPI (no MPI found at configure time)"));
}
absl::Status EnsureMpiInitialized(const DistEnv&) {
  return absl::UnimplementedError("famtrain was built without MPI");
}
absl::Status MpiBroadcastBytes(void*, size_t, int, double) {
  return absl::UnimplementedError("famtrain was built without MPI");
}
void AbortJob(int exit_code) {
  std::fflush(nullptr);
  std::_Exit(exit_code);
}

#else  // FAM_HAVE_MPI

namespace {

// Every MPI call is made under this lock (MPI_THREAD_SERIALIZED).
std::mutex& MpiLock() {
  static std::mutex mu;
  return mu;
}

bool g_initialized = false;  // guarded by MpiLock()
MPI_Op g_half_ops[2][3];     // [bf16, f16][sum, max, min], created at init

std::string MpiErrorString(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(code, text, &len) != MPI_SUCCESS) return absl::StrCat("MPI error ", code);
  return std::string(text, len);
}

void CheckMpi(int code, const char* call) {
  if (code != MPI_SUCCESS)
    ThrowError(absl::StatusCode::kInternal, call, " failed: ", MpiErrorString(code));
}

template <typename Convert>
void HalfReduce(void* in, void* inout, int* len, ReduceOp op, Convert convert) {
  const uint16_t* a = static_cast<const uint16_t*>(in);
  uint16_t* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; ++i) {
    const float x = convert.to(a[i]), y = convert.to(b[i]);
    const float r = op == ReduceOp::kSum   ? x + y
                    : op == ReduceOp::kMax ? (x > y ? x : y)
                                           : (x < y ? x : y);
    b[i] = convert.from(r);
  }
}
struct Bf16Convert {
  float to(uint16_t v) const { return BF16::ToFloat(v); }
  uint16_t from(float v) const { return BF16::FromFloat(v); }
};
struct F16Convert {
  float to(uint16_t v) const { return HalfToFloat(v); }
  uint16_t from(float v) const { return FloatToHalf(v); }
};
template <typename Convert, ReduceOp kOp>
void HalfOp(void* in, void* inout, int* len, MPI_Datatype*) {
  HalfReduce(in, inout, len, kOp, Convert());
}

void CreateHalfOps() {
  MPI_User_function* fns[2][3] = {
      {HalfOp<Bf16Convert, ReduceOp::kSum>, HalfOp<Bf16Convert, ReduceOp::kMax>,
       HalfOp<Bf16Convert, ReduceOp::kMin>},
      {HalfOp<F16Convert, ReduceOp::kSum>, HalfOp<F16Convert, ReduceOp::kMax>,
       HalfOp<F16Convert, ReduceOp::kMin>}};
  for (int t = 0; t < 2; ++t)
    for (int o = 0; o < 3; ++o) MPI_Op_create(fns[t][o], /*commute=*/1, &g_half_ops[t][o]);
}

void FinalizeAtExit() {
  std::lock_guard<std::mutex> lock(MpiLock());
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

MPI_Datatype MpiType(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return MPI_FLOAT;
    case DType::kF64:
      return MPI_DOUBLE;
    case DType::kI32:
      return MPI_INT32_T;
    case DType::kI64:
      return MPI_INT64_T;
    case DType::kBF16:
    case DType::kF16:
      return MPI_UINT16_T;
  }
  ThrowInvalid("mpi: unsupported dtype ", DTypeName(dtype));
}

MPI_Op MpiOp(DType dtype, ReduceOp op) {
  const int o = op == ReduceOp::kSum ? 0 : op == ReduceOp::kMax ? 1 : 2;
  if (dtype == DType::kBF16) return g_half_ops[0][o];
  if (dtype == DType::kF16) return g_half_ops[1][o];
  return o == 0 ? MPI_SUM : o == 1 ? MPI_MAX : MPI_MIN;
}

int ToInt(int64_t n, const char* op) {
  FAM_CHECK(n <= INT_MAX, "mpi ", op, ": ", n, " elements exceed MPI's int count; use smaller ",
            "buckets (distributed.bucket_mb)");
  return static_cast<int>(n);
}

// Polls one request under the lock; true when it completed.
bool TestRequest(MPI_Request* request) {
  std::lock_guard<std::mutex> lock(MpiLock());
  int flag = 0;
  CheckMpi(MPI_Test(request, &flag, MPI_STATUS_IGNORE), "MPI_Test");
  return flag != 0;
}

// Waits for a request on the calling thread with a deadline (set-up calls only).
absl::Status WaitRequest(MPI_Request* request, double timeout_s, const std::string& what) {
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                            std::chrono::duration<double>(timeout_s));
  absl::Status status = CatchToStatus([&] {
    while (!TestRequest(request)) {
      if (std::chrono::steady_clock::now() > deadline) {
        ThrowError(absl::StatusCode::kDeadlineExceeded, what, " did not complete within ",
                   timeout_s, " s (a rank did not start, died or is stuck)");
      }
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
  });
  return status;
}

std::string Describe(const char* op, const Tensor& t) {
  return absl::StrCat(op, " ", DTypeName(t.dtype()), "[", t.numel(), "]");
}

// Elements per MPI call of chunked collectives (all-reduce, broadcast), below INT_MAX.
constexpr int64_t kChunk = int64_t{1} << 30;

class MpiCommunicator : public Communicator {
 public:
  MpiCommunicator(MPI_Comm comm, int rank, int world, double timeout_s, Device device)
      : comm_(comm), rank_(rank), world_(world), device_(device) {
    const std::string who = absl::StrCat("rank ", rank, " of ", world, " (mpi)");
    worker_ = std::make_unique<CommWorker>(who, timeout_s, [](const std::string& message) {
      std::cerr << "\nfam: " << message << std::endl;
      AbortJob(1);
    });
  }
  ~MpiCommunicator() override {
    worker_.reset();  // runs what is queued, joins the thread
    std::lock_guard<std::mutex> lock(MpiLock());
    MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  std::string backend_name() const override { return "mpi"; }
  Device device() const override { return device_; }

  Work AllReduce(const Tensor& t, ReduceOp op) override {
    CheckTensor("all_reduce", t);
    MPI_Datatype type = MpiType(t.dtype());
    MPI_Op mop = MpiOp(t.dtype(), op);
    char* base = static_cast<char*>(t.raw_data());
    const size_t elem = DTypeSize(t.dtype());
    MPI_Comm comm = comm_;
    return SubmitChunked(absl::StrCat(Describe("all_reduce", t), " ", ReduceOpName(op)), t,
                         [=](int64_t begin, int n, MPI_Request* req) {
                           return MPI_Iallreduce(MPI_IN_PLACE, base + begin * elem, n, type, mop,
                                                 comm, req);
                         });
  }

  Work ReduceScatter(const Tensor& input, const Tensor& output, const std::vector<int64_t>& counts,
                     ReduceOp op) override {
    CheckCounts("reduce_scatter", counts, input, output);
    ToInt(input.numel(), "reduce_scatter");
    auto recv_counts = std::make_shared<std::vector<int>>();
    for (int64_t c : counts) recv_counts->push_back(static_cast<int>(c));
    MPI_Datatype type = MpiType(input.dtype());
    MPI_Op mop = MpiOp(input.dtype(), op);
    void* send = input.raw_data();
    void* recv = output.raw_data();
    MPI_Comm comm = comm_;
    return SubmitOne(absl::StrCat(Describe("reduce_scatter", input), " ", ReduceOpName(op)),
                     {input, output}, [=](MPI_Request* req) {
                       return MPI_Ireduce_scatter(send, recv, recv_counts->data(), type, mop, comm,
                                                  req);
                     });
  }

  Work AllGather(const Tensor& input, const Tensor& output,
                 const std::vector<int64_t>& counts) override {
    CheckCounts("all_gather", counts, output, input);
    ToInt(output.numel(), "all_gather");
    auto recv_counts = std::make_shared<std::vector<int>>();
    auto displs = std::make_shared<std::vector<int>>();
    int offset = 0;
    for (int64_t c : counts) {
      recv_counts->push_back(static_cast<int>(c));
      displs->push_back(offset);
      offset += static_cast<int>(c);
    }
    MPI_Datatype type = MpiType(input.dtype());
    void* send = input.raw_data();
    void* recv = output.raw_data();
    const int send_count = static_cast<int>(input.numel());
    MPI_Comm comm = comm_;
    return SubmitOne(Describe("all_gather", output), {input, output}, [=](MPI_Request* req) {
      return MPI_Iallgatherv(send, send_count, type, recv, recv_counts->data(), displs->data(),
                             type, comm, req);
    });
  }

  Work Broadcast(const Tensor& t, int root) override {
    CheckTensor("broadcast", t);
    FAM_CHECK(root >= 0 && root < world_, "mpi broadcast: root ", root, " of world size ", world_);
    MPI_Datatype type = MpiType(t.dtype());
    char* base = static_cast<char*>(t.raw_data());
    const size_t elem = DTypeSize(t.dtype());
    MPI_Comm comm = comm_;
    return SubmitChunked(absl::StrCat(Describe("broadcast", t), " from rank ", root), t,
                         [=](int64_t begin, int n, MPI_Request* req) {
                           return MPI_Ibcast(base + begin * elem, n, type, root, comm, req);
                         });
  }

  Work Barrier() override {
    MPI_Comm comm = comm_;
    return SubmitOne("barrier", {}, [=](MPI_Request* req) { return MPI_Ibarrier(comm, req); });
  }

  [[noreturn]] void Abort(const std::string& message, int exit_code) override {
    std::cerr << "\nfam: rank " << rank_ << " of " << world_ << ": " << message << std::endl;
    AbortJob(exit_code);
  }

 private:
  // One non-blocking call; `keep` holds the tensors alive until it completes.
  Work SubmitOne(std::string what, std::vector<Tensor> keep,
                 std::function<int(MPI_Request*)> issue) {
    auto req = std::make_shared<MPI_Request>(MPI_REQUEST_NULL);
    CommWorker::Op op;
    op.what = std::move(what);
    op.start = [req, issue, keep] {
      std::lock_guard<std::mutex> lock(MpiLock());
      CheckMpi(issue(req.get()), "MPI collective");
    };
    op.test = [req] { return TestRequest(req.get()); };
    return worker_->Submit(std::move(op));
  }

  // A collective over t's elements, issued in chunks of at most kChunk elements one after the
  // other (MPI counts are ints).
  Work SubmitChunked(std::string what, const Tensor& t,
                     std::function<int(int64_t, int, MPI_Request*)> issue) {
    struct State {
      MPI_Request req = MPI_REQUEST_NULL;
      int64_t next = 0;
    };
    auto state = std::make_shared<State>();
    const int64_t total = t.numel();
    auto issue_next = [state, issue, total] {
      const int64_t n = std::min(kChunk, total - state->next);
      std::lock_guard<std::mutex> lock(MpiLock());
      CheckMpi(issue(state->next, static_cast<int>(n), &state->req), "MPI collective");
      state->next += n;
    };
    CommWorker::Op op;
    op.what = std::move(what);
    op.start = issue_next;
    op.test = [state, issue_next, total, keep = t] {
      if (!TestRequest(&state->req)) return false;
      if (state->next >= total) return true;
      issue_next();
      return false;
    };
    return worker_->Submit(std::move(op));
  }

  MPI_Comm comm_;
  int rank_, world_;
  Device device_;
  std::unique_ptr<CommWorker> worker_;
};

}  // namespace

absl::Status EnsureMpiInitialized(const DistEnv& env) {
  {
    std::lock_guard<std::mutex> lock(MpiLock());
    if (!g_initialized) {
      int already = 0;
      MPI_Initialized(&already);
      if (!already) {
        int provided = 0;
        if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided) != MPI_SUCCESS) {
          return absl::UnavailableError(
              absl::StrCat("MPI_Init_thread failed on rank ", env.rank, " of ", env.world_size));
        }
        if (provided < MPI_THREAD_SERIALIZED) {
          return absl::UnavailableError(
              absl::StrCat("this MPI library provides thread level ", provided,
                           ", below MPI_THREAD_SERIALIZED, which the communication thread needs"));
        }
        std::atexit(FinalizeAtExit);
      }
      MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
      CreateHalfOps();
      g_initialized = true;
    }
  }
  int rank = 0, size = 0;
  {
    std::lock_guard<std::mutex> lock(MpiLock());
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
  }
  if (rank != env.rank || size != env.world_size) {
    return absl::FailedPreconditionError(
        absl::StrCat("the launcher (", env.launcher, ") says rank ", env.rank, " of ",
                     env.world_size, ", but MPI reports rank ", rank, " of ", size,
                     ": was fam built against another MPI than the launcher's?"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<Communicator>> CreateMpiCommunicator(const DistEnv& env,
                                                                    double timeout_s,
                                                                    Device device) {
  FAM_CHECK(TraitsOf(device).host_memory, "mpi communicator: ", device.ToString(),
            " memory is not host memory (use nccl)");
  if (absl::Status s = EnsureMpiInitialized(env); !s.ok()) return s;
  MPI_Comm comm = MPI_COMM_NULL;
  MPI_Request req = MPI_REQUEST_NULL;
  {
    std::lock_guard<std::mutex> lock(MpiLock());
    if (int rc = MPI_Comm_idup(MPI_COMM_WORLD, &comm, &req); rc != MPI_SUCCESS)
      return absl::InternalError(absl::StrCat("MPI_Comm_idup failed: ", MpiErrorString(rc)));
  }
  if (absl::Status s = WaitRequest(&req, timeout_s,
                                   absl::StrCat("rank ", env.rank, " of ", env.world_size,
                                                ": creating the MPI communicator"));
      !s.ok()) {
    return s;
  }
  {
    std::lock_guard<std::mutex> lock(MpiLock());
    MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
  }
  return std::shared_ptr<Communicator>(
      std::make_shared<MpiCommunicator>(comm, env.rank, env.world_size, timeout_s, device));
}

absl::Status MpiBroadcastBytes(void* data, size_t nbytes, int root, double timeout_s) {
  MPI_Request req = MPI_REQUEST_NULL;
  {
    std::lock_guard<std::mutex> lock(MpiLock());
    if (!g_initialized) return absl::FailedPreconditionError("MPI is not initialised");
    if (int rc = MPI_Ibcast(data, static_cast<int>(nbytes), MPI_BYTE, root, MPI_COMM_WORLD, &req);
        rc != MPI_SUCCESS) {
      return absl::InternalError(absl::StrCat("MPI_Ibcast failed: ", MpiErrorString(rc)));
    }
  }
  return WaitRequest(&req, timeout_s,
                     absl::StrCat("broadcast of ", nbytes, " bytes from rank ", root));
}

void AbortJob(int exit_code) {
  std::fflush(nullptr);
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, exit_code);
  std::_Exit(exit_code);
}

#endif  // FAM_HAVE_MPI

std::string MpiLibraryDescription() {
#ifdef FAM_HAVE_MPI
  char text[MPI_MAX_LIBRARY_VERSION_STRING];
  int length = 0;
  if (MPI_Get_library_version(text, &length) != MPI_SUCCESS) return "unknown";
  std::string line(text, static_cast<size_t>(length));
  const size_t end = line.find_first_of(",\n");  // the first clause names library and version
  return line.substr(0, end);
#else
  return "not built (no MPI found at configure time)";
#endif
}

}  // namespace fam::dist
