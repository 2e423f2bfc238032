#include "clients/cpp/image_files.h"

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "imaging/image_codec.h"
#include "imaging/png_codec.h"

namespace fsrst {
namespace {

enum class FileFormat { kJpeg, kPng, kRgb };

absl::StatusOr<FileFormat> FormatForPath(const std::string& path) {
  const std::string lower = absl::AsciiStrToLower(path);
  if (absl::EndsWith(lower, ".jpg") || absl::EndsWith(lower, ".jpeg")) return FileFormat::kJpeg;
  if (absl::EndsWith(lower, ".png")) return FileFormat::kPng;
  if (absl::EndsWith(lower, ".rgb")) return FileFormat::kRgb;
  return absl::InvalidArgumentError(
      absl::StrCat(path, ": expected a .jpg, .jpeg, .png or .rgb file"));
}

// The reason the last failed open/read/write gave, e.g. "No such file or directory".
std::string SystemReason() { return errno != 0 ? std::strerror(errno) : "unknown error"; }

absl::StatusOr<RgbImage> DecodeAnswer(const v1::Image& image) {
  if (image.encoding() != v1::ENCODING_RGB8 && image.encoding() != v1::ENCODING_JPEG) {
    return absl::InvalidArgumentError(
        absl::StrCat("image.encoding: expected ENCODING_JPEG (1) or ENCODING_RGB8 (2), got ",
                     static_cast<int>(image.encoding())));
  }
  const ImageEncoding from =
      image.encoding() == v1::ENCODING_JPEG ? ImageEncoding::kJpeg : ImageEncoding::kRgb8;
  return DecodeImage(from, image.data(), image.width(), image.height(), ImageLimits{}, "image");
}

}  // namespace

absl::StatusOr<v1::Encoding> EncodingForPath(const std::string& path) {
  absl::StatusOr<FileFormat> format = FormatForPath(path);
  if (!format.ok()) return format.status();
  return *format == FileFormat::kJpeg ? v1::ENCODING_JPEG : v1::ENCODING_RGB8;
}

absl::StatusOr<v1::Image> ReadImageFile(const std::string& path) {
  absl::StatusOr<FileFormat> format = FormatForPath(path);
  if (!format.ok()) return format.status();
  errno = 0;
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    const bool missing = errno == ENOENT;
    const std::string message = absl::StrCat("cannot read ", path, ": ", SystemReason());
    return missing ? absl::NotFoundError(message) : absl::InternalError(message);
  }
  std::ostringstream bytes;
  bytes << file.rdbuf();
  if (file.bad()) {
    return absl::InternalError(absl::StrCat("cannot read ", path, ": ", SystemReason()));
  }
  std::string data = bytes.str();
  if (data.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": empty file"));
  v1::Image image;
  switch (*format) {
    case FileFormat::kJpeg:
      image.set_encoding(v1::ENCODING_JPEG);
      image.set_data(std::move(data));
      break;
    case FileFormat::kPng: {
      absl::StatusOr<RgbImage> rgb = DecodePng(data, ImageLimits{}, path);
      if (!rgb.ok()) return rgb.status();
      image.set_encoding(v1::ENCODING_RGB8);
      image.set_width(static_cast<uint32_t>(rgb->width));
      image.set_height(static_cast<uint32_t>(rgb->height));
      image.set_data(std::string(rgb->pixels.begin(), rgb->pixels.end()));
      break;
    }
    case FileFormat::kRgb: {
      const size_t size = data.size();
      const auto side = static_cast<size_t>(std::llround(std::sqrt(static_cast<double>(size) / 3)));
      if (side * side * 3 != size) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ": expected a square raw RGB8 image (side*side*3 bytes), got ", size, " bytes"));
      }
      image.set_encoding(v1::ENCODING_RGB8);
      image.set_width(static_cast<uint32_t>(side));
      image.set_height(static_cast<uint32_t>(side));
      image.set_data(std::move(data));
      break;
    }
  }
  return image;
}

absl::Status WriteImageFile(const v1::Image& image, const std::string& path, int jpeg_quality) {
  absl::StatusOr<FileFormat> format = FormatForPath(path);
  if (!format.ok()) return format.status();
  std::string data;
  const bool same = (*format == FileFormat::kJpeg && image.encoding() == v1::ENCODING_JPEG) ||
                    (*format == FileFormat::kRgb && image.encoding() == v1::ENCODING_RGB8);
  if (same) {
    data = image.data();
  } else {
    absl::StatusOr<RgbImage> rgb = DecodeAnswer(image);
    if (!rgb.ok()) return rgb.status();
    absl::StatusOr<std::string> encoded;
    switch (*format) {
      case FileFormat::kJpeg:
        encoded = EncodeJpeg(*rgb, jpeg_quality);
        break;
      case FileFormat::kPng:
        encoded = EncodePng(*rgb);
        break;
      case FileFormat::kRgb:
        encoded = std::string(rgb->pixels.begin(), rgb->pixels.end());
        break;
    }
    if (!encoded.ok()) return encoded.status();
    data = *std::move(encoded);
  }
  errno = 0;
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  if (!file) return absl::InternalError(absl::StrCat("cannot write ", path, ": ", SystemReason()));
  file.write(data.data(), static_cast<std::streamsize>(data.size()));
  file.close();
  if (!file) return absl::InternalError(absl::StrCat("cannot write ", path, ": ", SystemReason()));
  return absl::OkStatus();
}

}  // namespace fsrst
