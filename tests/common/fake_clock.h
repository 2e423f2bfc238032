#ifndef FSRST_TESTS_COMMON_FAKE_CLOCK_H_
#define FSRST_TESTS_COMMON_FAKE_CLOCK_H_

#include <functional>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace fsrst::testing {

// A clock that moves only when a test says so; injected through the `now`
// option of the batcher and the cache. Thread-safe.
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
  // For an options struct's `now`; the clock must outlive its users.
  std::function<absl::Time()> AsFunction() {
    return [this] { return Now(); };
  }

 private:
  absl::Mutex mu_;
  absl::Time now_ ABSL_GUARDED_BY(mu_) = absl::FromUnixSeconds(1000);
};

}  // namespace fsrst::testing

#endif  // FSRST_TESTS_COMMON_FAKE_CLOCK_H_
