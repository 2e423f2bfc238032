#ifndef FSRST_BATCHING_DYNAMIC_BATCHER_H_
#define FSRST_BATCHING_DYNAMIC_BATCHER_H_

#include <cstddef>
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
#include "batching/job_task.h"

namespace fsrst {

struct DynamicBatcherOptions {
  int max_batch_size = 8;            // frames per model call at most
  int64_t max_queue_delay_us = 2000;  // a partial batch waits at most this long, from its oldest frame
  int max_queue_size = 256;          // Enqueue beyond this fails with RESOURCE_EXHAUSTED
  int max_queued_jobs = 64;          // EnqueueJob/RunExclusive beyond this: RESOURCE_EXHAUSTED
  // Model instances: worker threads that each run one batch or job at a time,
  // side by side. At least 1.
  int num_workers = 1;
  // Runs first on every worker thread (e.g. to set its scheduling priority);
  // may be empty.
  std::function<void()> on_worker_start;
  // The clock; tests inject a fake one. Must be thread-safe.
  std::function<absl::Time()> now = [] { return absl::Now(); };
};

// Groups frames of any identities into batches and runs them on its worker
// threads: one per model instance (options.num_workers), each running one
// batch at a time. On a CPU a model call rarely keeps every core busy, so
// instances that each own a core outrun one instance spread over all of them.
//
// Batching rule: when a worker is free, it takes up to
// max_batch_size queued frames at once. A partial batch waits for more frames
// only while waiting can help: while fewer frames are queued than are
// expected, and never longer than max_queue_delay_us after its oldest frame
// arrived. Expected = the frames of this worker's last batch plus those queued
// when its model call returned, before any of its callers was answered
// (capped at max_batch_size; 0 before its first batch): the callers it
// answered are likely to send again, and the ones that sent while it ran are
// already waiting. Counted per worker: with two instances and two callers,
// each worker expects one frame, so neither waits for a second.
//
// Sharing rule: a worker takes its share of the queue, split evenly among it
// and the other workers waiting for work (at most max_batch_size), so two
// frames that arrive together on two idle instances run side by side instead
// of one after the other in one batch. A worker alone takes everything it may. So one caller is never delayed, and N closed-loop
// callers are gathered into batches of N instead of settling into alternating
// partial batches (a frame that arrives while a batch runs would otherwise
// start the next batch alone).
//
// Frames whose deadline has passed or whose caller cancelled are dropped just
// before their batch runs, and finished with DEADLINE_EXCEEDED / CANCELLED.
//
// Jobs (e.g. encoding an identity's references) run on a worker between its
// batches, so one instance never runs two things at once. They wait in a
// queue of their own, bounded like the frames', and are skipped like frames
// when their deadline passes or their caller cancels. Frames and jobs share
// the model by turns: when both are ready, a worker takes whichever kind the
// last worker to choose did not, so a flood of jobs delays a frame by at most
// one job per worker, and a flood of frames delays a job by one batch. A job
// also goes ahead of a partial batch that is still waiting for frames.
//
// Thread-safe: every public method may be called from any thread.
class DynamicBatcher {
 public:
  // Runs one batch on the model: fills output_rgb of every task, or returns
  // the error that every task of the batch then finishes with.
  // REQUIRES: 1 <= batch.size() <= max_batch_size.
  using BatchFunction = std::function<absl::Status(const std::vector<FrameTask*>& batch)>;

  // Starts the worker threads. The batch function is called from several
  // workers at once when num_workers > 1.
  DynamicBatcher(DynamicBatcherOptions options, BatchFunction run_batch);
  // Stop(), then frees the batcher.
  ~DynamicBatcher();

  DynamicBatcher(const DynamicBatcher&) = delete;
  DynamicBatcher& operator=(const DynamicBatcher&) = delete;

  // Hands *task to the batcher. On success *task is null and task->done will
  // be called exactly once. On failure *task is untouched and still the
  // caller's: RESOURCE_EXHAUSTED (queue full), UNAVAILABLE (draining), or
  // INVALID_ARGUMENT (no task, or no task->done).
  absl::Status Enqueue(std::unique_ptr<FrameTask>* task);

  // Hands *job to the batcher: it runs on a worker between batches, jobs in
  // FIFO order (started in order; with several workers they may overlap),
  // taking turns with frames (see the class comment). On success *job is
  // null and job->run will be called exactly once. On failure *job is
  // untouched: RESOURCE_EXHAUSTED (max_queued_jobs are waiting), UNAVAILABLE
  // (draining or stopped), or INVALID_ARGUMENT (no job, or no job->run).
  absl::Status EnqueueJob(std::unique_ptr<JobTask>* job);

  // EnqueueJob of a job without deadline that runs `job` (and does nothing if
  // skipped because the batcher stopped first). Errors as EnqueueJob's.
  absl::Status RunExclusive(std::function<void()> job);

  // Refuses new frames and jobs from now on (UNAVAILABLE); queued ones still run.
  void StartDraining();

  // Refuses new work, lets the running batches and jobs finish, answers every
  // queued frame and job with UNAVAILABLE without running it (on a worker
  // thread, like every done), and joins the workers: when it returns, every
  // task ever accepted has been answered. For a shutdown whose drain ran out
  // of time. Idempotent.
  // REQUIRES: not called on a worker thread (from a done or a job), nor
  // concurrently with itself.
  void Stop();

  // Blocks until nothing is queued or running, or until `timeout` (real time)
  // passes. Returns true if everything finished, every done included.
  bool WaitUntilIdle(absl::Duration timeout);

  // Frames queued and not yet taken into a batch.
  int queue_size() const;

  // Jobs queued and not yet started.
  int job_queue_size() const;

  // Workers waiting for work (not running a batch or a job).
  int idle_workers() const;

  // Re-evaluates a waiting partial batch against options.now(). The batcher
  // also re-evaluates on every Enqueue and when the real wait times out; tests
  // that move a fake clock call this. Returns once a worker has re-evaluated
  // (if all are busy, after one's current batch or job), so a test can
  // assert what it decided: a batch it started is no longer in queue_size().
  // REQUIRES: the running batch or job, if any, can finish without the caller.
  void Poke();

  // The batching rule, as a pure function: whether `queued` frames (the
  // oldest enqueued at `oldest`) should wait for more at `now`, given how many
  // frames are expected (see the class comment).
  static bool ShouldWait(int queued, int expected_frames, int max_batch_size,
                         absl::Time oldest, absl::Time now, absl::Duration max_delay);

 private:
  using Batch = std::vector<std::unique_ptr<FrameTask>>;
  using Dropped = std::vector<std::pair<std::unique_ptr<FrameTask>, absl::Status>>;

  void Loop();
  enum class Work { kStop, kBatch, kJob };

  // Waits (releasing mu_) until a batch or a job should run, and says which
  // (kStop when stopping). `expected_frames` is the calling worker's (see the
  // class comment).
  Work WaitForWorkLocked(int expected_frames) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves queued frames into `batch` until it holds `limit` (at most max_batch_size).
  void TakeFramesLocked(size_t limit, Batch* batch) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves the expired (deadline < start) or cancelled frames of `batch` into
  // `dropped`, refilling from the queue; polls is_cancelled without mu_ held.
  void DropDeadFrames(absl::Time start, size_t limit, Batch* batch, Dropped* dropped)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Runs `batch` and finishes its tasks; returns the frames this worker
  // expects next. `pointers` is scratch space.
  int RunBatch(absl::Time start, Batch* batch, std::vector<FrameTask*>* pointers)
      ABSL_LOCKS_EXCLUDED(mu_);

  const DynamicBatcherOptions options_;
  const BatchFunction run_batch_;
  const size_t max_batch_size_;  // options.max_batch_size, at least 1

  mutable absl::Mutex mu_;
  std::deque<std::unique_ptr<FrameTask>> queue_ ABSL_GUARDED_BY(mu_);
  std::deque<std::unique_ptr<JobTask>> jobs_ ABSL_GUARDED_BY(mu_);
  bool last_took_job_ ABSL_GUARDED_BY(mu_) = false;  // the last choice between the two kinds
  int running_ ABSL_GUARDED_BY(mu_) = 0;  // batches and jobs executing now
  int idle_workers_ ABSL_GUARDED_BY(mu_) = 0;  // workers inside WaitForWorkLocked
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int64_t pokes_ ABSL_GUARDED_BY(mu_) = 0;            // Poke() calls so far
  int64_t evaluated_pokes_ ABSL_GUARDED_BY(mu_) = 0;  // pokes_ at a worker's last look

  std::vector<std::thread> workers_;  // written only by the constructor
};

}  // namespace fsrst

#endif  // FSRST_BATCHING_DYNAMIC_BATCHER_H_
