// libFuzzer target for imaging/image_codec: untrusted request bytes through
// DecodeImage and then everything the server does with a decoded image.
//
// Input layout (the seed corpus in corpus/image_codec/ follows it, written by
// make_corpus.py):
//   byte 0      bit 0: encoding (0 = JPEG, 1 = RGB8)
//   bytes 1..2  width, little-endian uint16 (0 = "any" for JPEG)
//   bytes 3..4  height, little-endian uint16
//   bytes 5..   the image data
// The dimensions are uint16 so that RGB8 inputs stay small enough to be
// mutated into valid images; negative and large dimensions are covered by
// the unit tests.
//
// Crashes, sanitizer reports and broken invariants (checked below, trap on
// failure) are findings. Errors returned as Status are the expected outcome
// for most inputs.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "imaging/image_codec.h"

namespace {

constexpr size_t kHeaderBytes = 5;
// The model's sizes: frames are 32 square, references are resized to 128.
constexpr int kLrSize = 32;
constexpr int kReferenceSize = 128;

void Check(bool condition) {
  if (!condition) __builtin_trap();
}

int ReadUint16(const uint8_t* bytes) { return bytes[0] | (bytes[1] << 8); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < kHeaderBytes) return 0;
  const auto encoding = (data[0] & 1) != 0 ? fsrst::ImageEncoding::kRgb8 : fsrst::ImageEncoding::kJpeg;
  const int width = ReadUint16(data + 1);
  const int height = ReadUint16(data + 3);
  const absl::string_view payload(reinterpret_cast<const char*>(data + kHeaderBytes),
                                  size - kHeaderBytes);
  // The server's defaults (server/fsrst_server.h).
  const fsrst::ImageLimits limits;

  absl::StatusOr<fsrst::RgbImage> image =
      fsrst::DecodeImage(encoding, payload, width, height, limits, "frame");
  if (!image.ok()) {
    // Every error must name the field (the header's contract).
    Check(image.status().code() == absl::StatusCode::kInvalidArgument);
    Check(absl::StartsWith(image.status().message(), "frame: "));
    return 0;
  }
  Check(image->width > 0 && image->height > 0);
  Check(int64_t{image->width} * image->height <= limits.max_pixels);
  Check(image->pixels.size() == static_cast<size_t>(image->width) * image->height * 3);
  if (width != 0) Check(image->width == width);
  if (height != 0) Check(image->height == height);

  // The reference path: crop, resize, luma.
  const fsrst::RgbImage square = fsrst::CenterCropSquare(*image);
  const int side = image->width < image->height ? image->width : image->height;
  Check(square.width == side && square.height == side);
  for (int size : {kLrSize, kReferenceSize}) {
    const fsrst::RgbImage resized = fsrst::ResizeSquare(square, size);
    Check(resized.width == size && resized.height == size);
    Check(resized.pixels.size() == static_cast<size_t>(size) * size * 3);
    const std::vector<float> luma = fsrst::ToLumaFloat(resized);
    Check(luma.size() == static_cast<size_t>(size) * size);
    for (float y : luma) Check(y >= 0.0f && y <= 1.0f);
  }

  // The response path: what decodes must re-encode and decode to the same size.
  if (int64_t{image->width} * image->height <= 256 * 256) {
    absl::StatusOr<std::string> jpeg = fsrst::EncodeJpeg(*image, 90);
    Check(jpeg.ok());
    absl::StatusOr<fsrst::RgbImage> again = fsrst::DecodeImage(
        fsrst::ImageEncoding::kJpeg, *jpeg, image->width, image->height, limits, "again");
    Check(again.ok());
  }
  return 0;
}
