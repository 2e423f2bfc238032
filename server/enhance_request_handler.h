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
#include "server/shared_references.h"

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
// With a shared store (`shared` not null), an identity missing from the
// local cache is read through from the store instead of being NOT_FOUND: see
// Submit.
//
// Thread-safe: const methods over shared, thread-safe collaborators. The
// batcher, cache and shared store are not owned and must outlive the handler.
class EnhanceRequestHandler {
 public:
  EnhanceRequestHandler(const ModelMetadata& model, ImageLimits limits, int default_jpeg_quality,
                        DynamicBatcher* batcher, ReferenceCache* cache,
                        SharedReferences* shared = nullptr);

  // A task for `request` (its `done` left empty), and the format its answer
  // takes. The identity is looked up in `tenant`'s namespace ("" when the
  // server runs without API keys). `deadline` is the call's; the request's
  // timeout_ms may shorten it. INVALID_ARGUMENT for bad input, NOT_FOUND for
  // an identity not cached for this tenant (without a shared store; with
  // one, the task comes back without references, for Submit to read them
  // through).
  absl::StatusOr<std::unique_ptr<FrameTask>> Prepare(const v1::EnhanceRequest& request,
                                                     absl::string_view tenant,
                                                     absl::Time deadline,
                                                     ResponseFormat* format) const;

  // Hands the task (of `request`, from Prepare) to the batcher (see
  // DynamicBatcher::Enqueue). When its identity was not cached locally, it
  // first reads it through from the shared store, off this thread, and then
  // returns OK having taken the task: from then on the task's `done` answers
  // it, also when the read-through fails (NOT_FOUND, UNAVAILABLE, ...).
  absl::Status Submit(std::unique_ptr<FrameTask>* task, const v1::EnhanceRequest& request,
                      const std::string& tenant) const;

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
  SharedReferences* const shared_;
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
