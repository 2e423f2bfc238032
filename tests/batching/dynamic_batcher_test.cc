#include "batching/dynamic_batcher.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "tests/common/fake_clock.h"
#include "gtest/gtest.h"

namespace fsrst {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;

// Only bounds how long a broken batcher can hang a test; never decides a result.
constexpr absl::Duration kLiveness = absl::Seconds(30);

using ::fsrst::testing::FakeClock;

// How one task was finished, as its done callback saw it.
struct Finished {
  int id;
  absl::Status status;
  absl::Time enqueue_time;
  absl::Time batch_start_time;
  int batch_size;
  std::thread::id thread;
  bool during_batch;  // a batch function was running when done was called
};

// Plays the model and the callers: records batches, jobs and finished tasks.
// The next batch can be held "busy" until a notification.
class Recorder {
 public:
  DynamicBatcher::BatchFunction Function() {
    return [this](const std::vector<FrameTask*>& batch) {
      absl::Notification* hold;
      absl::Status status;
      {
        absl::MutexLock lock(&mu_);
        sizes_.push_back(static_cast<int>(batch.size()));
        std::string event = "batch";
        for (FrameTask* t : batch) {
          ids_.push_back(t->frame_rgb[0]);
          absl::StrAppend(&event, " ", t->frame_rgb[0]);
        }
        events_.push_back(event);
        batch_thread_ = std::this_thread::get_id();
        ++running_;
        max_running_ = std::max(max_running_, running_);
        hold = std::exchange(hold_, nullptr);
        status = status_;
      }
      // Bounded: a test that fails an ASSERT before its release must fail, not hang
      // in the batcher's destructor behind a batch nobody releases.
      if (hold != nullptr) {
        EXPECT_TRUE(hold->WaitForNotificationWithTimeout(kLiveness))
            << "a held batch was never released";
      }
      absl::MutexLock lock(&mu_);
      events_.push_back("end");
      --running_;
      return status;
    };
  }

  std::unique_ptr<FrameTask> Task(int id, absl::Time deadline = absl::InfiniteFuture()) {
    auto task = std::make_unique<FrameTask>();
    task->frame_rgb = {static_cast<uint8_t>(id)};
    task->deadline = deadline;
    task->done = [this, id](absl::Status status, FrameTask& t) {
      absl::MutexLock lock(&mu_);
      finished_.push_back({id, std::move(status), t.enqueue_time, t.batch_start_time, t.batch_size,
                           std::this_thread::get_id(), running_ > 0});
    };
    return task;
  }

  std::function<void()> Job(const std::string& name) {
    return [this, name] {
      absl::MutexLock lock(&mu_);
      events_.push_back(absl::StrCat(name, running_ > 0 ? " during a batch" : ""));
    };
  }

  // The next batch blocks until `release` is notified.
  void HoldNextBatch(absl::Notification* release) {
    absl::MutexLock lock(&mu_);
    hold_ = release;
  }
  void SetStatus(absl::Status status) {
    absl::MutexLock lock(&mu_);
    status_ = std::move(status);
  }

  bool WaitForBatches(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return sizes_.size() >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), kLiveness);
  }
  bool WaitForDone(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return finished_.size() >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), kLiveness);
  }

  std::vector<int> sizes() {
    absl::MutexLock lock(&mu_);
    return sizes_;
  }
  std::vector<int> ids() {
    absl::MutexLock lock(&mu_);
    return ids_;
  }
  std::vector<std::string> events() {
    absl::MutexLock lock(&mu_);
    return events_;
  }
  std::vector<Finished> finished() {
    absl::MutexLock lock(&mu_);
    return finished_;
  }
  std::vector<std::pair<int, absl::StatusCode>> codes() {
    absl::MutexLock lock(&mu_);
    std::vector<std::pair<int, absl::StatusCode>> codes;
    for (const Finished& f : finished_) codes.emplace_back(f.id, f.status.code());
    return codes;
  }
  std::thread::id batch_thread() {
    absl::MutexLock lock(&mu_);
    return batch_thread_;
  }
  // Most batch functions that were running at once.
  int max_running() {
    absl::MutexLock lock(&mu_);
    return max_running_;
  }

 private:
  absl::Mutex mu_;
  absl::Notification* hold_ ABSL_GUARDED_BY(mu_) = nullptr;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  std::vector<int> sizes_ ABSL_GUARDED_BY(mu_);
  std::vector<int> ids_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> events_ ABSL_GUARDED_BY(mu_);
  std::vector<Finished> finished_ ABSL_GUARDED_BY(mu_);
  std::thread::id batch_thread_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  int max_running_ ABSL_GUARDED_BY(mu_) = 0;
};

constexpr int64_t kDelayUs = 2000;

DynamicBatcherOptions Options(FakeClock* clock, int max_batch = 8, int max_queue = 100,
                              int64_t max_queue_delay_us = kDelayUs) {
  DynamicBatcherOptions options;
  options.max_batch_size = max_batch;
  options.max_queue_delay_us = max_queue_delay_us;
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
  recorder.HoldNextBatch(release);
  EnqueueOk(batcher, recorder.Task(0));
  ASSERT_TRUE(recorder.WaitForBatches(1));
}

// For tests of something other than the waiting rule: a partial batch never
// waits, so frames queued behind a held batch run as soon as it is released.
DynamicBatcherOptions NoWaitOptions(FakeClock* clock, int max_batch = 8, int max_queue = 100) {
  return Options(clock, max_batch, max_queue, /*max_queue_delay_us=*/0);
}

// Runs frame 0 alone, then frames 1..n as one batch, so the last batch
// carried n frames and nothing was queued when it finished: n frames are
// expected next. (Frames 1..n wait the delay for frame 0's caller, who does
// not send again.)
void RunBatchesOf1AndN(DynamicBatcher& batcher, Recorder& recorder, FakeClock& clock, int n) {
  absl::Notification release;
  OccupyModel(batcher, recorder, &release);
  for (int i = 1; i <= n; ++i) EnqueueOk(batcher, recorder.Task(i));
  release.Notify();
  clock.Advance(absl::Microseconds(kDelayUs));
  batcher.Poke();
  ASSERT_TRUE(recorder.WaitForDone(n + 1));
  ASSERT_THAT(recorder.sizes(), ElementsAre(1, n));
}

TEST(DynamicBatcherRule, ShouldWaitOnlyWhileMoreFramesAreExpected) {
  const absl::Time t0 = absl::FromUnixSeconds(1000);
  const absl::Duration delay = absl::Microseconds(2000);
  // Fewer queued than expected, within the delay: wait.
  EXPECT_TRUE(DynamicBatcher::ShouldWait(1, 4, 8, t0, t0, delay));
  EXPECT_TRUE(DynamicBatcher::ShouldWait(3, 4, 8, t0, t0 + delay - absl::Microseconds(1), delay));
  // The delay has passed since the oldest frame.
  EXPECT_FALSE(DynamicBatcher::ShouldWait(3, 4, 8, t0, t0 + delay, delay));
  // As many as expected: nothing more to wait for.
  EXPECT_FALSE(DynamicBatcher::ShouldWait(4, 4, 8, t0, t0, delay));
  // One caller (1 expected) or an idle start (0): never waits.
  EXPECT_FALSE(DynamicBatcher::ShouldWait(1, 1, 8, t0, t0, delay));
  EXPECT_FALSE(DynamicBatcher::ShouldWait(1, 0, 8, t0, t0, delay));
  // A full batch never waits.
  EXPECT_FALSE(DynamicBatcher::ShouldWait(8, 16, 8, t0, t0, delay));
}

TEST(DynamicBatcher, GroupsQueuedFramesUpToTheMaxBatchSize) {
  FakeClock clock;
  Recorder recorder;
  absl::Notification release;
  DynamicBatcher batcher(Options(&clock, /*max_batch=*/8), recorder.Function());
  OccupyModel(batcher, recorder, &release);
  for (int i = 1; i <= 11; ++i) EnqueueOk(batcher, recorder.Task(i));
  EXPECT_EQ(batcher.queue_size(), 11);
  release.Notify();
  // 8 go at once; the 3 left are fewer than expected (8 + 3, capped at 8), so
  // they wait for the delay.
  ASSERT_TRUE(recorder.WaitForBatches(2));
  batcher.Poke();
  EXPECT_THAT(recorder.sizes(), ElementsAre(1, 8));
  EXPECT_EQ(batcher.queue_size(), 3);
  clock.Advance(absl::Microseconds(2000));
  batcher.Poke();
  ASSERT_TRUE(recorder.WaitForDone(12));
  EXPECT_THAT(recorder.sizes(), ElementsAre(1, 8, 3));
  EXPECT_THAT(recorder.ids(), ElementsAre(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11));
}

TEST(DynamicBatcher, ASingleCallerIsNeverDelayed) {
  FakeClock clock;  // never advanced: a frame that waited for the delay would stay queued
  Recorder recorder;
  DynamicBatcher batcher(Options(&clock), recorder.Function());
  for (int i = 0; i < 5; ++i) {
    EnqueueOk(batcher, recorder.Task(i));
    batcher.Poke();
    EXPECT_EQ(batcher.queue_size(), 0) << "frame " << i << " was held back";
    ASSERT_TRUE(recorder.WaitForDone(i + 1));
  }
  EXPECT_THAT(recorder.sizes(), ElementsAre(1, 1, 1, 1, 1));
}

TEST(DynamicBatcher, PartialBatchWaitsForTheDelayFromItsOldestFrame) {
  FakeClock clock;
  Recorder recorder;
  DynamicBatcher batcher(Options(&clock, 8), recorder.Function());
  RunBatchesOf1AndN(batcher, recorder, clock, 4);
  // 2 frames: fewer than the 4 expected, so they wait.
  const absl::Time oldest = clock.Now();
  EnqueueOk(batcher, recorder.Task(5));
  clock.Advance(absl::Microseconds(500));
  EnqueueOk(batcher, recorder.Task(6));
  clock.Advance(absl::Microseconds(1499));  // delay - 1us after the oldest
  batcher.Poke();
  EXPECT_THAT(recorder.sizes(), ElementsAre(1, 4));
  EXPECT_EQ(batcher.queue_size(), 2);
  clock.Advance(absl::Microseconds(1));  // the delay, to the microsecond
  batcher.Poke();
  EXPECT_EQ(batcher.queue_size(), 0);
  ASSERT_TRUE(recorder.WaitForDone(7));
  EXPECT_THAT(recorder.sizes(), ElementsAre(1, 4, 2));
  const std::vector<Finished> finished = recorder.finished();
  EXPECT_EQ(finished[5].batch_start_time, oldest + absl::Microseconds(2000));
}

TEST(DynamicBatcher, PartialBatchRunsEarlyWhenTheQueueReachesTheLastBatchSize) {
  FakeClock clock;  // never advanced: only the third frame can start the batch
  Recorder recorder;
  DynamicBatcher batcher(Options(&clock, 8), recorder.Function());
  RunBatchesOf1AndN(batcher, recorder, clock, 3);
  EnqueueOk(batcher, recorder.Task(4));
  EnqueueOk(batcher, recorder.Task(5));
  batcher.Poke();
  EXPECT_EQ(batcher.queue_size(), 2);
  EnqueueOk(batcher, recorder.Task(6));
  ASSERT_TRUE(recorder.WaitForDone(7));
  EXPECT_THAT(recorder.sizes(), ElementsAre(1, 3, 3));
}

// 8 closed-loop callers split 4 + 4: while one half's batch runs, the other
// half sends again. The frames queued meanwhile must wait for the callers just
// answered, so the split heals into one batch of 8 instead of alternating.
TEST(DynamicBatcher, ClosedLoopCallersSplitInTwoAreRegroupedIntoOneBatch) {
  FakeClock clock;  // not advanced after the set-up: only arriving frames start batches
  Recorder recorder;
  DynamicBatcher batcher(Options(&clock, 8), recorder.Function());
  RunBatchesOf1AndN(batcher, recorder, clock, 4);  // 4 expected from now on
  absl::Notification release;
  recorder.HoldNextBatch(&release);
  for (int i = 5; i <= 8; ++i) EnqueueOk(batcher, recorder.Task(i));  // callers A..D
  ASSERT_TRUE(recorder.WaitForBatches(3));
  for (int i = 9; i <= 12; ++i) EnqueueOk(batcher, recorder.Task(i));  // E..H, during A..D's batch
  release.Notify();
  batcher.Poke();
  EXPECT_THAT(recorder.sizes(), ElementsAre(1, 4, 4));
  EXPECT_EQ(batcher.queue_size(), 4);  // E..H wait for A..D, who were just answered
  for (int i = 13; i <= 16; ++i) EnqueueOk(batcher, recorder.Task(i));  // A..D again
  ASSERT_TRUE(recorder.WaitForDone(17));
  EXPECT_THAT(recorder.sizes(), ElementsAre(1, 4, 4, 8));
}

TEST(DynamicBatcher, FullQueueIsResourceExhaustedAndTheTaskStaysWithTheCaller) {
  FakeClock clock;
  Recorder recorder;
  absl::Notification release;
  DynamicBatcher batcher(NoWaitOptions(&clock, 8, /*max_queue=*/2), recorder.Function());
  OccupyModel(batcher, recorder, &release);
  EnqueueOk(batcher, recorder.Task(1));
  EnqueueOk(batcher, recorder.Task(2));
  auto task = recorder.Task(3);
  const absl::Status status = batcher.Enqueue(&task);
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(status.message(), HasSubstr("max_queue_size=2"));
  ASSERT_NE(task, nullptr);
  EXPECT_EQ(task->frame_rgb[0], 3);
  EXPECT_EQ(task->enqueue_time, absl::Time());  // untouched
  release.Notify();
  ASSERT_TRUE(batcher.WaitUntilIdle(kLiveness));
  EXPECT_THAT(recorder.sizes(), ElementsAre(1, 2));
  EXPECT_THAT(recorder.codes(), ElementsAre(Pair(0, absl::StatusCode::kOk),
                                            Pair(1, absl::StatusCode::kOk),
                                            Pair(2, absl::StatusCode::kOk)));
}

TEST(DynamicBatcher, RejectsATaskWithoutDoneAndLeavesItWithTheCaller) {
  FakeClock clock;
  Recorder recorder;
  DynamicBatcher batcher(Options(&clock), recorder.Function());
  auto task = recorder.Task(1);
  task->done = nullptr;
  EXPECT_EQ(batcher.Enqueue(&task).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(task, nullptr);
  std::unique_ptr<FrameTask> none;
  EXPECT_EQ(batcher.Enqueue(&none).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(batcher.queue_size(), 0);
}

TEST(DynamicBatcher, ExpiredFramesAreDroppedBeforeInference) {
  FakeClock clock;
  Recorder recorder;
  absl::Notification release;
  DynamicBatcher batcher(Options(&clock), recorder.Function());
  OccupyModel(batcher, recorder, &release);
  const absl::Time t0 = clock.Now();
  EnqueueOk(batcher, recorder.Task(1, t0 + absl::Milliseconds(5)));
  EnqueueOk(batcher, recorder.Task(2, t0 + absl::Milliseconds(10)));  // exactly at batch start
  EnqueueOk(batcher, recorder.Task(3));
  clock.Advance(absl::Milliseconds(10));  // frame 1's deadline passes in the queue
  release.Notify();
  ASSERT_TRUE(recorder.WaitForDone(4));
  EXPECT_THAT(recorder.sizes(), ElementsAre(1, 2));
  EXPECT_THAT(recorder.ids(), ElementsAre(0, 2, 3));  // the model never saw frame 1
  EXPECT_THAT(recorder.codes(), ElementsAre(Pair(0, absl::StatusCode::kOk),
                                            Pair(1, absl::StatusCode::kDeadlineExceeded),
                                            Pair(2, absl::StatusCode::kOk),
                                            Pair(3, absl::StatusCode::kOk)));
}

TEST(DynamicBatcher, CancelledFramesAreDroppedBeforeInference) {
  FakeClock clock;
  Recorder recorder;
  absl::Notification release;
  DynamicBatcher batcher(NoWaitOptions(&clock), recorder.Function());
  OccupyModel(batcher, recorder, &release);
  std::atomic<bool> cancelled{false};
  auto task = recorder.Task(1);
  task->is_cancelled = [&cancelled] { return cancelled.load(); };
  EnqueueOk(batcher, std::move(task));
  EnqueueOk(batcher, recorder.Task(2));
  cancelled = true;  // after Enqueue: polled when the batch starts
  release.Notify();
  ASSERT_TRUE(recorder.WaitForDone(3));
  EXPECT_THAT(recorder.sizes(), ElementsAre(1, 1));
  EXPECT_THAT(recorder.ids(), ElementsAre(0, 2));
  EXPECT_THAT(recorder.codes(), ElementsAre(Pair(0, absl::StatusCode::kOk),
                                            Pair(1, absl::StatusCode::kCancelled),
                                            Pair(2, absl::StatusCode::kOk)));
}

TEST(DynamicBatcher, DroppedFramesLeaveRoomForQueuedOnes) {
  FakeClock clock;
  Recorder recorder;
  absl::Notification release;
  DynamicBatcher batcher(Options(&clock, /*max_batch=*/2), recorder.Function());
  OccupyModel(batcher, recorder, &release);
  auto task = recorder.Task(1);
  task->is_cancelled = [] { return true; };
  EnqueueOk(batcher, std::move(task));
  EnqueueOk(batcher, recorder.Task(2));
  EnqueueOk(batcher, recorder.Task(3));
  release.Notify();
  ASSERT_TRUE(recorder.WaitForDone(4));
  EXPECT_THAT(recorder.sizes(), ElementsAre(1, 2));
  EXPECT_THAT(recorder.ids(), ElementsAre(0, 2, 3));
}

TEST(DynamicBatcher, BatchErrorReachesEveryTaskOfTheBatch) {
  FakeClock clock;
  Recorder recorder;
  absl::Notification release;
  DynamicBatcher batcher(NoWaitOptions(&clock), recorder.Function());
  OccupyModel(batcher, recorder, &release);
  recorder.SetStatus(absl::InternalError("model exploded"));  // for the next batch
  EnqueueOk(batcher, recorder.Task(1));
  EnqueueOk(batcher, recorder.Task(2));
  release.Notify();
  ASSERT_TRUE(recorder.WaitForDone(3));
  EXPECT_THAT(recorder.sizes(), ElementsAre(1, 2));
  EXPECT_THAT(recorder.codes(), ElementsAre(Pair(0, absl::StatusCode::kOk),
                                            Pair(1, absl::StatusCode::kInternal),
                                            Pair(2, absl::StatusCode::kInternal)));
  for (const Finished& f : recorder.finished()) {
    if (f.id != 0) {
      EXPECT_EQ(f.status.message(), "model exploded");
    }
  }
}

TEST(DynamicBatcher, StampsEnqueueTimeBatchStartAndBatchSize) {
  FakeClock clock;
  Recorder recorder;
  absl::Notification release;
  DynamicBatcher batcher(Options(&clock), recorder.Function());
  const absl::Time t0 = clock.Now();
  OccupyModel(batcher, recorder, &release);
  clock.Advance(absl::Milliseconds(1));
  EnqueueOk(batcher, recorder.Task(1));
  clock.Advance(absl::Milliseconds(1));
  EnqueueOk(batcher, recorder.Task(2));
  clock.Advance(absl::Milliseconds(3));
  release.Notify();
  ASSERT_TRUE(recorder.WaitForDone(3));
  const std::vector<Finished> f = recorder.finished();
  EXPECT_EQ(f[0].enqueue_time, t0);
  EXPECT_EQ(f[0].batch_start_time, t0);
  EXPECT_EQ(f[0].batch_size, 1);
  EXPECT_EQ(f[1].enqueue_time, t0 + absl::Milliseconds(1));
  EXPECT_EQ(f[2].enqueue_time, t0 + absl::Milliseconds(2));
  EXPECT_EQ(f[1].batch_start_time, t0 + absl::Milliseconds(5));
  EXPECT_EQ(f[2].batch_start_time, t0 + absl::Milliseconds(5));
  EXPECT_EQ(f[1].batch_size, 2);
  EXPECT_EQ(f[2].batch_size, 2);
}

TEST(DynamicBatcher, DoneRunsOnTheBatcherThreadAfterTheBatchFunctionReturns) {
  FakeClock clock;
  Recorder recorder;
  absl::Notification release;
  DynamicBatcher batcher(NoWaitOptions(&clock), recorder.Function());
  OccupyModel(batcher, recorder, &release);
  EnqueueOk(batcher, recorder.Task(1, clock.Now() - absl::Milliseconds(1)));  // dropped
  EnqueueOk(batcher, recorder.Task(2));
  EnqueueOk(batcher, recorder.Task(3));
  release.Notify();
  ASSERT_TRUE(recorder.WaitForDone(4));
  const std::thread::id batcher_thread = recorder.batch_thread();
  EXPECT_NE(batcher_thread, std::this_thread::get_id());
  for (const Finished& f : recorder.finished()) {
    EXPECT_EQ(f.thread, batcher_thread) << "task " << f.id;
    EXPECT_FALSE(f.during_batch) << "task " << f.id;
  }
}

TEST(DynamicBatcher, ExclusiveJobsRunBetweenBatchesNeverDuring) {
  FakeClock clock;
  Recorder recorder;
  absl::Notification release;
  DynamicBatcher batcher(NoWaitOptions(&clock), recorder.Function());
  OccupyModel(batcher, recorder, &release);
  EnqueueOk(batcher, recorder.Task(1));
  EnqueueOk(batcher, recorder.Task(2));
  ASSERT_TRUE(batcher.RunExclusive(recorder.Job("job A")).ok());
  ASSERT_TRUE(batcher.RunExclusive(recorder.Job("job B")).ok());
  release.Notify();
  ASSERT_TRUE(batcher.WaitUntilIdle(kLiveness));
  // Jobs wait for the running batch, then take turns with the queued frames.
  EXPECT_THAT(recorder.events(),
              ElementsAre("batch 0", "end", "job A", "batch 1 2", "end", "job B"));
}

// Regression (issue 19, defect 1): jobs used to run ahead of every frame, so
// a flood of registrations held every frame back until the flood was done
// (an Enhance waited 60 s behind 4,000 registrations). Before the fix this
// test saw all four jobs before batch 1.
TEST(DynamicBatcher, AFloodOfJobsDelaysAFrameByOneJobOnly) {
  FakeClock clock;
  Recorder recorder;
  absl::Notification release;
  DynamicBatcher batcher(NoWaitOptions(&clock, /*max_batch=*/1), recorder.Function());
  OccupyModel(batcher, recorder, &release);
  for (const char* name : {"job A", "job B", "job C", "job D"}) {
    ASSERT_TRUE(batcher.RunExclusive(recorder.Job(name)).ok());
  }
  EnqueueOk(batcher, recorder.Task(1));
  EnqueueOk(batcher, recorder.Task(2));
  release.Notify();
  ASSERT_TRUE(batcher.WaitUntilIdle(kLiveness));
  EXPECT_THAT(recorder.events(), ElementsAre("batch 0", "end", "job A", "batch 1", "end", "job B",
                                             "batch 2", "end", "job C", "job D"));
}

// A job that records how it was run or skipped.
std::unique_ptr<JobTask> RecordingJob(std::vector<absl::StatusCode>* codes, absl::Mutex* mu,
                                      absl::Time deadline = absl::InfiniteFuture()) {
  auto job = std::make_unique<JobTask>();
  job->deadline = deadline;
  job->run = [codes, mu](absl::Status status) {
    absl::MutexLock lock(mu);
    codes->push_back(status.code());
  };
  return job;
}

TEST(DynamicBatcher, JobsBeyondTheBoundAreRefusedAndStayTheCallers) {
  FakeClock clock;
  Recorder recorder;
  absl::Notification release;
  DynamicBatcherOptions options = NoWaitOptions(&clock);
  options.max_queued_jobs = 2;
  DynamicBatcher batcher(options, recorder.Function());
  OccupyModel(batcher, recorder, &release);
  absl::Mutex mu;
  std::vector<absl::StatusCode> codes;
  for (int i = 0; i < 2; ++i) {
    std::unique_ptr<JobTask> job = RecordingJob(&codes, &mu);
    ASSERT_TRUE(batcher.EnqueueJob(&job).ok());
    EXPECT_EQ(job, nullptr);
  }
  EXPECT_EQ(batcher.job_queue_size(), 2);
  std::unique_ptr<JobTask> third = RecordingJob(&codes, &mu);
  const absl::Status refused = batcher.EnqueueJob(&third);
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(refused.message(), HasSubstr("2 jobs waiting"));
  EXPECT_NE(third, nullptr);
  release.Notify();
  ASSERT_TRUE(batcher.WaitUntilIdle(kLiveness));
  absl::MutexLock lock(&mu);
  EXPECT_THAT(codes, ElementsAre(absl::StatusCode::kOk, absl::StatusCode::kOk));
}

TEST(DynamicBatcher, AJobWhoseDeadlinePassedOrWhoseCallerLeftIsSkipped) {
  FakeClock clock;
  Recorder recorder;
  absl::Notification release;
  DynamicBatcher batcher(NoWaitOptions(&clock), recorder.Function());
  OccupyModel(batcher, recorder, &release);
  absl::Mutex mu;
  std::vector<absl::StatusCode> codes;
  std::unique_ptr<JobTask> late = RecordingJob(&codes, &mu, clock.Now() + absl::Milliseconds(1));
  ASSERT_TRUE(batcher.EnqueueJob(&late).ok());
  std::unique_ptr<JobTask> cancelled = RecordingJob(&codes, &mu);
  cancelled->is_cancelled = [] { return true; };
  ASSERT_TRUE(batcher.EnqueueJob(&cancelled).ok());
  std::unique_ptr<JobTask> alive = RecordingJob(&codes, &mu, clock.Now() + absl::Seconds(10));
  alive->is_cancelled = [] { return false; };
  ASSERT_TRUE(batcher.EnqueueJob(&alive).ok());
  clock.Advance(absl::Milliseconds(2));
  release.Notify();
  ASSERT_TRUE(batcher.WaitUntilIdle(kLiveness));
  absl::MutexLock lock(&mu);
  EXPECT_THAT(codes, ElementsAre(absl::StatusCode::kDeadlineExceeded,
                                 absl::StatusCode::kCancelled, absl::StatusCode::kOk));
}

// Regression (issue 19, defect 3): the destructor used to run every queued
// job, so a drain that timed out still encoded 1,500 registrations (39 s).
TEST(DynamicBatcher, StopAnswersQueuedWorkWithUnavailableWithoutRunningIt) {
  FakeClock clock;
  Recorder recorder;
  absl::Notification release;
  DynamicBatcher batcher(NoWaitOptions(&clock), recorder.Function());
  OccupyModel(batcher, recorder, &release);
  EnqueueOk(batcher, recorder.Task(1));
  absl::Mutex mu;
  std::vector<absl::StatusCode> codes;
  std::unique_ptr<JobTask> job = RecordingJob(&codes, &mu);
  ASSERT_TRUE(batcher.EnqueueJob(&job).ok());
  ASSERT_TRUE(batcher.RunExclusive(recorder.Job("never")).ok());
  // Stop() waits for the running batch; it first refuses new work, which is
  // what is polled here (no-op probes, skipped unrun if accepted) before the
  // held batch is let go.
  std::thread stopper([&] { batcher.Stop(); });
  const absl::Time until = absl::Now() + kLiveness;
  while (batcher.RunExclusive([] {}).ok() && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  release.Notify();
  stopper.join();
  EXPECT_THAT(recorder.events(), ElementsAre("batch 0", "end"));
  EXPECT_THAT(recorder.codes(), ElementsAre(Pair(0, absl::StatusCode::kOk),
                                            Pair(1, absl::StatusCode::kUnavailable)));
  {
    absl::MutexLock lock(&mu);
    EXPECT_THAT(codes, ElementsAre(absl::StatusCode::kUnavailable));
  }
  std::unique_ptr<JobTask> after = RecordingJob(&codes, &mu);
  EXPECT_EQ(batcher.EnqueueJob(&after).code(), absl::StatusCode::kUnavailable);
}

TEST(DynamicBatcher, JobsGoAheadOfAWaitingPartialBatch) {
  FakeClock clock;
  Recorder recorder;
  DynamicBatcher batcher(Options(&clock, 8), recorder.Function());
  RunBatchesOf1AndN(batcher, recorder, clock, 4);
  EnqueueOk(batcher, recorder.Task(5));
  EnqueueOk(batcher, recorder.Task(6));
  batcher.Poke();
  ASSERT_EQ(batcher.queue_size(), 2);  // waiting for 2 more or the delay
  absl::Notification job_ran;
  int queued_during_job = -1;
  ASSERT_TRUE(batcher
                  .RunExclusive([&] {
                    queued_during_job = batcher.queue_size();
                    job_ran.Notify();
                  })
                  .ok());
  ASSERT_TRUE(job_ran.WaitForNotificationWithTimeout(kLiveness));
  EXPECT_EQ(queued_during_job, 2);
  EXPECT_THAT(recorder.sizes(), ElementsAre(1, 4));
  clock.Advance(absl::Microseconds(2000));
  batcher.Poke();
  ASSERT_TRUE(recorder.WaitForDone(7));
  EXPECT_THAT(recorder.sizes(), ElementsAre(1, 4, 2));
}

TEST(DynamicBatcher, DrainingRefusesNewWorkButFinishesQueuedWork) {
  FakeClock clock;
  Recorder recorder;
  absl::Notification release;
  DynamicBatcher batcher(Options(&clock), recorder.Function());
  OccupyModel(batcher, recorder, &release);
  EnqueueOk(batcher, recorder.Task(1));
  ASSERT_TRUE(batcher.RunExclusive(recorder.Job("job")).ok());
  batcher.StartDraining();
  auto task = recorder.Task(2);
  const absl::Status refused = batcher.Enqueue(&task);
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(task, nullptr);
  EXPECT_EQ(batcher.RunExclusive(recorder.Job("late job")).code(),
            absl::StatusCode::kUnavailable);
  release.Notify();
  ASSERT_TRUE(batcher.WaitUntilIdle(kLiveness));
  EXPECT_THAT(recorder.codes(), ElementsAre(Pair(0, absl::StatusCode::kOk),
                                            Pair(1, absl::StatusCode::kOk)));
  EXPECT_THAT(recorder.events(), ElementsAre("batch 0", "end", "job", "batch 1", "end"));
}

TEST(DynamicBatcher, DrainingRunsAWaitingPartialBatchAtOnce) {
  FakeClock clock;  // never advanced: only draining can start the partial batch
  Recorder recorder;
  DynamicBatcher batcher(Options(&clock, 8), recorder.Function());
  RunBatchesOf1AndN(batcher, recorder, clock, 4);
  EnqueueOk(batcher, recorder.Task(5));
  EnqueueOk(batcher, recorder.Task(6));
  batcher.Poke();
  ASSERT_EQ(batcher.queue_size(), 2);
  batcher.StartDraining();
  ASSERT_TRUE(batcher.WaitUntilIdle(kLiveness));
  EXPECT_THAT(recorder.sizes(), ElementsAre(1, 4, 2));
}

TEST(DynamicBatcher, WaitUntilIdleReportsWhetherEverythingFinished) {
  FakeClock clock;
  Recorder recorder;
  absl::Notification release;
  DynamicBatcher batcher(NoWaitOptions(&clock), recorder.Function());
  EXPECT_TRUE(batcher.WaitUntilIdle(absl::ZeroDuration()));
  OccupyModel(batcher, recorder, &release);
  EnqueueOk(batcher, recorder.Task(1));
  // The model is held, so this can only time out.
  EXPECT_FALSE(batcher.WaitUntilIdle(absl::Milliseconds(10)));
  release.Notify();
  ASSERT_TRUE(batcher.WaitUntilIdle(kLiveness));
  EXPECT_EQ(recorder.finished().size(), 2u);  // idle means every done was called
  EXPECT_EQ(batcher.queue_size(), 0);
}

TEST(DynamicBatcher, DestructorFinishesQueuedFramesWithUnavailable) {
  FakeClock clock;  // never advanced: frames 5 and 6 wait until the batcher goes
  Recorder recorder;
  auto batcher = std::make_unique<DynamicBatcher>(Options(&clock, 8), recorder.Function());
  RunBatchesOf1AndN(*batcher, recorder, clock, 4);
  EnqueueOk(*batcher, recorder.Task(5));
  EnqueueOk(*batcher, recorder.Task(6));
  batcher->Poke();
  ASSERT_EQ(batcher->queue_size(), 2);
  batcher.reset();
  EXPECT_THAT(recorder.sizes(), ElementsAre(1, 4));
  const std::vector<Finished> finished = recorder.finished();
  ASSERT_EQ(finished.size(), 7u);
  EXPECT_EQ(finished[5].id, 5);
  EXPECT_EQ(finished[5].status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(finished[6].id, 6);
  EXPECT_EQ(finished[6].status.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(finished[6].thread, recorder.batch_thread());  // answered on the batcher thread
}

// Two workers with the waiting rule on (max batch 8, the default delay).
DynamicBatcherOptions TwoWaitingWorkerOptions(FakeClock* clock) {
  DynamicBatcherOptions options = Options(clock, 8);
  options.num_workers = 2;
  return options;
}

// Holds worker A busy with frame 0 and worker B with frame 1.
void OccupyBothWorkers(DynamicBatcher& batcher, Recorder& recorder, absl::Notification* release_a,
                       absl::Notification* release_b) {
  OccupyModel(batcher, recorder, release_a);
  recorder.HoldNextBatch(release_b);
  EnqueueOk(batcher, recorder.Task(1));
  ASSERT_TRUE(recorder.WaitForBatches(2));
}

DynamicBatcherOptions TwoWorkerOptions(FakeClock* clock, int max_batch) {
  DynamicBatcherOptions options = NoWaitOptions(clock, max_batch);
  options.num_workers = 2;
  return options;
}

TEST(DynamicBatcherWorkers, TwoWorkersRunTwoBatchesSideBySide) {
  FakeClock clock;
  Recorder recorder;
  absl::Notification release_first;
  absl::Notification release_second;
  DynamicBatcher batcher(TwoWorkerOptions(&clock, 2), recorder.Function());
  // Only the second worker can start frame 1's batch: the first is held.
  OccupyBothWorkers(batcher, recorder, &release_first, &release_second);
  EXPECT_EQ(recorder.max_running(), 2);
  // Both workers are busy, so a third frame stays queued.
  EnqueueOk(batcher, recorder.Task(2));
  EXPECT_EQ(batcher.queue_size(), 1);
  release_second.Notify();
  ASSERT_TRUE(recorder.WaitForDone(2));  // frames 1 and 2 finish while frame 0 is held
  EXPECT_THAT(recorder.sizes(), ElementsAre(1, 1, 1));
  release_first.Notify();
  ASSERT_TRUE(batcher.WaitUntilIdle(kLiveness));
  EXPECT_THAT(recorder.codes(), ::testing::UnorderedElementsAre(Pair(0, absl::StatusCode::kOk),
                                                                Pair(1, absl::StatusCode::kOk),
                                                                Pair(2, absl::StatusCode::kOk)));
}

TEST(DynamicBatcherWorkers, AJobRunsOnAFreeWorkerWhileAnotherRunsABatch) {
  FakeClock clock;
  Recorder recorder;
  absl::Notification release;
  DynamicBatcher batcher(TwoWorkerOptions(&clock, 8), recorder.Function());
  OccupyModel(batcher, recorder, &release);
  absl::Notification job_ran;
  ASSERT_TRUE(batcher.RunExclusive([&] { job_ran.Notify(); }).ok());
  EXPECT_TRUE(job_ran.WaitForNotificationWithTimeout(kLiveness));
  release.Notify();
  ASSERT_TRUE(batcher.WaitUntilIdle(kLiveness));
}

// Each worker expects the frames its own last batch answered: one that ran a
// frame alone runs the next lone frame at once, even after another worker ran
// a batch of two (a shared count would make it wait for a second frame).
TEST(DynamicBatcherWorkers, EachWorkerExpectsTheFramesOfItsOwnLastBatch) {
  FakeClock clock;  // advanced by hand: a waiting batch runs only then
  Recorder recorder;
  DynamicBatcher batcher(TwoWaitingWorkerOptions(&clock), recorder.Function());
  absl::Notification release_a;
  absl::Notification release_b;
  absl::Notification release_a2;
  OccupyBothWorkers(batcher, recorder, &release_a, &release_b);
  EnqueueOk(batcher, recorder.Task(2));
  EnqueueOk(batcher, recorder.Task(3));
  release_a.Notify();  // A expects 1 + 2 queued = 3, so it waits with frames 2 and 3
  ASSERT_TRUE(recorder.WaitForDone(1));
  batcher.Poke();
  ASSERT_EQ(batcher.queue_size(), 2);
  recorder.HoldNextBatch(&release_a2);
  clock.Advance(absl::Microseconds(kDelayUs));
  batcher.Poke();
  ASSERT_TRUE(recorder.WaitForBatches(3));  // A runs frames 2 and 3
  release_b.Notify();                       // B answered 1 frame with none queued: expects 1
  ASSERT_TRUE(recorder.WaitForDone(2));
  release_a2.Notify();  // A answered 2 frames with none queued: expects 2
  ASSERT_TRUE(recorder.WaitForDone(4));
  EnqueueOk(batcher, recorder.Task(4));
  ASSERT_TRUE(recorder.WaitForDone(5));  // B ran it without the clock moving
  EXPECT_THAT(recorder.sizes(), ElementsAre(1, 1, 2, 1));
}

// Only bounds how long a test waits for the workers to go idle.
bool WaitForIdleWorkers(const DynamicBatcher& batcher, int n) {
  const absl::Time deadline = absl::Now() + kLiveness;
  while (batcher.idle_workers() < n) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

// Frames queued when two workers are free are shared between them.
TEST(DynamicBatcherWorkers, IdleWorkersShareTheQueue) {
  FakeClock clock;  // advanced by hand: the waiting workers decide only then
  Recorder recorder;
  DynamicBatcher batcher(TwoWaitingWorkerOptions(&clock), recorder.Function());
  absl::Notification release_a;
  absl::Notification release_b;
  OccupyBothWorkers(batcher, recorder, &release_a, &release_b);
  for (int id = 2; id <= 5; ++id) EnqueueOk(batcher, recorder.Task(id));
  // Each worker answered 1 frame with 4 queued, so each expects 5 and waits.
  release_a.Notify();
  release_b.Notify();
  ASSERT_TRUE(WaitForIdleWorkers(batcher, 2));
  ASSERT_EQ(batcher.queue_size(), 4);
  // The first to decide takes its half and is held, so the other, then alone,
  // takes the rest (were the first already free again, they would share it).
  absl::Notification release_first_half;
  recorder.HoldNextBatch(&release_first_half);
  clock.Advance(absl::Microseconds(kDelayUs));
  batcher.Poke();
  ASSERT_TRUE(recorder.WaitForBatches(4));
  EXPECT_THAT(recorder.sizes(), ElementsAre(1, 1, 2, 2));
  release_first_half.Notify();
  ASSERT_TRUE(batcher.WaitUntilIdle(kLiveness));
  EXPECT_EQ(recorder.finished().size(), 6u);
}

TEST(DynamicBatcherWorkers, WaitUntilIdleWaitsForEveryWorker) {
  FakeClock clock;
  Recorder recorder;
  absl::Notification release_first;
  absl::Notification release_second;
  DynamicBatcher batcher(TwoWorkerOptions(&clock, 1), recorder.Function());
  OccupyBothWorkers(batcher, recorder, &release_first, &release_second);
  release_second.Notify();
  ASSERT_TRUE(recorder.WaitForDone(1));
  EXPECT_FALSE(batcher.WaitUntilIdle(absl::Milliseconds(50)));  // frame 0 still runs
  release_first.Notify();
  EXPECT_TRUE(batcher.WaitUntilIdle(kLiveness));
  EXPECT_EQ(recorder.finished().size(), 2u);
}

}  // namespace
}  // namespace fsrst
