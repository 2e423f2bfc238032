#ifndef FSRST_SERVER_REQUEST_VALIDATION_H_
#define FSRST_SERVER_REQUEST_VALIDATION_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/identity_id.h"  // ValidateIdentityId, kMaxIdentityIdLength
#include "fsrst/v1/fsrst.pb.h"
#include "model/model_metadata.h"
#include "imaging/image_codec.h"

namespace fsrst {

// Checks and decodes what callers send, before anything is queued. Every
// error is INVALID_ARGUMENT and names the field and the expected value.
// Pure functions: thread-safe, and they never crash on any input (they are
// fuzzed).

// The encoding of an Image: JPEG or RGB8; UNSPECIFIED and unknown values are errors.
absl::StatusOr<ImageEncoding> ToImageEncoding(int encoding, absl::string_view field);

// A low-resolution frame: decoded to interleaved RGB8, exactly lr_size square.
absl::StatusOr<std::vector<uint8_t>> DecodeFrame(const v1::Image& frame,
                                                 const ModelMetadata& model,
                                                 const ImageLimits& limits);

// 1..max_references references: INVALID_ARGUMENT naming the field otherwise.
absl::Status ValidateReferenceCount(int count, const ModelMetadata& model);

// 1..max_references reference photos, each centre-cropped, resized to the
// model's reference size and converted to luma; concatenated. `cancelled`, if
// set, is polled before each image: true stops with CANCELLED (a caller that
// left, or a shutdown, does not wait for up to 8 large decodes).
absl::StatusOr<std::vector<float>> DecodeReferences(
    const google::protobuf::RepeatedPtrField<v1::Image>& references,
    const ModelMetadata& model, const ImageLimits& limits,
    const std::function<bool()>& cancelled = nullptr);

}  // namespace fsrst

#endif  // FSRST_SERVER_REQUEST_VALIDATION_H_
