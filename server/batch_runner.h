#ifndef FSRST_SERVER_BATCH_RUNNER_H_
#define FSRST_SERVER_BATCH_RUNNER_H_

#include "batching/dynamic_batcher.h"
#include "model/model_runner.h"
#include "server/server_metrics.h"

namespace fsrst {

// The DynamicBatcher's batch function: runs the tasks' frames through the
// model in one call and records batch size, model time and queue waits.
// `runner` and `metrics` are not owned and must outlive the batcher.
DynamicBatcher::BatchFunction MakeBatchFunction(ModelRunner* runner, ServerMetrics* metrics);

}  // namespace fsrst

#endif  // FSRST_SERVER_BATCH_RUNNER_H_
