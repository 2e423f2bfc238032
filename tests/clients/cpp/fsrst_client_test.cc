// FsrstClient and FrameStream: real gRPC over loopback, against an in-process
// FsrstServer with the small model, and against a recording fake service
// where the behaviour under test needs a server that misbehaves on purpose.

#include "clients/cpp/fsrst_client.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "fsrst/v1/fsrst.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/fsrst_server.h"
#include "imaging/image_codec.h"
#include "tests/server/service_test_util.h"

namespace fsrst {
namespace {

using ::fsrst::testing::Connect;
using ::fsrst::testing::kFeatureBytesPerReference;
using ::fsrst::testing::Rgb8Image;
using ::fsrst::testing::TestConfig;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr int kNotFound = static_cast<int>(grpc::StatusCode::NOT_FOUND);

std::shared_ptr<grpc::Channel> ChannelTo(int port) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                   grpc::InsecureChannelCredentials(), args);
}

std::vector<v1::Image> References(int count, uint32_t seed) {
  std::vector<v1::Image> references;
  for (int i = 0; i < count; ++i) references.push_back(Rgb8Image(128, 128, seed + i));
  return references;
}

v1::Image Frame(uint32_t seed) { return Rgb8Image(32, 32, seed); }

// The value of one series of fsrst_requests_total, 0 when absent.
int64_t RequestCount(FsrstServer& server, const std::string& rpc, const std::string& code = "OK") {
  const std::string text = server.metrics().SerializeText();
  const std::string series =
      absl::StrCat("fsrst_requests_total{code=\"", code, "\",rpc=\"", rpc, "\"} ");
  const size_t at = text.find(series);
  if (at == std::string::npos) return 0;
  const size_t start = at + series.size();
  double value = -1;
  EXPECT_TRUE(absl::SimpleAtod(text.substr(start, text.find('\n', start) - start), &value));
  return static_cast<int64_t>(value);
}

// ------------------------------------------------ against a real FsrstServer

class FsrstClientTest : public ::fsrst::testing::SharedServerTest {
 protected:
  void SetUp() override {
    client_ = std::make_unique<FsrstClient>(ChannelTo(server_->port()));
    stub_ = Connect(server_->port());
  }

  // Deletes an identity behind the client's back, as eviction, a restart or
  // another replica would lose it.
  void DeleteOnServer(const std::string& id) {
    grpc::ClientContext context;
    v1::DeleteReferencesRequest request;
    request.set_identity_id(id);
    v1::DeleteReferencesResponse response;
    ASSERT_TRUE(stub_->DeleteReferences(&context, request, &response).ok());
  }

  // Enhance through the raw stub: what the server itself holds for `id`.
  grpc::StatusCode RawEnhanceCode(const std::string& id) {
    grpc::ClientContext context;
    v1::EnhanceRequest request;
    request.set_identity_id(id);
    *request.mutable_frame() = Frame(1);
    v1::EnhanceResponse response;
    return stub_->Enhance(&context, request, &response).error_code();
  }

  std::unique_ptr<FsrstClient> client_;
  std::unique_ptr<v1::FaceSuperResolution::Stub> stub_;
};

TEST_F(FsrstClientTest, RegisterThenEnhanceReturnsTheOutputSize) {
  auto registered = client_->RegisterReferences("alice", References(3, 10));
  ASSERT_TRUE(registered.ok()) << registered.status();
  EXPECT_EQ(registered->reference_count(), 3u);
  EXPECT_EQ(registered->feature_bytes(), 3 * kFeatureBytesPerReference);
  EXPECT_TRUE(client_->HasReferences("alice"));

  auto answer = client_->Enhance("alice", Frame(7));
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->image().encoding(), v1::ENCODING_RGB8);
  EXPECT_EQ(answer->image().width(), 128u);
  EXPECT_EQ(answer->image().height(), 128u);
  EXPECT_EQ(answer->image().data().size(), 128u * 128 * 3);
}

TEST_F(FsrstClientTest, OptionsReachTheRequest) {
  ASSERT_TRUE(client_->RegisterReferences("amy", References(1, 20)).ok());
  CallOptions options;
  options.output_encoding = v1::ENCODING_JPEG;
  options.jpeg_quality = 80;
  auto answer = client_->Enhance("amy", Frame(3), options);
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(answer->image().encoding(), v1::ENCODING_JPEG);
  auto decoded = DecodeImage(ImageEncoding::kJpeg, answer->image().data(), 0, 0, {}, "answer");
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->width, 128);
  EXPECT_EQ(decoded->height, 128);
}

TEST_F(FsrstClientTest, ServerSideDeletionIsHealedByReRegistration) {
  ASSERT_TRUE(client_->RegisterReferences("bob", References(3, 30)).ok());
  auto first = client_->Enhance("bob", Frame(5));
  ASSERT_TRUE(first.ok()) << first.status();

  DeleteOnServer("bob");
  ASSERT_EQ(RawEnhanceCode("bob"), grpc::StatusCode::NOT_FOUND);
  const int64_t registrations = RequestCount(*server_, "RegisterReferences");

  auto second = client_->Enhance("bob", Frame(5));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(second->image().data() == first->image().data());
  EXPECT_EQ(RequestCount(*server_, "RegisterReferences"), registrations + 1);
  EXPECT_EQ(RawEnhanceCode("bob"), grpc::StatusCode::OK);  // the server has them again
}

TEST_F(FsrstClientTest, ReRegistrationSendsTheLastAcceptedReferences) {
  ASSERT_TRUE(client_->RegisterReferences("cleo", References(2, 40)).ok());
  ASSERT_TRUE(client_->RegisterReferences("cleo", References(2, 50)).ok());
  // Rejected (one reference too many): the client keeps the 50s.
  EXPECT_EQ(client_->RegisterReferences("cleo", References(9, 60)).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto before = client_->Enhance("cleo", Frame(8));
  ASSERT_TRUE(before.ok()) << before.status();
  DeleteOnServer("cleo");
  auto after = client_->Enhance("cleo", Frame(8));
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_TRUE(after->image().data() == before->image().data());
}

TEST_F(FsrstClientTest, DeleteReferencesForgetsTheIdentityEverywhere) {
  ASSERT_TRUE(client_->RegisterReferences("dora", References(2, 70)).ok());
  EXPECT_TRUE(client_->DeleteReferences("dora").ok());
  EXPECT_FALSE(client_->HasReferences("dora"));
  EXPECT_EQ(RawEnhanceCode("dora"), grpc::StatusCode::NOT_FOUND);
  const int64_t registrations = RequestCount(*server_, "RegisterReferences");
  auto answer = client_->Enhance("dora", Frame(1));
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(answer.status().message(), HasSubstr("call RegisterReferences again"));
  EXPECT_EQ(RequestCount(*server_, "RegisterReferences"), registrations);
  // Now unknown to both: the server's NOT_FOUND.
  EXPECT_EQ(client_->DeleteReferences("dora").code(), absl::StatusCode::kNotFound);
}

TEST_F(FsrstClientTest, DeletingWhatTheServerAlreadyLostIsOk) {
  ASSERT_TRUE(client_->RegisterReferences("ella", References(1, 80)).ok());
  DeleteOnServer("ella");
  EXPECT_TRUE(client_->DeleteReferences("ella").ok());
  EXPECT_FALSE(client_->HasReferences("ella"));
}

TEST_F(FsrstClientTest, UnknownIdentityIsNotFoundWithoutRegistering) {
  const int64_t registrations = RequestCount(*server_, "RegisterReferences");
  auto answer = client_->Enhance("nobody", Frame(1));
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(answer.status().message(), HasSubstr("nobody"));
  EXPECT_EQ(RequestCount(*server_, "RegisterReferences"), registrations);
}

TEST_F(FsrstClientTest, ServerErrorsKeepTheirCodeAndMessage) {
  auto wrong_size = client_->Enhance("", Rgb8Image(64, 48, 1));
  EXPECT_EQ(wrong_size.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wrong_size.status().message(), HasSubstr("frame: expected 32x32 pixels, got 64x48"));
  auto too_many = client_->RegisterReferences("finn", References(9, 1));
  EXPECT_EQ(too_many.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(too_many.status().message(), HasSubstr("references: expected 1 to 8 images, got 9"));
  EXPECT_FALSE(client_->HasReferences("finn"));
}

TEST_F(FsrstClientTest, IdentityThatCannotBeMetadataIsRejectedLocally) {
  EXPECT_EQ(client_->Enhance("bad\nid", Frame(1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->OpenStream("bad\nid").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(FsrstClientTest, IdentityRuleIsTheServers) {
  // The client's message is the server's own answer, word for word.
  for (const std::string& id : {std::string("a b"), std::string("jos\xc3\xa9"),
                                std::string("a\tb"), std::string(129, 'x')}) {
    SCOPED_TRACE(id);
    grpc::ClientContext context;
    v1::RegisterReferencesRequest request;
    request.set_identity_id(id);
    *request.add_references() = References(1, 1)[0];
    v1::RegisterReferencesResponse response;
    const grpc::Status server = stub_->RegisterReferences(&context, request, &response);
    EXPECT_EQ(server.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_EQ(server.error_message(), std::string(CheckIdentityId(id).message()));
  }
}

TEST_F(FsrstClientTest, DeadlineComesFromTheOptions) {
  CallOptions options;
  options.timeout = absl::Microseconds(1);
  EXPECT_EQ(client_->Enhance("", Frame(1), options).status().code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST_F(FsrstClientTest, HealthIsServing) {
  auto health = client_->Health();
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_EQ(client_->Health("no.such.Service").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(FsrstClientTest, GetServerInfoReportsTheModel) {
  auto info = client_->GetServerInfo();
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->model_name(), "fsrst_x4_small");
  EXPECT_EQ(info->lr_size(), 32u);
  EXPECT_EQ(info->scale(), 4u);
  EXPECT_EQ(info->max_references(), 8u);
}

// Each answer carries the frame's reference weights; GetIdentity counts the
// frames and averages them.
TEST_F(FsrstClientTest, WeightsAndGetIdentity) {
  ASSERT_TRUE(client_->RegisterReferences("weights", References(2, 90)).ok());
  auto fresh = client_->GetIdentity("weights");
  ASSERT_TRUE(fresh.ok()) << fresh.status();
  EXPECT_EQ(fresh->reference_count(), 2u);
  EXPECT_EQ(fresh->frames_served(), 0u);
  std::vector<double> sums(2, 0.0);
  for (uint32_t seed : {1u, 2u}) {
    auto answer = client_->Enhance("weights", Frame(seed));
    ASSERT_TRUE(answer.ok()) << answer.status();
    ASSERT_EQ(answer->reference_weights_size(), 2);
    for (int j = 0; j < 2; ++j) sums[j] += answer->reference_weights(j);
  }
  auto info = client_->GetIdentity("weights");
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->frames_served(), 2u);
  ASSERT_EQ(info->mean_reference_weights_size(), 2);
  for (int j = 0; j < 2; ++j) EXPECT_NEAR(info->mean_reference_weights(j), sums[j] / 2, 1e-6);
  EXPECT_EQ(client_->GetIdentity("weights-nobody").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client_->GetIdentity("bad id").status().code(),
            absl::StatusCode::kInvalidArgument);
}

// --- FrameStream against the real server ---

TEST_F(FsrstClientTest, StreamAnswersInSendOrderWithTheCallersSequenceNumbers) {
  ASSERT_TRUE(client_->RegisterReferences("gus", References(3, 90)).ok());
  constexpr int kFrames = 10;
  std::vector<std::string> expected;
  for (int i = 0; i < kFrames; ++i) {
    auto unary = client_->Enhance("gus", Frame(1000 + i));
    ASSERT_TRUE(unary.ok()) << unary.status();
    expected.push_back(unary->image().data());
  }
  auto stream = client_->OpenStream("gus");
  ASSERT_TRUE(stream.ok()) << stream.status();
  for (int i = 0; i < kFrames; ++i) ASSERT_TRUE((*stream)->Send(Frame(1000 + i), 500 + i).ok());
  std::vector<uint64_t> sequence;
  for (int i = 0; i < kFrames; ++i) {
    v1::EnhanceResponse response;
    ASSERT_TRUE((*stream)->Receive(&response).ok());
    sequence.push_back(response.sequence_number());
    EXPECT_FALSE(response.has_error()) << response.error().message();
    EXPECT_TRUE(response.image().data() == expected[i]) << "frame " << i;
  }
  EXPECT_THAT(sequence, ElementsAre(500, 501, 502, 503, 504, 505, 506, 507, 508, 509));
  EXPECT_TRUE((*stream)->Close().ok());
  EXPECT_EQ((*stream)->frames_resent(), 0u);
}

TEST_F(FsrstClientTest, StreamReRegistersAfterMidStreamDeletionAndKeepsOrder) {
  ASSERT_TRUE(client_->RegisterReferences("hugo", References(3, 110)).ok());
  constexpr int kBefore = 4;
  constexpr int kAfter = 8;
  std::vector<std::string> expected;
  for (int i = 0; i < kBefore + kAfter; ++i) {
    auto unary = client_->Enhance("hugo", Frame(2000 + i));
    ASSERT_TRUE(unary.ok()) << unary.status();
    expected.push_back(unary->image().data());
  }
  auto opened = client_->OpenStream("hugo");
  ASSERT_TRUE(opened.ok()) << opened.status();
  FrameStream& stream = **opened;
  std::vector<uint64_t> sequence;
  auto receive = [&](int i) {
    v1::EnhanceResponse response;
    ASSERT_TRUE(stream.Receive(&response).ok());
    sequence.push_back(response.sequence_number());
    EXPECT_FALSE(response.has_error()) << "frame " << i << ": " << response.error().message();
    EXPECT_TRUE(response.image().data() == expected[i]) << "frame " << i;
  };
  for (int i = 0; i < kBefore; ++i) ASSERT_TRUE(stream.Send(Frame(2000 + i), i).ok());
  for (int i = 0; i < kBefore; ++i) receive(i);

  DeleteOnServer("hugo");
  const int64_t registrations = RequestCount(*server_, "RegisterReferences");
  // At least the first of these meets the deletion and is written again after
  // later ones; every answer must still come back in Send order.
  for (int i = kBefore; i < kBefore + kAfter; ++i) {
    ASSERT_TRUE(stream.Send(Frame(2000 + i), i).ok());
  }
  for (int i = kBefore; i < kBefore + kAfter; ++i) receive(i);
  EXPECT_TRUE(stream.Close().ok());

  std::vector<uint64_t> in_order;
  for (int i = 0; i < kBefore + kAfter; ++i) in_order.push_back(i);
  EXPECT_EQ(sequence, in_order);
  RecordProperty("frames_resent", static_cast<int>(stream.frames_resent()));
  EXPECT_GE(stream.frames_resent(), 1u);
  EXPECT_LE(stream.frames_resent(), static_cast<uint64_t>(kAfter));
  // One re-registration for all the frames that met the same loss.
  EXPECT_EQ(RequestCount(*server_, "RegisterReferences"), registrations + 1);
}

TEST_F(FsrstClientTest, StreamOfAnUnknownIdentityDeliversNotFound) {
  auto stream = client_->OpenStream("stranger");
  ASSERT_TRUE(stream.ok());
  ASSERT_TRUE((*stream)->Send(Frame(1), 7).ok());
  v1::EnhanceResponse response;
  ASSERT_TRUE((*stream)->Receive(&response).ok());
  EXPECT_EQ(response.sequence_number(), 7u);
  EXPECT_EQ(response.error().code(), kNotFound);
  EXPECT_THAT(response.error().message(), HasSubstr("stranger"));
  EXPECT_TRUE((*stream)->Close().ok());
  EXPECT_EQ((*stream)->frames_resent(), 0u);
}

TEST_F(FsrstClientTest, StreamBadFrameGetsItsOwnErrorAndTheStreamGoesOn) {
  auto stream = client_->OpenStream("");
  ASSERT_TRUE(stream.ok());
  v1::Image bad = Frame(1);
  bad.set_data("bad");
  ASSERT_TRUE((*stream)->Send(Frame(1), 0).ok());
  ASSERT_TRUE((*stream)->Send(bad, 1).ok());
  ASSERT_TRUE((*stream)->Send(Frame(2), 2).ok());
  std::vector<int> codes;
  for (int i = 0; i < 3; ++i) {
    v1::EnhanceResponse response;
    ASSERT_TRUE((*stream)->Receive(&response).ok());
    EXPECT_EQ(response.sequence_number(), static_cast<uint64_t>(i));
    codes.push_back(response.error().code());
  }
  EXPECT_THAT(codes, ElementsAre(0, static_cast<int>(grpc::StatusCode::INVALID_ARGUMENT), 0));
  EXPECT_TRUE((*stream)->Close().ok());
}

TEST_F(FsrstClientTest, StreamCloseKeepsAnswersAndThenEnds) {
  auto stream = client_->OpenStream("");
  ASSERT_TRUE(stream.ok());
  v1::EnhanceResponse response;
  EXPECT_EQ((*stream)->Receive(&response).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE((*stream)->Send(Frame(1), 1).ok());
  ASSERT_TRUE((*stream)->Send(Frame(2), 2).ok());
  EXPECT_TRUE((*stream)->Close().ok());
  EXPECT_TRUE((*stream)->Close().ok());  // idempotent
  EXPECT_EQ((*stream)->Send(Frame(3), 3).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE((*stream)->Receive(&response).ok());
  EXPECT_EQ(response.sequence_number(), 1u);
  ASSERT_TRUE((*stream)->Receive(&response).ok());
  EXPECT_EQ(response.sequence_number(), 2u);
  EXPECT_EQ((*stream)->Receive(&response).code(), absl::StatusCode::kOutOfRange);
}

TEST_F(FsrstClientTest, DestroyingAnOpenStreamCancelsIt) {
  auto stream = client_->OpenStream("");
  ASSERT_TRUE(stream.ok());
  ASSERT_TRUE((*stream)->Send(Frame(1), 1).ok());
  stream->reset();  // must neither hang nor crash
  auto answer = client_->Enhance("", Frame(1));
  EXPECT_TRUE(answer.ok()) << answer.status();
}

// A server restart: the new server knows nothing; the same client heals.
TEST(FsrstClientRestart, ReRegistersWithANewServerOnTheSamePort) {
  auto first_server = FsrstServer::Start(TestConfig());
  ASSERT_TRUE(first_server.ok()) << first_server.status();
  const int port = (*first_server)->port();
  FsrstClient client(ChannelTo(port));
  ASSERT_TRUE(client.RegisterReferences("ivan", References(3, 130)).ok());
  auto first = client.Enhance("ivan", Frame(9));
  ASSERT_TRUE(first.ok()) << first.status();

  first_server->reset();
  ServerConfig config = TestConfig();
  config.port = port;
  auto second_server = FsrstServer::Start(config);
  ASSERT_TRUE(second_server.ok()) << second_server.status();
  ASSERT_EQ((*second_server)->port(), port);

  CallOptions options;
  options.wait_for_ready = true;  // the channel may still be backing off from the restart
  auto second = client.Enhance("ivan", Frame(9), options);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_TRUE(second->image().data() == first->image().data());
  EXPECT_EQ(RequestCount(**second_server, "Enhance", "NOT_FOUND"), 1);
  EXPECT_EQ(RequestCount(**second_server, "RegisterReferences"), 1);
  EXPECT_EQ(RequestCount(**second_server, "Enhance"), 1);
}

// ------------------------------------------------ against a recording fake

// FaceSuperResolution that records each call's x-fsrst-identity values and
// deadline, and can forget every registration at once (as if evicted).
class RecordingService final : public v1::FaceSuperResolution::Service {
 public:
  struct Call {
    std::string method;
    std::vector<std::string> identity_metadata;
    bool has_deadline = false;
    std::chrono::system_clock::duration time_left{};
  };

  // What RegisterReferences answers from now on (registering nothing unless OK).
  void set_register_status(grpc::Status status) {
    absl::MutexLock lock(&mu_);
    register_status_ = std::move(status);
  }
  // The first delivery of a frame with exactly these bytes is answered
  // NOT_FOUND, as if the identity had been lost just then; later ones succeed.
  void FailFirstDeliveryOf(const std::string& frame_data) {
    absl::MutexLock lock(&mu_);
    fail_once_[frame_data] = false;
  }
  // true: forgets every registration now and as soon as it is made.
  void set_forget_registrations(bool forget) {
    absl::MutexLock lock(&mu_);
    forget_ = forget;
    if (forget) registered_.clear();
  }
  std::vector<Call> calls() const {
    absl::MutexLock lock(&mu_);
    return calls_;
  }
  int count(const std::string& method) const {
    absl::MutexLock lock(&mu_);
    int n = 0;
    for (const Call& call : calls_) n += call.method == method;
    return n;
  }
  int stream_frames() const {
    absl::MutexLock lock(&mu_);
    return stream_frames_;
  }
  // Drains as a replica sent SIGTERM does: the next `calls` EnhanceStream calls
  // answer their first `frames_before` frames, then refuse each later frame in
  // its FrameError (or, with `abort`, end the call) with `code` and kDraining.
  void DrainStreams(int calls, int frames_before, bool abort = false,
                    grpc::StatusCode code = grpc::StatusCode::UNAVAILABLE) {
    absl::MutexLock lock(&mu_);
    draining_streams_ = calls;
    frames_before_drain_ = frames_before;
    abort_when_draining_ = abort;
    refuse_with_ = code;
  }
  // The next `calls` unary calls end with `code` and kDraining.
  void RefuseCalls(int calls, grpc::StatusCode code = grpc::StatusCode::UNAVAILABLE,
                   std::string message = kDraining) {
    absl::MutexLock lock(&mu_);
    refused_calls_ = calls;
    refuse_with_ = code;
    refuse_message_ = std::move(message);
  }
  // The next `calls` EnhanceStream calls answer every frame NOT_FOUND, as a
  // replica that no registration reaches would.
  void StreamsElsewhere(int calls) {
    absl::MutexLock lock(&mu_);
    streams_elsewhere_ = calls;
  }
  // The caller's sequence numbers each EnhanceStream call received, by call.
  std::vector<std::vector<uint64_t>> stream_sequences() const {
    absl::MutexLock lock(&mu_);
    return stream_sequences_;
  }

  static constexpr char kDraining[] = "the server is shutting down; retry on another replica";

  grpc::Status RegisterReferences(grpc::ServerContext* context,
                                  const v1::RegisterReferencesRequest* request,
                                  v1::RegisterReferencesResponse* response) override {
    Record("RegisterReferences", context);
    if (grpc::Status refused = Refusal(); !refused.ok()) return refused;
    absl::MutexLock lock(&mu_);
    if (!register_status_.ok()) return register_status_;
    if (!forget_) registered_[request->identity_id()] = true;
    response->set_reference_count(request->references_size());
    return grpc::Status::OK;
  }

  grpc::Status Enhance(grpc::ServerContext* context, const v1::EnhanceRequest* request,
                       v1::EnhanceResponse* response) override {
    Record("Enhance", context);
    if (grpc::Status refused = Refusal(); !refused.ok()) return refused;
    v1::FrameError error;
    if (!Answer(*request, response, &error)) {
      return grpc::Status(static_cast<grpc::StatusCode>(error.code()), error.message());
    }
    return grpc::Status::OK;
  }

  grpc::Status EnhanceStream(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::EnhanceResponse, v1::EnhanceRequest>* stream) override {
    Record("EnhanceStream", context);
    bool draining, abort, elsewhere;
    int frames_before;
    grpc::StatusCode refuse_with;
    {
      absl::MutexLock lock(&mu_);
      draining = draining_streams_ > 0;
      draining_streams_ -= draining;
      elsewhere = streams_elsewhere_ > 0;
      streams_elsewhere_ -= elsewhere;
      abort = abort_when_draining_;
      frames_before = frames_before_drain_;
      refuse_with = refuse_with_;
      stream_sequences_.emplace_back();
    }
    v1::EnhanceRequest request;
    for (int received = 0; stream->Read(&request); ++received) {
      {
        absl::MutexLock lock(&mu_);
        ++stream_frames_;
        stream_sequences_.back().push_back(request.sequence_number());
      }
      v1::EnhanceResponse response;
      v1::FrameError error;
      if (draining && received >= frames_before) {
        if (abort) return grpc::Status(grpc::StatusCode::UNAVAILABLE, kDraining);
        error.set_code(static_cast<int>(refuse_with));
        error.set_message(kDraining);
        *response.mutable_error() = error;
      } else if (elsewhere) {
        error.set_code(kNotFound);
        error.set_message("not registered here");
        *response.mutable_error() = error;
      } else if (!Answer(request, &response, &error)) {
        *response.mutable_error() = error;
      }
      response.set_sequence_number(request.sequence_number());
      stream->Write(response);
    }
    return grpc::Status::OK;
  }

  grpc::Status DeleteReferences(grpc::ServerContext* context,
                                const v1::DeleteReferencesRequest* request,
                                v1::DeleteReferencesResponse*) override {
    Record("DeleteReferences", context);
    absl::MutexLock lock(&mu_);
    registered_.erase(request->identity_id());
    return grpc::Status::OK;
  }

  grpc::Status GetServerInfo(grpc::ServerContext* context, const v1::GetServerInfoRequest*,
                             v1::GetServerInfoResponse* response) override {
    Record("GetServerInfo", context);
    response->set_model_name("fake");
    return grpc::Status::OK;
  }

 private:
  grpc::Status Refusal() {
    absl::MutexLock lock(&mu_);
    if (refused_calls_ == 0) return grpc::Status::OK;
    --refused_calls_;
    return grpc::Status(refuse_with_, refuse_message_);
  }

  void Record(const std::string& method, grpc::ServerContext* context) {
    Call call;
    call.method = method;
    auto range = context->client_metadata().equal_range(FsrstClient::kIdentityMetadataKey);
    for (auto it = range.first; it != range.second; ++it) {
      call.identity_metadata.emplace_back(it->second.data(), it->second.size());
    }
    call.has_deadline = context->deadline() != std::chrono::system_clock::time_point::max();
    call.time_left = context->deadline() - std::chrono::system_clock::now();
    absl::MutexLock lock(&mu_);
    calls_.push_back(std::move(call));
  }

  // false: NOT_FOUND in *error.
  bool Answer(const v1::EnhanceRequest& request, v1::EnhanceResponse* response,
              v1::FrameError* error) {
    absl::MutexLock lock(&mu_);
    auto fail_once = fail_once_.find(request.frame().data());
    const bool lost_now = fail_once != fail_once_.end() && !fail_once->second;
    if (lost_now) fail_once->second = true;
    if (lost_now || (!request.identity_id().empty() && !registered_.count(request.identity_id()))) {
      error->set_code(kNotFound);
      error->set_message(absl::StrCat("identity_id: \"", request.identity_id(),
                                      "\" is not registered; call RegisterReferences again"));
      return false;
    }
    response->mutable_image()->set_encoding(v1::ENCODING_RGB8);
    response->mutable_image()->set_data(request.frame().data());
    response->set_sequence_number(request.sequence_number());
    return true;
  }

  mutable absl::Mutex mu_;
  std::vector<Call> calls_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, bool> registered_ ABSL_GUARDED_BY(mu_);
  bool forget_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status register_status_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, bool> fail_once_ ABSL_GUARDED_BY(mu_);  // frame data -> failed already
  int stream_frames_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::vector<uint64_t>> stream_sequences_ ABSL_GUARDED_BY(mu_);
  int draining_streams_ ABSL_GUARDED_BY(mu_) = 0;
  int frames_before_drain_ ABSL_GUARDED_BY(mu_) = 0;
  bool abort_when_draining_ ABSL_GUARDED_BY(mu_) = false;
  int streams_elsewhere_ ABSL_GUARDED_BY(mu_) = 0;
  int refused_calls_ ABSL_GUARDED_BY(mu_) = 0;
  grpc::StatusCode refuse_with_ ABSL_GUARDED_BY(mu_) = grpc::StatusCode::UNAVAILABLE;
  std::string refuse_message_ ABSL_GUARDED_BY(mu_) = kDraining;
};

class FsrstClientFakeServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_GT(port, 0);
    port_ = port;
    client_ = std::make_unique<FsrstClient>(ChannelTo(port), FastRetries());
  }

  // The waits between tries cut to milliseconds; the counts stay the defaults.
  static ClientOptions FastRetries() {
    ClientOptions options;
    options.initial_backoff = absl::Milliseconds(1);
    options.max_backoff = absl::Milliseconds(4);
    return options;
  }
  void TearDown() override {
    client_.reset();
    server_->Shutdown();
  }

  RecordingService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::unique_ptr<FsrstClient> client_;
};

TEST_F(FsrstClientFakeServerTest, EveryIdentityCallCarriesTheIdentityMetadataAndADeadline) {
  CallOptions options;
  options.timeout = absl::Seconds(5);
  ASSERT_TRUE(client_->RegisterReferences("alice", References(1, 1), options).ok());
  ASSERT_TRUE(client_->Enhance("alice", Frame(1), options).ok());
  auto stream = client_->OpenStream("alice", options);
  ASSERT_TRUE(stream.ok());
  ASSERT_TRUE((*stream)->Send(Frame(2), 1).ok());
  v1::EnhanceResponse response;
  ASSERT_TRUE((*stream)->Receive(&response).ok());
  ASSERT_TRUE((*stream)->Close().ok());
  ASSERT_TRUE(client_->DeleteReferences("alice", options).ok());
  ASSERT_TRUE(client_->GetServerInfo(options).ok());

  std::vector<std::string> methods;
  for (const RecordingService::Call& call : service_.calls()) {
    methods.push_back(call.method);
    SCOPED_TRACE(call.method);
    if (call.method == "GetServerInfo") {
      EXPECT_TRUE(call.identity_metadata.empty());
    } else {
      EXPECT_THAT(call.identity_metadata, ElementsAre("alice"));
    }
    EXPECT_TRUE(call.has_deadline);
    // The wire carries a rounded-up timeout that the server counts from arrival.
    const auto time_left_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(call.time_left).count();
    EXPECT_GT(time_left_ms, 1000);
    EXPECT_LE(time_left_ms, 5100);
  }
  EXPECT_THAT(methods, ElementsAre("RegisterReferences", "Enhance", "EnhanceStream",
                                   "DeleteReferences", "GetServerInfo"));
}

TEST_F(FsrstClientFakeServerTest, EnhanceWithoutIdentitySendsNoIdentityMetadata) {
  ASSERT_TRUE(client_->Enhance("", Frame(1)).ok());
  ASSERT_EQ(service_.calls().size(), 1u);
  EXPECT_TRUE(service_.calls()[0].identity_metadata.empty());
}

TEST_F(FsrstClientFakeServerTest, InfiniteTimeoutSetsNoDeadline) {
  CallOptions options;
  options.timeout = absl::InfiniteDuration();
  ASSERT_TRUE(client_->GetServerInfo(options).ok());
  ASSERT_EQ(service_.calls().size(), 1u);
  EXPECT_FALSE(service_.calls()[0].has_deadline);
}

TEST_F(FsrstClientFakeServerTest, EnhanceReRegistersAndRetriesOnlyOnce) {
  ASSERT_TRUE(client_->RegisterReferences("bob", References(2, 1)).ok());
  service_.set_forget_registrations(true);  // every NOT_FOUND, even after re-registering
  auto answer = client_->Enhance("bob", Frame(1));
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(answer.status().message(), HasSubstr("call RegisterReferences again"));
  EXPECT_EQ(service_.count("Enhance"), 2);
  EXPECT_EQ(service_.count("RegisterReferences"), 2);
}

TEST_F(FsrstClientFakeServerTest, StreamResendsAFrameOnlyOnce) {
  ClientOptions no_reopens = FastRetries();
  no_reopens.max_stream_reopens = 0;
  client_ = std::make_unique<FsrstClient>(ChannelTo(port_), no_reopens);
  ASSERT_TRUE(client_->RegisterReferences("carl", References(2, 1)).ok());
  service_.set_forget_registrations(true);
  auto stream = client_->OpenStream("carl");
  ASSERT_TRUE(stream.ok());
  ASSERT_TRUE((*stream)->Send(Frame(1), 41).ok());
  v1::EnhanceResponse response;
  ASSERT_TRUE((*stream)->Receive(&response).ok());
  EXPECT_EQ(response.sequence_number(), 41u);
  EXPECT_EQ(response.error().code(), kNotFound);
  EXPECT_TRUE((*stream)->Close().ok());
  EXPECT_EQ((*stream)->frames_resent(), 1u);
  EXPECT_EQ(service_.stream_frames(), 2);
  EXPECT_EQ(service_.count("RegisterReferences"), 2);
}

TEST_F(FsrstClientFakeServerTest, ResentFramesAnsweredLastAreStillDeliveredInSendOrder) {
  ASSERT_TRUE(client_->RegisterReferences("eve", References(2, 1)).ok());
  constexpr int kFrames = 6;
  std::vector<std::string> data;
  for (int i = 0; i < kFrames; ++i) data.push_back(Frame(300 + i).data());
  // Frames 2 and 4 are lost on their first trip; the fake answers the others
  // at once, so their answers overtake the second trips of 2 and 4.
  service_.FailFirstDeliveryOf(data[2]);
  service_.FailFirstDeliveryOf(data[4]);
  auto stream = client_->OpenStream("eve");
  ASSERT_TRUE(stream.ok());
  for (int i = 0; i < kFrames; ++i) ASSERT_TRUE((*stream)->Send(Frame(300 + i), 10 * i).ok());
  std::vector<uint64_t> sequence;
  for (int i = 0; i < kFrames; ++i) {
    v1::EnhanceResponse response;
    ASSERT_TRUE((*stream)->Receive(&response).ok());
    sequence.push_back(response.sequence_number());
    EXPECT_FALSE(response.has_error()) << "frame " << i << ": " << response.error().message();
    EXPECT_TRUE(response.image().data() == data[i]) << "frame " << i;  // the fake echoes the frame
  }
  EXPECT_THAT(sequence, ElementsAre(0, 10, 20, 30, 40, 50));
  EXPECT_TRUE((*stream)->Close().ok());
  EXPECT_EQ((*stream)->frames_resent(), 2u);
  EXPECT_EQ(service_.stream_frames(), kFrames + 2);
  // Both frames were sent against the same registration: one re-registration serves both.
  EXPECT_EQ(service_.count("RegisterReferences"), 2);
}

TEST_F(FsrstClientFakeServerTest, FailedReRegistrationIsTheAnswer) {
  ASSERT_TRUE(client_->RegisterReferences("dana", References(2, 1)).ok());
  service_.set_forget_registrations(true);
  service_.set_register_status(grpc::Status(grpc::StatusCode::UNAVAILABLE, "draining"));

  auto answer = client_->Enhance("dana", Frame(1));
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(answer.status().message(), "draining");
  EXPECT_EQ(service_.count("Enhance"), 1);

  auto stream = client_->OpenStream("dana");
  ASSERT_TRUE(stream.ok());
  ASSERT_TRUE((*stream)->Send(Frame(1), 3).ok());
  v1::EnhanceResponse response;
  ASSERT_TRUE((*stream)->Receive(&response).ok());
  EXPECT_EQ(response.sequence_number(), 3u);
  EXPECT_EQ(response.error().code(), static_cast<int>(grpc::StatusCode::UNAVAILABLE));
  EXPECT_EQ(response.error().message(), "registering the references of dana again: draining");
  EXPECT_TRUE((*stream)->Close().ok());
  EXPECT_EQ((*stream)->frames_resent(), 0u);
  EXPECT_EQ(service_.stream_frames(), 1);
}

// ------------------------------------------------ rolling updates

// Frames whose bytes say their index: the fake echoes them, so order shows.
v1::Image NumberedFrame(int i) { return Frame(1000 + i); }

// Sends `count` numbered frames with sequence numbers 0.., keeping at most
// `window` in flight, and receives every answer: (sequence, matches its frame).
std::vector<uint64_t> StreamAll(FrameStream& stream, int count, int window,
                                absl::Status* failure) {
  std::vector<uint64_t> order;
  int sent = 0;
  while (static_cast<int>(order.size()) < count) {
    while (sent < count && sent - static_cast<int>(order.size()) < window) {
      *failure = stream.Send(NumberedFrame(sent), sent);
      if (!failure->ok()) return order;
      ++sent;
    }
    v1::EnhanceResponse response;
    *failure = stream.Receive(&response);
    if (!failure->ok()) return order;
    if (response.has_error()) {
      *failure = absl::Status(static_cast<absl::StatusCode>(response.error().code()),
                              response.error().message());
      return order;
    }
    EXPECT_TRUE(response.image().data() ==
                NumberedFrame(static_cast<int>(response.sequence_number())).data())
        << "answer " << order.size() << " is not the frame of its sequence number";
    order.push_back(response.sequence_number());
  }
  *failure = stream.Close();
  return order;
}

std::vector<uint64_t> Iota(uint64_t from, uint64_t to) {
  std::vector<uint64_t> values;
  for (uint64_t i = from; i < to; ++i) values.push_back(i);
  return values;
}

TEST_F(FsrstClientFakeServerTest, StreamRefusedByADrainingServerIsReopenedAndResentInOrder) {
  ASSERT_TRUE(client_->RegisterReferences("kim", References(1, 1)).ok());
  service_.DrainStreams(1, 5);
  auto stream = client_->OpenStream("kim");
  ASSERT_TRUE(stream.ok());
  absl::Status failure;
  EXPECT_EQ(StreamAll(**stream, 30, 8, &failure), Iota(0, 30));
  EXPECT_TRUE(failure.ok()) << failure;
  EXPECT_EQ((*stream)->reopens(), 1u);
  const auto calls = service_.stream_sequences();
  ASSERT_EQ(calls.size(), 2u);
  // The new call starts with the first frame the draining one refused, then in
  // Send order (the wire numbers are the stream's own: read them as order).
  ASSERT_EQ(calls[1].size(), 25u);
  EXPECT_TRUE(std::is_sorted(calls[1].begin(), calls[1].end()));
  EXPECT_EQ(service_.count("RegisterReferences"), 1);
}

TEST_F(FsrstClientFakeServerTest, StreamCutWithUnavailableIsReopenedEachTime) {
  ASSERT_TRUE(client_->RegisterReferences("lou", References(1, 1)).ok());
  service_.DrainStreams(5, 4, /*abort=*/true);  // five calls in a row cut, each after 4 frames
  auto stream = client_->OpenStream("lou");
  ASSERT_TRUE(stream.ok());
  absl::Status failure;
  EXPECT_EQ(StreamAll(**stream, 30, 4, &failure), Iota(0, 30));
  EXPECT_TRUE(failure.ok()) << failure;
  EXPECT_EQ((*stream)->reopens(), 5u);
  EXPECT_EQ(service_.count("EnhanceStream"), 6);
}

TEST_F(FsrstClientFakeServerTest, StreamOnAReplicaTheRegistrationDoesNotReachIsReopened) {
  ASSERT_TRUE(client_->RegisterReferences("ray", References(1, 1)).ok());
  service_.StreamsElsewhere(1);
  auto stream = client_->OpenStream("ray");
  ASSERT_TRUE(stream.ok());
  absl::Status failure;
  EXPECT_EQ(StreamAll(**stream, 6, 3, &failure), Iota(0, 6));
  EXPECT_TRUE(failure.ok()) << failure;
  EXPECT_EQ(service_.count("EnhanceStream"), 2);
  // NOT_FOUND, registered again, written again, NOT_FOUND again: reopened.
  EXPECT_EQ((*stream)->reopens(), 1u);
}

TEST_F(FsrstClientFakeServerTest, StreamReopensAreBoundedAndTheLastErrorIsReturned) {
  ASSERT_TRUE(client_->RegisterReferences("ned", References(1, 1)).ok());
  service_.DrainStreams(1000, 0);  // every replica drains
  auto stream = client_->OpenStream("ned");
  ASSERT_TRUE(stream.ok());
  ASSERT_TRUE((*stream)->Send(NumberedFrame(0), 0).ok());
  v1::EnhanceResponse response;
  const absl::Status received = (*stream)->Receive(&response);
  EXPECT_EQ(received.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(received.message(), RecordingService::kDraining);
  EXPECT_EQ((*stream)->Close().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ((*stream)->reopens(), 10u);
  EXPECT_EQ(service_.count("EnhanceStream"), 11);
}

TEST_F(FsrstClientFakeServerTest, StreamDoesNotReopenAfterANonRetryableRefusal) {
  ASSERT_TRUE(client_->RegisterReferences("oda", References(1, 1)).ok());
  service_.DrainStreams(1, 1, false, grpc::StatusCode::PERMISSION_DENIED);
  auto stream = client_->OpenStream("oda");
  ASSERT_TRUE(stream.ok());
  absl::Status failure;
  EXPECT_EQ(StreamAll(**stream, 3, 3, &failure), Iota(0, 1));
  EXPECT_EQ(failure.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ((*stream)->reopens(), 0u);
  EXPECT_EQ(service_.count("EnhanceStream"), 1);
}

TEST_F(FsrstClientFakeServerTest, UnaryCallsRefusedByADrainingServerAreMadeAgain) {
  ASSERT_TRUE(client_->RegisterReferences("pia", References(1, 1)).ok());
  service_.RefuseCalls(6);  // more than gRPC's own retry policy would allow
  auto answer = client_->Enhance("pia", Frame(4));
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_TRUE(answer->image().data() == Frame(4).data());
  EXPECT_EQ(service_.count("Enhance"), 7);
  service_.RefuseCalls(3);
  ASSERT_TRUE(client_->RegisterReferences("pia", References(2, 1)).ok());
  EXPECT_EQ(service_.count("RegisterReferences"), 1 + 4);
  EXPECT_EQ(client_->calls_retried(), 6u + 3u);
}

TEST_F(FsrstClientFakeServerTest, UnaryRetriesAreBounded) {
  service_.RefuseCalls(1000);
  auto answer = client_->Enhance("", Frame(1));
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(answer.status().message(), RecordingService::kDraining);
  EXPECT_EQ(service_.count("Enhance"), ClientOptions().max_attempts);
}

TEST_F(FsrstClientFakeServerTest, UnaryRetriesStayWithinTheDeadline) {
  FsrstClient client(ChannelTo(port_));  // the real waits: 25-50 ms, 50-100 ms, 100-200 ms, ...
  service_.RefuseCalls(1000);
  CallOptions options;
  options.timeout = absl::Milliseconds(300);
  EXPECT_EQ(client.Enhance("", Frame(1), options).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_GE(service_.count("Enhance"), 2);
  EXPECT_LE(service_.count("Enhance"), 5);
}

// gRPC core ends a call that reaches a server whose Shutdown has begun with
// CANCELLED "CANCELLED" (grpc/grpc#41785): it never ran, as with UNAVAILABLE.
// The fleet test (tests/deploy/test_fleet_store.py) met it in a rolling restart.
TEST_F(FsrstClientFakeServerTest, CallsAShuttingDownServerNeverRanAreMadeAgain) {
  service_.RefuseCalls(2, grpc::StatusCode::CANCELLED, "CANCELLED");
  auto answer = client_->Enhance("", Frame(4));
  ASSERT_TRUE(answer.ok()) << answer.status();
  EXPECT_EQ(service_.count("Enhance"), 3);
  // Any other cancellation is not that: it comes back at once.
  service_.RefuseCalls(1, grpc::StatusCode::CANCELLED, "cancelled by a proxy");
  answer = client_->Enhance("", Frame(4));
  EXPECT_EQ(answer.status().code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(answer.status().message(), "cancelled by a proxy");
  EXPECT_EQ(service_.count("Enhance"), 4);
}

TEST_F(FsrstClientFakeServerTest, NonRetryableErrorsComeBackAtOnce) {
  service_.RefuseCalls(1, grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(client_->Enhance("", Frame(1)).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(service_.count("Enhance"), 1);
  EXPECT_EQ(client_->calls_retried(), 0u);
}

TEST_F(FsrstClientFakeServerTest, IdentitiesTheServerWouldRefuseAreRefusedBeforeSending) {
  const std::pair<std::string, std::string> cases[] = {
      {"jos\xc3\xa9", "identity_id: character 4 ('\xc3\xa9', U+00E9) is not allowed; "
                      "expected only [A-Za-z0-9._:@-]"},
      {"a b", "identity_id: character 2 (' ') is not allowed; expected only [A-Za-z0-9._:@-]"},
      {std::string(129, 'x'), "identity_id: expected 1 to 128 characters, got 129"}};
  for (const auto& [id, message] : cases) {
    SCOPED_TRACE(id);
    const absl::Status expected = absl::InvalidArgumentError(message);
    EXPECT_EQ(client_->RegisterReferences(id, References(1, 1)).status(), expected);
    EXPECT_EQ(client_->Enhance(id, Frame(1)).status(), expected);
    EXPECT_EQ(client_->OpenStream(id).status(), expected);
    EXPECT_EQ(client_->DeleteReferences(id), expected);
  }
  EXPECT_TRUE(service_.calls().empty());
  EXPECT_TRUE(client_->RegisterReferences(std::string(128, 'x'), References(1, 1)).ok());
}

}  // namespace
}  // namespace fsrst
