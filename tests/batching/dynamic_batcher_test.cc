#include "batching/dynamic_batcher.h"

#include <memory>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fsrst {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

class FakeClock {
 public:
  absl::Time Now() {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }

 private:
  absl::Mutex mu_;
  absl::Time now_ = absl::FromUnixSeconds(1000);
};

// Records what the batcher did; the batch function can be held "busy".
class Recorder {
 public:
  DynamicBatcher::BatchFunction Function() {
    return [this](const std::vector<FrameTask*>& batch) {
      {
        absl::MutexLock lock(&mu_);
        sizes_.push_back(static_cast<int>(batch.size()));
        for (FrameTask* t : batch) ids_.push_back(t->frame_rgb.empty() ? -1 : t->frame_rgb[0]);
        ++running_;
        max_running_ = std::max(max_running_, running_);
      }
      if (hold_ != nullptr) {
        hold_->WaitForNotification();
        hold_ = nullptr;  // only the first batch is held
      }
      absl::MutexLock lock(&mu_);
      --running_;
      return status_;
    };
  }

  // The task's done callback: records the status.
  std::unique_ptr<FrameTask> Task(int id, absl::Time deadline = absl::InfiniteFuture()) {
    auto task = std::make_unique<FrameTask>();
    task->frame_rgb = {static_cast<uint8_t>(id)};
    task->deadline = deadline;
    task->done = [this, id](absl::Status status, FrameTask&) {
      absl::MutexLock lock(&mu_);
      done_.emplace_back(id, status.code());
    };
    return task;
  }

  void WaitForDone(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return done_.size() >= n; };
    mu_.Await(absl::Condition(&enough));
  }

  std::vector<int> sizes() {
    absl::MutexLock lock(&mu_);
    return sizes_;
  }
  std::vector<std::pair<int, absl::StatusCode>> done() {
    absl::MutexLock lock(&mu_);
    return done_;
  }
  int max_running() {
    absl::MutexLock lock(&mu_);
    return max_running_;
  }

  absl::Notification* hold_ = nullptr;
  absl::Status status_;

 private:
  absl::Mutex mu_;
  std::vector<int> sizes_;
  std::vector<int> ids_;
  std::vector<std::pair<int, absl::StatusCode>> done_;
  int running_ = 0;
  int max_running_ = 0;
};

DynamicBatcherOptions Options(FakeClock* clock, int max_batch = 8, int max_queue = 100) {
  DynamicBatcherOptions options;
  options.max_batch_size = max_batch;
  options.max_queue_delay_us = 2000;
  options.max_queue_size = max_queue;
  options.now = [clock] { return clock->Now(); };
  return options;
}

void EnqueueOk(DynamicBatcher& batcher, std::unique_ptr<FrameTask> task) {
  ASSERT_TRUE(batcher.Enqueue(&task).ok());
  ASSERT_EQ(task, nullptr);
}

// Holds the model busy with frame 0 until `release`, so frames queue up.
void OccupyModel(DynamicBatcher& batcher, Recorder& recorder, absl::Notification* release) {
  recorder.hold_ = release;
  EnqueueOk(batcher, recorder.Task(0));
  while (batcher.queue_size() != 0) absl::SleepFor(absl::Milliseconds(1));
}

TEST(DynamicBatcherRule, ShouldWaitOnlyWhileMoreFramesAreExpected) {
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  const absl::Duration delay = absl::Microseconds(2000);
  // Fewer queued than the last batch carried, within the delay: wait.
  EXPECT_TRUE(DynamicBatcher::ShouldWait(1, 4, 8, t0, t0, delay));
  EXPECT_TRUE(DynamicBatcher::ShouldWait(3, 4, 8, t0, t0 + delay - absl::Microseconds(1), delay));
  // The delay has passed since the oldest frame.
  EXPECT_FALSE(DynamicBatcher::ShouldWait(3, 4, 8, t0, t0 + delay, delay));
  // As many as the last batch: nothing more expected.
  EXPECT_FALSE(DynamicBatcher::ShouldWait(4, 4, 8, t0, t0, delay));
  // One caller (last batch 1) or an idle start (0): never waits.
  EXPECT_FALSE(DynamicBatcher::ShouldWait(1, 1, 8, t0, t0, delay));
  EXPECT_FALSE(DynamicBatcher::ShouldWait(1, 0, 8, t0, t0, delay));
  // A full batch never waits.
  EXPECT_FALSE(DynamicBatcher::ShouldWait(8, 16, 8, t0, t0, delay));
}

TEST(DynamicBatcher, GroupsQueuedFramesUpToTheMaxBatchSize) {
  FakeClock clock;
  Recorder recorder;
  absl::Notification release;
  DynamicBatcher batcher(Options(&clock), recorder.Function());
  OccupyModel(batcher, recorder, &release);
  for (int i = 1; i <= 11; ++i) EnqueueOk(batcher, recorder.Task(i));
  EXPECT_EQ(batcher.queue_size(), 11);
  release.Notify();
  // 8 go at once; the 3 left are fewer than the last batch (8), so they wait
  // for the delay: move the clock past it.
  while (recorder.sizes().size() < 2) absl::SleepFor(absl::Milliseconds(1));
  clock.Advance(absl::Microseconds(2000));
  batcher.Poke();
  recorder.WaitForDone(12);
  EXPECT_THAT(recorder.sizes(), ElementsAre(1, 8, 3));
  EXPECT_EQ(recorder.max_running(), 1);
}

TEST(DynamicBatcher, ASingleCallerIsNeverDelayed) {
  FakeClock clock;  // never advanced: any wait for the delay would hang the test
  Recorder recorder;
  DynamicBatcher batcher(Options(&clock), recorder.Function());
  for (int i = 0; i < 5; ++i) {
    EnqueueOk(batcher, recorder.Task(i));
    recorder.WaitForDone(i + 1);
  }
  EXPECT_THAT(recorder.sizes(), ElementsAre(1, 1, 1, 1, 1));
}

TEST(DynamicBatcher, PartialBatchWaitsForTheDelayThenRuns) {
  FakeClock clock;
  Recorder recorder;
  absl::Notification release;
  DynamicBatcher batcher(Options(&clock, 8), recorder.Function());
  // Make the last batch carry 4 frames.
  OccupyModel(batcher, recorder, &release);
  for (int i = 1; i <= 4; ++i) EnqueueOk(batcher, recorder.Task(i));
  release.Notify();
  recorder.WaitForDone(5);
  // Now 2 frames: fewer than 4, so they wait.
  EnqueueOk(batcher, recorder.Task(5));
  EnqueueOk(batcher, recorder.Task(6));
  clock.Advance(absl::Microseconds(1999));
  batcher.Poke();
  absl::SleepFor(absl::Milliseconds(20));
  EXPECT_THAT(recorder.sizes(), ElementsAre(1, 4));  // still waiting at delay - 1 us
  EXPECT_EQ(batcher.queue_size(), 2);
  clock.Advance(absl::Microseconds(1));
  batcher.Poke();
  recorder.WaitForDone(7);
  EXPECT_THAT(recorder.sizes(), ElementsAre(1, 4, 2));
}

TEST(DynamicBatcher, PartialBatchRunsEarlyWhenTheExpectedFramesArrive) {
  FakeClock clock;  // never advanced
  Recorder recorder;
  absl::Notification release;
  DynamicBatcher batcher(Options(&clock, 8), recorder.Function());
  OccupyModel(batcher, recorder, &release);
  for (int i = 1; i <= 3; ++i) EnqueueOk(batcher, recorder.Task(i));
  release.Notify();
  recorder.WaitForDone(4);
  for (int i = 4; i <= 6; ++i) EnqueueOk(batcher, recorder.Task(i));
  recorder.WaitForDone(7);
  EXPECT_THAT(recorder.sizes(), ElementsAre(1, 3, 3));
}

TEST(DynamicBatcher, FullQueueIsResourceExhaustedAndTheTaskStaysWithTheCaller) {
  FakeClock clock;
  Recorder recorder;
  absl::Notification release;
  DynamicBatcher batcher(Options(&clock, 8, /*max_queue=*/2), recorder.Function());
  OccupyModel(batcher, recorder, &release);
  EnqueueOk(batcher, recorder.Task(1));
  EnqueueOk(batcher, recorder.Task(2));
  auto task = recorder.Task(3);
  absl::Status status = batcher.Enqueue(&task);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(status.message(), HasSubstr("max_queue_size=2"));
  ASSERT_NE(task, nullptr);
  EXPECT_EQ(task->frame_rgb[0], 3);
  release.Notify();
  clock.Advance(absl::Seconds(1));
  batcher.Poke();
  recorder.WaitForDone(3);
}

TEST(DynamicBatcher, ExpiredFramesAreDroppedBeforeInference) {
  FakeClock clock;
  Recorder recorder;
  absl::Notification release;
  DynamicBatcher batcher(Options(&clock), recorder.Function());
  OccupyModel(batcher, recorder, &release);
  EnqueueOk(batcher, recorder.Task(1, clock.Now() + absl::Milliseconds(5)));
  EnqueueOk(batcher, recorder.Task(2));
  clock.Advance(absl::Milliseconds(10));  // frame 1's deadline passes in the queue
  release.Notify();
  recorder.WaitForDone(3);
  EXPECT_THAT(recorder.sizes(), ElementsAre(1, 1));  // frame 2 ran alone
  auto done = recorder.done();
  EXPECT_EQ(done[1], std::make_pair(1, absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ(done[2], std::make_pair(2, absl::StatusCode::kOk));
}

TEST(DynamicBatcher, CancelledFramesAreDroppedBeforeInference) {
  FakeClock clock;
  Recorder recorder;
  absl::Notification release;
  DynamicBatcher batcher(Options(&clock), recorder.Function());
  OccupyModel(batcher, recorder, &release);
  auto task = recorder.Task(1);
  task->is_cancelled = [] { return true; };
  EnqueueOk(batcher, std::move(task));
  release.Notify();
  recorder.WaitForDone(2);
  EXPECT_THAT(recorder.sizes(), ElementsAre(1));
  EXPECT_EQ(recorder.done()[1], std::make_pair(1, absl::StatusCode::kCancelled));
}

TEST(DynamicBatcher, BatchErrorReachesEveryTaskOfTheBatch) {
  FakeClock clock;
  Recorder recorder;
  recorder.status_ = absl::InternalError("model exploded");
  absl::Notification release;
  DynamicBatcher batcher(Options(&clock), recorder.Function());
  OccupyModel(batcher, recorder, &release);
  EnqueueOk(batcher, recorder.Task(1));
  EnqueueOk(batcher, recorder.Task(2));
  release.Notify();
  recorder.WaitForDone(3);
  for (const auto& [id, code] : recorder.done()) EXPECT_EQ(code, absl::StatusCode::kInternal);
}

TEST(DynamicBatcher, ExclusiveJobsRunBetweenBatchesNeverDuring) {
  FakeClock clock;
  Recorder recorder;
  absl::Notification release;
  DynamicBatcher batcher(Options(&clock), recorder.Function());
  OccupyModel(batcher, recorder, &release);
  absl::Notification job_ran;
  int running_during_job = -1;
  ASSERT_TRUE(batcher
                  .RunExclusive([&] {
                    running_during_job = recorder.max_running() > 0 ? 0 : 1;
                    job_ran.Notify();
                  })
                  .ok());
  EXPECT_FALSE(job_ran.HasBeenNotified());  // the batch is still running
  release.Notify();
  job_ran.WaitForNotification();
  EXPECT_EQ(recorder.max_running(), 1);
  EXPECT_EQ(running_during_job, 0);
}

TEST(DynamicBatcher, DrainingRefusesNewWorkButFinishesQueuedWork) {
  FakeClock clock;
  Recorder recorder;
  absl::Notification release;
  DynamicBatcher batcher(Options(&clock), recorder.Function());
  OccupyModel(batcher, recorder, &release);
  EnqueueOk(batcher, recorder.Task(1));
  batcher.StartDraining();
  auto task = recorder.Task(2);
  EXPECT_EQ(batcher.Enqueue(&task).code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(task, nullptr);
  EXPECT_EQ(batcher.RunExclusive([] {}).code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(batcher.WaitUntilIdle(absl::Milliseconds(10)));
  release.Notify();
  EXPECT_TRUE(batcher.WaitUntilIdle(absl::Seconds(30)));
  EXPECT_THAT(recorder.done(), ElementsAre(std::make_pair(0, absl::StatusCode::kOk),
                                           std::make_pair(1, absl::StatusCode::kOk)));
}

TEST(DynamicBatcher, DestructorFinishesQueuedFramesWithUnavailable) {
  FakeClock clock;
  Recorder recorder;
  absl::Notification release;
  auto batcher = std::make_unique<DynamicBatcher>(Options(&clock), recorder.Function());
  OccupyModel(*batcher, recorder, &release);
  EnqueueOk(*batcher, recorder.Task(1));
  EnqueueOk(*batcher, recorder.Task(2));
  std::thread releaser([&] {
    absl::SleepFor(absl::Milliseconds(20));
    release.Notify();
  });
  batcher.reset();  // stops after the running batch; the queue is answered
  releaser.join();
  auto done = recorder.done();
  ASSERT_EQ(done.size(), 3u);
  EXPECT_EQ(done[0].second, absl::StatusCode::kOk);
  EXPECT_EQ(done[1].second, absl::StatusCode::kUnavailable);
  EXPECT_EQ(done[2].second, absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace fsrst
