// GetIdentity (issue 22): real gRPC over loopback against a real server.

#include <algorithm>
#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "fsrst/v1/fsrst.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/fsrst_server.h"
#include "tests/server/service_test_util.h"

namespace fsrst {
namespace {

using ::fsrst::testing::Connect;
using ::fsrst::testing::kFeatureBytesPerReference;
using ::fsrst::testing::PrepareContext;
using ::fsrst::testing::ProcessTempPath;
using ::fsrst::testing::Rgb8Image;
using ::fsrst::testing::TestConfig;
using ::testing::HasSubstr;
using ::testing::Pointwise;

class Client {
 public:
  explicit Client(int port, std::string key = "") : stub_(Connect(port)), key_(std::move(key)) {}

  grpc::Status Register(const std::string& id, int count, uint32_t seed) {
    v1::RegisterReferencesRequest request;
    request.set_identity_id(id);
    for (int i = 0; i < count; ++i) *request.add_references() = Rgb8Image(128, 128, seed + i);
    v1::RegisterReferencesResponse response;
    grpc::ClientContext context;
    PrepareContext(&context, key_, std::chrono::seconds(60));
    return stub_->RegisterReferences(&context, request, &response);
  }

  // Enhances one frame of `id` ("" with no references) and returns its weights.
  std::vector<float> Enhance(const std::string& id, uint32_t seed) {
    v1::EnhanceRequest request;
    request.set_identity_id(id);
    *request.mutable_frame() = Rgb8Image(32, 32, seed);
    v1::EnhanceResponse response;
    grpc::ClientContext context;
    PrepareContext(&context, key_, std::chrono::seconds(60));
    grpc::Status status = stub_->Enhance(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return {response.reference_weights().begin(), response.reference_weights().end()};
  }

  grpc::Status GetIdentity(const std::string& id, v1::GetIdentityResponse* response) {
    v1::GetIdentityRequest request;
    request.set_identity_id(id);
    grpc::ClientContext context;
    PrepareContext(&context, key_, std::chrono::seconds(60));
    return stub_->GetIdentity(&context, request, response);
  }

  v1::FaceSuperResolution::Stub* stub() { return stub_.get(); }

 private:
  std::unique_ptr<v1::FaceSuperResolution::Stub> stub_;
  std::string key_;
};

class GetIdentityTest : public ::fsrst::testing::SharedServerTest {
 protected:
  void SetUp() override { client_ = std::make_unique<Client>(server_->port()); }
  std::unique_ptr<Client> client_;
};

TEST_F(GetIdentityTest, AFreshRegistrationHasServedNothing) {
  const int64_t before = absl::ToUnixMillis(absl::Now());
  ASSERT_TRUE(client_->Register("gi-fresh", 3, 10).ok());
  const int64_t after = absl::ToUnixMillis(absl::Now());
  v1::GetIdentityResponse info;
  ASSERT_TRUE(client_->GetIdentity("gi-fresh", &info).ok());
  EXPECT_EQ(info.identity_id(), "gi-fresh");
  EXPECT_EQ(info.reference_count(), 3u);
  EXPECT_EQ(info.feature_bytes(), 3 * kFeatureBytesPerReference);
  EXPECT_GE(info.registered_time_unix_ms(), before);
  EXPECT_LE(info.registered_time_unix_ms(), after);
  EXPECT_EQ(info.last_used_time_unix_ms(), info.registered_time_unix_ms());
  EXPECT_EQ(info.frames_served(), 0u);
  EXPECT_TRUE(info.mean_reference_weights().empty());
}

// Frames of the identity (unary and stream) count; frames without it do not.
// The means are the means of the weights the responses carried.
TEST_F(GetIdentityTest, CountsFramesAndAveragesTheirWeights) {
  ASSERT_TRUE(client_->Register("gi-mean", 2, 20).ok());
  std::vector<std::vector<float>> seen;
  for (uint32_t seed : {1u, 2u, 3u}) seen.push_back(client_->Enhance("gi-mean", seed));
  client_->Enhance("", 4);  // no identity: not counted
  {
    grpc::ClientContext context;
    PrepareContext(&context, "", std::chrono::seconds(60));
    auto stream = client_->stub()->EnhanceStream(&context);
    v1::EnhanceRequest request;
    request.set_identity_id("gi-mean");
    *request.mutable_frame() = Rgb8Image(32, 32, 5);
    ASSERT_TRUE(stream->Write(request));
    stream->WritesDone();
    v1::EnhanceResponse response;
    ASSERT_TRUE(stream->Read(&response));
    seen.emplace_back(response.reference_weights().begin(), response.reference_weights().end());
    EXPECT_TRUE(stream->Finish().ok());
  }
  std::vector<double> expected(2, 0.0);
  for (const std::vector<float>& w : seen) {
    ASSERT_EQ(w.size(), 2u);
    for (int j = 0; j < 2; ++j) expected[j] += w[j] / static_cast<double>(seen.size());
  }
  v1::GetIdentityResponse info;
  ASSERT_TRUE(client_->GetIdentity("gi-mean", &info).ok());
  EXPECT_EQ(info.frames_served(), 4u);
  EXPECT_GE(info.last_used_time_unix_ms(), info.registered_time_unix_ms());
  EXPECT_THAT(info.mean_reference_weights(), Pointwise(::testing::DoubleNear(1e-6), expected));
}

TEST_F(GetIdentityTest, ReRegisteringStartsTheFiguresAgain) {
  ASSERT_TRUE(client_->Register("gi-again", 2, 30).ok());
  client_->Enhance("gi-again", 1);
  ASSERT_TRUE(client_->Register("gi-again", 3, 40).ok());
  v1::GetIdentityResponse info;
  ASSERT_TRUE(client_->GetIdentity("gi-again", &info).ok());
  EXPECT_EQ(info.reference_count(), 3u);
  EXPECT_EQ(info.frames_served(), 0u);
  EXPECT_TRUE(info.mean_reference_weights().empty());
  client_->Enhance("gi-again", 2);
  ASSERT_TRUE(client_->GetIdentity("gi-again", &info).ok());
  EXPECT_EQ(info.frames_served(), 1u);
  EXPECT_EQ(info.mean_reference_weights_size(), 3);
}

TEST_F(GetIdentityTest, UnknownOrDeletedIsNotFoundAndBadIdIsInvalid) {
  v1::GetIdentityResponse info;
  grpc::Status status = client_->GetIdentity("gi-never", &info);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_THAT(status.error_message(), HasSubstr("call RegisterReferences again"));

  ASSERT_TRUE(client_->Register("gi-deleted", 1, 50).ok());
  v1::DeleteReferencesRequest del;
  del.set_identity_id("gi-deleted");
  v1::DeleteReferencesResponse deleted;
  grpc::ClientContext context;
  ASSERT_TRUE(client_->stub()->DeleteReferences(&context, del, &deleted).ok());
  EXPECT_EQ(client_->GetIdentity("gi-deleted", &info).error_code(), grpc::StatusCode::NOT_FOUND);

  status = client_->GetIdentity("bad id!", &info);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("identity_id"));
}

// --- Reference checks at registration (issue 22, item 4) ---

v1::Image SolidImage(int size, uint8_t r, uint8_t g, uint8_t b) {
  v1::Image image;
  image.set_encoding(v1::ENCODING_RGB8);
  image.set_width(size);
  image.set_height(size);
  std::string data;
  for (int i = 0; i < size * size; ++i) data += {static_cast<char>(r), static_cast<char>(g),
                                                 static_cast<char>(b)};
  image.set_data(data);
  return image;
}

// The noise image of `seed`, 2x2 box-blurred: same content, less sharp.
v1::Image Blurred(int size, uint32_t seed) {
  v1::Image image = Rgb8Image(size, size, seed);
  const std::string& in = image.data();
  std::string out(in.size(), '\0');
  for (int y = 0; y < size; ++y) {
    for (int x = 0; x < size; ++x) {
      for (int c = 0; c < 3; ++c) {
        int sum = 0;
        for (int dy = 0; dy < 2; ++dy) {
          for (int dx = 0; dx < 2; ++dx) {
            const int yy = std::min(size - 1, y + dy), xx = std::min(size - 1, x + dx);
            sum += static_cast<uint8_t>(in[(yy * size + xx) * 3 + c]);
          }
        }
        out[(y * size + x) * 3 + c] = static_cast<char>(sum / 4);
      }
    }
  }
  image.set_data(out);
  return image;
}

TEST_F(GetIdentityTest, ASolidReferenceIsRefusedByIndexAndNothingIsStored) {
  v1::RegisterReferencesRequest request;
  request.set_identity_id("gi-solid");
  *request.add_references() = Rgb8Image(128, 128, 70);
  *request.add_references() = SolidImage(128, 200, 40, 40);
  v1::RegisterReferencesResponse response;
  grpc::ClientContext context;
  PrepareContext(&context, "", std::chrono::seconds(60));
  grpc::Status status = client_->stub()->RegisterReferences(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("references[1]: nearly uniform"));
  EXPECT_THAT(status.error_message(), HasSubstr("expected at least 0.02"));
  v1::GetIdentityResponse info;
  EXPECT_EQ(client_->GetIdentity("gi-solid", &info).error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(GetIdentityTest, RegistrationReportsEachReferencesSharpness) {
  v1::RegisterReferencesRequest request;
  request.set_identity_id("gi-sharp");
  *request.add_references() = Rgb8Image(128, 128, 80);
  *request.add_references() = Blurred(128, 80);
  v1::RegisterReferencesResponse response;
  grpc::ClientContext context;
  PrepareContext(&context, "", std::chrono::seconds(60));
  ASSERT_TRUE(client_->stub()->RegisterReferences(&context, request, &response).ok());
  ASSERT_EQ(response.reference_sharpness_size(), 2);
  EXPECT_GT(response.reference_sharpness(1), 0.0);
  EXPECT_GT(response.reference_sharpness(0), 2 * response.reference_sharpness(1));
}

// Another tenant's identity is NOT_FOUND with the message of one that never existed.
TEST(GetIdentityTenancy, AnotherTenantsIdentityIsNotFoundLikeAnUnknownOne) {
  constexpr char kKeyA[] = "key-of-tenant-a-0123456789abcdef";
  constexpr char kKeyB[] = "key-of-tenant-b-fedcba9876543210";
  const std::string path = ProcessTempPath("identity_info_keys.txt");
  std::ofstream(path) << kKeyA << " tenant-a\n" << kKeyB << " tenant-b\n";
  ServerConfig config = TestConfig();
  config.api_keys_file = path;
  auto server = FsrstServer::Start(config);
  ASSERT_TRUE(server.ok()) << server.status();
  Client a((*server)->port(), kKeyA), b((*server)->port(), kKeyB);
  ASSERT_TRUE(a.Register("same-name", 2, 60).ok());
  v1::GetIdentityResponse info;
  ASSERT_TRUE(a.GetIdentity("same-name", &info).ok());
  EXPECT_EQ(info.reference_count(), 2u);

  v1::GetIdentityResponse other, unknown;
  grpc::Status as_b = b.GetIdentity("same-name", &other);
  grpc::Status never = b.GetIdentity("no-such-name", &unknown);
  EXPECT_EQ(as_b.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(never.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(as_b.error_message(),
            absl::StrReplaceAll(never.error_message(), {{"no-such-name", "same-name"}}));
  Client nobody((*server)->port());
  EXPECT_EQ(nobody.GetIdentity("same-name", &other).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
}

}  // namespace
}  // namespace fsrst
