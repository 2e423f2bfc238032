// Per-reference weights on the wire (issue 22): real gRPC over loopback
// against the shipped models, one with forward_with_weights and one without.

#include <algorithm>
#include <chrono>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "fsrst/v1/fsrst.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/fsrst_server.h"
#include "tests/server/service_test_util.h"

namespace fsrst {
namespace {

using ::fsrst::testing::Connect;
using ::fsrst::testing::MetricSample;
using ::fsrst::testing::PrepareContext;
using ::fsrst::testing::Rgb8Image;
using ::fsrst::testing::TestConfig;
using ::testing::ElementsAreArray;
using ::testing::Pointwise;

// Registers `seeds` (one 128x128 noise reference each, in this order) as `id`.
grpc::Status Register(v1::FaceSuperResolution::Stub* stub, const std::string& id,
                      const std::vector<uint32_t>& seeds) {
  v1::RegisterReferencesRequest request;
  request.set_identity_id(id);
  for (uint32_t seed : seeds) *request.add_references() = Rgb8Image(128, 128, seed);
  v1::RegisterReferencesResponse response;
  grpc::ClientContext context;
  return stub->RegisterReferences(&context, request, &response);
}

v1::EnhanceRequest FrameRequest(const std::string& id, uint32_t seed) {
  v1::EnhanceRequest request;
  request.set_identity_id(id);
  *request.mutable_frame() = Rgb8Image(32, 32, seed);
  return request;
}

v1::EnhanceResponse Enhance(v1::FaceSuperResolution::Stub* stub,
                            const v1::EnhanceRequest& request) {
  grpc::ClientContext context;
  PrepareContext(&context, "", std::chrono::seconds(60));
  v1::EnhanceResponse response;
  grpc::Status status = stub->Enhance(&context, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return response;
}

std::vector<float> Weights(const v1::EnhanceResponse& response) {
  return {response.reference_weights().begin(), response.reference_weights().end()};
}

class ReferenceWeightsTest : public ::fsrst::testing::SharedServerTest {
 protected:
  void SetUp() override { stub_ = Connect(server_->port()); }
  std::unique_ptr<v1::FaceSuperResolution::Stub> stub_;
};

TEST_F(ReferenceWeightsTest, ServerInfoSaysTheModelReportsWeights) {
  grpc::ClientContext context;
  v1::GetServerInfoResponse info;
  ASSERT_TRUE(stub_->GetServerInfo(&context, {}, &info).ok());
  EXPECT_TRUE(info.reference_weights());
}

// One weight per registered reference, each in [0,1], summing to at most 1,
// and the same as those of the same references sent inline.
TEST_F(ReferenceWeightsTest, UnaryResponseCarriesOneWeightPerReference) {
  ASSERT_TRUE(Register(stub_.get(), "w-alice", {11, 12, 13}).ok());
  const std::vector<float> cached = Weights(Enhance(stub_.get(), FrameRequest("w-alice", 5)));
  ASSERT_EQ(cached.size(), 3u);
  for (float w : cached) {
    EXPECT_GE(w, 0.0f);
    EXPECT_LE(w, 1.0f);
  }
  EXPECT_LE(std::accumulate(cached.begin(), cached.end(), 0.0), 1.0 + 1e-5);

  v1::EnhanceRequest inline_refs = FrameRequest("", 5);
  for (uint32_t seed : {11u, 12u, 13u}) *inline_refs.add_references() = Rgb8Image(128, 128, seed);
  EXPECT_THAT(Weights(Enhance(stub_.get(), inline_refs)),
              Pointwise(::testing::FloatNear(1e-6), cached));
}

// Registration order: the same references registered in another order give
// the same weights, permuted the same way.
TEST_F(ReferenceWeightsTest, WeightsFollowRegistrationOrder) {
  ASSERT_TRUE(Register(stub_.get(), "w-order", {21, 22, 23}).ok());
  const std::vector<float> abc = Weights(Enhance(stub_.get(), FrameRequest("w-order", 6)));
  ASSERT_TRUE(Register(stub_.get(), "w-order", {23, 21, 22}).ok());
  const std::vector<float> cab = Weights(Enhance(stub_.get(), FrameRequest("w-order", 6)));
  ASSERT_EQ(abc.size(), 3u);
  EXPECT_THAT(cab, Pointwise(::testing::FloatNear(1e-6), std::vector<float>{abc[2], abc[0],
                                                                            abc[1]}));
  // The check means something only if the weights tell the references apart.
  EXPECT_GT(std::max({abc[0], abc[1], abc[2]}) - std::min({abc[0], abc[1], abc[2]}), 1e-5f);
}

TEST_F(ReferenceWeightsTest, NoReferencesNoWeights) {
  EXPECT_TRUE(Weights(Enhance(stub_.get(), FrameRequest("", 7))).empty());
}

TEST_F(ReferenceWeightsTest, StreamResponsesCarryTheUnaryWeights) {
  ASSERT_TRUE(Register(stub_.get(), "w-stream", {31, 32}).ok());
  const std::vector<float> unary = Weights(Enhance(stub_.get(), FrameRequest("w-stream", 8)));
  ASSERT_EQ(unary.size(), 2u);
  grpc::ClientContext context;
  auto stream = stub_->EnhanceStream(&context);
  ASSERT_TRUE(stream->Write(FrameRequest("w-stream", 8)));
  ASSERT_TRUE(stream->Write(FrameRequest("", 8)));
  stream->WritesDone();
  v1::EnhanceResponse with_refs, without;
  ASSERT_TRUE(stream->Read(&with_refs));
  ASSERT_TRUE(stream->Read(&without));
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_THAT(Weights(with_refs), Pointwise(::testing::FloatNear(1e-6), unary));
  EXPECT_TRUE(Weights(without).empty());
}

// fsrst_reference_share observes one value per frame with references: the sum
// of its weights; frames without references are not observed.
TEST_F(ReferenceWeightsTest, ShareHistogramObservesEachFrameWithReferences) {
  ASSERT_TRUE(Register(stub_.get(), "w-share", {41, 42}).ok());
  const std::string before = server_->metrics().SerializeText();
  const std::vector<float> w = Weights(Enhance(stub_.get(), FrameRequest("w-share", 9)));
  Enhance(stub_.get(), FrameRequest("", 9));
  const std::string after = server_->metrics().SerializeText();
  ASSERT_EQ(w.size(), 2u);
  EXPECT_EQ(MetricSample(after, "fsrst_reference_share_count") -
                MetricSample(before, "fsrst_reference_share_count"),
            1);
  EXPECT_NEAR(MetricSample(after, "fsrst_reference_share_sum") -
                  MetricSample(before, "fsrst_reference_share_sum"),
              double{w[0]} + w[1], 1e-5);
}

// A model exported before forward_with_weights (the faces-only fsrst_x4) serves
// images, reports no weights, and says so.
TEST(ReferenceWeightsOldModel, ServesImagesWithoutWeightsAndSaysSo) {
  ServerConfig config = TestConfig();
  config.model_path = ::fsrst::testing::ModelWithoutWeightsMethodPath();
  config.max_batch_size = 1;
  auto server = FsrstServer::Start(config);
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = Connect((*server)->port());
  grpc::ClientContext context;
  v1::GetServerInfoResponse info;
  ASSERT_TRUE(stub->GetServerInfo(&context, {}, &info).ok());
  EXPECT_EQ(info.model_name(), "fsrst_x4");
  EXPECT_FALSE(info.reference_weights());
  ASSERT_TRUE(Register(stub.get(), "old", {51, 52}).ok());
  v1::EnhanceResponse response = Enhance(stub.get(), FrameRequest("old", 10));
  EXPECT_EQ(response.image().data().size(), 128u * 128 * 3);
  EXPECT_TRUE(Weights(response).empty());
  EXPECT_EQ(MetricSample((*server)->metrics().SerializeText(), "fsrst_reference_share_count"), 0);
}

}  // namespace
}  // namespace fsrst
