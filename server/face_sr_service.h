#ifndef FSRST_SERVER_FACE_SR_SERVICE_H_
#define FSRST_SERVER_FACE_SR_SERVICE_H_

#include <atomic>
#include <memory>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "batching/dynamic_batcher.h"
#include "batching/worker_pool.h"
#include "fsrst/v1/fsrst.grpc.pb.h"
#include "model/model_runner.h"
#include "server/api_key_auth.h"
#include "server/enhance_request_handler.h"
#include "imaging/image_codec.h"
#include "server/reference_cache.h"
#include "server/server_metrics.h"
#include "server/shared_references.h"

namespace fsrst {

struct ServiceOptions {
  ImageLimits image_limits;             // per decoded image: pixels and bytes
  int default_jpeg_quality = 95;        // JPEG answers when the request says 0
  int max_stream_frames_in_flight = 16;  // per EnhanceStream: read but not yet answered
  int max_batch_size = 8;               // reported by GetServerInfo
  int max_queue_size = 256;             // reported by GetServerInfo
  int64_t max_queue_delay_us = 2000;    // reported by GetServerInfo
  int64_t max_message_bytes = 0;        // reported by GetServerInfo
  // RegisterReferences calls accepted and not yet answered; beyond it
  // RESOURCE_EXHAUSTED at once.
  int max_pending_registrations = 32;
  // Null: every call is served and all share one namespace of identities.
  // Set: every call needs a key of it, and identities are per tenant.
  std::shared_ptr<const ApiKeys> api_keys;
  // Not owned; null: identities live in this process only. Set: registrations
  // are written through to the shared store, local misses read through from
  // it, and deletions are fleet-wide (see SharedReferences).
  SharedReferences* shared = nullptr;
};

// fsrst.v1.FaceSuperResolution on the gRPC callback API. Every handler
// validates, hands the work to the batcher (registrations, and Enhance and
// EnhanceStream frames with inline references: first to the decode pool, see
// RegisterReferencesReactor and EnhanceStreamReactor) and returns; a worker
// thread finishes the call. Until SetServing(), and after StartDraining(), new work
// is refused with UNAVAILABLE.
//
// With options.api_keys, every RPC first checks the caller's key
// (UNAUTHENTICATED without a valid one) and works on the key's tenant's
// identities only: another tenant's identity is NOT_FOUND with the very
// message of one that never existed. The health service is not this class
// and stays open for probes.
//
// Thread-safe. Not owned: runner, batcher, cache and metrics must outlive the
// service and the gRPC server it is registered with.
class FaceSrService final : public v1::FaceSuperResolution::CallbackService {
 public:
  // `decoder` decodes the references of registrations and inline references.
  FaceSrService(ModelRunner* runner, DynamicBatcher* batcher, WorkerPool* decoder,
                ReferenceCache* cache, ServerMetrics* metrics, ServiceOptions options);

  // From now on new calls are served (model loaded and warmed up).
  void SetServing();
  // From now on new calls and frames are refused with UNAVAILABLE.
  void StartDraining();

  // RegisterReferences calls accepted and not yet answered.
  int pending_registrations() const { return pending_registrations_.load(); }

  grpc::ServerUnaryReactor* RegisterReferences(grpc::CallbackServerContext* context,
                                               const v1::RegisterReferencesRequest* request,
                                               v1::RegisterReferencesResponse* response) override;
  grpc::ServerUnaryReactor* Enhance(grpc::CallbackServerContext* context,
                                    const v1::EnhanceRequest* request,
                                    v1::EnhanceResponse* response) override;
  grpc::ServerBidiReactor<v1::EnhanceRequest, v1::EnhanceResponse>* EnhanceStream(
      grpc::CallbackServerContext* context) override;
  grpc::ServerUnaryReactor* DeleteReferences(grpc::CallbackServerContext* context,
                                             const v1::DeleteReferencesRequest* request,
                                             v1::DeleteReferencesResponse* response) override;
  grpc::ServerUnaryReactor* GetServerInfo(grpc::CallbackServerContext* context,
                                          const v1::GetServerInfoRequest* request,
                                          v1::GetServerInfoResponse* response) override;
  // Reads the local cache only (no lock of the batch path); with a shared
  // store, a local miss is read through first, so every replica answers.
  grpc::ServerUnaryReactor* GetIdentity(grpc::CallbackServerContext* context,
                                        const v1::GetIdentityRequest* request,
                                        v1::GetIdentityResponse* response) override;

 private:
  enum class State { kStarting, kServing, kDraining };

  // OK while serving, else the UNAVAILABLE to answer with.
  absl::Status Accepting() const;
  // The caller's tenant ("" without API keys), or UNAUTHENTICATED.
  absl::StatusOr<std::string> Authenticate(const grpc::CallbackServerContext& context) const;
  // Enhance's work after the checks: decode, look up, hand to the batcher.
  // On a gRPC thread, or on the decode pool for requests with inline references.
  void PrepareAndSubmit(grpc::CallbackServerContext* context, const v1::EnhanceRequest* request,
                        v1::EnhanceResponse* response, grpc::ServerUnaryReactor* reactor,
                        absl::Time start, const std::string& tenant);
  // Finishes a unary call and records it.
  void FinishUnary(grpc::ServerUnaryReactor* reactor, Rpc rpc, absl::Time start,
                   const absl::Status& status);

  ModelRunner* const runner_;
  DynamicBatcher* const batcher_;
  WorkerPool* const decoder_;
  ReferenceCache* const cache_;
  ServerMetrics* const metrics_;
  const ServiceOptions options_;
  const EnhanceRequestHandler handler_;
  std::atomic<State> state_{State::kStarting};
  std::atomic<int> pending_registrations_{0};
};

}  // namespace fsrst

#endif  // FSRST_SERVER_FACE_SR_SERVICE_H_
