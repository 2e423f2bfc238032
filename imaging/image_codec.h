#ifndef FSRST_IMAGING_IMAGE_CODEC_H_
#define FSRST_IMAGING_IMAGE_CODEC_H_

// Request images in and out: JPEG (libjpeg-turbo's TurboJPEG API) and raw
// interleaved RGB8, plus the reference normalisation the model was trained
// with (centre square crop, resize, BT.601 luma).
//
// Every function is thread-safe: none keeps state between calls (each JPEG
// call owns its TurboJPEG handle). Results are owned by the caller.
//
// Decoding is meant for untrusted bytes: it validates sizes before it
// allocates, rejects anything libjpeg reports (warnings included) rather than
// returning a partly decoded image, and never aborts the process.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fsrst {

// Interleaved RGB8, row-major, top row first: pixels.size() == width*height*3.
struct RgbImage {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;
};

enum class ImageEncoding { kJpeg, kRgb8 };

// What one decoded image may cost; both are checked before any allocation.
struct ImageLimits {
  int64_t max_pixels = 4096 * 4096;  // width*height, from the RGB8 size or the JPEG header
  int64_t max_bytes = 16 << 20;      // encoded size of one image, either encoding
};

// Decodes one image. `field` names the request field in error messages, e.g.
// "frame" or "references[2]"; every error is INVALID_ARGUMENT and its message
// starts with "<field>: ".
//
// Both encodings: data longer than limits.max_bytes, or an image of more than
// limits.max_pixels pixels, is rejected.
// kRgb8: width and height must be > 0 and data.size() == width*height*3 (the
// message gives the expected byte count).
// kJpeg: the pixel limit is checked from the header, before anything is
// allocated or decoded. width/height are ignored when 0; when nonzero they
// must equal the header's. Grayscale and colour JPEGs both decode to RGB;
// CMYK/YCCK JPEGs are rejected. Corrupt, truncated or otherwise suspect data
// (anything libjpeg warns about, and progressive JPEGs with an unreasonable
// number of scans) is rejected with libjpeg's message as the cause.
// width and height are int64_t so that a request's uint32 sizes arrive, and
// are printed in errors, as sent (never wrapped to negative values).
absl::StatusOr<RgbImage> DecodeImage(ImageEncoding encoding, absl::string_view data,
                                     int64_t width, int64_t height, const ImageLimits& limits,
                                     absl::string_view field);

// Encodes `image` as a baseline JPEG with 4:4:4 chroma (no subsampling).
// INVALID_ARGUMENT if quality is outside [1, 100], a dimension is outside
// [1, 65500] (JPEG's own limit) or pixels.size() != width*height*3; INTERNAL if
// libjpeg fails anyway.
absl::StatusOr<std::string> EncodeJpeg(const RgbImage& image, int quality);

// The largest centred square of `image`, side min(width, height), taken from
// offset ((width - side) / 2, (height - side) / 2): when the excess is odd, the
// extra row/column is dropped from the right/bottom.
// An image whose pixels do not match width*height*3 (or with a dimension
// <= 0) yields an empty image.
RgbImage CenterCropSquare(const RgbImage& image);

// `square` resampled to size x size, each axis on its own (a non-square input
// is stretched):
//   shrinking: area averaging, each output pixel the mean of the source area
//              it covers (fractional coverage at its edges), so no aliasing;
//   enlarging: bilinear with half-pixel centres (OpenCV INTER_LINEAR,
//              PyTorch align_corners=False), edges clamped.
// Values are rounded to nearest, halves up. An input already size x size is
// copied exactly. size <= 0, or an image as rejected by CenterCropSquare,
// yields an empty image.
RgbImage ResizeSquare(const RgbImage& square, int size);

// BT.601 luma, row-major width*height, each value Y/255 in [0, 1], where Y is
// exactly the Y channel of PIL's Image.convert("YCbCr") (the luma the model's
// references were trained on, model/fsrst/face_data.py):
//   Y = (YR[r] + YG[g] + YB[b]) >> 6,  YR[v] = round(v * 0.299 * 64),
//   YG[v] = round(v * 0.587 * 64),     YB[v] = round(v * 0.114 * 64).
// This truncates, so it is up to 1 below convert("L")'s rounded
// (r*19595 + g*38470 + b*7471 + 0x8000) >> 16; e.g. (10, 200, 30) -> 123, not 124.
// An image as rejected by CenterCropSquare yields an empty vector.
std::vector<float> ToLumaFloat(const RgbImage& image);

// The model's reference input from one request image: DecodeImage, then
// CenterCropSquare, ResizeSquare(size) and ToLumaFloat; size*size values.
// Errors are DecodeImage's; size <= 0 is INVALID_ARGUMENT.
absl::StatusOr<std::vector<float>> DecodeReferenceLuma(ImageEncoding encoding,
                                                       absl::string_view data, int64_t width,
                                                       int64_t height, int size,
                                                       const ImageLimits& limits,
                                                       absl::string_view field);

}  // namespace fsrst

#endif  // FSRST_IMAGING_IMAGE_CODEC_H_
