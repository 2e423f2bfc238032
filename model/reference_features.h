#ifndef FSRST_MODEL_REFERENCE_FEATURES_H_
#define FSRST_MODEL_REFERENCE_FEATURES_H_

#include <cstdint>

namespace fsrst {

// The encoded references of one identity, resident on the model's device
// (the output of the TorchScript method encode_references for N references).
//
// Immutable once created, so one instance is shared by every frame and stream
// of that identity without copying: hold it by std::shared_ptr<const
// ReferenceFeatures>. Thread-safe: every method is const and has no side
// effects. The concrete type lives in model/model_runner.cc, so that nothing
// outside the model runner includes LibTorch headers.
class ReferenceFeatures {
 public:
  virtual ~ReferenceFeatures() = default;

  // Number of references encoded (>= 1).
  virtual int count() const = 0;

  // Bytes the features occupy on the model's device; the charge against the
  // reference cache's byte budget.
  virtual int64_t byte_size() const = 0;
};

}  // namespace fsrst

#endif  // FSRST_MODEL_REFERENCE_FEATURES_H_
