#ifndef FSRST_TESTS_SERVER_SERVICE_TEST_UTIL_H_
#define FSRST_TESTS_SERVER_SERVICE_TEST_UTIL_H_

#include <chrono>
#include <cstdint>
#include <unistd.h>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "fsrst/v1/fsrst.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/fsrst_server.h"
#include "tests/model/model_test_util.h"

namespace fsrst::testing {


// A path under the test temp dir that no other test process shares: ctest runs
// each test of a binary as its own process, in parallel, so a fixed name would
// let one test truncate a file another is reading.
inline std::string ProcessTempPath(const std::string& name) {
  return absl::StrCat(::testing::TempDir(), "/", getpid(), "_", name);
}

// A server config for tests: the small shipped model, free ports, one thread.
inline ServerConfig TestConfig() {
  ServerConfig config;
  config.model_path = WeightsPath("fsrst_x4_small");
  config.device = "cpu";
  config.model_threads = 1;
  config.host = "127.0.0.1";
  config.port = 0;
  config.metrics_port = 0;
  config.max_batch_size = 4;
  config.max_message_bytes = 1 << 20;
  return config;
}

// Bytes of one reference's features in TestConfig()'s model: fsrst_x4_small's 16 channels
// of 32x32 floats.
inline constexpr uint64_t kFeatureBytesPerReference = 16 * 32 * 32 * 4;

// Deterministic pseudo-random bytes (xorshift).
inline std::string NoiseBytes(size_t n, uint32_t seed) {
  std::string bytes(n, '\0');
  uint32_t x = 2463534242u ^ (seed * 2654435761u);
  for (char& b : bytes) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    b = static_cast<char>(x & 0xff);
  }
  return bytes;
}

inline v1::Image Rgb8Image(int width, int height, uint32_t seed) {
  v1::Image image;
  image.set_encoding(v1::ENCODING_RGB8);
  image.set_width(width);
  image.set_height(height);
  image.set_data(NoiseBytes(static_cast<size_t>(width) * height * 3, seed));
  return image;
}

inline std::unique_ptr<v1::FaceSuperResolution::Stub> Connect(int port) {
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(64 << 20);
  args.SetMaxReceiveMessageSize(64 << 20);
  return v1::FaceSuperResolution::NewStub(grpc::CreateCustomChannel(
      absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials(), args));
}

// Prepares `context` for one call: the API key as `authorization: Bearer <key>` metadata
// (no metadata when `key` is empty) and a deadline `deadline` from now.
// REQUIRES: `context` has not been used for a call yet.
inline void PrepareContext(grpc::ClientContext* context, const std::string& key,
                           std::chrono::seconds deadline) {
  if (!key.empty()) context->AddMetadata("authorization", absl::StrCat("Bearer ", key));
  context->set_deadline(std::chrono::system_clock::now() + deadline);
}

// The value of the unlabelled sample line "name value" in Prometheus text, or -1 when the
// text has no such line.
inline double MetricSample(const std::string& text, const std::string& name) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    std::vector<absl::string_view> fields = absl::StrSplit(line, ' ');
    double value = 0;
    if (fields.size() == 2 && fields[0] == name && absl::SimpleAtod(fields[1], &value)) {
      return value;
    }
  }
  return -1;
}

// Base of fixtures that share one in-process server (TestConfig()) per test
// suite, started in SetUpTestSuite and destroyed in TearDownTestSuite.
class SharedServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto server = FsrstServer::Start(TestConfig());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  inline static FsrstServer* server_ = nullptr;
};

}  // namespace fsrst::testing

#endif  // FSRST_TESTS_SERVER_SERVICE_TEST_UTIL_H_
