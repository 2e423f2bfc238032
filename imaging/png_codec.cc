#include "imaging/png_codec.h"

#include <png.h>

#include <cstdint>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace fsrst {
namespace {

// Frees the png_image's libpng state on every path (png_image_free is a no-op
// once finish_read or write has freed it).
class PngImage {
 public:
  PngImage() {
    std::memset(&image_, 0, sizeof(image_));
    image_.version = PNG_IMAGE_VERSION;
  }
  ~PngImage() { png_image_free(&image_); }
  PngImage(const PngImage&) = delete;
  PngImage& operator=(const PngImage&) = delete;

  png_image* get() { return &image_; }

 private:
  png_image image_;
};

}  // namespace

absl::StatusOr<RgbImage> DecodePng(absl::string_view data, const ImageLimits& limits,
                                   absl::string_view field) {
  if (static_cast<int64_t>(data.size()) > limits.max_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": expected at most ", limits.max_bytes,
                                                   " bytes, got ", data.size()));
  }
  PngImage png;
  if (!png_image_begin_read_from_memory(png.get(), data.data(), data.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": not a PNG libpng can read (", png.get()->message, ")"));
  }
  const int64_t width = png.get()->width;
  const int64_t height = png.get()->height;
  if (width * height > limits.max_pixels) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": expected at most ",
                                                   limits.max_pixels, " pixels, got ", width,
                                                   "x", height));
  }
  png.get()->format = PNG_FORMAT_RGB;
  RgbImage image;
  image.width = static_cast<int>(width);
  image.height = static_cast<int>(height);
  image.pixels.resize(static_cast<size_t>(width * height * 3));
  const png_color white = {255, 255, 255};
  if (!png_image_finish_read(png.get(), &white, image.pixels.data(), 0, nullptr) ||
      (png.get()->warning_or_error & PNG_IMAGE_ERROR) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": corrupt PNG (", png.get()->message, ")"));
  }
  return image;
}

absl::StatusOr<std::string> EncodePng(const RgbImage& image) {
  if (image.width <= 0 || image.height <= 0 ||
      image.pixels.size() != static_cast<size_t>(image.width) * image.height * 3) {
    return absl::InvalidArgumentError(absl::StrCat("image: expected width*height*3 = ",
                                                   int64_t{image.width} * image.height * 3,
                                                   " bytes of a positive size, got ",
                                                   image.pixels.size()));
  }
  PngImage png;
  png.get()->width = static_cast<png_uint_32>(image.width);
  png.get()->height = static_cast<png_uint_32>(image.height);
  png.get()->format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  if (!png_image_write_get_memory_size(*png.get(), size, 0, image.pixels.data(), 0, nullptr)) {
    return absl::InternalError(absl::StrCat("PNG encoding failed: ", png.get()->message));
  }
  std::string out(size, '\0');
  if (!png_image_write_to_memory(png.get(), out.data(), &size, 0, image.pixels.data(), 0,
                                 nullptr)) {
    return absl::InternalError(absl::StrCat("PNG encoding failed: ", png.get()->message));
  }
  out.resize(size);
  return out;
}

}  // namespace fsrst
