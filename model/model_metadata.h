#ifndef FSRST_MODEL_MODEL_METADATA_H_
#define FSRST_MODEL_MODEL_METADATA_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fsrst {

// What the server needs to know about a model, read from the metadata.json
// that model/fsrst/export.py stores inside the TorchScript file. Plain value.
struct ModelMetadata {
  std::string name;           // e.g. "fsrst_x4"
  std::string version;        // e.g. the training step
  bool trained = false;       // false: random initialisation
  int lr_size = 0;            // frames are lr_size x lr_size RGB
  int scale = 0;              // outputs are (lr_size*scale) square
  int reference_size = 0;     // references are reference_size square luma
  std::vector<int64_t> feature_shape;  // per-reference feature shape, e.g. {3, 32, 32}
  int max_references = 0;     // most references per identity
  int64_t parameters = 0;     // parameter count
  std::string json;           // the raw metadata, for logs and GetServerInfo

  int output_size() const { return lr_size * scale; }
  int64_t frame_bytes() const { return int64_t{lr_size} * lr_size * 3; }
  int64_t output_bytes() const { return int64_t{output_size()} * output_size() * 3; }
  int64_t reference_pixels() const { return int64_t{reference_size} * reference_size; }
};

// Parses and checks the metadata JSON: INVALID_ARGUMENT naming the missing or
// bad key.
absl::StatusOr<ModelMetadata> ParseModelMetadata(absl::string_view json);

}  // namespace fsrst

#endif  // FSRST_MODEL_MODEL_METADATA_H_
