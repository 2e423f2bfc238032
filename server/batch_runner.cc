#include "server/batch_runner.h"

#include <vector>

namespace fsrst {

DynamicBatcher::BatchFunction MakeBatchFunction(ModelRunner* runner, ServerMetrics* metrics) {
  return [runner, metrics](const std::vector<FrameTask*>& batch) -> absl::Status {
    const int64_t output_bytes = runner->metadata().output_bytes();
    const bool weights = runner->has_reference_weights();
    std::vector<FrameInput> inputs(batch.size());
    for (size_t i = 0; i < batch.size(); ++i) {
      FrameTask& task = *batch[i];
      task.output_rgb.resize(output_bytes);
      FrameInput& input = inputs[i];
      input.frame_rgb = task.frame_rgb.data();
      input.references = task.references.get();
      input.reference_luma = task.reference_luma;
      input.reference_luma_count = task.reference_luma_count;
      input.output_rgb = task.output_rgb.data();
      const int count =
          task.references != nullptr ? task.references->count() : task.reference_luma_count;
      task.reference_weights.assign(weights ? count : 0, 0.0f);
      input.reference_weights = task.reference_weights.empty() ? nullptr
                                                                : task.reference_weights.data();
    }
    const absl::Time start = absl::Now();
    absl::Status status = runner->Enhance(inputs);
    const absl::Duration inference = absl::Now() - start;
    metrics->RecordBatch(static_cast<int>(batch.size()), inference);
    for (FrameTask* task : batch) {
      task->inference_duration = inference;
      metrics->RecordQueueDuration(task->batch_start_time - task->enqueue_time);
    }
    if (status.ok()) {
      metrics->RecordFramesEnhanced(static_cast<int>(batch.size()));
      const absl::Time end = absl::Now();
      for (const FrameTask* task : batch) {
        if (task->usage != nullptr) task->usage->RecordFrame(task->reference_weights, end);
        if (task->reference_weights.empty()) continue;
        double share = 0;
        for (float w : task->reference_weights) share += w;
        metrics->RecordReferenceShare(share);
      }
    }
    return status;
  };
}

}  // namespace fsrst
