#include "server/enhance_request_handler.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/request_validation.h"

namespace fsrst {

absl::Status IdentityNotFound(const std::string& identity_id) {
  return absl::NotFoundError(absl::StrCat(
      "identity_id \"", identity_id,
      "\" has no cached references (unknown, deleted, evicted or expired): "
      "call RegisterReferences again"));
}

std::string ReferenceCacheKey(absl::string_view tenant, absl::string_view identity_id) {
  if (tenant.empty()) return std::string(identity_id);
  return absl::StrCat(tenant, "/", identity_id);
}

EnhanceRequestHandler::EnhanceRequestHandler(const ModelMetadata& model, ImageLimits limits,
                                             int default_jpeg_quality, DynamicBatcher* batcher,
                                             ReferenceCache* cache, SharedReferences* shared)
    : model_(model),
      limits_(limits),
      default_jpeg_quality_(default_jpeg_quality),
      batcher_(batcher),
      cache_(cache),
      shared_(shared) {}

absl::StatusOr<std::unique_ptr<FrameTask>> EnhanceRequestHandler::Prepare(
    const v1::EnhanceRequest& request, absl::string_view tenant, absl::Time deadline,
    ResponseFormat* format) const {
  auto task = std::make_unique<FrameTask>();
  FSRST_ASSIGN_OR_RETURN(task->frame_rgb, DecodeFrame(request.frame(), model_, limits_));

  if (request.output_encoding() == v1::ENCODING_UNSPECIFIED) {
    format->encoding = request.frame().encoding() == v1::ENCODING_JPEG ? ImageEncoding::kJpeg
                                                                       : ImageEncoding::kRgb8;
  } else {
    FSRST_ASSIGN_OR_RETURN(format->encoding,
                           ToImageEncoding(request.output_encoding(), "output_encoding"));
  }
  if (request.jpeg_quality() > 100) {
    return absl::InvalidArgumentError(
        absl::StrCat("jpeg_quality: expected 0 (default) to 100, got ", request.jpeg_quality()));
  }
  format->jpeg_quality =
      request.jpeg_quality() == 0 ? default_jpeg_quality_ : static_cast<int>(request.jpeg_quality());

  if (!request.identity_id().empty()) {
    if (request.references_size() > 0) {
      return absl::InvalidArgumentError(
          "references: expected none when identity_id is set (the registered references are "
          "used); send one or the other");
    }
    FSRST_RETURN_IF_ERROR(ValidateIdentityId(request.identity_id(), "identity_id"));
    task->references =
        cache_->Lookup(ReferenceCacheKey(tenant, request.identity_id()), &task->usage);
    // With a shared store, Submit reads a missing identity through.
    if (task->references == nullptr && shared_ == nullptr) {
      return IdentityNotFound(request.identity_id());
    }
  } else if (request.references_size() > 0) {
    FSRST_ASSIGN_OR_RETURN(task->reference_luma,
                           DecodeReferences(request.references(), model_, limits_));
    task->reference_luma_count = request.references_size();
  }

  task->deadline = deadline;
  if (request.timeout_ms() > 0) {
    task->deadline = std::min(deadline, absl::Now() + absl::Milliseconds(request.timeout_ms()));
  }
  return task;
}

absl::Status EnhanceRequestHandler::Submit(std::unique_ptr<FrameTask>* task,
                                           const v1::EnhanceRequest& request,
                                           const std::string& tenant) const {
  if (shared_ == nullptr || request.identity_id().empty() || (*task)->references != nullptr) {
    return batcher_->Enqueue(task);
  }
  // Shared, so the std::function holding it stays copyable.
  std::shared_ptr<FrameTask> pending(std::move(*task));
  DynamicBatcher* batcher = batcher_;
  ReferenceCache* cache = cache_;
  std::string key = ReferenceCacheKey(tenant, request.identity_id());
  shared_->ReadThrough(
      tenant, request.identity_id(),
      [pending, batcher, cache, key = std::move(key)](
          absl::StatusOr<std::shared_ptr<const ReferenceFeatures>> features) {
        absl::Status status = features.status();
        if (status.ok()) {
          pending->usage = cache->UsageOf(key, features->get());
          pending->references = *std::move(features);
          auto owned = std::make_unique<FrameTask>(std::move(*pending));
          status = batcher->Enqueue(&owned);
          if (status.ok()) return;
          owned->done(status, *owned);
          return;
        }
        pending->done(status, *pending);
      });
  return absl::OkStatus();
}

absl::Status EnhanceRequestHandler::BuildResponse(const FrameTask& task,
                                                  const ResponseFormat& format,
                                                  v1::EnhanceResponse* response) const {
  const int size = model_.output_size();
  v1::Image* image = response->mutable_image();
  image->set_width(size);
  image->set_height(size);
  if (format.encoding == ImageEncoding::kJpeg) {
    RgbImage rgb{size, size, task.output_rgb};
    FSRST_ASSIGN_OR_RETURN(std::string jpeg, EncodeJpeg(rgb, format.jpeg_quality));
    image->set_encoding(v1::ENCODING_JPEG);
    image->set_data(std::move(jpeg));
  } else {
    image->set_encoding(v1::ENCODING_RGB8);
    image->set_data(task.output_rgb.data(), task.output_rgb.size());
  }
  response->set_queue_duration_us(
      absl::ToInt64Microseconds(task.batch_start_time - task.enqueue_time));
  response->set_inference_duration_us(absl::ToInt64Microseconds(task.inference_duration));
  response->set_batch_size(task.batch_size);
  response->mutable_reference_weights()->Add(task.reference_weights.begin(),
                                             task.reference_weights.end());
  return absl::OkStatus();
}

}  // namespace fsrst
