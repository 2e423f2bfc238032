#ifndef FSRST_SERVER_STATUS_UTIL_H_
#define FSRST_SERVER_STATUS_UTIL_H_

#include <grpcpp/support/status.h>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include <grpcpp/support/time.h>

namespace fsrst {

// The one place where absl::Status becomes grpc::Status: same canonical code,
// same message. Thread-safe (pure function).
grpc::Status ToGrpcStatus(const absl::Status& status);

// A gRPC deadline as absl::Time (InfiniteFuture for none).
absl::Time ToAbslTime(std::chrono::system_clock::time_point deadline);

}  // namespace fsrst

#endif  // FSRST_SERVER_STATUS_UTIL_H_
