#include "clients/cpp/image_files.h"

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "imaging/image_codec.h"
#include "imaging/png_codec.h"

namespace fsrst {
namespace {

using ::testing::HasSubstr;

std::string TempPath(const std::string& name) { return ::testing::TempDir() + "/" + name; }

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file << bytes;
}

std::string ReadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << file.rdbuf();
  return bytes.str();
}

RgbImage Gradient(int size) {
  RgbImage image{size, size, {}};
  for (int i = 0; i < size * size * 3; ++i) image.pixels.push_back(static_cast<uint8_t>(i * 7));
  return image;
}

TEST(EncodingForPath, ChoosesByExtension) {
  EXPECT_EQ(*EncodingForPath("a/b.JPG"), v1::ENCODING_JPEG);
  EXPECT_EQ(*EncodingForPath("b.jpeg"), v1::ENCODING_JPEG);
  EXPECT_EQ(*EncodingForPath("c.rgb"), v1::ENCODING_RGB8);
  EXPECT_EQ(*EncodingForPath("d.PNG"), v1::ENCODING_RGB8);  // decoded here, sent raw
  auto gif = EncodingForPath("e.gif");
  EXPECT_EQ(gif.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(gif.status().message(), "e.gif: expected a .jpg, .jpeg, .png or .rgb file");
}

TEST(ReadImageFile, PngIsDecodedAndSentAsRgb8) {
  RgbImage rgb{3, 2, {}};
  for (int i = 0; i < 3 * 2 * 3; ++i) rgb.pixels.push_back(static_cast<uint8_t>(i * 11));
  const std::string path = TempPath("frame.png");
  WriteFile(path, *EncodePng(rgb));
  auto image = ReadImageFile(path);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->encoding(), v1::ENCODING_RGB8);
  EXPECT_EQ(image->width(), 3u);
  EXPECT_EQ(image->height(), 2u);
  EXPECT_EQ(image->data(), std::string(rgb.pixels.begin(), rgb.pixels.end()));
}

TEST(ReadImageFile, CorruptPngNamesThePath) {
  const std::string path = TempPath("corrupt.png");
  WriteFile(path, "this is not a png at all");
  auto image = ReadImageFile(path);
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(image.status().message(), HasSubstr(path + ": not a PNG libpng can read"));
}

TEST(ReadImageFile, JpegTravelsAsTheFilesBytes) {
  const std::string jpeg = *EncodeJpeg(Gradient(16), 90);
  const std::string path = TempPath("frame.jpg");
  WriteFile(path, jpeg);
  auto image = ReadImageFile(path);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->encoding(), v1::ENCODING_JPEG);
  EXPECT_EQ(image->data(), jpeg);
  EXPECT_EQ(image->width(), 0u);
  EXPECT_EQ(image->height(), 0u);
}

TEST(ReadImageFile, RawRgbTakesItsSideFromItsSize) {
  const std::string path = TempPath("frame.rgb");
  WriteFile(path, std::string(32 * 32 * 3, '\x10'));
  auto image = ReadImageFile(path);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->encoding(), v1::ENCODING_RGB8);
  EXPECT_EQ(image->width(), 32u);
  EXPECT_EQ(image->height(), 32u);
}

TEST(ReadImageFile, NonSquareRawRgbIsInvalidArgument) {
  const std::string path = TempPath("odd.rgb");
  WriteFile(path, std::string(100, 'x'));
  auto image = ReadImageFile(path);
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(image.status().message(), HasSubstr("got 100 bytes"));
}

TEST(ReadImageFile, MissingAndEmptyFiles) {
  const std::string missing = TempPath("missing.jpg");
  EXPECT_EQ(ReadImageFile(missing).status().code(), absl::StatusCode::kNotFound);
  // Says what the system said about the local file, not "cannot open".
  EXPECT_EQ(ReadImageFile(missing).status().message(),
            "cannot read " + missing + ": No such file or directory");
  const std::string path = TempPath("empty.jpg");
  WriteFile(path, "");
  EXPECT_EQ(ReadImageFile(path).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(WriteImageFile, SameEncodingIsWrittenAsIs) {
  v1::Image image;
  image.set_encoding(v1::ENCODING_JPEG);
  image.set_data(*EncodeJpeg(Gradient(8), 90));
  const std::string path = TempPath("same.jpg");
  ASSERT_TRUE(WriteImageFile(image, path).ok());
  EXPECT_EQ(ReadFile(path), image.data());
}

TEST(WriteImageFile, RgbAnswerBecomesAJpegFile) {
  const RgbImage rgb = Gradient(16);
  v1::Image image;
  image.set_encoding(v1::ENCODING_RGB8);
  image.set_width(16);
  image.set_height(16);
  image.set_data(std::string(rgb.pixels.begin(), rgb.pixels.end()));
  const std::string path = TempPath("answer.jpg");
  ASSERT_TRUE(WriteImageFile(image, path).ok());
  auto decoded = DecodeImage(ImageEncoding::kJpeg, ReadFile(path), 0, 0, {}, "file");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->width, 16);
  EXPECT_EQ(decoded->height, 16);
}

TEST(WriteImageFile, JpegAnswerBecomesARawFile) {
  v1::Image image;
  image.set_encoding(v1::ENCODING_JPEG);
  image.set_data(*EncodeJpeg(Gradient(16), 90));
  const std::string path = TempPath("answer.rgb");
  ASSERT_TRUE(WriteImageFile(image, path).ok());
  EXPECT_EQ(ReadFile(path).size(), 16u * 16 * 3);
}

TEST(WriteImageFile, AnswerBecomesAPngFile) {
  v1::Image image;
  image.set_encoding(v1::ENCODING_JPEG);
  image.set_data(*EncodeJpeg(Gradient(16), 90));
  const std::string path = TempPath("answer.png");
  ASSERT_TRUE(WriteImageFile(image, path).ok());
  auto from_png = DecodePng(ReadFile(path), {}, "file");
  auto from_jpeg = DecodeImage(ImageEncoding::kJpeg, image.data(), 0, 0, {}, "image");
  ASSERT_TRUE(from_png.ok()) << from_png.status();
  EXPECT_EQ(from_png->pixels, from_jpeg->pixels);  // lossless: the decoded answer exactly
}

TEST(WriteImageFile, UnwritablePathSaysWhy) {
  v1::Image image;
  image.set_encoding(v1::ENCODING_JPEG);
  image.set_data(*EncodeJpeg(Gradient(8), 90));
  const std::string path = TempPath("no_such_dir/answer.jpg");
  const absl::Status status = WriteImageFile(image, path);
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(status.message(), "cannot write " + path + ": No such file or directory");
}

TEST(WriteImageFile, UndecodableOrUnsupportedIsInvalidArgument) {
  v1::Image image;
  image.set_encoding(v1::ENCODING_JPEG);
  image.set_data("not a jpeg");
  EXPECT_EQ(WriteImageFile(image, TempPath("bad.rgb")).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteImageFile(image, TempPath("bad.png")).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteImageFile(image, TempPath("bad.gif")).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fsrst
