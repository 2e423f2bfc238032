#include "server/api_key_auth.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace fsrst {
namespace {

constexpr size_t kMinKeyLength = 16;
constexpr size_t kMaxKeyLength = 256;
constexpr size_t kMaxTenantLength = 64;

bool IsKeyChar(char c) { return c > 0x20 && c < 0x7f; }

bool IsTenantChar(char c) {
  return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
}

// Equality in time that depends on the lengths only: every byte of `presented`
// is looked at whatever the content. REQUIRES: !stored.empty().
bool ConstantTimeEquals(absl::string_view presented, absl::string_view stored) {
  unsigned char diff = presented.size() == stored.size() ? 0 : 1;
  for (size_t i = 0; i < presented.size(); ++i) {
    diff |= static_cast<unsigned char>(presented[i] ^ stored[i % stored.size()]);
  }
  return diff == 0;
}

}  // namespace

absl::Status ValidateTenant(absl::string_view tenant, absl::string_view field) {
  if (tenant.empty() || tenant.size() > kMaxTenantLength) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": expected a tenant of 1 to ",
                                                   kMaxTenantLength, " characters, got ",
                                                   tenant.size()));
  }
  for (const char c : tenant) {
    if (!IsTenantChar(c)) {
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": expected a tenant of only [A-Za-z0-9._-]"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ApiKeys> ApiKeys::Parse(absl::string_view text, absl::string_view source) {
  std::vector<std::pair<std::string, std::string>> keys;
  absl::flat_hash_set<std::string> seen;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    const std::vector<absl::string_view> fields =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    // Errors say where, and what was expected, but never echo the line: it holds a key.
    const std::string where = absl::StrCat(source, ":", line_number);
    if (fields.size() != 2) {
      return absl::InvalidArgumentError(absl::StrCat(
          where, ": expected `<key> <tenant>` (two fields), got ", fields.size(), " fields"));
    }
    const absl::string_view key = fields[0];
    if (key.size() < kMinKeyLength || key.size() > kMaxKeyLength) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": expected a key of ", kMinKeyLength,
                                                     " to ", kMaxKeyLength,
                                                     " characters, got ", key.size()));
    }
    for (const char c : key) {
      if (!IsKeyChar(c)) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": expected a key of printable ASCII without spaces"));
      }
    }
    if (absl::Status status = ValidateTenant(fields[1], where); !status.ok()) return status;
    if (!seen.insert(std::string(key)).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": this key already appeared on an earlier line; each key "
                              "belongs to exactly one tenant"));
    }
    keys.emplace_back(std::string(key), std::string(fields[1]));
  }
  if (keys.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": expected at least one `<key> <tenant>` line, found none (every caller "
                "would be refused)"));
  }
  return ApiKeys(std::move(keys));
}

absl::StatusOr<ApiKeys> ApiKeys::FromFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    return absl::NotFoundError(
        absl::StrCat("--api_keys_file: cannot open ", path, ": ", std::strerror(errno)));
  }
  std::stringstream text;
  text << file.rdbuf();
  return Parse(text.str(), absl::StrCat("--api_keys_file ", path));
}

absl::StatusOr<std::string> ApiKeys::TenantOf(absl::string_view key) const {
  const std::string* tenant = nullptr;
  for (const auto& [stored, owner] : keys_) {
    // No early exit: every key is compared whatever matched before.
    if (ConstantTimeEquals(key, stored)) tenant = &owner;
  }
  if (tenant == nullptr) {
    return absl::UnauthenticatedError("the API key is not valid (unknown or revoked)");
  }
  return *tenant;
}

absl::StatusOr<std::string> ApiKeys::Authenticate(const absl::string_view* authorization) const {
  if (authorization == nullptr) {
    return absl::UnauthenticatedError(
        "missing API key: send the metadata `authorization: Bearer <key>`");
  }
  if (!absl::StartsWith(*authorization, kBearerPrefix)) {
    return absl::UnauthenticatedError(
        "authorization: expected `Bearer <key>`, got another scheme");
  }
  return TenantOf(authorization->substr(std::strlen(kBearerPrefix)));
}

int ApiKeys::tenant_count() const {
  absl::flat_hash_set<absl::string_view> tenants;
  for (const auto& entry : keys_) tenants.insert(entry.second);
  return static_cast<int>(tenants.size());
}

}  // namespace fsrst
