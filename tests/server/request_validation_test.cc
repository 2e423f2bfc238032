#include "server/request_validation.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fsrst {
namespace {

using ::testing::HasSubstr;

ModelMetadata SmallModel() {
  ModelMetadata m;
  m.name = "test";
  m.lr_size = 32;
  m.scale = 4;
  m.reference_size = 128;
  m.feature_shape = {3, 32, 32};
  m.max_references = 2;
  return m;
}

v1::Image Rgb8(int width, int height) {
  v1::Image image;
  image.set_encoding(v1::ENCODING_RGB8);
  image.set_width(width);
  image.set_height(height);
  image.set_data(std::string(static_cast<size_t>(width) * height * 3, '\x40'));
  return image;
}

TEST(ValidateIdentityId, AcceptsTheAllowedAlphabet) {
  EXPECT_TRUE(ValidateIdentityId("user-42@tenant:cam_1.v2", "identity_id").ok());
  EXPECT_TRUE(ValidateIdentityId(std::string(128, 'z'), "identity_id").ok());
}

TEST(ValidateIdentityId, RejectsEmptyLongAndOddCharacters) {
  EXPECT_THAT(ValidateIdentityId("", "identity_id").message(),
              HasSubstr("identity_id: expected 1 to 128 characters, got 0"));
  EXPECT_EQ(ValidateIdentityId(std::string(129, 'a'), "id").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateIdentityId(std::string("a\0b", 3), "id").code(),
            absl::StatusCode::kInvalidArgument);
}

// Regression (issue 19): the position counted from 0 and the character was
// not shown ("character 1 is not allowed" for the '/' of "a/b").
TEST(ValidateIdentityId, NamesTheCharacterQuotedAndItsPositionFromOne) {
  EXPECT_THAT(ValidateIdentityId("a/b", "identity_id").message(),
              HasSubstr("identity_id: character 2 ('/') is not allowed; expected only "
                        "[A-Za-z0-9._:@-]"));
  EXPECT_THAT(ValidateIdentityId("jos\xc3\xa9", "identity_id").message(),
              HasSubstr("character 4 ('\xc3\xa9', U+00E9) is not allowed"));
  EXPECT_THAT(ValidateIdentityId("ab\tc", "id").message(),
              HasSubstr("character 3 (U+0009) is not allowed"));
  EXPECT_THAT(ValidateIdentityId(std::string("a\0b", 3), "id").message(),
              HasSubstr("character 2 (U+0000) is not allowed"));
  // Not UTF-8: a lone continuation byte, a truncated sequence, an overlong form.
  EXPECT_THAT(ValidateIdentityId("x\x80", "id").message(),
              HasSubstr("character 2 (byte 0x80) is not allowed"));
  EXPECT_THAT(ValidateIdentityId("x\xe2\x82", "id").message(),
              HasSubstr("character 2 (byte 0xE2) is not allowed"));
  EXPECT_THAT(ValidateIdentityId("\xc0\xaf", "id").message(),
              HasSubstr("character 1 (byte 0xC0) is not allowed"));
}

TEST(ToImageEncoding, RejectsUnspecifiedAndUnknownValues) {
  EXPECT_EQ(*ToImageEncoding(v1::ENCODING_JPEG, "f"), ImageEncoding::kJpeg);
  EXPECT_EQ(*ToImageEncoding(v1::ENCODING_RGB8, "f"), ImageEncoding::kRgb8);
  EXPECT_THAT(ToImageEncoding(0, "frame.encoding").status().message(),
              HasSubstr("frame.encoding: expected ENCODING_JPEG (1) or ENCODING_RGB8 (2), got 0"));
  EXPECT_EQ(ToImageEncoding(77, "f").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(DecodeFrame, ReturnsThePixelsOfAFrameOfTheRightSize) {
  auto pixels = DecodeFrame(Rgb8(32, 32), SmallModel(), {});
  ASSERT_TRUE(pixels.ok()) << pixels.status();
  EXPECT_EQ(pixels->size(), 32u * 32 * 3);
  EXPECT_EQ((*pixels)[0], 0x40);
}

TEST(DecodeFrame, WrongSizeNamesTheExpectedSize) {
  EXPECT_THAT(DecodeFrame(Rgb8(31, 32), SmallModel(), {}).status().message(),
              HasSubstr("frame: expected 32x32 pixels, got 31x32"));
}

TEST(DecodeReferences, CountsAreBounded) {
  google::protobuf::RepeatedPtrField<v1::Image> refs;
  EXPECT_THAT(DecodeReferences(refs, SmallModel(), {}).status().message(),
              HasSubstr("references: expected 1 to 2 images, got 0"));
  for (int i = 0; i < 3; ++i) *refs.Add() = Rgb8(128, 128);
  EXPECT_THAT(DecodeReferences(refs, SmallModel(), {}).status().message(),
              HasSubstr("got 3"));
}

TEST(DecodeReferences, NormalisesAnySizeToReferenceLuma) {
  google::protobuf::RepeatedPtrField<v1::Image> refs;
  *refs.Add() = Rgb8(300, 200);
  *refs.Add() = Rgb8(64, 64);
  auto luma = DecodeReferences(refs, SmallModel(), {});
  ASSERT_TRUE(luma.ok()) << luma.status();
  ASSERT_EQ(luma->size(), 2u * 128 * 128);
  // A constant 0x40 grey stays 0x40 through crop, resize and luma.
  EXPECT_FLOAT_EQ((*luma)[0], 64.0f / 255.0f);
  EXPECT_FLOAT_EQ((*luma)[2 * 128 * 128 - 1], 64.0f / 255.0f);
}

TEST(DecodeReferences, ErrorsNameTheReferenceIndex) {
  google::protobuf::RepeatedPtrField<v1::Image> refs;
  *refs.Add() = Rgb8(128, 128);
  *refs.Add() = Rgb8(128, 128);
  refs.Mutable(1)->set_encoding(v1::ENCODING_UNSPECIFIED);
  EXPECT_THAT(DecodeReferences(refs, SmallModel(), {}).status().message(),
              HasSubstr("references[1].encoding"));
}

}  // namespace
}  // namespace fsrst
