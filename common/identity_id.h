#ifndef FSRST_COMMON_IDENTITY_ID_H_
#define FSRST_COMMON_IDENTITY_ID_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace fsrst {

// The identity id rule, shared by the server (which enforces it) and the C++
// client (which checks before sending, so a caller gets the server's message
// instead of a gRPC metadata error). A pure function: thread-safe, and it never
// crashes on any input (it is fuzzed through the server's request validation).

inline constexpr int kMaxIdentityIdLength = 128;

// 1..128 bytes of [A-Za-z0-9._:@-]. Otherwise INVALID_ARGUMENT naming `field`
// and the first other character: its position counting from 1, and the
// character quoted ('/'), with its code point ('é', U+00E9), as a code point
// when it is a control character (U+0009), or as a byte when it starts no
// UTF-8 character (byte 0xFF).
absl::Status ValidateIdentityId(absl::string_view id, absl::string_view field);

}  // namespace fsrst

#endif  // FSRST_COMMON_IDENTITY_ID_H_
