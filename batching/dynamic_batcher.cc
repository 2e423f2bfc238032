#include "batching/dynamic_batcher.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace fsrst {

DynamicBatcher::DynamicBatcher(DynamicBatcherOptions options, BatchFunction run_batch)
    : options_(std::move(options)), run_batch_(std::move(run_batch)) {
  thread_ = std::thread([this] { Loop(); });
}

DynamicBatcher::~DynamicBatcher() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    draining_ = true;
  }
  thread_.join();
  std::deque<std::unique_ptr<FrameTask>> left;
  {
    absl::MutexLock lock(&mu_);
    left.swap(queue_);
  }
  for (auto& task : left) {
    task->done(absl::UnavailableError("the batcher was shut down before this frame ran"), *task);
  }
}

absl::Status DynamicBatcher::Enqueue(std::unique_ptr<FrameTask>* task) {
  absl::MutexLock lock(&mu_);
  if (draining_) return absl::UnavailableError("the server is shutting down; retry elsewhere");
  if (static_cast<int>(queue_.size()) >= options_.max_queue_size) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the frame queue is full (max_queue_size=", options_.max_queue_size,
        " frames); retry with backoff"));
  }
  (*task)->enqueue_time = options_.now();
  queue_.push_back(std::move(*task));
  return absl::OkStatus();
}

absl::Status DynamicBatcher::RunExclusive(std::function<void()> job) {
  absl::MutexLock lock(&mu_);
  if (draining_) return absl::UnavailableError("the server is shutting down; retry elsewhere");
  jobs_.push_back(std::move(job));
  return absl::OkStatus();
}

void DynamicBatcher::StartDraining() {
  absl::MutexLock lock(&mu_);
  draining_ = true;
}

bool DynamicBatcher::WaitUntilIdle(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return queue_.empty() && jobs_.empty() && !running_;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&idle), timeout);
}

int DynamicBatcher::queue_size() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

void DynamicBatcher::Poke() {
  absl::MutexLock lock(&mu_);
  ++pokes_;
}

bool DynamicBatcher::ShouldWait(int queued, int last_batch_size, int max_batch_size,
                                absl::Time oldest, absl::Time now, absl::Duration max_delay) {
  if (queued >= max_batch_size) return false;  // a full batch never waits
  if (queued >= last_batch_size) return false;  // no more frames are expected
  return now < oldest + max_delay;
}

bool DynamicBatcher::WaitForWorkLocked() {
  const absl::Duration max_delay = absl::Microseconds(options_.max_queue_delay_us);
  while (true) {
    if (!jobs_.empty()) return true;
    if (stopping_) return false;
    if (queue_.empty()) {
      auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !jobs_.empty() || !queue_.empty();
      };
      mu_.Await(absl::Condition(&has_work));
      continue;
    }
    const absl::Time now = options_.now();
    const absl::Time oldest = queue_.front()->enqueue_time;
    if (!ShouldWait(static_cast<int>(queue_.size()), last_batch_size_, options_.max_batch_size,
                    oldest, now, max_delay)) {
      return true;
    }
    // Wait for more frames, a job, a poke, or the delay to pass.
    const size_t queued = queue_.size();
    const int64_t pokes = pokes_;
    auto changed = [this, queued, pokes]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stopping_ || !jobs_.empty() || queue_.size() != queued || pokes_ != pokes;
    };
    mu_.AwaitWithTimeout(absl::Condition(&changed), oldest + max_delay - now);
  }
}

void DynamicBatcher::TakeBatchLocked(
    absl::Time now, std::vector<std::unique_ptr<FrameTask>>* batch,
    std::vector<std::pair<std::unique_ptr<FrameTask>, absl::Status>>* dropped) {
  while (!queue_.empty() && static_cast<int>(batch->size()) < options_.max_batch_size) {
    std::unique_ptr<FrameTask> task = std::move(queue_.front());
    queue_.pop_front();
    if (task->deadline < now) {
      dropped->emplace_back(std::move(task),
                            absl::DeadlineExceededError(
                                "the frame's deadline passed while it was queued; not computed"));
    } else if (task->is_cancelled && task->is_cancelled()) {
      dropped->emplace_back(std::move(task),
                            absl::CancelledError("the caller cancelled; not computed"));
    } else {
      batch->push_back(std::move(task));
    }
  }
}

void DynamicBatcher::Loop() {
  std::vector<std::unique_ptr<FrameTask>> batch;
  std::vector<std::pair<std::unique_ptr<FrameTask>, absl::Status>> dropped;
  while (true) {
    std::function<void()> job;
    absl::Time start;
    {
      absl::MutexLock lock(&mu_);
      if (!WaitForWorkLocked()) return;
      if (!jobs_.empty()) {
        job = std::move(jobs_.front());
        jobs_.pop_front();
      } else {
        start = options_.now();
        TakeBatchLocked(start, &batch, &dropped);
        if (!batch.empty()) last_batch_size_ = static_cast<int>(batch.size());
      }
      running_ = true;
    }
    for (auto& [task, status] : dropped) task->done(status, *task);
    dropped.clear();
    if (job) {
      job();
    } else if (!batch.empty()) {
      RunBatch(start, std::move(batch));
    }
    batch.clear();
    absl::MutexLock lock(&mu_);
    running_ = false;
  }
}

void DynamicBatcher::RunBatch(absl::Time start, std::vector<std::unique_ptr<FrameTask>> tasks) {
  std::vector<FrameTask*> pointers;
  pointers.reserve(tasks.size());
  for (auto& task : tasks) {
    task->batch_start_time = start;
    task->batch_size = static_cast<int>(tasks.size());
    pointers.push_back(task.get());
  }
  const absl::Status status = run_batch_(pointers);
  for (auto& task : tasks) task->done(status, *task);
}

}  // namespace fsrst
