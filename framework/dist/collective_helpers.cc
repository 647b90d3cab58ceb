// Blocking helper collectives (see collective_helpers.h).
#include "framework/dist/collective_helpers.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/cord.h"
#include "absl/strings/str_cat.h"
#include "framework/autograd/node.h"
#include "framework/dist/env.h"
#include "framework/ops/ops.h"

namespace fam::dist {
namespace {

// Runs `collective` on a copy of the host tensor t on the communicator's device; returns the
// result on the host.
template <typename Fn>
Tensor OnDevice(Communicator& comm, const Tensor& t, Fn collective) {
  NoGradGuard no_grad;
  if (comm.device().is_cpu()) {
    collective(t).Wait();
    return t;
  }
  Tensor d = ops::To(t, comm.device()).detach();
  collective(d).Wait();
  return ops::To(d, Device::CPU()).detach();
}

}  // namespace

std::vector<double> AllReduceDoubles(Communicator& comm, const std::vector<double>& values,
                                     ReduceOp op) {
  if (comm.world_size() == 1 || values.empty()) return values;
  Tensor t = Tensor::FromVector(values, {static_cast<int64_t>(values.size())}, DType::kF64);
  return OnDevice(comm, t, [&](const Tensor& x) { return comm.AllReduce(x, op); }).ToDoubles();
}

std::vector<int64_t> AllReduceInts(Communicator& comm, const std::vector<int64_t>& values,
                                   ReduceOp op) {
  if (comm.world_size() == 1 || values.empty()) return values;
  Tensor t = Tensor::FromInts(values, {static_cast<int64_t>(values.size())}, DType::kI64);
  return OnDevice(comm, t, [&](const Tensor& x) { return comm.AllReduce(x, op); }).ToInts();
}

std::vector<std::string> AllGatherStrings(Communicator& comm, const std::string& mine) {
  const int world = comm.world_size();
  if (world == 1) return {mine};
  std::vector<int64_t> lengths(world, 0);
  lengths[comm.rank()] = static_cast<int64_t>(mine.size());
  lengths = AllReduceInts(comm, lengths);
  // Pack the bytes into i64 words (8 bytes each) and gather them with per-rank counts.
  std::vector<int64_t> counts(world);
  int64_t total = 0;
  for (int r = 0; r < world; ++r) {
    counts[r] = (lengths[r] + 7) / 8;
    total += counts[r];
  }
  Tensor part = Tensor::Zeros({counts[comm.rank()]}, DType::kI64);
  if (!mine.empty()) std::memcpy(part.raw_data(), mine.data(), mine.size());
  Tensor all = Tensor::Zeros({total}, DType::kI64);
  {
    NoGradGuard no_grad;
    if (comm.device().is_cpu()) {
      comm.AllGather(part, all, counts).Wait();
    } else {
      Tensor dall = ops::To(all, comm.device()).detach();
      comm.AllGather(ops::To(part, comm.device()).detach(), dall, counts).Wait();
      all = ops::To(dall, Device::CPU()).detach();
    }
  }
  std::vector<std::string> out;
  const char* bytes = static_cast<const char*>(all.raw_data());
  int64_t word = 0;
  for (int r = 0; r < world; ++r) {
    out.emplace_back(bytes + word * 8, static_cast<size_t>(lengths[r]));
    word += counts[r];
  }
  return out;
}

void BroadcastTensors(Communicator& comm, const std::vector<Tensor>& tensors, int root) {
  if (comm.world_size() == 1) return;
  NoGradGuard no_grad;
  std::vector<Work> works;
  std::vector<std::pair<Tensor, Tensor>> copy_back;  // (host tensor, device copy)
  for (const Tensor& t : tensors) {
    if (t.device() == comm.device()) {
      works.push_back(comm.Broadcast(t, root));
    } else {
      Tensor d = ops::To(t, comm.device()).detach();
      works.push_back(comm.Broadcast(d, root));
      copy_back.emplace_back(t, d);
    }
  }
  for (const Work& w : works) w.Wait();
  for (auto& [host, d] : copy_back) ops::CopyInPlace(host, ops::To(d, host.device()).detach());
}

namespace {
constexpr char kReportedByPayload[] = "famtrain/reported-by-rank";
}  // namespace

absl::Status AgreeOnStatus(Communicator& comm, const absl::Status& mine, const std::string& what) {
  const int world = comm.world_size();
  if (world == 1) return mine;
  constexpr int64_t kCodes = 64;  // absl status codes are < 64
  const int64_t ok_value = static_cast<int64_t>(world) * kCodes;
  const int64_t value =
      mine.ok() ? ok_value : comm.rank() * kCodes + static_cast<int64_t>(mine.code());
  const int64_t lowest = AllReduceInts(comm, {value}, ReduceOp::kMin)[0];
  if (lowest == ok_value) return absl::OkStatus();
  const int64_t rank = lowest / kCodes;
  if (rank == comm.rank()) {
    if (ReportedByAnotherRank(mine)) return mine;  // agreed before: keep the first report
    absl::Status own(mine.code(), absl::StrCat("rank ", rank, ": ", mine.message()));
    mine.ForEachPayload(
        [&](absl::string_view url, const absl::Cord& payload) { own.SetPayload(url, payload); });
    return own;
  }
  const auto code = static_cast<absl::StatusCode>(lowest % kCodes);
  absl::Status theirs(code, absl::StrCat("rank ", rank, " failed ", what));
  theirs.SetPayload(kReportedByPayload, absl::Cord(absl::StrCat(rank)));
  return theirs;
}

bool ReportedByAnotherRank(const absl::Status& status) {
  return status.GetPayload(kReportedByPayload).has_value();
}

absl::Status AgreeOnStatusInJob(const absl::Status& mine, const std::string& what) {
  absl::StatusOr<DistEnv> env = DiscoverEnv();
  if (!env.ok() || env->world_size == 1) return mine;
  CommOptions options;
  options.backend = Backend::kMpi;
  absl::StatusOr<std::shared_ptr<Communicator>> comm = CreateCommunicator(options);
  if (!comm.ok()) return mine.ok() ? comm.status() : mine;
  return AgreeOnStatus(**comm, mine, what);
}

}  // namespace fam::dist
