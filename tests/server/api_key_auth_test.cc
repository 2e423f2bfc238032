// The API key file parser and the key check.

#include "server/api_key_auth.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fsrst {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kKeyA[] = "a1b2c3d4e5f60718293a4b5c6d7e8f90";
constexpr char kKeyA2[] = "rotated-key-of-tenant-a-000000001";
constexpr char kKeyB[] = "ffffffffffffffffffffffffffffffff";

ApiKeys TwoTenants() {
  absl::StatusOr<ApiKeys> keys = ApiKeys::Parse(
      absl::StrCat("# keys of the staging replicas\n", "\n", kKeyA, " tenant-a\n", "  ", kKeyA2,
                   "\ttenant-a   \n", kKeyB, " tenant_b.eu\n"),
      "keys.txt");
  EXPECT_TRUE(keys.ok()) << keys.status();
  return *std::move(keys);
}

TEST(ApiKeysParse, ReadsKeysCommentsBlankLinesAndTabs) {
  const ApiKeys keys = TwoTenants();
  EXPECT_EQ(keys.key_count(), 3);
  EXPECT_EQ(keys.tenant_count(), 2);
  EXPECT_EQ(*keys.TenantOf(kKeyA), "tenant-a");
  EXPECT_EQ(*keys.TenantOf(kKeyA2), "tenant-a");
  EXPECT_EQ(*keys.TenantOf(kKeyB), "tenant_b.eu");
}

TEST(ApiKeysParse, WrongFieldCountNamesTheLineButNotTheKey) {
  const std::string text = absl::StrCat(kKeyA, " tenant-a\n", "secret-in-a-bad-line-0000\n");
  absl::StatusOr<ApiKeys> keys = ApiKeys::Parse(text, "keys.txt");
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(keys.status().message(),
              AllOf(HasSubstr("keys.txt:2: expected `<key> <tenant>` (two fields), got 1"),
                    Not(HasSubstr("secret-in-a-bad-line"))));
  keys = ApiKeys::Parse(absl::StrCat(kKeyA, " tenant a\n"), "keys.txt");
  EXPECT_THAT(keys.status().message(), HasSubstr("keys.txt:1: expected `<key> <tenant>` (two "
                                                 "fields), got 3"));
}

TEST(ApiKeysParse, ShortKeyIsRejected) {
  absl::StatusOr<ApiKeys> keys = ApiKeys::Parse("short tenant\n", "keys.txt");
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(keys.status().message(),
              HasSubstr("keys.txt:1: expected a key of 16 to 256 characters, got 5"));
}

// The longest key is 256 characters; one more is refused, and the message does not echo it.
TEST(ApiKeysParse, KeyLongerThan256CharactersIsRejected) {
  const std::string longest(256, 'k');
  absl::StatusOr<ApiKeys> keys = ApiKeys::Parse(longest + " tenant\n", "keys.txt");
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(*keys->TenantOf(longest), "tenant");
  const std::string too_long(257, 'k');
  keys = ApiKeys::Parse(too_long + " tenant\n", "keys.txt");
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(keys.status().message(),
              HasSubstr("keys.txt:1: expected a key of 16 to 256 characters, got 257"));
  EXPECT_THAT(keys.status().message(), ::testing::Not(HasSubstr(too_long.substr(0, 32))));
}

TEST(ApiKeysParse, NonAsciiKeyIsRejected) {
  absl::StatusOr<ApiKeys> keys =
      ApiKeys::Parse("0123456789abcdef\xc3\xa9 tenant\n", "keys.txt");
  EXPECT_THAT(keys.status().message(),
              HasSubstr("keys.txt:1: expected a key of printable ASCII without spaces"));
}

TEST(ApiKeysParse, BadTenantIsRejected) {
  absl::StatusOr<ApiKeys> keys = ApiKeys::Parse(absl::StrCat(kKeyA, " a/b\n"), "keys.txt");
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(keys.status().message(),
              HasSubstr("keys.txt:1: expected a tenant of only [A-Za-z0-9._-]"));
  keys = ApiKeys::Parse(absl::StrCat(kKeyA, " ", std::string(65, 't'), "\n"), "keys.txt");
  EXPECT_THAT(keys.status().message(),
              HasSubstr("expected a tenant of 1 to 64 characters, got 65"));
}

TEST(ApiKeysParse, DuplicateKeyIsRejected) {
  absl::StatusOr<ApiKeys> keys =
      ApiKeys::Parse(absl::StrCat(kKeyA, " one\n", kKeyA, " two\n"), "keys.txt");
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(keys.status().message(),
              AllOf(HasSubstr("keys.txt:2: this key already appeared"), Not(HasSubstr(kKeyA))));
}

TEST(ApiKeysParse, FileWithoutKeysIsRejected) {
  absl::StatusOr<ApiKeys> keys = ApiKeys::Parse("# nothing yet\n\n", "keys.txt");
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(keys.status().message(), HasSubstr("keys.txt: expected at least one"));
}

TEST(ApiKeysFromFile, ReadsAFileAndNamesAMissingOne) {
  std::string path = ::testing::TempDir() + "/api_keys_XXXXXX";  // unique: runs may overlap
  const int fd = mkstemp(path.data());
  ASSERT_GE(fd, 0);
  close(fd);
  {
    std::ofstream file(path);
    file << kKeyB << " tenant-b\n";
  }
  absl::StatusOr<ApiKeys> keys = ApiKeys::FromFile(path);
  std::remove(path.c_str());  // before any assertion can end the test
  ASSERT_TRUE(keys.ok()) << keys.status();
  EXPECT_EQ(*keys->TenantOf(kKeyB), "tenant-b");

  keys = ApiKeys::FromFile("/nonexistent/keys.txt");
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(keys.status().message(),
              HasSubstr("--api_keys_file: cannot open /nonexistent/keys.txt"));
}

TEST(ApiKeysAuthenticate, AcceptsOnlyAKnownBearerKey) {
  const ApiKeys keys = TwoTenants();
  const std::string good = absl::StrCat("Bearer ", kKeyB);
  absl::string_view value = good;
  EXPECT_EQ(*keys.Authenticate(&value), "tenant_b.eu");

  absl::StatusOr<std::string> missing = keys.Authenticate(nullptr);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(missing.status().message(), HasSubstr("authorization: Bearer <key>"));

  const std::string basic = absl::StrCat("Basic ", kKeyB);
  value = basic;
  EXPECT_EQ(keys.Authenticate(&value).status().code(), absl::StatusCode::kUnauthenticated);

  // A prefix, an extension and a one-byte change of a real key are all unknown.
  for (const std::string& wrong :
       {absl::StrCat("Bearer ", std::string(kKeyB).substr(0, 31)),
        absl::StrCat("Bearer ", kKeyB, "f"), std::string("Bearer fffffffffffffffffffffffffffffffe"),
        std::string("Bearer "), std::string("Bearer tenant_b.eu")}) {
    value = wrong;
    absl::StatusOr<std::string> tenant = keys.Authenticate(&value);
    EXPECT_EQ(tenant.status().code(), absl::StatusCode::kUnauthenticated) << wrong;
    EXPECT_THAT(tenant.status().message(), Not(HasSubstr("ffff"))) << wrong;
  }
}

}  // namespace
}  // namespace fsrst
