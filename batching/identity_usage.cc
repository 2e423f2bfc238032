#include "batching/identity_usage.h"

namespace fsrst {

IdentityUsage::IdentityUsage(int reference_count, absl::Time registered)
    : registered_(registered), last_used_(registered), weight_sums_(reference_count, 0.0) {}

void IdentityUsage::RecordFrame(absl::Span<const float> weights, absl::Time now) {
  absl::MutexLock lock(&mu_);
  ++frames_;
  if (now > last_used_) last_used_ = now;
  if (weights.empty() || weights.size() != weight_sums_.size()) return;
  ++weighted_frames_;
  for (size_t i = 0; i < weights.size(); ++i) weight_sums_[i] += weights[i];
}

IdentityUsage::Snapshot IdentityUsage::snapshot() const {
  Snapshot s;
  s.registered = registered_;
  absl::MutexLock lock(&mu_);
  s.last_used = last_used_;
  s.frames_served = frames_;
  if (weighted_frames_ > 0) {
    s.mean_weights.reserve(weight_sums_.size());
    for (double sum : weight_sums_) s.mean_weights.push_back(sum / weighted_frames_);
  }
  return s;
}

}  // namespace fsrst
