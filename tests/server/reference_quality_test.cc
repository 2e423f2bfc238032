#include "server/reference_quality.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fsrst {
namespace {

using ::testing::HasSubstr;

constexpr int kSize = 128;

// Half the pixels at 0.5 - d, half at 0.5 + d (alternating rows): std exactly d.
std::vector<float> TwoLevels(double d) {
  std::vector<float> luma(kSize * kSize);
  for (int y = 0; y < kSize; ++y) {
    for (int x = 0; x < kSize; ++x) luma[y * kSize + x] = static_cast<float>(y % 2 ? 0.5 + d : 0.5 - d);
  }
  return luma;
}

TEST(ReferenceQuality, ACheckerboardHasTheLaplaciansVariance) {
  std::vector<float> luma(kSize * kSize);
  for (int y = 0; y < kSize; ++y) {
    for (int x = 0; x < kSize; ++x) luma[y * kSize + x] = (x + y) % 2 ? 1.0f : 0.0f;
  }
  const ReferenceQuality q = MeasureReference(luma, kSize);
  EXPECT_NEAR(q.luma_std, 0.5, 1e-9);
  // Every interior Laplacian is +-4 * 255, with mean 0.
  EXPECT_NEAR(q.sharpness, 1020.0 * 1020.0, 1e-3);
}

TEST(ReferenceQuality, ASmoothRampHasNoSharpness) {
  std::vector<float> luma(kSize * kSize);
  for (int y = 0; y < kSize; ++y) {
    for (int x = 0; x < kSize; ++x) luma[y * kSize + x] = x / 127.0f;
  }
  const ReferenceQuality q = MeasureReference(luma, kSize);
  EXPECT_GT(q.luma_std, 0.2);
  EXPECT_LT(q.sharpness, 1e-3);
}

// The bound: a std just above kMinReferenceLumaStd passes, just below fails,
// naming the index, the figure and the threshold.
TEST(ReferenceQuality, TheUniformityBoundIsExact) {
  std::vector<float> luma = TwoLevels(kMinReferenceLumaStd + 0.001);
  std::vector<float> below = TwoLevels(kMinReferenceLumaStd - 0.001);
  luma.insert(luma.end(), below.begin(), below.end());
  auto one = CheckReferences(absl::MakeSpan(luma).subspan(0, kSize * kSize), 1, kSize);
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->size(), 1u);
  auto two = CheckReferences(luma, 2, kSize);
  EXPECT_EQ(two.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(two.status().message(), HasSubstr("references[1]: nearly uniform"));
  EXPECT_THAT(two.status().message(), HasSubstr("0.0190"));
  EXPECT_THAT(two.status().message(), HasSubstr("expected at least 0.02"));
}

TEST(ReferenceQuality, ASolidReferenceIsRefused) {
  std::vector<float> luma(kSize * kSize, 0.7f);
  auto checked = CheckReferences(luma, 1, kSize);
  EXPECT_EQ(checked.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(checked.status().message(), HasSubstr("references[0]"));
}

}  // namespace
}  // namespace fsrst
