// Small blocking collectives built on a Communicator, for the trainer's bookkeeping: reducing a
// few numbers, gathering strings, broadcasting tensors from rank 0, and agreeing on whether a
// step of set-up succeeded on every rank (so that an error on one rank is reported by all ranks
// instead of leaving the others waiting in the next collective). Host values go through a tensor
// on the communicator's device.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "framework/dist/communicator.h"

namespace fam::dist {

// Element-wise reduction of `values` over all ranks (f64).
std::vector<double> AllReduceDoubles(Communicator& comm, const std::vector<double>& values,
                                     ReduceOp op = ReduceOp::kSum);
// Element-wise reduction of `values` over all ranks (i64).
std::vector<int64_t> AllReduceInts(Communicator& comm, const std::vector<int64_t>& values,
                                   ReduceOp op = ReduceOp::kSum);

// Every rank's string, in rank order.
std::vector<std::string> AllGatherStrings(Communicator& comm, const std::string& mine);

// Overwrites each tensor (contiguous, on the host or the communicator's device) with rank root's.
void BroadcastTensors(Communicator& comm, const std::vector<Tensor>& tensors, int root);

// OK when `mine` is OK on every rank. Otherwise the job reports one error: the lowest failing rank
// returns its own, prefixed "rank R: ", and every other rank (failed or not) an error with that
// status code, "rank R failed <what>", marked so that ReportedByAnotherRank() is true and the CLI
// prints nothing for it.
absl::Status AgreeOnStatus(Communicator& comm, const absl::Status& mine, const std::string& what);
// The same across the whole job before any communicator exists (say, a config every rank failed to
// read): a temporary MPI communicator when the launcher started several ranks, else `mine`.
absl::Status AgreeOnStatusInJob(const absl::Status& mine, const std::string& what);
// True for the errors AgreeOnStatus gives ranks whose failure another rank reports.
bool ReportedByAnotherRank(const absl::Status& status);

}  // namespace fam::dist
