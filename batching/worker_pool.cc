#include "batching/worker_pool.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace fsrst {

WorkerPool::WorkerPool(WorkerPoolOptions options) : options_(std::move(options)) {
  const int threads = std::max(1, options_.num_threads);
  threads_.reserve(threads);
  for (int i = 0; i < threads; ++i) {
    threads_.emplace_back([this] {
      if (options_.on_thread_start) options_.on_thread_start();
      Loop();
    });
  }
}

WorkerPool::~WorkerPool() { Stop(); }

absl::Status WorkerPool::Submit(std::unique_ptr<JobTask>* job) {
  if (job == nullptr || *job == nullptr) return absl::InvalidArgumentError("no job to submit");
  if (!(*job)->run) return absl::InvalidArgumentError("the job has no run callback");
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("the server is shutting down; retry elsewhere");
  if (static_cast<int>(queue_.size()) >= options_.max_queued) {
    return absl::ResourceExhaustedError(
        absl::StrCat("the queue is full (", options_.max_queued, " waiting); retry with backoff"));
  }
  (*job)->enqueue_time = options_.now();
  queue_.push_back(std::move(*job));
  return absl::OkStatus();
}

bool WorkerPool::WaitUntilIdle(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return queue_.empty() && running_ == 0;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&idle), timeout);
}

void WorkerPool::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& thread : threads_) {
    if (thread.joinable()) thread.join();
  }
}

int WorkerPool::queued() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

int WorkerPool::running() const {
  absl::MutexLock lock(&mu_);
  return running_;
}

void WorkerPool::Loop() {
  while (true) {
    std::unique_ptr<JobTask> job;
    {
      absl::MutexLock lock(&mu_);
      auto has_work = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !queue_.empty();
      };
      mu_.Await(absl::Condition(&has_work));
      if (stopping_) break;
      job = std::move(queue_.front());
      queue_.pop_front();
      ++running_;
    }
    RunOrSkipJob(*job, options_.now());
    job.reset();
    absl::MutexLock lock(&mu_);
    --running_;
  }
  // Stopping: answer what is still queued without running it (the first
  // thread to get here takes it all).
  std::deque<std::unique_ptr<JobTask>> left;
  {
    absl::MutexLock lock(&mu_);
    left.swap(queue_);
  }
  for (auto& job : left) {
    job->run(absl::UnavailableError(
        "the server shut down before this call's turn; retry on another replica"));
  }
}

}  // namespace fsrst
