#ifndef FSRST_BATCHING_JOB_TASK_H_
#define FSRST_BATCHING_JOB_TASK_H_

#include <functional>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace fsrst {

// One piece of work for a worker thread that is not a frame (e.g. decoding or
// encoding one identity's references), with what is needed to skip it when
// nobody waits for it any more. Owned by whoever holds the unique_ptr: the
// caller until a queue accepts it, the queue after that. Not thread-safe; one
// thread touches it at a time.
struct JobTask {
  // The job is not run if it would start after this.
  absl::Time deadline = absl::InfiniteFuture();

  // Polled just before the job would run; true skips it (the caller went
  // away). May be empty. Must be cheap and thread-safe.
  std::function<bool()> is_cancelled;

  // Called exactly once, on a worker thread. With OK: run the job now. With
  // an error: the job was skipped and must only answer its caller:
  // DEADLINE_EXCEEDED (deadline passed while queued), CANCELLED (caller gone)
  // or UNAVAILABLE (the queue was stopped before the job's turn).
  std::function<void(absl::Status status)> run;

  absl::Time enqueue_time;  // set by the queue that accepts it
};

// Runs or skips `job` as its queue decided at `now`: calls job.run exactly once.
inline void RunOrSkipJob(JobTask& job, absl::Time now) {
  if (job.deadline < now) {
    job.run(absl::DeadlineExceededError(
        "the call's deadline passed while it waited in the server's queue; not computed"));
  } else if (job.is_cancelled && job.is_cancelled()) {
    job.run(absl::CancelledError("the caller cancelled; not computed"));
  } else {
    job.run(absl::OkStatus());
  }
}

}  // namespace fsrst

#endif  // FSRST_BATCHING_JOB_TASK_H_
