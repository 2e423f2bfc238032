// Service tests: real gRPC over loopback against a real TorchScript model.

#include "server/face_sr_service.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "batching/job_task.h"
#include "fsrst/v1/fsrst.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/fsrst_server.h"
#include "imaging/image_codec.h"
#include "tests/server/service_test_util.h"

namespace fsrst {
namespace {

using ::fsrst::testing::Connect;
using ::fsrst::testing::kFeatureBytesPerReference;
using ::fsrst::testing::NoiseBytes;
using ::fsrst::testing::PrepareContext;
using ::fsrst::testing::Rgb8Image;
using ::fsrst::testing::TestConfig;
using ::testing::HasSubstr;

class FaceSrServiceTest : public ::fsrst::testing::SharedServerTest {
 protected:
  void SetUp() override { stub_ = Connect(server_->port()); }

  grpc::Status Register(const std::string& id, int count, uint32_t seed,
                        v1::RegisterReferencesResponse* response = nullptr) {
    v1::RegisterReferencesRequest request;
    request.set_identity_id(id);
    for (int i = 0; i < count; ++i) *request.add_references() = Rgb8Image(128, 128, seed + i);
    v1::RegisterReferencesResponse local;
    grpc::ClientContext context;
    return stub_->RegisterReferences(&context, request, response ? response : &local);
  }

  grpc::Status Enhance(const v1::EnhanceRequest& request, v1::EnhanceResponse* response) {
    grpc::ClientContext context;
    PrepareContext(&context, "", std::chrono::seconds(30));
    return stub_->Enhance(&context, request, response);
  }

  v1::EnhanceRequest FrameRequest(const std::string& id, uint32_t seed) {
    v1::EnhanceRequest request;
    request.set_identity_id(id);
    *request.mutable_frame() = Rgb8Image(32, 32, seed);
    return request;
  }

  // Asserts the call failed with `code` and a message containing `text`.
  void ExpectError(const grpc::Status& status, grpc::StatusCode code, const std::string& text) {
    EXPECT_EQ(status.error_code(), code) << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(text));
  }

  void ExpectEnhanceError(const v1::EnhanceRequest& request, grpc::StatusCode code,
                          const std::string& text) {
    v1::EnhanceResponse response;
    ExpectError(Enhance(request, &response), code, text);
  }

  std::unique_ptr<v1::FaceSuperResolution::Stub> stub_;
};

TEST_F(FaceSrServiceTest, GetServerInfoReportsTheModel) {
  grpc::ClientContext context;
  v1::GetServerInfoResponse info;
  ASSERT_TRUE(stub_->GetServerInfo(&context, {}, &info).ok());
  EXPECT_EQ(info.model_name(), "fsrst_x4_small");
  EXPECT_EQ(info.lr_size(), 32u);
  EXPECT_EQ(info.scale(), 4u);
  EXPECT_EQ(info.reference_size(), 128u);
  EXPECT_EQ(info.max_references(), 8u);
  EXPECT_EQ(info.max_batch_size(), 4u);
  EXPECT_EQ(info.device(), "cpu");
}

TEST_F(FaceSrServiceTest, RegisterThenEnhanceReturnsTheOutputSize) {
  v1::RegisterReferencesResponse registered;
  ASSERT_TRUE(Register("alice", 3, 1, &registered).ok());
  EXPECT_EQ(registered.reference_count(), 3u);
  EXPECT_EQ(registered.feature_bytes(), 3 * kFeatureBytesPerReference);

  v1::EnhanceRequest request = FrameRequest("alice", 7);
  request.set_sequence_number(42);
  v1::EnhanceResponse response;
  ASSERT_TRUE(Enhance(request, &response).ok());
  EXPECT_EQ(response.sequence_number(), 42u);
  EXPECT_EQ(response.image().encoding(), v1::ENCODING_RGB8);
  EXPECT_EQ(response.image().width(), 128u);
  EXPECT_EQ(response.image().height(), 128u);
  EXPECT_EQ(response.image().data().size(), 128u * 128 * 3);
  EXPECT_GE(response.batch_size(), 1u);
}

TEST_F(FaceSrServiceTest, CachedReferencesEqualInlineReferences) {
  ASSERT_TRUE(Register("bob", 3, 100).ok());
  v1::EnhanceRequest cached = FrameRequest("bob", 9);
  v1::EnhanceRequest inline_refs = FrameRequest("", 9);
  for (int i = 0; i < 3; ++i) *inline_refs.add_references() = Rgb8Image(128, 128, 100 + i);
  v1::EnhanceResponse from_cache, from_inline, without;
  ASSERT_TRUE(Enhance(cached, &from_cache).ok());
  ASSERT_TRUE(Enhance(inline_refs, &from_inline).ok());
  EXPECT_EQ(from_cache.image().data(), from_inline.image().data());
  // And the references matter: no references gives another face.
  ASSERT_TRUE(Enhance(FrameRequest("", 9), &without).ok());
  EXPECT_NE(without.image().data(), from_cache.image().data());
}

// Replaced, not appended or merged: after re-registering with other references (and another
// count), the output is byte for byte that of the new references sent inline.
TEST_F(FaceSrServiceTest, ReRegisteringReplacesTheReferences) {
  ASSERT_TRUE(Register("carol", 2, 200).ok());
  v1::EnhanceResponse first, second, from_inline;
  ASSERT_TRUE(Enhance(FrameRequest("carol", 3), &first).ok());
  ASSERT_TRUE(Register("carol", 3, 300).ok());
  ASSERT_TRUE(Enhance(FrameRequest("carol", 3), &second).ok());
  v1::EnhanceRequest inline_refs = FrameRequest("", 3);
  for (int i = 0; i < 3; ++i) *inline_refs.add_references() = Rgb8Image(128, 128, 300 + i);
  ASSERT_TRUE(Enhance(inline_refs, &from_inline).ok());
  EXPECT_EQ(second.image().data(), from_inline.image().data());
  EXPECT_NE(first.image().data(), second.image().data());
}

TEST_F(FaceSrServiceTest, JpegInJpegOut) {
  ASSERT_TRUE(Register("dave", 1, 400).ok());
  RgbImage frame{32, 32, {}};
  const std::string noise = NoiseBytes(32 * 32 * 3, 5);
  frame.pixels.assign(noise.begin(), noise.end());
  v1::EnhanceRequest request;
  request.set_identity_id("dave");
  request.mutable_frame()->set_encoding(v1::ENCODING_JPEG);
  request.mutable_frame()->set_data(*EncodeJpeg(frame, 90));
  v1::EnhanceResponse response;
  ASSERT_TRUE(Enhance(request, &response).ok());
  EXPECT_EQ(response.image().encoding(), v1::ENCODING_JPEG);
  auto decoded = DecodeImage(ImageEncoding::kJpeg, response.image().data(), 0, 0, {}, "image");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->width, 128);
  EXPECT_EQ(decoded->height, 128);
}

TEST_F(FaceSrServiceTest, DeleteReferencesForgetsTheIdentity) {
  ASSERT_TRUE(Register("erin", 2, 500).ok());
  grpc::ClientContext context;
  v1::DeleteReferencesRequest request;
  request.set_identity_id("erin");
  v1::DeleteReferencesResponse response;
  ASSERT_TRUE(stub_->DeleteReferences(&context, request, &response).ok());
  ExpectEnhanceError(FrameRequest("erin", 1), grpc::StatusCode::NOT_FOUND,
                     "call RegisterReferences again");
  grpc::ClientContext again;
  ExpectError(stub_->DeleteReferences(&again, request, &response), grpc::StatusCode::NOT_FOUND,
              "erin");
}

// --- Bad input: each one a clear INVALID_ARGUMENT (or NOT_FOUND), nothing else lost. ---

TEST_F(FaceSrServiceTest, WrongFrameSizeNamesTheExpectedSize) {
  v1::EnhanceRequest request = FrameRequest("", 1);
  *request.mutable_frame() = Rgb8Image(64, 48, 1);
  ExpectEnhanceError(request, grpc::StatusCode::INVALID_ARGUMENT,
                     "frame: expected 32x32 pixels, got 64x48");
}

TEST_F(FaceSrServiceTest, CorruptJpegIsInvalidArgument) {
  v1::EnhanceRequest request = FrameRequest("", 1);
  request.mutable_frame()->set_encoding(v1::ENCODING_JPEG);
  request.mutable_frame()->set_data("\xff\xd8\xff\xe0 definitely not a jpeg");
  ExpectEnhanceError(request, grpc::StatusCode::INVALID_ARGUMENT, "frame");
}

TEST_F(FaceSrServiceTest, TruncatedJpegIsInvalidArgument) {
  RgbImage frame{32, 32, {}};
  const std::string noise = NoiseBytes(32 * 32 * 3, 6);
  frame.pixels.assign(noise.begin(), noise.end());
  const std::string jpeg = *EncodeJpeg(frame, 90);
  v1::EnhanceRequest request = FrameRequest("", 1);
  request.mutable_frame()->set_encoding(v1::ENCODING_JPEG);
  request.mutable_frame()->set_data(jpeg.substr(0, jpeg.size() / 2));
  ExpectEnhanceError(request, grpc::StatusCode::INVALID_ARGUMENT, "frame");
}

TEST_F(FaceSrServiceTest, Rgb8LengthMismatchNamesTheExpectedBytes) {
  v1::EnhanceRequest request = FrameRequest("", 1);
  request.mutable_frame()->mutable_data()->resize(32 * 32 * 3 - 1);
  ExpectEnhanceError(request, grpc::StatusCode::INVALID_ARGUMENT, "3072");
}

TEST_F(FaceSrServiceTest, MissingEncodingIsInvalidArgument) {
  v1::EnhanceRequest request = FrameRequest("", 1);
  request.mutable_frame()->set_encoding(v1::ENCODING_UNSPECIFIED);
  ExpectEnhanceError(request, grpc::StatusCode::INVALID_ARGUMENT,
                     "frame.encoding: expected ENCODING_JPEG (1) or ENCODING_RGB8 (2)");
}

TEST_F(FaceSrServiceTest, ZeroReferencesIsInvalidArgument) {
  ExpectError(Register("frank", 0, 1), grpc::StatusCode::INVALID_ARGUMENT,
              "references: expected 1 to 8 images, got 0");
}

TEST_F(FaceSrServiceTest, TooManyReferencesIsInvalidArgument) {
  ExpectError(Register("frank", 9, 1), grpc::StatusCode::INVALID_ARGUMENT,
              "references: expected 1 to 8 images, got 9");
  v1::EnhanceRequest request = FrameRequest("", 1);
  for (int i = 0; i < 9; ++i) *request.add_references() = Rgb8Image(128, 128, i);
  ExpectEnhanceError(request, grpc::StatusCode::INVALID_ARGUMENT, "expected 1 to 8 images");
}

TEST_F(FaceSrServiceTest, BadReferenceNamesItsIndex) {
  v1::RegisterReferencesRequest request;
  request.set_identity_id("gina");
  *request.add_references() = Rgb8Image(128, 128, 1);
  *request.add_references() = Rgb8Image(128, 128, 2);
  request.mutable_references(1)->mutable_data()->resize(10);
  grpc::ClientContext context;
  v1::RegisterReferencesResponse response;
  ExpectError(stub_->RegisterReferences(&context, request, &response),
              grpc::StatusCode::INVALID_ARGUMENT, "references[1]");
}

TEST_F(FaceSrServiceTest, IdentityIdsAreChecked) {
  ExpectError(Register("", 1, 1), grpc::StatusCode::INVALID_ARGUMENT,
              "identity_id: expected 1 to 128 characters, got 0");
  ExpectError(Register(std::string(129, 'a'), 1, 1), grpc::StatusCode::INVALID_ARGUMENT,
              "identity_id: expected 1 to 128 characters, got 129");
  ExpectError(Register("bad id/with spaces", 1, 1), grpc::StatusCode::INVALID_ARGUMENT,
              "expected only [A-Za-z0-9._:@-]");
  ExpectEnhanceError(FrameRequest("no such person!", 1), grpc::StatusCode::INVALID_ARGUMENT,
                     "identity_id");
}

TEST_F(FaceSrServiceTest, UnknownIdentityIsNotFoundAndSaysToRegister) {
  ExpectEnhanceError(FrameRequest("nobody", 1), grpc::StatusCode::NOT_FOUND,
                     "call RegisterReferences again");
}

TEST_F(FaceSrServiceTest, ReferencesAndIdentityTogetherAreRejected) {
  ASSERT_TRUE(Register("hank", 1, 1).ok());
  v1::EnhanceRequest request = FrameRequest("hank", 1);
  *request.add_references() = Rgb8Image(128, 128, 1);
  ExpectEnhanceError(request, grpc::StatusCode::INVALID_ARGUMENT, "references: expected none");
}

TEST_F(FaceSrServiceTest, OversizeMessageIsRejectedByTheTransport) {
  v1::EnhanceRequest request = FrameRequest("", 1);
  request.mutable_frame()->set_data(std::string(2 << 20, 'x'));  // over the 1 MiB limit
  v1::EnhanceResponse response;
  EXPECT_EQ(Enhance(request, &response).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST_F(FaceSrServiceTest, HugeJpegDimensionsAreRejectedFromTheHeader) {
  RgbImage small{16, 16, std::vector<uint8_t>(16 * 16 * 3, 128)};
  std::string jpeg = *EncodeJpeg(small, 90);
  // Patch the SOF marker's height and width to 60000 x 60000.
  for (size_t i = 0; i + 8 < jpeg.size(); ++i) {
    const uint8_t marker = static_cast<uint8_t>(jpeg[i + 1]);
    if (static_cast<uint8_t>(jpeg[i]) == 0xff && (marker == 0xc0 || marker == 0xc2)) {
      jpeg[i + 5] = static_cast<char>(0xea);
      jpeg[i + 6] = static_cast<char>(0x60);
      jpeg[i + 7] = static_cast<char>(0xea);
      jpeg[i + 8] = static_cast<char>(0x60);
      break;
    }
  }
  v1::RegisterReferencesRequest request;
  request.set_identity_id("ivy");
  request.add_references()->set_encoding(v1::ENCODING_JPEG);
  request.mutable_references(0)->set_data(jpeg);
  grpc::ClientContext context;
  v1::RegisterReferencesResponse response;
  ExpectError(stub_->RegisterReferences(&context, request, &response),
              grpc::StatusCode::INVALID_ARGUMENT, "references[0]");
}

TEST_F(FaceSrServiceTest, StaysServingAfterBadInput) {
  v1::EnhanceRequest bad = FrameRequest("", 1);
  bad.mutable_frame()->set_data("garbage");
  v1::EnhanceResponse response;
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(Enhance(bad, &response).ok());
  auto health = grpc::health::v1::Health::NewStub(grpc::CreateChannel(
      absl::StrCat("127.0.0.1:", server_->port()), grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  grpc::health::v1::HealthCheckResponse status;
  ASSERT_TRUE(health->Check(&context, {}, &status).ok());
  EXPECT_EQ(status.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  ASSERT_TRUE(Enhance(FrameRequest("", 2), &response).ok());
}

// --- Streams ---

TEST_F(FaceSrServiceTest, StreamAnswersInOrderAndBadFramesDoNotEndIt) {
  ASSERT_TRUE(Register("judy", 3, 600).ok());
  grpc::ClientContext context;
  auto stream = stub_->EnhanceStream(&context);
  constexpr int kFrames = 12;
  for (int i = 0; i < kFrames; ++i) {
    v1::EnhanceRequest request = FrameRequest("judy", 1000 + i);
    request.set_sequence_number(100 + i);
    if (i == 3) request.mutable_frame()->set_data("bad");         // INVALID_ARGUMENT
    if (i == 7) request.set_identity_id("unknown-person");        // NOT_FOUND
    ASSERT_TRUE(stream->Write(request));
  }
  stream->WritesDone();
  std::vector<uint64_t> sequence;
  v1::EnhanceResponse response;
  while (stream->Read(&response)) {
    sequence.push_back(response.sequence_number());
    const int i = static_cast<int>(response.sequence_number()) - 100;
    if (i == 3) {
      EXPECT_EQ(response.error().code(), static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT));
      EXPECT_THAT(response.error().message(), HasSubstr("frame"));
      EXPECT_FALSE(response.has_image());
    } else if (i == 7) {
      EXPECT_EQ(response.error().code(), static_cast<int>(grpc::StatusCode::NOT_FOUND));
    } else {
      EXPECT_FALSE(response.has_error()) << response.error().message();
      EXPECT_EQ(response.image().data().size(), 128u * 128 * 3);
    }
  }
  EXPECT_TRUE(stream->Finish().ok());
  std::vector<uint64_t> expected;
  for (int i = 0; i < kFrames; ++i) expected.push_back(100 + i);
  EXPECT_EQ(sequence, expected);
}

TEST_F(FaceSrServiceTest, StreamOutputEqualsUnaryOutput) {
  ASSERT_TRUE(Register("kate", 2, 700).ok());
  v1::EnhanceResponse unary;
  ASSERT_TRUE(Enhance(FrameRequest("kate", 77), &unary).ok());
  grpc::ClientContext context;
  auto stream = stub_->EnhanceStream(&context);
  ASSERT_TRUE(stream->Write(FrameRequest("kate", 77)));
  stream->WritesDone();
  v1::EnhanceResponse streamed;
  ASSERT_TRUE(stream->Read(&streamed));
  EXPECT_EQ(streamed.image().data(), unary.image().data());
  EXPECT_FALSE(stream->Read(&streamed));
  EXPECT_TRUE(stream->Finish().ok());
}

TEST_F(FaceSrServiceTest, ExpiredPerFrameTimeoutIsDeadlineExceeded) {
  // A 1 ms budget cannot be met behind a queue of frames: it is dropped, not computed.
  grpc::ClientContext context;
  auto stream = stub_->EnhanceStream(&context);
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(stream->Write(FrameRequest("", i)));
  v1::EnhanceRequest late = FrameRequest("", 99);
  late.set_sequence_number(99);
  late.set_timeout_ms(1);
  ASSERT_TRUE(stream->Write(late));
  stream->WritesDone();
  v1::EnhanceResponse response;
  int late_code = -1;
  while (stream->Read(&response)) {
    if (response.sequence_number() == 99) late_code = response.error().code();
  }
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(late_code, static_cast<int>(grpc::StatusCode::DEADLINE_EXCEEDED));
}

TEST(BatchSizeBuckets, OnePerSizeUpTo16ThenPowersOfTwoAndTheLimit) {
  EXPECT_THAT(BatchSizeBuckets(1), ::testing::ElementsAre(1));
  EXPECT_THAT(BatchSizeBuckets(4), ::testing::ElementsAre(1, 2, 3, 4));
  EXPECT_THAT(BatchSizeBuckets(40), ::testing::ElementsAre(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
                                                           13, 14, 15, 16, 32, 40));
}

TEST_F(FaceSrServiceTest, MetricsCountRequestsAndCache) {
  ASSERT_TRUE(Register("leo", 1, 1).ok());
  v1::EnhanceResponse response;
  ASSERT_TRUE(Enhance(FrameRequest("leo", 1), &response).ok());
  const std::string text = server_->metrics().SerializeText();
  EXPECT_THAT(text, HasSubstr("fsrst_requests_total{code=\"OK\",rpc=\"Enhance\"}"));
  EXPECT_THAT(text, HasSubstr("fsrst_reference_cache_entries"));
  // One bucket per batch size 1..max_batch_size (4 in TestConfig), then +Inf.
  EXPECT_THAT(text, ::testing::ContainsRegex("fsrst_batch_size_bucket\\{le=\"3(\\.0+)?\"\\}"));
  EXPECT_THAT(text, ::testing::ContainsRegex("fsrst_batch_size_bucket\\{le=\"4(\\.0+)?\"\\}"));
  EXPECT_THAT(text, ::testing::Not(::testing::ContainsRegex("fsrst_batch_size_bucket\\{le=\"8")));
  // TestConfig asks for one thread per call: one instance per core.
  EXPECT_THAT(text, HasSubstr(absl::StrCat("fsrst_model_info{device=\"cpu\",instances=\"",
                                           std::max(1u, std::thread::hardware_concurrency()),
                                           "\",model=\"fsrst_x4_small\"")));
  EXPECT_THAT(text, ::testing::ContainsRegex("fsrst_model_info\\{[^}]*threads=\"1\""));
}

// Runs a job on the batcher's only worker (or the decode pool's only thread) until released,
// so what queues behind it stays queued for certain; released however the test ends.
class Hold {
 public:
  ~Hold() {
    if (!release_.HasBeenNotified()) release_.Notify();
  }
  std::function<void()> Job() {
    return [this] {
      running_.Notify();
      release_.WaitForNotification();
    };
  }
  void WaitUntilRunning() { running_.WaitForNotification(); }
  void Release() { release_.Notify(); }

 private:
  absl::Notification running_, release_;
};

// One model instance held by a job, a queue of one frame: the first frame waits in the queue,
// the second is refused at once with the bound in the message. No race with the model's speed
// or the number of cores.
TEST(FaceSrServiceOverload, FullQueueIsResourceExhausted) {
  ServerConfig config = TestConfig();
  config.model_instances = 1;
  config.max_queue_size = 1;
  config.max_batch_size = 1;
  auto server = FsrstServer::Start(config);
  ASSERT_TRUE(server.ok()) << server.status();
  Hold hold;
  ASSERT_TRUE((*server)->batcher().RunExclusive(hold.Job()).ok());
  hold.WaitUntilRunning();
  auto stub = Connect((*server)->port());
  grpc::Status queued_status;
  v1::EnhanceResponse queued_response;
  std::thread queued([&] {
    v1::EnhanceRequest request;
    *request.mutable_frame() = Rgb8Image(32, 32, 1);
    grpc::ClientContext context;
    queued_status = stub->Enhance(&context, request, &queued_response);
  });
  while ((*server)->batcher().queue_size() < 1) absl::SleepFor(absl::Milliseconds(1));
  v1::EnhanceRequest request;
  *request.mutable_frame() = Rgb8Image(32, 32, 2);
  v1::EnhanceResponse response;
  grpc::ClientContext context;
  // The refusal is immediate. The deadline is for a build whose bound lets this frame in too:
  // it would wait behind the held model for ever, and the test would hang instead of failing.
  PrepareContext(&context, "", std::chrono::seconds(20));
  const grpc::Status refused = stub->Enhance(&context, request, &response);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(refused.error_message(),
            "the frame queue is full (max_queue_size=1 frames); retry with backoff");
  hold.Release();
  queued.join();
  EXPECT_TRUE(queued_status.ok()) << queued_status.error_message();
  EXPECT_EQ(queued_response.image().data().size(), 128u * 128 * 3);
}

// The drain itself, with the listener still open: a decode held on the only decode thread keeps
// Shutdown draining, and meanwhile a new call on an open connection is refused by the service
// (not by a closed port) and health says NOT_SERVING.
TEST(FaceSrServiceShutdown, DrainingRefusesNewWorkWithUnavailable) {
  auto server = FsrstServer::Start(TestConfig());
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = grpc::CreateChannel(absl::StrCat("127.0.0.1:", (*server)->port()),
                                     grpc::InsecureChannelCredentials());
  auto stub = v1::FaceSuperResolution::NewStub(channel);
  auto health = grpc::health::v1::Health::NewStub(channel);
  auto health_status = [&] {
    grpc::health::v1::HealthCheckResponse answer;
    grpc::ClientContext context;
    EXPECT_TRUE(health->Check(&context, {}, &answer).ok());
    return answer.status();
  };
  ASSERT_EQ(health_status(), grpc::health::v1::HealthCheckResponse::SERVING);
  Hold hold;
  auto blocker = std::make_unique<JobTask>();
  std::function<void()> job = hold.Job();
  blocker->run = [job](absl::Status) { job(); };
  ASSERT_TRUE((*server)->decoder().Submit(&blocker).ok());
  hold.WaitUntilRunning();
  bool drained = false;
  std::thread shutdown([&] { drained = (*server)->Shutdown(absl::Seconds(60)); });
  while (health_status() != grpc::health::v1::HealthCheckResponse::NOT_SERVING) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  v1::EnhanceRequest request;
  *request.mutable_frame() = Rgb8Image(32, 32, 1);
  v1::EnhanceResponse response;
  grpc::ClientContext context;
  PrepareContext(&context, "", std::chrono::seconds(30));
  const grpc::Status refused = stub->Enhance(&context, request, &response);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(refused.error_message(), "the server is shutting down; retry on another replica");
  hold.Release();
  shutdown.join();
  EXPECT_TRUE(drained);
}

TEST(FaceSrServiceStart, MissingModelFailsToStart) {
  ServerConfig config = TestConfig();
  config.model_path = "/nonexistent.pt";
  auto server = FsrstServer::Start(config);
  EXPECT_EQ(server.status().code(), absl::StatusCode::kNotFound);
}

// Regression: the stream reactor used to let another thread start the next read into its
// one request buffer while OnReadDone was still preparing the frame in it. A frame that
// finished on a batcher thread meanwhile called Advance(), which wrote its answer and started
// the read; a caller that sends a frame per answer then had the next frame parsed into the
// buffer while the references of this one were being decoded. Seen as a server crash in
// DecodeRgb8 and as INVALID_ARGUMENT "references[1].encoding: ... got 0" for frames that
// were valid. Each caller here keeps two frames in flight and sends the next on every
// answer, each frame with eight 128x128 inline references. The race is a matter of timing:
// before the fix this test failed 10 of 12 runs here (1 to 3 frames per run), after it 0 of
// 12 (and fsrst_bench's stream test with inline references 4 of 36, then 0 of 40).
TEST(FaceSrServiceStreamRace, AnswersThatStartTheNextReadLeaveTheFrameBeingPreparedIntact) {
  auto server = FsrstServer::Start(TestConfig());
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = Connect((*server)->port());
  constexpr int kCallers = 4;
  constexpr int kFrames = 150;
  constexpr int kWindow = 2;
  std::vector<std::vector<std::string>> errors(kCallers);
  std::vector<int> answered(kCallers, 0);
  std::vector<std::thread> callers;
  for (int c = 0; c < kCallers; ++c) {
    callers.emplace_back([&, c] {
      v1::EnhanceRequest request;
      for (int r = 0; r < 8; ++r) *request.add_references() = Rgb8Image(128, 128, 500 + 10 * c + r);
      grpc::ClientContext context;
      auto stream = stub->EnhanceStream(&context);
      int sent = 0;
      auto send = [&] {
        *request.mutable_frame() = Rgb8Image(32, 32, 7000 + 1000 * c + sent);
        request.set_sequence_number(sent++);
        return stream->Write(request);
      };
      bool open = true;
      while (sent < kWindow && open) open = send();
      v1::EnhanceResponse response;
      while (answered[c] < kFrames && stream->Read(&response)) {
        if (response.sequence_number() != static_cast<uint64_t>(answered[c])) {
          errors[c].push_back(absl::StrCat("answer ", answered[c], " has sequence number ",
                                           response.sequence_number()));
        }
        ++answered[c];
        if (response.has_error()) {
          errors[c].push_back(absl::StrCat("frame ", response.sequence_number(), ": ",
                                           response.error().message()));
        } else if (response.image().data().size() != 128u * 128 * 3) {
          errors[c].push_back(absl::StrCat("frame ", response.sequence_number(), ": ",
                                           response.image().data().size(), " bytes"));
        }
        if (open && sent < kFrames) open = send();
      }
      stream->WritesDone();
      const grpc::Status status = stream->Finish();
      if (!status.ok()) errors[c].push_back("Finish: " + status.error_message());
    });
  }
  for (std::thread& caller : callers) caller.join();
  for (int c = 0; c < kCallers; ++c) {
    EXPECT_EQ(answered[c], kFrames) << "caller " << c;
    EXPECT_THAT(errors[c], ::testing::IsEmpty()) << "caller " << c;
  }
}

// Issue 19, defect 4: a stream frame with inline references is decoded on the decode pool,
// never on the gRPC thread, so it meets the pool's bound: with the one decode thread busy and
// its one queue place taken, such a frame is answered alone with a RESOURCE_EXHAUSTED
// FrameError, in its place, and the stream goes on. The pool is filled with jobs that wait
// for a notification, so the queue is full for certain when the frame arrives. The old
// reactor decoded the references itself and answered the frame with an image.
TEST(FaceSrServiceStreamDecoding, AFrameBeyondTheDecodeQueueIsRefusedAloneInItsPlace) {
  ServerConfig config = TestConfig();
  config.decode_threads = 1;
  config.max_queued_decodes = 1;
  auto server = FsrstServer::Start(config);
  ASSERT_TRUE(server.ok()) << server.status();
  WorkerPool& decoder = (*server)->decoder();
  absl::Notification running, release;
  // Released however the test ends, or the server could not stop.
  struct Releaser {
    absl::Notification* n;
    ~Releaser() {
      if (!n->HasBeenNotified()) n->Notify();
    }
  } releaser{&release};
  auto blocker = std::make_unique<JobTask>();
  blocker->run = [&](absl::Status) {
    running.Notify();
    release.WaitForNotification();
  };
  ASSERT_TRUE(decoder.Submit(&blocker).ok());
  running.WaitForNotification();
  auto queued = std::make_unique<JobTask>();
  queued->run = [](absl::Status) {};
  ASSERT_TRUE(decoder.Submit(&queued).ok());
  ASSERT_EQ(decoder.queued(), 1);

  auto stub = Connect((*server)->port());
  grpc::ClientContext context;
  PrepareContext(&context, "", std::chrono::seconds(60));
  auto stream = stub->EnhanceStream(&context);
  auto frame = [](int sequence, bool inline_references) {
    v1::EnhanceRequest request;
    request.set_sequence_number(sequence);
    *request.mutable_frame() = Rgb8Image(32, 32, 100 + sequence);
    if (inline_references) {
      for (int r = 0; r < 8; ++r) *request.add_references() = Rgb8Image(128, 128, 900 + r);
    }
    return request;
  };
  ASSERT_TRUE(stream->Write(frame(0, true)));   // the queue is full: refused
  ASSERT_TRUE(stream->Write(frame(1, false)));  // no references: not the pool's business
  v1::EnhanceResponse response;
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_EQ(response.sequence_number(), 0u);
  EXPECT_EQ(response.error().code(), static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED));
  EXPECT_THAT(response.error().message(), HasSubstr("reference decoding"));
  EXPECT_THAT(response.error().message(), HasSubstr("1 waiting"));
  EXPECT_FALSE(response.has_image());
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_EQ(response.sequence_number(), 1u);
  EXPECT_FALSE(response.has_error()) << response.error().message();
  EXPECT_EQ(response.image().data().size(), 128u * 128 * 3);

  // Once the pool has room, the same frame is decoded there and answered.
  release.Notify();
  ASSERT_TRUE(decoder.WaitUntilIdle(absl::Seconds(60)));
  ASSERT_TRUE(stream->Write(frame(2, true)));
  ASSERT_TRUE(stream->Read(&response));
  EXPECT_EQ(response.sequence_number(), 2u);
  EXPECT_FALSE(response.has_error()) << response.error().message();
  EXPECT_EQ(response.image().data().size(), 128u * 128 * 3);
  stream->WritesDone();
  EXPECT_FALSE(stream->Read(&response));
  EXPECT_TRUE(stream->Finish().ok());
}

}  // namespace
}  // namespace fsrst
