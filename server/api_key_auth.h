#ifndef FSRST_SERVER_API_KEY_AUTH_H_
#define FSRST_SERVER_API_KEY_AUTH_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fsrst {

// API keys and the tenant each belongs to, from --api_keys_file.
//
// File format: one `<key> <tenant>` per line, separated by spaces or tabs;
// blank lines and lines starting with `#` are ignored.
//   key:    16 to 256 printable ASCII characters, no spaces (e.g. 32 random hex digits)
//   tenant: 1 to 64 characters of [A-Za-z0-9._-]
// A key may appear once; a tenant may have several keys (rotation). A file
// with no key at all is an error, since it would lock every caller out.
// Errors name the file and the line number, never the key itself.
//
// Callers present a key in the metadata `authorization: Bearer <key>`.
//
// Immutable after construction: thread-safe.
class ApiKeys {
 public:
  // Parses the text of a key file; `source` names it in errors.
  static absl::StatusOr<ApiKeys> Parse(absl::string_view text, absl::string_view source);
  // Reads and parses the file at `path`.
  static absl::StatusOr<ApiKeys> FromFile(const std::string& path);

  // The tenant of `key`, or UNAUTHENTICATED. Compares against every key in
  // time that depends only on the lengths, never on where bytes differ.
  absl::StatusOr<std::string> TenantOf(absl::string_view key) const;

  // The tenant of the caller whose `authorization` metadata value is
  // `authorization` (null: the call had none). UNAUTHENTICATED, with a
  // message that says what to send, for a missing, malformed or unknown key.
  absl::StatusOr<std::string> Authenticate(const absl::string_view* authorization) const;

  int key_count() const { return static_cast<int>(keys_.size()); }
  int tenant_count() const;

  static constexpr char kMetadataKey[] = "authorization";
  static constexpr char kBearerPrefix[] = "Bearer ";

 private:
  explicit ApiKeys(std::vector<std::pair<std::string, std::string>> keys)
      : keys_(std::move(keys)) {}

  std::vector<std::pair<std::string, std::string>> keys_;  // (key, tenant)
};

// 1..64 characters of [A-Za-z0-9._-]; `field` names the value in the error.
absl::Status ValidateTenant(absl::string_view tenant, absl::string_view field);

}  // namespace fsrst

#endif  // FSRST_SERVER_API_KEY_AUTH_H_
