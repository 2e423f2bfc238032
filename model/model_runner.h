#ifndef FSRST_MODEL_MODEL_RUNNER_H_
#define FSRST_MODEL_MODEL_RUNNER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "model/model_metadata.h"
#include "model/reference_features.h"

namespace fsrst {

struct ModelRunnerOptions {
  std::string device = "auto";  // "auto" (CUDA when LibTorch has it), "cpu", "cuda", "cuda:N"
  int num_threads = 0;          // intra-op CPU threads; 0 = every core
  bool freeze = true;           // torch.jit.freeze + optimize_for_inference: faster on CPU
  bool jit_profiling = false;   // TorchScript's profiling executor (process-wide setting)
};

// One frame of a batch, as the model runner sees it.
struct FrameInput {
  const uint8_t* frame_rgb = nullptr;  // lr_size^2 x 3 bytes, interleaved RGB8
  // Cached features, or null. When null and `reference_luma` is non-empty,
  // those inline references are encoded inside this batch.
  const ReferenceFeatures* references = nullptr;
  absl::Span<const float> reference_luma;  // count x R x R luma in [0,1]
  int reference_luma_count = 0;
  uint8_t* output_rgb = nullptr;  // output_size^2 x 3 bytes, written by Enhance
};

// Runs one FSRST TorchScript file (model/fsrst/export.py) on one device: the
// only code in the project that includes LibTorch.
//
// Thread-compatibility: metadata() and device_name() are safe from any
// thread. EncodeReferences, Enhance and Warmup must not run concurrently with
// each other: the DynamicBatcher's single thread calls them (one inference at
// a time per model instance). Features returned by EncodeReferences may be
// used, shared and destroyed from any thread.
class ModelRunner {
 public:
  // Loads the file, reads its metadata, moves it to the device. Errors:
  // NOT_FOUND / INVALID_ARGUMENT with the cause (missing file, not TorchScript,
  // missing methods or metadata), UNAVAILABLE if CUDA is asked for and absent.
  static absl::StatusOr<std::unique_ptr<ModelRunner>> Load(const std::string& path,
                                                           const ModelRunnerOptions& options);
  virtual ~ModelRunner() = default;

  const ModelMetadata& metadata() const { return metadata_; }
  virtual std::string device_name() const = 0;

  // Encodes `count` references (count x R x R luma floats in [0,1]) into
  // features resident on the model's device.
  // REQUIRES: 1 <= count <= metadata().max_references.
  virtual absl::StatusOr<std::shared_ptr<const ReferenceFeatures>> EncodeReferences(
      absl::Span<const float> luma, int count) = 0;

  // Enhances a batch: frames may have different reference counts (padded and
  // masked). Writes every frame's output_rgb, or returns the model's error.
  virtual absl::Status Enhance(absl::Span<const FrameInput> batch) = 0;

  // Runs every batch size 1..max_batch_size once (with and without references),
  // so the first real request pays no first-call cost.
  virtual absl::Status Warmup(int max_batch_size) = 0;

 protected:
  explicit ModelRunner(ModelMetadata metadata) : metadata_(std::move(metadata)) {}

 private:
  const ModelMetadata metadata_;
};

}  // namespace fsrst

#endif  // FSRST_MODEL_MODEL_RUNNER_H_
