#ifndef FSRST_MODEL_FEATURE_SERIALIZATION_H_
#define FSRST_MODEL_FEATURE_SERIALIZATION_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "model/model_metadata.h"

namespace fsrst {

// The bytes of one identity's encoded references, as the shared store keeps
// them (ModelRunner::SerializeFeatures / DeserializeFeatures). No LibTorch
// here: the format is plain bytes, little-endian, packed:
//
//   magic "FSRF" | u32 format version (1) | u32 dtype (1 = float32)
//   | u32 name length | name | u32 version length | version
//   | u32 rank | rank x i64 dims ([count, feature_shape...])
//   | product(dims) x f32 values
//
// The model's name and version are in the bytes, so features of another model
// are refused even if someone stored them under this model's field.
inline constexpr char kFeatureMagic[4] = {'F', 'S', 'R', 'F'};
inline constexpr uint32_t kFeatureFormatVersion = 1;
inline constexpr uint32_t kFeatureDtypeFloat32 = 1;
// Bounds that keep a corrupt length from reading past the value.
inline constexpr uint32_t kMaxFeatureNameBytes = 256;
inline constexpr uint32_t kMaxFeatureRank = 8;

// `values` (row-major, `shape` = [count, feature_shape...]) of `model`'s
// encoder, in the format above. REQUIRES: values.size() == product(shape).
std::string SerializeFeatureBytes(const ModelMetadata& model, absl::Span<const int64_t> shape,
                                  absl::Span<const float> values);

// What ParseFeatureBytes checked: the shape and where the values are. The
// values view points into the parsed bytes (unaligned: copy it out with
// memcpy) and lives as long as they do.
struct FeatureBytesView {
  std::vector<int64_t> shape;  // [count, feature_shape...]
  absl::string_view values;    // product(shape) x 4 bytes of little-endian float32
};

// Checks every field of `bytes` against `model` (this runner's metadata):
// magic, format version, dtype float32, model name and version, rank, count
// in 1..max_references, the per-reference shape, the exact length, and that
// every value is finite. Errors name the field with the expected and the
// found value: DATA_LOSS for bytes that are not (whole) features, and
// FAILED_PRECONDITION for whole features of another model or shape.
absl::StatusOr<FeatureBytesView> ParseFeatureBytes(absl::string_view bytes,
                                                   const ModelMetadata& model);

}  // namespace fsrst

#endif  // FSRST_MODEL_FEATURE_SERIALIZATION_H_
