#ifndef FSRST_MODEL_MODEL_RUNNER_H_
#define FSRST_MODEL_MODEL_RUNNER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "model/model_metadata.h"
#include "model/reference_features.h"

namespace fsrst {

struct ModelRunnerOptions {
  std::string device = "auto";  // "auto" (CUDA when LibTorch has it), "cpu", "cuda", "cuda:N"
  // Model instances: how many Enhance calls run side by side (the batcher's
  // workers); 0 = auto (see ResolveModelParallelism).
  int num_instances = 0;
  // Intra-op CPU threads of each call; 0 = auto (see ResolveModelParallelism).
  int num_threads = 0;
  bool freeze = true;           // torch.jit.freeze + optimize_for_inference: faster on CPU
  bool jit_profiling = false;   // TorchScript's profiling executor (process-wide setting)
  // Call forward_with_weights when the model has it; false serves images only
  // (forward), as models exported before the method do.
  bool reference_weights = true;
};

// How the model's work is spread over the machine.
struct ModelParallelism {
  int instances = 1;  // model calls running side by side
  int threads = 1;    // intra-op CPU threads of each call
};

// Resolves 0 (auto) in `instances` and `threads` for a machine of `cores`.
// On CPU, auto gives one single-threaded instance per core: an FSRST forward
// keeps two intra-op threads only ~60% busy (many small operators, a barrier
// after each), and on 2 cores two instances of one thread each ran 1.3x
// (fsrst_x4) to 2x (fsrst_x4_small) the frames of one instance of two threads
// at batch 8 (BENCHMARKS.md). A given value is kept; the other then shares the
// cores (cores / given, at least 1). On CUDA the auto instance count is 1 (the
// GPU runs one call at a time anyway) and the auto thread count every core.
ModelParallelism ResolveModelParallelism(int instances, int threads, bool on_cuda, int cores);

// One frame of a batch, as the model runner sees it.
struct FrameInput {
  const uint8_t* frame_rgb = nullptr;  // lr_size^2 x 3 bytes, interleaved RGB8
  // Cached features, or null. When null and `reference_luma` is non-empty,
  // those inline references are encoded inside this batch.
  const ReferenceFeatures* references = nullptr;
  absl::Span<const float> reference_luma;  // count x R x R luma in [0,1]
  int reference_luma_count = 0;
  uint8_t* output_rgb = nullptr;  // output_size^2 x 3 bytes, written by Enhance
  // Where Enhance writes this frame's reference weights when the model has
  // them (has_reference_weights()): one float per real reference, in the
  // order the references were encoded (padded slots are not written). The
  // caller owns the buffer, which holds at least that many floats. May be null.
  float* reference_weights = nullptr;
};

// Runs one FSRST TorchScript file (model/fsrst/export.py) on one device: the
// only code in the project that includes LibTorch.
//
// Thread-safety: EncodeReferences and Enhance may run concurrently from up to
// parallelism().instances threads (the DynamicBatcher's workers): they share
// the read-only TorchScript module, and a TorchScript forward without writes
// to module state is thread-safe. Warmup must run alone. metadata(),
// parallelism() and device_name() are safe from any thread, and so are
// SerializeFeatures and DeserializeFeatures (they never touch the module). Features returned
// by EncodeReferences may be used, shared and destroyed from any thread.
class ModelRunner {
 public:
  // Loads the file, reads its metadata, moves it to the device. Errors:
  // NOT_FOUND / INVALID_ARGUMENT with the cause (missing file, not TorchScript,
  // missing methods or metadata), UNAVAILABLE if CUDA is asked for and absent.
  static absl::StatusOr<std::unique_ptr<ModelRunner>> Load(const std::string& path,
                                                           const ModelRunnerOptions& options);
  virtual ~ModelRunner() = default;

  const ModelMetadata& metadata() const { return metadata_; }
  // Instances and intra-op threads resolved from the options at Load.
  const ModelParallelism& parallelism() const { return parallelism_; }
  virtual std::string device_name() const = 0;
  // Whether the model has forward_with_weights, so Enhance reports each
  // reference's mean aggregation weight (FrameInput::reference_weights).
  // Models exported before that method serve images only.
  virtual bool has_reference_weights() const = 0;

  // Encodes `count` references (count x R x R luma floats in [0,1]) into
  // features resident on the model's device.
  // REQUIRES: 1 <= count <= metadata().max_references.
  virtual absl::StatusOr<std::shared_ptr<const ReferenceFeatures>> EncodeReferences(
      absl::Span<const float> luma, int count) = 0;

  // The bytes of `features` (model/feature_serialization.h: this model's name
  // and version, float32, [count, feature_shape...]), for a store that other
  // replicas of the same model version read. Copies the features to the host;
  // does not run the model. INVALID_ARGUMENT for features this runner did not
  // make.
  virtual absl::StatusOr<std::string> SerializeFeatures(
      const ReferenceFeatures& features) const = 0;

  // Features on the model's device from SerializeFeatures' bytes, equal to the
  // ones serialised (Enhance gives the same image with either). Every field is
  // checked first (ParseFeatureBytes): bytes that are corrupt, truncated, of
  // another model or version, or of another shape are refused with an error
  // that names the field; nothing is allocated for them. Does not run the model.
  virtual absl::StatusOr<std::shared_ptr<const ReferenceFeatures>> DeserializeFeatures(
      absl::string_view bytes) const = 0;

  // Enhances a batch: frames may have different reference counts (padded and
  // masked). Writes every frame's output_rgb (and reference_weights, see
  // FrameInput), or returns the model's error. The image is the same with or
  // without weights: forward_with_weights is forward plus a mean per slot.
  virtual absl::Status Enhance(absl::Span<const FrameInput> batch) = 0;

  // Runs every batch size 1..max_batch_size once (with and without references),
  // so the first real request pays no first-call cost.
  virtual absl::Status Warmup(int max_batch_size) = 0;

 protected:
  ModelRunner(ModelMetadata metadata, ModelParallelism parallelism)
      : metadata_(std::move(metadata)), parallelism_(parallelism) {}

 private:
  const ModelMetadata metadata_;
  const ModelParallelism parallelism_;
};

}  // namespace fsrst

#endif  // FSRST_MODEL_MODEL_RUNNER_H_
