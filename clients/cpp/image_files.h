#ifndef FSRST_CLIENTS_CPP_IMAGE_FILES_H_
#define FSRST_CLIENTS_CPP_IMAGE_FILES_H_

// Image files to and from request images, for the command-line client.
// Two formats, chosen by the file's extension (case-insensitive):
//   .jpg / .jpeg  a JPEG file (libjpeg-turbo, through imaging/image_codec);
//   .rgb          raw interleaved RGB8, square: side*side*3 bytes, no header.
// PNG and other formats are not supported (convert them to JPEG first).
//
// Thread-safe (no state). Errors name the path.

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fsrst/v1/fsrst.pb.h"

namespace fsrst {

// The encoding `path`'s extension asks for: ENCODING_JPEG or ENCODING_RGB8;
// INVALID_ARGUMENT for anything else.
absl::StatusOr<v1::Encoding> EncodingForPath(const std::string& path);

// The file as a request image. JPEG travels as the file's bytes (width and
// height 0: the server reads them from the header); a .rgb file must be
// square, its side taken from its size. NOT_FOUND if it cannot be opened;
// INVALID_ARGUMENT for an unsupported extension, an empty file or a .rgb file
// whose size is not side*side*3.
absl::StatusOr<v1::Image> ReadImageFile(const std::string& path);

// Writes `image` to `path` in the format its extension asks for, converting
// when the encodings differ (RGB8 -> JPEG at `jpeg_quality`, JPEG -> RGB8 by
// decoding). INVALID_ARGUMENT for an unsupported extension or an image that
// does not decode; INTERNAL if the file cannot be written.
absl::Status WriteImageFile(const v1::Image& image, const std::string& path, int jpeg_quality = 95);

}  // namespace fsrst

#endif  // FSRST_CLIENTS_CPP_IMAGE_FILES_H_
