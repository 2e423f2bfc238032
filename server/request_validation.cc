#include "server/request_validation.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace fsrst {

absl::StatusOr<ImageEncoding> ToImageEncoding(int encoding, absl::string_view field) {
  switch (encoding) {
    case v1::ENCODING_JPEG:
      return ImageEncoding::kJpeg;
    case v1::ENCODING_RGB8:
      return ImageEncoding::kRgb8;
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          field, ": expected ENCODING_JPEG (1) or ENCODING_RGB8 (2), got ", encoding));
  }
}

absl::StatusOr<std::vector<uint8_t>> DecodeFrame(const v1::Image& frame,
                                                 const ModelMetadata& model,
                                                 const ImageLimits& limits) {
  FSRST_ASSIGN_OR_RETURN(ImageEncoding encoding,
                         ToImageEncoding(frame.encoding(), "frame.encoding"));
  FSRST_ASSIGN_OR_RETURN(
      RgbImage image, DecodeImage(encoding, frame.data(), frame.width(), frame.height(), limits,
                                  "frame"));
  if (image.width != model.lr_size || image.height != model.lr_size) {
    return absl::InvalidArgumentError(absl::StrCat("frame: expected ", model.lr_size, "x",
                                                   model.lr_size, " pixels, got ", image.width,
                                                   "x", image.height));
  }
  return std::move(image.pixels);
}

absl::Status ValidateReferenceCount(int count, const ModelMetadata& model) {
  if (count < 1 || count > model.max_references) {
    return absl::InvalidArgumentError(absl::StrCat(
        "references: expected 1 to ", model.max_references, " images, got ", count));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<float>> DecodeReferences(
    const google::protobuf::RepeatedPtrField<v1::Image>& references,
    const ModelMetadata& model, const ImageLimits& limits,
    const std::function<bool()>& cancelled) {
  const int count = references.size();
  FSRST_RETURN_IF_ERROR(ValidateReferenceCount(count, model));
  std::vector<float> luma;
  luma.reserve(count * model.reference_pixels());
  for (int i = 0; i < count; ++i) {
    if (cancelled && cancelled()) {
      return absl::CancelledError(absl::StrCat(
          "the call was cancelled or its deadline passed while references[", i,
          "] waited to be decoded; nothing was stored"));
    }
    const v1::Image& ref = references[i];
    const std::string field = absl::StrCat("references[", i, "]");
    FSRST_ASSIGN_OR_RETURN(ImageEncoding encoding,
                           ToImageEncoding(ref.encoding(), absl::StrCat(field, ".encoding")));
    FSRST_ASSIGN_OR_RETURN(
        std::vector<float> one,
        DecodeReferenceLuma(encoding, ref.data(), ref.width(), ref.height(),
                            model.reference_size, limits, field));
    luma.insert(luma.end(), one.begin(), one.end());
  }
  return luma;
}

}  // namespace fsrst
