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
#include "model/model_runner.h"
#include "server/face_sr_service.h"
#include "server/reference_cache.h"
#include "server/server_metrics.h"

namespace fsrst {

// Everything fsrst_server can be told; the flags in fsrst_server_main.cc mirror it.
struct ServerConfig {
  std::string model_path;                 // TorchScript file from model/fsrst/export.py
  std::string device = "auto";            // auto | cpu | cuda | cuda:N
  int model_instances = 0;                // model calls side by side; 0 = auto (1 per core on CPU)
  int model_threads = 0;                  // intra-op CPU threads per call; 0 = auto
  int model_nice = 5;                     // nice increment of the model's threads (0..19)
  std::string host = "0.0.0.0";           // address both ports bind
  int port = 50051;                       // gRPC; 0 picks a free port
  int metrics_port = 9464;                // Prometheus /metrics; 0 picks one, -1 disables
  int max_batch_size = 8;                 // frames per model call; CPU gains little beyond 8
  int64_t max_queue_delay_us = 2000;      // a partial batch waits at most this for more frames
  int max_queue_size = 128;               // queued frames beyond this: RESOURCE_EXHAUSTED
  int64_t cache_bytes = int64_t{1} << 30;  // reference-feature budget (36 KiB per 3 references)
  int64_t identity_ttl_s = 1800;          // an identity unused this long is dropped
  int max_stream_frames_in_flight = 16;   // per stream: frames read but not yet answered
  int64_t max_message_bytes = 8 << 20;    // largest request accepted
  int64_t max_image_pixels = 4096 * 4096;  // largest decoded image (checked from the header)
  int default_jpeg_quality = 95;          // JPEG answers when the request says 0
  std::string tls_cert;                   // PEM certificate chain; with tls_key: TLS on the gRPC port
  std::string tls_key;                    // PEM private key of tls_cert
  std::string tls_client_ca;              // PEM CA; set: mTLS, client certificates required
  std::string api_keys_file;              // `<key> <tenant>` lines; empty: open, single tenant
};

// The whole server: model runner, dynamic batcher, reference cache, metrics,
// the gRPC service with health checking and reflection.
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
  // queued (at most `drain_timeout`), then stops the gRPC server. Returns
  // whether everything queued finished in time. Idempotent.
  bool Shutdown(absl::Duration drain_timeout);

  int port() const { return port_; }
  int metrics_port() const { return metrics_port_; }
  const ModelMetadata& model() const { return runner_->metadata(); }
  const ModelParallelism& model_parallelism() const { return runner_->parallelism(); }
  ServerMetrics& metrics() { return *metrics_; }
  ReferenceCache& cache() { return *cache_; }

 private:
  FsrstServer() = default;
  void ExpireIdleLoop(absl::Duration period);
  void StopJanitor();  // idempotent; only Shutdown and the destructor call it

  // Declared in dependency order: destroyed from the gRPC server down.
  std::unique_ptr<ModelRunner> runner_;
  std::unique_ptr<ReferenceCache> cache_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<DynamicBatcher> batcher_;
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
