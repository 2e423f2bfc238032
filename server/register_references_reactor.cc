#include "server/register_references_reactor.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "server/enhance_request_handler.h"
#include "server/reference_quality.h"
#include "server/request_validation.h"
#include "server/status_util.h"

namespace fsrst {
namespace {

// See Encode: how close to its deadline a registration is no longer stored.
constexpr absl::Duration kCommitMargin = absl::Milliseconds(20);

}  // namespace

RegisterReferencesReactor::RegisterReferencesReactor(
    grpc::CallbackServerContext* context, const v1::RegisterReferencesRequest* request,
    v1::RegisterReferencesResponse* response, std::string tenant, const RegistrationDeps& deps,
    absl::Time start, std::function<void()> on_done)
    : context_(context),
      request_(request),
      response_(response),
      tenant_(std::move(tenant)),
      key_(ReferenceCacheKey(tenant_, request->identity_id())),
      deps_(deps),
      start_(start),
      on_done_(std::move(on_done)) {}

std::unique_ptr<JobTask> RegisterReferencesReactor::MakeJob(
    void (RegisterReferencesReactor::*stage)(absl::Status)) {
  auto job = std::make_unique<JobTask>();
  job->deadline = ToAbslTime(context_->deadline());
  // The context lives until OnDone, and OnDone comes only after Finish.
  grpc::CallbackServerContext* context = context_;
  job->is_cancelled = [context] { return context->IsCancelled(); };
  job->run = [this, stage](absl::Status status) { (this->*stage)(std::move(status)); };
  return job;
}

void RegisterReferencesReactor::Start() {
  std::unique_ptr<JobTask> job = MakeJob(&RegisterReferencesReactor::Decode);
  const absl::Status submitted = deps_.decoder->Submit(&job);
  if (!submitted.ok()) {
    Answer(absl::Status(submitted.code(),
                        absl::StrCat("RegisterReferences: reference decoding: ",
                                     submitted.message())));
  }
}

void RegisterReferencesReactor::Decode(absl::Status status) {
  if (!status.ok()) return Answer(status);
  grpc::CallbackServerContext* context = context_;
  absl::StatusOr<std::vector<float>> luma =
      DecodeReferences(request_->references(), deps_.runner->metadata(), deps_.image_limits,
                       [context] { return context->IsCancelled(); });
  if (!luma.ok()) return Answer(luma.status());
  const ModelMetadata& m = deps_.runner->metadata();
  absl::StatusOr<std::vector<double>> sharpness =
      CheckReferences(*luma, request_->references_size(), m.reference_size);
  if (!sharpness.ok()) return Answer(sharpness.status());
  // Written here, before the encode job exists; read by gRPC only after Finish.
  response_->mutable_reference_sharpness()->Add(sharpness->begin(), sharpness->end());
  luma_ = *std::move(luma);
  std::unique_ptr<JobTask> job = MakeJob(&RegisterReferencesReactor::Encode);
  const absl::Status enqueued = deps_.batcher->EnqueueJob(&job);
  if (!enqueued.ok()) {
    Answer(absl::Status(enqueued.code(), absl::StrCat("RegisterReferences: reference encoding: ",
                                                      enqueued.message())));
  }
}

void RegisterReferencesReactor::Encode(absl::Status status) {
  if (!status.ok()) return Answer(status);
  const int count = request_->references_size();
  const absl::Time encode_start = absl::Now();
  absl::StatusOr<std::shared_ptr<const ReferenceFeatures>> features =
      deps_.runner->EncodeReferences(luma_, count);
  deps_.metrics->RecordReferenceEncode(absl::Now() - encode_start);
  if (!features.ok()) return Answer(features.status());
  encoded_ = *std::move(features);
  if (deps_.shared != nullptr) {
    // Writing to the store blocks: on the store pool, not this model thread.
    std::unique_ptr<JobTask> job = MakeJob(&RegisterReferencesReactor::Persist);
    const absl::Status submitted = deps_.shared->Submit(&job);
    if (!submitted.ok()) {
      Answer(absl::UnavailableError(absl::StrCat(
          "RegisterReferences: the shared reference store's queue refused the write (",
          submitted.message(), "); nothing was stored, retry with backoff")));
    }
    return;
  }
  luma_ = std::vector<float>();
  Commit();
}

void RegisterReferencesReactor::Persist(absl::Status status) {
  if (!status.ok()) return Answer(status);
  absl::StatusOr<std::string> generation = deps_.shared->Persist(
      tenant_, request_->identity_id(), luma_, request_->references_size(), *encoded_);
  luma_ = std::vector<float>();
  if (!generation.ok()) {
    return Answer(absl::UnavailableError(
        absl::StrCat("RegisterReferences: ", generation.status().message(),
                     "; nothing was stored, retry when it is back")));
  }
  deps_.shared->Remember(tenant_, request_->identity_id(), *generation);
  Commit();
}

void RegisterReferencesReactor::Commit() {
  const int count = request_->references_size();
  // A caller that is gone by now gets nothing stored; one that goes between
  // here and the answer is caught in OnDone. The caller's clock runs ahead of
  // this deadline by the request's transit time, so an OK sent this close to
  // it could reach the transport and still lose to the caller's timer: such a
  // call is answered DEADLINE_EXCEEDED here, and nothing stored.
  if (context_->IsCancelled()) {
    return Answer(absl::CancelledError(
        "the call was cancelled while the references were encoded; nothing was stored"));
  }
  if (ToAbslTime(context_->deadline()) - absl::Now() < kCommitMargin) {
    return Answer(absl::DeadlineExceededError(
        "the call's deadline passed while the references were encoded; nothing was stored"));
  }
  response_->set_reference_count(count);
  response_->set_feature_bytes(encoded_->byte_size());
  stored_ = encoded_;
  replaced_ = deps_.cache->Insert(key_, std::move(encoded_));
  Answer(absl::OkStatus());
}

void RegisterReferencesReactor::Answer(const absl::Status& status) {
  deps_.metrics->RecordRequest(Rpc::kRegisterReferences, status.code(), absl::Now() - start_);
  Finish(ToGrpcStatus(status));
}

void RegisterReferencesReactor::OnDone() {
  // IsCancelled() after OnDone: whether the call failed before its status
  // reached the transport. Then the caller did not get the OK: undo the insert.
  // With a shared store the new references are stored there already (and other
  // replicas told): restoring the older ones here would serve what no other
  // replica serves, so the local copy is only dropped, and read through again.
  if (deps_.shared != nullptr) replaced_.reset();
  if (stored_ != nullptr && context_->IsCancelled() &&
      deps_.cache->Restore(key_, stored_.get(), std::move(replaced_))) {
    deps_.metrics->RecordRegistrationUndone();
  }
  stored_.reset();
  replaced_.reset();
  if (on_done_) on_done_();
  delete this;
}

}  // namespace fsrst
