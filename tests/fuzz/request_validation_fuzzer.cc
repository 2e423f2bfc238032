// libFuzzer target for server/request_validation: a serialized request, as
// it arrives off the wire, through the checks the service runs before it
// queues anything (identity id, frame, references).
//
// Input layout (the seed corpus in corpus/request_validation/ follows it,
// written by make_corpus.py):
//   byte 0      bit 0: 0 = EnhanceRequest, 1 = RegisterReferencesRequest
//   bytes 1..   the serialized message (inputs that do not parse are skipped)
//
// Crashes, sanitizer reports and broken invariants (checked below, trap on
// failure) are findings. Errors returned as Status are the expected outcome
// for most inputs.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "fsrst/v1/fsrst.pb.h"
#include "model/model_metadata.h"
#include "imaging/image_codec.h"
#include "server/request_validation.h"

namespace {

void Check(bool condition) {
  if (!condition) __builtin_trap();
}

// The served model's shape (model/README.md).
fsrst::ModelMetadata ServedModel() {
  fsrst::ModelMetadata m;
  m.name = "fsrst_x4";
  m.lr_size = 32;
  m.scale = 4;
  m.reference_size = 128;
  m.feature_shape = {3, 32, 32};
  m.max_references = 8;
  return m;
}

void CheckError(const absl::Status& status, absl::string_view field) {
  Check(status.code() == absl::StatusCode::kInvalidArgument);
  Check(absl::StartsWith(status.message(), field));
}

void CheckIdentityId(const std::string& id) {
  const absl::Status status = fsrst::ValidateIdentityId(id, "identity_id");
  if (!status.ok()) {
    CheckError(status, "identity_id: ");
    return;
  }
  Check(!id.empty() && id.size() <= fsrst::kMaxIdentityIdLength);
}

void CheckReferences(const google::protobuf::RepeatedPtrField<fsrst::v1::Image>& references,
                     const fsrst::ModelMetadata& model, const fsrst::ImageLimits& limits) {
  absl::StatusOr<std::vector<float>> luma = fsrst::DecodeReferences(references, model, limits);
  if (!luma.ok()) {
    CheckError(luma.status(), "references");
    return;
  }
  Check(references.size() >= 1 && references.size() <= model.max_references);
  Check(luma->size() == static_cast<size_t>(references.size() * model.reference_pixels()));
  for (float y : *luma) Check(y >= 0.0f && y <= 1.0f);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const fsrst::ModelMetadata model = ServedModel();
  const fsrst::ImageLimits limits;  // the server's defaults
  const auto* message = reinterpret_cast<const char*>(data + 1);
  const int message_size = static_cast<int>(size - 1);

  if ((data[0] & 1) == 0) {
    fsrst::v1::EnhanceRequest request;
    if (!request.ParseFromArray(message, message_size)) return 0;
    if (!request.identity_id().empty()) CheckIdentityId(request.identity_id());
    absl::StatusOr<std::vector<uint8_t>> frame =
        fsrst::DecodeFrame(request.frame(), model, limits);
    if (frame.ok()) {
      Check(static_cast<int64_t>(frame->size()) == model.frame_bytes());
    } else {
      CheckError(frame.status(), "frame");
    }
    if (request.references_size() > 0) CheckReferences(request.references(), model, limits);
  } else {
    fsrst::v1::RegisterReferencesRequest request;
    if (!request.ParseFromArray(message, message_size)) return 0;
    CheckIdentityId(request.identity_id());
    CheckReferences(request.references(), model, limits);
  }
  return 0;
}
