#ifndef FSRST_SERVER_ENHANCE_REQUEST_HANDLER_H_
#define FSRST_SERVER_ENHANCE_REQUEST_HANDLER_H_

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "batching/dynamic_batcher.h"
#include "batching/frame_task.h"
#include "fsrst/v1/fsrst.pb.h"
#include "model/model_metadata.h"
#include "imaging/image_codec.h"
#include "server/reference_cache.h"

namespace fsrst {

// How the answer to one frame is to be encoded.
struct ResponseFormat {
  ImageEncoding encoding = ImageEncoding::kRgb8;
  int jpeg_quality = 95;
};

// The work shared by Enhance and EnhanceStream: turns an EnhanceRequest into
// a FrameTask (validated, decoded, references looked up), and a finished task
// into an EnhanceResponse. Knows nothing of gRPC reactors.
//
// Thread-safe: const methods over shared, thread-safe collaborators. The
// batcher and cache are not owned and must outlive the handler.
class EnhanceRequestHandler {
 public:
  EnhanceRequestHandler(const ModelMetadata& model, ImageLimits limits, int default_jpeg_quality,
                        DynamicBatcher* batcher, ReferenceCache* cache);

  // A task for `request` (its `done` left empty), and the format its answer
  // takes. The identity is looked up in `tenant`'s namespace ("" when the
  // server runs without API keys). `deadline` is the call's; the request's
  // timeout_ms may shorten it. INVALID_ARGUMENT for bad input, NOT_FOUND for
  // an identity not cached for this tenant.
  absl::StatusOr<std::unique_ptr<FrameTask>> Prepare(const v1::EnhanceRequest& request,
                                                     absl::string_view tenant,
                                                     absl::Time deadline,
                                                     ResponseFormat* format) const;

  // Hands the task to the batcher (see DynamicBatcher::Enqueue).
  absl::Status Submit(std::unique_ptr<FrameTask>* task) const { return batcher_->Enqueue(task); }

  // Fills `response` from a task the model finished.
  absl::Status BuildResponse(const FrameTask& task, const ResponseFormat& format,
                             v1::EnhanceResponse* response) const;

  const ModelMetadata& model() const { return model_; }

 private:
  const ModelMetadata& model_;
  const ImageLimits limits_;
  const int default_jpeg_quality_;
  DynamicBatcher* const batcher_;
  ReferenceCache* const cache_;
};

// The NOT_FOUND an unknown, evicted or expired identity gets. It names only
// the identity as the caller sent it, so another tenant's identity of the
// same name gets exactly the answer of one that never existed.
absl::Status IdentityNotFound(const std::string& identity_id);

// The reference cache's key of `tenant`'s `identity_id`: the one place where
// identities are namespaced by tenant. "" (no API keys) keeps the bare id.
// Unambiguous because tenants never contain '/' (see ValidateTenant).
std::string ReferenceCacheKey(absl::string_view tenant, absl::string_view identity_id);

}  // namespace fsrst

#endif  // FSRST_SERVER_ENHANCE_REQUEST_HANDLER_H_
