#ifndef FSRST_CLIENTS_CPP_IMAGE_FILES_H_
#define FSRST_CLIENTS_CPP_IMAGE_FILES_H_

// Image files to and from request images, for the command-line client.
// Three formats, chosen by the file's extension (case-insensitive):
//   .jpg / .jpeg  a JPEG file, sent as its own bytes (the server decodes it);
//   .png          a PNG file (any colour type or depth), decoded here with
//                 libpng (imaging/png_codec) and sent as raw RGB8;
//   .rgb          raw interleaved RGB8, square: side*side*3 bytes, no header.
//
// Thread-safe (no state). Every error message names the path. Errors about
// the file itself (it cannot be opened, read or written) start with
// "cannot read <path>: " or "cannot write <path>: " and give the system's
// reason, so a caller can tell them from a server's answer.

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "fsrst/v1/fsrst.pb.h"

namespace fsrst {

// The encoding a file of `path`'s extension travels in: ENCODING_JPEG for
// .jpg/.jpeg, ENCODING_RGB8 for .png and .rgb; INVALID_ARGUMENT for anything
// else.
absl::StatusOr<v1::Encoding> EncodingForPath(const std::string& path);

// The file as a request image. JPEG travels as the file's bytes (width and
// height 0: the server reads them from the header); PNG is decoded to RGB8
// with its width and height; a .rgb file must be square, its side taken from
// its size. NOT_FOUND if the file does not exist, other failures to open or
// read it INTERNAL ("cannot read <path>: <reason>"); INVALID_ARGUMENT for an
// unsupported extension, an empty file, a PNG libpng cannot decode, or a .rgb
// file whose size is not side*side*3.
absl::StatusOr<v1::Image> ReadImageFile(const std::string& path);

// Writes `image` to `path` in the format its extension asks for, converting
// when needed (decoding JPEG or RGB8, encoding JPEG at `jpeg_quality` or
// PNG). INVALID_ARGUMENT for an unsupported extension or an image that does
// not decode; INTERNAL ("cannot write <path>: <reason>") if the file cannot be
// written.
absl::Status WriteImageFile(const v1::Image& image, const std::string& path, int jpeg_quality = 95);

}  // namespace fsrst

#endif  // FSRST_CLIENTS_CPP_IMAGE_FILES_H_
