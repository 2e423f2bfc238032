#ifndef FSRST_SERVER_SERVER_METRICS_H_
#define FSRST_SERVER_SERVER_METRICS_H_

#include <array>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/reference_cache.h"
#include "store/reference_store.h"

namespace fsrst {

// The RPCs, as the `rpc` label of request metrics.
enum class Rpc {
  kRegisterReferences,
  kEnhance,
  kEnhanceStream,
  kDeleteReferences,
  kGetServerInfo,
  kGetIdentity
};
inline constexpr int kNumRpcs = 6;
inline constexpr int kNumStatusCodes = 17;  // absl::StatusCode 0..16

// Where and how /metrics is served.
struct ExposerOptions {
  std::string host = "0.0.0.0";  // address to bind
  int port = 9464;               // 0 picks a free one
  int num_threads = 4;           // HTTP workers; a slow or idle connection holds one
  int64_t request_timeout_ms = 2000;  // a request not received whole by then is dropped
};

// Levels read when Prometheus scrapes, instead of being pushed on every change.
struct MetricSources {
  std::function<ReferenceCacheStats()> cache_stats;
  std::function<int()> queue_depth;              // frames waiting for the model
  std::function<int()> registrations_pending;    // admitted, not yet answered
  std::function<int()> registration_queue_depth;  // decoded, waiting for the model
  std::function<int()> decode_queue_depth;       // reference decodes waiting for a decode thread
};

// Owns the Prometheus registry and every fsrst_* metric family, built once.
// Everything else holds a pointer to this and calls the Record* methods.
//
// Thread-safe: every method may be called from any thread; the hot-path
// methods touch pre-built counters and histograms only (no label lookups, no
// allocation).
// Bucket bounds of fsrst_batch_size for batches of 1..max_batch_size: every size up to 16,
// beyond that the powers of two below max_batch_size and max_batch_size itself.
std::vector<double> BatchSizeBuckets(int max_batch_size);

class ServerMetrics {
 public:
  // The model's name, version, device, trained flag and instances x threads
  // become the labels of fsrst_model_info; max_batch_size sets fsrst_batch_size's
  // buckets (BatchSizeBuckets).
  ServerMetrics(const std::string& model_name, const std::string& model_version,
                const std::string& device, bool trained, int model_instances, int model_threads,
                int max_batch_size, MetricSources sources);
  ~ServerMetrics();

  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  // Serves /metrics as `options` say. Returns the port it listens on, or
  // UNAVAILABLE naming the address and the cause (e.g. "Address already in
  // use"). Slow or idle connections hold a worker each for at most
  // options.request_timeout_ms, so scrapes go on while fewer than
  // options.num_threads of them are open, and are delayed by at most that
  // timeout when more are. Call at most once.
  absl::StatusOr<int> StartExposer(const ExposerOptions& options);

  // A finished RPC (for streams: the whole stream) and its end-to-end duration.
  void RecordRequest(Rpc rpc, absl::StatusCode code, absl::Duration duration);
  // One frame of a stream finished with `code`.
  void RecordStreamFrame(absl::StatusCode code);
  // One batch ran: its size, the model time, and each frame's wait in the queue
  // is recorded by RecordQueueDuration.
  void RecordBatch(int batch_size, absl::Duration inference);
  void RecordQueueDuration(absl::Duration queued);
  void RecordFramesEnhanced(int frames);
  // One enhanced frame's reference share: the sum of its reference weights
  // (frames without references or weights are not recorded).
  void RecordReferenceShare(double share);
  // A frame handed to the batcher came back with `code`; DEADLINE_EXCEEDED and
  // CANCELLED mean the batcher dropped it before inference.
  void RecordFrameDone(absl::StatusCode code);
  void RecordReferenceEncode(absl::Duration duration);
  // A registration was stored, but its OK never reached the caller, so it was undone.
  void RecordRegistrationUndone();
  void StreamOpened();
  void StreamClosed();

  // The shared reference store (--reference_store); all zero without one.
  // One store operation finished with `code` after `duration`.
  void RecordStoreRequest(StoreOperation operation, absl::StatusCode code,
                          absl::Duration duration);
  // A local miss was read through from the store (once per load, however
  // many frames waited for it), with its outcome.
  void RecordReadThrough(absl::StatusCode code);
  // References loaded from the store were encoded by this replica's model.
  void RecordReencode();
  // A read-through was served by features of this model version from the
  // store, without encoding anything.
  void RecordStoredFeaturesUsed();
  // Features of this model version in the store were refused (corrupt,
  // another key, shape or version); the read-through re-encoded instead.
  void RecordStoredFeaturesRefused();
  // Another replica told this one to drop an identity.
  void RecordInvalidationReceived();
  // Identities dropped because a periodic validation found them deleted or
  // replaced in the store (the invalidation message was missed).
  void RecordRevalidationDrops(int identities);

  // The text Prometheus would scrape now (tests, debugging).
  std::string SerializeText() const;

 private:
  class LevelCollector;

  std::shared_ptr<prometheus::Registry> registry_;
  std::shared_ptr<LevelCollector> levels_;
  std::unique_ptr<prometheus::Exposer> exposer_;

  std::array<std::array<prometheus::Counter*, kNumStatusCodes>, kNumRpcs> requests_{};
  std::array<prometheus::Histogram*, kNumRpcs> request_duration_{};
  std::array<prometheus::Counter*, kNumStatusCodes> stream_frames_{};
  prometheus::Histogram* queue_duration_ = nullptr;
  prometheus::Histogram* refused_duration_ = nullptr;  // Enhance, RESOURCE_EXHAUSTED
  prometheus::Histogram* inference_duration_ = nullptr;
  prometheus::Histogram* encode_duration_ = nullptr;
  prometheus::Histogram* batch_size_ = nullptr;
  prometheus::Histogram* reference_share_ = nullptr;
  prometheus::Counter* frames_enhanced_ = nullptr;
  prometheus::Counter* dropped_deadline_ = nullptr;
  prometheus::Counter* dropped_cancelled_ = nullptr;
  prometheus::Gauge* active_streams_ = nullptr;
  prometheus::Counter* registrations_undone_ = nullptr;
  std::array<std::array<prometheus::Counter*, kNumStatusCodes>, kNumStoreOperations>
      store_requests_{};
  std::array<prometheus::Histogram*, kNumStoreOperations> store_duration_{};
  std::array<prometheus::Counter*, kNumStatusCodes> read_throughs_{};
  prometheus::Counter* reencodes_ = nullptr;
  prometheus::Counter* stored_features_used_ = nullptr;
  prometheus::Counter* stored_features_refused_ = nullptr;
  prometheus::Counter* invalidations_received_ = nullptr;
  prometheus::Counter* revalidation_drops_ = nullptr;
};

}  // namespace fsrst

#endif  // FSRST_SERVER_SERVER_METRICS_H_
