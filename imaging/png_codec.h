#ifndef FSRST_IMAGING_PNG_CODEC_H_
#define FSRST_IMAGING_PNG_CODEC_H_

// PNG files in and out (libpng's simplified API), for the command-line client:
// the service itself takes only JPEG and raw RGB8, so a PNG is decoded on the
// caller's side and sent as RGB8.
//
// Thread-safe: no state is kept between calls. Results are owned by the caller.
// Decoding is meant for files a user names: sizes are checked against the
// limits before anything is allocated, and any libpng error becomes an error,
// never a partly decoded image. Warnings (e.g. an odd colour profile, common in
// real files) are not errors: the file is the user's own.

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "imaging/image_codec.h"

namespace fsrst {

// Decodes a PNG of any colour type and bit depth to 8-bit RGB: grey is
// repeated, 16-bit channels are scaled down, and an alpha channel is
// composited onto white. Every error is INVALID_ARGUMENT and starts with
// "<field>: ": data longer than limits.max_bytes, a header of more than
// limits.max_pixels pixels (checked before decoding), and anything libpng
// cannot read (its message is the cause).
absl::StatusOr<RgbImage> DecodePng(absl::string_view data, const ImageLimits& limits,
                                   absl::string_view field);

// Encodes `image` as an 8-bit RGB PNG. INVALID_ARGUMENT if a dimension is <= 0 or
// pixels.size() != width*height*3; INTERNAL if libpng fails anyway.
absl::StatusOr<std::string> EncodePng(const RgbImage& image);

}  // namespace fsrst

#endif  // FSRST_IMAGING_PNG_CODEC_H_
