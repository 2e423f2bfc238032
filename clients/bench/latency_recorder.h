#ifndef FSRST_CLIENTS_BENCH_LATENCY_RECORDER_H_
#define FSRST_CLIENTS_BENCH_LATENCY_RECORDER_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace fsrst::bench {

// Summary of one measurement window.
struct LoadSummary {
  double duration_s = 0;
  int64_t frames_ok = 0;
  double throughput_fps = 0;  // frames answered OK per second
  double p50_ms = 0, p90_ms = 0, p99_ms = 0, max_ms = 0, mean_ms = 0;  // OK frames only
  std::map<std::string, int64_t> errors;  // by gRPC status code name
  // How long failed calls took to fail, by code (calls with a known start only):
  // overload answers (RESOURCE_EXHAUSTED) must come back fast.
  struct ErrorLatency {
    int64_t timed = 0;  // errors of this code with a latency
    double p50_ms = 0, p99_ms = 0, max_ms = 0;
    // The same errors timed from the moment the call was issued, where known
    // (open loop: it can leave later than its scheduled arrival).
    int64_t timed_from_send = 0;
    double p50_from_send_ms = 0, p99_from_send_ms = 0, max_from_send_ms = 0;
  };
  std::map<std::string, ErrorLatency> error_latency;
  // The first error message seen for each code: what the server said, for the reader.
  std::map<std::string, std::string> error_examples;
  // Open loop: how late each call was issued against its scheduled arrival
  // (the load generator's own delay; count 0 in closed loop).
  int64_t send_lag_count = 0;
  double send_lag_p50_ms = 0, send_lag_p99_ms = 0, send_lag_max_ms = 0;
};

// Collects per-frame outcomes from many threads; only those recorded while
// `measuring` is on count (the warm-up is excluded). Thread-safe.
class LatencyRecorder {
 public:
  // Starts counting now.
  void StartMeasuring();
  // Stops counting; the window ends now.
  void StopMeasuring();
  bool measuring() const;

  void RecordOk(absl::Duration latency);
  // `latency`: from the call's start to its error; InfiniteDuration() if unknown
  // (a stream that ended), which counts the error but not its latency.
  void RecordError(const std::string& code, absl::Duration latency);
  // Also `since_send`: from the moment the call was issued to its error.
  void RecordError(const std::string& code, absl::Duration latency, absl::Duration since_send);
  // Keeps `message` as the example of `code` if it is the first one in the window.
  void NoteErrorMessage(const std::string& code, const std::string& message);
  // Open loop: the call left `lag` after its scheduled arrival.
  void RecordSendLag(absl::Duration lag);

  // Frames answered OK so far in the window (for the progress line).
  int64_t frames_ok() const;
  LoadSummary Summarize() const;
  // Sorted OK latencies in ms (for CDF plots).
  std::vector<double> SortedLatenciesMs() const;

 private:
  mutable absl::Mutex mu_;
  bool measuring_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time start_ ABSL_GUARDED_BY(mu_);
  absl::Time stop_ ABSL_GUARDED_BY(mu_);
  std::vector<double> latencies_ms_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int64_t> errors_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::vector<double>> error_latencies_ms_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::vector<double>> error_latencies_from_send_ms_ ABSL_GUARDED_BY(mu_);
  std::vector<double> send_lags_ms_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> error_examples_ ABSL_GUARDED_BY(mu_);
};

// The summary and the run's settings as one JSON object. `paired_raw`, if not
// null, adds the raw forwards of --mode=paired as "paired_raw".
std::string ToJson(const LoadSummary& summary, const std::map<std::string, std::string>& config,
                   const std::vector<double>& sorted_latencies_ms,
                   const LoadSummary* paired_raw = nullptr);

}  // namespace fsrst::bench

#endif  // FSRST_CLIENTS_BENCH_LATENCY_RECORDER_H_
