// The communication thread behind the MPI and NCCL communicators. Operations run one at a time in
// submission order: each is started (a non-blocking MPI call, or an NCCL call on the
// communication stream) and then polled until complete. An operation still incomplete after the
// timeout calls on_timeout with one line naming this rank, the operation and its sequence number
// (the communicators abort the job there); if on_timeout returns, the operation fails instead.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "framework/dist/communicator.h"

namespace fam::dist {

class CommWorker {
 public:
  struct Op {
    std::string what;             // e.g. "all_reduce f32[4096] sum"
    std::function<void()> start;  // issues the operation; may throw fam::Error
    std::function<bool()> test;   // true once complete; may throw fam::Error
  };

  // who: "rank 1 of 4 (mpi)", used in messages.
  CommWorker(std::string who, double timeout_s, std::function<void(const std::string&)> on_timeout);
  // Runs the operations still queued, then stops the thread.
  ~CommWorker();
  CommWorker(const CommWorker&) = delete;
  CommWorker& operator=(const CommWorker&) = delete;

  Work Submit(Op op);
  const std::string& who() const { return who_; }

 private:
  struct Item {
    Op op;
    int64_t seq;
    std::shared_ptr<WorkState> state;
  };
  void Loop();
  void Run(Item& item);

  std::string who_;
  double timeout_s_;
  std::function<void(const std::string&)> on_timeout_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool stop_ = false;
  int64_t next_seq_ = 0;
  std::thread thread_;
};

// Completes a WorkState (done, error, seconds) and wakes its waiters.
void CompleteWork(WorkState& state, std::string error, double seconds);

}  // namespace fam::dist
