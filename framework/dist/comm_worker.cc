// The communication thread: FIFO of operations, each polled against its deadline.
#include "framework/dist/comm_worker.h"

#include <chrono>
#include <exception>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "framework/core/error.h"

namespace fam::dist {
namespace {

using Clock = std::chrono::steady_clock;

// Polling cadence: spin briefly (small collectives finish in microseconds), then back off to
// short sleeps so that a waiting thread leaves the cores to the compute threads.
void PollPause(int64_t polls) {
  if (polls < 64) return;
  if (polls < 512) {
    std::this_thread::yield();
    return;
  }
  const int64_t us = polls < 2048 ? 20 : 200;
  std::this_thread::sleep_for(std::chrono::microseconds(us));
}

}  // namespace

void CompleteWork(WorkState& state, std::string error, double seconds) {
  {
    std::lock_guard<std::mutex> lock(state.mu);
    state.done = true;
    state.error = std::move(error);
    state.seconds = seconds;
  }
  state.cv.notify_all();
}

CommWorker::CommWorker(std::string who, double timeout_s,
                       std::function<void(const std::string&)> on_timeout)
    : who_(std::move(who)), timeout_s_(timeout_s), on_timeout_(std::move(on_timeout)) {
  thread_ = std::thread([this] { Loop(); });
}

CommWorker::~CommWorker() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Work CommWorker::Submit(Op op) {
  auto state = std::make_shared<WorkState>();
  {
    std::lock_guard<std::mutex> lock(mu_);
    FAM_ASSERT(!stop_);
    queue_.push_back(Item{std::move(op), next_seq_++, state});
  }
  cv_.notify_one();
  return Work(state);
}

void CommWorker::Loop() {
  while (true) {
    Item item;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stop requested and nothing left
      item = std::move(queue_.front());
      queue_.pop_front();
    }
    Run(item);
  }
}

void CommWorker::Run(Item& item) {
  const Clock::time_point begin = Clock::now();
  const Clock::time_point deadline = begin + std::chrono::duration_cast<Clock::duration>(
                                                 std::chrono::duration<double>(timeout_s_));
  std::string error;
  try {
    item.op.start();
    for (int64_t polls = 0; !item.op.test(); ++polls) {
      if (Clock::now() > deadline) {
        const std::string message = absl::StrFormat(
            "%s: %s (collective #%d) did not complete within %g s: another rank died, stalled or "
            "is running different collectives; aborting the job",
            who_, item.op.what, item.seq, timeout_s_);
        on_timeout_(message);
        error = message;  // on_timeout returned (tests): fail this operation instead
        break;
      }
      PollPause(polls);
    }
  } catch (const std::exception& e) {
    error =
        absl::StrCat(who_, ": ", item.op.what, " (collective #", item.seq, ") failed: ", e.what());
  }
  CompleteWork(*item.state, std::move(error),
               std::chrono::duration<double>(Clock::now() - begin).count());
}

}  // namespace fam::dist
