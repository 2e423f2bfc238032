#ifndef FSRST_BATCHING_DYNAMIC_BATCHER_H_
#define FSRST_BATCHING_DYNAMIC_BATCHER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "batching/frame_task.h"

namespace fsrst {

struct DynamicBatcherOptions {
  int max_batch_size = 8;            // frames per model call at most
  int64_t max_queue_delay_us = 2000;  // a partial batch waits at most this long, from its oldest frame
  int max_queue_size = 256;          // Enqueue beyond this fails with RESOURCE_EXHAUSTED
  // The clock; tests inject a fake one. Must be thread-safe.
  std::function<absl::Time()> now = [] { return absl::Now(); };
};

// Groups frames of any identities into batches and runs them, one batch at a
// time, on its own thread (the model's single inference thread).
//
// Batching rule: when the model is free, the batcher takes up to
// max_batch_size queued frames at once. A partial batch waits for more frames
// only while waiting can help: while fewer frames are queued than the last
// batch carried (its callers are likely to send again), and never longer than
// max_queue_delay_us after its oldest frame arrived. So one caller is never
// delayed, and N closed-loop callers are gathered into batches of N.
//
// Frames whose deadline has passed or whose caller cancelled are dropped just
// before their batch runs, and finished with DEADLINE_EXCEEDED / CANCELLED.
//
// Exclusive jobs (e.g. encoding an identity's references) run on the same
// thread between batches, so the model never runs two things at once.
//
// Thread-safe: every public method may be called from any thread.
class DynamicBatcher {
 public:
  // Runs one batch on the model: fills output_rgb of every task, or returns
  // the error that every task of the batch then finishes with.
  // REQUIRES: 1 <= batch.size() <= max_batch_size.
  using BatchFunction = std::function<absl::Status(const std::vector<FrameTask*>& batch)>;

  // Starts the batcher thread.
  DynamicBatcher(DynamicBatcherOptions options, BatchFunction run_batch);
  // Stops accepting, finishes every queued task with UNAVAILABLE, joins.
  ~DynamicBatcher();

  DynamicBatcher(const DynamicBatcher&) = delete;
  DynamicBatcher& operator=(const DynamicBatcher&) = delete;

  // Hands *task to the batcher. On success *task is null and task->done will
  // be called exactly once. On failure *task is untouched and still the
  // caller's: RESOURCE_EXHAUSTED (queue full) or UNAVAILABLE (draining).
  absl::Status Enqueue(std::unique_ptr<FrameTask>* task);

  // Runs `job` on the batcher thread between batches, in FIFO order with
  // other jobs. Fails with UNAVAILABLE once draining, and then `job` is not run.
  absl::Status RunExclusive(std::function<void()> job);

  // Refuses new frames and jobs from now on (UNAVAILABLE); queued ones still run.
  void StartDraining();

  // Blocks until nothing is queued or running, or until `timeout` passes.
  // Returns true if everything finished.
  bool WaitUntilIdle(absl::Duration timeout);

  // Frames queued and not yet taken into a batch.
  int queue_size() const;

  // Re-evaluates a waiting partial batch against options.now(). The batcher
  // also re-evaluates on every Enqueue and when the real wait times out; tests
  // that move a fake clock call this.
  void Poke();

  // The batching rule, as a pure function: whether `queued` frames (the
  // oldest enqueued at `oldest`) should wait for more at `now`, given the size
  // of the last batch run.
  static bool ShouldWait(int queued, int last_batch_size, int max_batch_size,
                         absl::Time oldest, absl::Time now, absl::Duration max_delay);

 private:
  void Loop();
  // Waits (releasing mu_) until a batch or a job should run; false when stopping.
  bool WaitForWorkLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves up to max_batch_size live frames from the queue into `batch`, and the
  // expired or cancelled ones met on the way into `dropped` with their status.
  void TakeBatchLocked(absl::Time now, std::vector<std::unique_ptr<FrameTask>>* batch,
                       std::vector<std::pair<std::unique_ptr<FrameTask>, absl::Status>>* dropped)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void RunBatch(absl::Time start, std::vector<std::unique_ptr<FrameTask>> tasks);

  const DynamicBatcherOptions options_;
  const BatchFunction run_batch_;

  mutable absl::Mutex mu_;
  std::deque<std::unique_ptr<FrameTask>> queue_ ABSL_GUARDED_BY(mu_);
  std::deque<std::function<void()>> jobs_ ABSL_GUARDED_BY(mu_);
  int last_batch_size_ ABSL_GUARDED_BY(mu_) = 0;
  bool running_ ABSL_GUARDED_BY(mu_) = false;  // a batch or job is executing
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int64_t pokes_ ABSL_GUARDED_BY(mu_) = 0;

  std::thread thread_;
};

}  // namespace fsrst

#endif  // FSRST_BATCHING_DYNAMIC_BATCHER_H_
