#include "server/thread_priority.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace fsrst {
namespace {

id_t CurrentThreadId() { return static_cast<id_t>(syscall(SYS_gettid)); }

}  // namespace

int CurrentThreadNice() {
  errno = 0;
  return getpriority(PRIO_PROCESS, CurrentThreadId());
}

absl::Status LowerCurrentThreadPriority(int increment) {
  if (increment < 0 || increment > 19) {
    return absl::InvalidArgumentError(
        absl::StrCat("--model_nice=", increment, ": expected 0..19"));
  }
  if (increment == 0) return absl::OkStatus();
  const int nice = CurrentThreadNice() + increment;
  if (setpriority(PRIO_PROCESS, CurrentThreadId(), nice > 19 ? 19 : nice) != 0) {
    return absl::InternalError(
        absl::StrCat("setpriority(nice ", nice, ") failed: ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace fsrst
