// Helpers shared by the model runner's tests: where the shipped weights are, and
// deterministic input bytes. Stateless functions; safe from any thread.
#ifndef FSRST_TESTS_MODEL_MODEL_TEST_UTIL_H_
#define FSRST_TESTS_MODEL_MODEL_TEST_UTIL_H_

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

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

}  // namespace testing
}  // namespace fsrst

#endif  // FSRST_TESTS_MODEL_MODEL_TEST_UTIL_H_
