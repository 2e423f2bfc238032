#include "imaging/image_codec.h"

#include <turbojpeg.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fsrst {
namespace {

using ::testing::AllOf;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::FloatEq;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// Pixel (x, y) of a w x h image whose every pixel says where it came from.
RgbImage CoordinateImage(int width, int height) {
  RgbImage image{width, height, {}};
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      image.pixels.insert(image.pixels.end(),
                          {static_cast<uint8_t>(x), static_cast<uint8_t>(y), 7});
    }
  }
  return image;
}

RgbImage ConstantImage(int width, int height, uint8_t r, uint8_t g, uint8_t b) {
  RgbImage image{width, height, {}};
  for (int i = 0; i < width * height; ++i) image.pixels.insert(image.pixels.end(), {r, g, b});
  return image;
}

// Smooth colour ramps (JPEG keeps these close) plus, unless noise is 0, seeded
// noise of that amplitude so the entropy-coded data is most of the file.
RgbImage TestPhoto(int width, int height, int amplitude = 6) {
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> noise(-amplitude, amplitude);
  RgbImage image{width, height, {}};
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const int r = 40 + 160 * x / width + noise(rng);
      const int g = 60 + 120 * y / height + noise(rng);
      const int b = 128 + noise(rng);
      image.pixels.insert(image.pixels.end(), {static_cast<uint8_t>(r), static_cast<uint8_t>(g),
                                               static_cast<uint8_t>(b)});
    }
  }
  return image;
}

std::string Bytes(const RgbImage& image) {
  return std::string(image.pixels.begin(), image.pixels.end());
}

std::string MustEncodeJpeg(const RgbImage& image, int quality = 90) {
  absl::StatusOr<std::string> jpeg = EncodeJpeg(image, quality);
  EXPECT_TRUE(jpeg.ok()) << jpeg.status();
  return jpeg.ok() ? *jpeg : std::string();
}

// A JPEG with another pixel format (grayscale, CMYK), straight from TurboJPEG.
std::string TurboJpegEncode(const std::vector<uint8_t>& pixels, int width, int height,
                            int pixel_format, int subsampling) {
  std::unique_ptr<void, int (*)(void*)> handle(tjInitCompress(), tjDestroy);
  unsigned char* jpeg = nullptr;
  unsigned long jpeg_size = 0;  // NOLINT(runtime/int)
  const int rc = tjCompress2(handle.get(), pixels.data(), width, 0, height, pixel_format, &jpeg,
                             &jpeg_size, subsampling, 90, 0);
  std::string out = rc == 0 ? std::string(reinterpret_cast<char*>(jpeg), jpeg_size) : "";
  tjFree(jpeg);
  EXPECT_EQ(rc, 0) << tjGetErrorStr2(handle.get());
  return out;
}

// Offset of the first marker segment 0xFF `marker` in `jpeg`, walking the
// segments from SOI; npos if the scan starts first.
size_t FindSegment(const std::string& jpeg, uint8_t marker) {
  size_t at = 2;  // after SOI
  while (at + 4 <= jpeg.size() && static_cast<uint8_t>(jpeg[at]) == 0xFF) {
    const auto code = static_cast<uint8_t>(jpeg[at + 1]);
    if (code == marker) return at;
    if (code == 0xDA) break;  // SOS: entropy data follows
    const int length =
        (static_cast<uint8_t>(jpeg[at + 2]) << 8) | static_cast<uint8_t>(jpeg[at + 3]);
    at += 2 + length;
  }
  return std::string::npos;
}

int MaxAbsDiff(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b) {
  int worst = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i)
    worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

// PIL's convert("YCbCr") Y, written independently of the implementation.
int PilYcbcrLuma(int r, int g, int b) {
  const auto fixed = [](int v, double c) { return static_cast<int>(std::lround(v * c * 64)); };
  return (fixed(r, 0.299) + fixed(g, 0.587) + fixed(b, 0.114)) >> 6;
}

const ImageLimits kDefaultLimits;

// ---------------------------------------------------------------- RGB8

TEST(DecodeImage, Rgb8RoundTrip) {
  const RgbImage source = CoordinateImage(5, 4);
  absl::StatusOr<RgbImage> image =
      DecodeImage(ImageEncoding::kRgb8, Bytes(source), 5, 4, kDefaultLimits, "frame");
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->width, 5);
  EXPECT_EQ(image->height, 4);
  EXPECT_EQ(image->pixels, source.pixels);
}

TEST(DecodeImage, Rgb8WrongLengthNamesFieldAndExpectedBytes) {
  const std::string data(64 * 48 * 3 - 1, '\0');
  absl::StatusOr<RgbImage> image =
      DecodeImage(ImageEncoding::kRgb8, data, 64, 48, kDefaultLimits, "references[2]");
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      std::string(image.status().message()),
      AllOf(StartsWith("references[2]: "), HasSubstr("9215 bytes"), HasSubstr("expected 9216")));
}

TEST(DecodeImage, Rgb8EmptyDataGivesExpectedBytes) {
  absl::StatusOr<RgbImage> image =
      DecodeImage(ImageEncoding::kRgb8, "", 2, 2, kDefaultLimits, "frame");
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(image.status().message()),
              AllOf(StartsWith("frame: "), HasSubstr("expected 12")));
}

TEST(DecodeImage, Rgb8RejectsZeroAndNegativeDimensions) {
  for (const auto& [width, height] : std::vector<std::pair<int, int>>{{0, 3}, {3, 0}, {-1, -3}}) {
    absl::StatusOr<RgbImage> image =
        DecodeImage(ImageEncoding::kRgb8, "", width, height, kDefaultLimits, "frame");
    EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument) << width << "x" << height;
    EXPECT_THAT(std::string(image.status().message()),
                AllOf(StartsWith("frame: "), HasSubstr("> 0")));
  }
}

TEST(DecodeImage, Rgb8OverPixelLimitRejectedBeforeLengthCheck) {
  ImageLimits limits;
  limits.max_pixels = 100;
  // 2^30 x 2^30 would overflow a 32-bit product; the data is not even looked at.
  for (const auto& [width, height] :
       std::vector<std::pair<int, int>>{{11, 10}, {1 << 30, 1 << 30}}) {
    absl::StatusOr<RgbImage> image =
        DecodeImage(ImageEncoding::kRgb8, "abc", width, height, limits, "frame");
    EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(image.status().message()), HasSubstr("over the limit of 100 pixels"));
  }
  EXPECT_TRUE(
      DecodeImage(ImageEncoding::kRgb8, std::string(300, 'x'), 10, 10, limits, "frame").ok());
}

// Regression (issue 19): sizes from the request's uint32 fields were cast to
// int, so a width of 2^31 was reported as "got -2147483648x32".
TEST(DecodeImage, PrintsRequestSizesAsSentNeverNegative) {
  absl::StatusOr<RgbImage> image =
      DecodeImage(ImageEncoding::kRgb8, "", int64_t{2147483648}, 32, kDefaultLimits, "frame");
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(image.status().message(), HasSubstr("2147483648x32"));
  EXPECT_THAT(image.status().message(), ::testing::Not(HasSubstr("-")));
  image = DecodeImage(ImageEncoding::kRgb8, "", int64_t{4294967295}, int64_t{4294967295},
                      kDefaultLimits, "frame");
  EXPECT_THAT(image.status().message(),
              HasSubstr("4294967295x4294967295 = 18446744065119617025 pixels, over the limit"));
}

TEST(DecodeImage, DataOverMaxBytesRejectedForBothEncodings) {
  ImageLimits limits;
  limits.max_bytes = 11;
  const std::string twelve_bytes(12, '\0');
  for (ImageEncoding encoding : {ImageEncoding::kRgb8, ImageEncoding::kJpeg}) {
    absl::StatusOr<RgbImage> image = DecodeImage(encoding, twelve_bytes, 2, 2, limits, "frame");
    EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(std::string(image.status().message()),
                AllOf(StartsWith("frame: "), HasSubstr("over the limit of 11 bytes")));
  }
  limits.max_bytes = 12;
  EXPECT_TRUE(DecodeImage(ImageEncoding::kRgb8, twelve_bytes, 2, 2, limits, "frame").ok());
}

// ---------------------------------------------------------------- JPEG

TEST(DecodeImage, JpegRoundTripWithinTolerance) {
  const RgbImage source = TestPhoto(64, 48, /*amplitude=*/0);
  const std::string jpeg = MustEncodeJpeg(source, 95);
  ASSERT_THAT(jpeg, StartsWith("\xFF\xD8"));
  absl::StatusOr<RgbImage> image =
      DecodeImage(ImageEncoding::kJpeg, jpeg, 0, 0, kDefaultLimits, "frame");
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->width, 64);
  EXPECT_EQ(image->height, 48);
  ASSERT_EQ(image->pixels.size(), source.pixels.size());
  EXPECT_LE(MaxAbsDiff(image->pixels, source.pixels), 6);
  double total = 0;
  for (size_t i = 0; i < source.pixels.size(); ++i) {
    total += std::abs(image->pixels[i] - source.pixels[i]);
  }
  EXPECT_LT(total / source.pixels.size(), 1.0);
}

TEST(DecodeImage, JpegDimensionsMustMatchWhenGiven) {
  const std::string jpeg = MustEncodeJpeg(TestPhoto(16, 8));
  EXPECT_TRUE(DecodeImage(ImageEncoding::kJpeg, jpeg, 16, 8, kDefaultLimits, "frame").ok());
  EXPECT_TRUE(DecodeImage(ImageEncoding::kJpeg, jpeg, 16, 0, kDefaultLimits, "frame").ok());
  absl::StatusOr<RgbImage> image =
      DecodeImage(ImageEncoding::kJpeg, jpeg, 8, 16, kDefaultLimits, "frame");
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(image.status().message()),
              AllOf(StartsWith("frame: "), HasSubstr("16x8")));
}

TEST(DecodeImage, GrayscaleJpegDecodesToEqualChannels) {
  std::vector<uint8_t> gray(16 * 16);
  for (size_t i = 0; i < gray.size(); ++i) gray[i] = static_cast<uint8_t>(i);
  const std::string jpeg = TurboJpegEncode(gray, 16, 16, TJPF_GRAY, TJSAMP_GRAY);
  absl::StatusOr<RgbImage> image =
      DecodeImage(ImageEncoding::kJpeg, jpeg, 0, 0, kDefaultLimits, "frame");
  ASSERT_TRUE(image.ok()) << image.status();
  ASSERT_EQ(image->pixels.size(), size_t{16 * 16 * 3});
  std::vector<uint8_t> red;
  for (size_t i = 0; i < gray.size(); ++i) {
    EXPECT_EQ(image->pixels[3 * i], image->pixels[3 * i + 1]) << i;
    EXPECT_EQ(image->pixels[3 * i], image->pixels[3 * i + 2]) << i;
    red.push_back(image->pixels[3 * i]);
  }
  EXPECT_LE(MaxAbsDiff(red, gray), 6);
}

TEST(DecodeImage, CmykJpegRejected) {
  const std::vector<uint8_t> cmyk(8 * 8 * 4, 100);
  const std::string jpeg = TurboJpegEncode(cmyk, 8, 8, TJPF_CMYK, TJSAMP_444);
  absl::StatusOr<RgbImage> image =
      DecodeImage(ImageEncoding::kJpeg, jpeg, 0, 0, kDefaultLimits, "frame");
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(image.status().message()),
              AllOf(StartsWith("frame: "), HasSubstr("CMYK")));
}

TEST(DecodeImage, NotAJpegRejectedWithLibjpegCause) {
  absl::StatusOr<RgbImage> image = DecodeImage(ImageEncoding::kJpeg, "definitely not a jpeg", 0, 0,
                                               kDefaultLimits, "references[0]");
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(image.status().message()),
              AllOf(StartsWith("references[0]: "), HasSubstr("Not a JPEG file")));
}

TEST(DecodeImage, CorruptHeaderRejected) {
  std::string jpeg = MustEncodeJpeg(TestPhoto(32, 32));
  const size_t sof = FindSegment(jpeg, 0xC0);
  ASSERT_NE(sof, std::string::npos);
  jpeg[sof + 9] = 7;  // component count: 7 components cannot be RGB
  absl::StatusOr<RgbImage> image =
      DecodeImage(ImageEncoding::kJpeg, jpeg, 0, 0, kDefaultLimits, "frame");
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(image.status().message()), StartsWith("frame: invalid JPEG"));
}

TEST(DecodeImage, CorruptEntropyDataRejected) {
  std::string jpeg = MustEncodeJpeg(TestPhoto(64, 64));
  const size_t sos = FindSegment(jpeg, 0xDA);
  ASSERT_NE(sos, std::string::npos);
  // A restart marker where none was declared, in the middle of the scan.
  const size_t middle = sos + (jpeg.size() - sos) / 2;
  jpeg[middle] = '\xFF';
  jpeg[middle + 1] = '\xD3';
  absl::StatusOr<RgbImage> image =
      DecodeImage(ImageEncoding::kJpeg, jpeg, 0, 0, kDefaultLimits, "frame");
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(image.status().message()),
              AllOf(StartsWith("frame: invalid JPEG data: "), HasSubstr("Corrupt JPEG data")));
}

TEST(DecodeImage, TruncatedJpegRejectedNotHalfDecoded) {
  const std::string jpeg = MustEncodeJpeg(TestPhoto(64, 64));
  ASSERT_LT(FindSegment(jpeg, 0xDA), jpeg.size() / 2);  // the cut is in the scan
  absl::StatusOr<RgbImage> image =
      DecodeImage(ImageEncoding::kJpeg, absl::string_view(jpeg).substr(0, jpeg.size() / 2), 0, 0,
                  kDefaultLimits, "frame");
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(image.status().message()),
              AllOf(StartsWith("frame: "), HasSubstr("Premature end of JPEG file")));
}

TEST(DecodeImage, HugeDeclaredJpegRejectedFromHeader) {
  std::string jpeg = MustEncodeJpeg(TestPhoto(16, 16));
  const size_t sof = FindSegment(jpeg, 0xC0);
  ASSERT_NE(sof, std::string::npos);
  // SOF0: FF C0, length(2), precision(1), height(2), width(2). 60000 = 0xEA60.
  jpeg[sof + 5] = '\xEA';
  jpeg[sof + 6] = '\x60';
  jpeg[sof + 7] = '\xEA';
  jpeg[sof + 8] = '\x60';
  // The scan covers 16x16 only: had the decoder gone past the header it would
  // fail with "Premature end" (after allocating 10 GB), not with the limit.
  absl::StatusOr<RgbImage> image =
      DecodeImage(ImageEncoding::kJpeg, jpeg, 0, 0, kDefaultLimits, "references[1]");
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(image.status().message()),
              AllOf(StartsWith("references[1]: "), HasSubstr("60000x60000"),
                    HasSubstr("over the limit of 16777216 pixels")));
}

TEST(DecodeImage, JpegPixelLimitIsInclusive) {
  const std::string jpeg = MustEncodeJpeg(TestPhoto(16, 16));
  ImageLimits limits;
  limits.max_pixels = 256;
  EXPECT_TRUE(DecodeImage(ImageEncoding::kJpeg, jpeg, 0, 0, limits, "frame").ok());
  limits.max_pixels = 255;
  EXPECT_EQ(DecodeImage(ImageEncoding::kJpeg, jpeg, 0, 0, limits, "frame").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(DecodeImage, EmptyJpegRejected) {
  absl::StatusOr<RgbImage> image =
      DecodeImage(ImageEncoding::kJpeg, "", 0, 0, kDefaultLimits, "frame");
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(image.status().message()),
              AllOf(StartsWith("frame: "), HasSubstr("empty")));
}

TEST(DecodeImage, TablesOnlyJpegHoldsNoImage) {
  // SOI + the quantization and Huffman tables + EOI: valid JPEG, no frame.
  const std::string jpeg = MustEncodeJpeg(TestPhoto(16, 16));
  const size_t sof = FindSegment(jpeg, 0xC0);
  ASSERT_NE(sof, std::string::npos);
  std::string tables_only = jpeg.substr(0, sof);
  const size_t dht = FindSegment(jpeg, 0xC4);
  ASSERT_NE(dht, std::string::npos);
  ASSERT_GT(dht, sof);
  const size_t sos = FindSegment(jpeg, 0xDA);
  tables_only += jpeg.substr(dht, sos - dht);
  tables_only += "\xFF\xD9";
  absl::StatusOr<RgbImage> image =
      DecodeImage(ImageEncoding::kJpeg, tables_only, 0, 0, kDefaultLimits, "frame");
  EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(image.status().message(), "frame: JPEG data holds no image");
}

// A small deterministic stand-in for the fuzzer: mutated and cut JPEGs either
// fail cleanly or decode to a consistent image (ASan/UBSan watch the rest).
TEST(DecodeImage, SurvivesMutatedJpegs) {
  const std::string jpeg = MustEncodeJpeg(TestPhoto(24, 24));
  std::mt19937 rng(7);
  std::uniform_int_distribution<size_t> position(0, jpeg.size() - 1);
  std::uniform_int_distribution<int> byte(0, 255);
  int failures = 0;
  for (int trial = 0; trial < 300; ++trial) {
    std::string mutated = jpeg;
    for (int flips = 1 + trial % 4; flips > 0; --flips) {
      mutated[position(rng)] = static_cast<char>(byte(rng));
    }
    if (trial % 5 == 0) mutated.resize(position(rng));
    absl::StatusOr<RgbImage> image =
        DecodeImage(ImageEncoding::kJpeg, mutated, 0, 0, kDefaultLimits, "frame");
    if (!image.ok()) {
      ++failures;
      EXPECT_EQ(image.status().code(), absl::StatusCode::kInvalidArgument);
      continue;
    }
    EXPECT_EQ(image->pixels.size(), static_cast<size_t>(image->width) * image->height * 3);
  }
  EXPECT_GT(failures, 0);
}

// ---------------------------------------------------------------- EncodeJpeg

TEST(EncodeJpeg, UsesNoChromaSubsampling) {
  const std::string jpeg = MustEncodeJpeg(TestPhoto(16, 16));
  std::unique_ptr<void, int (*)(void*)> handle(tjInitDecompress(), tjDestroy);
  int width = 0, height = 0, subsampling = -1, colorspace = -1;
  ASSERT_EQ(tjDecompressHeader3(handle.get(), reinterpret_cast<const unsigned char*>(jpeg.data()),
                                jpeg.size(), &width, &height, &subsampling, &colorspace),
            0);
  EXPECT_EQ(subsampling, TJSAMP_444);
}

TEST(EncodeJpeg, RejectsQualityOutOfRange) {
  const RgbImage image = TestPhoto(8, 8);
  for (int quality : {0, 101, -5}) {
    absl::StatusOr<std::string> jpeg = EncodeJpeg(image, quality);
    EXPECT_EQ(jpeg.status().code(), absl::StatusCode::kInvalidArgument) << quality;
    EXPECT_THAT(std::string(jpeg.status().message()), HasSubstr("[1, 100]"));
  }
  EXPECT_TRUE(EncodeJpeg(image, 1).ok());
  EXPECT_TRUE(EncodeJpeg(image, 100).ok());
}

TEST(EncodeJpeg, RejectsInconsistentImage) {
  RgbImage image = TestPhoto(8, 8);
  image.pixels.pop_back();
  absl::StatusOr<std::string> jpeg = EncodeJpeg(image, 90);
  EXPECT_EQ(jpeg.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(jpeg.status().message()), HasSubstr("expected 192"));
  EXPECT_EQ(EncodeJpeg(RgbImage{}, 90).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EncodeJpeg(RgbImage{70000, 1, {}}, 90).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------- CenterCropSquare

// The (x, y) each pixel of a CoordinateImage crop came from.
std::vector<std::pair<int, int>> Origins(const RgbImage& image) {
  std::vector<std::pair<int, int>> origins;
  for (size_t i = 0; i + 2 < image.pixels.size(); i += 3) {
    origins.emplace_back(image.pixels[i], image.pixels[i + 1]);
  }
  return origins;
}

TEST(CenterCropSquare, WideImageKeepsMiddleColumns) {
  const RgbImage square = CenterCropSquare(CoordinateImage(5, 3));
  EXPECT_EQ(square.width, 3);
  EXPECT_EQ(square.height, 3);
  EXPECT_THAT(Origins(square), ElementsAre(std::pair(1, 0), std::pair(2, 0), std::pair(3, 0),
                                           std::pair(1, 1), std::pair(2, 1), std::pair(3, 1),
                                           std::pair(1, 2), std::pair(2, 2), std::pair(3, 2)));
}

TEST(CenterCropSquare, TallImageKeepsMiddleRows) {
  const RgbImage square = CenterCropSquare(CoordinateImage(3, 5));
  EXPECT_EQ(square.width, 3);
  EXPECT_EQ(square.height, 3);
  EXPECT_THAT(Origins(square), ElementsAre(std::pair(0, 1), std::pair(1, 1), std::pair(2, 1),
                                           std::pair(0, 2), std::pair(1, 2), std::pair(2, 2),
                                           std::pair(0, 3), std::pair(1, 3), std::pair(2, 3)));
}

TEST(CenterCropSquare, OddExcessDropsTheExtraOnTheRightAndBottom) {
  // Excess 3: one column off the left, two off the right.
  EXPECT_THAT(Origins(CenterCropSquare(CoordinateImage(5, 2))),
              ElementsAre(std::pair(1, 0), std::pair(2, 0), std::pair(1, 1), std::pair(2, 1)));
  EXPECT_THAT(Origins(CenterCropSquare(CoordinateImage(2, 5))),
              ElementsAre(std::pair(0, 1), std::pair(1, 1), std::pair(0, 2), std::pair(1, 2)));
}

TEST(CenterCropSquare, SquareIsUnchangedAndMalformedIsEmpty) {
  const RgbImage source = CoordinateImage(4, 4);
  EXPECT_EQ(CenterCropSquare(source).pixels, source.pixels);
  RgbImage malformed = CoordinateImage(4, 3);
  malformed.pixels.pop_back();
  const RgbImage cropped = CenterCropSquare(malformed);
  EXPECT_EQ(cropped.width, 0);
  EXPECT_TRUE(cropped.pixels.empty());
}

// ---------------------------------------------------------------- ResizeSquare

TEST(ResizeSquare, SameSizeIsExactCopy) {
  const RgbImage source = TestPhoto(9, 9);
  const RgbImage resized = ResizeSquare(source, 9);
  EXPECT_EQ(resized.width, 9);
  EXPECT_EQ(resized.height, 9);
  EXPECT_EQ(resized.pixels, source.pixels);
}

TEST(ResizeSquare, ConstantImageStaysConstant) {
  for (const auto& [from, to] :
       std::vector<std::pair<int, int>>{{7, 3}, {3, 7}, {128, 37}, {5, 128}, {300, 128}}) {
    const RgbImage resized = ResizeSquare(ConstantImage(from, from, 13, 200, 255), to);
    ASSERT_EQ(resized.width, to);
    ASSERT_EQ(resized.height, to);
    EXPECT_EQ(resized.pixels, ConstantImage(to, to, 13, 200, 255).pixels) << from << "->" << to;
  }
}

TEST(ResizeSquare, HalvingACheckerAveragesEachBlock) {
  RgbImage checker{4, 4, {}};
  for (int y = 0; y < 4; ++y) {
    for (int x = 0; x < 4; ++x) {
      const uint8_t v = (x + y) % 2 == 0 ? 0 : 255;
      checker.pixels.insert(checker.pixels.end(), {v, v, v});
    }
  }
  const RgbImage resized = ResizeSquare(checker, 2);
  ASSERT_EQ(resized.pixels.size(), size_t{2 * 2 * 3});
  EXPECT_THAT(resized.pixels, Each(128));  // 127.5, rounded half up
}

TEST(ResizeSquare, FractionalShrinkWeighsPartialCoverage) {
  // Columns 0, 90, 180 onto 2 columns: [0, 1.5) and [1.5, 3).
  RgbImage source{3, 3, {}};
  for (int y = 0; y < 3; ++y) {
    for (uint8_t v : {0, 90, 180}) source.pixels.insert(source.pixels.end(), {v, v, v});
  }
  const RgbImage resized = ResizeSquare(source, 2);
  EXPECT_THAT(resized.pixels, ElementsAre(30, 30, 30, 150, 150, 150, 30, 30, 30, 150, 150, 150));
}

TEST(ResizeSquare, EnlargeIsBilinearWithHalfPixelCentres) {
  RgbImage source{2, 2, {0, 0, 0, 100, 100, 100, 0, 0, 0, 100, 100, 100}};
  const RgbImage resized = ResizeSquare(source, 4);
  ASSERT_EQ(resized.pixels.size(), size_t{4 * 4 * 3});
  for (int y = 0; y < 4; ++y) {
    std::vector<uint8_t> row_red;
    for (int x = 0; x < 4; ++x) row_red.push_back(resized.pixels[(y * 4 + x) * 3]);
    EXPECT_THAT(row_red, ElementsAre(0, 25, 75, 100)) << "row " << y;
  }
}

TEST(ResizeSquare, InvalidInputsGiveEmptyImage) {
  EXPECT_TRUE(ResizeSquare(TestPhoto(4, 4), 0).pixels.empty());
  EXPECT_TRUE(ResizeSquare(RgbImage{4, 4, {1, 2, 3}}, 2).pixels.empty());
}

// ---------------------------------------------------------------- ToLumaFloat

TEST(ToLumaFloat, KnownColorsMatchPilYcbcr) {
  const RgbImage image{
      6, 1, {255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 200, 30, 255, 255, 255, 0, 0, 0}};
  EXPECT_THAT(ToLumaFloat(image),
              ElementsAre(FloatEq(76 / 255.0f), FloatEq(149 / 255.0f), FloatEq(29 / 255.0f),
                          FloatEq(123 / 255.0f), FloatEq(1.0f), FloatEq(0.0f)));
}

TEST(ToLumaFloat, TruncatesWhereConvertLRounds) {
  // convert("L") gives (0*19595 + 255*38470 + 0*7471 + 0x8000) >> 16 = 150 for
  // pure green; the model was trained on convert("YCbCr")'s 149.
  EXPECT_EQ((255 * 38470 + 0x8000) >> 16, 150);
  EXPECT_THAT(ToLumaFloat(RgbImage{1, 1, {0, 255, 0}}), ElementsAre(FloatEq(149 / 255.0f)));
}

TEST(ToLumaFloat, MatchesPilFormulaOverAColorGrid) {
  RgbImage image{0, 1, {}};
  std::vector<float> expected;
  for (int r = 0; r < 256; r += 15) {
    for (int g = 0; g < 256; g += 17) {
      for (int b = 0; b < 256; b += 5) {
        image.pixels.insert(image.pixels.end(), {static_cast<uint8_t>(r), static_cast<uint8_t>(g),
                                                 static_cast<uint8_t>(b)});
        expected.push_back(static_cast<float>(PilYcbcrLuma(r, g, b)) / 255.0f);
        ++image.width;
      }
    }
  }
  EXPECT_EQ(ToLumaFloat(image), expected);  // bit-exact
}

// ---------------------------------------------------------------- DecodeReferenceLuma

TEST(DecodeReferenceLuma, CropsResizesAndConverts) {
  // 6x4 whose centre 4x4 is grey 100 and whose side columns are white.
  RgbImage source{6, 4, {}};
  for (int y = 0; y < 4; ++y) {
    for (int x = 0; x < 6; ++x) {
      const uint8_t v = (x == 0 || x == 5) ? 255 : 100;
      source.pixels.insert(source.pixels.end(), {v, v, v});
    }
  }
  absl::StatusOr<std::vector<float>> luma = DecodeReferenceLuma(
      ImageEncoding::kRgb8, Bytes(source), 6, 4, 2, kDefaultLimits, "references[0]");
  ASSERT_TRUE(luma.ok()) << luma.status();
  EXPECT_THAT(*luma, ElementsAre(FloatEq(100 / 255.0f), FloatEq(100 / 255.0f),
                                 FloatEq(100 / 255.0f), FloatEq(100 / 255.0f)));
}

TEST(DecodeReferenceLuma, PassesDecodeErrorsThrough) {
  absl::StatusOr<std::vector<float>> luma = DecodeReferenceLuma(
      ImageEncoding::kJpeg, "garbage", 0, 0, 128, kDefaultLimits, "references[3]");
  EXPECT_EQ(luma.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(luma.status().message()), StartsWith("references[3]: "));
}

TEST(DecodeReferenceLuma, RejectsNonPositiveSize) {
  const RgbImage source = TestPhoto(4, 4);
  absl::StatusOr<std::vector<float>> luma = DecodeReferenceLuma(
      ImageEncoding::kRgb8, Bytes(source), 4, 4, 0, kDefaultLimits, "references[0]");
  EXPECT_EQ(luma.status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fsrst
