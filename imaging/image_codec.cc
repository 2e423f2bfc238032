#include "imaging/image_codec.h"

#include <turbojpeg.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <limits>
#include <memory>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace fsrst {
namespace {

constexpr int kJpegMaxDimension = 65500;  // libjpeg's JPEG_MAX_DIMENSION

struct TjHandleDeleter {
  void operator()(void* handle) const { tjDestroy(handle); }
};
using TjHandle = std::unique_ptr<void, TjHandleDeleter>;

struct TjBufferDeleter {
  void operator()(unsigned char* buffer) const { tjFree(buffer); }
};
using TjBuffer = std::unique_ptr<unsigned char, TjBufferDeleter>;

// The TurboJPEG error of the call that just failed on `handle`. libjpeg's own
// messages land in a thread-local buffer that tjGetErrorStr2 returns.
std::string TjError(void* handle) {
  const char* message = tjGetErrorStr2(handle);
  return message != nullptr ? message : "unknown TurboJPEG error";
}

absl::Status InvalidImage(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

// width*height against the limit, without overflow for any int64 sides > 0.
absl::Status CheckPixelLimit(int64_t width, int64_t height, const ImageLimits& limits,
                             absl::string_view what, absl::string_view field) {
  if (width > limits.max_pixels / height || width > std::numeric_limits<int>::max() ||
      height > std::numeric_limits<int>::max() ||
      width * height > std::numeric_limits<int64_t>::max() / 3) {
    // Request sizes are uint32, so their product fits a uint64.
    const bool fits = width <= UINT32_MAX && height <= UINT32_MAX;
    const std::string pixels =
        fits ? absl::StrCat(" = ", static_cast<uint64_t>(width) * static_cast<uint64_t>(height))
             : "";
    return InvalidImage(field, absl::StrCat(what, " is ", width, "x", height, pixels,
                                            " pixels, over the limit of ", limits.max_pixels,
                                            " pixels"));
  }
  return absl::OkStatus();
}

bool IsWellFormed(const RgbImage& image) {
  return image.width > 0 && image.height > 0 &&
         image.pixels.size() ==
             static_cast<size_t>(image.width) * static_cast<size_t>(image.height) * 3;
}

absl::StatusOr<RgbImage> DecodeRgb8(absl::string_view data, int64_t width, int64_t height,
                                    const ImageLimits& limits, absl::string_view field) {
  if (width <= 0 || height <= 0) {
    return InvalidImage(field,
                        absl::StrCat("RGB8 needs width and height > 0, got ", width, "x", height));
  }
  FSRST_RETURN_IF_ERROR(CheckPixelLimit(width, height, limits, "RGB8 image", field));
  const int64_t expected_bytes = width * height * 3;
  if (static_cast<int64_t>(data.size()) != expected_bytes) {
    return InvalidImage(field, absl::StrCat("RGB8 data is ", data.size(), " bytes, expected ",
                                            expected_bytes, " (", width, "x", height, "x3)"));
  }
  RgbImage image;
  image.width = static_cast<int>(width);  // within the pixel limit, so an int
  image.height = static_cast<int>(height);
  image.pixels.assign(data.begin(), data.end());
  return image;
}

absl::StatusOr<RgbImage> DecodeJpeg(absl::string_view data, int64_t width, int64_t height,
                                    const ImageLimits& limits, absl::string_view field) {
  if (data.empty()) return InvalidImage(field, "empty JPEG data");
  TjHandle handle(tjInitDecompress());
  if (handle == nullptr) {
    return absl::InternalError(absl::StrCat("tjInitDecompress: ", TjError(nullptr)));
  }
  const auto* jpeg = reinterpret_cast<const unsigned char*>(data.data());
  const auto jpeg_size = static_cast<unsigned long>(data.size());  // NOLINT(runtime/int)

  // A tables-only datastream "succeeds" without touching the outputs, hence
  // the zeros and the check below.
  int jpeg_width = 0;
  int jpeg_height = 0;
  int subsampling = -1;
  int colorspace = -1;
  if (tjDecompressHeader3(handle.get(), jpeg, jpeg_size, &jpeg_width, &jpeg_height, &subsampling,
                          &colorspace) != 0) {
    return InvalidImage(field, absl::StrCat("invalid JPEG header: ", TjError(handle.get())));
  }
  if (jpeg_width <= 0 || jpeg_height <= 0) {
    return InvalidImage(field, "JPEG data holds no image");
  }
  FSRST_RETURN_IF_ERROR(CheckPixelLimit(jpeg_width, jpeg_height, limits, "JPEG", field));
  if ((width != 0 && width != jpeg_width) || (height != 0 && height != jpeg_height)) {
    return InvalidImage(
        field, absl::StrCat("width x height ", width, "x", height, " does not match the JPEG's ",
                            jpeg_width, "x", jpeg_height, " (0 means any)"));
  }
  if (colorspace == TJCS_CMYK || colorspace == TJCS_YCCK) {
    return InvalidImage(field, "CMYK/YCCK JPEGs are not supported; send RGB or grayscale");
  }

  RgbImage image;
  image.width = jpeg_width;
  image.height = jpeg_height;
  image.pixels.resize(static_cast<size_t>(jpeg_width) * static_cast<size_t>(jpeg_height) * 3);
  // STOPONWARNING: libjpeg only warns about truncated or corrupt entropy data
  // and would otherwise hand back a partly grey image. LIMITSCANS: caps the
  // scans of a progressive JPEG, which can otherwise burn CPU without bound.
  constexpr int kFlags = TJFLAG_ACCURATEDCT | TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS;
  if (tjDecompress2(handle.get(), jpeg, jpeg_size, image.pixels.data(), jpeg_width, /*pitch=*/0,
                    jpeg_height, TJPF_RGB, kFlags) != 0) {
    return InvalidImage(field, absl::StrCat("invalid JPEG data: ", TjError(handle.get())));
  }
  return image;
}

// How one output index of a resampled axis reads the source axis.
struct Taps {
  int first = 0;               // first source index read
  std::vector<float> weights;  // for first, first+1, ...; they sum to 1
};

std::vector<Taps> AreaTaps(int src, int dst) {
  std::vector<Taps> taps(dst);
  const double scale = static_cast<double>(src) / dst;
  for (int i = 0; i < dst; ++i) {
    const double begin = i * scale;
    const double end = std::min((i + 1) * scale, static_cast<double>(src));
    const int first = static_cast<int>(std::floor(begin));
    const int last = std::min(static_cast<int>(std::ceil(end)), src);  // exclusive
    taps[i].first = first;
    for (int j = first; j < last; ++j) {
      const double covered = std::min(end, j + 1.0) - std::max(begin, static_cast<double>(j));
      taps[i].weights.push_back(static_cast<float>(std::max(covered, 0.0) / scale));
    }
  }
  return taps;
}

std::vector<Taps> BilinearTaps(int src, int dst) {
  std::vector<Taps> taps(dst);
  const double scale = static_cast<double>(src) / dst;
  for (int i = 0; i < dst; ++i) {
    const double x = std::clamp((i + 0.5) * scale - 0.5, 0.0, static_cast<double>(src - 1));
    const int x0 = static_cast<int>(std::floor(x));
    const float frac = static_cast<float>(x - x0);
    taps[i].first = x0;
    taps[i].weights = {1.0f - frac};
    if (x0 + 1 < src) taps[i].weights.push_back(frac);
  }
  return taps;
}

std::vector<Taps> ResampleTaps(int src, int dst) {
  return dst < src ? AreaTaps(src, dst) : BilinearTaps(src, dst);
}

uint8_t RoundToByte(float value) {
  return static_cast<uint8_t>(std::clamp(std::floor(value + 0.5f), 0.0f, 255.0f));
}

// PIL's RGB -> YCbCr luma tables (libImaging/ConvertYCbCr.c): v * coefficient
// in 6-bit fixed point, rounded. No entry is a tie, so rounding is unambiguous.
constexpr int kLumaScaleBits = 6;
constexpr std::array<int, 256> LumaTable(int coefficient_per_mille) {
  std::array<int, 256> table{};
  for (int v = 0; v < 256; ++v) {
    table[v] = (v * coefficient_per_mille * (1 << kLumaScaleBits) + 500) / 1000;
  }
  return table;
}
constexpr std::array<int, 256> kLumaR = LumaTable(299);
constexpr std::array<int, 256> kLumaG = LumaTable(587);
constexpr std::array<int, 256> kLumaB = LumaTable(114);
static_assert(kLumaR[255] == 4880 && kLumaG[255] == 9580 && kLumaB[255] == 1860,
              "tables must match PIL's Y_R, Y_G, Y_B");

}  // namespace

absl::StatusOr<RgbImage> DecodeImage(ImageEncoding encoding, absl::string_view data,
                                     int64_t width, int64_t height, const ImageLimits& limits,
                                     absl::string_view field) {
  if (static_cast<int64_t>(data.size()) > limits.max_bytes) {
    return InvalidImage(field,
                        absl::StrCat("image data is ", data.size(), " bytes, over the limit of ",
                                     limits.max_bytes, " bytes"));
  }
  switch (encoding) {
    case ImageEncoding::kRgb8:
      return DecodeRgb8(data, width, height, limits, field);
    case ImageEncoding::kJpeg:
      return DecodeJpeg(data, width, height, limits, field);
  }
  return InvalidImage(field, absl::StrCat("unknown encoding ", static_cast<int>(encoding)));
}

absl::StatusOr<std::string> EncodeJpeg(const RgbImage& image, int quality) {
  if (quality < 1 || quality > 100) {
    return absl::InvalidArgumentError(
        absl::StrCat("JPEG quality must be in [1, 100], got ", quality));
  }
  if (image.width <= 0 || image.height <= 0 || image.width > kJpegMaxDimension ||
      image.height > kJpegMaxDimension) {
    return absl::InvalidArgumentError(absl::StrCat("cannot encode a ", image.width, "x",
                                                   image.height, " JPEG; each side must be in [1, ",
                                                   kJpegMaxDimension, "]"));
  }
  if (!IsWellFormed(image)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "image holds ", image.pixels.size(), " bytes, expected ",
        int64_t{image.width} * image.height * 3, " (", image.width, "x", image.height, "x3)"));
  }
  TjHandle handle(tjInitCompress());
  if (handle == nullptr) {
    return absl::InternalError(absl::StrCat("tjInitCompress: ", TjError(nullptr)));
  }
  unsigned char* jpeg = nullptr;
  unsigned long jpeg_size = 0;  // NOLINT(runtime/int): TurboJPEG's type
  const int rc =
      tjCompress2(handle.get(), image.pixels.data(), image.width, /*pitch=*/0, image.height,
                  TJPF_RGB, &jpeg, &jpeg_size, TJSAMP_444, quality, TJFLAG_ACCURATEDCT);
  TjBuffer owned(jpeg);  // TurboJPEG may have allocated even when it failed
  if (rc != 0) {
    return absl::InternalError(absl::StrCat("tjCompress2: ", TjError(handle.get())));
  }
  return std::string(reinterpret_cast<const char*>(owned.get()), jpeg_size);
}

RgbImage CenterCropSquare(const RgbImage& image) {
  if (!IsWellFormed(image)) return RgbImage();
  const int side = std::min(image.width, image.height);
  const int left = (image.width - side) / 2;
  const int top = (image.height - side) / 2;
  RgbImage square;
  square.width = side;
  square.height = side;
  square.pixels.resize(static_cast<size_t>(side) * side * 3);
  const size_t src_stride = static_cast<size_t>(image.width) * 3;
  const size_t dst_stride = static_cast<size_t>(side) * 3;
  for (int y = 0; y < side; ++y) {
    const uint8_t* src = image.pixels.data() + (top + y) * src_stride + size_t{3} * left;
    std::copy(src, src + dst_stride, square.pixels.data() + y * dst_stride);
  }
  return square;
}

RgbImage ResizeSquare(const RgbImage& square, int size) {
  if (size <= 0 || !IsWellFormed(square)) return RgbImage();
  if (square.width == size && square.height == size) return square;

  const std::vector<Taps> x_taps = ResampleTaps(square.width, size);
  const std::vector<Taps> y_taps = ResampleTaps(square.height, size);
  const size_t src_stride = static_cast<size_t>(square.width) * 3;
  const size_t dst_stride = static_cast<size_t>(size) * 3;

  // Horizontal pass, every source row -> size columns, kept in float so the
  // result is rounded once.
  std::vector<float> rows(static_cast<size_t>(square.height) * dst_stride, 0.0f);
  for (int y = 0; y < square.height; ++y) {
    const uint8_t* src = square.pixels.data() + y * src_stride;
    float* dst = rows.data() + y * dst_stride;
    for (int x = 0; x < size; ++x) {
      const Taps& taps = x_taps[x];
      for (size_t k = 0; k < taps.weights.size(); ++k) {
        const uint8_t* pixel = src + size_t{3} * (taps.first + k);
        for (int c = 0; c < 3; ++c) dst[3 * x + c] += taps.weights[k] * pixel[c];
      }
    }
  }

  RgbImage out;
  out.width = size;
  out.height = size;
  out.pixels.resize(static_cast<size_t>(size) * dst_stride);
  std::vector<float> accumulator(dst_stride);
  for (int y = 0; y < size; ++y) {
    std::fill(accumulator.begin(), accumulator.end(), 0.0f);
    const Taps& taps = y_taps[y];
    for (size_t k = 0; k < taps.weights.size(); ++k) {
      const float* row = rows.data() + (taps.first + k) * dst_stride;
      for (size_t i = 0; i < dst_stride; ++i) accumulator[i] += taps.weights[k] * row[i];
    }
    uint8_t* dst = out.pixels.data() + y * dst_stride;
    for (size_t i = 0; i < dst_stride; ++i) dst[i] = RoundToByte(accumulator[i]);
  }
  return out;
}

std::vector<float> ToLumaFloat(const RgbImage& image) {
  if (!IsWellFormed(image)) return {};
  const size_t pixels = image.pixels.size() / 3;
  std::vector<float> luma(pixels);
  const uint8_t* rgb = image.pixels.data();
  for (size_t i = 0; i < pixels; ++i, rgb += 3) {
    const int y = (kLumaR[rgb[0]] + kLumaG[rgb[1]] + kLumaB[rgb[2]]) >> kLumaScaleBits;
    // Same float32 division as numpy's uint8 / 255.0 on a float32 array.
    luma[i] = static_cast<float>(y) / 255.0f;
  }
  return luma;
}

absl::StatusOr<std::vector<float>> DecodeReferenceLuma(ImageEncoding encoding,
                                                       absl::string_view data, int64_t width,
                                                       int64_t height, int size,
                                                       const ImageLimits& limits,
                                                       absl::string_view field) {
  if (size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": reference size must be > 0, got ", size));
  }
  FSRST_ASSIGN_OR_RETURN(RgbImage image, DecodeImage(encoding, data, width, height, limits, field));
  return ToLumaFloat(ResizeSquare(CenterCropSquare(image), size));
}

}  // namespace fsrst
