// API keys and tenant isolation, over real gRPC on loopback against a real
// server started with an API key file.

#include <chrono>
#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "fsrst/v1/fsrst.grpc.pb.h"
#include "gmock/gmock.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gtest/gtest.h"
#include "server/fsrst_server.h"
#include "tests/server/service_test_util.h"

namespace fsrst {
namespace {

using ::fsrst::testing::Connect;
using ::fsrst::testing::kFeatureBytesPerReference;
using ::fsrst::testing::MetricSample;
using ::fsrst::testing::PrepareContext;
using ::fsrst::testing::ProcessTempPath;
using ::fsrst::testing::Rgb8Image;
using ::fsrst::testing::TestConfig;
using ::testing::HasSubstr;

constexpr char kKeyA[] = "key-of-tenant-a-0123456789abcdef";
constexpr char kKeyB[] = "key-of-tenant-b-fedcba9876543210";
constexpr char kUnknownKey[] = "key-nobody-was-given-00000000000";

// A config whose server requires the keys of tenants "tenant-a" and "tenant-b".
ServerConfig AuthConfig() {
  const std::string path = ProcessTempPath("tenant_isolation_keys.txt");
  std::ofstream file(path);
  file << "# test keys\n" << kKeyA << " tenant-a\n" << kKeyB << " tenant-b\n";
  ServerConfig config = TestConfig();
  config.api_keys_file = path;
  return config;
}

class Tenants {
 public:
  explicit Tenants(int port) : stub_(Connect(port)) {}

  grpc::Status Register(const std::string& key, const std::string& id, int count, uint32_t seed) {
    v1::RegisterReferencesRequest request;
    request.set_identity_id(id);
    for (int i = 0; i < count; ++i) *request.add_references() = Rgb8Image(128, 128, seed + i);
    v1::RegisterReferencesResponse response;
    grpc::ClientContext context;
    PrepareContext(&context, key, std::chrono::seconds(30));
    return stub_->RegisterReferences(&context, request, &response);
  }

  grpc::Status Enhance(const std::string& key, const std::string& id, uint32_t seed,
                       v1::EnhanceResponse* response) {
    v1::EnhanceRequest request;
    request.set_identity_id(id);
    *request.mutable_frame() = Rgb8Image(32, 32, seed);
    grpc::ClientContext context;
    PrepareContext(&context, key, std::chrono::seconds(30));
    return stub_->Enhance(&context, request, response);
  }

  // Enhance with `count` references sent inline (seeds seed_refs, seed_refs + 1, ...).
  grpc::Status EnhanceInline(const std::string& key, int count, uint32_t seed_refs, uint32_t seed,
                             v1::EnhanceResponse* response) {
    v1::EnhanceRequest request;
    *request.mutable_frame() = Rgb8Image(32, 32, seed);
    for (int i = 0; i < count; ++i) *request.add_references() = Rgb8Image(128, 128, seed_refs + i);
    grpc::ClientContext context;
    PrepareContext(&context, key, std::chrono::seconds(30));
    return stub_->Enhance(&context, request, response);
  }

  grpc::Status Delete(const std::string& key, const std::string& id) {
    v1::DeleteReferencesRequest request;
    request.set_identity_id(id);
    v1::DeleteReferencesResponse response;
    grpc::ClientContext context;
    PrepareContext(&context, key, std::chrono::seconds(30));
    return stub_->DeleteReferences(&context, request, &response);
  }

  grpc::Status Info(const std::string& key, v1::GetServerInfoResponse* info) {
    grpc::ClientContext context;
    PrepareContext(&context, key, std::chrono::seconds(30));
    return stub_->GetServerInfo(&context, {}, info);
  }

  // One frame of `id` on an EnhanceStream: the call's status, the frame's answer.
  grpc::Status StreamOne(const std::string& key, const std::string& id, uint32_t seed,
                         v1::EnhanceResponse* response) {
    grpc::ClientContext context;
    PrepareContext(&context, key, std::chrono::seconds(30));
    auto stream = stub_->EnhanceStream(&context);
    v1::EnhanceRequest request;
    request.set_identity_id(id);
    request.set_sequence_number(5);
    *request.mutable_frame() = Rgb8Image(32, 32, seed);
    stream->Write(request);
    stream->WritesDone();
    while (stream->Read(response)) {
    }
    return stream->Finish();
  }

  v1::FaceSuperResolution::Stub& stub() { return *stub_; }

 private:
  std::unique_ptr<v1::FaceSuperResolution::Stub> stub_;
};

class TenantIsolationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto server = FsrstServer::Start(AuthConfig());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = server->release();
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override { tenants_ = std::make_unique<Tenants>(server_->port()); }

  void ExpectUnauthenticated(const grpc::Status& status, const std::string& text) {
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(text));
  }

  inline static FsrstServer* server_ = nullptr;
  std::unique_ptr<Tenants> tenants_;
};

TEST_F(TenantIsolationTest, EveryRpcWithoutAKeyIsUnauthenticated) {
  const std::string said = "missing API key: send the metadata `authorization: Bearer <key>`";
  v1::EnhanceResponse response;
  v1::GetServerInfoResponse info;
  ExpectUnauthenticated(tenants_->Register("", "anna", 1, 1), said);
  ExpectUnauthenticated(tenants_->Enhance("", "", 1, &response), said);
  ExpectUnauthenticated(tenants_->StreamOne("", "", 1, &response), said);
  ExpectUnauthenticated(tenants_->Delete("", "anna"), said);
  ExpectUnauthenticated(tenants_->Info("", &info), said);
}

TEST_F(TenantIsolationTest, EveryRpcWithAnUnknownKeyIsUnauthenticated) {
  const std::string said = "the API key is not valid";
  v1::EnhanceResponse response;
  v1::GetServerInfoResponse info;
  ExpectUnauthenticated(tenants_->Register(kUnknownKey, "anna", 1, 1), said);
  ExpectUnauthenticated(tenants_->Enhance(kUnknownKey, "", 1, &response), said);
  ExpectUnauthenticated(tenants_->StreamOne(kUnknownKey, "", 1, &response), said);
  ExpectUnauthenticated(tenants_->Delete(kUnknownKey, "anna"), said);
  ExpectUnauthenticated(tenants_->Info(kUnknownKey, &info), said);
  // Not a hint of the real keys in the answer.
  EXPECT_THAT(tenants_->Info(kUnknownKey, &info).error_message(),
              ::testing::Not(HasSubstr("key-of-tenant")));
}

TEST_F(TenantIsolationTest, AnotherSchemeIsUnauthenticated) {
  grpc::ClientContext context;
  context.AddMetadata("authorization", absl::StrCat("Basic ", kKeyA));
  v1::GetServerInfoResponse info;
  ExpectUnauthenticated(tenants_->stub().GetServerInfo(&context, {}, &info),
                        "authorization: expected `Bearer <key>`");
}

TEST_F(TenantIsolationTest, AValidKeyIsServed) {
  v1::GetServerInfoResponse info;
  ASSERT_TRUE(tenants_->Info(kKeyA, &info).ok());
  EXPECT_EQ(info.model_name(), "fsrst_x4_small");
  v1::EnhanceResponse response;
  ASSERT_TRUE(tenants_->Register(kKeyA, "anna", 2, 10).ok());
  ASSERT_TRUE(tenants_->Enhance(kKeyA, "anna", 3, &response).ok());
  EXPECT_EQ(response.image().data().size(), 128u * 128 * 3);
  ASSERT_TRUE(tenants_->StreamOne(kKeyA, "anna", 3, &response).ok());
  EXPECT_FALSE(response.has_error()) << response.error().message();
  EXPECT_EQ(response.sequence_number(), 5u);
}

TEST_F(TenantIsolationTest, HealthStaysOpenForProbes) {
  auto health = grpc::health::v1::Health::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", server_->port()), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  grpc::health::v1::HealthCheckResponse status;
  ASSERT_TRUE(health->Check(&context, {}, &status).ok());
  EXPECT_EQ(status.status(), grpc::health::v1::HealthCheckResponse::SERVING);
}

TEST_F(TenantIsolationTest, AnotherTenantsIdentityIsNotFoundExactlyLikeANeverRegisteredOne) {
  v1::EnhanceResponse response;
  // What tenant B hears about "bert" before anyone registered it...
  const grpc::Status before = tenants_->Enhance(kKeyB, "bert", 1, &response);
  ASSERT_EQ(before.error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(tenants_->Register(kKeyA, "bert", 2, 20).ok());
  ASSERT_TRUE(tenants_->Enhance(kKeyA, "bert", 1, &response).ok());
  // ...is what it hears once tenant A has: the same code, the same words.
  const grpc::Status after = tenants_->Enhance(kKeyB, "bert", 1, &response);
  EXPECT_EQ(after.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(after.error_message(), before.error_message());
  EXPECT_THAT(after.error_message(), ::testing::Not(HasSubstr("tenant")));
}

TEST_F(TenantIsolationTest, AnotherTenantsIdentityIsNotFoundOnAStream) {
  v1::EnhanceResponse never;
  ASSERT_TRUE(tenants_->StreamOne(kKeyB, "carl", 4, &never).ok());
  ASSERT_EQ(never.error().code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
  ASSERT_TRUE(tenants_->Register(kKeyA, "carl", 2, 30).ok());
  v1::EnhanceResponse own, other;
  ASSERT_TRUE(tenants_->StreamOne(kKeyA, "carl", 4, &own).ok());
  EXPECT_FALSE(own.has_error()) << own.error().message();
  EXPECT_EQ(own.image().data().size(), 128u * 128 * 3);
  ASSERT_TRUE(tenants_->StreamOne(kKeyB, "carl", 4, &other).ok());
  EXPECT_EQ(other.error().code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
  EXPECT_EQ(other.error().message(), never.error().message());
  EXPECT_FALSE(other.has_image());
}

TEST_F(TenantIsolationTest, RegisteringTheSameIdDoesNotReplaceAnotherTenantsReferences) {
  v1::EnhanceResponse a_before, a_after, a_inline, b_own, b_inline;
  ASSERT_TRUE(tenants_->Register(kKeyA, "dora", 3, 40).ok());
  ASSERT_TRUE(tenants_->Enhance(kKeyA, "dora", 8, &a_before).ok());
  ASSERT_TRUE(tenants_->Register(kKeyB, "dora", 2, 900).ok());  // other references, fewer
  ASSERT_TRUE(tenants_->Enhance(kKeyA, "dora", 8, &a_after).ok());
  ASSERT_TRUE(tenants_->Enhance(kKeyB, "dora", 8, &b_own).ok());
  // Each tenant's output is exactly that of its own references sent inline: nothing merged.
  ASSERT_TRUE(tenants_->EnhanceInline(kKeyA, 3, 40, 8, &a_inline).ok());
  ASSERT_TRUE(tenants_->EnhanceInline(kKeyB, 2, 900, 8, &b_inline).ok());
  EXPECT_EQ(a_before.image().data(), a_inline.image().data());
  EXPECT_EQ(a_after.image().data(), a_inline.image().data());  // A still gets A's face
  EXPECT_EQ(b_own.image().data(), b_inline.image().data());    // B gets its own
}

TEST_F(TenantIsolationTest, AnotherTenantCannotDeleteAnIdentity) {
  const grpc::Status never = tenants_->Delete(kKeyB, "emil");
  ASSERT_EQ(never.error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(tenants_->Register(kKeyA, "emil", 1, 50).ok());
  const grpc::Status other = tenants_->Delete(kKeyB, "emil");
  EXPECT_EQ(other.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(other.error_message(), never.error_message());
  v1::EnhanceResponse response;
  EXPECT_TRUE(tenants_->Enhance(kKeyA, "emil", 1, &response).ok());  // still there for A
  EXPECT_TRUE(tenants_->Delete(kKeyA, "emil").ok());
  EXPECT_EQ(tenants_->Enhance(kKeyA, "emil", 1, &response).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(TenantIsolationTest, InlineReferencesWorkWithAKey) {
  v1::EnhanceRequest request;
  *request.mutable_frame() = Rgb8Image(32, 32, 1);
  for (int i = 0; i < 2; ++i) *request.add_references() = Rgb8Image(128, 128, 60 + i);
  grpc::ClientContext context;
  PrepareContext(&context, kKeyB, std::chrono::seconds(30));
  v1::EnhanceResponse response;
  ASSERT_TRUE(tenants_->stub().Enhance(&context, request, &response).ok());
  EXPECT_EQ(response.image().data().size(), 128u * 128 * 3);
}

// --- The size limits hold for authenticated callers too. ---

TEST_F(TenantIsolationTest, TooManyReferencesIsInvalidArgument) {
  const grpc::Status status = tenants_->Register(kKeyA, "fred", 9, 1);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(), HasSubstr("references: expected 1 to 8 images, got 9"));
}

TEST_F(TenantIsolationTest, OversizeMessageIsResourceExhausted) {
  v1::EnhanceRequest request;
  *request.mutable_frame() = Rgb8Image(32, 32, 1);
  request.mutable_frame()->set_data(std::string(2 << 20, 'x'));  // over the 1 MiB limit
  grpc::ClientContext context;
  PrepareContext(&context, kKeyA, std::chrono::seconds(30));
  v1::EnhanceResponse response;
  EXPECT_EQ(tenants_->stub().Enhance(&context, request, &response).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST(TenantIsolationLimits, ImagesOverThePixelLimitAreInvalidArgument) {
  ServerConfig config = AuthConfig();
  config.max_image_pixels = 128 * 128;
  auto server = FsrstServer::Start(config);
  ASSERT_TRUE(server.ok()) << server.status();
  Tenants tenants((*server)->port());
  EXPECT_TRUE(tenants.Register(kKeyA, "gwen", 1, 1).ok());  // 128x128: at the limit
  v1::RegisterReferencesRequest request;
  request.set_identity_id("gwen");
  *request.add_references() = Rgb8Image(129, 128, 1);
  grpc::ClientContext context;
  PrepareContext(&context, kKeyA, std::chrono::seconds(30));
  v1::RegisterReferencesResponse response;
  const grpc::Status status = tenants.stub().RegisterReferences(&context, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(status.error_message(),
              HasSubstr("references[0]: RGB8 image is 129x128 = 16512 pixels, over the limit "
                        "of 16384 pixels"));
}

// --- Deleting really frees the features: the metrics show it. ---

TEST(TenantIsolationMetrics, DeleteReferencesReturnsTheCacheGaugesToZero) {
  auto server = FsrstServer::Start(AuthConfig());
  ASSERT_TRUE(server.ok()) << server.status();
  Tenants tenants((*server)->port());
  const std::string empty = (*server)->metrics().SerializeText();
  EXPECT_EQ(MetricSample(empty, "fsrst_reference_cache_entries"), 0);
  EXPECT_EQ(MetricSample(empty, "fsrst_reference_cache_bytes"), 0);

  ASSERT_TRUE(tenants.Register(kKeyA, "hugo", 3, 1).ok());
  v1::EnhanceResponse response;
  ASSERT_TRUE(tenants.Enhance(kKeyA, "hugo", 1, &response).ok());
  // A registration runs on the batcher's one thread, after it has let go of
  // the batch above: no frame pins A's features once this returns.
  ASSERT_TRUE(tenants.Register(kKeyB, "hugo", 2, 1).ok());
  const std::string cached = (*server)->metrics().SerializeText();
  EXPECT_EQ(MetricSample(cached, "fsrst_reference_cache_entries"), 2);
  EXPECT_EQ(MetricSample(cached, "fsrst_reference_cache_bytes"),
            (3 + 2) * kFeatureBytesPerReference);

  ASSERT_TRUE(tenants.Delete(kKeyA, "hugo").ok());
  const std::string one_left = (*server)->metrics().SerializeText();
  EXPECT_EQ(MetricSample(one_left, "fsrst_reference_cache_entries"), 1);
  EXPECT_EQ(MetricSample(one_left, "fsrst_reference_cache_bytes"), 2 * kFeatureBytesPerReference);
  ASSERT_TRUE(tenants.Delete(kKeyB, "hugo").ok());
  const std::string freed = (*server)->metrics().SerializeText();
  EXPECT_EQ(MetricSample(freed, "fsrst_reference_cache_entries"), 0);
  EXPECT_EQ(MetricSample(freed, "fsrst_reference_cache_bytes"), 0);
}

TEST(TenantIsolationStart, MalformedKeyFileFailsToStart) {
  const std::string path = ProcessTempPath("tenant_isolation_bad_keys.txt");
  {
    std::ofstream file(path);
    file << "this-line-has-no-tenant-0000000\n";
  }
  ServerConfig config = TestConfig();
  config.api_keys_file = path;
  auto server = FsrstServer::Start(config);
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(server.status().message(), HasSubstr(":1: expected `<key> <tenant>`"));
}

TEST(TenantIsolationStart, TlsKeyWithoutCertificateFailsToStart) {
  ServerConfig config = TestConfig();
  config.tls_key = "/nonexistent/server.key";
  auto server = FsrstServer::Start(config);
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(server.status().message(), HasSubstr("--tls_cert and --tls_key: expected both"));
}

}  // namespace
}  // namespace fsrst
