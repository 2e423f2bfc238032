#ifndef FSRST_SERVER_THREAD_PRIORITY_H_
#define FSRST_SERVER_THREAD_PRIORITY_H_

#include "absl/status/status.h"

namespace fsrst {

// Raises the nice value of the calling thread (Linux threads have their own)
// by `increment` (0..19), so the process's other threads win the CPU when they
// wake: under saturation the gRPC threads answer, refuse and accept frames
// without waiting for the model's threads to be descheduled. Threads this
// thread creates later (e.g. OpenMP workers) inherit the value. Lowering a
// priority needs no privilege. INVALID_ARGUMENT outside 0..19; INTERNAL with
// errno's text if the kernel refuses.
absl::Status LowerCurrentThreadPriority(int increment);

// The calling thread's nice value.
int CurrentThreadNice();

}  // namespace fsrst

#endif  // FSRST_SERVER_THREAD_PRIORITY_H_
