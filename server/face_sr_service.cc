#include "server/face_sr_service.h"

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "server/enhance_stream_reactor.h"
#include "server/register_references_reactor.h"
#include "server/request_validation.h"
#include "server/status_util.h"

namespace fsrst {
namespace {

// The reactor of an EnhanceStream refused before its first read: finishes
// with `status` at once and deletes itself when gRPC is done with it.
class RefusedStreamReactor final
    : public grpc::ServerBidiReactor<v1::EnhanceRequest, v1::EnhanceResponse> {
 public:
  explicit RefusedStreamReactor(const absl::Status& status) { Finish(ToGrpcStatus(status)); }
  void OnDone() override { delete this; }
};

}  // namespace

FaceSrService::FaceSrService(ModelRunner* runner, DynamicBatcher* batcher, WorkerPool* decoder,
                             ReferenceCache* cache, ServerMetrics* metrics,
                             ServiceOptions options)
    : runner_(runner),
      batcher_(batcher),
      decoder_(decoder),
      cache_(cache),
      metrics_(metrics),
      options_(options),
      handler_(runner->metadata(), options.image_limits, options.default_jpeg_quality, batcher,
               cache, options.shared) {}

void FaceSrService::SetServing() { state_.store(State::kServing); }
void FaceSrService::StartDraining() { state_.store(State::kDraining); }

absl::Status FaceSrService::Accepting() const {
  switch (state_.load()) {
    case State::kServing:
      return absl::OkStatus();
    case State::kStarting:
      return absl::UnavailableError("the model is still loading or warming up; retry shortly");
    case State::kDraining:
      break;
  }
  return absl::UnavailableError("the server is shutting down; retry on another replica");
}

absl::StatusOr<std::string> FaceSrService::Authenticate(
    const grpc::CallbackServerContext& context) const {
  if (options_.api_keys == nullptr) return std::string();
  const auto& metadata = context.client_metadata();
  auto it = metadata.find(ApiKeys::kMetadataKey);
  if (it == metadata.end()) return options_.api_keys->Authenticate(nullptr);
  const absl::string_view value(it->second.data(), it->second.size());
  return options_.api_keys->Authenticate(&value);
}

void FaceSrService::FinishUnary(grpc::ServerUnaryReactor* reactor, Rpc rpc, absl::Time start,
                                const absl::Status& status) {
  metrics_->RecordRequest(rpc, status.code(), absl::Now() - start);
  reactor->Finish(ToGrpcStatus(status));
}

grpc::ServerUnaryReactor* FaceSrService::RegisterReferences(
    grpc::CallbackServerContext* context, const v1::RegisterReferencesRequest* request,
    v1::RegisterReferencesResponse* response) {
  const absl::Time start = absl::Now();
  absl::StatusOr<std::string> tenant = Authenticate(*context);
  absl::Status status = tenant.ok() ? Accepting() : tenant.status();
  if (status.ok()) status = ValidateIdentityId(request->identity_id(), "identity_id");
  if (status.ok()) {
    status = ValidateReferenceCount(request->references_size(), runner_->metadata());
  }
  // Admission: a slot per registration until it is answered, taken here, so
  // a flood is refused at once instead of queueing without bound.
  if (status.ok() &&
      pending_registrations_.fetch_add(1) >= options_.max_pending_registrations) {
    pending_registrations_.fetch_sub(1);
    status = absl::ResourceExhaustedError(absl::StrCat(
        "RegisterReferences: ", options_.max_pending_registrations,
        " registrations are already in progress (max_pending_registrations); retry with "
        "backoff"));
  }
  if (!status.ok()) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    FinishUnary(reactor, Rpc::kRegisterReferences, start, status);
    return reactor;
  }
  RegistrationDeps deps;
  deps.runner = runner_;
  deps.batcher = batcher_;
  deps.decoder = decoder_;
  deps.cache = cache_;
  deps.metrics = metrics_;
  deps.shared = options_.shared;
  deps.image_limits = options_.image_limits;
  auto* reactor = new RegisterReferencesReactor(
      context, request, response, *std::move(tenant), deps, start, [this] { pending_registrations_.fetch_sub(1); });
  reactor->Start();
  return reactor;
}

grpc::ServerUnaryReactor* FaceSrService::Enhance(grpc::CallbackServerContext* context,
                                                 const v1::EnhanceRequest* request,
                                                 v1::EnhanceResponse* response) {
  const absl::Time start = absl::Now();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<std::string> tenant = Authenticate(*context);
  absl::Status status = tenant.ok() ? Accepting() : tenant.status();
  if (!status.ok()) {
    FinishUnary(reactor, Rpc::kEnhance, start, status);
    return reactor;
  }
  if (request->references_size() == 0) {
    PrepareAndSubmit(context, request, response, reactor, start, *tenant);
    return reactor;
  }
  // Inline references can be up to 8 large images: decoded on the decode pool
  // like a registration's, never on this gRPC thread.
  auto job = std::make_unique<JobTask>();
  job->deadline = ToAbslTime(context->deadline());
  job->is_cancelled = [context] { return context->IsCancelled(); };
  job->run = [this, context, request, response, reactor, start,
              tenant = *std::move(tenant)](absl::Status status) {
    if (!status.ok()) return FinishUnary(reactor, Rpc::kEnhance, start, status);
    PrepareAndSubmit(context, request, response, reactor, start, tenant);
  };
  status = decoder_->Submit(&job);
  if (!status.ok()) {
    FinishUnary(reactor, Rpc::kEnhance, start,
                absl::Status(status.code(), absl::StrCat("Enhance: reference decoding: ",
                                                         status.message())));
  }
  return reactor;
}

void FaceSrService::PrepareAndSubmit(grpc::CallbackServerContext* context,
                                     const v1::EnhanceRequest* request,
                                     v1::EnhanceResponse* response,
                                     grpc::ServerUnaryReactor* reactor, absl::Time start,
                                     const std::string& tenant) {
  ResponseFormat format;
  absl::StatusOr<std::unique_ptr<FrameTask>> task =
      handler_.Prepare(*request, tenant, ToAbslTime(context->deadline()), &format);
  if (!task.ok()) return FinishUnary(reactor, Rpc::kEnhance, start, task.status());
  // The context lives until Finish, and Finish comes only from `done`.
  (*task)->is_cancelled = [context] { return context->IsCancelled(); };
  (*task)->done = [this, reactor, response, start, format, sequence = request->sequence_number()](
                      absl::Status status, FrameTask& finished) {
    metrics_->RecordFrameDone(status.code());
    if (status.ok()) status = handler_.BuildResponse(finished, format, response);
    response->set_sequence_number(sequence);
    FinishUnary(reactor, Rpc::kEnhance, start, status);
  };
  const absl::Status status = handler_.Submit(&*task, *request, tenant);
  if (!status.ok()) FinishUnary(reactor, Rpc::kEnhance, start, status);
}

grpc::ServerBidiReactor<v1::EnhanceRequest, v1::EnhanceResponse>* FaceSrService::EnhanceStream(
    grpc::CallbackServerContext* context) {
  absl::StatusOr<std::string> tenant = Authenticate(*context);
  if (!tenant.ok()) {
    metrics_->RecordRequest(Rpc::kEnhanceStream, tenant.status().code(), absl::ZeroDuration());
    return new RefusedStreamReactor(tenant.status());
  }
  return new EnhanceStreamReactor(context, &handler_, decoder_, metrics_,
                                  options_.max_stream_frames_in_flight,
                                  [this] { return Accepting(); }, *std::move(tenant));
}

grpc::ServerUnaryReactor* FaceSrService::DeleteReferences(
    grpc::CallbackServerContext* context, const v1::DeleteReferencesRequest* request,
    v1::DeleteReferencesResponse* /*response*/) {
  const absl::Time start = absl::Now();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<std::string> tenant = Authenticate(*context);
  absl::Status status = tenant.ok() ? Accepting() : tenant.status();
  if (status.ok()) status = ValidateIdentityId(request->identity_id(), "identity_id");
  if (status.ok() && options_.shared != nullptr) {
    // Deleting from the store blocks: on the store pool, which finishes the call.
    auto job = std::make_unique<JobTask>();
    job->deadline = ToAbslTime(context->deadline());
    job->is_cancelled = [context] { return context->IsCancelled(); };
    job->run = [this, reactor, start, tenant = *tenant,
                identity_id = request->identity_id()](absl::Status status) {
      if (status.ok()) {
        absl::StatusOr<bool> deleted = options_.shared->Delete(tenant, identity_id);
        if (!deleted.ok()) {
          status = absl::UnavailableError(absl::StrCat(
              "DeleteReferences: ", deleted.status().message(),
              "; nothing was deleted, retry when it is back"));
        } else if (!*deleted) {
          status = IdentityNotFound(identity_id);
        }
      }
      FinishUnary(reactor, Rpc::kDeleteReferences, start, status);
    };
    status = options_.shared->Submit(&job);
    if (status.ok()) return reactor;
    status = absl::UnavailableError(absl::StrCat(
        "DeleteReferences: the shared reference store's queue refused the call (",
        status.message(), "); nothing was deleted, retry with backoff"));
  } else if (status.ok() && !cache_->Erase(ReferenceCacheKey(*tenant, request->identity_id()))) {
    status = IdentityNotFound(request->identity_id());
  }
  FinishUnary(reactor, Rpc::kDeleteReferences, start, status);
  return reactor;
}

namespace {

// The response of GetIdentity for what the cache holds under the identity.
void FillIdentity(const std::string& identity_id, const CachedIdentity& cached,
                  v1::GetIdentityResponse* response) {
  const IdentityUsage::Snapshot usage = cached.usage->snapshot();
  response->set_identity_id(identity_id);
  response->set_reference_count(cached.reference_count);
  response->set_feature_bytes(cached.feature_bytes);
  response->set_registered_time_unix_ms(absl::ToUnixMillis(usage.registered));
  response->set_last_used_time_unix_ms(absl::ToUnixMillis(usage.last_used));
  response->set_frames_served(usage.frames_served);
  response->mutable_mean_reference_weights()->Add(usage.mean_weights.begin(),
                                                  usage.mean_weights.end());
}

}  // namespace

grpc::ServerUnaryReactor* FaceSrService::GetIdentity(grpc::CallbackServerContext* context,
                                                     const v1::GetIdentityRequest* request,
                                                     v1::GetIdentityResponse* response) {
  const absl::Time start = absl::Now();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<std::string> tenant = Authenticate(*context);
  absl::Status status = tenant.status();
  if (status.ok()) status = ValidateIdentityId(request->identity_id(), "identity_id");
  if (status.ok()) {
    const std::string key = ReferenceCacheKey(*tenant, request->identity_id());
    if (std::optional<CachedIdentity> cached = cache_->Describe(key)) {
      FillIdentity(request->identity_id(), *cached, response);
    } else if (options_.shared != nullptr) {
      options_.shared->ReadThrough(
          *tenant, request->identity_id(),
          [this, reactor, start, response, key, identity_id = request->identity_id()](
              absl::StatusOr<std::shared_ptr<const ReferenceFeatures>> features) {
            absl::Status status = features.status();
            if (status.ok()) {
              std::optional<CachedIdentity> cached = cache_->Describe(key);
              if (cached.has_value()) {
                FillIdentity(identity_id, *cached, response);
              } else {
                status = IdentityNotFound(identity_id);
              }
            }
            FinishUnary(reactor, Rpc::kGetIdentity, start, status);
          });
      return reactor;
    } else {
      status = IdentityNotFound(request->identity_id());
    }
  }
  FinishUnary(reactor, Rpc::kGetIdentity, start, status);
  return reactor;
}

grpc::ServerUnaryReactor* FaceSrService::GetServerInfo(grpc::CallbackServerContext* context,
                                                       const v1::GetServerInfoRequest* /*request*/,
                                                       v1::GetServerInfoResponse* response) {
  const absl::Time start = absl::Now();
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  absl::StatusOr<std::string> tenant = Authenticate(*context);
  if (!tenant.ok()) {
    FinishUnary(reactor, Rpc::kGetServerInfo, start, tenant.status());
    return reactor;
  }
  const ModelMetadata& m = runner_->metadata();
  response->set_model_name(m.name);
  response->set_model_version(m.version);
  response->set_model_trained(m.trained);
  response->set_device(runner_->device_name());
  response->set_lr_size(m.lr_size);
  response->set_scale(m.scale);
  response->set_reference_size(m.reference_size);
  response->set_max_references(m.max_references);
  response->set_max_batch_size(options_.max_batch_size);
  response->set_max_queue_size(options_.max_queue_size);
  response->set_max_queue_delay_us(options_.max_queue_delay_us);
  response->set_max_message_bytes(options_.max_message_bytes);
  response->set_max_stream_frames_in_flight(options_.max_stream_frames_in_flight);
  response->set_reference_weights(runner_->has_reference_weights());
  FinishUnary(reactor, Rpc::kGetServerInfo, start, absl::OkStatus());
  return reactor;
}

}  // namespace fsrst
