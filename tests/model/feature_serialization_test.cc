#include "model/feature_serialization.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "model/model_runner.h"
#include "tests/model/model_test_util.h"

namespace fsrst {
namespace {

using ::fsrst::testing::EnhanceWith;
using ::fsrst::testing::Pattern;
using ::fsrst::testing::UnitLuma;
using ::fsrst::testing::WeightsPath;
using ::testing::HasSubstr;
using FeaturesOr = absl::StatusOr<std::shared_ptr<const ReferenceFeatures>>;

std::unique_ptr<ModelRunner> LoadRunner(const std::string& variant) {
  ModelRunnerOptions options;
  options.device = "cpu";
  options.num_threads = 1;
  absl::StatusOr<std::unique_ptr<ModelRunner>> runner =
      ModelRunner::Load(WeightsPath(variant), options);
  EXPECT_TRUE(runner.ok()) << runner.status();
  return runner.ok() ? *std::move(runner) : nullptr;
}

// Byte offsets of the header fields of a value of `m` (see feature_serialization.h).
struct Offsets {
  size_t format_version = 4;
  size_t dtype = 8;
  size_t name_length = 12;
  size_t version_length;
  size_t rank;
  size_t dims;
  size_t values;
};
Offsets OffsetsOf(const ModelMetadata& m) {
  Offsets o;
  o.version_length = o.name_length + 4 + m.name.size();
  o.rank = o.version_length + 4 + m.version.size();
  o.dims = o.rank + 4;
  o.values = o.dims + 8 * (1 + m.feature_shape.size());
  return o;
}

template <typename T>
void Poke(std::string* bytes, size_t offset, T value) {
  std::memcpy(bytes->data() + offset, &value, sizeof(value));
}

class FeatureSerializationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    runner_ = LoadRunner("fsrst_x4_small");
    ASSERT_NE(runner_, nullptr);
    FeaturesOr features = runner_->EncodeReferences(UnitLuma(runner_->metadata(), 3, 1), 3);
    ASSERT_TRUE(features.ok()) << features.status();
    features_ = *std::move(features);
    absl::StatusOr<std::string> bytes = runner_->SerializeFeatures(*features_);
    ASSERT_TRUE(bytes.ok()) << bytes.status();
    bytes_ = *std::move(bytes);
  }

  // DeserializeFeatures of `bytes`, which must be refused with `code`; returns the message.
  std::string Refused(const std::string& bytes, absl::StatusCode code) {
    FeaturesOr features = runner_->DeserializeFeatures(bytes);
    EXPECT_FALSE(features.ok());
    EXPECT_EQ(features.status().code(), code) << features.status();
    return std::string(features.status().message());
  }

  std::unique_ptr<ModelRunner> runner_;
  std::shared_ptr<const ReferenceFeatures> features_;
  std::string bytes_;
};

TEST_F(FeatureSerializationTest, RoundTripServesTheSameImage) {
  FeaturesOr restored = runner_->DeserializeFeatures(bytes_);
  ASSERT_TRUE(restored.ok()) << restored.status();
  EXPECT_EQ((*restored)->count(), 3);
  EXPECT_EQ((*restored)->byte_size(), features_->byte_size());
  EXPECT_EQ(EnhanceWith(*runner_, **restored), EnhanceWith(*runner_, *features_));
  // And serialising the restored features gives the very same bytes.
  EXPECT_EQ(*runner_->SerializeFeatures(**restored), bytes_);
}

TEST_F(FeatureSerializationTest, BytesAreTheDocumentedHeaderThenTheRawFloats) {
  const ModelMetadata& m = runner_->metadata();
  const Offsets o = OffsetsOf(m);
  int64_t per_reference = 1;
  for (int64_t dim : m.feature_shape) per_reference *= dim;
  ASSERT_EQ(bytes_.size(), o.values + 3 * per_reference * sizeof(float));
  EXPECT_EQ(bytes_.substr(0, 4), "FSRF");
  EXPECT_EQ(bytes_.substr(o.name_length + 4, m.name.size()), "fsrst_x4_small");
  EXPECT_EQ(bytes_.substr(o.version_length + 4, m.version.size()), m.version);
  int64_t count = 0;
  std::memcpy(&count, bytes_.data() + o.dims, sizeof(count));
  EXPECT_EQ(count, 3);
}

TEST_F(FeatureSerializationTest, EveryTruncationIsRefusedAsDataLoss) {
  const Offsets o = OffsetsOf(runner_->metadata());
  // Every length inside the header, and a few inside the values.
  std::vector<size_t> lengths;
  for (size_t n = 0; n <= o.values; ++n) lengths.push_back(n);
  for (size_t n : {o.values + 1, o.values + 4, bytes_.size() / 2, bytes_.size() - 1}) {
    lengths.push_back(n);
  }
  for (size_t n : lengths) {
    SCOPED_TRACE(n);
    Refused(bytes_.substr(0, n), absl::StatusCode::kDataLoss);
  }
  EXPECT_THAT(Refused(bytes_.substr(0, 6), absl::StatusCode::kDataLoss),
              HasSubstr("truncated at format version"));
  EXPECT_THAT(Refused(bytes_.substr(0, bytes_.size() - 1), absl::StatusCode::kDataLoss),
              HasSubstr("bytes of values, expected"));
  EXPECT_THAT(Refused(bytes_ + "x", absl::StatusCode::kDataLoss),
              HasSubstr("bytes of values, expected"));
}

TEST_F(FeatureSerializationTest, CorruptHeaderFieldsAreRefusedNamingTheField) {
  const Offsets o = OffsetsOf(runner_->metadata());
  std::string bytes = bytes_;
  bytes[0] = 'X';
  EXPECT_THAT(Refused(bytes, absl::StatusCode::kDataLoss), HasSubstr("magic"));
  bytes = bytes_;
  Poke<uint32_t>(&bytes, o.format_version, 2);
  EXPECT_THAT(Refused(bytes, absl::StatusCode::kDataLoss),
              HasSubstr("format version 2, expected 1"));
  bytes = bytes_;
  Poke<uint32_t>(&bytes, o.dtype, 2);
  EXPECT_THAT(Refused(bytes, absl::StatusCode::kDataLoss), HasSubstr("dtype 2, expected 1"));
  bytes = bytes_;
  Poke<uint32_t>(&bytes, o.name_length, 0xFFFFFFF0u);  // would read far past the end
  EXPECT_THAT(Refused(bytes, absl::StatusCode::kDataLoss),
              HasSubstr("model name length 4294967280 exceeds 256"));
  bytes = bytes_;
  Poke<uint32_t>(&bytes, o.rank, 1000);
  EXPECT_THAT(Refused(bytes, absl::StatusCode::kFailedPrecondition),
              HasSubstr("rank 1000, expected 4"));
  bytes = bytes_;
  Poke<float>(&bytes, o.values + 8, std::numeric_limits<float>::quiet_NaN());
  EXPECT_THAT(Refused(bytes, absl::StatusCode::kDataLoss), HasSubstr("value 2 is not finite"));
}

TEST_F(FeatureSerializationTest, FeaturesOfAnotherModelVersionOrShapeAreRefused) {
  const ModelMetadata& m = runner_->metadata();
  std::vector<float> values(3 * 16 * 32 * 32, 0.5f);
  ModelMetadata other = m;
  other.version = m.version + "1";
  EXPECT_THAT(
      Refused(SerializeFeatureBytes(other, {3, 16, 32, 32}, values),
              absl::StatusCode::kFailedPrecondition),
      HasSubstr("version " + other.version + ", expected fsrst_x4_small version " + m.version));
  other = m;
  other.name = "fsrst_x4";
  EXPECT_THAT(Refused(SerializeFeatureBytes(other, {3, 16, 32, 32}, values),
                      absl::StatusCode::kFailedPrecondition),
              HasSubstr("model fsrst_x4 version"));
  // The right model with another per-reference shape, or a count out of 1..max_references.
  EXPECT_THAT(Refused(SerializeFeatureBytes(m, {12, 16, 16, 16}, values),
                      absl::StatusCode::kFailedPrecondition),
              HasSubstr("shape [12,16,16,16], expected [1..8,16,32,32]"));
  EXPECT_THAT(
      Refused(SerializeFeatureBytes(m, {0, 16, 32, 32}, {}), absl::StatusCode::kFailedPrecondition),
      HasSubstr("shape [0,16,32,32]"));
  std::vector<float> nine(9 * 16 * 32 * 32, 0.5f);
  EXPECT_THAT(Refused(SerializeFeatureBytes(m, {9, 16, 32, 32}, nine),
                      absl::StatusCode::kFailedPrecondition),
              HasSubstr("shape [9,16,32,32]"));
  // A well-formed value with the right shape and model is accepted: the refusals above
  // are the fields, not the helper.
  ASSERT_TRUE(runner_->DeserializeFeatures(SerializeFeatureBytes(m, {3, 16, 32, 32}, values)).ok());
}

TEST_F(FeatureSerializationTest, AnotherModelRefusesThisModelsFeatures) {
  std::unique_ptr<ModelRunner> x4 = LoadRunner("fsrst_x4");
  ASSERT_NE(x4, nullptr);
  FeaturesOr refused = x4->DeserializeFeatures(bytes_);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr("model fsrst_x4_small version"));
  EXPECT_THAT(refused.status().message(), HasSubstr("expected fsrst_x4 version"));
}

}  // namespace
}  // namespace fsrst
