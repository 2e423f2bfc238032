#include "clients/cpp/image_files.h"

#include <cmath>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "imaging/image_codec.h"

namespace fsrst {

absl::StatusOr<v1::Encoding> EncodingForPath(const std::string& path) {
  const std::string lower = absl::AsciiStrToLower(path);
  if (absl::EndsWith(lower, ".jpg") || absl::EndsWith(lower, ".jpeg")) return v1::ENCODING_JPEG;
  if (absl::EndsWith(lower, ".rgb")) return v1::ENCODING_RGB8;
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": expected a .jpg, .jpeg or .rgb file (PNG is not supported)"));
}

absl::StatusOr<v1::Image> ReadImageFile(const std::string& path) {
  absl::StatusOr<v1::Encoding> encoding = EncodingForPath(path);
  if (!encoding.ok()) return encoding.status();
  std::ifstream file(path, std::ios::binary);
  if (!file) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream bytes;
  bytes << file.rdbuf();
  if (file.bad()) return absl::InternalError(absl::StrCat(path, ": read failed"));
  v1::Image image;
  image.set_encoding(*encoding);
  image.set_data(bytes.str());
  if (image.data().empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": empty file"));
  if (*encoding == v1::ENCODING_RGB8) {
    const size_t size = image.data().size();
    const auto side = static_cast<size_t>(std::llround(std::sqrt(static_cast<double>(size) / 3)));
    if (side * side * 3 != size) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": expected a square raw RGB8 image (side*side*3 bytes), got ", size, " bytes"));
    }
    image.set_width(static_cast<uint32_t>(side));
    image.set_height(static_cast<uint32_t>(side));
  }
  return image;
}

absl::Status WriteImageFile(const v1::Image& image, const std::string& path, int jpeg_quality) {
  absl::StatusOr<v1::Encoding> wanted = EncodingForPath(path);
  if (!wanted.ok()) return wanted.status();
  std::string data;
  if (image.encoding() == *wanted) {
    data = image.data();
  } else if (image.encoding() == v1::ENCODING_RGB8 || image.encoding() == v1::ENCODING_JPEG) {
    const ImageEncoding from =
        image.encoding() == v1::ENCODING_JPEG ? ImageEncoding::kJpeg : ImageEncoding::kRgb8;
    absl::StatusOr<RgbImage> rgb =
        DecodeImage(from, image.data(), static_cast<int>(image.width()),
                    static_cast<int>(image.height()), ImageLimits{}, "image");
    if (!rgb.ok()) return rgb.status();
    if (*wanted == v1::ENCODING_RGB8) {
      data.assign(rgb->pixels.begin(), rgb->pixels.end());
    } else {
      absl::StatusOr<std::string> jpeg = EncodeJpeg(*rgb, jpeg_quality);
      if (!jpeg.ok()) return jpeg.status();
      data = *std::move(jpeg);
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("image.encoding: expected ENCODING_JPEG (1) or ENCODING_RGB8 (2), got ",
                     static_cast<int>(image.encoding())));
  }
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) return absl::InternalError(absl::StrCat(path, ": cannot open for writing"));
  file.write(data.data(), static_cast<std::streamsize>(data.size()));
  file.close();
  if (!file) return absl::InternalError(absl::StrCat(path, ": write failed"));
  return absl::OkStatus();
}

}  // namespace fsrst
