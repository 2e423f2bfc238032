#include "server/fsrst_server.h"

#include <algorithm>
#include <fstream>
#include <iostream>
#include <iterator>
#include <utility>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "server/api_key_auth.h"
#include "server/batch_runner.h"
#include "server/thread_priority.h"
#include "server/tls_options.h"
#include "store/redis_reference_store.h"
#include "store/value_sealer.h"

namespace fsrst {

absl::StatusOr<std::unique_ptr<FsrstServer>> FsrstServer::Start(const ServerConfig& config) {
  FSRST_RETURN_IF_ERROR(ValidateServerConfig(config));
  // Security settings are checked before the model loads: a typo fails fast.
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      MakeServerCredentials({config.tls_cert, config.tls_key, config.tls_client_ca});
  if (!credentials.ok()) return credentials.status();
  std::shared_ptr<const ApiKeys> api_keys;
  if (!config.api_keys_file.empty()) {
    absl::StatusOr<ApiKeys> keys = ApiKeys::FromFile(config.api_keys_file);
    if (!keys.ok()) return keys.status();
    api_keys = std::make_shared<const ApiKeys>(*std::move(keys));
  }

  // The store's secrets are read before the model loads, and never printed.
  std::unique_ptr<ValueSealer> sealer;
  std::string store_password;
  if (!config.reference_store.empty()) {
    absl::StatusOr<ValueSealer> loaded =
        ValueSealer::FromKeyFile(config.reference_store_key_file, "reference_store_key_file");
    if (!loaded.ok()) return loaded.status();
    sealer = std::make_unique<ValueSealer>(*std::move(loaded));
    if (!config.reference_store_password_file.empty()) {
      std::ifstream file(config.reference_store_password_file, std::ios::binary);
      if (!file) {
        return absl::InvalidArgumentError(
            absl::StrCat("--reference_store_password_file=", config.reference_store_password_file,
                         ": cannot open the file"));
      }
      store_password.assign(std::istreambuf_iterator<char>(file),
                            std::istreambuf_iterator<char>());
      // A trailing newline (echo pass > file, a Kubernetes Secret) is not part of it.
      while (!store_password.empty() &&
             (store_password.back() == '\n' || store_password.back() == '\r')) {
        store_password.pop_back();
      }
    }
  }

  std::unique_ptr<FsrstServer> s(new FsrstServer());
  ModelRunnerOptions model_options;
  model_options.device = config.device;
  model_options.num_instances = config.model_instances;
  model_options.num_threads = config.model_threads;
  absl::StatusOr<std::unique_ptr<ModelRunner>> runner =
      ModelRunner::Load(config.model_path, model_options);
  if (!runner.ok()) return runner.status();
  s->runner_ = *std::move(runner);
  const ModelMetadata& model = s->runner_->metadata();

  ReferenceCacheOptions cache_options;
  cache_options.capacity_bytes = config.cache_bytes;
  cache_options.idle_ttl = absl::Seconds(config.identity_ttl_s);
  s->cache_ = std::make_unique<ReferenceCache>(cache_options);

  MetricSources sources;
  ReferenceCache* cache = s->cache_.get();
  FsrstServer* self = s.get();
  sources.cache_stats = [cache] { return cache->stats(); };
  sources.queue_depth = [self] { return self->batcher_ ? self->batcher_->queue_size() : 0; };
  sources.registration_queue_depth = [self] {
    return self->batcher_ ? self->batcher_->job_queue_size() : 0;
  };
  sources.decode_queue_depth = [self] { return self->decoder_ ? self->decoder_->queued() : 0; };
  sources.registrations_pending = [self] {
    return self->service_ ? self->service_->pending_registrations() : 0;
  };
  const ModelParallelism& parallelism = s->runner_->parallelism();
  s->metrics_ = std::make_unique<ServerMetrics>(
      model.name, model.version, s->runner_->device_name(), model.trained,
      parallelism.instances, parallelism.threads, config.max_batch_size, std::move(sources));
  if (config.metrics_port >= 0) {
    ExposerOptions exposer;
    exposer.host = config.metrics_host.empty() ? config.host : config.metrics_host;
    exposer.port = config.metrics_port;
    exposer.num_threads = config.metrics_threads;
    exposer.request_timeout_ms = config.metrics_request_timeout_ms;
    absl::StatusOr<int> port = s->metrics_->StartExposer(exposer);
    if (!port.ok()) return port.status();
    s->metrics_port_ = *port;
  }

  DynamicBatcherOptions batcher_options;
  batcher_options.max_batch_size = config.max_batch_size;
  batcher_options.max_queue_delay_us = config.max_queue_delay_us;
  batcher_options.max_queue_size = config.max_queue_size;
  // Every job is an admitted registration (or the warm-up), so this bound is
  // reached only through --max_pending_registrations.
  batcher_options.max_queued_jobs = config.max_pending_registrations + 1;
  // Read-throughs encode as jobs too: one per store call admitted.
  if (sealer != nullptr) batcher_options.max_queued_jobs += config.max_queued_store_calls;
  batcher_options.num_workers = parallelism.instances;
  const int model_nice = config.model_nice;
  batcher_options.on_worker_start = [model_nice] {
    // Checked in Start; a kernel refusal only costs responsiveness, so it is not fatal.
    absl::Status lowered = LowerCurrentThreadPriority(model_nice);
    if (!lowered.ok()) std::cerr << "fsrst_server: model thread: " << lowered << std::endl;
  };
  s->batcher_ = std::make_unique<DynamicBatcher>(
      batcher_options, MakeBatchFunction(s->runner_.get(), s->metrics_.get()));

  // Decoding a registration's images (up to 8 x 16 Mpixel JPEGs) takes CPU
  // seconds: on threads of its own, at the model's priority, so gRPC threads
  // stay free for health checks, refusals and frames.
  WorkerPoolOptions decoder_options;
  decoder_options.num_threads = config.decode_threads;
  decoder_options.max_queued = config.max_queued_decodes;
  decoder_options.on_thread_start = [model_nice] {
    absl::Status lowered = LowerCurrentThreadPriority(model_nice);
    if (!lowered.ok()) std::cerr << "fsrst_server: decode thread: " << lowered << std::endl;
  };
  s->decoder_ = std::make_unique<WorkerPool>(decoder_options);

  if (sealer != nullptr) {
    WorkerPoolOptions store_pool_options;
    store_pool_options.num_threads = config.reference_store_threads;
    store_pool_options.max_queued = config.max_queued_store_calls;
    s->store_pool_ = std::make_unique<WorkerPool>(store_pool_options);
    RedisStoreOptions store_options;
    store_options.url = config.reference_store;
    store_options.password = std::move(store_password);
    store_options.key_prefix = config.reference_store_key_prefix;
    store_options.connect_timeout_ms = config.reference_store_connect_timeout_ms;
    store_options.command_timeout_ms = config.reference_store_timeout_ms;
    store_options.max_idle_connections = config.reference_store_threads + 1;
    ServerMetrics* metrics = s->metrics_.get();
    store_options.observer = [metrics](StoreOperation operation, absl::StatusCode code,
                                       absl::Duration duration) {
      metrics->RecordStoreRequest(operation, code, duration);
    };
    absl::StatusOr<std::unique_ptr<RedisReferenceStore>> store =
        RedisReferenceStore::Create(std::move(store_options), std::move(*sealer));
    if (!store.ok()) return store.status();
    SharedReferencesOptions shared_options;
    shared_options.ttl = absl::Seconds(config.identity_ttl_s);
    shared_options.revalidate_period = absl::Seconds(config.reference_store_revalidate_s);
    s->shared_ = std::make_unique<SharedReferences>(
        *std::move(store), s->cache_.get(), s->runner_.get(), s->batcher_.get(),
        s->store_pool_.get(), s->metrics_.get(), shared_options);
    s->shared_->Start();
  }

  ServiceOptions service_options;
  service_options.image_limits.max_pixels = config.max_image_pixels;
  service_options.image_limits.max_bytes = config.max_message_bytes;
  service_options.default_jpeg_quality = config.default_jpeg_quality;
  service_options.max_stream_frames_in_flight = config.max_stream_frames_in_flight;
  service_options.max_batch_size = config.max_batch_size;
  service_options.max_queue_size = config.max_queue_size;
  service_options.max_queue_delay_us = config.max_queue_delay_us;
  service_options.max_message_bytes = config.max_message_bytes;
  service_options.max_pending_registrations = config.max_pending_registrations;
  service_options.api_keys = std::move(api_keys);
  service_options.shared = s->shared_.get();
  s->service_ = std::make_unique<FaceSrService>(s->runner_.get(), s->batcher_.get(),
                                                s->decoder_.get(), s->cache_.get(),
                                                s->metrics_.get(), service_options);

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(absl::StrCat(config.host, ":", config.port),
                           *std::move(credentials), &s->port_);
  // Without this gRPC sets SO_REUSEPORT, and a second server on a port in use
  // starts, binds and takes part of the traffic.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(static_cast<int>(config.max_message_bytes));
  // A compressed request is inflated whole before the size limit above is
  // checked, so 1 MB of gzip could cost 1 GB. Refusing request compression
  // (UNIMPLEMENTED, before inflating) keeps a request's memory within
  // --max_message_bytes; images are JPEG or raw pixels that gzip barely shrinks.
  builder.SetCompressionAlgorithmSupportStatus(GRPC_COMPRESS_DEFLATE, false);
  builder.SetCompressionAlgorithmSupportStatus(GRPC_COMPRESS_GZIP, false);
  builder.RegisterService(s->service_.get());
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || s->port_ == 0) {
    return absl::UnavailableError(absl::StrCat(
        "--port: cannot listen on ", config.host, ":", config.port,
        " (in use by another process, or not an address of this host; see the log above)"));
  }
  grpc::HealthCheckServiceInterface* health = s->server_->GetHealthCheckService();
  health->SetServingStatus(false);

  // Warm up on a batcher worker, as every later model call runs.
  absl::Notification warmed;
  absl::Status warmup_status;
  absl::Status scheduled = s->batcher_->RunExclusive([&] {
    warmup_status = s->runner_->Warmup(config.max_batch_size);
    warmed.Notify();
  });
  if (!scheduled.ok()) return scheduled;
  warmed.WaitForNotification();
  if (!warmup_status.ok()) return warmup_status;

  const absl::Duration janitor_period =
      std::clamp(absl::Seconds(config.identity_ttl_s) / 10, absl::Milliseconds(100),
                 absl::Seconds(30));
  s->janitor_ = std::thread([self, janitor_period] { self->ExpireIdleLoop(janitor_period); });

  s->service_->SetServing();
  health->SetServingStatus(true);
  return s;
}

void FsrstServer::ExpireIdleLoop(absl::Duration period) {
  while (!stop_janitor_.WaitForNotificationWithTimeout(period)) cache_->ExpireIdle();
}

bool FsrstServer::Shutdown(absl::Duration drain_timeout) {
  {
    absl::MutexLock lock(&shutdown_mu_);
    if (shut_down_) return true;
    shut_down_ = true;
  }
  const absl::Time deadline = absl::Now() + drain_timeout;
  server_->GetHealthCheckService()->SetServingStatus(false);
  service_->StartDraining();
  // Registrations being decoded go on to the model, so the batcher takes jobs
  // until the decoders are idle; it takes no new frames or calls meanwhile,
  // since the service refuses them.
  const auto left = [deadline] { return std::max(deadline - absl::Now(), absl::ZeroDuration()); };
  bool drained = decoder_->WaitUntilIdle(left());
  // Registrations go on from the model to the store pool, and read-throughs
  // from the store pool to the model: wait for the store pool on both sides.
  if (store_pool_ != nullptr) drained = store_pool_->WaitUntilIdle(left()) && drained;
  batcher_->StartDraining();
  drained = batcher_->WaitUntilIdle(left()) && drained;
  if (store_pool_ != nullptr) drained = store_pool_->WaitUntilIdle(left()) && drained;
  // Whatever is still queued now is answered UNAVAILABLE, not computed: only
  // the decodes, store calls and model calls running now finish.
  decoder_->Stop();
  if (store_pool_ != nullptr) store_pool_->Stop();
  batcher_->Stop();
  // Answers of drained frames are on their way; give the calls a moment to end.
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  StopJanitor();
  return drained;
}

void FsrstServer::StopJanitor() {
  if (!stop_janitor_.HasBeenNotified()) stop_janitor_.Notify();
  if (janitor_.joinable()) janitor_.join();
}

FsrstServer::~FsrstServer() {
  if (server_ != nullptr) Shutdown(absl::Seconds(5));
  StopJanitor();
}

}  // namespace fsrst
