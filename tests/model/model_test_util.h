// Helpers shared by the tests that run the model: where the shipped weights are,
// deterministic inputs, one frame through a runner. Stateless functions; safe from any
// thread (EnhanceWith as far as the runner is).
#ifndef FSRST_TESTS_MODEL_MODEL_TEST_UTIL_H_
#define FSRST_TESTS_MODEL_MODEL_TEST_UTIL_H_

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "gtest/gtest.h"
#include "model/model_metadata.h"
#include "model/model_runner.h"
#include "model/reference_features.h"

namespace fsrst {
namespace testing {

// The source tree (ctest sets FSRST_SOURCE_DIR; else the working directory).
inline std::string SourceDir() {
  const char* dir = std::getenv("FSRST_SOURCE_DIR");
  return dir != nullptr ? dir : ".";
}

// model/weights/<variant>.pt of the source tree.
inline std::string WeightsPath(const std::string& variant) {
  return SourceDir() + "/model/weights/" + variant + ".pt";
}

// A model exported before forward_with_weights existed (the faces-only fsrst_x4 shipped until
// 2026-12, 3 feature channels): it must still load and serve images, without weights.
inline std::string ModelWithoutWeightsMethodPath() {
  return SourceDir() + "/tests/model/testdata/fsrst_x4_before_weights_method.pt";
}

// Deterministic pseudo-random bytes (xorshift), so every run sees the same inputs.
inline std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  uint32_t x = 2463534242u + seed;
  for (uint8_t& b : v) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<uint8_t>(x);
  }
  return v;
}

// `count` references' luma the way the server hands it to the model: one value in [0, 1] per
// pixel (Pattern bytes / 255). Out-of-range luma makes features the model rightly ignores.
inline std::vector<float> UnitLuma(const ModelMetadata& m, int count, uint32_t seed) {
  std::vector<uint8_t> bytes = Pattern(count * m.reference_pixels(), seed);
  std::vector<float> luma(bytes.size());
  for (size_t i = 0; i < bytes.size(); ++i) luma[i] = bytes[i] / 255.0f;
  return luma;
}

// One frame (Pattern bytes, seed 7) enhanced by `runner` with `features`: the output bytes.
inline std::vector<uint8_t> EnhanceWith(ModelRunner& runner, const ReferenceFeatures& features) {
  const ModelMetadata& m = runner.metadata();
  std::vector<uint8_t> frame = Pattern(m.frame_bytes(), 7);
  std::vector<uint8_t> output(m.output_bytes());
  FrameInput input;
  input.frame_rgb = frame.data();
  input.references = &features;
  input.output_rgb = output.data();
  absl::Status status = runner.Enhance(absl::MakeConstSpan(&input, 1));
  EXPECT_TRUE(status.ok()) << status;
  return output;
}

}  // namespace testing
}  // namespace fsrst

#endif  // FSRST_TESTS_MODEL_MODEL_TEST_UTIL_H_
