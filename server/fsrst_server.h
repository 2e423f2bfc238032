#ifndef FSRST_SERVER_FSRST_SERVER_H_
#define FSRST_SERVER_FSRST_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "batching/dynamic_batcher.h"
#include "batching/worker_pool.h"
#include "model/model_runner.h"
#include "server/face_sr_service.h"
#include "server/reference_cache.h"
#include "server/server_config.h"
#include "server/server_metrics.h"
#include "server/shared_references.h"

namespace fsrst {

// The whole server: model runner, dynamic batcher, reference cache (and the
// shared reference store behind it, with --reference_store), metrics, the
// gRPC service with health checking and reflection.
//
// Start() returns once the server reports SERVING. Thread-safe.
class FsrstServer {
 public:
  // Loads the model, starts the gRPC server reporting NOT_SERVING, warms up
  // every batch size, then reports SERVING. Fails (and serves nothing) if
  // the model cannot be loaded or a port cannot be bound.
  static absl::StatusOr<std::unique_ptr<FsrstServer>> Start(const ServerConfig& config);

  // Shuts down with a drain of `drain_timeout` if Shutdown was not called.
  ~FsrstServer();

  FsrstServer(const FsrstServer&) = delete;
  FsrstServer& operator=(const FsrstServer&) = delete;

  // Reports NOT_SERVING, refuses new work with UNAVAILABLE, finishes what is
  // queued (at most `drain_timeout`), then stops the gRPC server. When the
  // time is up, what is still queued is answered UNAVAILABLE without being
  // computed, so it returns within one model call (or one reference decode)
  // of the timeout. Returns whether everything queued finished in time.
  // Idempotent.
  bool Shutdown(absl::Duration drain_timeout);

  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }
  const ModelMetadata& model() const { return runner_->metadata(); }
  const ModelParallelism& model_parallelism() const { return runner_->parallelism(); }
  ServerMetrics& metrics() { return *metrics_; }
  ReferenceCache& cache() { return *cache_; }
  // The reference decode pool (--decode_threads, --max_queued_decodes).
  WorkerPool& decoder() { return *decoder_; }
  // The model's queue and workers (tests hold the model with a job to fill the queue).
  DynamicBatcher& batcher() { return *batcher_; }
  // The shared reference store's side of the cache; null without one.
  SharedReferences* shared_references() { return shared_.get(); }

 private:
  FsrstServer() = default;
  void ExpireIdleLoop(absl::Duration period);
  void StopJanitor();  // idempotent; only Shutdown and the destructor call it

  // Declared in dependency order: destroyed from the gRPC server down.
  std::unique_ptr<ModelRunner> runner_;
  std::unique_ptr<ReferenceCache> cache_;
  std::unique_ptr<ServerMetrics> metrics_;
  // Before the pools and the batcher, whose jobs call it until they stop.
  std::unique_ptr<SharedReferences> shared_;  // null without --reference_store
  std::unique_ptr<DynamicBatcher> batcher_;
  std::unique_ptr<WorkerPool> decoder_;  // decodes registrations' references
  std::unique_ptr<WorkerPool> store_pool_;  // blocking store calls; null without a store
  std::unique_ptr<FaceSrService> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  int metrics_port_ = -1;

  absl::Notification stop_janitor_;
  std::thread janitor_;  // expires idle identities
  absl::Mutex shutdown_mu_;
  bool shut_down_ ABSL_GUARDED_BY(shutdown_mu_) = false;
};

}  // namespace fsrst

#endif  // FSRST_SERVER_FSRST_SERVER_H_
