#ifndef FSRST_BATCHING_IDENTITY_USAGE_H_
#define FSRST_BATCHING_IDENTITY_USAGE_H_

#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace fsrst {

// What one registration of an identity has served since it was cached:
// frames, the last frame's time, and each reference's running mean weight.
// A registration that replaces it starts a new IdentityUsage, so the figures
// are always those of the references now in use.
//
// Frames update it once each, after their batch ran (the batch function), so
// the model's hot path takes no lock of it; GetIdentity reads a snapshot.
//
// Thread-safe: one small mutex of its own, held only to add or copy a few
// numbers. Shared by the cache entry and the frames in flight (shared_ptr).
class IdentityUsage {
 public:
  struct Snapshot {
    absl::Time registered;       // when this replica cached the references
    absl::Time last_used;        // last frame served; `registered` before the first
    int64_t frames_served = 0;   // frames the model enhanced with these references
    // Per reference, in registration order: the mean of its weight over the
    // frames that reported weights. Empty when none did (e.g. a model
    // without forward_with_weights).
    std::vector<double> mean_weights;
  };

  // REQUIRES: reference_count >= 0.
  IdentityUsage(int reference_count, absl::Time registered);

  IdentityUsage(const IdentityUsage&) = delete;
  IdentityUsage& operator=(const IdentityUsage&) = delete;

  // One frame served at `now` with `weights` (one per reference, or empty
  // when the model reports none; any other length counts the frame only).
  void RecordFrame(absl::Span<const float> weights, absl::Time now);

  Snapshot snapshot() const;

 private:
  const absl::Time registered_;
  mutable absl::Mutex mu_;
  absl::Time last_used_ ABSL_GUARDED_BY(mu_);
  int64_t frames_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t weighted_frames_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<double> weight_sums_ ABSL_GUARDED_BY(mu_);  // one per reference
};

}  // namespace fsrst

#endif  // FSRST_BATCHING_IDENTITY_USAGE_H_
