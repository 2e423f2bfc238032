// Helpers shared by the model runner's tests: where the shipped weights are, and
// deterministic input bytes. Stateless functions; safe from any thread.
#ifndef FSRST_TESTS_MODEL_MODEL_TEST_UTIL_H_
#define FSRST_TESTS_MODEL_MODEL_TEST_UTIL_H_

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "model/model_metadata.h"

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

}  // namespace testing
}  // namespace fsrst

#endif  // FSRST_TESTS_MODEL_MODEL_TEST_UTIL_H_
