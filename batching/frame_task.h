#ifndef FSRST_BATCHING_FRAME_TASK_H_
#define FSRST_BATCHING_FRAME_TASK_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "batching/identity_usage.h"
#include "model/reference_features.h"

namespace fsrst {

// One low-resolution frame waiting to be enhanced, with everything the batch
// needs to run it and to answer its caller. Owned by whoever holds the
// unique_ptr: the caller until DynamicBatcher::Enqueue succeeds, the batcher
// after that. Not thread-safe; only one thread touches a task at a time.
struct FrameTask {
  // --- Inputs, set by the caller before Enqueue. ---

  // The frame, interleaved RGB8, lr_size x lr_size x 3 bytes.
  std::vector<uint8_t> frame_rgb;

  // The identity's encoded references, shared with the reference cache; the
  // shared_ptr keeps the cache entry pinned until the task is destroyed.
  // Null means no references (the model's single-image fallback, K = 0).
  std::shared_ptr<const ReferenceFeatures> references;

  // Inline references for this frame only (the uncached path): count x R x R
  // luma floats in [0,1], encoded inside the frame's batch. Used only when
  // `references` is null; empty means no references.
  std::vector<float> reference_luma;
  int reference_luma_count = 0;

  // The usage counters of the registration `references` came from, or null
  // (inline references, none, or an unknown registration). The batch
  // function records the frame in it once the model has run.
  std::shared_ptr<IdentityUsage> usage;

  // The frame is dropped, not computed, if the batch would start after this.
  absl::Time deadline = absl::InfiniteFuture();

  // Polled just before inference; returning true drops the frame (the caller
  // went away). May be empty. Must be cheap and thread-safe.
  std::function<bool()> is_cancelled;

  // Called exactly once on the batcher's thread when the task is finished:
  // with OK and `output_rgb` filled, or with the reason it was not computed
  // (DEADLINE_EXCEEDED, CANCELLED, or the model's error). Never called when
  // Enqueue fails (the caller still owns the task then).
  std::function<void(absl::Status status, FrameTask& task)> done;

  // --- Outputs, set by the batcher and the batch function. ---

  // The enhanced frame, interleaved RGB8, (lr_size*scale)^2 x 3 bytes.
  std::vector<uint8_t> output_rgb;

  // Each reference's mean aggregation weight for this frame, one per
  // reference in registration order; empty without references or when the
  // model reports no weights (ModelRunner::has_reference_weights()).
  std::vector<float> reference_weights;

  absl::Duration inference_duration;  // model time of its batch (set by the batch function)
  absl::Time enqueue_time;      // when Enqueue accepted it
  absl::Time batch_start_time;  // when its batch went to the model
  int batch_size = 0;           // size of the batch it ran in
};

}  // namespace fsrst

#endif  // FSRST_BATCHING_FRAME_TASK_H_
