#include "server/server_metrics.h"

#include <exception>
#include <utility>
#include <vector>

#include <CivetServer.h>
#include <prometheus/collectable.h>
#include <prometheus/text_serializer.h>

#include "absl/strings/str_cat.h"

namespace fsrst {
namespace {

const char* RpcName(int rpc) {
  static constexpr const char* kNames[kNumRpcs] = {"RegisterReferences", "Enhance",
                                                   "EnhanceStream", "DeleteReferences",
                                                   "GetServerInfo", "GetIdentity"};
  return kNames[rpc];
}

std::string CodeName(int code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

int CodeIndex(absl::StatusCode code) {
  const int index = static_cast<int>(code);
  return index >= 0 && index < kNumStatusCodes ? index : static_cast<int>(absl::StatusCode::kUnknown);
}

// Latency buckets from 0.5 ms to 20 s, about x2 apart.
prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  return {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20};
}

prometheus::MetricFamily Level(const std::string& name, const std::string& help,
                               prometheus::MetricType type, double value) {
  prometheus::MetricFamily family;
  family.name = name;
  family.help = help;
  family.type = type;
  prometheus::ClientMetric metric;
  if (type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else {
    metric.gauge.value = value;
  }
  family.metric.push_back(std::move(metric));
  return family;
}

// What civetweb logged on this thread since it was last cleared.
std::string& CivetStartError() {
  thread_local std::string message;
  return message;
}

}  // namespace

// Reads levels owned elsewhere (the cache's counters, the queue) at scrape time.
class ServerMetrics::LevelCollector final : public prometheus::Collectable {
 public:
  explicit LevelCollector(MetricSources sources) : sources_(std::move(sources)) {}

  std::vector<prometheus::MetricFamily> Collect() const override {
    using prometheus::MetricType;
    std::vector<prometheus::MetricFamily> families;
    if (sources_.queue_depth) {
      families.push_back(Level("fsrst_queue_depth", "Frames waiting in the batcher's queue.",
                               MetricType::Gauge, sources_.queue_depth()));
    }
    if (sources_.registrations_pending) {
      families.push_back(Level(
          "fsrst_registrations_pending",
          "RegisterReferences calls accepted and not yet answered (decoding, waiting for the "
          "model or encoding); at --max_pending_registrations new ones are refused.",
          MetricType::Gauge, sources_.registrations_pending()));
    }
    if (sources_.registration_queue_depth) {
      families.push_back(Level("fsrst_registration_queue_depth",
                               "Registrations decoded and waiting for the model to encode them.",
                               MetricType::Gauge, sources_.registration_queue_depth()));
    }
    if (sources_.decode_queue_depth) {
      families.push_back(Level("fsrst_decode_queue_depth",
                               "Reference decodes (registrations, frames with inline "
                               "references) waiting for a decode thread (--decode_threads).",
                               MetricType::Gauge, sources_.decode_queue_depth()));
    }
    if (sources_.cache_stats) {
      const ReferenceCacheStats s = sources_.cache_stats();
      families.push_back(Level("fsrst_reference_cache_entries",
                               "Identities whose reference features are cached.",
                               MetricType::Gauge, s.entries));
      families.push_back(Level("fsrst_reference_cache_bytes",
                               "Bytes of reference features held on the model's device.",
                               MetricType::Gauge, s.bytes));
      families.push_back(Level("fsrst_reference_cache_hits_total",
                               "Lookups that found the identity's features.",
                               MetricType::Counter, s.hits));
      families.push_back(Level("fsrst_reference_cache_misses_total",
                               "Lookups of unknown, evicted or expired identities.",
                               MetricType::Counter, s.misses));
      families.push_back(Level("fsrst_reference_cache_evictions_total",
                               "Identities evicted to stay within the byte budget.",
                               MetricType::Counter, s.evictions));
      families.push_back(Level("fsrst_reference_cache_expirations_total",
                               "Identities removed after the idle TTL.", MetricType::Counter,
                               s.expirations));
    }
    return families;
  }

 private:
  const MetricSources sources_;
};

std::vector<double> BatchSizeBuckets(int max_batch_size) {
  std::vector<double> bounds;
  for (int size = 1; size <= max_batch_size; size = size < 16 ? size + 1 : size * 2) {
    bounds.push_back(size);
  }
  if (bounds.empty() || bounds.back() != max_batch_size) bounds.push_back(max_batch_size);
  return bounds;
}

ServerMetrics::ServerMetrics(const std::string& model_name, const std::string& model_version,
                             const std::string& device, bool trained, int model_instances,
                             int model_threads, int max_batch_size, MetricSources sources)
    : registry_(std::make_shared<prometheus::Registry>()),
      levels_(std::make_shared<LevelCollector>(std::move(sources))) {
  auto& requests = prometheus::BuildCounter()
                       .Name("fsrst_requests_total")
                       .Help("Finished RPCs by method and gRPC status code (a stream counts once).")
                       .Register(*registry_);
  auto& request_duration =
      prometheus::BuildHistogram()
          .Name("fsrst_request_duration_seconds")
          .Help("End-to-end RPC duration in the server, from arrival to the answer.")
          .Register(*registry_);
  for (int rpc = 0; rpc < kNumRpcs; ++rpc) {
    for (int code = 0; code < kNumStatusCodes; ++code) {
      requests_[rpc][code] = &requests.Add({{"rpc", RpcName(rpc)}, {"code", CodeName(code)}});
    }
    request_duration_[rpc] = &request_duration.Add({{"rpc", RpcName(rpc)}}, LatencyBuckets());
  }
  auto& stream_frames = prometheus::BuildCounter()
                            .Name("fsrst_stream_frames_total")
                            .Help("Frames answered on EnhanceStream, by status code.")
                            .Register(*registry_);
  for (int code = 0; code < kNumStatusCodes; ++code) {
    stream_frames_[code] = &stream_frames.Add({{"code", CodeName(code)}});
  }
  // Load shedding must be fast to be useful: a finer scale than LatencyBuckets.
  refused_duration_ =
      &prometheus::BuildHistogram()
           .Name("fsrst_refused_duration_seconds")
           .Help("Enhance calls refused with RESOURCE_EXHAUSTED (the frame queue was full): "
                 "time in the server from arrival to the answer.")
           .Register(*registry_)
           .Add({}, prometheus::Histogram::BucketBoundaries{0.0001, 0.0002, 0.0005, 0.001, 0.002,
                                                            0.005, 0.01, 0.02, 0.05});
  queue_duration_ = &prometheus::BuildHistogram()
                         .Name("fsrst_queue_duration_seconds")
                         .Help("Time a frame waited in the batcher's queue before its batch ran.")
                         .Register(*registry_)
                         .Add({}, LatencyBuckets());
  inference_duration_ = &prometheus::BuildHistogram()
                             .Name("fsrst_inference_duration_seconds")
                             .Help("Model time of one batch (forward and copies).")
                             .Register(*registry_)
                             .Add({}, LatencyBuckets());
  encode_duration_ = &prometheus::BuildHistogram()
                          .Name("fsrst_reference_encode_duration_seconds")
                          .Help("Model time to encode one identity's references.")
                          .Register(*registry_)
                          .Add({}, LatencyBuckets());
  batch_size_ = &prometheus::BuildHistogram()
                     .Name("fsrst_batch_size")
                     .Help("Frames per model call.")
                     .Register(*registry_)
                     .Add({}, BatchSizeBuckets(max_batch_size));
  reference_share_ =
      &prometheus::BuildHistogram()
           .Name("fsrst_reference_share")
           .Help("Per enhanced frame with references: the sum of its reference weights, the "
                 "share of the frame's aggregation the references carried (0: ignored).")
           .Register(*registry_)
           .Add({}, prometheus::Histogram::BucketBoundaries{0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6,
                                                            0.7, 0.8, 0.9, 0.95, 1.0});
  frames_enhanced_ = &prometheus::BuildCounter()
                          .Name("fsrst_frames_enhanced_total")
                          .Help("Frames the model enhanced.")
                          .Register(*registry_)
                          .Add({});
  auto& dropped = prometheus::BuildCounter()
                      .Name("fsrst_frames_dropped_total")
                      .Help("Frames dropped before inference: deadline passed or caller cancelled.")
                      .Register(*registry_);
  dropped_deadline_ = &dropped.Add({{"reason", "deadline_exceeded"}});
  dropped_cancelled_ = &dropped.Add({{"reason", "cancelled"}});
  active_streams_ = &prometheus::BuildGauge()
                         .Name("fsrst_active_streams")
                         .Help("Open EnhanceStream calls.")
                         .Register(*registry_)
                         .Add({});
  registrations_undone_ =
      &prometheus::BuildCounter()
           .Name("fsrst_registrations_undone_total")
           .Help("Registrations stored whose OK did not reach the caller (deadline or "
                 "cancellation won the race), and so were undone.")
           .Register(*registry_)
           .Add({});
  auto& store_requests =
      prometheus::BuildCounter()
          .Name("fsrst_store_requests_total")
          .Help("Calls to the shared reference store by operation and result (status code).")
          .Register(*registry_);
  auto& store_duration = prometheus::BuildHistogram()
                             .Name("fsrst_store_request_duration_seconds")
                             .Help("Duration of one call to the shared reference store.")
                             .Register(*registry_);
  for (int op = 0; op < kNumStoreOperations; ++op) {
    const char* name = StoreOperationName(static_cast<StoreOperation>(op));
    for (int code = 0; code < kNumStatusCodes; ++code) {
      store_requests_[op][code] = &store_requests.Add({{"operation", name},
                                                       {"result", CodeName(code)}});
    }
    store_duration_[op] = &store_duration.Add(
        {{"operation", name}},
        prometheus::Histogram::BucketBoundaries{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                                0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1});
  }
  auto& read_throughs =
      prometheus::BuildCounter()
          .Name("fsrst_reference_read_throughs_total")
          .Help("Local cache misses read through from the shared reference store, by result.")
          .Register(*registry_);
  for (int code = 0; code < kNumStatusCodes; ++code) {
    read_throughs_[code] = &read_throughs.Add({{"result", CodeName(code)}});
  }
  reencodes_ = &prometheus::BuildCounter()
                    .Name("fsrst_reference_reencodes_total")
                    .Help("References loaded from the shared store and encoded by this model.")
                    .Register(*registry_)
                    .Add({});
  stored_features_used_ =
      &prometheus::BuildCounter()
           .Name("fsrst_reference_stored_features_used_total")
           .Help("Read-throughs served by this model version's features from the shared "
                 "store, with no encode.")
           .Register(*registry_)
           .Add({});
  stored_features_refused_ =
      &prometheus::BuildCounter()
           .Name("fsrst_reference_stored_features_refused_total")
           .Help("Stored features of this model version refused as corrupt or of another "
                 "key, version or shape; the references were encoded instead.")
           .Register(*registry_)
           .Add({});
  invalidations_received_ =
      &prometheus::BuildCounter()
           .Name("fsrst_reference_invalidations_received_total")
           .Help("Messages from other replicas to drop an identity (deleted or replaced).")
           .Register(*registry_)
           .Add({});
  revalidation_drops_ =
      &prometheus::BuildCounter()
           .Name("fsrst_reference_revalidation_drops_total")
           .Help("Identities dropped because periodic validation found them deleted or "
                 "replaced in the shared store.")
           .Register(*registry_)
           .Add({});
  prometheus::BuildGauge()
      .Name("fsrst_model_info")
      .Help("The model this server runs (always 1; the labels carry the information).")
      .Register(*registry_)
      .Add({{"model", model_name},
            {"version", model_version},
            {"device", device},
            {"trained", trained ? "true" : "false"},
            {"instances", absl::StrCat(model_instances)},
            {"threads", absl::StrCat(model_threads)}})
      .Set(1);
}

ServerMetrics::~ServerMetrics() = default;

absl::StatusOr<int> ServerMetrics::StartExposer(const ExposerOptions& options) {
  const std::string address = absl::StrCat(options.host, ":", options.port);
  // civetweb's options (docs/UserManual.md of civetweb 1.15). request_timeout_ms
  // bounds the whole wait for a request's headers, not each read, so a client
  // that trickles a byte at a time is dropped too.
  std::vector<std::string> civet_options = {
      "listening_ports", address,
      "num_threads", absl::StrCat(options.num_threads),
      "request_timeout_ms", absl::StrCat(options.request_timeout_ms),
      "linger_timeout_ms", "0",
  };
  // civetweb reports why it could not start (e.g. the bind error) only to its
  // log callback; the exception says "null context". The log callback runs on
  // the thread that constructs the server, so a thread_local catches it.
  CivetCallbacks callbacks;
  callbacks.log_message = [](const mg_connection*, const char* message) {
    std::string& log = CivetStartError();
    absl::StrAppend(&log, log.empty() ? "" : "; ", message);
    return 1;
  };
  CivetStartError().clear();
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(std::move(civet_options), &callbacks);
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("--metrics_port: cannot serve /metrics on ", address, ": ",
                     CivetStartError().empty() ? e.what() : CivetStartError()));
  }
  exposer_->RegisterCollectable(registry_);
  exposer_->RegisterCollectable(levels_);
  const std::vector<int> ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

void ServerMetrics::RecordRequest(Rpc rpc, absl::StatusCode code, absl::Duration duration) {
  const int r = static_cast<int>(rpc);
  requests_[r][CodeIndex(code)]->Increment();
  request_duration_[r]->Observe(absl::ToDoubleSeconds(duration));
  if (rpc == Rpc::kEnhance && code == absl::StatusCode::kResourceExhausted) {
    refused_duration_->Observe(absl::ToDoubleSeconds(duration));
  }
}

void ServerMetrics::RecordStreamFrame(absl::StatusCode code) {
  stream_frames_[CodeIndex(code)]->Increment();
}

void ServerMetrics::RecordBatch(int batch_size, absl::Duration inference) {
  batch_size_->Observe(batch_size);
  inference_duration_->Observe(absl::ToDoubleSeconds(inference));
}

void ServerMetrics::RecordQueueDuration(absl::Duration queued) {
  queue_duration_->Observe(absl::ToDoubleSeconds(queued));
}

void ServerMetrics::RecordFramesEnhanced(int frames) { frames_enhanced_->Increment(frames); }

void ServerMetrics::RecordReferenceShare(double share) { reference_share_->Observe(share); }

void ServerMetrics::RecordFrameDone(absl::StatusCode code) {
  if (code == absl::StatusCode::kCancelled) dropped_cancelled_->Increment();
  if (code == absl::StatusCode::kDeadlineExceeded) dropped_deadline_->Increment();
}

void ServerMetrics::RecordReferenceEncode(absl::Duration duration) {
  encode_duration_->Observe(absl::ToDoubleSeconds(duration));
}

void ServerMetrics::RecordRegistrationUndone() { registrations_undone_->Increment(); }

void ServerMetrics::StreamOpened() { active_streams_->Increment(); }
void ServerMetrics::StreamClosed() { active_streams_->Decrement(); }

void ServerMetrics::RecordStoreRequest(StoreOperation operation, absl::StatusCode code,
                                       absl::Duration duration) {
  const int op = static_cast<int>(operation);
  store_requests_[op][CodeIndex(code)]->Increment();
  store_duration_[op]->Observe(absl::ToDoubleSeconds(duration));
}

void ServerMetrics::RecordReadThrough(absl::StatusCode code) {
  read_throughs_[CodeIndex(code)]->Increment();
}

void ServerMetrics::RecordReencode() { reencodes_->Increment(); }
void ServerMetrics::RecordStoredFeaturesUsed() { stored_features_used_->Increment(); }
void ServerMetrics::RecordStoredFeaturesRefused() { stored_features_refused_->Increment(); }
void ServerMetrics::RecordInvalidationReceived() { invalidations_received_->Increment(); }
void ServerMetrics::RecordRevalidationDrops(int identities) {
  revalidation_drops_->Increment(identities);
}

std::string ServerMetrics::SerializeText() const {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();
  std::vector<prometheus::MetricFamily> levels = levels_->Collect();
  families.insert(families.end(), levels.begin(), levels.end());
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace fsrst
