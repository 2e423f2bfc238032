#include "imaging/png_codec.h"

#include <png.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fsrst {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// A PNG of `format` written by libpng itself (not by EncodePng), so decoding is
// checked against files the encoder under test did not make.
std::string LibpngPng(int width, int height, png_uint_32 format, const void* pixels) {
  png_image image;
  std::memset(&image, 0, sizeof(image));
  image.version = PNG_IMAGE_VERSION;
  image.width = static_cast<png_uint_32>(width);
  image.height = static_cast<png_uint_32>(height);
  image.format = format;
  png_alloc_size_t size = 0;
  EXPECT_TRUE(png_image_write_get_memory_size(image, size, 0, pixels, 0, nullptr));
  std::string out(size, '\0');
  EXPECT_TRUE(png_image_write_to_memory(&image, out.data(), &size, 0, pixels, 0, nullptr));
  out.resize(size);
  return out;
}

RgbImage Gradient(int width, int height) {
  RgbImage image{width, height, {}};
  for (int i = 0; i < width * height * 3; ++i) image.pixels.push_back(static_cast<uint8_t>(i * 7));
  return image;
}

TEST(PngCodec, RgbRoundTripsExactly) {
  const RgbImage original = Gradient(5, 3);
  absl::StatusOr<std::string> png = EncodePng(original);
  ASSERT_TRUE(png.ok()) << png.status();
  EXPECT_EQ(png->substr(1, 3), "PNG");
  absl::StatusOr<RgbImage> decoded = DecodePng(*png, ImageLimits{}, "frame");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->width, 5);
  EXPECT_EQ(decoded->height, 3);
  EXPECT_EQ(decoded->pixels, original.pixels);
}

TEST(PngCodec, GreyIsRepeatedIntoRgb) {
  const std::vector<uint8_t> grey = {0, 100, 200, 255};
  absl::StatusOr<RgbImage> decoded =
      DecodePng(LibpngPng(2, 2, PNG_FORMAT_GRAY, grey.data()), ImageLimits{}, "frame");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_THAT(decoded->pixels, ElementsAre(0, 0, 0, 100, 100, 100, 200, 200, 200, 255, 255, 255));
}

TEST(PngCodec, AlphaIsCompositedOntoWhite) {
  const std::vector<uint8_t> rgba = {10, 20, 30, 255,  // opaque: kept
                                     10, 20, 30, 0};   // transparent: white
  absl::StatusOr<RgbImage> decoded =
      DecodePng(LibpngPng(2, 1, PNG_FORMAT_RGBA, rgba.data()), ImageLimits{}, "frame");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_THAT(decoded->pixels, ElementsAre(10, 20, 30, 255, 255, 255));
}

TEST(PngCodec, SixteenBitChannelsBecomeEightBit) {
  const std::vector<uint16_t> linear = {0, 0, 0, 65535, 65535, 65535};
  absl::StatusOr<RgbImage> decoded =
      DecodePng(LibpngPng(2, 1, PNG_FORMAT_LINEAR_RGB, linear.data()), ImageLimits{}, "frame");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_THAT(decoded->pixels, ElementsAre(0, 0, 0, 255, 255, 255));
}

TEST(PngCodec, PixelLimitIsCheckedFromTheHeader) {
  const std::string png = *EncodePng(Gradient(4, 4));
  ImageLimits limits;
  limits.max_pixels = 15;
  absl::StatusOr<RgbImage> decoded = DecodePng(png, limits, "references[1]");
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(decoded.status().message(), "references[1]: expected at most 15 pixels, got 4x4");
  limits.max_pixels = 16;
  EXPECT_TRUE(DecodePng(png, limits, "references[1]").ok());
}

TEST(PngCodec, ByteLimitIsChecked) {
  const std::string png = *EncodePng(Gradient(4, 4));
  ImageLimits limits;
  limits.max_bytes = static_cast<int64_t>(png.size()) - 1;
  absl::StatusOr<RgbImage> decoded = DecodePng(png, limits, "frame");
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(decoded.status().message(),
            absl::StrCat("frame: expected at most ", png.size() - 1, " bytes, got ", png.size()));
  limits.max_bytes = static_cast<int64_t>(png.size());
  EXPECT_TRUE(DecodePng(png, limits, "frame").ok());
}

TEST(PngCodec, NotAPngAndATruncatedOneAreInvalidArgument) {
  absl::StatusOr<RgbImage> garbage = DecodePng("hello, not a png", ImageLimits{}, "frame");
  EXPECT_EQ(garbage.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(garbage.status().message()), StartsWith("frame: not a PNG libpng can read ("));
  const std::string png = *EncodePng(Gradient(64, 64));
  absl::StatusOr<RgbImage> truncated =
      DecodePng(png.substr(0, png.size() / 2), ImageLimits{}, "frame");
  EXPECT_EQ(truncated.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(truncated.status().message()), StartsWith("frame: corrupt PNG ("));
}

TEST(PngCodec, EncodeRejectsImagesWhoseSizesDoNotMatch) {
  RgbImage image = Gradient(2, 2);
  image.pixels.pop_back();
  EXPECT_EQ(EncodePng(image).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(EncodePng(RgbImage{}).status().message(), HasSubstr("expected width*height*3"));
}

}  // namespace
}  // namespace fsrst
