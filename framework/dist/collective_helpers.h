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

// OK when `mine` is OK on every rank. Otherwise a rank that failed returns its own error, and the
// others an error with the failing rank's status code: "rank R failed <what> (see its error)".
absl::Status AgreeOnStatus(Communicator& comm, const absl::Status& mine, const std::string& what);

}  // namespace fam::dist
