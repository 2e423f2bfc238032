#ifndef FSRST_BATCHING_WORKER_POOL_H_
#define FSRST_BATCHING_WORKER_POOL_H_

#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "batching/job_task.h"

namespace fsrst {

struct WorkerPoolOptions {
  int num_threads = 1;   // jobs that run side by side; at least 1
  int max_queued = 64;   // Submit beyond this many waiting jobs fails with RESOURCE_EXHAUSTED
  // Runs first on every thread (e.g. to lower its priority); may be empty.
  std::function<void()> on_thread_start;
  // The clock that deadlines are checked against. Must be thread-safe.
  std::function<absl::Time()> now = [] { return absl::Now(); };
};

// A fixed set of threads that run JobTasks from one bounded FIFO queue: for
// CPU-heavy work that must stay off the gRPC threads (decoding reference
// images) and must not queue without limit. A job whose deadline passed or
// whose caller cancelled while it waited is skipped (see JobTask).
//
// Thread-safe: every public method may be called from any thread, except as
// noted.
class WorkerPool {
 public:
  explicit WorkerPool(WorkerPoolOptions options);
  // Stop(), then frees the pool.
  ~WorkerPool();

  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Hands *job to the pool. On success *job is null and job->run will be
  // called exactly once, on a pool thread. On failure *job is untouched:
  // RESOURCE_EXHAUSTED (max_queued jobs are waiting), UNAVAILABLE (stopped),
  // INVALID_ARGUMENT (no job or no job->run).
  absl::Status Submit(std::unique_ptr<JobTask>* job);

  // Blocks until nothing is queued or running, or until `timeout` passes.
  // Returns true if idle.
  bool WaitUntilIdle(absl::Duration timeout);

  // Refuses new jobs, lets the running ones finish, answers every queued job
  // with UNAVAILABLE (on a pool thread), and joins the threads. Idempotent.
  // REQUIRES: not called from a job, nor concurrently with itself.
  void Stop();

  // Jobs waiting for a thread.
  int queued() const;
  // Jobs running now.
  int running() const;

 private:
  void Loop();

  const WorkerPoolOptions options_;
  mutable absl::Mutex mu_;
  std::deque<std::unique_ptr<JobTask>> queue_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;  // written only by the constructor
};

}  // namespace fsrst

#endif  // FSRST_BATCHING_WORKER_POOL_H_
