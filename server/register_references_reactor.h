#ifndef FSRST_SERVER_REGISTER_REFERENCES_REACTOR_H_
#define FSRST_SERVER_REGISTER_REFERENCES_REACTOR_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "batching/dynamic_batcher.h"
#include "batching/worker_pool.h"
#include "fsrst/v1/fsrst.grpc.pb.h"
#include "model/model_runner.h"
#include "imaging/image_codec.h"
#include "server/reference_cache.h"
#include "server/server_metrics.h"
#include "server/shared_references.h"

namespace fsrst {

// What a registration works with; none owned, all outlive the gRPC server.
struct RegistrationDeps {
  ModelRunner* runner = nullptr;
  DynamicBatcher* batcher = nullptr;  // runs the encode as a job
  WorkerPool* decoder = nullptr;      // decodes the reference images
  ReferenceCache* cache = nullptr;
  ServerMetrics* metrics = nullptr;
  SharedReferences* shared = nullptr;  // null: no shared store
  ImageLimits image_limits;
};

// One RegisterReferences call after it was admitted: decodes the references
// on the decode pool, encodes them on a batcher worker (a job, taking turns
// with frames), stores them and answers. Never blocks a gRPC thread.
//
// Each stage is skipped, and the call answered, once the call's deadline has
// passed or its caller cancelled (DEADLINE_EXCEEDED / CANCELLED, nothing
// computed), or when a queue refuses it (RESOURCE_EXHAUSTED / UNAVAILABLE).
//
// With a shared store, the encoded call then goes to the store pool, which
// writes the normalised references and this model version's features through
// (Persist) before the features are cached and OK is sent; a store that
// cannot take them answers UNAVAILABLE and nothing is cached. An OK
// undelivered after that cannot be undone in the store (it keeps the new
// references, and other replicas were told to drop theirs); OnDone then drops
// the local copy instead of restoring the older one, so this replica reads
// through what every other replica serves.
//
// Stored iff answered OK: the features are inserted only while the call is
// still alive, then OK is sent; if gRPC then reports the OK undelivered (the
// deadline or a cancellation won the race), OnDone restores what the identity
// held before (ReferenceCache::Restore), unless it changed again meanwhile.
//
// Owns itself: deleted in OnDone, which gRPC calls only after Finish, and
// Finish is called exactly once, by the last stage that touches the reactor.
class RegisterReferencesReactor final : public grpc::ServerUnaryReactor {
 public:
  // `key` is the cache key of the identity (tenant-qualified). `on_done`
  // runs once the call is over (e.g. to release its admission slot).
  // `request` and `response` are gRPC's, valid until OnDone.
  RegisterReferencesReactor(grpc::CallbackServerContext* context,
                            const v1::RegisterReferencesRequest* request,
                            v1::RegisterReferencesResponse* response, std::string tenant,
                            const RegistrationDeps& deps, absl::Time start,
                            std::function<void()> on_done);

  // Hands the call to the decode pool. Call once, right after construction;
  // the reactor may be finished (not deleted) by the time it returns.
  void Start();

  void OnDone() override;

 private:
  // A stage's job: deadline and cancellation of this call, `stage` to run.
  std::unique_ptr<JobTask> MakeJob(void (RegisterReferencesReactor::*stage)(absl::Status));
  void Decode(absl::Status status);  // on a decode thread
  void Encode(absl::Status status);  // on a batcher worker
  void Persist(absl::Status status);  // on the store pool (shared store only)
  // Caches the encoded features and answers OK, unless the call is gone.
  void Commit();
  // Records and finishes the call; the last thing a stage does with `this`.
  void Answer(const absl::Status& status);

  grpc::CallbackServerContext* const context_;
  const v1::RegisterReferencesRequest* const request_;
  v1::RegisterReferencesResponse* const response_;
  const std::string tenant_;
  const std::string key_;
  const RegistrationDeps deps_;
  const absl::Time start_;
  const std::function<void()> on_done_;

  // Touched by one stage at a time, each handing over to the next through a
  // queue (which orders the accesses), and by OnDone after Finish.
  std::vector<float> luma_;  // decoded references; freed once encoded (and persisted)
  std::shared_ptr<const ReferenceFeatures> encoded_;  // between Encode and Commit
  std::shared_ptr<const ReferenceFeatures> stored_;    // what this call inserted
  std::shared_ptr<const ReferenceFeatures> replaced_;  // what it replaced, for Restore
};

}  // namespace fsrst

#endif  // FSRST_SERVER_REGISTER_REFERENCES_REACTOR_H_
