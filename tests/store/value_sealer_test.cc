#include "store/value_sealer.h"

#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fsrst {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

const std::string kKey(32, 'k');
const std::string kOtherKey(32, 'o');

ValueSealer Sealer(const std::string& key) { return *ValueSealer::FromKey(key); }

TEST(ValueSealer, OpensWhatItSealed) {
  const ValueSealer sealer = Sealer(kKey);
  const std::string plaintext = "normalised luma of alice";
  absl::StatusOr<std::string> sealed = sealer.Seal(plaintext, "t/alice");
  ASSERT_TRUE(sealed.ok()) << sealed.status();
  EXPECT_EQ(sealed->size(), plaintext.size() + ValueSealer::kOverheadBytes);
  absl::StatusOr<std::string> opened = sealer.Open(*sealed, "t/alice");
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(*opened, plaintext);
}

TEST(ValueSealer, SealedBytesHoldNoPlaintextAndDifferEachTime) {
  const ValueSealer sealer = Sealer(kKey);
  const std::string plaintext(4096, 'A');
  const std::string a = *sealer.Seal(plaintext, "ad");
  const std::string b = *sealer.Seal(plaintext, "ad");
  EXPECT_THAT(a, Not(HasSubstr(std::string(16, 'A'))));
  EXPECT_NE(a, b);  // a fresh nonce per value
}

TEST(ValueSealer, WrongKeyIsDataLoss) {
  const std::string sealed = *Sealer(kKey).Seal("secret", "ad");
  EXPECT_EQ(Sealer(kOtherKey).Open(sealed, "ad").status().code(), absl::StatusCode::kDataLoss);
}

TEST(ValueSealer, OtherAssociatedDataIsDataLoss) {
  const ValueSealer sealer = Sealer(kKey);
  const std::string sealed = *sealer.Seal("secret", "tenantA/alice");
  EXPECT_EQ(sealer.Open(sealed, "tenantB/alice").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(sealer.Open(sealed, "tenantA/bob").status().code(), absl::StatusCode::kDataLoss);
}

TEST(ValueSealer, EveryTamperedByteIsDataLoss) {
  const ValueSealer sealer = Sealer(kKey);
  const std::string sealed = *sealer.Seal("0123456789", "ad");
  for (size_t i = 0; i < sealed.size(); ++i) {
    std::string tampered = sealed;
    tampered[i] = static_cast<char>(tampered[i] ^ 0x01);
    EXPECT_EQ(sealer.Open(tampered, "ad").status().code(), absl::StatusCode::kDataLoss)
        << "byte " << i;
  }
}

TEST(ValueSealer, TruncatedIsDataLoss) {
  const ValueSealer sealer = Sealer(kKey);
  const std::string sealed = *sealer.Seal("0123456789", "ad");
  for (size_t n : {size_t{0}, size_t{5}, sealed.size() - 1}) {
    EXPECT_EQ(sealer.Open(sealed.substr(0, n), "ad").status().code(),
              absl::StatusCode::kDataLoss)
        << n << " bytes";
  }
}

TEST(ValueSealer, KeyMustBe32Bytes) {
  for (size_t n : {size_t{0}, size_t{31}, size_t{33}}) {
    absl::StatusOr<ValueSealer> sealer = ValueSealer::FromKey(std::string(n, 'k'));
    EXPECT_EQ(sealer.status().code(), absl::StatusCode::kInvalidArgument) << n;
    EXPECT_THAT(sealer.status().message(), HasSubstr("exactly 32"));
  }
}

TEST(ValueSealer, KeyFileErrorsNameFlagAndLengthNeverTheBytes) {
  const std::string path = ::testing::TempDir() + "/short.key";
  std::ofstream(path, std::ios::binary) << "SECRETSECRET";
  absl::StatusOr<ValueSealer> sealer = ValueSealer::FromKeyFile(path, "reference_store_key_file");
  ASSERT_EQ(sealer.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(sealer.status().message(), HasSubstr("--reference_store_key_file="));
  EXPECT_THAT(sealer.status().message(), HasSubstr("it holds 12 bytes"));
  EXPECT_THAT(sealer.status().message(), Not(HasSubstr("SECRET")));

  EXPECT_EQ(ValueSealer::FromKeyFile(path + ".missing", "f").status().code(),
            absl::StatusCode::kInvalidArgument);

  const std::string good = ::testing::TempDir() + "/good.key";
  std::ofstream(good, std::ios::binary) << kKey;
  absl::StatusOr<ValueSealer> loaded = ValueSealer::FromKeyFile(good, "f");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  // The file's key is the key: what it seals, a sealer of the same bytes opens.
  EXPECT_EQ(*Sealer(kKey).Open(*loaded->Seal("x", "ad"), "ad"), "x");

  const std::string long_path = ::testing::TempDir() + "/long.key";
  std::ofstream(long_path, std::ios::binary) << kKey << "\n";
  EXPECT_THAT(ValueSealer::FromKeyFile(long_path, "f").status().message(),
              HasSubstr("more than 32 bytes"));
}

}  // namespace
}  // namespace fsrst
