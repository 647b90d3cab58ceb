// framework/dist: data-parallel communication. A Communicator is this process's handle on the group
// of ranks of a job (one process per device) with the collectives data parallelism needs:
// all-reduce, reduce-scatter and all-gather with per-rank element counts (uneven allowed),
// broadcast and barrier. Every collective returns a Work handle at once and runs on the
// communicator's communication thread in submission order, so every rank must submit the same
// collectives in the same order; Work::Wait() blocks until it is done. A collective that does not
// complete within the timeout aborts the whole job with a message naming the rank and the
// operation: a dead or stalled rank never leaves the others hanging.
//
// Implementations: "local" (world size 1: no MPI, collectives are copies or no-ops), "mpi" (CPU
// tensors; mpi_communicator.h) and "nccl" (CUDA tensors; nccl_communicator.h, compiled only when
// CUDA and NCCL are found at configure time).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "framework/core/device.h"
#include "framework/core/host_memory.h"
#include "framework/core/tensor.h"

namespace fam::dist {

enum class ReduceOp { kSum, kMax, kMin };
const char* ReduceOpName(ReduceOp op);

enum class Backend { kAuto, kMpi, kNccl };
const char* BackendName(Backend backend);

// Shared completion state of one submitted collective.
struct WorkState {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::string error;   // non-empty: the collective failed
  double seconds = 0;  // start to completion on the communication thread
};

// Handle on a submitted collective. A default-constructed Work is already complete.
class Work {
 public:
  Work() = default;
  explicit Work(std::shared_ptr<WorkState> state) : state_(std::move(state)) {}
  // Blocks until the collective has completed; throws fam::Error (kInternal) when it failed.
  void Wait() const;
  bool Done() const;
  // Seconds the collective took on the communication thread (0 when it ran inline).
  double seconds() const;

 private:
  std::shared_ptr<WorkState> state_;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string backend_name() const = 0;  // "local", "mpi", "nccl"
  // The device whose tensors this communicator moves (CPU for mpi and local).
  virtual Device device() const = 0;

  // In place: afterwards `t` holds the reduction over all ranks of every rank's `t`.
  virtual Work AllReduce(const Tensor& t, ReduceOp op = ReduceOp::kSum) = 0;
  // `input` holds sum(counts) elements on every rank, cut into world_size() segments of counts[r]
  // elements (zero allowed); rank r receives in `output` (counts[r] elements) the reduction of
  // segment r over all ranks.
  virtual Work ReduceScatter(const Tensor& input, const Tensor& output,
                             const std::vector<int64_t>& counts, ReduceOp op = ReduceOp::kSum) = 0;
  // `input` holds counts[rank()] elements; `output` (sum(counts) elements) receives segment r from
  // rank r, in rank order.
  virtual Work AllGather(const Tensor& input, const Tensor& output,
                         const std::vector<int64_t>& counts) = 0;
  // `t` on every rank receives root's `t`.
  virtual Work Broadcast(const Tensor& t, int root) = 0;
  virtual Work Barrier() = 0;

  // Prints "fam: rank R of N: <message>" to stderr and ends every rank of the job with exit_code.
  [[noreturn]] virtual void Abort(const std::string& message, int exit_code) = 0;

 protected:
  // Argument checks shared by the implementations; throw fam::Error naming the tensor and shape.
  void CheckTensor(const char* op, const Tensor& t) const;
  void CheckCounts(const char* op, const std::vector<int64_t>& counts, const Tensor& full,
                   const Tensor& part) const;
};

struct CommOptions {
  Backend backend = Backend::kAuto;  // auto: nccl for CUDA tensors, mpi for CPU ones
  Device device = Device::CPU();     // where the tensors to communicate live
  double timeout_s = 600;            // per collective; then the job is aborted
};

// The communicator of this process: "local" when the launcher environment (env.h) says the job has
// one process, otherwise MPI (initialised on first use, finalised at exit) or NCCL. Errors name the
// backend and why it cannot be used (e.g. "NCCL support not built").
absl::StatusOr<std::shared_ptr<Communicator>> CreateCommunicator(const CommOptions& options);
// A world-size-1 communicator (no MPI).
std::shared_ptr<Communicator> MakeLocalCommunicator(Device device = Device::CPU());

// Human-readable size for logs: "12.3 MiB".
inline std::string FormatBytes(double bytes) { return FormatByteSize(bytes); }

}  // namespace fam::dist
