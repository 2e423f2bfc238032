#ifndef FSRST_COMMON_STATUS_MACROS_H_
#define FSRST_COMMON_STATUS_MACROS_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Debian's Abseil 20220623 has no RETURN_IF_ERROR / ASSIGN_OR_RETURN; these
// are the project's own, with the usual meaning.

#define FSRST_RETURN_IF_ERROR(expr)                \
  do {                                             \
    const ::absl::Status fsrst_status_ = (expr);   \
    if (!fsrst_status_.ok()) return fsrst_status_; \
  } while (0)

#define FSRST_STATUS_CONCAT_INNER_(a, b) a##b
#define FSRST_STATUS_CONCAT_(a, b) FSRST_STATUS_CONCAT_INNER_(a, b)

// FSRST_ASSIGN_OR_RETURN(auto x, Foo());  declares x, or returns Foo()'s error.
#define FSRST_ASSIGN_OR_RETURN(lhs, rexpr) \
  FSRST_ASSIGN_OR_RETURN_IMPL_(FSRST_STATUS_CONCAT_(fsrst_statusor_, __LINE__), lhs, rexpr)

#define FSRST_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, rexpr) \
  auto statusor = (rexpr);                                 \
  if (!statusor.ok()) return statusor.status();            \
  lhs = std::move(statusor).value()

#endif  // FSRST_COMMON_STATUS_MACROS_H_
