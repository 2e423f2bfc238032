#include "batching/worker_pool.h"

#include <memory>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/common/fake_clock.h"

namespace fsrst {
namespace {

using ::fsrst::testing::FakeClock;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Only bounds how long a broken pool can hang a test; never decides a result.
constexpr absl::Duration kLiveness = absl::Seconds(30);

// Records how each job was run or skipped, by id; a job can be held running.
class Jobs {
 public:
  std::unique_ptr<JobTask> Make(int id, absl::Time deadline = absl::InfiniteFuture(),
                                absl::Notification* hold = nullptr) {
    auto job = std::make_unique<JobTask>();
    job->deadline = deadline;
    job->run = [this, id, hold](absl::Status status) {
      {
        absl::MutexLock lock(&mu_);
        if (status.ok()) ++running_;
      }
      if (status.ok() && hold != nullptr) hold->WaitForNotification();
      absl::MutexLock lock(&mu_);
      if (status.ok()) --running_;
      done_.push_back({id, status.code()});
    };
    return job;
  }
  bool WaitUntilRunning(int n) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return running_ >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), kLiveness);
  }
  std::vector<std::pair<int, absl::StatusCode>> done() {
    absl::MutexLock lock(&mu_);
    return done_;
  }

 private:
  absl::Mutex mu_;
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::pair<int, absl::StatusCode>> done_ ABSL_GUARDED_BY(mu_);
};

WorkerPoolOptions OneThread(FakeClock* clock, int max_queued) {
  WorkerPoolOptions options;
  options.num_threads = 1;
  options.max_queued = max_queued;
  options.now = clock->AsFunction();
  return options;
}

void SubmitOk(WorkerPool& pool, std::unique_ptr<JobTask> job) {
  ASSERT_TRUE(pool.Submit(&job).ok());
  ASSERT_EQ(job, nullptr);
}

TEST(WorkerPool, RunsJobsInOrderAndRefusesBeyondTheQueueBound) {
  FakeClock clock;
  Jobs jobs;
  absl::Notification release;
  WorkerPool pool(OneThread(&clock, /*max_queued=*/2));
  SubmitOk(pool, jobs.Make(0, absl::InfiniteFuture(), &release));
  ASSERT_TRUE(jobs.WaitUntilRunning(1));
  SubmitOk(pool, jobs.Make(1));
  SubmitOk(pool, jobs.Make(2));
  EXPECT_EQ(pool.queued(), 2);
  EXPECT_EQ(pool.running(), 1);
  std::unique_ptr<JobTask> third = jobs.Make(3);
  const absl::Status refused = pool.Submit(&third);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.message(), HasSubstr("2 waiting"));
  EXPECT_NE(third, nullptr);  // still the caller's
  release.Notify();
  ASSERT_TRUE(pool.WaitUntilIdle(kLiveness));
  EXPECT_THAT(jobs.done(), ElementsAre(std::pair(0, absl::StatusCode::kOk),
                                       std::pair(1, absl::StatusCode::kOk),
                                       std::pair(2, absl::StatusCode::kOk)));
}

TEST(WorkerPool, SkipsJobsWhoseDeadlinePassedOrWhoseCallerLeft) {
  FakeClock clock;
  Jobs jobs;
  absl::Notification release;
  WorkerPool pool(OneThread(&clock, 8));
  SubmitOk(pool, jobs.Make(0, absl::InfiniteFuture(), &release));
  ASSERT_TRUE(jobs.WaitUntilRunning(1));
  SubmitOk(pool, jobs.Make(1, clock.Now() + absl::Milliseconds(1)));
  std::unique_ptr<JobTask> cancelled = jobs.Make(2);
  cancelled->is_cancelled = [] { return true; };
  SubmitOk(pool, std::move(cancelled));
  SubmitOk(pool, jobs.Make(3, clock.Now() + absl::Seconds(10)));
  clock.Advance(absl::Milliseconds(2));
  release.Notify();
  ASSERT_TRUE(pool.WaitUntilIdle(kLiveness));
  EXPECT_THAT(jobs.done(), ElementsAre(std::pair(0, absl::StatusCode::kOk),
                                       std::pair(1, absl::StatusCode::kDeadlineExceeded),
                                       std::pair(2, absl::StatusCode::kCancelled),
                                       std::pair(3, absl::StatusCode::kOk)));
}

TEST(WorkerPool, StopFinishesTheRunningJobAndAnswersTheQueuedOnesUnavailable) {
  FakeClock clock;
  Jobs jobs;
  absl::Notification release;
  WorkerPool pool(OneThread(&clock, 8));
  SubmitOk(pool, jobs.Make(0, absl::InfiniteFuture(), &release));
  ASSERT_TRUE(jobs.WaitUntilRunning(1));
  SubmitOk(pool, jobs.Make(1));
  SubmitOk(pool, jobs.Make(2));
  std::thread stopper([&] { pool.Stop(); });
  // Stop() refuses new jobs first; poll that, then let the running job end.
  const absl::Time until = absl::Now() + kLiveness;
  while (absl::Now() < until) {
    std::unique_ptr<JobTask> probe = std::make_unique<JobTask>();
    probe->run = [](absl::Status) {};
    if (pool.Submit(&probe).code() == absl::StatusCode::kUnavailable) break;
    absl::SleepFor(absl::Milliseconds(1));
  }
  release.Notify();
  stopper.join();
  EXPECT_THAT(jobs.done(), ElementsAre(std::pair(0, absl::StatusCode::kOk),
                                       std::pair(1, absl::StatusCode::kUnavailable),
                                       std::pair(2, absl::StatusCode::kUnavailable)));
}

}  // namespace
}  // namespace fsrst
