#include "clients/bench/latency_recorder.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace fsrst::bench {
namespace {

double Percentile(const std::vector<double>& sorted, double q) {
  if (sorted.empty()) return 0;
  const size_t index = static_cast<size_t>(std::ceil(q * sorted.size())) - (q > 0 ? 1 : 0);
  return sorted[std::min(index, sorted.size() - 1)];
}

struct Quantiles {
  double p50 = 0, p99 = 0, max = 0;
};

Quantiles QuantilesOf(std::vector<double> values) {
  if (values.empty()) return {};
  std::sort(values.begin(), values.end());
  return {Percentile(values, 0.50), Percentile(values, 0.99), values.back()};
}

// Doubles with 10 significant digits (StrCat keeps only 6).
std::string Num(double v) { return absl::StrFormat("%.10g", v); }

std::string Quote(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", c);  // error messages may hold newlines
    } else {
      out += c;
    }
  }
  return out + "\"";
}

}  // namespace

void LatencyRecorder::StartMeasuring() {
  absl::MutexLock lock(&mu_);
  measuring_ = true;
  start_ = absl::Now();
  latencies_ms_.clear();
  errors_.clear();
  error_latencies_ms_.clear();
  error_latencies_from_send_ms_.clear();
  send_lags_ms_.clear();
  error_examples_.clear();
}

void LatencyRecorder::StopMeasuring() {
  absl::MutexLock lock(&mu_);
  measuring_ = false;
  stop_ = absl::Now();
}

bool LatencyRecorder::measuring() const {
  absl::MutexLock lock(&mu_);
  return measuring_;
}

void LatencyRecorder::RecordOk(absl::Duration latency) {
  absl::MutexLock lock(&mu_);
  if (measuring_) latencies_ms_.push_back(absl::ToDoubleMilliseconds(latency));
}

void LatencyRecorder::RecordError(const std::string& code, absl::Duration latency) {
  absl::MutexLock lock(&mu_);
  if (!measuring_) return;
  ++errors_[code];
  if (latency != absl::InfiniteDuration()) {
    error_latencies_ms_[code].push_back(absl::ToDoubleMilliseconds(latency));
  }
}

void LatencyRecorder::RecordError(const std::string& code, absl::Duration latency,
                                  absl::Duration since_send) {
  absl::MutexLock lock(&mu_);
  if (!measuring_) return;
  ++errors_[code];
  error_latencies_ms_[code].push_back(absl::ToDoubleMilliseconds(latency));
  error_latencies_from_send_ms_[code].push_back(absl::ToDoubleMilliseconds(since_send));
}

void LatencyRecorder::NoteErrorMessage(const std::string& code, const std::string& message) {
  absl::MutexLock lock(&mu_);
  if (measuring_) error_examples_.emplace(code, message);  // keeps the first
}

void LatencyRecorder::RecordSendLag(absl::Duration lag) {
  absl::MutexLock lock(&mu_);
  if (measuring_) send_lags_ms_.push_back(absl::ToDoubleMilliseconds(lag));
}

int64_t LatencyRecorder::frames_ok() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int64_t>(latencies_ms_.size());
}

std::vector<double> LatencyRecorder::SortedLatenciesMs() const {
  std::vector<double> sorted;
  {
    absl::MutexLock lock(&mu_);
    sorted = latencies_ms_;
  }
  std::sort(sorted.begin(), sorted.end());
  return sorted;
}

LoadSummary LatencyRecorder::Summarize() const {
  LoadSummary s;
  const std::vector<double> sorted = SortedLatenciesMs();
  absl::MutexLock lock(&mu_);
  const absl::Time end = measuring_ ? absl::Now() : stop_;
  s.duration_s = absl::ToDoubleSeconds(end - start_);
  s.frames_ok = static_cast<int64_t>(sorted.size());
  s.throughput_fps = s.duration_s > 0 ? s.frames_ok / s.duration_s : 0;
  s.p50_ms = Percentile(sorted, 0.50);
  s.p90_ms = Percentile(sorted, 0.90);
  s.p99_ms = Percentile(sorted, 0.99);
  s.max_ms = sorted.empty() ? 0 : sorted.back();
  s.mean_ms = sorted.empty() ? 0 : std::accumulate(sorted.begin(), sorted.end(), 0.0) / sorted.size();
  s.errors = errors_;
  for (const auto& [code, latencies] : error_latencies_ms_) {
    LoadSummary::ErrorLatency& e = s.error_latency[code];
    e.timed = static_cast<int64_t>(latencies.size());
    const Quantiles q = QuantilesOf(latencies);
    e.p50_ms = q.p50, e.p99_ms = q.p99, e.max_ms = q.max;
  }
  for (const auto& [code, latencies] : error_latencies_from_send_ms_) {
    LoadSummary::ErrorLatency& e = s.error_latency[code];
    e.timed_from_send = static_cast<int64_t>(latencies.size());
    const Quantiles q = QuantilesOf(latencies);
    e.p50_from_send_ms = q.p50, e.p99_from_send_ms = q.p99, e.max_from_send_ms = q.max;
  }
  s.error_examples = error_examples_;
  s.send_lag_count = static_cast<int64_t>(send_lags_ms_.size());
  const Quantiles lag = QuantilesOf(send_lags_ms_);
  s.send_lag_p50_ms = lag.p50, s.send_lag_p99_ms = lag.p99, s.send_lag_max_ms = lag.max;
  return s;
}

std::string ToJson(const LoadSummary& s, const std::map<std::string, std::string>& config,
                   const std::vector<double>& sorted_latencies_ms,
                   const LoadSummary* paired_raw) {
  std::vector<std::string> config_fields;
  for (const auto& [key, value] : config) config_fields.push_back(Quote(key) + ": " + Quote(value));
  std::vector<std::string> error_fields;
  for (const auto& [code, count] : s.errors) error_fields.push_back(Quote(code) + ": " + absl::StrCat(count));
  std::vector<std::string> error_latency_fields;
  for (const auto& [code, e] : s.error_latency) {
    std::string fields = absl::StrCat("\"timed\": ", e.timed, ", \"p50\": ", Num(e.p50_ms),
                                      ", \"p99\": ", Num(e.p99_ms), ", \"max\": ", Num(e.max_ms));
    if (e.timed_from_send > 0) {
      absl::StrAppend(&fields, ", \"from_send\": {\"timed\": ", e.timed_from_send,
                      ", \"p50\": ", Num(e.p50_from_send_ms), ", \"p99\": ",
                      Num(e.p99_from_send_ms), ", \"max\": ", Num(e.max_from_send_ms), "}");
    }
    error_latency_fields.push_back(absl::StrCat(Quote(code), ": {", fields, "}"));
  }
  std::vector<std::string> example_fields;
  for (const auto& [code, message] : s.error_examples) {
    example_fields.push_back(Quote(code) + ": " + Quote(message));
  }
  std::string send_lag;
  if (s.send_lag_count > 0) {
    send_lag = absl::StrCat(",\n  \"send_lag_ms\": {\"count\": ", s.send_lag_count,
                            ", \"p50\": ", Num(s.send_lag_p50_ms), ", \"p99\": ",
                            Num(s.send_lag_p99_ms), ", \"max\": ", Num(s.send_lag_max_ms), "}");
  }
  std::string paired;
  if (paired_raw != nullptr) {
    const LoadSummary& r = *paired_raw;
    paired = absl::StrCat(",\n  \"paired_raw\": {\"frames_ok\": ", r.frames_ok,
                          ", \"latency_ms\": {\"p50\": ", Num(r.p50_ms), ", \"p90\": ",
                          Num(r.p90_ms), ", \"p99\": ", Num(r.p99_ms), ", \"max\": ",
                          Num(r.max_ms), ", \"mean\": ", Num(r.mean_ms), "}}");
  }
  // A 101-point CDF (every percentile) keeps the file small and plottable.
  std::vector<std::string> cdf;
  for (int q = 0; q <= 100; ++q) cdf.push_back(Num(Percentile(sorted_latencies_ms, q / 100.0)));
  return absl::StrCat(
      "{\n  \"config\": {", absl::StrJoin(config_fields, ", "), "},\n",
      "  \"duration_s\": ", Num(s.duration_s), ",\n  \"frames_ok\": ", s.frames_ok,
      ",\n  \"throughput_fps\": ", Num(s.throughput_fps),
      ",\n  \"latency_ms\": {\"p50\": ", Num(s.p50_ms), ", \"p90\": ", Num(s.p90_ms),
      ", \"p99\": ", Num(s.p99_ms), ", \"max\": ", Num(s.max_ms), ", \"mean\": ", Num(s.mean_ms),
      "},\n  \"errors\": {", absl::StrJoin(error_fields, ", "),
      "},\n  \"error_latency_ms\": {", absl::StrJoin(error_latency_fields, ", "),
      "},\n  \"error_examples\": {", absl::StrJoin(example_fields, ", "), "}",
      send_lag, paired, ",\n  \"latency_cdf_ms\": [", absl::StrJoin(cdf, ", "), "]\n}\n");
}

}  // namespace fsrst::bench
