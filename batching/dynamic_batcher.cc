#include "batching/dynamic_batcher.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace fsrst {
namespace {

// The batcher whose worker this thread is, if any: lets Poke() tell a call
// from a done or a job apart without reading workers_.
thread_local const DynamicBatcher* current_worker_of = nullptr;

}  // namespace

DynamicBatcher::DynamicBatcher(DynamicBatcherOptions options, BatchFunction run_batch)
    : options_(std::move(options)),
      run_batch_(std::move(run_batch)),
      max_batch_size_(static_cast<size_t>(std::max(1, options_.max_batch_size))) {
  const int workers = std::max(1, options_.num_workers);
  workers_.reserve(workers);
  for (int i = 0; i < workers; ++i) {
    workers_.emplace_back([this] {
      current_worker_of = this;
      if (options_.on_worker_start) options_.on_worker_start();
      Loop();
    });
  }
}

DynamicBatcher::~DynamicBatcher() { Stop(); }

void DynamicBatcher::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    draining_ = true;
  }
  // The workers answer what is still queued before they end.
  for (std::thread& worker : workers_) {
    if (worker.joinable()) worker.join();
  }
}

absl::Status DynamicBatcher::Enqueue(std::unique_ptr<FrameTask>* task) {
  if (task == nullptr || *task == nullptr) return absl::InvalidArgumentError("no task to enqueue");
  if (!(*task)->done) return absl::InvalidArgumentError("the task has no done callback");
  absl::MutexLock lock(&mu_);
  if (draining_) return absl::UnavailableError("the server is shutting down; retry elsewhere");
  if (static_cast<int>(queue_.size()) >= options_.max_queue_size) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the frame queue is full (max_queue_size=", options_.max_queue_size,
        " frames); retry with backoff"));
  }
  // Stamped under mu_ so that enqueue times rise along the queue: the front
  // frame is the oldest, which the delay is measured from.
  (*task)->enqueue_time = options_.now();
  queue_.push_back(std::move(*task));
  return absl::OkStatus();
}

absl::Status DynamicBatcher::EnqueueJob(std::unique_ptr<JobTask>* job) {
  if (job == nullptr || *job == nullptr) return absl::InvalidArgumentError("no job to enqueue");
  if (!(*job)->run) return absl::InvalidArgumentError("the job has no run callback");
  absl::MutexLock lock(&mu_);
  if (draining_) return absl::UnavailableError("the server is shutting down; retry elsewhere");
  if (static_cast<int>(jobs_.size()) >= options_.max_queued_jobs) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the model's job queue is full (", options_.max_queued_jobs,
        " jobs waiting); retry with backoff"));
  }
  (*job)->enqueue_time = options_.now();
  jobs_.push_back(std::move(*job));
  return absl::OkStatus();
}

absl::Status DynamicBatcher::RunExclusive(std::function<void()> job) {
  if (!job) return absl::InvalidArgumentError("no job to run");
  auto task = std::make_unique<JobTask>();
  task->run = [job = std::move(job)](absl::Status status) {
    if (status.ok()) job();
  };
  return EnqueueJob(&task);
}

void DynamicBatcher::StartDraining() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
}

bool DynamicBatcher::WaitUntilIdle(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return queue_.empty() && jobs_.empty() && running_ == 0;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&idle), timeout);
}

int DynamicBatcher::queue_size() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

int DynamicBatcher::job_queue_size() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(jobs_.size());
}

int DynamicBatcher::idle_workers() const {
  absl::MutexLock lock(&mu_);
  return idle_workers_;
}

void DynamicBatcher::Poke() {
  absl::MutexLock lock(&mu_);
  const int64_t poke = ++pokes_;
  // On a worker (a job or a done), that worker re-evaluates once this returns.
  if (current_worker_of == this) return;
  auto evaluated = [this, poke]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return evaluated_pokes_ >= poke || stopping_;
  };
  mu_.Await(absl::Condition(&evaluated));
}

bool DynamicBatcher::ShouldWait(int queued, int expected_frames, int max_batch_size,
                                absl::Time oldest, absl::Time now, absl::Duration max_delay) {
  if (queued >= max_batch_size) return false;   // a full batch never waits
  if (queued >= expected_frames) return false;  // no more frames are expected
  return now < oldest + max_delay;
}

DynamicBatcher::Work DynamicBatcher::WaitForWorkLocked(int expected_frames) {
  const absl::Duration max_delay = absl::Microseconds(options_.max_queue_delay_us);
  while (true) {
    // Whatever is decided below is decided in this critical section, so a
    // Poke() that returns has seen its outcome.
    evaluated_pokes_ = pokes_;
    if (stopping_) return Work::kStop;
    // Frames are ready when a batch should start now; draining, no more
    // frames can come, so waiting cannot help.
    bool frames_ready = false;
    absl::Time now;
    absl::Time oldest;
    if (!queue_.empty()) {
      frames_ready = draining_;
      if (!frames_ready) {
        now = options_.now();
        oldest = queue_.front()->enqueue_time;
        frames_ready = !ShouldWait(static_cast<int>(queue_.size()), expected_frames,
                                   static_cast<int>(max_batch_size_), oldest, now, max_delay);
      }
    }
    // Turns: a job when frames are not ready or the last choice was frames.
    if (!jobs_.empty() && (!frames_ready || !last_took_job_)) {
      last_took_job_ = true;
      return Work::kJob;
    }
    if (frames_ready) {
      last_took_job_ = false;
      return Work::kBatch;
    }
    if (queue_.empty()) {
      const int64_t pokes = pokes_;
      auto has_work = [this, pokes]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !jobs_.empty() || !queue_.empty() || pokes_ != pokes;
      };
      mu_.Await(absl::Condition(&has_work));
      continue;
    }
    // Wait for a frame, a job, a poke, draining, or the delay to pass. The
    // real timeout only prompts a new look; options.now() decides.
    const size_t queued = queue_.size();
    const int64_t pokes = pokes_;
    auto changed = [this, queued, pokes]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stopping_ || draining_ || !jobs_.empty() || queue_.size() != queued ||
             pokes_ != pokes;
    };
    mu_.AwaitWithTimeout(absl::Condition(&changed), oldest + max_delay - now);
  }
}

void DynamicBatcher::TakeFramesLocked(size_t limit, Batch* batch) {
  limit = std::min(limit, max_batch_size_);
  while (!queue_.empty() && batch->size() < limit) {
    batch->push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
}

void DynamicBatcher::DropDeadFrames(absl::Time start, size_t limit, Batch* batch,
                                    Dropped* dropped) {
  size_t live = 0;
  while (true) {
    const size_t taken = batch->size();
    for (size_t i = live; i < taken; ++i) {
      std::unique_ptr<FrameTask>& task = (*batch)[i];
      if (task->deadline < start) {
        dropped->emplace_back(std::move(task),
                              absl::DeadlineExceededError(
                                  "the frame's deadline passed while it was queued; not computed"));
      } else if (task->is_cancelled && task->is_cancelled()) {
        dropped->emplace_back(std::move(task),
                              absl::CancelledError("the caller cancelled; not computed"));
      } else {
        if (i != live) (*batch)[live] = std::move(task);
        ++live;
      }
    }
    batch->resize(live);
    // Refill the places of dropped frames from what is queued now.
    if (live == taken || live >= limit) return;
    absl::MutexLock lock(&mu_);
    if (queue_.empty()) return;
    TakeFramesLocked(limit, batch);
  }
}

void DynamicBatcher::Loop() {
  Batch batch;
  batch.reserve(max_batch_size_);
  std::vector<FrameTask*> pointers;
  pointers.reserve(max_batch_size_);
  Dropped dropped;
  std::unique_ptr<JobTask> job;
  int expected_frames = 0;  // this worker's; see the class comment
  while (true) {
    absl::Time start;
    size_t share = max_batch_size_;
    {
      absl::MutexLock lock(&mu_);
      ++idle_workers_;
      const Work work = WaitForWorkLocked(expected_frames);
      --idle_workers_;
      if (work == Work::kStop) break;
      ++running_;
      if (work == Work::kJob) {
        job = std::move(jobs_.front());
        jobs_.pop_front();
      } else {
        start = options_.now();
        // This worker's share: the queue split among it and the idle others
        // (alone, everything it may take, refills after drops included).
        if (idle_workers_ > 0) {
          const size_t sharers = static_cast<size_t>(idle_workers_) + 1;
          share = (queue_.size() + sharers - 1) / sharers;
        }
        TakeFramesLocked(share, &batch);
      }
    }
    if (job != nullptr) {
      RunOrSkipJob(*job, options_.now());
      job.reset();
    } else {
      DropDeadFrames(start, share, &batch, &dropped);
      for (auto& [task, status] : dropped) task->done(std::move(status), *task);
      dropped.clear();
      if (!batch.empty()) expected_frames = RunBatch(start, &batch, &pointers);
    }
    batch.clear();
    absl::MutexLock lock(&mu_);
    --running_;
  }

  // Stopping: answer what is still queued, here like every other done (the
  // first worker to get here takes it all), without running any of it.
  std::deque<std::unique_ptr<FrameTask>> left;
  std::deque<std::unique_ptr<JobTask>> left_jobs;
  {
    absl::MutexLock lock(&mu_);
    left.swap(queue_);
    left_jobs.swap(jobs_);
  }
  for (auto& task : left) {
    task->done(absl::UnavailableError(
                   "the server shut down before this frame's turn; retry on another replica"),
               *task);
  }
  for (auto& queued_job : left_jobs) {
    queued_job->run(absl::UnavailableError(
        "the server shut down before this call's turn; retry on another replica"));
  }
}

int DynamicBatcher::RunBatch(absl::Time start, Batch* batch, std::vector<FrameTask*>* pointers) {
  const int size = static_cast<int>(batch->size());
  pointers->clear();
  for (auto& task : *batch) {
    task->batch_start_time = start;
    task->batch_size = size;
    pointers->push_back(task.get());
  }
  const absl::Status status = run_batch_(*pointers);
  int expected_frames;
  {
    // Counted before any done runs: a frame queued now came from a caller
    // other than this batch's, whose callers are likely to send again.
    absl::MutexLock lock(&mu_);
    expected_frames = static_cast<int>(std::min(max_batch_size_, batch->size() + queue_.size()));
  }
  for (auto& task : *batch) task->done(status, *task);
  return expected_frames;
}

}  // namespace fsrst
