#include "server/thread_priority.h"

#include <thread>

#include "gtest/gtest.h"

namespace fsrst {
namespace {

TEST(ThreadPriority, LowersOnlyTheCallingThread) {
  const int main_nice = CurrentThreadNice();
  int before = 0;
  int after = 0;
  int child_of_lowered = 0;
  absl::Status status;
  std::thread thread([&] {
    before = CurrentThreadNice();
    status = LowerCurrentThreadPriority(3);
    after = CurrentThreadNice();
    std::thread child([&] { child_of_lowered = CurrentThreadNice(); });
    child.join();
  });
  thread.join();
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(before, main_nice);
  EXPECT_EQ(after, before > 16 ? 19 : before + 3);
  EXPECT_EQ(child_of_lowered, after);  // threads it starts inherit the value
  EXPECT_EQ(CurrentThreadNice(), main_nice);
}

TEST(ThreadPriority, ZeroChangesNothing) {
  int before = 0;
  int after = 0;
  std::thread thread([&] {
    before = CurrentThreadNice();
    EXPECT_TRUE(LowerCurrentThreadPriority(0).ok());
    after = CurrentThreadNice();
  });
  thread.join();
  EXPECT_EQ(before, after);
}

TEST(ThreadPriority, OutOfRangeIncrementIsInvalidArgumentAndNamesTheFlag) {
  for (int increment : {-1, 20}) {
    const absl::Status status = LowerCurrentThreadPriority(increment);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(status.message().find("--model_nice"), std::string::npos) << status;
    EXPECT_NE(status.message().find("0..19"), std::string::npos) << status;
  }
}

}  // namespace
}  // namespace fsrst
